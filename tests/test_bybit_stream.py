"""The private stream against the Bybit simulator: hints are triggers, REST is the truth, the socket survives.

Each WebSocket fault of the simulator (a duplicated execution, an execution before its order's New, the double
Filled of a cancel racing a fill, a dropped connection, an outage longer than pybit's retries, silence, garbage)
ends with every fill recorded once, the intent's state right and exactly one accepted create per client id; a
refused key ends in a FatalError that says what to check. Times that matter (backoff, staleness, the outage) run
on the simulated clock; real waits are polls with deadlines.
"""
from __future__ import annotations

import json
import os
import time
from decimal import Decimal

import pandas as pd
import pytest

from trade_matrix.core import FatalError
from trade_matrix.execution.bybit import BybitGateway
from trade_matrix.execution.bybit_stream import (ExecutionHint, OrderHint, PositionHint, PrivateStream, Reconnected,
                                                 StreamConfig, StreamProblem, WalletHint, apply_hints)
from trade_matrix.execution.journal import Intent, IntentState, open_journal
from trade_matrix.execution.manager import OrderManager, OrderManagerConfig
from trade_matrix.execution.orders import Order
from trade_matrix.testing.bybit_private_ws import StreamingBybitExchange, order_item

KEY, SECRET = "key", "secret"          # conftest's simulated account
BAR = pd.Timestamp("2024-03-01T00:00Z")
CREATE, REALTIME = "/v5/order/create", "/v5/order/realtime"


@pytest.fixture
def exchange(clock):
    "conftest's simulated account, with the private WebSocket."
    with StreamingBybitExchange(clock, api_keys={KEY: SECRET}, initial_cash=Decimal("100000")) as simulated:
        simulated.set_price("BTCUSDT", "60000")
        simulated.set_price("ETHUSDT", "3000")
        yield simulated


@pytest.fixture
def stream(exchange, clock):
    with PrivateStream(KEY, SECRET, endpoint=exchange.private_wss, clock=clock) as s:
        assert s.wait_ready(5), list(s.problems)
        yield s


@pytest.fixture
def manager(journal, gateway, clock):
    return OrderManager(journal, gateway, OrderManagerConfig(lookup_pause_s=0), clock=clock, sleep=lambda s: None)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def collect(stream, until, timeout: float = 5.0) -> list:
    "Drain the stream until `until(hints so far)` holds."
    got = []
    assert wait_for(lambda: got.extend(stream.drain()) or until(got), timeout), got
    return got


def has(kind, **fields):
    "A predicate: some hint of `kind` with these field values."
    return lambda hints: any(isinstance(h, kind) and all(getattr(h, k) == v for k, v in fields.items()) for h in hints)


def lookups(exchange, client_id: str) -> int:
    "REST lookups of `client_id` the simulator answered so far."
    return sum(1 for path, q in exchange.request_log if path == REALTIME and q.get("orderLinkId") == client_id)


def resting(journal, manager, exchange, k: int, symbol: str, side: str, qty: str) -> Intent:
    "One of our market orders, accepted and left open (matching paused): the intent is ACKED."
    exchange.matching = False
    i = Intent.from_order(Order(f"tm0-{k}-{symbol}-0", symbol, side, qty), "run-1", BAR)
    journal.record_bar("run-1", BAR, [i])
    sent = manager.send(i)
    assert sent.state is IntentState.ACKED
    return sent


def settled_once(journal, exchange, i: Intent, state=IntentState.FILLED, fills: int = 1) -> None:
    assert journal.intent(i.client_id).state is state
    assert len(journal.fills(i.client_id)) == fills
    assert exchange.accepted_creates(i.client_id) == 1
    assert exchange.requests[CREATE] == sum(exchange.accepted_creates(x.client_id) for x in journal.intents())


# --- message faults ------------------------------------------------------------------------------------------

@pytest.fixture(params=["duckdb", "postgres"])
def any_journal(request, tmp_path):
    if request.param == "duckdb":
        url = f"duckdb:///{tmp_path}/j.duckdb"
    else:                                              # a fresh schema of the session's test database
        import psycopg
        from psycopg import sql
        base, schema = request.getfixturevalue("pg_test_database_url"), f"s_{os.urandom(4).hex()}"
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    j = open_journal(url)
    j.begin_run("run-1", 0, "testnet")
    yield j
    j.close()


def test_duplicate_execution_messages_are_applied_once(any_journal, gateway, exchange, stream, clock):
    # Arrange: an order resting at the exchange; its fill's execution message will come twice
    om = OrderManager(any_journal, gateway, OrderManagerConfig(lookup_pause_s=0), clock=clock, sleep=lambda s: None)
    i = resting(any_journal, om, exchange, 0, "BTCUSDT", "buy", "0.010")
    exchange.duplicate_message("execution")
    # Act
    exchange.match()
    hints = collect(stream, has(WalletHint))
    before = lookups(exchange, i.client_id)
    report = apply_hints(hints, om)
    again = apply_hints(hints, om)                     # the same news a second time
    # Assert
    executions = [h for h in hints if isinstance(h, ExecutionHint)]
    assert len(executions) == 2 and executions[0] == executions[1]
    assert report.looked_up == {i.client_id: IntentState.FILLED} and report.recorded == [executions[0].exec_id]
    assert again.recorded == [] and lookups(exchange, i.client_id) - before == 1
    settled_once(any_journal, exchange, i)
    assert any_journal.positions() == {"BTCUSDT": Decimal("0.010")} == {"BTCUSDT": exchange.position("BTCUSDT")}


def test_an_execution_before_its_orders_new_fills_once_and_the_late_new_changes_nothing(journal, manager, exchange,
                                                                                       stream):
    exchange.reorder_message("order", behind="execution")   # the New published at the create waits for the fill
    i = resting(journal, manager, exchange, 0, "ETHUSDT", "sell", "0.50")
    before = lookups(exchange, i.client_id)
    exchange.match()
    hints = collect(stream, has(WalletHint))
    ours = [h for h in hints if isinstance(h, OrderHint | ExecutionHint)]
    assert [(type(h).__name__, getattr(h, "status", "")) for h in ours] == \
        [("ExecutionHint", ""), ("OrderHint", "New"), ("OrderHint", "Filled")]
    states = [apply_hints([h], manager).looked_up[i.client_id] for h in ours]   # one batch per message, as they came
    assert states == [IntentState.FILLED] * 3
    assert lookups(exchange, i.client_id) - before == 1        # once filled, later news costs no request
    settled_once(journal, exchange, i)
    assert exchange.fault_counts["ws_reorder"] == 1


def test_the_double_filled_of_a_cancel_racing_the_fill_records_one_fill(journal, manager, exchange, stream):
    exchange.double_filled()
    i = resting(journal, manager, exchange, 0, "BTCUSDT", "sell", "0.004")
    new = collect(stream, has(OrderHint, client_id=i.client_id, status="New"))
    assert apply_hints(new, manager).looked_up == {i.client_id: IntentState.ACKED}
    exchange.match()
    hints = collect(stream, has(WalletHint))
    filled = [h for h in hints if isinstance(h, OrderHint) and h.status == "Filled"]
    assert [h.reason for h in filled] == ["", "CancelByUser EC_OrigClOrdIDDoesNotExist"]
    reports = [apply_hints([h], manager) for h in hints]
    assert [r.looked_up.get(i.client_id) for r in reports if r.looked_up] == [IntentState.FILLED] * 3
    assert lookups(exchange, i.client_id) == 3                 # the send's read-back, the New, the first news of the fill
    settled_once(journal, exchange, i)


def test_a_partial_fill_seen_on_the_stream_gets_one_completion_order(journal, manager, exchange, stream):
    # Arrange: the resting order will fill 40 % and Bybit cancels the rest
    exchange.partial_fill(fraction="0.4", symbol="BTCUSDT")
    i = resting(journal, manager, exchange, 0, "BTCUSDT", "buy", "0.010")
    # Act: the fill arrives on the stream; the completion order rests too, then fills
    exchange.match()
    report = apply_hints(collect(stream, has(OrderHint, client_id=i.client_id, status="Cancelled")), manager)
    rest = journal.intent("tm0-0-BTCUSDT-1")
    assert report.looked_up == {i.client_id: IntentState.CANCELLED} and rest.state is IntentState.ACKED
    exchange.match()
    report = apply_hints(collect(stream, has(OrderHint, client_id=rest.client_id, status="Filled")), manager)
    # Assert
    assert report.looked_up == {rest.client_id: IntentState.FILLED}
    settled_once(journal, exchange, i, IntentState.CANCELLED)
    settled_once(journal, exchange, rest)
    assert (journal.filled(i.client_id), journal.filled(rest.client_id)) == (Decimal("0.004"), Decimal("0.006"))
    assert journal.positions() == {"BTCUSDT": Decimal("0.010")} == {"BTCUSDT": exchange.position("BTCUSDT")}


# --- connection faults ---------------------------------------------------------------------------------------

def test_a_dropped_connection_is_reconnected_and_the_missed_fill_is_found_over_rest(journal, manager, exchange,
                                                                                   stream):
    i = resting(journal, manager, exchange, 0, "BTCUSDT", "buy", "0.002")
    stream.drain()
    exchange.drop_private_connections()
    exchange.match()                                           # published while the stream reconnects
    hints = collect(stream, has(Reconnected))
    report = apply_hints(hints, manager)
    assert report.reconnected and report.looked_up == {i.client_id: IntentState.FILLED}
    assert stream.builds == 1 and exchange.ws_counts["connections"] == 2      # pybit's own reconnect
    settled_once(journal, exchange, i)


def test_an_outage_longer_than_pybits_retries_gets_a_new_socket_and_a_reconnected_hint(journal, manager, exchange,
                                                                                      stream, clock):
    # Arrange: an order rests; the exchange goes down for 30 s (simulated) and the order fills meanwhile
    i = resting(journal, manager, exchange, 0, "ETHUSDT", "buy", "0.20")
    exchange.go_down(seconds=30)
    assert wait_for(lambda: stream.socket is not None and stream.socket.gave_up is not None)   # pybit stopped
    exchange.match()
    # Act: the supervisor's checks, on the simulated clock
    stream.check()                                             # a new socket: refused, the server is down
    assert stream.wait_built() and stream.builds == 2 and not stream.connected
    stream.check()                                             # backing off: nothing is built
    assert stream.builds == 2
    clock.advance("31s")
    stream.check()
    hints = collect(stream, has(Reconnected))
    report = apply_hints(hints, manager)
    # Assert
    assert stream.builds == 3 and stream.connected
    assert report.reconnected and report.looked_up == {i.client_id: IntentState.FILLED}
    settled_once(journal, exchange, i)
    assert any("could not connect" in p and "next socket in 1 s" in p for p in stream.problems)


def test_a_silent_connection_is_pinged_then_replaced(exchange, stream, clock):
    exchange.ignore_pings()
    clock.advance("25s")
    stream.check()                                             # quiet for 25 s: the supervisor pings
    assert wait_for(lambda: exchange.ws_counts["ignored_pings"] == 1)
    clock.advance("40s")
    stream.check()                                             # 65 s without a frame: a new socket
    collect(stream, has(Reconnected))
    assert stream.builds == 2 and stream.connected
    assert any("nothing received for 65 s" in p for p in stream.problems)


@pytest.mark.parametrize("key, secret, why", [("not-a-key", SECRET, "Invalid apikey"),
                                              (KEY, "not-the-secret", "Signature verification failed")])
def test_a_refused_key_stops_the_stream_with_a_clear_error(exchange, clock, key, secret, why):
    with PrivateStream(key, secret, endpoint=exchange.private_wss, clock=clock,
                       config=StreamConfig(max_refusals=2)) as s:
        assert wait_for(lambda: s.socket is not None and s.socket.refused)
        s.check()                                              # retired; the next socket after a 1 s backoff
        clock.advance("1s")
        s.check()
        assert wait_for(lambda: s.error is not None)
        with pytest.raises(FatalError, match=f"refused this stream 2 times in a row .*{why}.*Check the API key"):
            s.check()
        fatal = [h for h in s.drain() if isinstance(h, StreamProblem) and h.fatal]
        assert len(fatal) == 1 and why in fatal[0].what
        assert not s.wait_ready(0) and exchange.ws_counts["auth_refused"] == 2
    assert exchange.requests[CREATE] == 0


# --- what is not ours, what is not right -----------------------------------------------------------------------

def test_malformed_messages_become_problems_and_the_stream_keeps_working(journal, manager, exchange, stream):
    i = resting(journal, manager, exchange, 0, "BTCUSDT", "sell", "0.002")
    good = order_item(exchange.orders[journal.intent(i.client_id).venue_order_id])
    for text in ["not json", "[1, 2]", json.dumps({"topic": "execution", "data": [{"execId": ""}]}),
                 json.dumps({"topic": "order", "data": [{**good, "orderStatus": "Done"}, good]}),
                 json.dumps({"topic": "position", "data": {"size": "1"}}), json.dumps({"surprise": True})]:
        exchange.push_raw(text)
    hints = collect(stream, lambda h: sum(isinstance(x, StreamProblem) for x in h) >= 6)
    problems = [h.what for h in hints if isinstance(h, StreamProblem)]
    assert [p.removeprefix("Bybit private stream (testnet): ") for p in problems] == [
        "a frame that is not JSON: 'not json'", "a frame that is not an object: [1, 2]",
        "execution message None entry 0: field 'side' is None, not non-empty text",
        "order message None entry 0: orderStatus 'Done' is not a Bybit order status",
        "position message None: data is dict, not a list",
        "a frame that is neither an answer nor a topic message: {'surprise': True}"]
    assert has(OrderHint, client_id=i.client_id, status="New")(hints)    # the good entry of a bad message counts
    assert stream.connected and stream.socket.gave_up is None and stream.builds == 1
    exchange.match()
    report = apply_hints(collect(stream, has(WalletHint)), manager)
    assert report.looked_up == {i.client_id: IntentState.FILLED} and report.problems == []
    settled_once(journal, exchange, i)


def test_hints_about_orders_that_are_not_ours_are_reported_and_never_applied(journal, manager, exchange, stream):
    exchange.outside_order("ETHUSDT", "Buy", "0.50")                       # from the web: no link id
    exchange.outside_order("BTCUSDT", "Sell", "0.002", link_id="web-1")
    hints = collect(stream, lambda h: sum(isinstance(x, WalletHint) for x in h) >= 2)
    stranger = {**order_item(exchange.orders[next(iter(exchange.orders))]), "orderLinkId": "tm7-3-ETHUSDT-0"}
    exchange.publish("order", [stranger])                                   # our prefix, not in our journal
    hints += collect(stream, has(OrderHint, client_id="tm7-3-ETHUSDT-0"))
    report = apply_hints(hints, manager)
    assert report.looked_up == {"tm7-3-ETHUSDT-0": None} and report.unknown == ["tm7-3-ETHUSDT-0"]
    assert len(report.foreign) == 6 and sum("(link id web-1)" in f for f in report.foreign) == 3
    assert set(report.positions) == {"ETHUSDT", "BTCUSDT"} and report.wallet is not None
    assert journal.fills() == [] and journal.intents() == []
    assert [p for p, _ in exchange.request_log if p != "/v5/private"] == []    # no REST request at all


def test_a_planned_intent_the_stream_mentions_is_never_sent_from_a_hint(journal, manager, exchange, stream):
    i = Intent.from_order(Order("tm0-0-BTCUSDT-0", "BTCUSDT", "buy", "0.002"), "run-1", BAR)
    journal.record_bar("run-1", BAR, [i])
    exchange.outside_order("ETHUSDT", "Buy", "0.10", fill=False)
    fake = {**order_item(exchange.orders[next(iter(exchange.orders))]), "orderLinkId": i.client_id, "symbol": "BTCUSDT"}
    exchange.publish("order", [fake])
    report = apply_hints(collect(stream, has(OrderHint, client_id=i.client_id)), manager)
    assert report.looked_up == {i.client_id: IntentState.PLANNED}
    assert report.problems == [f"{i.client_id}: the stream mentions an intent that was never sent; left to the order manager"]
    assert exchange.requests[CREATE] == 0 and exchange.accepted_creates(i.client_id) == 0


def test_a_hint_whose_lookup_fails_leaves_the_intent_open_never_lost_nor_resent(journal, manager, exchange, stream):
    i = resting(journal, manager, exchange, 0, "BTCUSDT", "buy", "0.002")
    exchange.match()
    hints = collect(stream, has(WalletHint))
    exchange.go_down(requests=1)                                  # the hint's lookup is lost on the way
    report = apply_hints(hints, manager)
    assert report.looked_up == {i.client_id: IntentState.ACKED} and report.recorded == []
    assert [p.split(": ", 1)[0] for p in report.problems] == [f"{i.client_id} (ACKED)"]
    assert "lookup failed" in report.problems[0] and "left to the order manager and the reconciler" in report.problems[0]
    report = apply_hints(hints, manager)                          # the next batch (or the reconciler) settles it
    assert report.looked_up == {i.client_id: IntentState.FILLED} and report.problems == []
    settled_once(journal, exchange, i)
