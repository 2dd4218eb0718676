"""Honest decisions: the reference instruments are fed whatever is traded, and the sizing learns skill only
from predictions that were out of sample when made.

Each test here fails on the decision path before issue 14: trading SOLUSDT or DOGEUSDT alone, the replay computed
the cross-asset features (`rs_btc_42`, `corr_btc_42`, `beta_btc_42`, `rs_eth_42`) without BTC's and ETH's closes
while the batch path had them, and a warm-up fed the model's predictions of its own training rows to the signal
state.
"""
import logging

import numpy as np
import pandas as pd
import pytest

from trade_matrix.backtest.parity import research_parity
from trade_matrix.backtest.replay import replay
from trade_matrix.data.market import load_market_data
from trade_matrix.features.catalogue import compute_features, forward_return
from trade_matrix.models.tree import ModelConfig, fit_model
from trade_matrix.risk.breaker import BreakerConfig
from trade_matrix.strategy.regime import RegimeConfig
from trade_matrix.trader.config import TraderConfig

START, END = pd.Timestamp("2024-05-01", tz="UTC"), pd.Timestamp("2024-05-15", tz="UTC")
CFG = TraderConfig(regime=RegimeConfig(search_reps=0, refine_starts=2), breaker=BreakerConfig(max_drawdown=0.3))
CROSS = ["rs_btc_42", "corr_btc_42", "beta_btc_42", "rs_eth_42", "corr_btc_42_rank", "rs_eth_42_rank"]


@pytest.fixture(scope="module")
def md():
    return load_market_data(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"])


def cross_asset_model(md, symbol):
    "50 trees on the cross-asset features and a few of the symbol's own, fitted on bars ending 700 bars before START."
    view = md.as_of(START)
    ff = compute_features(view, symbol).features
    y = forward_return(view.bars(symbol)).dropna()
    x = ff.loc[y.index, CROSS + list(ff.columns[:8])].iloc[-3700:-700]
    return fit_model(x, y.loc[x.index], symbol, START, ModelConfig(n_estimators=50))


@pytest.mark.parametrize("symbol", ["SOLUSDT", "DOGEUSDT"])
def test_one_symbol_alone_is_fed_btc_and_eth_and_keeps_parity(md, symbol):
    logging.getLogger("trade_matrix.risk.breaker").setLevel(logging.ERROR)
    model = cross_asset_model(md, symbol)
    result = replay(md, [symbol], START, END, {symbol: model}, CFG)
    report, batch = research_parity(md, result)
    live = result.decisions.set_index("time")["prediction"].astype("float64")
    research = batch.predictions[symbol].reindex(live.index)
    assert live.notna().all() and research.notna().all()
    np.testing.assert_allclose(live.to_numpy(), research.to_numpy(), rtol=1e-5, atol=1e-9)   # features with BTC and ETH
    assert report.passed, report


def test_the_path_names_the_references_it_must_be_fed(md):
    from trade_matrix.execution.paper import PaperExchange
    from trade_matrix.core import INSTRUMENTS
    from trade_matrix.trader.decision import DecisionPath
    sol = cross_asset_model(md, "SOLUSDT")
    path = DecisionPath(["SOLUSDT"], {"SOLUSDT": sol}, CFG, venue=PaperExchange(INSTRUMENTS))
    assert path.references == ["BTCUSDT", "ETHUSDT"]
    own_only = fit_model(*_own_features(md, "SOLUSDT"), "SOLUSDT", START, ModelConfig(n_estimators=5))
    assert DecisionPath(["SOLUSDT"], {"SOLUSDT": own_only}, CFG, venue=PaperExchange(INSTRUMENTS)).references == []


def _own_features(md, symbol):
    view = md.as_of(START)
    ff = compute_features(view, symbol).features
    y = forward_return(view.bars(symbol)).dropna()
    x = ff.loc[y.index, ["ret_1", "rsi_14"]].iloc[-1000:]
    return x, y.loc[x.index]


def test_a_model_scored_on_its_own_training_rows_does_not_size_positions(md):
    """A model that memorised its training rows, served from the bar after them: its fit is not skill.

    Before issue 14 the 600-bar warm-up scored it on the rows it was fitted on (IC near 1), and Kelly sized
    from that; now those rows count only with out-of-sample predictions, and it has none."""
    view = md.as_of(START)
    ff = compute_features(view, "BTCUSDT").features
    y = forward_return(view.bars("BTCUSDT")).dropna()
    x = ff.loc[y.index].iloc[-3000:, :30]
    memoriser = fit_model(x, y.loc[x.index], "BTCUSDT", START,
                          ModelConfig(n_estimators=300, max_depth=8, min_child_weight=1, learning_rate=0.3,
                                      subsample=1.0, colsample=1.0))
    in_sample = np.corrcoef(memoriser.predict(x), y.loc[x.index])[0, 1]
    assert in_sample > 0.8                                     # it fits its training rows almost perfectly
    result = replay(md, ["BTCUSDT"], START, END, {"BTCUSDT": memoriser}, CFG)
    assert (result.decisions["skill"] == 0).all()              # no out-of-sample record: no skill
    assert len(result.fills) == 0 and (result.positions["BTCUSDT"] == 0).all()


def test_a_placebo_served_without_gates_holds_no_position_in_its_first_weeks(md):
    from trade_matrix.models.training import TrainConfig, train_instrument
    from trade_matrix.models.validation import WalkForwardConfig
    config = TrainConfig(walk_forward=WalkForwardConfig(n_windows=12))
    placebo = train_instrument(md, "BTCUSDT", until=START - pd.Timedelta("1D"), config=config, shuffle_labels=True)
    model = placebo.model
    if model.out_of_sample is None:                           # the walk-forward record the trader warms up on
        model = model.with_out_of_sample(placebo.predictions[placebo.variant])
    assert model.out_of_sample is not None and len(model.out_of_sample) > 500
    result = replay(md, ["BTCUSDT"], START, START + pd.Timedelta("21D"), {"BTCUSDT": model}, CFG)
    assert len(result.fills) == 0 and (result.positions["BTCUSDT"] == 0).all()


def test_a_planted_signal_still_trades():
    from trade_matrix.strategy.signal import SignalTracker
    from trade_matrix.strategy.sizing import Sizer
    rng = np.random.default_rng(3)
    info = rng.normal(0, 1, 800)
    returns = np.r_[0.0, 0.004 * info[:-1] + rng.normal(0, 0.012, 799)]   # bar t's return follows prediction t-1
    tracker, sizer, position, traded = SignalTracker(), Sizer("BTCUSDT"), 0.0, 0
    for p, r in zip(0.001 * info, returns):
        st = tracker.update(p, r)
        d = sizer.decide(st["signal"], st["confidence"], st["ic"], st["sigma"], skill=st["skill"],
                         horizon=st["horizon"], position=position)
        position, traded = d.target, traded + d.traded
    assert st["skill"] > 0.15 and traded > 10
