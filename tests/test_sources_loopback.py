"""Sources against loopback exchanges: paging, the forming bar, retries, refusals and the live stream.

Every test talks to a real HTTP/WebSocket server on 127.0.0.1 (trade_matrix.testing) through the real
clients (pybit, requests); nothing is mocked. Clocks are injected and retry sleeps recorded, so the tests are
deterministic and fast.
"""
import threading
import time

import pandas as pd
import pybit.unified_trading
import pytest

from trade_matrix.core import (BybitConfig, ConfigError, ExchangeError, FatalError, SeriesKind,
                               TemporaryExchangeError, to_ms)
from trade_matrix.data.market import DataCatalog, read_data_file
from trade_matrix.core import ManualClock
from trade_matrix.testing.bybit import BybitLoopback
from trade_matrix.testing.deribit import DeribitLoopback
from trade_matrix.testing.loopback import Fault
from trade_matrix.adapters.bybit import BybitSource
from trade_matrix.adapters.deribit import DERIBIT_VOLATILITY_PATH, DeribitSource

KLINE = "/v5/market/kline"
FUNDING = "/v5/market/funding/history"
KEY, SECRET = "test-key", "test-secret"
HOUR_MS = 3_600_000


class Sleeps(list):
    "A sleep function that records the delays instead of waiting."
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture(scope="module")
def btc_1h():
    return read_data_file(DataCatalog().find(SeriesKind.OHLCV, "BTCUSDT", "1h")).frame.loc["2023-06-01":"2023-12-31"]


@pytest.fixture(scope="module")
def btc_funding():
    return read_data_file(DataCatalog().find(SeriesKind.FUNDING, "BTCUSDT", "8h")).frame.loc["2023-01-01":"2024-01-31"]


@pytest.fixture(scope="module")
def btc_dvol():
    return read_data_file(DataCatalog().find(SeriesKind.DVOL, "BTC", "1d")).frame


@pytest.fixture
def clock():
    return ManualClock("2023-12-31T23:30Z")  # half-way through the last bar


@pytest.fixture
def bybit(btc_1h, clock):
    with BybitLoopback(clock=clock, api_keys={KEY: SECRET}) as server:
        server.load_klines("linear", "BTCUSDT", btc_1h)
        yield server


def source(server, clock=None, sleeps=None, category=None, **config):
    "A BybitSource pointed at `server`."
    return BybitSource(BybitConfig(endpoint=server.url, **config), category=category, clock=clock,
                       sleep=sleeps if sleeps is not None else Sleeps())


# ---------------------------------------------------------------- paging and the forming bar

def test_kline_pages_walk_backwards_and_stop_at_start(bybit, clock, btc_1h):
    src = source(bybit, clock)
    start, end = "2023-10-01T00:00Z", "2024-01-01T00:00Z"

    got = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", start, end)

    assert got.equals(btc_1h.loc["2023-10-01":"2023-12-31T22:00"])
    log = [q for path, q in bybit.request_log if path == KLINE]
    assert len(log) == 3  # 2208 bars incl. the forming one: 1000 + 1000 + 208
    assert all(int(q["start"]) == to_ms(start) and q["limit"] == "1000" for q in log)
    ends = [int(q["end"]) for q in log]
    assert ends[0] == to_ms(end) - 1
    # each page ends one millisecond before the oldest bar of the previous page
    assert ends[1] == to_ms("2023-12-31T23:00Z") - 999 * HOUR_MS - 1
    assert ends[2] == ends[1] + 1 - 1000 * HOUR_MS - 1


def test_kline_walk_makes_no_extra_request_when_a_page_ends_at_start(bybit, clock, btc_1h):
    src = source(bybit, clock)
    start = to_ms("2023-12-31T23:00Z") - 1999 * HOUR_MS  # exactly two full pages, the forming bar included

    got = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", start, "2024-01-01")

    assert bybit.requests[KLINE] == 2
    assert len(got) == 1999 and got.index[0] == pd.Timestamp(start, unit="ms", tz="UTC")


def test_forming_bar_is_dropped_until_its_close(bybit, clock, btc_1h):
    src = source(bybit, clock)
    clock.set("2023-12-31T10:30Z")

    mid_bar = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")
    clock.set("2023-12-31T11:00Z")
    at_close = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")

    assert mid_bar.index[-1] == pd.Timestamp("2023-12-31T09:00Z")  # 10:00 is forming at 10:30
    assert at_close.index[-1] == pd.Timestamp("2023-12-31T10:00Z")  # and closed at 11:00
    assert at_close.loc["2023-12-31T10:00Z"].equals(btc_1h.loc["2023-12-31T10:00Z"])


def test_end_is_exclusive_and_start_inclusive(bybit, clock, btc_1h):
    got = source(bybit, clock).fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-01T05:00Z", "2023-12-01T08:00Z")
    assert list(got.index) == list(pd.date_range("2023-12-01T05:00Z", periods=3, freq="1h", name="ts"))


def test_spot_and_linear_categories_are_separate_series(bybit, clock, btc_1h):
    spot = btc_1h * 1.001
    bybit.load_klines("spot", "BTCUSDT", spot)

    linear_bars = source(bybit, clock).fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-30", "2023-12-31")
    spot_bars = source(bybit, clock, category="spot").fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-30", "2023-12-31")

    assert linear_bars.equals(btc_1h.loc["2023-12-30T00:00Z":"2023-12-30T23:00Z"])
    pd.testing.assert_frame_equal(spot_bars, spot.loc["2023-12-30T00:00Z":"2023-12-30T23:00Z"], check_freq=False, rtol=1e-12)
    assert [q["category"] for _, q in bybit.request_log] == ["linear", "spot"]


def test_unknown_symbol_is_an_exchange_error_not_retried(bybit, clock):
    sleeps = Sleeps()
    with pytest.raises(ExchangeError, match="Not supported symbols") as e:
        source(bybit, clock, sleeps).fetch(SeriesKind.OHLCV, "NOPEUSDT", "1h", "2023-12-30", "2023-12-31")
    assert not isinstance(e.value, TemporaryExchangeError) and sleeps == []


def test_funding_pages_backwards_in_pages_of_200(clock, btc_funding):
    with BybitLoopback(clock=clock) as server:
        server.load_funding("BTCUSDT", btc_funding)

        got = source(server, clock).fetch(SeriesKind.FUNDING, "BTCUSDT", "8h", "2023-06-01", "2024-01-01")

        assert got.equals(btc_funding.loc["2023-06-01":"2023-12-31T16:00"])
        log = [q for path, q in server.request_log if path == FUNDING]
        assert len(log) == 4  # 642 settlements: 200 + 200 + 200 + 42
        assert [q["limit"] for q in log] == ["200"] * 4
        assert [int(q["endTime"]) for q in log] == sorted((int(q["endTime"]) for q in log), reverse=True)


# ---------------------------------------------------------------- retries and refusals

def test_rate_limit_then_success_retries_until_reset_or_with_backoff(bybit, clock, btc_1h):
    sleeps = Sleeps()
    src = source(bybit, clock, sleeps, max_retries=5, backoff_s=0.5)
    bybit.inject(Fault.rate_limit(KLINE), Fault.http_429(KLINE), Fault.rate_limit(KLINE, reset_after_ms=250))

    got = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")

    # 10006 waits until its reset header (1 s, then 0.25 s after the clock); the bare 429 keeps the backoff (2 x 0.5 s)
    assert sleeps == [1.0, 1.0, 0.25]
    assert bybit.requests[KLINE] == 4
    assert got.equals(btc_1h.loc["2023-12-31T00:00Z":"2023-12-31T22:00Z"])


def test_rate_limit_waits_until_the_reset_time_capped_by_the_policy(bybit, clock, btc_1h):
    sleeps = Sleeps()
    src = source(bybit, clock, sleeps, max_retries=5, backoff_s=0.5)
    bybit.inject(Fault.rate_limit(KLINE, reset_after_ms=2_500),
                 Fault.rate_limit(KLINE, reset_after_ms=120_000),       # two minutes: longer than any single delay
                 Fault.error(10006, "Too many visits!", path=KLINE))   # no reset header: exponential backoff

    got = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")

    assert sleeps == [2.5, 30.0, 2.0]        # until the reset; capped at the policy's 30 s; 0.5 x 2**2
    assert bybit.requests[KLINE] == 4 and len(got) == 23


def test_ip_rate_limit_http_403_is_retried_then_succeeds(bybit, clock, btc_1h):
    sleeps = Sleeps()
    src = source(bybit, clock, sleeps, max_retries=3, backoff_s=0.5)
    bybit.inject(Fault.http_error(403, path=KLINE), Fault.http_error(403, path=KLINE))

    got = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")

    assert sleeps == [0.5, 1.0]
    assert bybit.requests[KLINE] == 3
    assert got.equals(btc_1h.loc["2023-12-31T00:00Z":"2023-12-31T22:00Z"])


def test_ip_rate_limit_http_403_exhausts_retries_naming_the_status(bybit, clock):
    sleeps = Sleeps()
    src = source(bybit, clock, sleeps, max_retries=1, backoff_s=0.5)
    bybit.inject(*[Fault.http_error(403, path=KLINE)] * 2)

    with pytest.raises(TemporaryExchangeError) as e:
        src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")

    assert "failed after 2 attempts" in str(e.value) and "HTTP 403" in str(e.value) and sleeps == [0.5]


def test_kline_paging_reports_progress_per_page(bybit, clock, btc_1h):
    pages = []
    src = source(bybit, clock)

    got = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-09-01", "2024-01-01", progress=lambda n, t: pages.append((n, t)))

    served = btc_1h.loc["2023-09-01":]            # the forming 23:00 bar included; dropped only after paging
    assert pages == [(1000, served.index[-1000]), (2000, served.index[-2000]), (len(served), pd.Timestamp("2023-09-01", tz="UTC"))]
    assert len(got) == len(served) - 1


def test_funding_paging_reports_progress_per_page(clock, btc_funding):
    pages = []
    with BybitLoopback(clock=ManualClock("2024-01-01T09:00Z")) as server:
        server.load_funding("BTCUSDT", btc_funding)
        src = source(server, ManualClock("2024-01-01T09:00Z"))
        got = src.fetch(SeriesKind.FUNDING, "BTCUSDT", "8h", "2023-07-01", "2024-01-01T09:00Z",
                        progress=lambda n, t: pages.append((n, t)))
    assert [n for n, _ in pages] == [200, 400, len(got)]
    assert pages[-1][1] == pd.Timestamp("2023-07-01", tz="UTC")


def test_bad_gateway_and_server_errors_are_retried(bybit, clock):
    sleeps = Sleeps()
    src = source(bybit, clock, sleeps, max_retries=3, backoff_s=0.1)
    bybit.inject(Fault.http_error(502), Fault.http_error(504), Fault.error(10016, "Server error."))

    got = src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")

    assert len(got) == 23 and sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_timeout_exhausts_retries_raises_temporary_error(bybit, clock):
    sleeps = Sleeps()
    src = source(bybit, clock, sleeps, timeout_s=0.2, max_retries=2, backoff_s=0.25)
    bybit.inject(*[Fault.timeout(3.0, KLINE)] * 3)

    t0 = time.monotonic()
    with pytest.raises(TemporaryExchangeError) as e:
        src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")
    elapsed = time.monotonic() - t0

    message = str(e.value)
    for part in ("BTCUSDT", "/v5/market/kline", "failed after 3 attempts", "no answer within 0.2 s"):
        assert part in message
    assert sleeps == [0.25, 0.5]
    assert bybit.requests[KLINE] == 3
    assert elapsed < 2.0  # three 0.2 s timeouts, not the server's 3 s delays


def test_connection_refused_is_a_temporary_error():
    with BybitLoopback() as server:
        url = server.url  # a port nobody listens on once the server stops
    sleeps = Sleeps()
    src = BybitSource(BybitConfig(endpoint=url, max_retries=2, backoff_s=0.1), sleep=sleeps)

    with pytest.raises(TemporaryExchangeError, match="connection failed"):
        src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")
    assert sleeps == [0.1, 0.2]


def test_param_error_is_not_retried(bybit, clock):
    sleeps = Sleeps()
    src = source(bybit, clock, sleeps, max_retries=5)
    bybit.inject(Fault.param_error("params error: interval invalid", KLINE))

    with pytest.raises(ExchangeError) as e:
        src.fetch(SeriesKind.OHLCV, "BTCUSDT", "1h", "2023-12-31", "2024-01-01")

    assert not isinstance(e.value, TemporaryExchangeError)
    assert "retCode 10001" in str(e.value) and "params error: interval invalid" in str(e.value)
    assert bybit.requests[KLINE] == 1 and sleeps == []


def test_bad_signature_is_refused(bybit):
    sleeps = Sleeps()
    wrong_secret = BybitSource(BybitConfig(endpoint=bybit.url), api_key=KEY, api_secret="not-the-secret", sleep=sleeps)
    unknown_key = BybitSource(BybitConfig(endpoint=bybit.url), api_key="who", api_secret=SECRET, sleep=sleeps)
    good = BybitSource(BybitConfig(endpoint=bybit.url), api_key=KEY, api_secret=SECRET)

    with pytest.raises(FatalError, match="retCode 10004 'error sign!'"):
        wrong_secret.wallet_balance()
    with pytest.raises(FatalError, match="retCode 10003"):
        unknown_key.wallet_balance()
    balance = good.wallet_balance()

    assert sleeps == [] and bybit.requests["/v5/account/wallet-balance"] == 3
    assert balance["list"][0]["accountType"] == "UNIFIED"


def test_private_call_without_keys_is_a_config_error(bybit, monkeypatch):
    monkeypatch.delenv("BYBIT_API_KEY", raising=False)
    monkeypatch.delenv("BYBIT_API_SECRET", raising=False)
    with pytest.raises(ConfigError, match="set BYBIT_API_KEY and BYBIT_API_SECRET"):
        BybitSource(BybitConfig(endpoint=bybit.url)).wallet_balance()


# ---------------------------------------------------------------- the live stream

def test_ws_delivers_only_confirmed_bars(btc_1h):
    received, two_bars = [], threading.Event()

    def on_bar(symbol, interval, frame):
        received.append((symbol, interval, frame))
        if len(received) == 2:
            two_bars.set()

    with BybitLoopback() as server:
        src = BybitSource(BybitConfig(endpoint=server.url), public_wss=server.public_wss)
        with src.subscribe_klines("BTCUSDT", "1h", on_bar):
            assert server.wait_subscribed("kline.60.BTCUSDT", "linear", timeout=5)
            pushes = [("04:00", False), ("04:00", False), ("04:00", True), ("04:00", True), ("05:00", False), ("05:00", True)]
            for t, confirm in pushes:
                assert server.push_kline("BTCUSDT", "60", btc_1h.loc[f"2023-12-31T{t}Z"], confirm=confirm) == 1
            # one connection delivers in order: when the 05:00 close is handled, every earlier push was too
            assert two_bars.wait(5)

    assert [(s, i) for s, i, _ in received] == [("BTCUSDT", "1h"), ("BTCUSDT", "1h")]
    delivered = pd.concat([f for _, _, f in received])
    assert delivered.equals(btc_1h.loc["2023-12-31T04:00Z":"2023-12-31T05:00Z"])
    assert pybit.unified_trading.PUBLIC_WSS.startswith("wss://")  # the module global was restored


def test_ws_spot_subscription_delivers_only_closed_klines(btc_1h):
    received, closed = [], threading.Event()

    def on_bar(symbol, interval, frame):
        received.append((symbol, interval, frame))
        closed.set()

    bar = btc_1h.loc["2023-12-31T04:00Z":"2023-12-31T07:00Z"].resample("4h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    with BybitLoopback() as server:
        src = BybitSource(BybitConfig(endpoint=server.url), category="spot", public_wss=server.public_wss)
        with src.subscribe_klines("BTCUSDT", "4h", on_bar) as sub:
            assert server.wait_subscribed("kline.240.BTCUSDT", "spot", timeout=5)
            assert server.subscribers("kline.240.BTCUSDT", "linear") == 0       # on the spot channel only
            assert server.push_kline("BTCUSDT", "240", bar.iloc[0], confirm=False, channel_type="spot") == 1
            assert server.push_kline("BTCUSDT", "240", bar.iloc[0], confirm=True, channel_type="spot") == 1
            assert server.push_kline("BTCUSDT", "240", bar.iloc[0], confirm=True, channel_type="linear") == 0
            assert closed.wait(5)

    assert [(s, i) for s, i, _ in received] == [("BTCUSDT", "4h")]
    assert received[0][2].equals(bar.iloc[[0]].rename_axis("ts")) and sub.bars_delivered == 1


def test_ws_on_bar_error_does_not_kill_the_stream(btc_1h):
    calls, second = [], threading.Event()

    def on_bar(symbol, interval, frame):
        calls.append(frame.index[0])
        if len(calls) == 1:
            raise RuntimeError("strategy bug")
        second.set()

    with BybitLoopback() as server:
        src = BybitSource(BybitConfig(endpoint=server.url), public_wss=server.public_wss)
        with src.subscribe_klines("BTCUSDT", "1h", on_bar):
            assert server.wait_subscribed("kline.60.BTCUSDT", "linear", timeout=5)
            server.push_kline("BTCUSDT", "60", btc_1h.loc["2023-12-31T04:00Z"], confirm=True)
            server.push_kline("BTCUSDT", "60", btc_1h.loc["2023-12-31T05:00Z"], confirm=True)
            assert second.wait(5)

    assert calls == [pd.Timestamp("2023-12-31T04:00Z"), pd.Timestamp("2023-12-31T05:00Z")]


# ---------------------------------------------------------------- Deribit

@pytest.mark.parametrize("mode", ["oldest", "before_oldest"])
def test_deribit_follows_continuation(btc_dvol, mode):
    clock = ManualClock("2024-06-30T12:00Z")
    with DeribitLoopback(page_size=50, clock=clock, continuation=mode) as server:
        server.load_dvol("BTC", btc_dvol)

        got = DeribitSource(server.url, clock=clock).fetch(SeriesKind.DVOL, "BTC", "1d", "2024-01-01", "2024-07-01")

        assert got.equals(btc_dvol.loc["2024-01-01":"2024-06-29"])  # June 30 is still running at noon
        log = [q for path, q in server.request_log if path == DERIBIT_VOLATILITY_PATH]
        assert len(log) == 4  # 182 days in pages of 50
        assert int(log[0]["end_timestamp"]) == to_ms("2024-07-01") - 1
        assert all(int(q["start_timestamp"]) == to_ms("2024-01-01") and q["resolution"] == "1D" for q in log)


def test_deribit_rate_limit_then_success_retries_with_backoff(btc_dvol):
    clock, sleeps = ManualClock("2024-06-30T12:00Z"), Sleeps()
    with DeribitLoopback(clock=clock) as server:
        server.load_dvol("BTC", btc_dvol)
        server.inject(Fault.rate_limit(), Fault.http_429(), Fault.http_error(502), Fault.timeout(2.0))
        src = DeribitSource(server.url, timeout_s=0.2, max_retries=4, backoff_s=0.5, sleep=sleeps, clock=clock)

        got = src.fetch(SeriesKind.DVOL, "BTC", "1d", "2024-06-01", "2024-06-30")

        assert len(got) == 29 and sleeps == [0.5, 1.0, 2.0, 4.0]
        assert server.requests[DERIBIT_VOLATILITY_PATH] == 5


def test_deribit_rate_limit_exhausts_retries_raises_temporary_error(btc_dvol):
    sleeps = Sleeps()
    with DeribitLoopback() as server:
        server.load_dvol("BTC", btc_dvol)
        server.inject(*[Fault.rate_limit()] * 3)
        src = DeribitSource(server.url, max_retries=2, backoff_s=0.1, sleep=sleeps)

        with pytest.raises(TemporaryExchangeError) as e:
            src.fetch(SeriesKind.DVOL, "BTC", "1d", "2024-06-01", "2024-06-30")

    for part in ("BTC", DERIBIT_VOLATILITY_PATH, "failed after 3 attempts", "10028", "too_many_requests"):
        assert part in str(e.value)


def test_deribit_param_error_is_not_retried(btc_dvol):
    sleeps = Sleeps()
    with DeribitLoopback() as server:
        server.load_dvol("BTC", btc_dvol)
        src = DeribitSource(server.url, sleep=sleeps)
        with pytest.raises(ExchangeError) as e:
            src.fetch(SeriesKind.DVOL, "DOGE", "1d", "2024-06-01", "2024-06-30")
        assert server.requests[DERIBIT_VOLATILITY_PATH] == 1

    assert not isinstance(e.value, TemporaryExchangeError)
    assert "-32602" in str(e.value) and "currency" in str(e.value) and sleeps == []
