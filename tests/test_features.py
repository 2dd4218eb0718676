"""Features: one definition, two paths that agree, no lookahead, and formulas checked against independent code."""
import math

import numpy as np
import pandas as pd
import pytest

from trade_matrix.data.market import load_market_data
from trade_matrix.features.catalogue import (FEATURE_NAMES, FEATURES, FeatureConfig, IncrementalFeatures,
                                             build_graph, compute_features, forward_return, replay)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", "AVAXUSDT"]


@pytest.fixture(scope="module")
def md():
    return load_market_data(symbols=SYMBOLS)


@pytest.fixture(scope="module")
def graph():
    return build_graph()


@pytest.fixture(scope="module")
def batch(md, graph):
    return {s: compute_features(md, s, graph=graph) for s in SYMBOLS}


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_incremental_equals_batch_over_last_1000_bars(md, batch, symbol):
    inc = replay(md, symbol)
    b = batch[symbol].features
    assert list(inc.columns) == list(b.columns) == FEATURE_NAMES
    np.testing.assert_allclose(inc.iloc[-1000:].to_numpy(), b.iloc[-1000:].to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True)
    # and NaN exactly where batch has NaN, over the whole history
    assert np.array_equal(np.isnan(inc.to_numpy()), np.isnan(b.to_numpy()))


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_features_at_random_cuts_use_only_what_was_known_by_the_bars_close(md, batch, graph, symbol):
    """Cut every input (bars, BTC/ETH bars, DVOL, funding) at random bars t, keeping only what was known by
    t's close; all 112 features at t must be unchanged."""
    full = batch[symbol].features
    rng = np.random.default_rng(SYMBOLS.index(symbol))
    # random bars, plus bars right at the edges where a leak would show: DVOL day boundaries and funding settlements
    picks = list(rng.integers(600, len(full) - 1, 5)) + [full.index.get_loc(pd.Timestamp("2024-03-01T20:00Z")),
                                                          full.index.get_loc(pd.Timestamp("2024-03-02T00:00Z"))]
    for i in picks:
        t = full.index[i]
        cut = md.as_of(t + pd.Timedelta(hours=4))
        f = compute_features(cut, symbol, graph=graph).features
        assert f.index[-1] == t, "the last bar of the cut view is the bar that just closed"
        np.testing.assert_array_equal(f.iloc[-1].to_numpy(), full.loc[t].to_numpy(), err_msg=f"{symbol} at {t}")


def test_a_future_dvol_value_would_change_the_features(md, graph):
    """The cut test can fail: feeding the 20:00 bar a DVOL value one day too early changes dvol_level."""
    t = pd.Timestamp("2024-03-01T16:00Z")  # closes 20:00; the 2024-03-01 DVOL is known only at 2024-03-02 00:00
    honest = compute_features(md.as_of(t + pd.Timedelta(hours=4)), "BTCUSDT", graph=graph).features.loc[t, "dvol_level"]
    leaky = md.dvol("BTC").loc["2024-03-01", "dvol_close"].item() / 100
    assert honest != leaky
    assert honest == md.dvol("BTC").loc["2024-02-29", "dvol_close"].item() / 100


def test_inputs_that_do_not_exist_are_nan_with_a_mask_never_zero(batch):
    sol = batch["SOLUSDT"]
    before_funding = sol.features.loc[:"2023-12-31T16:00Z"]
    assert before_funding[["funding_rate", "funding_mean_21", "funding_z_90"]].isna().all().all()
    assert not sol.mask.loc[:"2023-12-31T16:00Z", "funding_available"].any()
    doge = batch["DOGEUSDT"]  # no DOGE funding file at all
    assert doge.features["funding_rate"].isna().all() and not doge.mask["funding_available"].any()
    btc = batch["BTCUSDT"]
    assert btc.features.loc[:"2022-11-06T16:00Z", "dvol_level"].isna().all()
    # no zeros were invented where inputs are missing
    assert not (sol.features.loc[~sol.mask["funding_available"], "funding_rate"] == 0).any()


def test_warm_up_bars_are_nan_and_everything_after_is_finite_where_inputs_exist(batch):
    b = batch["BTCUSDT"]
    for spec in FEATURES:
        col = b.features[spec.name]
        assert col.iloc[: spec.warmup].isna().all(), spec.name
    warm = b.features[b.mask["warm"] & b.mask["dvol_available"] & b.mask["funding_available"]]
    raw = warm[[f.name for f in FEATURES if f.name not in ("corr_btc_42", "beta_btc_42", "rs_btc_42")]]  # BTC vs itself: NaN
    assert np.isfinite(raw.to_numpy()).mean() > 0.999


def test_formulas_match_independent_pandas_implementations(md, batch):
    b = md.bars("ETHUSDT")
    f = batch["ETHUSDT"].features
    c, h, lo = b["close"], b["high"], b["low"]
    # Wilder RSI with pandas' ewm (adjust=False seeds with the first value, like ours)
    d = c.diff()
    gain = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    rsi = 100 * gain / (gain + loss)
    pd.testing.assert_series_equal(f["rsi_14"].iloc[60:], rsi.iloc[60:], check_names=False, rtol=1e-9)
    # Bollinger width with pandas' rolling std
    bbw = 4 * c.rolling(20).std() / c.rolling(20).mean()
    pd.testing.assert_series_equal(f["bb_width_20"].iloc[20:], bbw.iloc[20:], check_names=False, rtol=1e-6)
    # stochastic %K and Williams %R
    hh, ll = h.rolling(14).max(), lo.rolling(14).min()
    pd.testing.assert_series_equal(f["stoch_k_14"].iloc[14:], ((c - ll) / (hh - ll)).iloc[14:], check_names=False, rtol=1e-12)
    pd.testing.assert_series_equal(f["williams_r_14"].iloc[14:], (-100 * (hh - c) / (hh - ll)).iloc[14:], check_names=False, rtol=1e-12)
    # realized volatility and MACD
    r = np.log(c).diff()
    pd.testing.assert_series_equal(f["rvol_42"].iloc[43:], r.rolling(42).std().iloc[43:], check_names=False, rtol=1e-6)
    macd = (c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()) / c
    pd.testing.assert_series_equal(f["macd"].iloc[100:], macd.iloc[100:], check_names=False, rtol=1e-9)
    # the rank twin is pandas' rolling percentile rank over 500 bars
    rank = f["rsi_14"].rolling(500, min_periods=100).rank(pct=True)
    pd.testing.assert_series_equal(f["rsi_14_rank"], rank, check_names=False, rtol=1e-12)
    # calendar
    assert np.allclose(f["hour_sin"], np.sin(2 * math.pi * b.index.hour / 24))


def test_label_is_the_forward_return_by_time_and_never_a_feature(md):
    bars = md.bars("BTCUSDT")
    y = forward_return(bars, horizon=2)
    t = bars.index[1000]
    assert y[t] == pytest.approx(math.log(bars.loc[t + pd.Timedelta(hours=8), "close"] / bars.loc[t, "close"]))
    # across a real 4h gap the label is NaN rather than a return over a longer span
    gaps = bars.index[1:][np.diff(bars.index.asi8) > 4 * 3600e9]
    before_gap = bars.index[bars.index.get_loc(gaps[0]) - 1]
    assert np.isnan(forward_return(bars).loc[before_gap])
    assert not any(n.startswith("fwd") for n in FEATURE_NAMES)


def test_bars_out_of_order_are_refused_by_the_incremental_path(md):
    from trade_matrix.core import DataError
    eng = IncrementalFeatures("BTCUSDT")
    eng.on_bar("2024-01-01T04:00Z", 1, 2, 0.5, 1.5, 10)
    with pytest.raises(DataError, match="not after the last bar"):
        eng.on_bar("2024-01-01T04:00Z", 1, 2, 0.5, 1.5, 10)


def test_quintile_option_gives_quintiles(md):
    cfg = FeatureConfig(rank_quintile=True)
    f = compute_features(md, "SOLUSDT", cfg).features
    vals = f[[n for n in FEATURE_NAMES if n.endswith("_rank")]].stack().dropna().unique()
    assert set(vals) <= {0.0, 1.0, 2.0, 3.0, 4.0} and len(vals) == 5


SELF_REFERENCES = {"BTCUSDT": ["corr_btc_42", "beta_btc_42", "rs_btc_42"], "ETHUSDT": ["rs_eth_42"]}


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_features_of_a_reference_against_itself_are_nan_with_the_reason_in_the_mask(md, batch, symbol):
    own = SELF_REFERENCES[symbol]
    ff = batch[symbol]
    inc = replay(md, symbol)
    cols = own + [f"{n}_rank" for n in own]

    assert ff.features[cols].isna().all().all(), "batch: never the constants 1, 1, 0"
    assert inc[cols].isna().all().all(), "incremental: the same"
    assert not ff.available[cols].any().any()
    which = "self_reference_btc" if symbol == "BTCUSDT" else "self_reference_eth"
    other = "self_reference_eth" if symbol == "BTCUSDT" else "self_reference_btc"
    assert ff.mask[which].all() and not ff.mask[other].any()
    # the cross-asset features against the other reference are real numbers
    cross_other = "rs_eth_42" if symbol == "BTCUSDT" else "rs_btc_42"
    assert ff.features[cross_other].notna().mean() > 0.99 and ff.mask["cross_available"].all()


def test_a_live_caller_passing_its_own_close_as_reference_still_gets_nan(md):
    bars = md.bars("BTCUSDT").iloc[:200]
    eng = IncrementalFeatures("BTCUSDT")
    i = FEATURE_NAMES.index("corr_btc_42")
    rows = [eng.on_bar(t, r.open, r.high, r.low, r.close, r.volume, btc_close=r.close, eth_close=r.close)
            for t, r in bars.iterrows()]
    assert all(math.isnan(row[i]) for row in rows)
    assert not math.isnan(rows[-1][FEATURE_NAMES.index("rs_eth_42")])


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_available_in_the_mask_implies_a_finite_feature_for_every_feature(batch, symbol):
    """`available` (built from the mask's reasons and each feature's warm-ups) never promises a value that is NaN.
    Documented exceptions: none on the bundled data (the DVOL and funding warm-ups are counted in their own
    series' values, so the first 30 DVOL days and 90 funding settlements are unavailable, not NaN-but-promised)."""
    ff = batch[symbol]
    promised_nan = ff.available.to_numpy() & ~np.isfinite(ff.features.to_numpy())

    bad = {n: int(k) for n, k in zip(FEATURE_NAMES, promised_nan.sum(axis=0)) if k}
    assert bad == {}
    assert list(ff.available.columns) == FEATURE_NAMES and ff.available.index.equals(ff.features.index)
    # and it is not an empty promise: after 2025-01-01 every feature that exists at all is almost always available
    exists = [n for n in FEATURE_NAMES if ff.features[n].notna().any()]
    assert (ff.available.loc["2025":, exists].mean() > 0.99).all()


def test_outside_features_are_unavailable_until_their_own_series_is_long_enough(batch):
    sol = batch["SOLUSDT"]  # SOL funding starts 2024-01-01 00:00: 3 settlements a day
    first = sol.available.idxmax()
    assert first["funding_rate"] == pd.Timestamp("2023-12-31T20:00Z")          # first settlement known at its close
    assert first["funding_mean_21"] == pd.Timestamp("2024-01-07T12:00Z")       # the 21st settlement (2024-01-07 16:00)
    assert first["funding_z_90"] == pd.Timestamp("2024-01-30T12:00Z")          # the 90th (2024-01-30 16:00)
    assert not sol.mask.loc[:"2024-01-30T08:00Z", "funding_warm"].any() and sol.mask.loc["2024-01-30T12:00Z", "funding_warm"]
    btc = batch["BTCUSDT"]
    assert btc.available.idxmax()["dvol_z_30"] - btc.available.idxmax()["dvol_level"] == pd.Timedelta(days=29)
