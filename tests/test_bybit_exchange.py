"""The loopback Bybit exchange (`testing.bybit_exchange`) against pybit's HTTP client and plain signed requests:
fills identical to the paper exchange, each order rule's Bybit code, idempotent `orderLinkId`, execution paging,
and the two faults that lose an answer."""
from __future__ import annotations

import json
import time
from decimal import Decimal

import pandas as pd
import pytest
import requests
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from trade_matrix.core import ManualClock
from trade_matrix.execution.orders import Order, OrderSide
from trade_matrix.execution.paper import PaperExchange
from trade_matrix.testing.bybit import bybit_signature
from trade_matrix.testing.bybit_exchange import BybitExchange

KEY, SECRET = "test-key", "test-secret"
START = pd.Timestamp("2024-03-01 08:00", tz="UTC")


@pytest.fixture
def clock():
    return ManualClock(START)


@pytest.fixture
def exchange(clock):
    with BybitExchange(clock, api_keys={KEY: SECRET}, initial_cash=Decimal("100000")) as ex:
        yield ex


def session(ex: BybitExchange, secret: str = SECRET) -> HTTP:
    s = HTTP(testnet=True, api_key=KEY, api_secret=secret, timeout=5)
    s.endpoint = ex.url
    return s


def market(http: HTTP, symbol: str, side: str, qty: str, link: str | None = None, **extra) -> dict:
    return http.place_order(category="linear", symbol=symbol, side=side, orderType="Market", qty=qty,
                            orderLinkId=link, **extra)


def code_of(call) -> int:
    try:
        call()
    except InvalidRequestError as e:
        return e.status_code
    return 0


def signed_post(ex: BybitExchange, path: str, body: dict, secret: str = SECRET) -> dict:
    payload, ts, recv = json.dumps(body), str(int(time.time() * 1000)), "5000"
    headers = {"X-BAPI-API-KEY": KEY, "X-BAPI-TIMESTAMP": ts, "X-BAPI-RECV-WINDOW": recv, "X-BAPI-SIGN-TYPE": "2",
               "X-BAPI-SIGN": bybit_signature(secret, ts, KEY, recv, payload), "Content-Type": "application/json"}
    return requests.post(ex.url + path, data=payload, headers=headers, timeout=5).json()


# --- fills ---------------------------------------------------------------------------------------------------

def test_market_orders_fill_with_the_paper_exchanges_decimal_prices_fees_cash_and_positions(exchange, clock):
    # Arrange: the same orders at the same prices for both venues
    steps = [("BTCUSDT", "61234.5", "Buy", "0.015"), ("BTCUSDT", "61990.1", "Sell", "0.005"),
             ("ETHUSDT", "3333.33", "Sell", "0.37"), ("BTCUSDT", "60500", "Sell", "0.020"),   # flips short
             ("ETHUSDT", "3290.01", "Buy", "0.37")]
    paper, http = PaperExchange(initial_cash=Decimal("100000")), session(exchange)
    # Act
    for k, (symbol, price, side, qty) in enumerate(steps):
        clock.advance("1h")
        exchange.set_price(symbol, price)
        market(http, symbol, side, qty, f"step-{k}")
        paper.submit(Order(f"p{k}", symbol, OrderSide(side.lower()), Decimal(qty)))
        paper_fill = paper.on_bar_open(symbol, START, Decimal(price))[0]
        execution = http.get_executions(category="linear", orderLinkId=f"step-{k}")["result"]["list"]
        # Assert: each execution exactly as the paper exchange's fill
        assert [(Decimal(e["execPrice"]), Decimal(e["execFee"]), Decimal(e["execQty"])) for e in execution] == \
               [(paper_fill.price, paper_fill.fee, paper_fill.quantity)]
    wallet = http.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]
    assert Decimal(wallet["totalEquity"]) == paper.equity() == exchange.equity()
    assert exchange.ledger.cash == paper.cash and exchange.ledger.fees_paid == paper.fees_paid
    positions = {p["symbol"]: p for p in http.get_positions(category="linear", settleCoin="USDT")["result"]["list"]}
    assert {s: (p["side"], Decimal(p["size"])) for s, p in positions.items()} == {"BTCUSDT": ("Sell", Decimal("0.010"))}
    assert Decimal(positions["BTCUSDT"]["avgPrice"]) == paper.fills[3].price        # the flip restarts the entry price


def test_wallet_balance_is_equity_less_unrealised_pnl_and_available_is_equity_less_margin(exchange):
    http = session(exchange)
    exchange.set_price("BTCUSDT", "60000")
    market(http, "BTCUSDT", "Buy", "0.100", "w-1")
    fill = exchange.executions[0]
    exchange.set_price("BTCUSDT", "61000")
    account = http.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]
    upnl = Decimal("0.100") * (Decimal("61000") - fill.price)
    assert Decimal(account["totalWalletBalance"]) == Decimal("100000") - fill.fee
    assert Decimal(account["totalEquity"]) == Decimal("100000") - fill.fee + upnl
    assert Decimal(account["totalAvailableBalance"]) == Decimal(account["totalEquity"]) - Decimal("6100") / 10
    assert account["coin"][0]["coin"] == "USDT" and Decimal(account["coin"][0]["unrealisedPnl"]) == upnl


def test_price_comes_from_the_loaded_kline_bar_at_the_clock(clock):
    bars = pd.DataFrame({"open": [100.0, 101.25], "high": [102.0, 103.0], "low": [99.0, 100.0],
                         "close": [101.0, 102.0], "volume": [5.0, 6.0]},
                        index=pd.date_range(START - pd.Timedelta(hours=1), periods=2, freq="h"))
    with BybitExchange(clock, api_keys={KEY: SECRET}) as ex:
        ex.load_klines("linear", "SOLUSDT", bars)
        market(session(ex), "SOLUSDT", "Buy", "1.0", "k-1")
        paper = PaperExchange()
        assert ex.executions[0].price == paper.fill_price("SOLUSDT", Decimal("101.25"), OrderSide.BUY)


# --- rules -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order, code", [
    (dict(orderLinkId="has space"), 10001),
    (dict(orderLinkId="x" * 37), 10001),
    (dict(orderLinkId="dot.ted"), 10001),
    (dict(qty="0.0015"), 10001),                   # off the 0.001 qtyStep
    (dict(qty="0"), 10001),
    (dict(qty="abc"), 10001),
    (dict(symbol="NOPEUSDT"), 10001),
    (dict(orderType="Limit", price="60000"), 10001),
    (dict(positionIdx=1), 10001),                  # hedge-mode index in one-way mode
    (dict(category="spot"), 10001),
    (dict(qty="0.001", symbol="DOGEUSDT"), 10001),  # DOGE's qtyStep is 1
    (dict(symbol="DOGEUSDT", qty="10"), 110094),    # 10 x 0.1 = 1 USDT < 5 USDT
    (dict(reduceOnly=True), 110017),                # flat: nothing to reduce
    (dict(qty="100"), 110007),                      # 6 000 000 USDT at 10x > 100 000
])
def test_each_rule_answers_with_bybits_code_and_creates_nothing(exchange, order, code):
    exchange.set_price("BTCUSDT", "60000")
    exchange.set_price("DOGEUSDT", "0.1")
    params = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "0.010",
              "orderLinkId": "rule-1", **order}
    assert code_of(lambda: session(exchange).place_order(**params)) == code
    assert exchange.orders == {} and exchange.executions == [] and exchange.accepted_creates("rule-1") == 0


def test_reduce_only_in_the_direction_of_the_position_is_refused_and_a_larger_one_only_closes(exchange):
    http = session(exchange)
    exchange.set_price("ETHUSDT", "3000")
    market(http, "ETHUSDT", "Buy", "0.50", "long")
    assert code_of(lambda: market(http, "ETHUSDT", "Buy", "0.10", "more", reduceOnly=True)) == 110017
    market(http, "ETHUSDT", "Sell", "2.00", "close", reduceOnly=True)
    assert exchange.position("ETHUSDT") == 0 and exchange.executions[-1].qty == Decimal("0.50")


def test_a_repeated_order_link_id_is_110072_and_creates_nothing_more(exchange):
    http = session(exchange)
    exchange.set_price("BTCUSDT", "60000")
    first = market(http, "BTCUSDT", "Buy", "0.010", "once-only")
    assert code_of(lambda: market(http, "BTCUSDT", "Buy", "0.010", "once-only")) == 110072
    assert code_of(lambda: market(http, "BTCUSDT", "Sell", "0.020", "once-only")) == 110072
    assert exchange.accepted_creates("once-only") == 1
    assert len(exchange.orders) == 1 and len(exchange.executions) == 1
    assert exchange.position("BTCUSDT") == Decimal("0.010")
    history = http.get_order_history(category="linear", orderLinkId="once-only")["result"]["list"]
    assert [o["orderId"] for o in history] == [first["result"]["orderId"]]


def test_a_rejected_create_does_not_use_up_its_order_link_id(exchange):
    http = session(exchange)
    exchange.set_price("BTCUSDT", "60000")
    assert code_of(lambda: market(http, "BTCUSDT", "Buy", "0.0105", "retry-me")) == 10001
    market(http, "BTCUSDT", "Buy", "0.010", "retry-me")
    assert exchange.accepted_creates("retry-me") == 1


def test_a_bad_signature_or_unknown_key_is_refused_before_any_order(exchange):
    exchange.set_price("BTCUSDT", "60000")
    body = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "0.010",
            "orderLinkId": "signed-1"}
    assert signed_post(exchange, "/v5/order/create", body, secret="wrong")["retCode"] == 10004
    assert exchange.orders == {}
    answer = signed_post(exchange, "/v5/order/create", body)
    assert (answer["retCode"], answer["retMsg"], answer["result"]["orderLinkId"]) == (0, "OK", "signed-1")
    assert set(answer) == {"retCode", "retMsg", "result", "retExtInfo", "time"}


# --- reading ---------------------------------------------------------------------------------------------------

def test_executions_paginate_newest_first_without_gaps_or_repeats(exchange):
    http = session(exchange)
    exchange.set_price("SOLUSDT", "150")
    for k in range(7):
        market(http, "SOLUSDT", "Buy" if k % 2 == 0 else "Sell", "1.0", f"page-{k}")
    seen, cursor, pages = [], None, 0
    while True:
        result = http.get_executions(category="linear", symbol="SOLUSDT", limit=3, cursor=cursor)["result"]
        seen += [e["orderLinkId"] for e in result["list"]]
        pages += 1
        if pages == 1:   # an execution arriving mid-paging does not shift the pages still to read
            market(http, "SOLUSDT", "Buy", "1.0", "late")
        cursor = result["nextPageCursor"]
        if not cursor:
            break
    assert pages == 3 and seen == [f"page-{k}" for k in range(6, -1, -1)]
    ids = [e["execId"] for e in http.get_executions(category="linear", symbol="SOLUSDT", limit=100)["result"]["list"]]
    assert len(ids) == len(set(ids)) == 8
    assert code_of(lambda: http.get_executions(category="linear", symbol="SOLUSDT", limit=101)) == 10001


def test_realtime_lists_open_orders_and_any_order_by_link_id_and_cancel_takes_one_off(exchange):
    http = session(exchange)
    exchange.set_price("BTCUSDT", "60000")
    exchange.matching = False
    market(http, "BTCUSDT", "Buy", "0.010", "rest-1")
    market(http, "BTCUSDT", "Buy", "0.010", "rest-2")
    assert [o["orderLinkId"] for o in http.get_open_orders(category="linear", symbol="BTCUSDT")["result"]["list"]] == \
           ["rest-2", "rest-1"]
    http.cancel_order(category="linear", symbol="BTCUSDT", orderLinkId="rest-1")
    assert exchange.match() == 1
    assert http.get_open_orders(category="linear", symbol="BTCUSDT")["result"]["list"] == []
    by_id = http.get_open_orders(category="linear", orderLinkId="rest-1")["result"]["list"]
    assert [(o["orderStatus"], o["cumExecQty"]) for o in by_id] == [("Cancelled", "0")]
    assert code_of(lambda: http.cancel_order(category="linear", symbol="BTCUSDT", orderLinkId="rest-2")) == 110001
    assert code_of(lambda: http.cancel_order(category="linear", symbol="BTCUSDT", orderLinkId="never")) == 110001


def test_instruments_info_is_public_and_carries_the_instrument_specs(exchange):
    answer = requests.get(exchange.url + "/v5/market/instruments-info", params={"category": "linear"}, timeout=5).json()
    rows = {r["symbol"]: r for r in answer["result"]["list"]}
    assert answer["retCode"] == 0 and rows["ETHUSDT"]["status"] == "Trading"
    assert rows["ETHUSDT"]["lotSizeFilter"] | {"maxOrderQty": "", "postOnlyMaxOrderQty": ""} == {
        "qtyStep": "0.01", "minOrderQty": "0.01", "maxMktOrderQty": "10000.00", "minNotionalValue": "5",
        "maxOrderQty": "", "postOnlyMaxOrderQty": ""}
    assert rows["ETHUSDT"]["priceFilter"]["tickSize"] == "0.01"
    one = session(exchange).get_instruments_info(category="linear", symbol="DOGEUSDT")["result"]["list"]
    assert [r["lotSizeFilter"]["qtyStep"] for r in one] == ["1"]


# --- faults ----------------------------------------------------------------------------------------------------

def test_a_dropped_response_leaves_exactly_one_order_that_a_lookup_by_link_id_finds(exchange):
    # Arrange
    http = session(exchange)
    exchange.set_price("BTCUSDT", "60000")
    exchange.drop_response("/v5/order/create")
    # Act: the client sees a connection error; the order exists
    with pytest.raises(requests.exceptions.ConnectionError):
        market(http, "BTCUSDT", "Buy", "0.010", "lost-answer")
    realtime = http.get_open_orders(category="linear", orderLinkId="lost-answer")["result"]["list"]
    history = http.get_order_history(category="linear", orderLinkId="lost-answer")["result"]["list"]
    resend = code_of(lambda: market(http, "BTCUSDT", "Buy", "0.010", "lost-answer"))
    # Assert
    assert [(o["orderLinkId"], o["orderStatus"], o["cumExecQty"]) for o in realtime] == [("lost-answer", "Filled", "0.010")]
    assert [o["orderId"] for o in history] == [o["orderId"] for o in realtime]
    assert resend == 110072 and exchange.accepted_creates("lost-answer") == 1
    assert exchange.position("BTCUSDT") == Decimal("0.010") and len(exchange.executions) == 1


def test_a_dropped_request_creates_nothing_and_the_resend_creates_once(exchange):
    http = session(exchange)
    exchange.set_price("BTCUSDT", "60000")
    exchange.drop_request("/v5/order/create")
    with pytest.raises(requests.exceptions.ConnectionError):
        market(http, "BTCUSDT", "Buy", "0.010", "never-arrived")
    assert http.get_order_history(category="linear", orderLinkId="never-arrived")["result"]["list"] == []
    assert exchange.accepted_creates("never-arrived") == 0
    market(http, "BTCUSDT", "Buy", "0.010", "never-arrived")
    assert exchange.accepted_creates("never-arrived") == 1 and exchange.position("BTCUSDT") == Decimal("0.010")


def test_faults_are_served_per_path_in_order(exchange):
    http = session(exchange)
    exchange.set_price("BTCUSDT", "60000")
    exchange.drop_request("/v5/order/create", times=2)
    http.get_positions(category="linear", symbol="BTCUSDT")                 # another path: untouched
    for _ in range(2):
        with pytest.raises(requests.exceptions.ConnectionError):
            market(http, "BTCUSDT", "Buy", "0.010", "third-time")
    market(http, "BTCUSDT", "Buy", "0.010", "third-time")
    assert exchange.accepted_creates("third-time") == 1
