"""The gates: they charge the one cost model (funding included), and a year of weekly placebo looks deploys at most
at the nominal rate once every look is counted (the deflated Sharpe ratio), while the per-week correction does not."""
import math

import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import CostConfig
from trade_matrix.data.market import load_market_data
from trade_matrix.models.training import _placebo_labels, decide, gate_looks, TrainConfig, train_instrument
from trade_matrix.models.tree import ModelConfig
from trade_matrix.models.validation import (deflated_sharpe, GateConfig, next_bar_funding, pooled_metrics,
                                            WalkForwardConfig)

WEEK = 42   # 4h bars


@pytest.fixture(scope="module")
def market():
    return load_market_data(symbols=["BTCUSDT", "ETHUSDT"])


def frame(n: int = 504, seed: int = 0, prediction: float | None = None) -> pd.DataFrame:
    "A walk-forward predictions frame of `n` rows: weekly windows, a random label, its 1-bar returns."
    rng = np.random.default_rng(seed)
    label = rng.normal(0.0002, 0.01, n)
    pred = np.full(n, prediction) if prediction is not None else rng.normal(0, 0.003, n)
    return pd.DataFrame({"window": np.arange(n) // WEEK, "prediction": pred, "label": label, "returns": label},
                        index=pd.date_range("2024-01-01", periods=n, freq="4h", tz="UTC"))


def test_a_constant_positive_funding_rate_costs_an_always_long_position_exactly_that_rate():
    # Arrange: always long (the prediction far above the band), a rate of 1 bp settled on every bar held
    long = frame(prediction=1.0)
    funded = long.assign(funding=1e-4)
    # Act
    without, charged = pooled_metrics(long), pooled_metrics(funded)
    switched_off = pooled_metrics(funded, CostConfig(funding=False))
    # Assert: net log return lower by exactly n x rate, gross and fees unchanged; funding=False is the old figure
    lower = math.log1p(without.total_return_net) - math.log1p(charged.total_return_net)
    assert lower == pytest.approx(504 * 1e-4, abs=1e-12)
    assert charged.funding_paid == pytest.approx(504 * 1e-4, abs=1e-12)
    assert (charged.total_return_gross, charged.fee_drag) == (without.total_return_gross, without.fee_drag)
    net = frame(prediction=1.0)["label"].to_numpy() - np.r_[CostConfig().one_way, np.zeros(503)]
    assert without.sharpe_net == pytest.approx(net.mean() / net.std(ddof=1) * math.sqrt(2190), rel=1e-12)
    assert charged.sharpe_net == pytest.approx((net - 1e-4).mean() / net.std(ddof=1) * math.sqrt(2190), rel=1e-12)
    assert charged.sharpe_net < without.sharpe_net
    assert (switched_off.total_return_net, switched_off.sharpe_net, switched_off.funding_paid) == (
        without.total_return_net, without.sharpe_net, 0.0)


def test_the_gates_of_a_training_run_charge_the_funding_its_positions_pay(market):
    # Arrange / Act: a small training of BTC with the bundled 8h funding
    cfg = TrainConfig(model=ModelConfig(n_estimators=30), walk_forward=WalkForwardConfig(n_windows=3))
    result = train_instrument(market, "BTCUSDT", until="2025-03-01", config=cfg, features=("ret_1", "ret_6", "rsi_14"))
    view = market.as_of("2025-03-01")
    # Assert: each row pays the settlements while its position is held; the gates charge them, and without
    # funding the same predictions give the old figure
    p = result.predictions
    expected = next_bar_funding(view.funding("BTCUSDT"), p.index)
    np.testing.assert_array_equal(p["funding"].to_numpy(), expected.to_numpy())
    settled = view.funding("BTCUSDT")["funding_rate"]
    first, last = p.index[0] + pd.Timedelta("4h"), p.index[-1] + pd.Timedelta("8h")
    held = settled[(settled.index > first) & (settled.index <= last)]
    assert p["funding"].sum() == pytest.approx(held.sum(), rel=1e-12)
    charged = result.variants.loc["full"]
    _, _, free, *_ = decide(p, cfg.model_copy(update={"cost": CostConfig(funding=False)}))
    assert charged["funding_paid"] != 0 and free.loc["full", "funding_paid"] == 0
    assert charged["total_return_net"] != free.loc["full", "total_return_net"]


def test_the_deflated_sharpe_reproduces_bailey_and_lopez_de_prado_and_falls_with_trials():
    sr, v = 2.5 / math.sqrt(250), 0.5 / 250     # their example: 1,250 days, skew -3, kurtosis 10, 100 trials
    assert deflated_sharpe(sr, 1250, -3, 10, 100, v) == pytest.approx(0.9004, abs=5e-4)
    by_trials = [deflated_sharpe(0.06, 1680, 0, 3, n) for n in (1, 4, 12, 52, 208)]
    assert by_trials == sorted(by_trials, reverse=True) and by_trials[0] > 0.95 > by_trials[-1]


def placebo_predictions(rows: int, variants: int, seed: int) -> pd.DataFrame:
    "Smooth predictions of `variants` correlated models (a common AR(1) part plus each its own), of no skill."
    rng = np.random.default_rng(seed)
    def ar(n):
        e, x = rng.normal(0, 0.0012, n), np.zeros(n)
        for i in range(1, n):
            x[i] = 0.9 * x[i - 1] + e[i]
        return x
    common = ar(rows)
    names = ["full"] + [f"transfer_{50 * (k + 1)}" for k in range(variants - 1)]
    return pd.DataFrame({v: 0.0003 + common + 0.5 * ar(rows) for v in names})


def placebo_year_deploys(preds: pd.DataFrame, bars: pd.DataFrame, seed: int, gates: GateConfig, looks: int,
                         windows: int) -> bool:
    "One placebo year: at each weekly look a fresh permutation of the rows' label, return and funding."
    frames = []
    for j in range(looks):
        rows = slice(j * WEEK, (j + windows) * WEEK)
        b = bars.iloc[rows]
        label, returns, funding = _placebo_labels(b["label"], b["label"], seed * 1000 + j, b["funding"])
        look = pd.DataFrame({"window": np.arange(len(b)) // WEEK + j, "label": label, "returns": returns,
                             "funding": funding}, index=b.index)
        frames.append(look.join(preds.iloc[rows].set_axis(b.index)))
    log = gate_looks(frames, TrainConfig(gates=gates), until_deployed=True)
    return bool(log["passed"].any())


@pytest.mark.slow
def test_a_year_of_weekly_placebo_looks_deploys_at_most_at_the_nominal_rate_once_every_look_counts(market):
    # Arrange: real BTC 4h returns and funding (a year of looks, each judging 12 weekly windows), predictions with no
    # skill; 40 seeded placebo years, every look a fresh permutation (nearly independent looks: the hard case)
    seeds, looks, windows = 40, 52, 12
    bars = market.bars("BTCUSDT").loc[:"2025-06-01"]
    label = np.log(bars["close"].shift(-1) / bars["close"]).dropna()
    rows = (looks + windows - 1) * WEEK
    funding = next_bar_funding(market.funding("BTCUSDT"), label.index)
    bars = pd.DataFrame({"label": label, "funding": funding}).iloc[-rows:]
    old, new = GateConfig(min_deflated_sharpe=0.0), GateConfig()
    nominal = 1 - new.min_deflated_sharpe
    tolerance = 2 * math.sqrt(nominal * (1 - nominal) / seeds)   # two binomial standard errors at the nominal rate
    # Act
    rate = {}
    for name, gates in (("old", old), ("new", new)):
        hits = [placebo_year_deploys(placebo_predictions(rows, 3, seed), bars, seed, gates, looks, windows)
                for seed in range(seeds)]
        rate[name] = sum(hits) / seeds
    # Assert: counting every look keeps false deployments within the nominal rate; the per-week rule does not
    assert rate["new"] <= nominal + tolerance, rate
    assert rate["old"] > nominal + tolerance, rate
