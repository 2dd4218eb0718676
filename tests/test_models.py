"""Training: placebos fail the gates every time, a planted signal passes, transfer keeps old trees frozen."""
import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import SeriesKind
from trade_matrix.data.market import load_market_data, write_data_file
from trade_matrix.models.training import TrainConfig, train_instrument
from trade_matrix.models.tree import ModelConfig, load_model, save_model
from trade_matrix.models.validation import WalkForwardConfig

# Smaller than production (20 windows, 80 trees) so the placebo matrix stays quick; the gates are the real ones.
QUICK = TrainConfig(model=ModelConfig(n_estimators=80, transfer_trees=(50, 100)),
                    walk_forward=WalkForwardConfig(n_windows=20))


@pytest.fixture(scope="module")
def market():
    return load_market_data(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])


def planted_bars(n_hours: int = 3 * 365 * 24, seed: int = 0, strength: float = 0.004) -> pd.DataFrame:
    """Hourly bars whose 4h returns depend on the time of day: a signal the calendar features can learn."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2021-01-01", periods=n_hours, freq="1h", tz="UTC")
    hour4 = (ts.hour // 4).to_numpy()
    drift = np.where(np.isin(hour4, [0, 2, 4]), strength, -strength) / 4   # per hour, same sign all 4h bucket
    r = drift + rng.normal(0, 0.01 / 2, n_hours)
    close = 100 * np.exp(np.cumsum(r))
    open_ = np.r_[100.0, close[:-1]]
    spread = np.abs(rng.normal(0, 0.002, n_hours)) * close
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
                         "close": close, "volume": rng.uniform(100, 200, n_hours)}, index=pd.Index(ts, name="ts"))


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("planted")
    write_data_file(planted_bars(), SeriesKind.OHLCV, "synthetic", "BTCUSDT", "1h", d)
    return d


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_labels_fail_the_gates_every_time(market, symbol, seed):
    cfg = QUICK.model_copy(update={"model": QUICK.model.model_copy(update={"seed": seed})})
    result = train_instrument(market, symbol, until="2025-03-01", config=cfg, shuffle_labels=True)
    assert result.shuffled and not result.passed, result.reason
    assert result.n_tests == 1 and "failed" in result.reason


def test_planted_signal_passes_every_gate_through_the_full_pipeline(planted_dir):
    md = load_market_data(planted_dir, ["BTCUSDT"])
    result = train_instrument(md, "BTCUSDT", config=QUICK)
    d = result.decision
    assert result.passed, result.reason
    assert d.ic > 0.1 and d.hit_rate > 0.55 and d.sharpe > 0.5 and d.p_value_corrected < 0.01
    # Boruta found the calendar: the hour features carry the planted signal
    assert any(f.startswith("hour_") for f in result.model.locked.features), result.model.locked.features
    # the same data with the labels shuffled fails
    placebo = train_instrument(md, "BTCUSDT", config=QUICK, shuffle_labels=True)
    assert not placebo.passed, placebo.reason


def test_weekly_transfer_keeps_production_trees_frozen_and_reports_both_variants(planted_dir, tmp_path):
    md = load_market_data(planted_dir, ["BTCUSDT"])
    first = train_instrument(md, "BTCUSDT", until="2023-10-01", config=QUICK)
    production = load_model(save_model(first.model, tmp_path / "prod"))
    second = train_instrument(md, "BTCUSDT", until="2023-10-08", production=production, config=QUICK)
    assert list(second.variants.index) == ["full", "transfer_50", "transfer_100"]
    assert second.n_tests == 3
    assert "transfer" in second.reason and "full" in second.reason
    # whichever was kept, the transfer candidate never touched the production model
    frame = md.as_of("2023-10-08")
    from trade_matrix.features.catalogue import compute_features
    x = compute_features(frame, "BTCUSDT").features.iloc[-50:]
    np.testing.assert_array_equal(production.predict(x), first.model.predict(x))
    if second.variant.startswith("transfer_"):
        n = int(second.variant.split("_")[1])
        assert second.model.n_trees == production.n_trees + n and second.model.frozen_trees == production.n_trees
        np.testing.assert_array_equal(second.model.predict(x, n_trees=production.n_trees), production.predict(x))
        assert second.model.locked.features == production.locked.features


def test_training_never_sees_data_after_until(market):
    result = train_instrument(market, "SOLUSDT", until="2024-12-01T08:00Z", config=QUICK, features=("ret_6", "rsi_14", "atr_14"))
    assert result.predictions.index.max() + pd.Timedelta("8h") <= pd.Timestamp("2024-12-01T08:00Z")
    assert result.model.lineage[-1]["last_bar"] <= "2024-12-01T00:00:00Z"
    assert result.selection is None and result.model.locked.features == ("ret_6", "rsi_14", "atr_14")


def test_unknown_symbol_and_too_little_history_are_clear_errors(market):
    from trade_matrix.core import DataError
    with pytest.raises(DataError, match="XRPUSDT; have: BTCUSDT"):
        train_instrument(market, "XRPUSDT", config=QUICK)
    with pytest.raises(DataError, match=r"rows.*needs? .*1540|1540.*rows"):
        train_instrument(market, "SOLUSDT", until="2020-12-01", config=QUICK)


def test_gated_full_predictions_do_not_depend_on_the_production_model(market):
    # Arrange: a selected list, and a production model trained on a different list (one column in common)
    cfg = QUICK.model_copy(update={"walk_forward": QUICK.walk_forward.model_copy(update={"n_windows": 6})})
    selected = ("ret_1", "ret_6", "rsi_14", "sma_dist_50", "atr_14")
    other = ("ret_24", "bb_width_20", "mfi_14", "rs_eth_42", "sma_dist_50")
    production = train_instrument(market, "BTCUSDT", until="2025-02-01", config=cfg, features=other).model
    # Act: the same training with and without that production model
    alone = train_instrument(market, "BTCUSDT", until="2025-03-01", config=cfg, features=selected)
    beside = train_instrument(market, "BTCUSDT", until="2025-03-01", production=production, config=cfg,
                              features=selected)
    # Assert: the transfer variants were tried on the production list, and the gated full predictions are the
    # predictions of the full model that would be deployed (its list, its settings), whatever production holds
    assert list(beside.variants.index) == ["full", "transfer_50", "transfer_100"]
    pd.testing.assert_series_equal(beside.predictions["full"], alone.predictions["full"])
    assert beside.variants.loc["full", "sharpe_net"] == alone.variants.loc["full", "sharpe_net"]
    if beside.variant == "full":
        assert beside.model.locked.features == selected
    else:
        assert beside.model.locked.features == other


def test_the_returned_model_carries_its_variants_walk_forward_predictions(market):
    cfg = QUICK.model_copy(update={"walk_forward": QUICK.walk_forward.model_copy(update={"n_windows": 4})})
    result = train_instrument(market, "ETHUSDT", until="2025-03-01", config=cfg, features=("ret_1", "ret_6", "rsi_14"))
    oos = result.model.out_of_sample
    assert oos is not None and oos.index.equals(result.predictions.index)
    np.testing.assert_array_equal(oos.to_numpy(), result.predictions[result.variant].to_numpy())
    assert oos.index.max() < result.until
