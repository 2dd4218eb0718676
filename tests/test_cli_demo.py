"""`tm demo` (the README's main job) on a small scale, and `tm retrain`'s parameter errors."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def tm_process(*args, cwd=None):
    return subprocess.run([sys.executable, "-c", "from trade_matrix.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=900, cwd=cwd)


def test_demo_retrains_replays_with_weekly_updates_and_reports(tmp_path):
    r = tm_process("demo", "--symbols", "BTCUSDT", "--cutoff", "2025-05-15", "--months", "1",
                   "--runs-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list(tmp_path.glob("*-demo"))
    assert len(runs) == 1
    run = runs[0]
    doc = json.loads((run / "demo.json").read_text())
    assert doc["cutoff"] == "2025-05-15T00:00:00Z" and doc["end"] == "2025-06-15T00:00:00Z"
    assert doc["weekly_updates"] == 4                                  # May 22, 29, June 5, 12
    assert doc["parity"]["passed"], doc["parity"]
    for key in ("total_return", "total_return_gross", "sharpe", "sharpe_gross", "annual_turnover"):
        assert isinstance(doc["metrics"][key], float), key
    assert (run / "backtest" / "report.html").is_file() and (run / "backtest" / "model_updates.csv").is_file()
    assert json.loads((run / "retrain" / "metrics.json").read_text())["status"] == "ok"
    assert (run / "home" / "mlflow.db").is_file()                       # the embedded registry, inside the run
    assert "report:" in r.stdout and "parity with the research backtest PASSED" in r.stdout


def test_retrain_parameter_errors_exit_2_naming_the_problem():
    r = tm_process("retrain", "-p", "bogus", "1")
    assert r.returncode == 2 and "unknown retrain parameter 'bogus'" in r.stderr and "allowed:" in r.stderr, r.stderr
    r = tm_process("retrain", "-p", "rl")
    assert r.returncode == 2 and "-p needs a name and a value" in r.stderr, r.stderr
    r = tm_process("retrain", "stray")
    assert r.returncode == 2 and "unexpected argument 'stray'" in r.stderr, r.stderr


def test_strict_retrain_exit_codes():
    from trade_matrix.retrain.runner import GATES_FAILED, exit_code
    m = {"symbols": {"BTCUSDT": {"passed": False}, "ETHUSDT": {"passed": True}}}
    assert exit_code(True, m) == (0, "")
    code, why = exit_code(True, m, strict=True)
    assert code == GATES_FAILED == 5 and "BTCUSDT" in why and "ETHUSDT" not in why
    assert exit_code(False, m, strict=True)[0] == 1
    r = tm_process("retrain", "--strict", "-p", "bogus", "1")
    assert r.returncode == 2 and "unknown retrain parameter" in r.stderr, r.stderr
