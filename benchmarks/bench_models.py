"""Benchmark: training one instrument (purged walk-forward + transfer-learning grid), predict latency, loader tiers.

1. First training of BTCUSDT with the default TrainConfig (Boruta, 40 x 42-bar windows, 200-bar purge, full fit
   per window), then the weekly update a week later from that model: the full retrain and the transfer-learning
   grid (50-250 new trees) over the same 40 windows. Wall times per step; the figures of every variant, gross and
   net of fees, with turnover.
2. Single-row predict latency of the deployed model (a pandas row aligned to the locked list, and the raw matrix).
3. The 4-tier loader of the registry (MLflow on SQLite + file artifacts in a temp folder): time to load through each
   tier, with the tiers above it taken away.

Run: `python benchmarks/bench_models.py [--symbol BTCUSDT] [--until 2025-06-01] [--skip-loader]`.
"""
import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from trade_matrix.data.market import load_market_data
from trade_matrix.models.training import TrainConfig, train_instrument

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--symbol", default="BTCUSDT")
parser.add_argument("--until", default="2025-06-01", help="first training's cut-off; the update is a week later")
parser.add_argument("--skip-loader", action="store_true", help="skip the registry part")
args = parser.parse_args()
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="  (log) %(message)s")
pd.set_option("display.width", 200)

print(f"threads: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, cores {os.cpu_count()}")
t0 = time.perf_counter()
md = load_market_data(symbols=[args.symbol, "BTCUSDT", "ETHUSDT"] if args.symbol not in ("BTCUSDT", "ETHUSDT") else ["BTCUSDT", "ETHUSDT"])
print(f"data loaded in {time.perf_counter() - t0:.2f} s\n")

cfg = TrainConfig()
t = time.perf_counter()
first = train_instrument(md, args.symbol, until=args.until, config=cfg)
wall_first = time.perf_counter() - t
print(f"1a. first training (selection + walk-forward of the full fit, {cfg.walk_forward.n_windows} windows): "
      f"{wall_first:.1f} s wall")
print("    " + ", ".join(f"{k} {v:.2f}" for k, v in first.timings.items()))
print(f"    {first.reason}\n")

until2 = pd.Timestamp(args.until, tz="UTC") + pd.Timedelta("7D")
t = time.perf_counter()
second = train_instrument(md, args.symbol, until=until2, production=first.model, config=cfg)
wall_second = time.perf_counter() - t
print(f"1b. weekly update (selection + walk-forward of full retrain AND transfer grid {cfg.model.transfer_trees}): "
      f"{wall_second:.1f} s wall  <- walk-forward + TL grid for one instrument")
print("    " + ", ".join(f"{k} {v:.2f}" for k, v in second.timings.items()))
cols = ["ic", "p_value", "p_value_corrected", "hit_rate", "sharpe_gross", "sharpe_net", "turnover", "max_drawdown", "passed"]
print(second.variants[cols].round(4).to_string())
print(f"    {second.reason}\n")

model = second.model
from trade_matrix.features.catalogue import compute_features
feats = compute_features(md.as_of(until2), args.symbol).features
row = feats.iloc[-1]
x = model.matrix(feats.iloc[[-1]])
for label, fn in (("pandas row (align by name + predict)", lambda: model.predict(row)),
                  ("aligned matrix (estimator only)", lambda: model.estimator.predict(x))):
    for _ in range(50):
        fn()
    times = []
    for _ in range(2000):
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
    us = np.array(times) * 1e6
    print(f"2. single-row predict, {label}: p50 {np.percentile(us, 50):.0f} us, p99 {np.percentile(us, 99):.0f} us "
          f"({model.n_trees} trees, {model.locked.count} features)")

if args.skip_loader:
    sys.exit(0)

print()
import mlflow  # noqa: E402  (imported here so its import time is not charged to the first tier)

from trade_matrix.models.registry import ModelRegistry

home = Path(tempfile.mkdtemp(prefix="tm-bench-"))
reg = ModelRegistry(f"sqlite:///{home}/mlflow.db", str(home / "mlartifacts"), home / "models")
t = time.perf_counter()
rv = reg.log_training(second)
print(f"3. registry: log_training (params, metrics, model, plots, register) {time.perf_counter() - t:.2f} s; ", end="")
t = time.perf_counter()
reg.promote(args.symbol, rv.version, force=True)
print(f"promote + export tier 4 {time.perf_counter() - t:.2f} s")


def timed_load(registry, expect_tier, repeats=5):
    times = []
    for _ in range(repeats):
        s = time.perf_counter()
        lm = registry.load(args.symbol)
        times.append(time.perf_counter() - s)
        assert lm.tier == expect_tier, (lm.tier, lm.failures)
        assert lm.model.model_id == model.model_id
    return np.median(times) * 1e3, lm


ms, lm = timed_load(reg, 1)
print(f"   tier 1 (registry alias):            {ms:7.1f} ms")
from mlflow import MlflowClient  # noqa: E402
MlflowClient(f"sqlite:///{home}/mlflow.db").delete_registered_model_alias(reg.model_name(args.symbol), "production")
ms, lm = timed_load(reg, 2)
print(f"   tier 2 (run id + artifact path):    {ms:7.1f} ms   (alias removed)")
down = ModelRegistry("http://127.0.0.1:9", str(home / "mlartifacts"), home / "models")
ms, lm = timed_load(down, 3)
print(f"   tier 3 (artifact store directly):   {ms:7.1f} ms   (tracking server unreachable)")
shutil.move(str(home / "mlartifacts"), str(home / "mlartifacts.gone"))
ms, lm = timed_load(down, 4)
print(f"   tier 4 (local models/ folder):      {ms:7.1f} ms   (tracking unreachable, artifacts gone)")
shutil.rmtree(home, ignore_errors=True)
