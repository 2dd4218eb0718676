"""`tm train` and `tm models`: the JSON contract, deploy on a pass, nothing moves on a fail, rollback, tiers."""
import json

import pytest
from typer.testing import CliRunner

from test_models import planted_bars
from trade_matrix.cli import app
from trade_matrix.core import SeriesKind
from trade_matrix.data import write_data_file


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A private Trade-Matrix home (tracking DB, artifacts, models/) and a planted-signal data folder."""
    monkeypatch.setenv("TM_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    write_data_file(planted_bars(seed=3), SeriesKind.OHLCV, "synthetic", "BTCUSDT", "1h", data)
    return tmp_path, data


def tm(*args):
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.stdout


def test_train_prints_the_contract_and_deploys_a_passing_model_then_placebo_moves_nothing(home):
    tmp, data = home
    doc = json.loads(tm("train", "--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-01", "--json"))
    assert {"symbol", "run_id", "version", "gates", "promoted"} <= set(doc)
    assert set(doc["gates"]) == {"ic", "hit_rate", "sharpe", "p_value", "passed"}
    assert doc["symbol"] == "BTCUSDT" and doc["version"] == 1 and doc["variant"] == "full"
    assert doc["gates"]["passed"] and doc["promoted"], doc["reason"]
    assert doc["production_before"]["loaded"] is False                 # the first model of the instrument
    assert (tmp / "home" / "models" / "BTCUSDT" / "deployed.json").is_file()

    placebo = json.loads(tm("train", "--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-01",
                            "--shuffle-labels", "--seed", "11", "--json"))
    assert placebo["version"] == 2 and placebo["shuffled"]
    assert not placebo["gates"]["passed"] and not placebo["promoted"]
    assert placebo["production_before"] == {"loaded": True, "version": 1, "tier": 1, "tier_name": "registry alias",
                                            "model_id": doc["model_id"]}
    loaded = json.loads(tm("models", "load", "--symbol", "BTCUSDT", "--json"))
    assert (loaded["version"], loaded["tier"], loaded["model_id"]) == (1, 1, doc["model_id"])   # production untouched

    listing = json.loads(tm("models", "list", "--json"))
    assert listing[0]["symbol"] == "BTCUSDT" and listing[0]["production"] == 1 and listing[0]["versions"] == 2


def test_weekly_update_tries_transfer_variants_then_rollback_restores_the_previous_version(home):
    tmp, data = home
    first = json.loads(tm("train", "--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-01", "--json"))
    second = json.loads(tm("train", "--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-08", "--json"))
    assert first["promoted"] and second["version"] == 2
    assert second["n_tests"] == 6 and "transfer" in second["reason"]          # full + 5 tree counts, corrected for
    if not second["promoted"]:
        tm("models", "promote", "--symbol", "BTCUSDT", "--version", "2", "--force")
    assert json.loads(tm("models", "load", "--symbol", "BTCUSDT", "--json"))["version"] == 2
    back = json.loads(tm("models", "rollback", "--symbol", "BTCUSDT", "--json"))
    assert back["production"] == 1
    loaded = json.loads(tm("models", "load", "--symbol", "BTCUSDT", "--json"))
    assert (loaded["version"], loaded["model_id"]) == (1, first["model_id"])
    deployed = json.loads((tmp / "home" / "models" / "BTCUSDT" / "deployed.json").read_text())
    assert deployed["version"] == 1 and deployed["model_id"] == first["model_id"]
    shown = json.loads(tm("models", "show", "--symbol", "BTCUSDT", "--json"))
    assert shown["production"] == 1 and shown["champion"] in (1, 2)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert "production" in shown["versions"][0]["aliases"] and "production" not in shown["versions"][1]["aliases"]
