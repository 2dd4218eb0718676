"""Backtest: the plain accounting by hand, one cost model, vectorbt re-accounting the reported path, baselines,
out-of-sample guard, bad input, report."""
import json

import numpy as np
import pandas as pd
import pytest

import trade_matrix.backtest.accounting as accounting
from trade_matrix.backtest.accounting import (BacktestConfig, CROSS_CHECK_TOLERANCE, ProbeLimits, probe_limits, align,
                                              buy_and_hold_targets, check_out_of_sample, executed_units, funding_paid,
                                              funding_matrix, hold_unchanged, momentum_targets, research_backtest,
                                              simulate, vbt_portfolio)
from trade_matrix.backtest.report import new_run_dir, write_report
from trade_matrix.core import ConfigError, CostConfig, DataError
from trade_matrix.risk.engine import RiskConfig
from trade_matrix.trader.config import TraderConfig

IX = pd.date_range("2024-01-01", periods=5, freq="4h", tz="UTC")   # 00:00 .. 16:00: settlements at bars 0, 2, 4
BARS = {"A": pd.DataFrame({"open": [100, 100, 110, 120, 100.], "close": [100, 105, 115, 125, 110.]}, index=IX),
        "B": pd.DataFrame({"open": [50, 50, 40, 45, 50.], "close": [50, 45, 42, 48, 52.]}, index=IX)}
TARGETS = pd.DataFrame({"A": [0.5, np.nan, 0.0, 0.5, 0.0], "B": [-0.5, np.nan, np.nan, 0.0, 0.0]}, index=IX)
FUNDING = {"A": pd.Series([0.001, 0.001], index=[IX[2], IX[4]]), "B": pd.Series([0.002], index=[IX[2]])}
CFG = BacktestConfig(cost=CostConfig(taker_fee=0.001, slippage=0.001), initial_cash=1000.0)
TOLERANCE = 1e-9    # the cross-check's tolerance, as the README states it: relative equity difference at every bar


def test_plain_accounting_by_hand():
    r = research_backtest(BARS, TARGETS, CFG, funding=FUNDING)
    eq, tr = r.equity.to_numpy(), r.trades
    # bar 0: the first target is only decided at its close; nothing held
    assert eq[0] == 1000.0
    # bar 1 open: buy 5 A at 100 x 1.001 = 100.1, sell 10 B at 50 x 0.999 = 49.95, fees 0.1% of each notional
    assert list(tr["symbol"][:2]) == ["A", "B"] and (tr["time"][:2] == IX[1]).all() and (tr["decided_at"][:2] == IX[0]).all()
    assert tr["units"][:2].tolist() == pytest.approx([5.0, -10.0])
    assert tr["price"][:2].tolist() == pytest.approx([100.1, 49.95])
    assert tr["fee"][:2].tolist() == pytest.approx([0.5005, 0.4995])
    cash = 1000 - 5 * 100.1 - 0.5005 + 10 * 49.95 - 0.4995
    assert cash == pytest.approx(998.0)
    assert eq[1] == pytest.approx(cash + 5 * 105 - 10 * 45)            # 1073
    assert r.fees.iloc[1] == pytest.approx(1.0 + 1.0)                   # fees + slippage cost vs the open
    # bar 2 (08:00 settlement): long A pays 5 x 110 x 0.1%, short B receives 10 x 40 x 0.2%; NaN targets: no trade
    assert r.funding.iloc[2] == pytest.approx(0.55 - 0.8)
    cash += -0.55 + 0.8
    assert eq[2] == pytest.approx(cash + 5 * 115 - 10 * 42)
    assert (tr["time"] == IX[2]).sum() == 0
    # bar 3: sell the 5 A at 120 x 0.999
    cash += 5 * 119.88 - 5 * 119.88 * 0.001
    assert eq[3] == pytest.approx(cash - 10 * 48)
    # bar 4 (16:00): B still short, no rate for it -> nothing charged, reported; A flat pays nothing
    assert r.funding.iloc[4] == 0.0 and r.metrics["funding_missing"] == {"B": 1}
    e4 = cash - 10 * 50
    dq = 0.5 * e4 / 100
    cash += -dq * 100.1 - dq * 100.1 * 0.001 - 10 * 50.05 - 10 * 50.05 * 0.001
    assert eq[4] == pytest.approx(cash + dq * 110)
    assert r.turnover.iloc[4] == pytest.approx((dq * 100 + 10 * 50) / e4)
    # returns and the gross attribution
    assert r.returns.iloc[1] == pytest.approx(eq[1] / 1000 - 1)
    assert r.gross_returns.iloc[2] == pytest.approx((eq[2] - eq[1] + (0.55 - 0.8)) / eq[1])
    assert r.metrics["total_return"] == pytest.approx(eq[4] / 1000 - 1)
    assert r.metrics["n_trades"] == 5


def test_funding_sign_short_receives_long_pays():
    ix = pd.date_range("2024-01-01", periods=3, freq="4h", tz="UTC")
    bars = {"A": pd.DataFrame({"open": [100.0] * 3, "close": [100.0] * 3}, index=ix)}
    rates = {"A": pd.Series([0.01], index=[ix[2]])}   # 08:00
    cfg = BacktestConfig(cost=CostConfig(taker_fee=0, slippage=0), initial_cash=1000.0)
    for w, paid in ((1.0, 10.0), (-1.0, -10.0)):
        r = research_backtest(bars, pd.DataFrame({"A": [w, np.nan, np.nan]}, index=ix), cfg, funding=rates)
        assert r.funding.sum() == pytest.approx(paid)
        assert r.equity.iloc[-1] == pytest.approx(1000 - paid)
    off = research_backtest(bars, pd.DataFrame({"A": [1.0, np.nan, np.nan]}, index=ix),
                            BacktestConfig(cost=CostConfig(taker_fee=0, slippage=0, funding=False), initial_cash=1000.0),
                            funding=rates)
    assert off.funding.sum() == 0.0


def test_the_backtest_charges_the_one_cost_model_the_trader_pays():
    assert BacktestConfig().cost == TraderConfig().cost == CostConfig()
    r = research_backtest(BARS, TARGETS, BacktestConfig(cost=CostConfig(taker_fee=0.0002, slippage=0.0005), initial_cash=1000.0))
    assert r.trades["price"].iloc[0] == pytest.approx(100 * 1.0005)
    assert r.trades["fee"].iloc[0] == pytest.approx(5 * 100 * 1.0005 * 0.0002)
    with pytest.raises(ValueError, match=r"write \[cost\] taker_fee = 0.001 in a file, cost=CostConfig\(taker_fee=0.001\)"):
        BacktestConfig(taker_fee=0.001)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        BacktestConfig(use_maker=True)


def _random_case(seed, n=400, k=3):
    rng = np.random.default_rng(seed)
    ix = pd.date_range("2023-01-01", periods=n, freq="4h", tz="UTC")
    bars = {}
    for s in range(k):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        open_ = np.concatenate([[100.0], close[:-1]]) * np.exp(rng.normal(0, 0.002, n))
        bars[f"S{s}"] = pd.DataFrame({"open": open_, "close": close}, index=ix)
    w = rng.uniform(-1, 1, (n, k))
    w = w / np.abs(w).sum(axis=1, keepdims=True) * rng.uniform(0.2, 0.8, (n, 1))    # gross <= 80%: no leverage
    w[rng.uniform(size=n) < 0.3] = np.nan     # some bars: no order (whole rows, so the held gross stays below 100%)
    w[rng.uniform(size=(n, k)) < 0.05] = 0.0
    return bars, pd.DataFrame(w, index=ix, columns=list(bars))


def _funding(bars, seed, scale=1e-3):
    "Funding rates at every 8h settlement of the bars, for every symbol."
    rng = np.random.default_rng(seed)
    ix = next(iter(bars.values())).index
    settle = ix[ix == ix.floor("8h")]
    return {s: pd.Series(rng.normal(0, scale, len(settle)), index=settle) for s in bars}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorbt_agrees_with_the_plain_loop(seed):
    bars, targets = _random_case(seed)
    cfg = BacktestConfig()
    t, o, c = align(bars, targets)
    rates = funding_matrix(_funding(bars, seed), t.index, list(t.columns))
    plain = simulate(o, c, t, cfg, rates)
    pf = vbt_portfolio(o, c, executed_units(plain.trades, t.index, list(t.columns)), cfg)
    paid = funding_paid(pf.assets().to_numpy(), o, rates)
    np.testing.assert_allclose(paid, plain.funding.to_numpy(), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(pf.value().to_numpy() - np.cumsum(paid), plain.equity.to_numpy(), rtol=TOLERANCE)
    assert pf.orders.count() == len(plain.trades)
    r = research_backtest(bars, targets, cfg, funding=_funding(bars, seed))
    assert r.cross_check["passed"] and r.cross_check["max_rel_equity_diff"] <= TOLERANCE


def test_cross_check_compares_the_reported_equity_with_funding_risk_cuts_breaker_and_leverage():
    # Arrange: funding at every settlement, a breaker that probes for a day, a 40% position cap, and targets up to
    # 150% gross (the loop lends, vectorbt cannot)
    bars, targets = _random_case(7)
    targets = targets * 1.9
    breaker = pd.Series("CLOSED", index=targets.index)
    breaker.iloc[100:106] = "HALF_OPEN"
    # Act
    r = research_backtest(bars, targets, BacktestConfig(), funding=_funding(bars, 7), breaker=breaker,
                          risk=RiskConfig(max_position_fraction=0.4, gross_leverage=1.5))
    check = r.cross_check
    # Assert: vectorbt re-accounted the reported path itself, funding and cuts included
    assert r.funding.abs().sum() > 0 and len(r.risk_cuts) > 0 and check["fills_under_limits"] > 0
    assert (r.positions.abs().sum(axis=1) > 1.0).any()                      # leveraged at times
    assert check["tolerance"] == TOLERANCE == CROSS_CHECK_TOLERANCE
    assert check["passed"], check
    assert check["max_rel_equity_diff"] <= TOLERANCE and check["max_weight_diff"] <= TOLERANCE
    assert check["vbt_orders"] == check["plain_trades"] == len(r.trades)
    assert check["funding_recomputed"] == pytest.approx(r.funding.sum(), rel=1e-9)


def test_cross_check_fails_when_the_reported_path_charges_the_wrong_funding(monkeypatch):
    # Arrange: the reported path charges every funding rate twice (a deliberate bug in its accounting)
    bars, targets = _random_case(3)
    funding = _funding(bars, 3)
    right = simulate

    def doubled(open_, close, targets, config, rates=None, *limits):
        return right(open_, close, targets, config, None if rates is None else 2 * rates, *limits)

    monkeypatch.setattr(accounting, "simulate", doubled)
    # Act
    r = research_backtest(bars, targets, BacktestConfig(), funding=funding)
    # Assert: vectorbt prices the funding on its own holdings, so the reported equity no longer agrees with it
    assert not r.cross_check["passed"]
    assert r.cross_check["max_rel_equity_diff"] > 1e-6


def test_buy_and_hold_is_the_asset_return_minus_entry_costs():
    bars, _ = _random_case(5, n=300, k=1)
    cfg = BacktestConfig(cost=CostConfig(funding=False))
    t, o, c = align(bars, pd.DataFrame({"S0": 0.0}, index=bars["S0"].index))
    bh = simulate(o, c, buy_and_hold_targets(c), cfg)
    asset = c["S0"].iloc[-1] / o["S0"].iloc[1] - 1       # bought at the second bar's open
    entry = (1 + cfg.cost.slippage) * (1 + cfg.cost.taker_fee) - 1
    assert bh.equity.iloc[-1] / cfg.initial_cash - 1 == pytest.approx(asset - entry, rel=1e-12)
    r = research_backtest(bars, t, cfg)
    assert r.benchmarks["buy_and_hold"]["total_return"] == pytest.approx(asset - entry, rel=1e-12)
    assert r.benchmarks["buy_and_hold"]["n_trades"] == 1


def test_momentum_orders_only_on_change():
    bars, _ = _random_case(3, n=300, k=2)
    _, _, c = align(bars, pd.DataFrame(0.0, index=bars["S0"].index, columns=list(bars)))
    m = momentum_targets(c)
    filled = m.ffill()
    assert set(np.unique(filled.to_numpy())) <= {0.0, 0.5}
    assert (m.notna() & m.eq(filled.shift(1))).sum().sum() == 0
    assert hold_unchanged(pd.DataFrame({"a": [0.1, 0.1, np.nan, 0.1, 0.2]}))["a"].notna().tolist() == \
        [True, False, False, False, True]


def test_out_of_sample_check():
    check_out_of_sample({"A": "2023-12-31T20:00:00Z"}, IX[0])
    with pytest.raises(ConfigError, match=r"B: model trained on data until 2024-01-01T08:00:00Z.*2024-01-01T00:00:00Z"):
        check_out_of_sample({"A": "2023-12-01", "B": IX[2]}, IX[0])
    with pytest.raises(ConfigError, match="A: model trained"):
        research_backtest(BARS, TARGETS, CFG, trained_until={"A": IX[0]})


@pytest.mark.parametrize("targets, message", [
    (TARGETS.assign(C=0.1), "no bars: C"),
    (TARGETS.set_axis(IX + pd.Timedelta("2h")), "A: no bar at 5 of the 5"),
    (TARGETS.set_axis(IX + pd.Timedelta("1D")), "outside the data"),
    (TARGETS.iloc[:1], "at least 2"),
    (TARGETS.fillna(np.inf), "infinite"),
    (TARGETS.iloc[::-1], "increasing order"),
    (TARGETS.reset_index(drop=True), "DatetimeIndex"),
])
def test_bad_input(targets, message):
    with pytest.raises(DataError, match=message):
        research_backtest(BARS, targets, CFG)


def test_bad_prices_are_named():
    bars = {"A": BARS["A"].assign(open=[100, 100, np.nan, 120, 100.]), "B": BARS["B"]}
    with pytest.raises(DataError, match="A: open/close missing or not positive at 2024-01-01T08:00:00Z"):
        research_backtest(bars, TARGETS, CFG)


def test_report_files(tmp_path):
    tiers = pd.DataFrame("PURE_KELLY", index=IX, columns=["A", "B"])
    regimes = pd.DataFrame([["Bull", "Bear"]] * 5, index=IX, columns=["A", "B"])
    r = research_backtest(BARS, TARGETS, CFG, funding=FUNDING, tiers=tiers, regimes=regimes,
                          predictions=TARGETS.fillna(0.0), labels=TARGETS.fillna(0.1))
    run = new_run_dir(tmp_path / "runs", "test")
    assert run.parent == tmp_path / "runs" and run.name.endswith("-test")
    assert new_run_dir(tmp_path / "runs", "test") != run
    windows = pd.DataFrame({"ic": [0.05, -0.02, 0.01]})
    path = write_report(r, run, windows=windows)
    names = {p.name for p in run.iterdir()}
    assert {"report.html", "metrics.json", "equity.png", "drawdown.png", "regimes.png", "positions.png",
            "window_ic.png"} <= names
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["metrics"]["n_trades"] == 5 and set(doc["benchmarks"]) == {"buy_and_hold", "momentum"}
    assert doc["metrics"]["tier_share"]["PURE_KELLY"] == 1.0 and doc["metrics"]["regime_share"]["Bull"] == 0.5
    html = path.read_text()
    assert html.count("data:image/png;base64,") == 5 and "buy_and_hold" in html and "momentum" in html


def test_probe_cut_is_the_risk_engines_rule():
    lim = ProbeLimits(np.array([0.25]), [0.5], [float("inf")])
    # flat, buy 10 at 100 with equity 10,000 while probing: a quarter of the new risk
    assert lim.cut(0, 10.0, 0.0, 100.0, 10_000.0, 0.25) == pytest.approx(2.5)
    # long 10, sell 15 (a flip to -5): the 10 that close are free, the 5 of new risk are cut to 1.25
    assert lim.cut(0, -15.0, 10.0, 100.0, 10_000.0, 0.25) == pytest.approx(-11.25)
    # the cap: a quarter of the 50% fraction cap = 12.5 units at most on the order's side
    assert lim.cut(0, 100.0, 10.0, 100.0, 10_000.0, 0.25) == pytest.approx(min(0.25 * 100, 12.5 - 10))
    # OPEN: reductions only
    assert lim.cut(0, -15.0, 10.0, 100.0, 10_000.0, 0.0) == pytest.approx(-10.0)
    assert lim.cut(0, 5.0, 10.0, 100.0, 10_000.0, 0.0) == 0.0


def test_breaker_path_cuts_the_research_accounting():
    bars = {"A": pd.DataFrame({"open": [100.0] * 4, "close": [100.0] * 4}, index=IX[:4])}
    targets = pd.DataFrame({"A": [0.4, np.nan, 0.4, np.nan]}, index=IX[:4])
    cfg = BacktestConfig(cost=CostConfig(taker_fee=0.0, slippage=0.0), cross_check=False)
    plain = research_backtest(bars, targets, cfg)
    assert plain.positions["A"].iloc[1] == pytest.approx(0.4)
    states = pd.Series(["HALF_OPEN", "CLOSED", "CLOSED", "CLOSED"], index=IX[:4])
    cut = research_backtest(bars, targets, cfg, breaker=states)
    assert cut.positions["A"].iloc[1] == pytest.approx(0.1)          # a quarter while probing
    assert cut.positions["A"].iloc[3] == pytest.approx(0.4)          # the next order, CLOSED, goes all the way
    with pytest.raises(DataError, match="unknown breaker states"):
        probe_limits(IX[:4], ["A"], pd.Series(["SHUT"] * 4, index=IX[:4]))
