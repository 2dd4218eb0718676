"""Each injectable fault of the Bybit simulator, end to end through the journal, the order manager and the Bybit gateway.

Every scenario asserts what the exchange ended with (accepted creates per client id, positions) and what the
journal says (the intent's final state, its attempts, its fills): refusals before processing (rate limit, clock
skew) are waited out and resent with the same id; an intent is LOST only when no lookup could answer.
"""
from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from trade_matrix.execution.bybit import BybitGateway
from trade_matrix.execution.journal import Intent, IntentState
from trade_matrix.execution.manager import OrderManager, OrderManagerConfig
from trade_matrix.execution.orders import Order
from trade_matrix.testing.loopback import Fault

KEY, SECRET = "key", "secret"
BAR = pd.Timestamp("2024-03-01T00:00Z")
CREATE = "/v5/order/create"
# the clock, the exchange (BTCUSDT 60,000, ETHUSDT 3,000) and the journal: the shared fixtures of conftest.py


class Calls:
    "A hand-written recorder for the manager's on_rejected / on_lost callbacks."
    def __init__(self):
        self.lost, self.rejected = [], []


def manager(journal, exchange, clock, calls: Calls | None = None, slept: list | None = None) -> OrderManager:
    calls = calls or Calls()
    gateway = BybitGateway(KEY, SECRET, endpoint=exchange.url, timeout=5, clock=clock)
    return OrderManager(journal, gateway, OrderManagerConfig(lookup_pause_s=0), clock=clock,
                        sleep=(slept.append if slept is not None else lambda s: None),
                        on_rejected=lambda s, why: calls.rejected.append((s, why)),
                        on_lost=lambda s, why: calls.lost.append((s, why)))


def planned(journal, symbol: str, side: str, qty: str, k: int = 0) -> Intent:
    i = Intent.from_order(Order(f"tm0-{k}-{symbol}-0", symbol, side, qty), "run-1", BAR)
    journal.record_bar("run-1", BAR, [i])
    return i


def test_a_partial_ioc_fill_is_cancelled_and_completed_by_one_order_for_the_rest(journal, exchange, clock):
    # Arrange: the next BTCUSDT market order fills 40 % and Bybit cancels the rest
    exchange.partial_fill(fraction="0.4", symbol="BTCUSDT")
    i = planned(journal, "BTCUSDT", "buy", "0.010")
    # Act
    done = manager(journal, exchange, clock).send(i)
    # Assert
    rest = journal.intent("tm0-0-BTCUSDT-1")
    assert done.state is IntentState.CANCELLED
    assert journal.filled(i.client_id) == Decimal("0.004")
    assert (rest.state, rest.quantity, rest.sequence) == (IntentState.FILLED, Decimal("0.006"), 1)
    assert exchange.accepted_creates(i.client_id) == 1 == exchange.accepted_creates(rest.client_id)
    assert journal.positions() == {"BTCUSDT": Decimal("0.010")} == {"BTCUSDT": exchange.position("BTCUSDT")}
    assert exchange.fault_counts["partial_fill"] == 1


def test_a_5xx_after_the_order_was_made_is_settled_by_lookup_without_a_resend(journal, exchange, clock):
    exchange.server_error(CREATE, status=502, processed=True)
    i = planned(journal, "ETHUSDT", "sell", "0.5")
    done = manager(journal, exchange, clock).send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, 1)
    assert exchange.accepted_creates(i.client_id) == 1
    assert exchange.requests[CREATE] == 1
    assert journal.positions() == {"ETHUSDT": Decimal("-0.5")}


def test_a_5xx_before_the_order_was_made_is_resent_once_after_lookups_find_nothing(journal, exchange, clock):
    exchange.server_error(CREATE, status=503, processed=False)
    i = planned(journal, "ETHUSDT", "sell", "0.5")
    done = manager(journal, exchange, clock).send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, 2)
    assert exchange.accepted_creates(i.client_id) == 1
    assert exchange.requests[CREATE] == 2
    assert journal.positions() == {"ETHUSDT": Decimal("-0.5")}


@pytest.mark.parametrize("limited", [1, 2])
def test_a_rate_limited_create_is_resent_with_the_same_id_and_fills_once(journal, exchange, clock, limited):
    exchange.rate_limit(CREATE, times=limited, reset_after_ms=1000)
    i = planned(journal, "BTCUSDT", "buy", "0.004")
    done = manager(journal, exchange, clock).send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, limited + 1)
    assert exchange.accepted_creates(i.client_id) == 1
    assert exchange.fault_counts["rate_limit"] == limited
    assert journal.positions() == {"BTCUSDT": Decimal("0.004")}


def test_a_long_rate_limit_is_waited_out_until_its_reset_and_does_not_use_up_the_sends(journal, exchange, clock):
    # X-Bapi-Limit-Reset-Timestamp is a minute away: the manager waits (capped at max_wait_s) before each resend,
    # and refusals before processing do not count against max_sends
    calls, slept = Calls(), []
    exchange.rate_limit(CREATE, times=3, reset_after_ms=60_000)
    i = planned(journal, "BTCUSDT", "buy", "0.004")
    done = manager(journal, exchange, clock, calls, slept).send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, 4)
    assert slept == [10.0, 10.0, 10.0] and calls.lost == []
    assert exchange.accepted_creates(i.client_id) == 1
    assert journal.positions() == {"BTCUSDT": Decimal("0.004")}


def test_a_clock_skew_for_one_request_is_resent_by_the_gateway_with_the_same_id_and_fills_once(journal, exchange, clock):
    # 10002 was not processed: the gateway resyncs and sends the same request again within the one attempt
    exchange.set_clock_skew(60_000, requests=1)
    i = planned(journal, "ETHUSDT", "buy", "0.20")
    done = manager(journal, exchange, clock).send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, 1)
    assert exchange.accepted_creates(i.client_id) == 1
    assert exchange.fault_counts["clock_skew"] == 1


def test_a_lasting_clock_skew_is_resynced_from_server_time_and_the_order_fills_once(journal, exchange, clock):
    # the server's clock is a minute ahead for good: one 10002, the gateway measures the offset at /v5/market/time,
    # stamps every later request with it, and the same request goes again with the same id
    calls = Calls()
    exchange.set_clock_skew(60_000)
    i = planned(journal, "ETHUSDT", "buy", "0.20")
    om = manager(journal, exchange, clock, calls)
    done = om.send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, 1)
    assert om.gateway.offset_ms == 60_000
    assert calls.lost == [] and exchange.accepted_creates(i.client_id) == 1
    assert exchange.fault_counts["clock_skew"] == 1


def test_a_timestamp_refusal_that_resyncing_does_not_cure_expires_the_intent_unsent(journal, exchange, clock):
    # every create answers 10002 whatever the timestamp: resent up to max_not_processed, then EXPIRED, nothing created;
    # the reconciler's clock check is what stops live trading until the clock is fixed
    calls = Calls()
    exchange.inject(*[Fault.error(10002, "invalid request, please check your server timestamp or recv_window param",
                                  path=CREATE)] * 10)
    i = planned(journal, "ETHUSDT", "buy", "0.20")
    done = manager(journal, exchange, clock, calls).send(i)
    assert (done.state, done.attempts) == (IntentState.EXPIRED, 5)
    assert "refused 5 times before processing" in done.status_reason and "10002" in done.status_reason
    assert calls.lost == [] and exchange.accepted_creates(i.client_id) == 0
    assert exchange.pending_faults == 0 and exchange.requests["/v5/market/time"] == 5


def test_down_for_one_request_loses_only_the_create_which_is_resent_and_fills_once(journal, exchange, clock):
    exchange.go_down(requests=1)
    i = planned(journal, "BTCUSDT", "sell", "0.002")
    done = manager(journal, exchange, clock).send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, 2)
    assert exchange.accepted_creates(i.client_id) == 1
    assert journal.positions() == {"BTCUSDT": Decimal("-0.002")}


def test_down_through_a_lookup_then_back_resends_once_a_lookup_answers(journal, exchange, clock):
    # the create and the first lookup fail; the next lookups answer "no such order": resent with the same id
    exchange.go_down(requests=2)
    i = planned(journal, "BTCUSDT", "sell", "0.002")
    done = manager(journal, exchange, clock).send(i)
    assert (done.state, done.attempts) == (IntentState.FILLED, 2)
    assert exchange.accepted_creates(i.client_id) == 1


def test_down_through_every_lookup_makes_the_intent_lost_and_stops_the_symbol(journal, exchange, clock):
    # the simulated clock does not move while the manager retries, so no lookup can answer: it cannot tell
    calls = Calls()
    exchange.go_down(seconds=30)
    i = planned(journal, "BTCUSDT", "sell", "0.002")
    done = manager(journal, exchange, clock, calls).send(i)
    assert (done.state, done.attempts) == (IntentState.LOST, 1)
    assert "3 of 3 lookups failed" in done.status_reason
    assert [s for s, _ in calls.lost] == ["BTCUSDT"]
    assert exchange.accepted_creates(i.client_id) == 0 and exchange.fault_counts["down"] == 4


def test_an_outside_trade_leaves_the_journal_and_the_exchange_apart_and_nothing_is_sent_for_it(journal, exchange, clock):
    # Arrange: one of our orders, then someone buys ETH on the account from the web
    i = planned(journal, "BTCUSDT", "buy", "0.004")
    om = manager(journal, exchange, clock)
    assert om.send(i).state is IntentState.FILLED
    exchange.outside_order("ETHUSDT", "Buy", "0.50")
    # Act: the manager settles whatever is open
    settled = om.recover()
    # Assert
    venue = {s: exchange.position(s) for s in ("BTCUSDT", "ETHUSDT") if exchange.position(s)}
    assert venue == {"BTCUSDT": Decimal("0.004"), "ETHUSDT": Decimal("0.50")}
    assert journal.positions() == {"BTCUSDT": Decimal("0.004")} != venue
    assert settled == [] and [x.client_id for x in journal.intents()] == [i.client_id]
    # and the reconciler catches it: an outside execution and the ETH difference, the venue's numbers adopted
    from trade_matrix.execution.reconcile import reconcile
    report = reconcile(journal, om.gateway, "run-1", clock=clock)
    assert not report.ok and len(report.outside_executions) == 1
    assert report.adopted == venue and any(p.startswith("ETHUSDT: the venue holds 0.50") for p in report.problems)
    assert exchange.requests[CREATE] == 1 and exchange.accepted_creates(i.client_id) == 1
    assert exchange.fault_counts["outside_order"] == 1


def test_an_ip_ban_stops_all_http_for_ten_minutes_and_the_intent_expires_unsent(journal, exchange, clock):
    # HTTP 403 is Bybit's IP limit: refused before processing, and no request may leave for ten minutes
    exchange.inject(Fault.http_error(403, path=CREATE))
    i = planned(journal, "BTCUSDT", "buy", "0.004")
    om = manager(journal, exchange, clock)
    done = om.send(i)
    assert done.state is IntentState.EXPIRED and "HTTP 403" in done.status_reason
    assert exchange.requests[CREATE] == 1 and exchange.accepted_creates(i.client_id) == 0
    assert om.gateway.blocked_until == clock() + pd.Timedelta("10min")
    clock.advance("10min")
    assert om.gateway.positions() == {}                 # the ban is over: HTTP again
