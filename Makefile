# Trade-Matrix: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stack-installed
EDIT   := $(VENV)/.editable-installed
REQS   := requirements/requirements.txt requirements/constraints-lock.txt requirements/dev.txt
# extra pip arguments for torch, e.g. --index-url https://download.pytorch.org/whl/cpu where no local wheel exists
TORCH_PIP_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true
export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache
export PYTHONHASHSEED := 0
# OpenMP workers (xgboost, lightgbm) sleep instead of spinning while idle: spinning on 2 busy cores slowed training 30x
export OMP_WAIT_POLICY := PASSIVE

.PHONY: demo test install services lint export clean-nbs bench

# The main job on the embedded default: no servers, no network.
demo: install
	$(BIN)/tm demo

# Everything CI checks, in order.
test: install services
	$(BIN)/python tools/unchanged.py nbs research -- $(BIN)/nbdev-clean
	$(BIN)/python tools/unchanged.py trade_matrix -- $(BIN)/nbdev-export
	$(BIN)/nbdev-test --flags services --n-workers 2
	$(BIN)/pytest tests/ -q
	$(BIN)/ruff check --no-cache trade_matrix/

install: $(STAMP) $(EDIT)

# Torch first (the CPU wheel on the machine), then the verified stack. Re-runs only when the pins change.
$(STAMP): $(REQS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -r requirements/requirements.txt -r requirements/dev.txt -c requirements/constraints-lock.txt
	touch $@

$(EDIT): $(STAMP) pyproject.toml
	$(BIN)/pip install -q --no-deps -e .
	touch $@

services:
	@tools/services.sh

export: install
	$(BIN)/nbdev-export

clean-nbs: install
	$(BIN)/nbdev-clean

lint: install
	$(BIN)/ruff check --no-cache trade_matrix/

bench: install
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_selection.py
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_regime.py
	$(BIN)/python benchmarks/bench_risk.py
	$(BIN)/python benchmarks/bench_rl.py
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_replay.py
	$(BIN)/python benchmarks/bench_retrain.py
