"""The model registry's 4-tier loader under failure, and promotion / rollback, against a real MLflow (SQLite tracking
store and a file artifact store in a temporary folder per test).

Every test starts from the same deployment: one passing training run logged, registered as version 1 and promoted
to @production (so the local copy and deployed.json exist), then breaks something and checks which tier serves.
"Same model" means the same model id and identical predictions on a fixed frame. The training results are small
synthetic ones (planted signal passes its gates, pure noise fails), fitted once per module with one thread.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from trade_matrix.core import ModelError
from trade_matrix.core import sha256_file
from trade_matrix.models.training import TrainConfig, TrainingResult, decide, walk_forward_variants
from trade_matrix.models.tree import ModelConfig, fit_model, load_model
from trade_matrix.models.registry import ModelRegistry
from trade_matrix.models.tracking import TIER_NAMES, LoadedModel, RegisteredVersion
from trade_matrix.models.selection import features_checksum
from trade_matrix.models.validation import WalkForwardConfig, splits_table, walk_forward_splits, window_metrics

SYMBOL = "SYNUSDT"
SMALL = TrainConfig(model=ModelConfig(n_estimators=30, transfer_trees=(10, 20), n_jobs=1),
                    walk_forward=WalkForwardConfig(n_windows=6, purge_bars=20, min_train_bars=300))


def _frame(seed: int, strength: float = 1.0, n: int = 1200):
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=n, freq="4h", tz="UTC")
    x = pd.DataFrame(rng.normal(size=(n, 4)), index=idx, columns=["f0", "f1", "f2", "f3"])
    y = pd.Series(strength * (0.004 * x["f0"] - 0.003 * np.tanh(x["f1"])) + rng.normal(0, 0.01, n), index=idx)
    return x, y


def _result(seed: int, strength: float = 1.0) -> TrainingResult:
    "A TrainingResult from the public training pieces: the full variant's walk-forward, decision and final fit."
    x, y = _frame(seed, strength)
    preds, _ = walk_forward_variants(x, y, SYMBOL, SMALL)
    chosen, decisions, table, n_tests, reason = decide(preds, SMALL)
    until = x.index[-1] + pd.Timedelta("4h")
    chosen_preds = preds.rename(columns={chosen: "prediction"})[["window", "prediction", "label"]]
    model = fit_model(x, y, SYMBOL, until, SMALL.model).with_out_of_sample(preds[chosen])   # as `train_instrument`
    return TrainingResult(symbol=SYMBOL, until=until, model=model, variant=chosen,
                          decision=decisions[chosen], variants=table, windows=window_metrics(chosen_preds, SMALL.cost),
                          predictions=preds, splits=splits_table(walk_forward_splits(len(y), SMALL.walk_forward), y.index),
                          selection=None, n_tests=n_tests, reason=reason, timings={}, shuffled=False)


@pytest.fixture(scope="module")
def results() -> dict[str, TrainingResult]:
    out = {"good": _result(seed=0), "better": _result(seed=2), "noise": _result(seed=3, strength=0.0)}
    assert (out["good"].passed, out["better"].passed, out["noise"].passed) == (True, True, False)
    return out


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame(seed=9)[0].iloc[:200]


@pytest.fixture(scope="module")
def empty_database(tmp_path_factory) -> Path:
    "An MLflow SQLite database with its tables created: migrations take seconds, a copy takes none."
    import mlflow
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


class Deployment(NamedTuple):
    registry: ModelRegistry
    version: RegisteredVersion
    home: Path

    @property
    def client(self):
        import mlflow
        return mlflow.MlflowClient(self.registry.tracking_uri)

    @property
    def model_files(self) -> Path:
        "The version's model directory in the (file) artifact store."
        return Path(self.version.artifact_uri.removeprefix("file://"))


@pytest.fixture
def deployment(tmp_path, empty_database, results) -> Deployment:
    shutil.copy(empty_database, tmp_path / "mlflow.db")
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlartifacts", tmp_path / "models")
    version = registry.log_training(results["good"], plots=False)
    registry.promote(SYMBOL)
    return Deployment(registry, version, tmp_path)


def assert_same_model(loaded: LoadedModel, result: TrainingResult, frame: pd.DataFrame):
    assert loaded.model.model_id == result.model.model_id
    np.testing.assert_array_equal(loaded.model.predict(frame), result.model.predict(frame))
    want = result.model.out_of_sample          # the walk-forward record the trader warms its signal state on
    assert want is not None and len(want) > 100
    assert loaded.model.out_of_sample.index.equals(want.index)
    np.testing.assert_array_equal(loaded.model.out_of_sample.to_numpy(), want.to_numpy())


def assert_served_by(loaded: LoadedModel, tier: int):
    assert (loaded.tier, loaded.tier_name) == (tier, TIER_NAMES[tier])
    assert [f.split(":")[0] for f in loaded.failures] == [f"tier {t} ({TIER_NAMES[t]})" for t in range(1, tier)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the tiers ---------------------------------------------------------------------------------------------------

def test_tier1_alias_serves_when_all_present(deployment, results, frame):
    loaded = deployment.registry.load(SYMBOL)
    assert_served_by(loaded, 1)
    assert loaded.failures == ()
    assert (loaded.version, loaded.run_id) == (1, deployment.version.run_id)
    assert loaded.source == f"models:/tm-{SYMBOL}@production -> runs:/{deployment.version.run_id}/model_files"
    assert_same_model(loaded, results["good"], frame)


def test_deleted_registered_model_then_run_id_tier_serves_same_model(deployment, results, frame):
    deployment.client.delete_registered_model(f"tm-{SYMBOL}")
    loaded = deployment.registry.load(SYMBOL)
    assert_served_by(loaded, 2)
    assert "has no version with alias @production" in loaded.failures[0]
    assert (loaded.version, loaded.run_id) == (1, deployment.version.run_id)
    assert_same_model(loaded, results["good"], frame)


def test_corrupt_tracking_db_then_artifact_store_tier_serves_same_model(deployment, results, frame):
    (deployment.home / "mlflow.db").write_bytes(b"\x00garbage, not sqlite" * 4096)
    start = time.perf_counter()
    loaded = deployment.registry.load(SYMBOL)
    assert time.perf_counter() - start < 5  # refused up front, not after MLflow's ~100 s of engine retries
    assert_served_by(loaded, 3)
    assert all("is not an SQLite database" in f for f in loaded.failures)
    assert loaded.source == deployment.version.artifact_uri
    assert_same_model(loaded, results["good"], frame)


def test_unreachable_tracking_server_then_artifact_store_tier(deployment, results, frame):
    registry = ModelRegistry(f"http://127.0.0.1:{_free_port()}", deployment.registry.artifact_root,
                             deployment.registry.models_dir)
    start = time.perf_counter()
    loaded = registry.load(SYMBOL)
    assert time.perf_counter() - start < 5  # no retries with back-off
    assert_served_by(loaded, 3)
    assert all("Connection refused" in f for f in loaded.failures), loaded.failures
    assert_same_model(loaded, results["good"], frame)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the loader's settings were restored


def test_unreachable_tracking_database_server_then_artifact_store_tier(deployment, results, frame):
    registry = ModelRegistry(f"postgresql+psycopg://mlflow@127.0.0.1:{_free_port()}/mlflow",
                             deployment.registry.artifact_root, deployment.registry.models_dir)
    start = time.perf_counter()
    loaded = registry.load(SYMBOL)
    assert time.perf_counter() - start < 5  # MLflow's own engine creation would retry for about 100 s
    assert_served_by(loaded, 3)
    assert all("tracking database server 127.0.0.1" in f and "is unreachable" in f for f in loaded.failures)
    assert_same_model(loaded, results["good"], frame)


def test_hanging_tracking_server_times_out_then_artifact_store_tier(deployment, results, frame):
    with socket.socket() as server:  # accepts connections (the kernel does), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        registry = ModelRegistry(f"http://127.0.0.1:{server.getsockname()[1]}", deployment.registry.artifact_root,
                                 deployment.registry.models_dir, request_timeout=1)
        start = time.perf_counter()
        loaded = registry.load(SYMBOL)
        elapsed = time.perf_counter() - start
    assert elapsed < 8, elapsed  # one 1 s timeout per tracking tier, no retries
    assert_served_by(loaded, 3)
    assert all("Read timed out" in f for f in loaded.failures), loaded.failures
    assert_same_model(loaded, results["good"], frame)


def test_deleted_run_then_artifact_store_tier(deployment, results, frame):
    deployment.client.delete_run(deployment.version.run_id)
    loaded = deployment.registry.load(SYMBOL)
    assert_served_by(loaded, 3)
    assert all(f"run {deployment.version.run_id}" in f and "is deleted" in f for f in loaded.failures)
    assert_same_model(loaded, results["good"], frame)


def test_artifacts_gone_then_local_files_tier_serves_same_model(deployment, results, frame):
    shutil.rmtree(deployment.home / "mlartifacts")
    loaded = deployment.registry.load(SYMBOL)
    assert_served_by(loaded, 4)
    assert loaded.source == str(deployment.home / "models" / SYMBOL / "model")
    assert (loaded.version, loaded.run_id) == (1, deployment.version.run_id)
    assert_same_model(loaded, results["good"], frame)


def test_every_tier_gone_raises_model_error_naming_each_tier(deployment):
    (deployment.home / "mlflow.db").write_bytes(b"garbage" * 1000)
    shutil.rmtree(deployment.home / "mlartifacts")
    shutil.rmtree(deployment.home / "models" / SYMBOL / "model")
    with pytest.raises(ModelError) as e:
        deployment.registry.load(SYMBOL)
    message = str(e.value)
    assert message.startswith(f"{SYMBOL}: no tier could load a model")
    for tier, name in TIER_NAMES.items():
        assert f"tier {tier} ({name})" in message
    assert "is not an SQLite database" in message      # tiers 1-2
    assert "No such artifact" in message or "No such file" in message  # tier 3
    assert "meta.json is missing" in message           # tier 4


def test_tampered_locked_features_in_artifact_store_refused_and_next_tier_serves(deployment, results, frame):
    files = deployment.model_files
    locked = json.loads((files / "locked_features.json").read_text())
    locked["features"].reverse()
    locked["sha256"] = features_checksum(locked["features"])
    (files / "locked_features.json").write_text(json.dumps(locked))
    meta = json.loads((files / "meta.json").read_text())
    meta["features_sha256"] = locked["sha256"]
    meta["files"]["locked_features.json"] = sha256_file(files / "locked_features.json")
    (files / "meta.json").write_text(json.dumps(meta))
    load_model(files)  # internally consistent: only the expected checksum can catch it

    loaded = deployment.registry.load(SYMBOL)
    assert_served_by(loaded, 4)  # tiers 1-3 all read the tampered store
    assert all("refusing a model with another feature list" in f for f in loaded.failures)
    assert_same_model(loaded, results["good"], frame)


# --- promotion ---------------------------------------------------------------------------------------------------

def _deployed_json(deployment: Deployment) -> dict:
    return json.loads((deployment.home / "models" / SYMBOL / "deployed.json").read_text())


def test_promote_then_rollback_restores_previous_version_and_local_copy(deployment, results, frame):
    import mlflow
    tracking_before = mlflow.get_tracking_uri()
    registry = deployment.registry
    v2 = registry.log_training(results["better"], plots=False)
    assert registry.production_version(SYMBOL) == 1  # a passing run becomes champion, not production
    promoted = registry.promote(SYMBOL)
    assert (promoted.version, registry.production_version(SYMBOL)) == (2, 2)
    assert _deployed_json(deployment)["run_id"] == v2.run_id
    assert_same_model(registry.load(SYMBOL), results["better"], frame)
    assert registry.show(SYMBOL)["production_history"] == [1]

    back = registry.rollback(SYMBOL)
    assert (back.version, back.run_id, registry.production_version(SYMBOL)) == (1, deployment.version.run_id, 1)
    deployed = _deployed_json(deployment)
    assert (deployed["version"], deployed["model_id"]) == (1, results["good"].model.model_id)
    local = load_model(deployment.home / "models" / SYMBOL / "model", deployed["features_sha256"])
    assert local.model_id == results["good"].model.model_id
    loaded = registry.load(SYMBOL)
    assert (loaded.tier, loaded.version) == (1, 1)
    assert_same_model(loaded, results["good"], frame)
    info = registry.show(SYMBOL)
    assert (info["production"], info["champion"], info["production_history"]) == (1, 2, [])
    with pytest.raises(ModelError, match="no earlier production version to roll back to"):
        registry.rollback(SYMBOL)
    assert sorted(p.name for p in (deployment.home / "models").iterdir()) == [SYMBOL]  # no staging leftovers
    assert mlflow.get_tracking_uri() == tracking_before


def test_failed_gate_leaves_production_untouched(deployment, results, frame):
    registry = deployment.registry
    before = (deployment.home / "models" / SYMBOL / "deployed.json").read_bytes()
    failed = registry.log_training(results["noise"], plots=False)
    assert failed.version == 2
    version = deployment.client.get_model_version(f"tm-{SYMBOL}", "2")
    assert (version.tags["passed"], version.aliases) == ("false", [])
    assert registry.production_version(SYMBOL) == 1
    assert registry.list_models().loc[0, ["versions", "production", "champion", "latest"]].tolist() == [2, 1, 1, 2]
    with pytest.raises(ModelError, match="version 2 failed its gates"):
        registry.promote(SYMBOL, 2)
    assert (deployment.home / "models" / SYMBOL / "deployed.json").read_bytes() == before
    assert_same_model(registry.load(SYMBOL), results["good"], frame)


def test_promote_verifies_files_before_moving_the_alias(deployment, results):
    registry = deployment.registry
    v2 = registry.log_training(results["better"], plots=False)
    model_file = Path(v2.artifact_uri.removeprefix("file://")) / "model.ubj"
    model_file.write_bytes(model_file.read_bytes()[:-10])  # truncated in the artifact store
    before = (deployment.home / "models" / SYMBOL / "deployed.json").read_bytes()
    with pytest.raises(ModelError, match="model.ubj has sha256"):
        registry.promote(SYMBOL, 2)
    assert registry.production_version(SYMBOL) == 1
    assert registry.show(SYMBOL)["production_history"] == []
    assert (deployment.home / "models" / SYMBOL / "deployed.json").read_bytes() == before
    assert sorted(p.name for p in (deployment.home / "models").iterdir()) == [SYMBOL]


# --- placebos and the per-window record ---------------------------------------------------------------------------

def test_a_placebo_that_passes_its_gates_is_never_champion_and_never_promoted(deployment, results):
    # Arrange: a shuffled-label run that cleared the gates by luck (to the registry: passed and shuffled)
    registry = deployment.registry
    lucky = dataclasses.replace(results["better"], shuffled=True)
    assert lucky.passed and lucky.shuffled
    before = (deployment.home / "models" / SYMBOL / "deployed.json").read_bytes()

    # Act
    placebo = registry.log_training(lucky, plots=False)

    # Assert: recorded as it is, no alias moved, and promotion refused with or without force
    version = deployment.client.get_model_version(f"tm-{SYMBOL}", str(placebo.version))
    assert (placebo.version, version.tags["passed"], version.tags["shuffled"], version.aliases) == (2, "true", "true", [])
    assert registry.show(SYMBOL)["champion"] == 1
    for force in (False, True):
        with pytest.raises(ModelError, match="version 2 is a placebo run"):
            registry.promote(SYMBOL, 2, force=force)
    assert registry.production_version(SYMBOL) == 1
    assert (deployment.home / "models" / SYMBOL / "deployed.json").read_bytes() == before
    # a genuine pass afterwards still becomes @champion
    real = registry.log_training(results["better"], plots=False)
    assert registry.show(SYMBOL)["champion"] == real.version == 3


def test_training_run_logs_each_window_figure_with_the_window_as_step(deployment, results):
    windows = results["good"].windows
    figures = {"ic": "ic", "sharpe_net": "sharpe_net", "hit_rate": "hit_rate", "p_value": "ic_p_value",
               "max_drawdown": "max_drawdown", "turnover": "turnover"}
    for name, column in figures.items():
        history = sorted(deployment.client.get_metric_history(deployment.version.run_id, f"window_{name}"),
                         key=lambda m: m.step)
        assert [m.step for m in history] == list(windows.index), name
        np.testing.assert_allclose([m.value for m in history], windows[column].to_numpy(dtype="float64"),
                                   rtol=1e-12, equal_nan=True, err_msg=name)
    assert windows["ic_p_value"].between(0, 1).all() and (windows["turnover"] >= 0).all()
