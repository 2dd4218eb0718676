"""`tm train` and `tm models`: the JSON contract, deploy on a pass, nothing moves on a fail, rollback, tiers."""
import json

import pytest
from typer.testing import CliRunner

from test_models import planted_bars
from trade_matrix.cli.app import app
from trade_matrix.cli.main import main
from trade_matrix.core import SeriesKind
from trade_matrix.data.market import write_data_file


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


TRAIN_KEYS = {"symbol", "run_id", "version", "gates", "promoted"}
GATE_KEYS = {"ic", "hit_rate", "sharpe", "p_value", "passed"}


def train_json(*args) -> dict:
    "`tm train ... --json` parsed strictly (NaN is not JSON), checked against the exact contract."
    text = tm("train", *args, "--json")
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"tm train --json printed {c}, which is not JSON"))
    assert set(doc) == TRAIN_KEYS
    assert set(doc["gates"]) == GATE_KEYS
    return doc


def test_train_prints_the_contract_and_deploys_a_passing_model_then_placebo_moves_nothing(home):
    tmp, data = home
    doc = train_json("--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-01")
    assert doc["symbol"] == "BTCUSDT" and doc["version"] == 1
    assert doc["gates"]["passed"] and doc["promoted"]
    assert (tmp / "home" / "models" / "BTCUSDT" / "deployed.json").is_file()
    first = json.loads(tm("models", "show", "--symbol", "BTCUSDT", "--json"))["versions"][0]
    assert (first["variant"], first["run_id"], first["shuffled"]) == ("full", doc["run_id"], False)

    placebo = train_json("--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-01", "--shuffle-labels",
                         "--seed", "11")
    assert placebo["version"] == 2
    assert not placebo["gates"]["passed"] and not placebo["promoted"]
    shown = json.loads(tm("models", "show", "--symbol", "BTCUSDT", "--json"))
    assert shown["versions"][1]["shuffled"] and shown["production"] == 1
    loaded = json.loads(tm("models", "load", "--symbol", "BTCUSDT", "--json"))
    assert (loaded["version"], loaded["tier"], loaded["model_id"]) == (1, 1, first["model_id"])   # production untouched

    listing = json.loads(tm("models", "list", "--json"))
    assert listing[0]["symbol"] == "BTCUSDT" and listing[0]["production"] == 1 and listing[0]["versions"] == 2


def test_weekly_update_tries_transfer_variants_then_rollback_restores_the_previous_version(home):
    from mlflow.tracking import MlflowClient
    tmp, data = home
    first = train_json("--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-01")
    assert first["promoted"]
    # the human-readable output keeps the evidence the JSON leaves out
    text = " ".join(tm("train", "--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-08").split())
    for part in ("BTCUSDT: version 2", "variant", "Sharpe net", "gross", "turnover", "corrected for 6 tests (raw",
                 "before: version 1 served by tier 1 (registry alias)", "transfer"):
        assert part in text, (part, text)
    shown = json.loads(tm("models", "show", "--symbol", "BTCUSDT", "--json"))
    second = shown["versions"][1]
    run = MlflowClient(f"sqlite:///{tmp / 'home' / 'mlflow.db'}").get_run(second["run_id"])
    assert run.data.params["n_tests"] == "6"                                  # full + 5 tree counts, corrected for
    assert "transfer" in second["reason"]
    first_model = shown["versions"][0]["model_id"]
    if shown["production"] != 2:
        tm("models", "promote", "--symbol", "BTCUSDT", "--version", "2", "--force")
    assert json.loads(tm("models", "load", "--symbol", "BTCUSDT", "--json"))["version"] == 2
    back = json.loads(tm("models", "rollback", "--symbol", "BTCUSDT", "--json"))
    assert back["production"] == 1
    loaded = json.loads(tm("models", "load", "--symbol", "BTCUSDT", "--json"))
    assert (loaded["version"], loaded["model_id"]) == (1, first_model)
    deployed = json.loads((tmp / "home" / "models" / "BTCUSDT" / "deployed.json").read_text())
    assert deployed["version"] == 1 and deployed["model_id"] == first_model
    shown = json.loads(tm("models", "show", "--symbol", "BTCUSDT", "--json"))
    assert shown["production"] == 1 and shown["champion"] in (1, 2)
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert "production" in shown["versions"][0]["aliases"] and "production" not in shown["versions"][1]["aliases"]


def test_train_config_file_sets_the_gates_and_a_typo_is_refused_before_any_work(home, capsys):
    # Arrange: a planted signal that passes the default gates, and a config whose IC gate it cannot clear
    tmp, data = home
    strict = tmp / "strict.toml"
    strict.write_text("[gates]\nmin_ic = 0.99\n[walk_forward]\nn_windows = 20\n")
    typo = tmp / "typo.toml"
    typo.write_text("[gates]\nmin_icc = 0.99\n")

    # Act
    doc = train_json("--symbol", "BTCUSDT", "--data-dir", str(data), "--until", "2023-06-01", "--train-config", str(strict))
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["train", "--symbol", "BTCUSDT", "--data-dir", str(data), "--train-config", str(typo)])

    # Assert: the IC is real but below the configured gate, so nothing is deployed; the typo names the key, exit 2
    assert 0.03 < doc["gates"]["ic"] < 0.99 and not doc["gates"]["passed"] and not doc["promoted"]
    assert refused.value.code == 2 and "gates.min_icc" in capsys.readouterr().err
    shown = json.loads(tm("models", "show", "--symbol", "BTCUSDT", "--json"))
    assert shown["production"] is None and len(shown["versions"]) == 1
