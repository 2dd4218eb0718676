"""Replay: the live decision path over real BTC+ETH bars against the paper exchange, and its parity with research.

Small models (50 trees) are fitted on 3,000 labelled bars ending 700 bars before `START`, so the 600-bar warm-up
they predict is out of sample (what the signal state may learn skill from); the regime models are fitted
once at `START` and shared by every replay here (they are inputs, like the models).
"""
import logging
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import SizingTier, iso
from trade_matrix.data.market import load_market_data
from trade_matrix.features.catalogue import compute_features, forward_return
from trade_matrix.models.tree import ModelConfig, fit_model
from trade_matrix.strategy.regime import RegimeConfig
from trade_matrix.strategy.signal import SignalConfig
from trade_matrix.core import ModelError
from trade_matrix.models.training import TrainConfig, train_instrument
from trade_matrix.backtest.parity import batch_targets, parity_check, research_parity, research_run
from trade_matrix.backtest.replay import ModelSchedule, replay
from trade_matrix.backtest.weekly import WeeklyConfig, weekly_schedule
from trade_matrix.models.compiled import CompiledTrees
from trade_matrix.trader.config import TraderConfig, fit_regime_models
from trade_matrix.trader.decision import NO_MODEL
from trade_matrix.models.validation import WalkForwardConfig
from trade_matrix.risk.breaker import BreakerConfig
from trade_matrix.risk.engine import RiskConfig
from trade_matrix.risk.var import daily_returns, portfolio_var

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
START, END = pd.Timestamp("2024-05-01", tz="UTC"), pd.Timestamp("2024-05-22", tz="UTC")
# these tests exercise the mechanics of trading (fills, parity, risk, the breaker): the small models' out-of-sample
# IC is not significant, so the significance test on skill is off here (tests/test_honest_decisions.py covers it)
CFG = TraderConfig(regime=RegimeConfig(search_reps=0, refine_starts=2), breaker=BreakerConfig(max_drawdown=0.3),
                   signal=SignalConfig(min_skill_t=0.0))


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
        x = ff.loc[y.index].iloc[-3700:-700, :30]
        out[s] = fit_model(x, y.loc[x.index], s, START, ModelConfig(n_estimators=50))
    return out


@pytest.fixture(scope="module")
def regimes(md):
    return fit_regime_models(md, SYMBOLS, START, CFG.regime)


@pytest.fixture(scope="module")
def result(md, models, regimes):
    logging.getLogger("trade_matrix.risk.breaker").setLevel(logging.ERROR)
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
    assert (bt.targets.isna() == result.targets.isna()).all().all()    # the same bars hold
    tiers = result.decisions.pivot(index="time", columns="symbol", values="tier")
    assert (bt.tiers.to_numpy() == tiers[SYMBOLS].to_numpy()).all()


def test_parity_passes_and_fails_on_a_tampered_target(md, models, result):
    report, bt = research_parity(md, result, models)
    assert report.passed, report
    assert report.bars == len(result.equity)
    assert report.max_position_diff < 5e-3 and report.max_return_diff < 2e-4
    tampered = bt.targets.copy()
    # ETH, decided at the close of bar i and filled at the open of bar i + 1, where the replay holds at least 0.3 of
    # equity: research is told to go flat instead, which every risk limit allows, so nothing can cut it back
    held_next = result.fractions["ETHUSDT"].reindex(tampered.index).shift(-1)
    i = int(np.flatnonzero((held_next.abs() >= 0.3).to_numpy() & (np.arange(len(tampered)) >= 30))[0])
    tampered.iloc[i, 1] = 0.0
    bad = parity_check(result, tampered, md=md)
    assert not bad.passed
    assert bad.first_divergence["time"] == iso(tampered.index[i + 1])
    assert bad.first_divergence["symbol"] == "ETHUSDT"
    assert abs(bad.first_divergence["replay"] - bad.first_divergence["research"]) > 0.2


def test_orders_only_when_the_sizing_trades(result):
    d = result.decisions
    held = d[~d["traded"]]
    assert len(held) > 0 and held["order_id"].isna().all() and held["risk_action"].isna().all()
    assert result.targets.isna().sum().sum() == len(held)           # a held bar orders nothing: NaN target
    assert len(result.fills) <= int(d["traded"].sum())


def test_parity_holds_through_a_breaker_trip(md, models, regimes):
    cfg = CFG.model_copy(update={"breaker": BreakerConfig(max_drawdown=0.01)})
    res = replay(md, SYMBOLS, START, END, models, cfg, regime_models=regimes)
    assert {"OPEN", "HALF_OPEN"} <= set(res.breaker)
    report, bt = research_parity(md, res, models)
    assert report.passed, report
    assert (bt.tiers == SizingTier.EMERGENCY_FLAT.value).any().any()
    # the probe's cut matters: the same targets accounted without the breaker path part from the replay
    uncut = parity_check(res, research_run(md, bt.targets, cfg, breaker=None), md=md)
    assert not uncut.passed
    assert res.breaker.loc[:uncut.first_divergence["time"]].iloc[:-1].eq("HALF_OPEN").any()


def test_model_schedule_rules():
    t = [START, START + pd.Timedelta("7D")]
    with pytest.raises(ModelError, match="must increase"):
        ModelSchedule(t[::-1], [{}, {}])
    with pytest.raises(ModelError, match="one mapping per start"):
        ModelSchedule(t, [{}])
    s = ModelSchedule(t, [{"A": 1}, {"A": 2}])
    assert s.at(START - pd.Timedelta("4h")) == {"A": 1} and s.at(t[1] - pd.Timedelta("4h")) == {"A": 1}
    assert s.at(t[1]) == {"A": 2}


def test_weekly_retraining_is_out_of_sample_and_keeps_parity(md):
    tc = TrainConfig(model=ModelConfig(n_estimators=40), walk_forward=WalkForwardConfig(n_windows=3))
    end = START + pd.Timedelta("15D")
    feats = tuple(compute_features(md.as_of(START), "BTCUSDT").features.columns[:10])
    init = {s: train_instrument(md, s, until=START - pd.Timedelta("1D"), config=tc, features=feats) for s in SYMBOLS}
    sched = weekly_schedule(md, SYMBOLS, START, end, init, tc,
                            WeeklyConfig(n_windows=3, transfer_trees=(50,), ignore_gates=True))
    assert sched.starts == [START, START + pd.Timedelta("7D"), START + pd.Timedelta("14D")]
    log = sched.log
    assert (log["until"] <= log["time"]).all() and len(log) == 2 * 3
    ids = {sched.at(t)["BTCUSDT"].model_id for t in sched.starts}
    assert len(ids) == 3                                             # a new model each week
    weekly = log[log["time"] > START]                                # the updates: gates corrected for both instruments
    assert (weekly["instruments_tried"] == len(SYMBOLS)).all()
    assert (weekly["n_tests"] % len(SYMBOLS) == 0).all() and (weekly["n_tests"] >= len(SYMBOLS)).all()
    assert all(f"{n} tests corrected for (" in r and f"x {len(SYMBOLS)} instruments)" in r
               for r, n in zip(weekly["reason"], weekly["n_tests"]))
    assert len(sched.regimes) == 3 and sched.regimes[1]["BTCUSDT"] is not sched.regimes[0]["BTCUSDT"]
    res = replay(md, SYMBOLS, START, end, sched, CFG)
    served = res.decisions["time"].map(lambda t: sched.at(t)["BTCUSDT"].model_id)
    assert served.nunique() == 3
    report, _ = research_parity(md, res)
    assert report.passed, report
    with pytest.raises(ModelError, match="after the backtest starts"):
        late = {"BTCUSDT": train_instrument(md, "BTCUSDT", until=START + pd.Timedelta("1D"), config=tc, features=feats)}
        weekly_schedule(md, ["BTCUSDT"], START, end, late, tc)


class _ToyPolicy:
    "A deterministic stand-in for an RL policy: leans with the signal, less in drawdown (tests the plumbing only)."
    def act(self, obs):
        return float(np.tanh(obs["signal"])) * (1.0 - min(1.0, 10 * obs["drawdown"]))


def test_rl_policy_in_the_cascade_keeps_parity(md, models, regimes):
    pol = {s: _ToyPolicy() for s in SYMBOLS}
    res = replay(md, SYMBOLS, START, END, models, CFG, regime_models=regimes, policies=pol)
    tiers = set(res.decisions["tier"])
    assert tiers & {SizingTier.FULL_RL.value, SizingTier.BLENDED.value}, tiers
    assert (res.drawdown > 0).any()
    report, bt = research_parity(md, res, models)
    assert report.passed, report


def test_use_regimes_restarts_each_filter_on_the_refitted_model(md, models, regimes):
    from trade_matrix.execution.paper import PaperExchange
    from trade_matrix.trader.decision import DecisionPath
    path = DecisionPath(SYMBOLS, models, CFG, regime_models=regimes, venue=PaperExchange())
    week = START + pd.Timedelta("7D")
    new = fit_regime_models(md, SYMBOLS, week, CFG.regime)
    history = {s: md.as_of(week).bars(s)[["close"]] for s in SYMBOLS}
    path.use_regimes(new, history)
    for s in SYMBOLS:
        f = path.filters[s]
        assert f.model is new[s] and f.model is not regimes[s]
        assert abs(sum(f.probabilities.values()) - 1) < 1e-9 and f.n_updates > 100   # warmed up on what was known


TIGHT = CFG.model_copy(update={"risk": RiskConfig(var_limit=0.02)})


@pytest.fixture(scope="module")
def tight(md, models, regimes):
    logging.getLogger("trade_matrix.risk.breaker").setLevel(logging.ERROR)
    return replay(md, SYMBOLS, START, END, models, TIGHT, regime_models=regimes)


def test_var_covariance_is_estimated_daily_from_the_days_before_only(md, tight):
    covs = tight.covariances
    # one estimate per UTC day a decision is made in: the first close is START + 4h, the last END
    assert list(covs) == list(pd.date_range(START, END, freq="1D"))
    for d in list(covs)[::5]:
        view = md.as_of(d)                                     # an independent estimate from the data known at d
        r = daily_returns({s: view.bars(s)["close"] for s in SYMBOLS})
        r = r[r.index >= d - pd.Timedelta(days=TIGHT.var_days)]
        assert covs[d].symbols == tuple(SYMBOLS) and len(r) == TIGHT.var_days
        np.testing.assert_allclose(covs[d].matrix, r.cov().to_numpy(), rtol=1e-9)


def test_tight_var_limit_resizes_orders_and_never_adds_risk_past_it(md, tight):
    d = tight.decisions
    var = d["risk_reasons"].fillna("").str.contains("var:", regex=False)
    assert var.sum() >= 5 and set(d.loc[var, "risk_action"]) <= {"RESIZED", "DENIED"}
    assert (d.loc[var, "risk_action"] == "RESIZED").any()
    closes = pd.DataFrame({s: md.bars(s)["close"] for s in SYMBOLS}).reindex(tight.positions.index)
    pos, limit = tight.positions, TIGHT.risk.var_limit
    step = TIGHT.interval
    checked = 0
    for i in range(len(pos) - 1):                              # the bar's orders fill at the next open
        t = pos.index[i]
        cov = tight.covariances[(t + step).floor("D")]
        pre, post = pos.iloc[i].to_dict(), pos.iloc[i + 1].to_dict()
        held = dict(pre)
        for s in SYMBOLS:                                      # in the order the path checks them
            if post[s] == held[s]:
                continue
            held[s] = post[s]
            reduces = post[s] * pre[s] >= 0 and abs(post[s]) <= abs(pre[s])
            v = portfolio_var({x: held[x] * closes.iloc[i][x] for x in SYMBOLS}, cov, tight.equity.iloc[i],
                              TIGHT.risk.var_confidence)
            assert reduces or v <= limit * (1 + 1e-6), (iso(t), s, v)
            checked += not reduces
    assert checked > 10


def test_var_limit_keeps_research_parity_and_reports_the_bars(md, models, tight):
    report, bt = research_parity(md, tight, models)
    assert report.passed, report
    assert len(report.var_bars) >= 5 and any("VaR" in n and "same RiskEngine rule" in n for n in report.notes)
    run = research_run(md, bt.targets, TIGHT, tight.breaker)
    assert run.var_applied and run.risk_cuts["reasons"].str.startswith("var:").sum() >= 5
    # research without the VaR limit does not pass silently
    off = research_run(md, bt.targets, TIGHT.model_copy(update={"var_days": None}), tight.breaker)
    bad = parity_check(tight, off, md=md)
    assert not bad.passed and any("did NOT apply VaR" in n for n in bad.notes)


def test_var_limit_can_be_turned_off(md, models, regimes):
    res = replay(md, SYMBOLS, START, START + pd.Timedelta("5D"), models,
                 TIGHT.model_copy(update={"var_days": None}), regime_models=regimes)
    assert res.covariances == {}
    assert not res.decisions["risk_reasons"].fillna("").str.contains("var:", regex=False).any()
