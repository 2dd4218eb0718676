"""The order manager, the journal and the Bybit gateway against the loopback exchange, end to end.

The same intents through the paper exchange and through Bybit (simulated) end with the same Decimal positions,
cash and fees; a restart with an intent left SENDING finds the order instead of sending it again; faults that
lose an answer or a request leave exactly one accepted create per client id.
"""
from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from trade_matrix.core import TemporaryExchangeError
from trade_matrix.execution.bybit import BybitGateway
from trade_matrix.execution.journal import Intent, IntentState, open_journal
from trade_matrix.execution.manager import OrderManager, OrderManagerConfig
from trade_matrix.execution.orders import Order, OrderSide
from trade_matrix.execution.paper import PaperExchange

KEY, SECRET = "key", "secret"
BAR = pd.Timestamp("2024-03-01T00:00Z")
# the clock and the exchange: the shared fixtures of conftest.py
STEPS = [("BTCUSDT", "buy", "0.010", "61234.5"), ("ETHUSDT", "sell", "0.37", "3333.33"),
         ("BTCUSDT", "sell", "0.015", "60500"), ("ETHUSDT", "buy", "0.37", "3290.01")]


def manager(journal, exchange, clock):
    gateway = BybitGateway(KEY, SECRET, endpoint=exchange.url, timeout=5, clock=clock)
    return OrderManager(journal, gateway, OrderManagerConfig(lookup_pause_s=0), clock=clock, sleep=lambda s: None)


def intent(k: int, symbol: str, side: str, qty: str, run: str = "run-1") -> Intent:
    return Intent.from_order(Order(f"tm0-{k}-{symbol}-0", symbol, side, qty), run, BAR)


def test_paper_and_simulated_bybit_end_with_the_same_decimal_positions_cash_and_fees(tmp_path, exchange, clock):
    # Arrange
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    journal.begin_run("run-1", 0, "testnet")
    om, paper = manager(journal, exchange, clock), PaperExchange(initial_cash=Decimal("100000"))
    # Act: each intent journaled, sent through the manager; the paper exchange fills the same order at the same price
    for k, (symbol, side, qty, price) in enumerate(STEPS):
        exchange.set_price(symbol, price)
        i = intent(k, symbol, side, qty)
        journal.record_bar("run-1", BAR, [i])
        assert om.send(i).state is IntentState.FILLED
        paper.submit(Order(f"p{k}", symbol, OrderSide(side), Decimal(qty)))
        paper.on_bar_open(symbol, BAR, Decimal(price))
    # Assert
    fees = sum((f.fee for _, _, f in journal.fills()), Decimal(0))
    assert journal.positions("run-1") == {s: q for s, q in paper.positions.items() if q}
    assert fees == paper.fees_paid
    assert exchange.ledger.cash == paper.cash
    assert all(exchange.accepted_creates(f"tm0-{k}-{s}-0") == 1 for k, (s, *_) in enumerate(STEPS))


def test_a_restart_with_an_intent_left_sending_finds_it_instead_of_sending_again(tmp_path, exchange, clock):
    # Arrange: the process journaled the intent, marked it SENDING, the exchange took it, then the process died
    url = f"duckdb:///{tmp_path}/j.duckdb"
    journal = open_journal(url)
    journal.begin_run("run-1", 0, "testnet")
    exchange.set_price("BTCUSDT", "60000")
    i = intent(0, "BTCUSDT", "buy", "0.004")
    journal.record_bar("run-1", BAR, [i])
    journal.transition(i.client_id, "SENDING")
    exchange.drop_response("/v5/order/create")
    gateway = BybitGateway(KEY, SECRET, endpoint=exchange.url, timeout=5, clock=clock)
    with pytest.raises(TemporaryExchangeError):
        gateway.place(journal.intent(i.client_id))            # the answer never came back
    journal.close()
    # Act: a new process on the same journal
    reopened = open_journal(url)
    settled = manager(reopened, exchange, clock).recover()
    # Assert
    assert [(x.client_id, x.state) for x in settled] == [(i.client_id, IntentState.FILLED)]
    assert exchange.accepted_creates(i.client_id) == 1
    assert reopened.positions() == {"BTCUSDT": Decimal("0.004")} == {"BTCUSDT": exchange.position("BTCUSDT")}


@pytest.mark.parametrize("fault", ["drop_response", "drop_request"])
def test_a_lost_answer_or_request_leaves_exactly_one_order(tmp_path, exchange, clock, fault):
    journal = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    journal.begin_run("run-1", 0, "testnet")
    exchange.set_price("ETHUSDT", "3000")
    getattr(exchange, fault)("/v5/order/create")
    i = intent(0, "ETHUSDT", "sell", "0.5")
    journal.record_bar("run-1", BAR, [i])
    done = manager(journal, exchange, clock).send(i)
    assert done.state is IntentState.FILLED
    assert exchange.accepted_creates(i.client_id) == 1
    assert done.attempts == (1 if fault == "drop_response" else 2)
    assert journal.positions() == {"ETHUSDT": Decimal("-0.5")}
