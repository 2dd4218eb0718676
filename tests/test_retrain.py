"""The weekly retrain through papermill: a run leaves its notebook, report and metrics; a failed run moves nothing."""
import json

import mlflow
import pytest

from test_models import planted_bars
from trade_matrix.core import ConfigError, SeriesKind
from trade_matrix.data.market import write_data_file
from trade_matrix.models.registry import ModelRegistry
from trade_matrix.cli.main import retrain_command
from trade_matrix.retrain.runner import parse_params, run_retrain
from trade_matrix.retrain.params import STEPS, RetrainParams
from trade_matrix.retrain.steps import run_steps

pytestmark = pytest.mark.slow

SMALL = {"symbols": ["BTCUSDT"], "as_of": "2021-01-01", "n_windows": 6, "rl": True, "rl_timesteps": 300,
         "backtest_months": 1, "n_jobs": 1}


def _registry(home) -> ModelRegistry:
    return ModelRegistry.from_settings(RetrainParams(home=str(home)).settings())


def _deployed_version(home, symbol="BTCUSDT"):
    path = home / "models" / symbol / "deployed.json"
    return json.loads(path.read_text())["version"] if path.exists() else None


def test_retrain_notebook_writes_report_and_metrics_then_a_failed_run_leaves_production_unchanged(tmp_path):
    # Arrange
    home, runs = tmp_path / "home", tmp_path / "runs"

    # Act: a small retrain of BTC on the bundled data through papermill
    run = run_retrain(SMALL | {"home": str(home)}, runs_dir=runs)

    # Assert: the executed notebook, its HTML report and metrics.json with every step's timing and the gates
    assert run.ok, run.error
    assert run.run_dir.parent == runs.resolve() and run.run_dir.name.endswith("-retrain")
    for name in ("retrain.ipynb", "report.html", "metrics.json"):
        assert (run.run_dir / name).is_file(), name
    m = json.loads((run.run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["error"] is None
    assert list(m["timings"]) == list(STEPS) and all(v >= 0 for v in m["timings"].values())
    assert all("seconds" in m["steps"][s] for s in STEPS)
    btc = m["symbols"]["BTCUSDT"]
    assert set(btc["gates"]) == {"ic", "hit_rate", "sharpe", "deflated_sharpe", "p_value", "passed"}
    assert (btc["trials"], btc["looks"]) == (1, 1)            # a first run: one variant at the first look
    assert isinstance(btc["passed"], bool) and btc["decision"] and btc["version"] == 1
    assert btc["promoted"] == btc["passed"]
    assert {"net", "gross", "turnover", "buy_and_hold"} <= set(m["backtest"])
    assert m["steps"]["rl"]["skipped"] is False and m["steps"]["rl"]["symbols"]["BTCUSDT"]["timesteps"] == 300
    assert (run.run_dir / "locked_features" / "BTCUSDT.json").is_file()
    assert len(list(run.run_dir.glob("*.png"))) >= 7
    nb = json.loads((run.run_dir / "retrain.ipynb").read_text())
    assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"])
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])

    # Arrange: make version 1 production (cheaply: force it; it failed its gates on real data)
    reg = _registry(home)
    if reg.production_version("BTCUSDT") is None:
        reg.promote("BTCUSDT", 1, force=True)
    assert reg.production_version("BTCUSDT") == 1 and _deployed_version(home) == 1

    # Act: a run that fails (one of its symbols has no data)
    failed = run_retrain(SMALL | {"symbols": ["BTCUSDT", "NOPEUSDT"], "home": str(home)}, runs_dir=runs)

    # Assert: not ok, the error recorded with its cell, the executed notebook shows it, production unchanged
    assert not failed.ok
    assert failed.error["ename"] == "DataError" and "NOPEUSDT" in failed.error["evalue"]
    assert isinstance(failed.error["cell_index"], int)
    fm = json.loads((failed.run_dir / "metrics.json").read_text())
    assert fm["status"] == "failed" and fm["error"]["ename"] == "DataError"
    assert (failed.run_dir / "report.html").is_file()
    nb = json.loads((failed.run_dir / "retrain.ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "DataError"
    assert reg.production_version("BTCUSDT") == 1 and _deployed_version(home) == 1
    assert [v["version"] for v in reg.show("BTCUSDT")["versions"]] == [1]   # nothing was registered


def test_retrain_command_exits_non_zero_on_failure_and_refuses_unknown_parameters(tmp_path, capsys):
    # unknown names fail before any kernel starts, naming the allowed ones
    with pytest.raises(ConfigError, match="allowed: symbols, as_of"):
        retrain_command([("windows", "6")], runs_dir=tmp_path / "runs")
    with pytest.raises(ConfigError, match="n_windows"):
        retrain_command([("n_windows", "zero")], runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    assert parse_params([("rl", "false"), ("symbols", "BTCUSDT,ETHUSDT")]) == {"rl": False, "symbols": "BTCUSDT,ETHUSDT"}

    code = retrain_command([("symbols", "NOPEUSDT"), ("home", str(tmp_path / "home"))], runs_dir=tmp_path / "runs")

    assert code == 1
    out = capsys.readouterr()
    assert "FAILED" in out.err and "DataError" in out.out and "NOPEUSDT" in out.out


def test_planted_signals_pass_corrected_for_two_instruments_and_are_promoted_and_exported_for_tier_4(tmp_path):
    # Arrange: two instruments, each with its own planted time-of-day signal the calendar features learn
    data = tmp_path / "data"
    for symbol, seed in (("BTCUSDT", 3), ("ETHUSDT", 4)):
        write_data_file(planted_bars(seed=seed), SeriesKind.OHLCV, "synthetic", symbol, "1h", data)
    params = {"symbols": ["BTCUSDT", "ETHUSDT"], "data_dir": str(data), "as_of": "2023-06-01", "n_windows": 6,
              "rl": False, "backtest_months": 1, "n_jobs": 1, "home": str(tmp_path / "home")}

    # Act
    steps = run_steps(params, run_dir=tmp_path / "run")

    # Assert: a first run tries one variant per instrument, so two tests; p corrected = min(1, 2 x raw)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert steps["gates"].summary["instruments_tested"] == 2
    for symbol in ("BTCUSDT", "ETHUSDT"):
        g = steps["gates"].summary["symbols"][symbol]
        assert (g["instruments_tested"], g["n_tests"]) == (2, 2)
        assert g["p_value_corrected"] == pytest.approx(min(1.0, 2 * g["p_value_raw"]), rel=1e-12)
        assert "2 tests corrected for (1 variant x 2 instruments)" in g["reason"]
        assert steps["training"].table.loc[symbol, "n_tests"] == 2
        s = m["symbols"][symbol]
        assert (s["n_tests"], s["instruments_tested"]) == (2, 2)
        assert s["gates"]["p_value"] == pytest.approx(s["p_value_corrected"]) and s["p_value_raw"] <= s["p_value_corrected"]
        assert s["passed"] and s["promoted"], s["decision"]
        reg = steps["registry"].summary["symbols"][symbol]
        assert reg["promoted"] and reg["production_before"] is None and reg["production_after"] == reg["version"] == 1
        assert _deployed_version(tmp_path / "home", symbol) == 1
        assert _registry(tmp_path / "home").load(symbol).version == 1
        assert (s["trials"], s["looks"]) == (1, 1) and "over 1 trial" in s["decision"]
        version = _registry(tmp_path / "home").show(symbol)["versions"][0]
        assert version["promoted_at"] is not None
        reg_ = _registry(tmp_path / "home")
        mv = mlflow.MlflowClient(reg_.tracking_uri, reg_.tracking_uri).get_model_version(reg_.model_name(symbol), "1")
        assert (mv.tags["trials"], mv.tags["looks"]) == ("1", "1")   # the trials behind it, on the version
    # the next retrain starts counting from these deployments: no earlier look to add
    from trade_matrix.retrain.steps import looks_since_deployment
    after = looks_since_deployment(_registry(tmp_path / "home"), "BTCUSDT")
    assert after == {"looks": 0, "trials": 0, "since_version": 1}
