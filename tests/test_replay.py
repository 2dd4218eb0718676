"""Replay: the live decision path over real BTC+ETH bars against the paper exchange, and its parity with research.

Small models (50 trees) are fitted on the features and labels known before `START`; the regime models are fitted
once at `START` and shared by every replay here (they are inputs, like the models).
"""
import logging
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import SizingTier, iso
from trade_matrix.data import load_market_data
from trade_matrix.features import compute_features, forward_return
from trade_matrix.models import ModelConfig, fit_model
from trade_matrix.regime import RegimeConfig
from trade_matrix.replay import (NO_MODEL, CompiledTrees, ReplayConfig, batch_targets, fit_regime_models, parity_check,
                                 replay, research_parity)
from trade_matrix.risk import BreakerConfig

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
START, END = pd.Timestamp("2024-05-01", tz="UTC"), pd.Timestamp("2024-05-22", tz="UTC")
CFG = ReplayConfig(regime=RegimeConfig(search_reps=0, refine_starts=2), breaker=BreakerConfig(max_drawdown=0.3))


@pytest.fixture(scope="module")
def md():
    return load_market_data(symbols=SYMBOLS)


@pytest.fixture(scope="module")
def models(md):
    out = {}
    for s in SYMBOLS:
        view = md.as_of(START)
        ff = compute_features(view, s).features
        y = forward_return(view.bars(s)).dropna()
        x = ff.loc[y.index].iloc[-3000:, :30]
        out[s] = fit_model(x, y.loc[x.index], s, START, ModelConfig(n_estimators=50))
    return out


@pytest.fixture(scope="module")
def regimes(md):
    return fit_regime_models(md, SYMBOLS, START, CFG.regime)


@pytest.fixture(scope="module")
def result(md, models, regimes):
    logging.getLogger("trade_matrix.risk").setLevel(logging.ERROR)
    return replay(md, SYMBOLS, START, END, models, CFG, regime_models=regimes)


def test_models_are_out_of_sample(models):
    for m in models.values():
        assert pd.Timestamp(m.lineage[-1]["last_bar"]) < START


def test_compiled_trees_match_xgboost(md, models):
    feats = {s: compute_features(md.as_of(END), s).features for s in SYMBOLS}
    ct = CompiledTrees(models, list(feats["BTCUSDT"].columns))
    for i in (50, 3000, -1):
        rows = np.stack([feats[s].to_numpy()[i] for s in SYMBOLS])
        want = [models[s].predict(feats[s].iloc[[i]])[0] for s in SYMBOLS]
        np.testing.assert_allclose(ct.predict(rows), want, rtol=1e-5, atol=1e-9)


def test_decisions_carry_tiers_and_reasons(result):
    d = result.decisions
    assert len(d) == len(result.equity) * len(SYMBOLS) == 21 * 6 * 2
    assert set(d["tier"]) <= {t.value for t in SizingTier}
    assert d["reason"].str.len().gt(0).all()
    assert d["reason"].str.startswith(tuple(t.value for t in SizingTier)).all()
    # every order the path wanted went through risk, and every risk decision is in the engine's log
    wanted = d["risk_action"].notna()
    assert wanted.sum() == len(result.risk)
    assert set(d.loc[wanted, "risk_action"]) <= {"APPROVED", "RESIZED", "DENIED"}
    assert result.positions.abs().sum().sum() > 0, "the models should trade over three weeks"


def test_exchange_ledger_is_exact(result):
    ex = result.exchange
    traded = sum((f.signed_quantity * f.price for f in ex.fills), Decimal(0))
    assert ex.cash == ex.initial_cash - traded - ex.fees_paid - ex.funding_paid
    assert ex.fees_paid == sum((f.fee for f in ex.fills), Decimal(0))
    for f in ex.fills:   # whole lots, tick prices
        spec = ex.instruments[f.symbol]
        assert f.quantity % spec.lot_size == 0 and f.price % spec.tick_size == 0


def test_fills_happen_at_the_next_open(md, result):
    bars = {s: md.bars(s) for s in SYMBOLS}
    orders = {o.id: o for o in result.exchange.history if o.status.value == "NEW"}
    for f in result.exchange.fills:
        o = orders[f.order_id]
        assert f.time == o.created_at    # created at the deciding close = the next bar's open
        open_ = bars[f.symbol].loc[f.time, "open"]
        spec = result.exchange.instruments[f.symbol]
        want = spec.round_price(Decimal(repr(float(open_))) * (1 + Decimal("0.0002") * f.side.sign))
        assert f.price == want


def test_symbol_without_model_stays_flat(md, models, regimes):
    res = replay(md, SYMBOLS, START, START + pd.Timedelta(days=5), {"BTCUSDT": models["BTCUSDT"], "ETHUSDT": None},
                 CFG, regime_models=regimes)
    eth = res.decisions[res.decisions["symbol"] == "ETHUSDT"]
    assert (eth["tier"] == NO_MODEL).all() and eth["reason"].str.contains("no model").all()
    assert (res.positions["ETHUSDT"] == 0).all()
    assert not any(f.symbol == "ETHUSDT" for f in res.exchange.fills)


def test_no_lookahead(md, models, regimes):
    """The replay up to t is the same whether or not the data after t exists."""
    cut = START + pd.Timedelta(days=6)
    full = replay(md, SYMBOLS, START, cut + pd.Timedelta(days=4), models, CFG, regime_models=regimes)
    short = replay(md.as_of(cut), SYMBOLS, START, cut, models, CFG, regime_models=regimes)
    n = len(short.equity)
    assert n == 6 * 6
    cols = ["time", "symbol", "tier", "target", "fraction", "target_quantity", "risk_action", "reason"]
    pd.testing.assert_frame_equal(full.decisions[cols].iloc[: len(short.decisions)], short.decisions[cols])
    pd.testing.assert_series_equal(full.equity.iloc[:n], short.equity)
    pd.testing.assert_frame_equal(full.positions.iloc[:n], short.positions)


def test_batch_targets_match_the_live_path(md, models, result):
    bt = batch_targets(md, SYMBOLS, START, END, models, CFG, result.regime_models, result.weights, result.breaker)
    assert bt.targets.index.equals(result.targets.index)
    assert float((bt.targets - result.targets).abs().max().max()) < 1e-6
    tiers = result.decisions.pivot(index="time", columns="symbol", values="tier")
    assert (bt.tiers.to_numpy() == tiers[SYMBOLS].to_numpy()).all()


def test_parity_passes_and_fails_on_a_tampered_target(md, models, result):
    report, bt = research_parity(md, result, models)
    assert report.passed, report
    assert report.bars == len(result.equity)
    assert report.max_position_diff < 5e-3 and report.max_return_diff < 2e-4
    tampered = bt.targets.copy()
    i = 30
    tampered.iloc[i, 1] = tampered.iloc[i, 1] - 0.25            # ETH, decided at bar i, executed at bar i + 1
    bad = parity_check(result, tampered, md=md)
    assert not bad.passed
    assert bad.first_divergence["time"] == iso(tampered.index[i + 1])
    assert bad.first_divergence["symbol"] == "ETHUSDT"
    assert abs(bad.first_divergence["replay"] - bad.first_divergence["research"]) > 0.2
