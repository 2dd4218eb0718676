"""Sizing: the cascade table, Kelly with no edge (or a failing rolling IC) sizes zero, costs decide trades, policy failures fall back."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trade_matrix.core import BreakerState, ModelError, Regime, SizingTier
from trade_matrix.research.signals import kelly_positions
from trade_matrix.strategy.signal import track_signals
from trade_matrix.strategy.sizing import CascadeConfig, KellyConfig, Sizer, choose_tier, kelly_target, rebalance
from trade_matrix.core import CostConfig
from trade_matrix.models.validation import strategy_returns

T, B = SizingTier, BreakerState


@pytest.mark.parametrize("confidence, ic, policy_ok, breaker, tier", [
    (0.9, 0.10, True, B.OPEN, T.EMERGENCY_FLAT),
    (0.0, -1.0, False, B.OPEN, T.EMERGENCY_FLAT),
    (0.9, 0.10, True, B.HALF_OPEN, T.FULL_RL),
    (0.5, 0.05, True, B.CLOSED, T.FULL_RL),
    (0.49, 0.05, True, B.CLOSED, T.BLENDED),
    (0.50, 0.049, True, B.CLOSED, T.BLENDED),
    (0.30, 0.03, True, B.CLOSED, T.BLENDED),
    (0.29, 0.20, True, B.CLOSED, T.PURE_KELLY),
    (0.90, 0.029, True, B.CLOSED, T.PURE_KELLY),
    (0.90, 0.20, False, B.CLOSED, T.PURE_KELLY),
    (0.90, float("nan"), True, B.CLOSED, T.PURE_KELLY),
])
def test_cascade_table(confidence, ic, policy_ok, breaker, tier):
    got, reason = choose_tier(confidence, ic, policy_ok, breaker, CascadeConfig())
    assert got is tier and reason


@settings(derandomize=True, max_examples=300, deadline=None)
@given(signal=st.floats(-3, 3), ic=st.floats(-1, 0.0), sigma=st.floats(1e-4, 0.2),
       bull=st.floats(0, 1))
def test_kelly_sizes_zero_without_an_edge(signal, ic, sigma, bull):
    probs = {Regime.BULL: bull, Regime.CRISIS: 1 - bull}
    assert kelly_target(signal, ic, sigma, probs) == 0.0
    assert kelly_target(0.0, 0.2, sigma, probs) == 0.0


@settings(derandomize=True, max_examples=300, deadline=None)
@given(signal=st.floats(-3, 3), ic=st.floats(0, 1), sigma=st.floats(1e-4, 0.2), long_only=st.booleans(),
       cap=st.floats(0.1, 2.0))
def test_kelly_stays_inside_its_caps_and_follows_the_signal_sign(signal, ic, sigma, long_only, cap):
    f = kelly_target(signal, ic, sigma, {Regime.NEUTRAL: 1.0}, KellyConfig(max_position=cap, long_only=long_only))
    assert -cap <= f <= cap and (f >= 0 or not long_only)
    assert f == 0.0 or math.copysign(1, f) == math.copysign(1, signal)


def test_policy_failure_falls_back_to_kelly_and_is_recorded():
    class Broken:
        def act(self, observation):
            raise ModelError("NaN in observation")
    d = Sizer("ETHUSDT", policy=Broken()).decide(signal=1.5, confidence=0.9, ic=0.08, sigma=0.02, skill=0.05)
    assert d.tier is T.PURE_KELLY and d.rl is None and "policy failed" in d.reason


def test_no_trade_band_cuts_turnover_and_costs_on_a_noisy_signal():
    rng = np.random.default_rng(5)
    n = 4000
    idx = pd.date_range("2022-01-01", periods=n, freq="4h", tz="UTC")
    info = rng.normal(size=n)
    ret = 0.0015 * info + rng.normal(0, 0.012, n)          # the label of bar t: next bar's return
    own = pd.Series(np.r_[0.0, ret[:-1]], index=idx)        # each bar's own return
    frame = track_signals(pd.Series(info + rng.normal(0, 2, n), index=idx), own)
    frame["ret"] = ret
    cost = CostConfig()
    banded, free = kelly_positions(frame, cost=cost), kelly_positions(frame, cost=cost, band=False)
    rb, rf = strategy_returns(banded, ret, cost), strategy_returns(free, ret, cost)
    assert rb["turnover"].sum() < 0.6 * rf["turnover"].sum()
    assert rb["cost"].sum() < rf["cost"].sum()
    assert rb["net"].sum() > rf["net"].sum()


@settings(derandomize=True, max_examples=400, deadline=None)
@given(current=st.floats(-1, 1), target=st.floats(-1, 1), alpha=st.floats(-0.01, 0.01), sigma=st.floats(1e-4, 0.1),
       step=st.one_of(st.none(), st.floats(0.01, 1)))
def test_rebalance_moves_toward_the_target_never_beyond_and_respects_the_step_cap(current, target, alpha, sigma, step):
    new, why = rebalance(current, target, alpha, sigma, CostConfig(), 6.0, step)
    lo, hi = min(current, target, 0.0 if current * alpha <= 0 else current), max(current, target, 0.0 if current * alpha <= 0 else current)
    assert lo - 1e-12 <= new <= hi + 1e-12, (new, why)
    if step is not None:
        assert abs(new - current) <= step + 1e-12


class Fixed:
    "A stand-in policy that always proposes the same position."
    def __init__(self, value):
        self.value = value

    def act(self, observation):
        return self.value


BULL = {Regime.BULL: 1.0}
FAILING = dict(signal=2.0, confidence=0.9, ic=-0.15, sigma=0.02, skill=0.04, regime_probabilities=BULL)


@pytest.mark.parametrize("name, kelly, policy, inputs, want", [
    # name, KellyConfig, policy, changes to FAILING, (kelly, raw target, target, traded, "no edge" in the reason)
    ("failing IC from flat: Kelly 0, no trade", KellyConfig(), None, {}, (0.0, 0.0, 0.0, False, True)),
    ("NaN IC counts as failing", KellyConfig(), None, {"ic": float("nan")}, (0.0, 0.0, 0.0, False, True)),
    ("failing IC, position held: the band keeps it", KellyConfig(), None, {"position": 0.5},
     (0.0, 0.0, 0.5, False, True)),
    ("failing IC, little edge left: the band unwinds", KellyConfig(), None,
     {"position": 0.5, "signal": 0.05, "horizon": 20.0}, (0.0, 0.0, 0.0, True, True)),
    ("failing IC, skill against the position: cut", KellyConfig(), None, {"position": 0.5, "signal": -1.0},
     (0.0, 0.0, 0.0, True, True)),
    ("failing IC in BLENDED: the RL half only", KellyConfig(failing_ic=0.04), Fixed(0.8),
     {"ic": 0.035, "confidence": 0.4}, (0.0, 0.4, 0.4, True, True)),
    # an edge lasting 3 bars: the gain pays the round trip of fee and slippage (one bar's would not)
    ("IC exactly at the threshold is not failing", KellyConfig(), None, {"ic": 0.0, "horizon": 3.0},
     (1.0, 1.0, 1.0, True, False)),
    ("healthy IC: Kelly at the cap", KellyConfig(), None, {"ic": 0.08, "horizon": 3.0}, (1.0, 1.0, 1.0, True, False)),
    ("healthy IC, held position: at target", KellyConfig(), None, {"ic": 0.08, "position": 1.0},
     (1.0, 1.0, 1.0, False, False)),
])
def test_a_failing_rolling_ic_makes_kelly_add_no_risk(name, kelly, policy, inputs, want):
    d = Sizer("BTCUSDT", kelly, policy=policy).decide(**(FAILING | inputs))
    assert (d.kelly, d.raw_target, d.target, d.traded, "no edge" in d.reason) == want, (name, d.reason)
    assert d.alpha == pytest.approx(0.04 * 0.02 * (FAILING | inputs)["signal"])   # the band still uses the skill


@pytest.mark.parametrize("ic", [0.0, 0.02, 0.08, 0.3])
@pytest.mark.parametrize("position", [-0.5, 0.0, 0.5])
def test_a_healthy_rolling_ic_sizes_as_before(ic, position):
    "Above `failing_ic` the decision is the one without the rule (failing_ic=-1: nothing fails)."
    inputs = FAILING | {"ic": ic, "position": position}
    assert Sizer("BTCUSDT").decide(**inputs) == Sizer("BTCUSDT", KellyConfig(failing_ic=-1.0)).decide(**inputs)
    assert Sizer("BTCUSDT").decide(**inputs).kelly == kelly_target(2.0, 0.04, 0.02, BULL)
