"""`tm backtest` / `tm parity`: the JSON contract, the report folder, and clear errors for bad periods."""
import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from trade_matrix.cli.app import app


def tm_process(*args):
    return subprocess.run([sys.executable, "-c", "from trade_matrix.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def test_backtest_prints_metrics_beside_buy_and_hold_and_writes_the_report(tmp_path):
    res = CliRunner().invoke(app, ["backtest", "--symbols", "BTCUSDT", "--from", "2025-02-01", "--to", "2025-02-22",
                                   "--ignore-gates", "--runs-dir", str(tmp_path), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for key in ("sharpe", "max_drawdown", "total_return"):
        assert isinstance(doc[key], float) and isinstance(doc["benchmark_buy_hold"][key], float)
    assert doc["training"]["BTCUSDT"]["deployed"] and "reason" in doc["training"]["BTCUSDT"]
    assert set(doc["timings"]) == {"training_s", "weekly_training_s", "replay_s", "research_s"}
    assert doc["retrain"] == "weekly" and doc["training"]["BTCUSDT"]["weekly_updates"] == 2   # Feb 8 and Feb 15
    assert doc["parity"]["passed"] and doc["parity"]["bars"] > 100
    run = Path(doc["run_dir"])
    updates = (run / "model_updates.csv").read_text().splitlines()
    assert len(updates) == 1 + 3 and updates[0].startswith("time,symbol,until,variant,passed,deployed")
    assert (run / "report.html").is_file() and json.loads((run / "metrics.json").read_text())
    assert {p.name for p in run.glob("*.png")} >= {"equity.png", "drawdown.png", "window_ic.png"}   # weekly IC
    assert isinstance(doc["ic"], float) and 0 <= doc["ic_p_value"] <= 1                          # the served models' IC


def test_training_after_the_first_bar_is_refused_naming_the_overlap():
    r = tm_process("backtest", "--symbols", "BTCUSDT", "--from", "2025-02-01", "--to", "2025-03-01",
                   "--train-until", "2025-02-15")
    assert r.returncode == 2, r.stderr
    assert "BTCUSDT: model trained on data until" in r.stderr and "overlap" in r.stderr


def test_unknown_symbol_and_period_outside_the_data_are_clear_errors():
    r = tm_process("backtest", "--symbols", "XRPUSDT", "--from", "2025-02-01", "--to", "2025-03-01")
    assert r.returncode == 2 and "unknown symbol(s) ['XRPUSDT']" in r.stderr, r.stderr
    r = tm_process("backtest", "--symbols", "BTCUSDT", "--from", "2025-02-01", "--to", "2027-01-01")
    assert r.returncode == 2 and "after the end of the data" in r.stderr, r.stderr
