"""Layer contracts: every module imports only what its layer's rule allows (`trade_matrix.layers.LAYER_RULES`).

The static check reads every import statement of every module, lazy imports inside functions included; the
dynamic check imports each layer in a fresh interpreter and lists the modules of ours that came with it."""
import pytest

from trade_matrix.layers import LAYER_RULES, import_violations, imported_with, modules, static_violations


def test_every_module_belongs_to_a_layer_with_a_rule():
    layers = {m.split(".")[1] for m in modules()}
    assert layers <= set(LAYER_RULES), sorted(layers - set(LAYER_RULES))


def test_no_import_statement_points_the_wrong_way():
    assert static_violations() == []


@pytest.mark.parametrize("layer", sorted({m.split(".")[1] for m in modules()}))
def test_a_fresh_import_of_each_layer_loads_only_what_its_rule_allows(layer):
    assert import_violations(layer) == []


def test_the_trader_never_loads_backtest_research_the_paper_exchange_or_training():
    loaded = imported_with("trade_matrix.trader.decision", "trade_matrix.trader.config")
    forbidden = ("trade_matrix.backtest", "trade_matrix.research", "trade_matrix.execution.paper",
                 "trade_matrix.models.training", "trade_matrix.models.selection", "trade_matrix.models.registry",
                 "trade_matrix.retrain", "trade_matrix.cli")
    assert sorted(m for m in loaded if m.startswith(forbidden)) == []


def test_strategy_loads_only_core():
    loaded = imported_with(*[m for m in modules() if m.startswith("trade_matrix.strategy.")])
    assert sorted(m for m in loaded if not m.startswith("trade_matrix.strategy")) == ["trade_matrix.core"]


def test_an_arrow_the_wrong_way_is_caught():
    wrong = import_violations("trader", also=("trade_matrix.backtest.replay",))
    assert "trade_matrix.backtest.replay" in wrong


# --- install groups ------------------------------------------------------------------------------------------

DISTRIBUTION = {"sklearn": "scikit-learn", "xgboost": "xgboost-cpu", "psycopg": "psycopg", "websocket": "websocket-client",
                "IPython": "ipython", "stable_baselines3": "stable-baselines3"}


def _groups():
    import tomllib
    from pathlib import Path
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    name = lambda spec: spec.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
    groups = {"base": {name(d) for d in project["dependencies"]}}
    groups |= {g: {name(d) for d in deps} for g, deps in project["optional-dependencies"].items()}
    return groups


def _module_level_imports(layer: str) -> set[str]:
    "Third-party packages imported at module level by the modules of `layer` (what importing it needs)."
    import ast
    import sys
    from pathlib import Path
    root = Path(__file__).parents[1] / "trade_matrix"
    files = [root / f"{layer}.py"] if (root / f"{layer}.py").exists() else sorted((root / layer).rglob("*.py"))
    out = set()
    for f in files:
        for node in ast.parse(f.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            out |= {n.split(".")[0] for n in names}
    return {DISTRIBUTION.get(n, n).lower() for n in out if n not in sys.stdlib_module_names
            and n not in ("trade_matrix", "__future__")}


@pytest.mark.parametrize("layer", ["core", "data", "features", "models", "strategy", "risk", "execution", "trader"])
def test_the_base_install_imports_the_trader_layers(layer):
    missing = _module_level_imports(layer) - _groups()["base"]
    assert not missing, f"{layer} imports {sorted(missing)} at module level: add them to [project] dependencies"


def test_each_group_covers_its_layers():
    g = _groups()
    assert _module_level_imports("adapters") <= g["base"] | g["live"]
    for layer in ("research", "backtest", "retrain"):
        assert _module_level_imports(layer) <= g["base"] | g["research"], layer
    assert _module_level_imports("testing") <= g["base"] | g["dev"]


def test_each_notebook_imports_only_notebooks_numbered_before_it():
    "The notebooks read in number order: each uses only modules exported by notebooks before it."
    import json
    import re
    from pathlib import Path
    nbs = sorted((Path(__file__).parents[1] / "nbs").glob("[0-9]*.ipynb"))
    exported, order, used = {}, {}, {}
    for k, path in enumerate(nbs):
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        module = next(m.group(1) for s in cells for m in [re.search(r"#\| default_exp (\S+)", s)] if m)
        exported["trade_matrix." + module], order[path.stem] = path.stem, k
        used[path.stem] = {m for s in cells for m in re.findall(r"(?:from|import) (trade_matrix(?:\.\w+)+)", s)}
    late = sorted(f"{nb} uses {m} ({exported[m]})" for nb, mods in used.items() for m in mods
                  if m in exported and order[exported[m]] > order[nb])
    assert late == []
