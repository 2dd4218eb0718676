"""Paper and Bybit venues behind one interface, on the real journal (DuckDB and PostgreSQL) and the loopback Bybit.

The same intents through `PaperVenue` and through `BybitVenue` (simulated) end with the same Decimal positions,
cash and fees. A paper run killed at any point (after the bar's outbox write, mid-send, after an ack, between a
fill and its state, between two funding settlements, ...) and rebuilt from the journal ends exactly as a run that
never stopped, and no client id is filled twice. Bybit's instruments are the trading rules the sizing rounds to,
and a position query that fails is an error, never "flat".
"""
from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal

import pandas as pd
import pytest

from trade_matrix.core import ConfigError, InstrumentSpec, ManualClock, TemporaryExchangeError
from trade_matrix.execution.bybit import BybitGateway
from trade_matrix.execution.journal import IntentState, JournalError, open_journal
from trade_matrix.execution.manager import OrderManagerConfig
from trade_matrix.execution.orders import ExecutionVenue, Order, OrderStatus
from trade_matrix.execution.reconcile import reconcile
from trade_matrix.execution.venues import BybitVenue, PaperVenue
from trade_matrix.risk.engine import PortfolioState, ProposedOrder, RiskConfig, RiskEngine
from trade_matrix.testing.bybit_exchange import BybitExchange
from trade_matrix.trader.decision import client_order_id, DecisionPath

KEY, SECRET = "key", "secret"
BAR = pd.Timedelta("4h")
T0 = pd.Timestamp("2024-03-01T00:00Z")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
RUN = "run-1"

# the open of bar k; orders decided at the close of bar k are sized at the next open and fill there
OPENS = [{"BTCUSDT": b, "ETHUSDT": e} for b, e in (
    ("60000", "3000"), ("60512.3", "3011.27"), ("61020.7", "2987.45"), ("60480.1", "2950.08"),
    ("59870.4", "2999.99"), ("60133.3", "3025.5"), ("60777.7", "3040.12"))]
ORDERS = [  # (symbol, side, quantity) decided at the close of bar k; comments: positions after the fill
    [("BTCUSDT", "buy", "0.010"), ("ETHUSDT", "sell", "0.30")],     # +0.010, -0.30
    [("BTCUSDT", "buy", "0.005"), ("ETHUSDT", "buy", "0.10")],      # +0.015, -0.20 (reduce-only)
    [("BTCUSDT", "sell", "0.020"), ("ETHUSDT", "buy", "0.20")],     # -0.005 (crosses), 0 (reduce-only)
    [("BTCUSDT", "buy", "0.005"), ("ETHUSDT", "buy", "0.50")],      # 0 (reduce-only), +0.50
    [("ETHUSDT", "sell", "0.25"), ("BTCUSDT", "buy", "0.002")],     # +0.25 (reduce-only), +0.002
    [("BTCUSDT", "buy", "0.003"), ("ETHUSDT", "sell", "0.10")],     # +0.005, +0.15
]
FUNDING = {(2, "BTCUSDT"): "0.0001", (2, "ETHUSDT"): "-0.0002",    # settled at bar k's open, before its fills
           (4, "BTCUSDT"): "0.00015", (4, "ETHUSDT"): "0.0001",    # (ETH is flat then: a settlement of 0)
           (6, "BTCUSDT"): "0.0001"}


def bar_time(k: int) -> pd.Timestamp:
    return T0 + k * BAR


def manager_options(clock) -> dict:
    return dict(config=OrderManagerConfig(lookup_pause_s=0), clock=clock, sleep=lambda s: None)


def orders_of(k: int) -> list[Order]:
    return [Order(client_order_id(bar_time(k), s), s, side, qty, price=OPENS[k + 1][s]) for s, side, qty in ORDERS[k]]


# --- journals on both stores ---------------------------------------------------------------------------------

@pytest.fixture(params=["duckdb", "postgres"])
def new_journal_url(request, tmp_path, pg_test_database_url):
    "A function making the URL of a fresh, empty journal on the parametrized store."
    def make(name: str = "journal") -> str:
        if request.param == "duckdb":
            return f"duckdb:///{tmp_path}/{name}.duckdb"
        import psycopg
        from psycopg import sql
        schema = f"v_{os.urandom(4).hex()}"
        with psycopg.connect(pg_test_database_url, autocommit=True) as c:
            c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        sep = "&" if "?" in pg_test_database_url else "?"
        return f"{pg_test_database_url}{sep}options=-csearch_path%3D{schema}"
    return make


@pytest.fixture
def clock():
    return ManualClock(T0 + BAR + pd.Timedelta("1min"))


@pytest.fixture
def exchange(clock):
    with BybitExchange(clock, api_keys={KEY: SECRET}, initial_cash=Decimal("100000")) as ex:
        yield ex


def bybit_venue(journal, exchange, clock, symbols=SYMBOLS, **options) -> BybitVenue:
    gateway = BybitGateway(KEY, SECRET, endpoint=exchange.url, timeout=5, clock=clock)
    return BybitVenue.open(gateway, journal, RUN, list(symbols), **(manager_options(clock) | options))


# --- paper and Bybit, the same intents -----------------------------------------------------------------------

def test_paper_and_simulated_bybit_venues_end_with_the_same_decimal_positions_cash_and_fees(new_journal_url, exchange, clock):
    # Arrange
    paper_journal, bybit_journal = open_journal(new_journal_url("paper")), open_journal(new_journal_url("bybit"))
    paper = PaperVenue.open(paper_journal, RUN, initial_cash="100000", **manager_options(clock))
    bybit = bybit_venue(bybit_journal, exchange, clock)
    assert isinstance(paper, ExecutionVenue) and isinstance(bybit, ExecutionVenue)
    # Act: each bar's orders recorded and submitted on both; paper fills at the next open, Bybit at that price now
    for k in range(len(ORDERS)):
        clock.set(bar_time(k) + BAR + pd.Timedelta("1min"))
        for s in SYMBOLS:
            exchange.set_price(s, OPENS[k + 1][s])
        answers = {}
        for name, venue in (("paper", paper), ("bybit", bybit)):
            answers[name] = [venue.submit(o).status for o in venue.record(bar_time(k), orders_of(k))]
        for s in SYMBOLS:
            paper.on_bar_open(s, bar_time(k + 1), OPENS[k + 1][s])
        assert answers == {"paper": [OrderStatus.NEW] * 2, "bybit": [OrderStatus.FILLED] * 2}
    # Assert
    fees = lambda j: sum((f.fee for _, _, f in j.fills()), Decimal(0))
    assert paper.positions == bybit.positions == paper_journal.positions(RUN) == bybit_journal.positions(RUN)
    assert paper.positions == {"BTCUSDT": Decimal("0.005"), "ETHUSDT": Decimal("0.15")}
    assert fees(paper_journal) == fees(bybit_journal) == paper.fees_paid > 0
    assert paper.cash == exchange.ledger.cash
    assert paper.equity() == bybit.equity()
    reduce_only = {o.link_id for o in exchange.orders.values() if o.reduce_only}
    assert reduce_only == {i.client_id for i in paper_journal.intents(run_id=RUN) if i.reduce_only}
    assert len(reduce_only) == 5
    assert all(exchange.accepted_creates(i.client_id) == 1 for i in bybit_journal.intents(run_id=RUN))
    assert {i.state for j in (paper_journal, bybit_journal) for i in j.intents(run_id=RUN)} == {IntentState.FILLED}


# --- paper: crash anywhere, restart, same end --------------------------------------------------------------

class Crash(Exception):
    "The process dies here."


def trade_bar(venue: PaperVenue, journal, clock: ManualClock, k: int, crash: str | None) -> None:
    "Bar k of a paper trader: its open (funding, then fills), then its close (record, submit); dies at `crash`."
    t = bar_time(k)
    clock.set(t + pd.Timedelta("1min"))
    for s in SYMBOLS:
        if (k, s) in FUNDING:
            venue.on_funding(s, t, FUNDING[k, s], OPENS[k][s])
            if crash == "funding":                               # one symbol's settlement journaled, not the other's
                raise Crash
        if crash in ("fill-applied", "fill-journaled") and venue.gateway.open_orders():
            answer = venue.gateway.on_bar_open(s, t, OPENS[k][s])[0]
            if crash == "fill-applied":                         # fill and FILLED journaled, the other order not
                venue.manager.apply(journal.intent(answer.client_id), answer)
            else:                                               # the fill journaled, its FILLED state not
                journal.add_fill(answer.executions[0][0], answer.client_id, answer.executions[0][1])
            raise Crash
        venue.on_bar_open(s, t, OPENS[k][s])
    if crash == "after-open":
        raise Crash
    if k >= len(ORDERS):
        return
    clock.set(t + BAR + pd.Timedelta("1min"))
    for s in SYMBOLS:
        venue.mark(s, OPENS[k + 1][s])
    recorded = venue.record(t, orders_of(k), [{"symbol": s, "bar": k} for s in SYMBOLS], {"bar": k})
    if crash == "planned":
        raise Crash
    for n, order in enumerate(recorded):
        if n == 0 and crash in ("sending", "answer-lost"):
            journal.transition(order.id, IntentState.SENDING, now=clock())
            if crash == "answer-lost":                          # the venue took it; the answer died with the process
                venue.gateway.place(journal.intent(order.id))
            raise Crash
        venue.submit(order)
        if n == 0 and crash == "acked":
            raise Crash


def run_paper(url: str, crashes: dict[int, str] | None = None) -> tuple:
    "A paper run over every bar, killed at `crashes` (bar -> point), each time reopened from the journal."
    clock, crashes, restarts = ManualClock(T0), dict(crashes or {}), 0
    journal = open_journal(url)
    venue = PaperVenue.open(journal, RUN, initial_cash="100000", **manager_options(clock))
    k = 0
    while k < len(OPENS):
        try:
            trade_bar(venue, journal, clock, k, crashes.get(k))
            k += 1
        except Crash:
            crashes.pop(k)
            restarts += 1
            journal.close()
            del venue
            journal = open_journal(url)                          # a new process: the journal is all it has
            venue = PaperVenue.open(journal, RUN, **manager_options(clock))
            venue.recover()
            last = journal.last_checkpoint(RUN)
            k = last[1]["bar"] + 1 if last else 0                # resume at the bar after the last checkpoint
    return journal, venue, restarts


def end_state(journal, venue: PaperVenue) -> dict:
    return {"cash": venue.cash, "positions": venue.positions, "fees": venue.fees_paid, "funding": venue.funding_paid,
            "fills": journal.fills(), "settlements": journal.funding(RUN),
            "states": {i.client_id: i.state for i in journal.intents(run_id=RUN)},
            "journal positions": journal.positions(RUN), "equity": venue.equity()}


def assert_same_end(url_reference: str, url_crashed: str, crashes: dict[int, str]) -> None:
    reference = end_state(*run_paper(url_reference)[:2])
    journal, venue, restarts = run_paper(url_crashed, crashes)
    crashed = end_state(journal, venue)
    assert restarts == len(crashes)
    assert crashed == reference
    assert set(Counter(c for _, c, _ in journal.fills()).values()) == {1}          # no client id filled twice
    assert len(journal.fills()) == sum(len(o) for o in ORDERS)
    assert reference["positions"] == {"BTCUSDT": Decimal("0.005"), "ETHUSDT": Decimal("0.15")}
    assert reconcile(journal, venue.gateway, RUN, clock=venue.manager.clock).ok


def test_a_paper_run_killed_at_every_kind_of_point_ends_exactly_as_one_that_never_stopped(new_journal_url):
    crashes = {0: "planned", 1: "sending", 2: "fill-applied", 3: "answer-lost", 4: "funding", 5: "acked",
               6: "fill-journaled"}
    assert_same_end(new_journal_url("reference"), new_journal_url("crashed"), crashes)


@pytest.mark.parametrize("bar, point", [(0, "planned"), (1, "sending"), (1, "answer-lost"), (1, "acked"),
                                        (2, "fill-applied"), (2, "fill-journaled"), (2, "funding"), (2, "after-open")])
def test_a_paper_run_killed_once_ends_exactly_as_one_that_never_stopped(tmp_path, bar, point):
    assert_same_end(f"duckdb:///{tmp_path}/reference.duckdb", f"duckdb:///{tmp_path}/crashed.duckdb", {bar: point})


def test_a_restart_keeps_the_runs_paper_settings_and_refuses_other_runs(tmp_path, clock):
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    PaperVenue.open(journal, RUN, initial_cash="5000", taker_fee="0.0004", **manager_options(clock))
    again = PaperVenue.open(journal, RUN, **manager_options(clock))
    assert (again.cash, again.exchange.taker_fee, journal.run(RUN)["mode"]) == (Decimal("5000"), Decimal("0.0004"), "paper")
    with pytest.raises(ConfigError, match="began with taker_fee 0.0004; a restart cannot change it"):
        PaperVenue.open(journal, RUN, taker_fee="0.00055", **manager_options(clock))
    journal.begin_run("live-1", 0, "testnet")
    with pytest.raises(ConfigError, match="not a paper run"):
        PaperVenue.open(journal, "live-1", **manager_options(clock))


def test_submit_sends_only_what_the_journal_holds(tmp_path, clock):
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    venue = PaperVenue.open(journal, RUN, **manager_options(clock))
    order = orders_of(0)[0]
    with pytest.raises(JournalError, match="is not journaled"):
        venue.submit(order)
    (recorded,) = venue.record(T0, [order])
    with pytest.raises(JournalError, match="refusing to guess"):
        venue.submit(Order(order.id, order.symbol, order.side, Decimal("0.02")))
    assert venue.exchange.open_orders() == []                                     # nothing reached the venue
    assert venue.submit(recorded).status is OrderStatus.NEW
    assert venue.submit(recorded).status is OrderStatus.NEW                       # again: the same order, not a second
    assert len(venue.exchange.open_orders()) == 1


# --- Bybit: rules from the exchange, REST as the truth ------------------------------------------------------

RULES = {"BTCUSDT": InstrumentSpec(symbol="BTCUSDT", tick_size=Decimal("0.5"), lot_size=Decimal("0.002"),
                                   min_qty=Decimal("0.004"), min_notional=Decimal("100")),
         "ETHUSDT": InstrumentSpec(symbol="ETHUSDT", tick_size=Decimal("0.05"), lot_size=Decimal("0.1"),
                                   min_qty=Decimal("0.1"), min_notional=Decimal("20"))}


def test_instruments_from_the_exchange_are_the_rules_the_order_is_sized_and_sent_by(tmp_path, clock):
    rejected = []
    with BybitExchange(clock, api_keys={KEY: SECRET}, instruments=RULES, initial_cash=Decimal("100000"),
                       max_market_qty={"BTCUSDT": Decimal("1")}) as ex:
        ex.set_price("BTCUSDT", "60000")
        journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
        venue = bybit_venue(journal, ex, clock, on_rejected=lambda s, why: rejected.append((s, why)))
        # the venue's rules are the exchange's, and the decision path hands them to its risk engine
        assert venue.instruments == RULES
        assert venue.max_market_qty == {"BTCUSDT": Decimal("1"), "ETHUSDT": Decimal("100000")}
        path = DecisionPath(["BTCUSDT"], {"BTCUSDT": None}, venue=venue, clock=clock)
        assert path.risk.instruments == path.instruments == RULES
        # sized by risk on those rules: down to the 0.002 lot, on the 0.5 tick; below the minimum: denied
        book = PortfolioState(venue.equity())
        sized = path.risk.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.0071"), Decimal("60000.3")), book)
        assert (sized.order.quantity, sized.order.price) == (Decimal("0.006"), Decimal("60000.5"))
        assert not path.risk.check(ProposedOrder("BTCUSDT", "buy", Decimal("0.0019"), Decimal("60000")), book).approved
        on_rules = Order.from_proposed(sized.order, client_order_id(T0, "BTCUSDT"), clock())
        on_constants = Order(client_order_id(T0, "BTCUSDT", 0, epoch=1), "BTCUSDT", "buy", "0.005")  # core's 0.001 lot
        too_big = Order(client_order_id(T0, "BTCUSDT", 0, epoch=2), "BTCUSDT", "buy", "1.002")
        answers = [venue.submit(o) for o in venue.record(T0, [on_rules, on_constants, too_big])]
        assert [a.status for a in answers] == [OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.REJECTED]
        assert "10001" in answers[1].status_reason and "maxMktOrderQty" in answers[2].status_reason
        assert [s for s, _ in rejected] == ["BTCUSDT", "BTCUSDT"]
        assert venue.positions == {"BTCUSDT": Decimal("0.006")}
        assert [ex.accepted_creates(o.id) for o in (on_rules, on_constants, too_big)] == [1, 0, 0]


def test_an_instrument_that_is_not_known_refuses_the_venue_and_sends_nothing(tmp_path, exchange, clock):
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    with pytest.raises(ConfigError, match="XRPUSDT is not a Bybit linear instrument"):
        bybit_venue(journal, exchange, clock, symbols=["BTCUSDT", "XRPUSDT"])
    assert exchange.orders == {}


def test_a_failed_position_query_is_an_error_never_flat(tmp_path, exchange, clock):
    # Arrange: the account holds a position
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    venue = bybit_venue(journal, exchange, clock)
    exchange.set_price("BTCUSDT", "60000")
    (order,) = venue.record(T0, [Order(client_order_id(T0, "BTCUSDT"), "BTCUSDT", "buy", "0.004", price="60000")])
    assert venue.submit(order).status is OrderStatus.FILLED
    # Act: the position route fails three times
    exchange.server_error("/v5/position/list", status=503, times=3)
    with pytest.raises(TemporaryExchangeError, match="503"):
        venue.refresh()
    # Assert: every read raises until the venue answers; nothing is decided or sent from a guess
    with pytest.raises(TemporaryExchangeError):
        venue.position("BTCUSDT")
    bar1 = T0 + BAR
    with pytest.raises(TemporaryExchangeError):
        venue.record(bar1, [Order(client_order_id(bar1, "BTCUSDT"), "BTCUSDT", "sell", "0.004", price="60000")])
    assert journal.intent(client_order_id(bar1, "BTCUSDT")) is None
    assert venue.positions == {"BTCUSDT": Decimal("0.004")}
    assert venue.equity() == exchange.equity()


def test_a_bybit_venue_restarted_with_an_order_in_flight_finds_it_instead_of_sending_again(tmp_path, exchange, clock):
    # Arrange: the order was recorded and sent; the exchange filled it; its answer was lost with the process
    url = f"duckdb:///{tmp_path}/j.duckdb"
    journal = open_journal(url)
    venue = bybit_venue(journal, exchange, clock)
    exchange.set_price("ETHUSDT", "3000")
    (order,) = venue.record(T0, [Order(client_order_id(T0, "ETHUSDT"), "ETHUSDT", "sell", "0.5", price="3000")])
    journal.transition(order.id, IntentState.SENDING, now=clock())
    exchange.drop_response("/v5/order/create")
    with pytest.raises(TemporaryExchangeError):
        venue.gateway.place(journal.intent(order.id))
    journal.close()
    # Act: a new process opens the same run and recovers
    journal = open_journal(url)
    again = bybit_venue(journal, exchange, clock)
    settled = again.recover()
    # Assert
    assert [(i.client_id, i.state) for i in settled] == [(order.id, IntentState.FILLED)]
    assert exchange.accepted_creates(order.id) == 1
    assert again.positions == journal.positions(RUN) == {"ETHUSDT": Decimal("-0.5")}
    assert again.submit(order).status is OrderStatus.FILLED                     # a late submit: still one order
    assert exchange.accepted_creates(order.id) == 1


def test_an_acknowledged_order_the_venue_no_longer_has_is_lost_and_reported(tmp_path, clock):
    lost = []
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    venue = PaperVenue.open(journal, RUN, on_lost=lambda s, why: lost.append(s), **manager_options(clock))
    (order,) = venue.record(T0, orders_of(0)[:1])
    assert venue.submit(order).status is OrderStatus.NEW
    venue.gateway.exchange.cancel(order.id)                  # the venue forgets it (a bug, an outside cancel, ...)
    del venue.gateway.orders[order.id]
    (settled,) = venue.recover()
    assert settled.state is IntentState.LOST and lost == ["BTCUSDT"]
    answer = venue.submit(order)
    assert (answer.status, answer.status_reason.startswith("lost: ")) == (OrderStatus.REJECTED, True)
