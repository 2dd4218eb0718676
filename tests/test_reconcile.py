"""Reconciliation against the loopback Bybit exchange: a quiet account agrees, a fill the journal missed is
recovered once, and a query that fails is an error, never a flat account; an outside trade trips the breaker and
sends nothing, an outside open order refuses the start, a symbol not trading is named, executions older than
Bybit's 7-day window are still read, and a hedge-mode account is refused."""
from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from trade_matrix.core import ConfigError, TemporaryExchangeError
from trade_matrix.execution.journal import Intent, IntentState
from trade_matrix.execution.manager import OrderManager, OrderManagerConfig
from trade_matrix.execution.orders import Order
from trade_matrix.execution.reconcile import Reconciler, reconcile
from trade_matrix.risk.breaker import BreakerState, CircuitBreaker

KEY, SECRET = "key", "secret"
BAR = pd.Timestamp("2024-03-01T00:00Z")
# the clock, the exchange (BTCUSDT 60,000, ETHUSDT 3,000), the journal and the gateway: the shared fixtures of conftest.py


def journaled(journal, k, symbol, side, qty):
    i = Intent.from_order(Order(f"tm0-{k}-{symbol}-0", symbol, side, qty), "run-1", BAR)
    journal.record_bar("run-1", BAR, [i])
    return i


def test_a_quiet_account_agrees_with_the_journal(journal, gateway, exchange, clock):
    om = OrderManager(journal, gateway, OrderManagerConfig(lookup_pause_s=0), clock=clock, sleep=lambda s: None)
    om.send(journaled(journal, 0, "BTCUSDT", "buy", "0.004"))
    om.send(journaled(journal, 1, "ETHUSDT", "sell", "0.5"))
    report = reconcile(journal, gateway, "run-1", clock=clock)
    assert report.ok, report.problems
    assert report.adopted == {"BTCUSDT": Decimal("0.004"), "ETHUSDT": Decimal("-0.5")} == journal.positions()


def test_a_fill_the_journal_missed_is_recovered_once_and_sends_nothing(journal, gateway, exchange, clock):
    # Arrange: the order reached the exchange and filled; the process died before recording anything after SENDING
    i = journaled(journal, 0, "BTCUSDT", "buy", "0.004")
    journal.transition(i.client_id, "SENDING")
    exchange.drop_response("/v5/order/create")
    with pytest.raises(TemporaryExchangeError):
        gateway.place(journal.intent(i.client_id))
    # Act
    first = reconcile(journal, gateway, "run-1", clock=clock)
    second = reconcile(journal, gateway, "run-1", since=first.cursor, clock=clock)
    # Assert: the fill is in the journal once; the positions agree; the reconciler sent nothing
    assert len(first.recovered_fills) == 1 and second.recovered_fills == []
    assert first.ok and journal.positions() == {"BTCUSDT": Decimal("0.004")}
    assert exchange.accepted_creates(i.client_id) == 1
    assert journal.intent(i.client_id).state is IntentState.SENDING     # the order manager settles its state


def test_a_failed_position_query_is_an_error_never_flat(journal, gateway, exchange, clock):
    exchange.drop_request("/v5/position/list")
    with pytest.raises(TemporaryExchangeError, match="positions"):
        reconcile(journal, gateway, "run-1", clock=clock)


def manager(journal, gateway, clock) -> OrderManager:
    return OrderManager(journal, gateway, OrderManagerConfig(lookup_pause_s=0), clock=clock, sleep=lambda s: None)


def test_an_outside_trade_trips_the_breaker_adopts_the_venue_and_sends_no_order(journal, gateway, exchange, clock):
    # Arrange: our order filled, then someone sold on the account from the web
    manager(journal, gateway, clock).send(journaled(journal, 0, "BTCUSDT", "buy", "0.004"))
    exchange.outside_order("BTCUSDT", "Sell", "0.001")
    breaker = CircuitBreaker(clock=clock)
    reconciler = Reconciler(journal, gateway, "run-1", ("BTCUSDT",), clock=clock,
                            on_problem=lambda report, why: breaker.trip(f"reconciliation ({why}): {report.problems[0]}"))
    creates = exchange.requests["/v5/order/create"]
    # Act
    report = reconciler.run_if_due()
    # Assert: tripped, the venue's position adopted, the journal untouched, no order sent
    assert breaker.state is BreakerState.OPEN and not report.ok
    assert report.adopted == {"BTCUSDT": Decimal("0.003")} and journal.positions() == {"BTCUSDT": Decimal("0.004")}
    assert len(report.outside_executions) == 1 and exchange.requests["/v5/order/create"] == creates


def test_an_outside_open_order_means_the_account_is_not_dedicated(journal, gateway, exchange, clock):
    exchange.outside_order("ETHUSDT", "Buy", "0.1", link_id="web-1", fill=False)
    report = reconcile(journal, gateway, "run-1", clock=clock)
    assert not report.dedicated and not report.ok
    assert "not this trader's: the account is not dedicated" in report.problems[0]


def test_a_symbol_not_trading_is_named_and_an_order_for_it_is_rejected_not_lost(journal, gateway, exchange, clock):
    exchange.set_status("ETHUSDT", "Settling")
    report = reconcile(journal, gateway, "run-1", clock=clock, symbols=("BTCUSDT", "ETHUSDT"))
    assert report.not_trading == ["ETHUSDT"] and "ETHUSDT is 'Settling' on Bybit, not Trading" in report.problems[0]
    with pytest.raises(ConfigError, match="Settling"):
        gateway.instruments(["ETHUSDT"])
    done = manager(journal, gateway, clock).send(journaled(journal, 0, "ETHUSDT", "buy", "0.1"))
    assert done.state is IntentState.REJECTED and exchange.accepted_creates(done.client_id) == 0


def test_an_order_in_flight_is_looked_up_listed_unsettled_and_positions_wait_for_quiet(journal, gateway, exchange, clock):
    # Arrange: the create went out and the process died; the order rests open at the exchange (no matching)
    i = journaled(journal, 0, "BTCUSDT", "buy", "0.004")
    journal.transition(i.client_id, "SENDING")
    exchange.matching = False
    with pytest.raises(TemporaryExchangeError):
        exchange.drop_response("/v5/order/create")
        gateway.place(journal.intent(i.client_id))
    # Act / Assert: live at the venue: unsettled, not quiet, positions not compared
    live = reconcile(journal, gateway, "run-1", clock=clock)
    assert (live.ok, live.quiet, live.unsettled) == (True, False, [(i.client_id, "SENDING", "ACKED")])
    exchange.match()                                            # it fills
    done = reconcile(journal, gateway, "run-1", since=live.cursor, clock=clock)
    assert (done.ok, done.quiet, done.unsettled) == (True, True, [(i.client_id, "SENDING", "FILLED")])
    assert manager(journal, gateway, clock).resolve(i).state is IntentState.FILLED      # the order manager settles it
    assert reconcile(journal, gateway, "run-1", since=done.cursor, clock=clock).unsettled == []
    assert exchange.accepted_creates(i.client_id) == 1


def test_executions_older_than_bybits_seven_day_window_are_still_read(journal, gateway, exchange, clock):
    # Arrange: a fill nine days ago that the journal never recorded (Bybit answers at most 7 days per request)
    i = journaled(journal, 0, "BTCUSDT", "buy", "0.004")
    journal.transition(i.client_id, "SENDING")
    exchange.drop_response("/v5/order/create")
    with pytest.raises(TemporaryExchangeError):
        gateway.place(journal.intent(i.client_id))
    journal.transition(i.client_id, "UNKNOWN", "ambiguous: test")
    journal.transition(i.client_id, "LOST", "test: the lookups failed back then")
    clock.advance("9D")
    # Act
    report = reconcile(journal, gateway, "run-1", clock=clock)
    # Assert
    assert len(report.recovered_fills) == 1 and report.ok and journal.positions() == {"BTCUSDT": Decimal("0.004")}
    assert exchange.requests["/v5/execution/list"] >= 2                 # two 7-day windows


def test_a_hedge_mode_account_is_refused_with_what_to_change(gateway, exchange):
    answer = gateway.http.get_positions(category="linear", settleCoin="USDT")
    answer["result"]["list"] = [{"symbol": "BTCUSDT", "side": "Buy", "size": "0.004", "positionIdx": 1}]
    gateway.http.get_positions = lambda **params: answer
    with pytest.raises(ConfigError, match="hedge mode.*one-way"):
        gateway.positions()
