"""Regimes: stable labels across weekly refits, forward-only filters, no lookahead, safe persistence, clear errors.

All on the bundled Binance bars (BTCUSDT, ETHUSDT, SOLUSDT, 4h). A fit takes ~0.15 s, so the whole file runs in
well under a minute.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import DataError, ModelError, Regime, utc
from trade_matrix.data.market import load_market_data
from trade_matrix.core import REGIME_NAMES
from trade_matrix.core import REGIMES
from trade_matrix.research.regimes import (GarchFilter, GarchParams, fit_garch, garch_variance, regime_history,
                                           walk_forward_regimes)
from trade_matrix.strategy.regime import RegimeConfig, RegimeModel, labels_follow_rule, regime_returns
from trade_matrix.strategy.regime_filter import RegimeFilter, filtered_probabilities, probabilities_at_bars
from trade_matrix.strategy.regime_fit import fit_regimes

DAY = pd.Timedelta("1D")


@pytest.fixture(scope="module")
def market():
    return load_market_data(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])


@pytest.fixture(scope="module")
def btc_daily(market):
    return regime_returns(market.bars("BTCUSDT"), "1d")


@pytest.fixture(scope="module")
def btc_model(btc_daily):
    return fit_regimes(btc_daily, symbol="BTCUSDT")


def known_by(returns: pd.Series, t, period=DAY) -> pd.Series:
    return returns[returns.index + period <= utc(t)]


# --- label stability -----------------------------------------------------------------------------------------

# Refits two weeks apart, chained as the weekly pipeline runs them. Measured over 8 eras x 3 instruments
# (benchmarks/bench_regime.py --stability): 21 of 23 cases agree with the first fit on >= 85% of the last year's
# days (median 96.7%). ETHUSDT 2025-03 is a case where independent fits swap two tied names (8% agreement).
@pytest.mark.parametrize("symbol,first", [("BTCUSDT", "2025-03-01"), ("ETHUSDT", "2025-03-01"),
                                          ("SOLUSDT", "2024-04-01"), ("BTCUSDT", "2022-05-01")])
def test_labels_are_stable_across_refits_on_shifted_windows(market, symbol, first):
    returns = regime_returns(market.bars(symbol), "1d")
    t0 = pd.Timestamp(first, tz="UTC")
    models = []
    for i in range(4):
        models.append(fit_regimes(known_by(returns, t0 + i * pd.Timedelta("14D")), symbol=symbol,
                                  previous=models[-1] if models else None))
    for m in models:
        assert m.converged and m.labels == REGIMES
        assert labels_follow_rule(m.labels, m.means, m.variances, m.counts, m.tie_sigmas)
    # each regime keeps its place in the volatility order and in the (tie-aware) mean order
    vols = np.array([np.sqrt(m.variances) for m in models])
    assert (np.argsort(vols, axis=1) == np.argsort(vols[0])).all(), vols
    assert (vols[:, 3] == vols.max(axis=1)).all()                               # Crisis: the most volatile
    spread = (vols.max(axis=0) - vols.min(axis=0)) / vols.mean(axis=0)
    assert spread.max() < 0.25, spread                                          # the same states, re-estimated
    # the filtered paths over the common year agree on most days
    year = known_by(returns, t0).iloc[-1500:]
    paths = [filtered_probabilities(m, year).iloc[-365:].idxmax(axis=1) for m in models]
    agreement = [float((p == paths[0]).mean()) for p in paths[1:]]
    assert min(agreement) >= 0.85, agreement


def test_fit_is_deterministic_under_the_seed(btc_daily):
    a = fit_regimes(btc_daily, symbol="BTCUSDT").to_dict()
    b = fit_regimes(btc_daily, symbol="BTCUSDT").to_dict()
    assert a | {"fit_seconds": 0} == b | {"fit_seconds": 0}


# --- filters: batch == incremental, NaN, no lookahead -------------------------------------------------------------

def test_filter_batch_equals_incremental_with_missing_returns(btc_model, btc_daily):
    r = btc_daily.iloc[-800:].copy()
    r.iloc[[10, 11, 400]] = np.nan                                              # missing days: predict steps
    batch = filtered_probabilities(btc_model, r)
    f = RegimeFilter(btc_model)
    inc = np.array([list(f.update(x, time=t).values()) for t, x in r.items()])
    np.testing.assert_allclose(inc, batch.to_numpy(), rtol=0, atol=1e-12)
    assert list(batch.columns) == REGIME_NAMES
    assert f.regime == Regime(batch.iloc[-1].idxmax())
    # a NaN step is the prediction through the transition matrix
    np.testing.assert_allclose(batch.iloc[10].to_numpy(), batch.iloc[9].to_numpy() @ btc_model.transition, atol=1e-15)


def test_filtered_probabilities_do_not_depend_on_later_returns(btc_model, btc_daily):
    full = filtered_probabilities(btc_model, btc_daily)
    for t in ("2020-03-11", "2022-06-12", "2024-12-31"):
        cut = filtered_probabilities(btc_model, btc_daily.loc[:t])
        pd.testing.assert_frame_equal(cut, full.loc[:t], check_exact=True)


def test_walk_forward_rows_do_not_change_when_later_data_is_removed(market):
    full = walk_forward_regimes(market, "ETHUSDT", "2024-05-01", "2024-05-29")
    assert full["fitted_until"].nunique() == 4
    assert (full["fitted_until"] <= full.index + pd.Timedelta("4h")).all()      # fits known by each bar's close
    for cut in ("2024-05-09 04:00", "2024-05-20 20:00", "2024-05-14 10:00"):       # the last one mid-bar
        t = pd.Timestamp(cut, tz="UTC")
        short = walk_forward_regimes(market.as_of(t), "ETHUSDT", "2024-05-01", "2024-05-29")
        assert short.index[-1] + pd.Timedelta("4h") == t.floor("4h")
        pd.testing.assert_frame_equal(short, full.loc[short.index], check_exact=True)


def test_regime_history_uses_only_data_known_by_until(market):
    until = pd.Timestamp("2023-06-15 10:00", tz="UTC")
    model, probs = regime_history(market, "SOLUSDT", until=until)
    assert model.fitted_until <= until and probs.index[-1] + pd.Timedelta("4h") <= until
    # the last completed day before `until` is 2023-06-14; bars of 2023-06-15 still show it
    assert model.fitted_until == pd.Timestamp("2023-06-15", tz="UTC")
    later, _ = regime_history(market, "SOLUSDT", until=until + pd.Timedelta("6h"))   # same day: same data, same fit
    assert later.to_dict() | {"fit_seconds": 0} == model.to_dict() | {"fit_seconds": 0}


def test_observe_bar_on_real_bars_matches_the_batch_per_bar(market, btc_model):
    bars = market.bars("BTCUSDT").loc["2024-06-01":]
    bars = bars.drop(bars.index[[102, 103, 104, 105, 106, 107, 300, 305]])     # a whole day and two single bars gone
    daily = regime_returns(bars, "1d")
    per_bar = probabilities_at_bars(filtered_probabilities(btc_model, daily), bars.index, "1d")
    live, held = RegimeFilter(btc_model), []
    for i, (ts, close) in enumerate(bars["close"].items()):
        if i in (57, 333, 1000):                                                # warm restarts, mid-day too
            live = RegimeFilter.from_dict(json.loads(json.dumps(live.to_dict())))
        live.observe_bar(ts, close)
        held.append(live.vector if live.n_updates else np.full(4, np.nan))
    np.testing.assert_allclose(np.array(held), per_bar.to_numpy(), rtol=0, atol=1e-12)


# --- persistence ----------------------------------------------------------------------------------------------

def test_model_round_trip_through_json(btc_model):
    back = RegimeModel.from_dict(json.loads(json.dumps(btc_model.to_dict())))
    assert back.to_dict() == btc_model.to_dict()
    assert back.labels == btc_model.labels and back.fitted_until == btc_model.fitted_until
    np.testing.assert_array_equal(back.transition, btc_model.transition)


@pytest.mark.parametrize("corrupt,message", [
    (lambda d: {**d, "format": "something-else"}, "not a regime model"),
    (lambda d: {k: v for k, v in d.items() if k != "variances"}, "malformed"),
    (lambda d: {**d, "means": d["means"][:3]}, "shape (4,)"),
    (lambda d: {**d, "means": [float("nan")] + d["means"][1:]}, "finite means"),
    (lambda d: {**d, "variances": [0.0] + d["variances"][1:]}, "positive variances"),
    (lambda d: {**d, "transition": [[r[0] + 0.1] + r[1:] for r in d["transition"]]}, "transition row 0"),
    (lambda d: {**d, "transition": [[-0.1, 1.1, 0, 0]] + d["transition"][1:]}, "transition row 0"),
    (lambda d: {**d, "initial": [0.25, 0.25, 0.25, 0.3]}, "initial"),
    (lambda d: {**d, "labels": ["Crisis", "Neutral", "Bull", "Bear"]}, "do not follow the labelling rule"),
    (lambda d: {**d, "labels": ["Bear", "Bear", "Bull", "Crisis"]}, "once"),
    (lambda d: {**d, "labels": ["Bear", "Neutral", "Bull", "Panic"]}, "labels"),
    (lambda d: {**d, "frequency": "1h"}, "frequency"),
    (lambda d: {**d, "fitted_until": "yesterday"}, "time"),
])
def test_corrupt_model_dicts_are_refused(btc_model, corrupt, message):
    with pytest.raises(ModelError) as e:
        RegimeModel.from_dict(corrupt(json.loads(json.dumps(btc_model.to_dict()))))
    assert message in str(e.value), str(e.value)


def test_swapping_clearly_different_means_is_refused_but_tied_ones_are_allowed(btc_model):
    d = btc_model.to_dict()
    bull = REGIMES.index(Regime.BULL)
    bear = REGIMES.index(Regime.BEAR)
    labels = list(d["labels"])
    labels[bull], labels[bear] = labels[bear], labels[bull]
    with pytest.raises(ModelError, match="labelling rule"):
        RegimeModel.from_dict({**d, "labels": labels})
    # with an absurdly loose tie threshold every mean is "tied", so the same swap is accepted
    RegimeModel.from_dict({**d, "labels": labels, "tie_sigmas": 1e6})


def test_warm_restart_continues_identically(btc_model, btc_daily):
    r = btc_daily.iloc[-300:]
    straight = RegimeFilter(btc_model)
    for x in r:
        straight.update(x)
    first = RegimeFilter(btc_model)
    for x in r.iloc[:170]:
        first.update(x)
    resumed = RegimeFilter.from_dict(json.loads(json.dumps(first.to_dict())))
    for x in r.iloc[170:]:
        resumed.update(x)
    np.testing.assert_array_equal(resumed.vector, straight.vector)
    assert resumed.n_updates == straight.n_updates == 300
    with pytest.raises(ModelError, match="not a regime filter state"):
        RegimeFilter.from_dict({"format": "x"})
    with pytest.raises(ModelError, match="summing to 1"):
        RegimeFilter.from_dict({**first.to_dict(), "probabilities": [1.0, 1.0, 0.0, 0.0]})
    with pytest.raises(ModelError, match="malformed"):
        RegimeFilter.from_dict({k: v for k, v in first.to_dict().items() if k != "bars"})


# --- GARCH ----------------------------------------------------------------------------------------------------

def test_garch_batch_equals_incremental_and_restarts(market):
    r = regime_returns(market.bars("ETHUSDT"), "4h")
    params = fit_garch(r, symbol="ETHUSDT")
    assert params.converged and 0 < params.persistence < 1 and params.n_obs <= 3000
    tail = r.iloc[-2000:]
    batch = garch_variance(params, tail)
    f = GarchFilter(params)
    inc = []
    for i, x in enumerate(tail):
        if i == 1234:
            f = GarchFilter.from_dict(json.loads(json.dumps(f.to_dict())))
        inc.append(f.update(x))
    np.testing.assert_allclose(inc, batch.to_numpy(), rtol=1e-15, atol=0)
    assert GarchParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    with pytest.raises(ModelError, match="alpha \\+ beta < 1"):
        GarchParams.from_dict({**params.to_dict(), "alpha": 0.5, "beta": 0.6})


# --- bad input ------------------------------------------------------------------------------------------------

def test_bad_returns_raise_data_errors_naming_symbol_and_count(btc_daily):
    with pytest.raises(DataError, match="BTCUSDT: only 100 finite 1d returns"):
        fit_regimes(btc_daily.iloc[:100], symbol="BTCUSDT")
    with pytest.raises(DataError, match="BTCUSDT: only 0 finite 1d returns"):
        fit_regimes(btc_daily * np.nan, symbol="BTCUSDT")
    with pytest.raises(DataError, match="BTCUSDT: only 0 finite"):
        fit_regimes(btc_daily.iloc[:0], symbol="BTCUSDT")
    with pytest.raises(DataError, match="BTCUSDT: returns index is not strictly increasing"):
        fit_regimes(btc_daily.iloc[::-1], symbol="BTCUSDT")
    dup = pd.concat([btc_daily.iloc[:1000], btc_daily.iloc[999:]])
    with pytest.raises(DataError, match="not strictly increasing"):
        fit_regimes(dup, symbol="BTCUSDT")
    with pytest.raises(DataError, match="regular grid"):
        fit_regimes(btc_daily.drop(btc_daily.index[500]), symbol="BTCUSDT")
    with pytest.raises(DataError, match="BTCUSDT: the regime fit needs a pandas Series"):
        fit_regimes(btc_daily.to_numpy(), symbol="BTCUSDT")
    with pytest.raises(DataError, match="ETHUSDT: only 10 finite 4h returns"):
        fit_garch(btc_daily.iloc[:10].set_axis(pd.date_range("2024-01-01", periods=10, freq="4h", tz="UTC")),
                  symbol="ETHUSDT")


def test_four_hour_returns_are_refused_by_a_daily_model(market, btc_model):
    r4 = regime_returns(market.bars("BTCUSDT"), "4h").iloc[-3000:]
    with pytest.raises(DataError, match="one per 1d period"):
        filtered_probabilities(btc_model, r4)
    with pytest.raises(DataError, match="one per 1d period"):
        fit_regimes(r4, symbol="BTCUSDT")
    with pytest.raises(DataError, match="does not follow"):
        f = RegimeFilter(btc_model)
        f.update(0.01, time="2024-01-02")
        f.update(0.01, time="2024-01-01")


def test_too_little_history_names_the_symbol(market):
    # SOLUSDT starts in August 2020: by 2021-03 there are about 200 days
    with pytest.raises(DataError, match=r"SOLUSDT: only \d+ finite 1d returns .* needs at least 365"):
        regime_history(market, "SOLUSDT", until="2021-03-01")
    with pytest.raises(DataError, match="SOLUSDT"):
        walk_forward_regimes(market, "SOLUSDT", "2021-02-01", "2021-03-01")


def test_config_is_validated():
    with pytest.raises(ValueError, match="names Bear, Neutral, Bull and Crisis"):
        RegimeConfig(k_regimes=3)
    with pytest.raises(ValueError, match="Extra inputs"):
        RegimeConfig(em_iterations=5)
    assert RegimeConfig().fit_bars // RegimeConfig().bars_per_period == 1500
    assert math.isclose(RegimeConfig(frequency="4h").periods_per_day, 6.0)


def test_the_4h_frequency_works_end_to_end(market):
    cfg = RegimeConfig(frequency="4h", fit_bars=3000, min_fit_bars=2190)
    view = market.as_of("2024-01-01")
    model, per_bar = regime_history(view, "BTCUSDT", config=cfg)
    assert model.frequency == "4h" and model.n_obs <= 3000 and model.converged
    r4 = regime_returns(view.bars("BTCUSDT"), "4h")
    direct = filtered_probabilities(model, r4)
    # at 4h a bar's own return is known at its close, so each bar carries its own filtered probabilities
    common = direct.index.intersection(per_bar.index)                           # (the grid also has the missing bars)
    assert len(common) > 0.99 * len(direct)
    pd.testing.assert_frame_equal(per_bar.loc[common], direct.loc[common], check_freq=False)
    with pytest.raises(DataError, match="one per 4h period"):
        filtered_probabilities(model, regime_returns(view.bars("BTCUSDT"), "1d"))


# --- the command line ----------------------------------------------------------------------------------------

def test_tm_regime_json_is_exactly_the_contract():
    from typer.testing import CliRunner

    from trade_matrix.cli.app import app
    res = CliRunner().invoke(app, ["regime", "--symbol", "BTCUSDT", "--until", "2024-01-01", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"tm regime --json printed {c}"))
    assert set(doc) == {"symbol", "time", "regime", "probabilities"}
    assert set(doc["probabilities"]) == {"Bear", "Neutral", "Bull", "Crisis"}
    assert doc["symbol"] == "BTCUSDT" and utc(doc["time"]) < utc("2024-01-01")
    assert doc["regime"] == max(doc["probabilities"], key=doc["probabilities"].get)
    assert math.isclose(sum(doc["probabilities"].values()), 1.0, abs_tol=1e-9)


def test_tm_regime_human_output_keeps_the_fit_details():
    from typer.testing import CliRunner

    from trade_matrix.cli.app import app
    res = CliRunner().invoke(app, ["regime", "--symbol", "BTCUSDT", "--until", "2024-01-01"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for part in ("model fitted on data until", "converged", "annual mean", "annual volatility", "Crisis"):
        assert part in res.stdout, (part, res.stdout)
