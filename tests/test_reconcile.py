"""Reconciliation against the loopback Bybit exchange: a quiet account agrees, a fill the journal missed is
recovered once, and a query that fails is an error, never a flat account."""
from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from trade_matrix.core import ManualClock, TemporaryExchangeError
from trade_matrix.execution.bybit import BybitGateway
from trade_matrix.execution.journal import Intent, IntentState, open_journal
from trade_matrix.execution.manager import OrderManager, OrderManagerConfig
from trade_matrix.execution.orders import Order
from trade_matrix.execution.reconcile import reconcile
from trade_matrix.testing.bybit_exchange import BybitExchange

KEY, SECRET = "key", "secret"
BAR = pd.Timestamp("2024-03-01T00:00Z")


@pytest.fixture
def clock():
    return ManualClock(BAR + pd.Timedelta("4h1min"))


@pytest.fixture
def exchange(clock):
    with BybitExchange(clock, api_keys={KEY: SECRET}, initial_cash=Decimal("100000")) as ex:
        ex.set_price("BTCUSDT", "60000")
        ex.set_price("ETHUSDT", "3000")
        yield ex


def journaled(journal, k, symbol, side, qty):
    i = Intent.from_order(Order(f"tm0-{k}-{symbol}-0", symbol, side, qty), "run-1", BAR)
    journal.record_bar("run-1", BAR, [i])
    return i


def test_a_quiet_account_agrees_with_the_journal(tmp_path, exchange, clock):
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    journal.begin_run("run-1", 0, "testnet")
    gateway = BybitGateway(KEY, SECRET, endpoint=exchange.url, timeout=5)
    om = OrderManager(journal, gateway, OrderManagerConfig(lookup_pause_s=0), clock=clock, sleep=lambda s: None)
    om.send(journaled(journal, 0, "BTCUSDT", "buy", "0.004"))
    om.send(journaled(journal, 1, "ETHUSDT", "sell", "0.5"))
    report = reconcile(journal, gateway, "run-1", clock=clock)
    assert report.ok, report.problems
    assert report.adopted == {"BTCUSDT": Decimal("0.004"), "ETHUSDT": Decimal("-0.5")} == journal.positions()


def test_a_fill_the_journal_missed_is_recovered_once_and_sends_nothing(tmp_path, exchange, clock):
    # Arrange: the order reached the exchange and filled; the process died before recording anything after SENDING
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    journal.begin_run("run-1", 0, "testnet")
    gateway = BybitGateway(KEY, SECRET, endpoint=exchange.url, timeout=5)
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


def test_a_failed_position_query_is_an_error_never_flat(tmp_path, exchange, clock):
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    journal.begin_run("run-1", 0, "testnet")
    gateway = BybitGateway(KEY, SECRET, endpoint=exchange.url, timeout=5)
    exchange.drop_request("/v5/position/list")
    with pytest.raises(TemporaryExchangeError, match="positions"):
        reconcile(journal, gateway, "run-1", clock=clock)
