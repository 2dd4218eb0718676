"""The risk layer: no approved order ever breaks a limit (hypothesis), the breaker's transition table, restarts
while OPEN (file and real Redis), denials recorded not raised, and no exchange client in the import graph.

The property tests are derandomized (`derandomize=True`, no example database), so every run checks the same
examples. Redis tests use the run's unique prefix (`redis_url_prefix`) and FAIL when Redis is down.
"""
from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trade_matrix.core import INSTRUMENTS, BreakerState, RedisConfig, to_decimal
from trade_matrix.core import ManualClock, StateStoreError
from trade_matrix.data.state import FileStateStore, MemoryStateStore, RedisStateStore, open_state_store
from trade_matrix.risk.allocation import allocate, hrp_weights
from trade_matrix.risk.breaker import BreakerConfig, CircuitBreaker
from trade_matrix.risk.engine import PortfolioState, ProposedOrder, RiskAction, RiskConfig, RiskEngine, per_symbol
from trade_matrix.risk.var import Covariance, portfolio_var

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
BASE_PRICE = {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0, "SOLUSDT": 150.0, "DOGEUSDT": 0.15}
PROPERTY = settings(derandomize=True, max_examples=600, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- scenarios ------------------------------------------------------------------------------------------------

def _dec(x: float, places: int = 8) -> Decimal:
    return Decimal(repr(round(x, places)))


def _rare(draw, n: int) -> bool:
    "True about one time in n (hypothesis leans toward the first, 'simplest' choice: False)."
    return draw(st.sampled_from([False] * (n - 1) + [True]))


@st.composite
def per_instrument(draw, values):
    "A single value, or a dict by symbol that may have a '*' default and may miss symbols."
    if draw(st.booleans()):
        return draw(values)
    out = {s: draw(values) for s in SYMBOLS if not _rare(draw, 6)}
    if draw(st.booleans()):
        out["*"] = draw(values)
    return out


@st.composite
def scenarios(draw):
    "Random limits, breaker state, account, covariance and order."
    config = RiskConfig(
        max_position_fraction=draw(per_instrument(st.floats(0.01, 3.0))),
        max_notional=draw(per_instrument(st.floats(50.0, 5e6).map(lambda x: _dec(x, 2)))),
        gross_leverage=draw(st.floats(0.05, 5.0)),
        var_limit=draw(st.floats(0.001, 0.3)),
        var_confidence=draw(st.sampled_from([0.9, 0.95, 0.99, 0.999])),
        min_order_notional=_dec(draw(st.floats(0.0, 100.0)), 2))
    state = draw(st.sampled_from([CLOSED, CLOSED, CLOSED, HALF_OPEN, OPEN]))
    clock = ManualClock("2024-03-01")
    breaker = CircuitBreaker(BreakerConfig(probe_size_fraction=draw(st.floats(0.05, 1.0))), clock)
    if state is not CLOSED:
        breaker.trip("scenario")
    if state is HALF_OPEN:
        clock.advance("1h")
    assert breaker.state is state

    rare = lambda n: _rare(draw, n)
    equity = _dec(draw(st.floats(-1000.0, 100.0)) if rare(15) else draw(st.floats(100.0, 5e6)), 2)
    scale = max(float(equity), 1000.0)
    prices, positions = {}, {}
    for s in SYMBOLS:
        spec = INSTRUMENTS[s]
        price = spec.round_price(_dec(BASE_PRICE[s] * draw(st.floats(0.05, 5.0)), 6))
        if price <= 0:
            price = spec.tick_size
        if not _rare(draw, 4):
            prices[s] = price
            if draw(st.booleans()):
                size = draw(st.floats(-2.0, 2.0)) if rare(5) else draw(st.floats(-0.4, 0.4))
                qty = spec.round_quantity(_dec(size * scale / float(price), 10))
                if rare(10):                             # now and then a position off the lot grid
                    qty += spec.lot_size / 3
                positions[s] = qty
    covariance = None
    if draw(st.booleans()):
        covered = [s for s in SYMBOLS if not _rare(draw, 8)]       # sometimes a held symbol is missing
        if covered:
            vols = np.array([draw(st.floats(0.005, 0.12)) for _ in covered])
            rho = draw(st.floats(-0.3, 0.95))
            corr = np.full((len(covered), len(covered)), rho)
            np.fill_diagonal(corr, 1.0)
            covariance = pd.DataFrame(corr * np.outer(vols, vols), index=covered, columns=covered)
    portfolio = PortfolioState(equity, positions, prices, covariance=covariance)

    symbol = "XRPUSDT" if rare(25) else draw(st.sampled_from(SYMBOLS))
    spec = INSTRUMENTS.get(symbol)
    ref = float(prices.get(symbol, spec.round_price(_dec(BASE_PRICE[symbol], 6)) if spec else Decimal("0.5")))
    order_price = _dec(ref * draw(st.floats(0.97, 1.03)), 5)
    size = draw(st.sampled_from(["small", "any", "any", "tiny"]))   # small orders are the ones that fit as they are
    notional = (draw(st.floats(0.01, 50.0)) if size == "tiny" else
                scale * 10 ** draw(st.floats(-3.5, -1.5) if size == "small" else st.floats(-3.0, 0.3)))
    qty = _dec(notional / float(order_price), 9)
    if spec is not None and draw(st.booleans()):
        qty = spec.round_quantity(qty)
    if qty <= 0:
        qty = Decimal("0.000000001")
    order = ProposedOrder(symbol, draw(st.sampled_from(["buy", "sell"])), qty, order_price, "property",
                          reduce_only=rare(8))
    engine = RiskEngine(config, breaker=breaker, clock=clock)
    return config, engine, breaker, state, portfolio, order


def realistic(seed: int):
    "A scenario from a seeded numpy generator: the same space with plain distributions (hypothesis leans to edges)."
    rng = np.random.default_rng(seed)
    u = rng.uniform
    config = RiskConfig(max_position_fraction=u(0.1, 1.0), max_notional=_dec(u(5e4, 5e5), 2),
                        gross_leverage=u(0.8, 3.0), var_limit=u(0.02, 0.15), var_confidence=0.99,
                        min_order_notional=_dec(u(0, 20), 2))
    state = [CLOSED, CLOSED, CLOSED, CLOSED, HALF_OPEN, OPEN][rng.integers(6)]
    clock = ManualClock("2024-03-01")
    breaker = CircuitBreaker(BreakerConfig(probe_size_fraction=u(0.1, 0.5)), clock)
    if state is not CLOSED:
        breaker.trip("scenario")
    if state is HALF_OPEN:
        clock.advance("1h")
    equity = _dec(u(1e4, 1e6), 2)
    prices = {s: INSTRUMENTS[s].round_price(_dec(BASE_PRICE[s] * u(0.8, 1.25), 6)) for s in SYMBOLS}
    positions = {s: INSTRUMENTS[s].round_quantity(_dec(u(-0.3, 0.3) * float(equity) / float(prices[s]), 10))
                 for s in SYMBOLS if rng.random() < 0.6}
    covariance = None
    if rng.random() < 0.5:
        vols = u(0.02, 0.07, len(SYMBOLS))
        corr = np.full((len(SYMBOLS), len(SYMBOLS)), u(0.3, 0.9))
        np.fill_diagonal(corr, 1.0)
        covariance = pd.DataFrame(corr * np.outer(vols, vols), index=SYMBOLS, columns=SYMBOLS)
    portfolio = PortfolioState(equity, positions, prices, covariance=covariance)
    symbol = SYMBOLS[rng.integers(len(SYMBOLS))]
    price = _dec(float(prices[symbol]) * u(0.995, 1.005), 5)
    qty = _dec(float(equity) * 10 ** u(-3.5, 0.0) / float(price), 9)
    if rng.random() < 0.8:
        qty = INSTRUMENTS[symbol].round_quantity(qty) or INSTRUMENTS[symbol].lot_size
    order = ProposedOrder(symbol, "buy" if rng.random() < 0.5 else "sell", qty, price, "realistic",
                          reduce_only=bool(rng.random() < 0.05))
    return config, RiskEngine(config, breaker=breaker, clock=clock), breaker, state, portfolio, order


# --- the invariant --------------------------------------------------------------------------------------------

def _post_trade(config, state, breaker, portfolio, order, approved):
    "Exact Decimal figures of the position after `approved` fills, as the limits see them."
    sym = order.symbol
    s = 1 if order.side == "buy" else -1
    q0 = portfolio.positions.get(sym, Decimal(0))
    q1 = q0 + s * approved.quantity
    reduces = abs(q1) <= abs(q0) and q0 * q1 >= 0
    mark = portfolio.prices.get(sym)
    p = max(order.price, approved.price, *([mark] if mark is not None else []))
    return s, q0, q1, reduces, p


def _limits_hold(config, state, breaker, portfolio, order, quantity, price, var_slack=1e-9):
    "Whether an order of `quantity` leaves every limit satisfied (exactly in Decimal; VaR in floats with slack)."
    approved = ProposedOrder(order.symbol, order.side, quantity, price)
    s, q0, q1, reduces, p = _post_trade(config, state, breaker, portfolio, order, approved)
    sym, equity = order.symbol, portfolio.equity
    post = abs(q1) * p
    scale = to_decimal(breaker.config.probe_size_fraction) if state is HALF_OPEN else Decimal(1)
    fraction, cap = per_symbol(config.max_position_fraction, sym), per_symbol(config.max_notional, sym)
    problems = []
    if equity <= 0:
        problems.append("equity")
    if fraction is None or post > to_decimal(fraction) * scale * equity:
        problems.append("position_fraction")
    if cap is None or post > to_decimal(cap) * scale:
        problems.append("notional")
    others = sum((abs(q * portfolio.prices[o]) for o, q in portfolio.positions.items() if o != sym), Decimal(0))
    if others + post > to_decimal(config.gross_leverage) * equity:
        problems.append("gross_leverage")
    if state is HALF_OPEN:
        xflat = max(Decimal(0), -s * q0)
        if quantity - xflat > scale * (order.quantity - xflat):
            problems.append("breaker")
    if state is OPEN:
        problems.append("breaker")
    if portfolio.covariance is not None and equity > 0:
        notionals = {o: q * portfolio.prices[o] for o, q in portfolio.positions.items() if o != sym}
        notionals[sym] = q1 * p
        try:
            v = portfolio_var(notionals, portfolio.covariance, equity, config.var_confidence)
            if v > config.var_limit * (1 + var_slack):
                problems.append("var")
        except Exception:  # a held symbol without covariance: VaR cannot be checked, so no new risk may pass
            problems.append("var")
    return problems


def _check_invariants(config, engine, breaker, state, portfolio, order, decision):
    assert decision is engine.decisions[-1]                    # recorded, whatever the outcome
    assert decision.requested is order
    spec = INSTRUMENTS.get(order.symbol)
    if decision.action is RiskAction.DENIED:
        assert decision.order is None and decision.reasons and all(isinstance(r, str) for r in decision.reasons)
        return
    a = decision.order
    assert spec is not None
    assert (a.symbol, a.side, a.reduce_only) == (order.symbol, order.side, order.reduce_only)
    assert isinstance(a.quantity, Decimal) and isinstance(a.price, Decimal)
    assert 0 < a.quantity <= order.quantity
    assert a.quantity % spec.lot_size == 0, "quantity off the lot grid"
    assert a.price % spec.tick_size == 0, "price off the tick grid"
    assert a.quantity >= spec.min_qty
    assert a.quantity * a.price >= spec.min_notional
    assert a.quantity * a.price >= config.min_order_notional
    if decision.action is RiskAction.APPROVED:
        assert a.quantity == order.quantity and decision.reasons == ()
    else:
        assert decision.reasons
    s, q0, q1, reduces, p = _post_trade(config, state, breaker, portfolio, order, a)
    if order.reduce_only:
        assert reduces, "a reduce-only order went past flat"
    if state is OPEN:
        assert reduces, "the breaker was OPEN and risk increased"
    if not reduces:
        problems = _limits_hold(config, state, breaker, portfolio, order, a.quantity, a.price)
        assert not problems, f"approved {a.quantity} breaks {problems}"


@PROPERTY
@given(scenarios())
def test_no_approved_order_exceeds_any_limit(scenario):
    config, engine, breaker, state, portfolio, order = scenario
    decision = engine.check(order, portfolio)                 # never raises: a denial is an answer
    _check_invariants(config, engine, breaker, state, portfolio, order, decision)
    event(f"{state.value} {decision.action.value} {'+'.join(decision.binding) or '-'}"
          f"{' (VaR on)' if portfolio.covariance is not None else ''}")


@PROPERTY
@given(st.integers(0, 2**32 - 1).map(realistic))
def test_no_approved_order_exceeds_any_limit_in_realistic_books(scenario):
    config, engine, breaker, state, portfolio, order = scenario
    decision = engine.check(order, portfolio)
    _check_invariants(config, engine, breaker, state, portfolio, order, decision)
    event(f"{state.value} {decision.action.value} {'+'.join(decision.binding) or '-'}")


@PROPERTY
@given(st.one_of(scenarios(), st.integers(0, 2**32 - 1).map(realistic)))
def test_a_resize_is_the_largest_quantity_within_the_limits(scenario):
    "When new risk was resized, one more lot (still within the request) would break a limit."
    config, engine, breaker, state, portfolio, order = scenario
    decision = engine.check(order, portfolio)
    if decision.action is not RiskAction.RESIZED:
        return
    a = decision.order
    lot = INSTRUMENTS[order.symbol].lot_size
    *_, reduces, _ = _post_trade(config, state, breaker, portfolio, order, a)
    bigger = a.quantity + lot
    if reduces or bigger > order.quantity:
        return
    problems = _limits_hold(config, state, breaker, portfolio, order, bigger, a.price, var_slack=-1e-6)
    event(f"one more lot breaks {'+'.join(problems)}")
    assert problems, f"{bigger} would also have fitted every limit, but only {a.quantity} was approved"


@PROPERTY
@given(scenarios())
def test_reductions_are_never_blocked_by_limits_or_the_breaker(scenario):
    "An order toward flat (not past it) is approved up to the lot whenever it meets the exchange minimums."
    config, engine, breaker, state, portfolio, _ = scenario
    held = [(s, q) for s, q in portfolio.positions.items() if q != 0]
    if not held:
        return
    sym, q0 = held[0]
    spec = INSTRUMENTS[sym]
    qty = spec.round_quantity(abs(q0) / 2) or spec.round_quantity(abs(q0))
    if qty <= 0:
        return
    order = ProposedOrder(sym, "sell" if q0 > 0 else "buy", qty, portfolio.prices[sym], "reduce")
    decision = engine.check(order, portfolio)
    price = spec.round_price(order.price)
    if qty >= spec.min_qty and qty * price >= max(spec.min_notional, config.min_order_notional):
        assert decision.action is RiskAction.APPROVED, decision.reasons
        assert decision.order.quantity == qty
    else:
        assert decision.action is RiskAction.DENIED and decision.reasons[-1].startswith("minimum")


# --- examples the properties are built on -------------------------------------------------------------------

PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "SOLUSDT": Decimal("150")}


def test_a_denial_is_recorded_not_raised():
    engine = RiskEngine(RiskConfig())
    book = PortfolioState(Decimal("100000"), {"BTCUSDT": Decimal("0.9")}, PRICES)
    orders = [ProposedOrder("BTCUSDT", "buy", Decimal("0.1"), Decimal("60000"), "full"),
              ProposedOrder("SOLUSDT", "buy", Decimal("0.05"), Decimal("150"), "sub-lot"),
              ProposedOrder("XRPUSDT", "buy", Decimal("10"), Decimal("0.5"), "unknown")]
    decisions = [engine.check(o, book) for o in orders]
    assert [d.action for d in decisions] == [RiskAction.DENIED] * 3
    assert engine.decisions == decisions
    assert decisions[0].binding == ("position_fraction",)
    assert decisions[1].reasons == ("lot: 0.05 SOLUSDT is less than one lot of 0.1",)
    assert decisions[2].reasons == ("instrument: no trading rules for XRPUSDT",)
    record = json.loads(json.dumps(decisions[0].to_dict()))
    assert record["action"] == "DENIED" and record["approved"] is None and record["strategy_reason"] == "full"


def test_decision_log_is_bounded():
    engine = RiskEngine(RiskConfig(decision_log_size=5))
    book = PortfolioState(Decimal("100000"), {}, PRICES)
    for i in range(12):
        engine.check(ProposedOrder("ETHUSDT", "buy", Decimal(i + 1) / 100, Decimal("3000")), book)
    assert [d.requested.quantity for d in engine.decisions] == [Decimal(i + 1) / 100 for i in range(7, 12)]


def test_engine_examples():
    engine = RiskEngine(RiskConfig(max_notional={"ETHUSDT": Decimal("40000"), "*": Decimal("1e6")}))
    book = PortfolioState(Decimal("100000"), {"BTCUSDT": Decimal("0.5"), "ETHUSDT": Decimal("10")}, PRICES)
    ok = engine.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.2"), Decimal("60000")), book)
    assert ok.action is RiskAction.APPROVED and ok.order is ok.requested
    cut = engine.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.6"), Decimal("60000")), book)
    assert (cut.action, cut.order.quantity, cut.binding) == (RiskAction.RESIZED, Decimal("0.333"), ("position_fraction",))
    cap = engine.check(ProposedOrder("ETHUSDT", "buy", Decimal("5"), Decimal("3000")), book)
    assert (cap.order.quantity, cap.binding) == (Decimal("3.33"), ("notional",))
    flip = engine.check(ProposedOrder("BTCUSDT", "sell", Decimal("1.5"), Decimal("60000")), book)
    assert flip.order.quantity == Decimal("1.333")            # 0.5 to flat, then 0.833 short
    stop = engine.check(ProposedOrder("BTCUSDT", "sell", Decimal("1.5"), Decimal("60000"), reduce_only=True), book)
    assert (stop.order.quantity, stop.binding) == (Decimal("0.5"), ("reduce_only",))
    # the position is valued at the higher of mark and reference price
    stale = engine.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.3"), Decimal("50000")), book)
    assert stale.order.quantity == Decimal("0.3")              # 0.8 x 60,000 = 48,000 <= 50,000
    high = PortfolioState(Decimal("100000"), {"BTCUSDT": Decimal("0.5")}, {"BTCUSDT": Decimal("70000")})
    assert engine.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.3"), Decimal("60000")), high).order.quantity \
        == Decimal("0.214")                                    # 50,000 / 70,000 = 0.714 in all


def test_breaker_in_the_engine():
    clock = ManualClock("2024-03-01")
    breaker = CircuitBreaker(BreakerConfig(), clock)
    engine = RiskEngine(RiskConfig(), breaker=breaker, clock=clock)
    book = PortfolioState(Decimal("100000"), {"BTCUSDT": Decimal("0.1")}, PRICES)
    buy = ProposedOrder("SOLUSDT", "buy", Decimal("40"), Decimal("150"))
    assert engine.check(buy, book).action is RiskAction.APPROVED
    breaker.trip("test")
    denied = engine.check(buy, book)
    assert denied.action is RiskAction.DENIED and denied.binding == ("breaker",)
    out = engine.check(ProposedOrder("BTCUSDT", "sell", Decimal("0.5"), Decimal("60000")), book)
    assert (out.action, out.order.quantity) == (RiskAction.RESIZED, Decimal("0.1"))   # to flat, no further
    clock.advance("1h")
    probe = engine.check(buy, book)
    assert (probe.action, probe.order.quantity, probe.binding) == (RiskAction.RESIZED, Decimal("10.0"), ("breaker",))
    assert probe.time == pd.Timestamp("2024-03-01T01:00Z")


def test_var_limit_and_missing_covariance():
    cov = pd.DataFrame([[0.0016, 0.0012], [0.0012, 0.0025]], index=["BTCUSDT", "ETHUSDT"],
                       columns=["BTCUSDT", "ETHUSDT"])
    engine = RiskEngine(RiskConfig(max_position_fraction=1.0))
    book = PortfolioState(Decimal("100000"), {"BTCUSDT": Decimal("0.5")}, PRICES, covariance=cov)
    d = engine.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.6"), Decimal("60000")), book)
    assert (d.order.quantity, d.binding) == (Decimal("0.395"), ("var",))
    assert portfolio_var({"BTCUSDT": Decimal("0.895") * 60000}, cov, 100000) <= 0.05
    assert portfolio_var({"BTCUSDT": Decimal("0.896") * 60000}, cov, 100000) > 0.05
    blind = PortfolioState(Decimal("100000"), {"SOLUSDT": Decimal("10")}, PRICES, covariance=cov)
    d = engine.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.1"), Decimal("60000")), blind)
    assert d.action is RiskAction.DENIED and d.binding == ("var",)
    # VaR scales with the position
    x = {"BTCUSDT": 10_000.0, "ETHUSDT": -4_000.0}
    assert portfolio_var({k: 3 * v for k, v in x.items()}, Covariance.from_frame(cov), 1e5) == pytest.approx(
        3 * portfolio_var(x, cov, 1e5), rel=1e-12)


# --- the circuit breaker ------------------------------------------------------------------------------------

def _breaker_in(state, clock, store=None):
    b = CircuitBreaker(BreakerConfig(), clock, store)
    b.on_equity(100)
    if state is not CLOSED:
        b.on_equity(94)                                       # -6%: OPEN at t0
    if state is HALF_OPEN:
        clock.advance("1h")
    assert b.state is state
    return b


def _errors(n):
    def run(b, clock):
        for _ in range(n):
            b.on_execution_error("timeout")
    return run


TRANSITIONS = [
    # (from, event, action, to)
    (CLOSED, "equity 4.99% below peak", lambda b, c: b.on_equity(Decimal("95.01")), CLOSED),
    (CLOSED, "equity 5% below peak", lambda b, c: b.on_equity(95), OPEN),
    (CLOSED, "equity not positive", lambda b, c: b.on_equity(0), OPEN),
    (CLOSED, "2 execution errors", _errors(2), CLOSED),
    (CLOSED, "3 execution errors", _errors(3), OPEN),
    (CLOSED, "time passes", lambda b, c: c.advance("10h"), CLOSED),
    (CLOSED, "trip by hand", lambda b, c: b.trip("kill switch"), OPEN),
    (OPEN, "59 minutes pass", lambda b, c: c.advance("59min"), OPEN),
    (OPEN, "the 1h cooldown passes", lambda b, c: c.advance("1h"), HALF_OPEN),
    (OPEN, "equity recovers", lambda b, c: b.on_equity(120), OPEN),
    (OPEN, "an execution succeeds", lambda b, c: b.on_execution_ok(), OPEN),
    (OPEN, "reset by hand", lambda b, c: b.reset("operator"), CLOSED),
    (HALF_OPEN, "equity 1.01% below the probe start", lambda b, c: b.on_equity(Decimal("93.05")), OPEN),
    (HALF_OPEN, "equity exactly 1% below the probe start", lambda b, c: b.on_equity(Decimal("93.06")), HALF_OPEN),
    (HALF_OPEN, "an execution error", _errors(1), OPEN),
    (HALF_OPEN, "3h59 clean", lambda b, c: (c.advance("3h59min"), b.on_equity(94)), HALF_OPEN),
    (HALF_OPEN, "4h clean with a reading", lambda b, c: (c.advance("4h"), b.on_equity(94)), CLOSED),
    (HALF_OPEN, "4h without any equity reading", lambda b, c: c.advance("4h"), HALF_OPEN),
    (HALF_OPEN, "reading, then 4h pass", lambda b, c: (b.on_equity(94), c.advance("4h")), CLOSED),
    (HALF_OPEN, "4h pass, the late reading is a loss", lambda b, c: (c.advance("4h"), b.on_equity(90)), OPEN),
]


@pytest.mark.parametrize("start,event,action,end", TRANSITIONS, ids=[f"{t[0]}: {t[1]}" for t in TRANSITIONS])
def test_breaker_transition_table(start, event, action, end):
    clock = ManualClock("2024-03-01T00:00Z")
    b = _breaker_in(start, clock)
    before = len(b.events)
    action(b, clock)
    assert b.state is end
    assert b.allows_new_risk() is (end is not OPEN)
    assert b.size_fraction == {CLOSED: 1.0, HALF_OPEN: 0.25, OPEN: 0.0}[end]
    if end is not start:
        assert b.events[-1].to_state is end and b.events[-1].reason
    else:
        assert len(b.events) == before


def test_peak_resets_after_a_clean_probe():
    clock = ManualClock("2024-03-01")
    b = _breaker_in(HALF_OPEN, clock)
    b.on_equity(Decimal("94.5"))
    clock.advance("4h")
    assert b.on_equity(Decimal("94.2")) is CLOSED
    assert b.peak == Decimal("94.2")                          # not the old 100, which would re-trip at once
    assert b.on_equity(Decimal("93")) is CLOSED               # -1.3% from the new peak
    assert b.on_equity(Decimal("89.49")) is OPEN              # -5% from 94.2


def _restart_while_open_keeps_the_cooldown(make_store):
    clock = ManualClock("2024-03-01T00:00Z")
    first = CircuitBreaker(BreakerConfig(), clock, make_store())
    first.on_equity(10_000)
    first.on_execution_error("timeout")
    assert first.on_equity(9_400) is OPEN
    clock.advance("40min")
    del first
    second = CircuitBreaker(BreakerConfig(), clock, make_store())
    assert second.state is OPEN
    assert second.opened_at == pd.Timestamp("2024-03-01T00:00Z")
    assert (second.peak, second.last_equity, second.consecutive_errors) == (Decimal("10000"), Decimal("9400"), 1)
    assert [(e.from_state, e.to_state) for e in second.events] == [(CLOSED, OPEN)]
    clock.advance("19min")
    assert second.state is OPEN                               # not reset: 59 min since the original trip
    clock.advance("1min")
    assert second.state is HALF_OPEN                          # not skipped either
    third = CircuitBreaker(BreakerConfig(), clock, make_store())
    assert third.state is HALF_OPEN and third.probe_started_at == pd.Timestamp("2024-03-01T01:00Z")


def test_restart_while_open_file_store(tmp_path):
    _restart_while_open_keeps_the_cooldown(lambda: FileStateStore(tmp_path / "state"))
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["breaker%3Aportfolio.json"]


@pytest.mark.services
def test_restart_while_open_redis_store(redis_url_prefix):
    url, prefix = redis_url_prefix
    stores = []

    def make():
        stores.append(open_state_store(RedisConfig(url=url, prefix=prefix + "breaker:"), "/nonexistent"))
        return stores[-1]

    _restart_while_open_keeps_the_cooldown(make)
    assert isinstance(stores[0], RedisStateStore)
    key = f"{prefix}breaker:state:breaker:portfolio"
    saved = json.loads(stores[0].client.get(key))
    assert saved["state"] == "HALF_OPEN"
    stores[0].client.delete(key)  # leave the run's prefix as we found it: other tests check it starts empty
    for s in stores:
        s.close()


def test_unreadable_state_fails_loudly_and_failed_saves_do_not_stop_the_breaker(tmp_path, caplog):
    store = FileStateStore(tmp_path)
    store.file("breaker:portfolio").write_text("{not json")
    with pytest.raises(StateStoreError, match="not valid JSON"):
        CircuitBreaker(store=store)

    class Broken(MemoryStateStore):
        def set(self, key, value):
            raise StateStoreError("disk full")

    b = CircuitBreaker(clock=ManualClock("2024-03-01"), store=Broken())
    assert b.trip("test") is OPEN and b.unsaved
    assert "state not saved" in caplog.text


def test_memory_store_round_trip_and_selection(tmp_path):
    m = MemoryStateStore()
    clock = ManualClock("2024-03-01")
    a = CircuitBreaker(clock=clock, store=m, name="btc")
    a.on_equity(Decimal("1000.5"))
    b = CircuitBreaker(clock=clock, store=m, name="btc")
    assert b.snapshot() == a.snapshot()
    assert isinstance(open_state_store(None, tmp_path), FileStateStore)
    with pytest.raises(Exception, match="plain token"):
        CircuitBreaker(name="a b")


# --- allocation ---------------------------------------------------------------------------------------------

def _returns(n_assets, n_days=400, seed=0):
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal(n_days) * 0.02
    return pd.DataFrame({f"A{i}": factor * rng.uniform(0.3, 1.5) + rng.standard_normal(n_days) * rng.uniform(0.005, 0.04)
                         for i in range(n_assets)})


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_hrp_weights_sum_to_one_and_ignore_column_order(n):
    r = _returns(n, seed=n)
    w = hrp_weights(r)
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w > 0).all()
    shuffled = hrp_weights(r[list(reversed(r.columns))])
    pd.testing.assert_series_equal(w, shuffled[w.index], rtol=1e-12)


@settings(derandomize=True, max_examples=150, deadline=None, database=None)
@given(n=st.integers(2, 8), seed=st.integers(0, 10_000), cap=st.floats(0.05, 1.0), gross=st.floats(0.1, 3.0))
def test_allocate_respects_caps_and_places_everything_it_can(n, seed, cap, gross):
    w = allocate(_returns(n, 200, seed), caps=cap, gross=gross)
    assert (w <= cap * gross * (1 + 1e-9)).all() and (w >= 0).all()
    expected = min(1.0, cap * n) * gross                      # caps summing below 1 leave the rest in cash
    assert w.sum() == pytest.approx(expected, rel=1e-9)
