"""The store contract, run unchanged against both backends: embedded DuckDB and a real PostgreSQL.

PostgreSQL cases are marked `services`; they use a throw-away database for the run (see conftest.py) and a
fresh schema per test, and they fail (never skip) when the server is down.
"""
from __future__ import annotations

import secrets

from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import ConfigError, DataError, SeriesKind
from trade_matrix.data.store import (DuckDBStore, FrameSource, PostgresStore, SeriesInfo, Store, WriteResult,
                                     backfill, open_store)

H = pd.Timedelta(hours=1)
T0 = pd.Timestamp("2024-01-01T00:00Z")


def make_bars(start=T0, n=48, interval=H, seed=0) -> pd.DataFrame:
    "Valid synthetic hourly OHLCV bars: a random walk with highs and lows around open and close."
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    spread = close * np.abs(rng.normal(0, 0.005, n))
    idx = pd.date_range(pd.Timestamp(start), periods=n, freq=interval, name="ts", unit="ns")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + spread,
                         "low": np.minimum(open_, close) - spread, "close": close,
                         "volume": rng.uniform(1, 10, n)}, index=idx)


def assert_same_frame(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, expected, check_freq=False)


class StoreTarget(NamedTuple):
    url: str
    schema: str

    @property
    def store_class(self) -> type[Store]:
        return DuckDBStore if self.url.startswith("duckdb:") else PostgresStore


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.services)])
def store_target(request, tmp_path) -> StoreTarget:
    "A store location of each backend, empty: a DuckDB file in tmp_path, or a fresh schema in the run's test database."
    if request.param == "duckdb":
        return StoreTarget(f"duckdb:///{tmp_path}/store.duckdb", "public")
    return StoreTarget(request.getfixturevalue("pg_test_database_url"), f"t_{secrets.token_hex(6)}")


@pytest.fixture
def store(store_target):
    with open_store(store_target.url, store_target.schema) as s:
        yield s


# --- write and read ------------------------------------------------------------------------------------------

def test_write_then_read_round_trips_every_kind(store):
    bars = make_bars()
    funding = pd.DataFrame({"funding_rate": [1e-4, -2.5e-4, 3e-5]},
                           index=pd.date_range(T0, periods=3, freq="8h", name="ts", unit="ns"))
    dvol = pd.DataFrame({"dvol_close": [55.25, 57.0]}, index=pd.date_range(T0, periods=2, freq="1D", name="ts", unit="ns"))

    results = [store.write("ohlcv", "BTCUSDT", "1h", bars, "binance"),
               store.write(SeriesKind.FUNDING, "BTCUSDT", "8h", funding, "bybit-linear"),
               store.write("dvol", "BTC", "1d", dvol, "deribit")]

    assert results == [WriteResult(48, 0, 0), WriteResult(3, 0, 0), WriteResult(2, 0, 0)]
    assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars)
    assert_same_frame(store.read("funding", "BTCUSDT", "8h"), funding)
    assert_same_frame(store.read("dvol", "BTC", "1d"), dvol)


def test_failed_batch_writes_nothing(store):
    bars = make_bars()
    store.write("ohlcv", "BTCUSDT", "1h", bars.iloc[:24], "binance")
    batch = bars.copy()
    batch["volume"] += 1.0                                  # would update the 24 stored bars
    batch.iloc[40, batch.columns.get_loc("low")] = -1.0     # and insert 24 more, but one bar is impossible

    with pytest.raises(DataError, match="2024-01-02T16:00:00Z"):
        store.write("ohlcv", "BTCUSDT", "1h", batch, "binance")

    assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars.iloc[:24])


def test_crash_after_upsert_before_commit_writes_nothing(store_target):
    bars = make_bars()

    class FailsAfterMerge(store_target.store_class):
        fail = False

        def _merge(self, *args):
            counts = super()._merge(*args)
            if self.fail:
                raise RuntimeError("simulated crash after the upsert, before the commit")
            return counts

    with FailsAfterMerge(store_target.url, store_target.schema) as store:
        store.write("ohlcv", "BTCUSDT", "1h", bars.iloc[:24], "binance")
        changed = bars.copy()
        changed["volume"] += 1.0
        store.fail = True

        with pytest.raises(RuntimeError, match="simulated crash"):
            store.write("ohlcv", "BTCUSDT", "1h", changed, "binance")

        assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars.iloc[:24])
        store.fail = False
        assert store.write("ohlcv", "BTCUSDT", "1h", changed, "binance").inserted == 24  # the store still works


def test_upsert_twice_is_idempotent(store):
    bars = make_bars()

    first = store.write("ohlcv", "BTCUSDT", "1h", bars, "binance")
    second = store.write("ohlcv", "BTCUSDT", "1h", bars, "binance")

    assert first == WriteResult(inserted=48, updated=0, unchanged=0)
    assert second == WriteResult(inserted=0, updated=0, unchanged=48)
    assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars)


def test_changed_bar_counts_as_update(store):
    bars = make_bars()
    store.write("ohlcv", "BTCUSDT", "1h", bars, "binance")
    revised = bars.iloc[10:14].copy()
    revised.iloc[:2, revised.columns.get_loc("volume")] += 5.0   # two bars revised by the exchange
    more = make_bars(start=T0 + 48 * H, n=3, seed=7)               # three new bars in the same batch

    result = store.write("ohlcv", "BTCUSDT", "1h", pd.concat([revised, more]), "binance")
    relabelled = store.write("ohlcv", "BTCUSDT", "1h", bars.iloc[:1], "bybit-linear")

    assert result == WriteResult(inserted=3, updated=2, unchanged=2)
    assert relabelled == WriteResult(inserted=0, updated=1, unchanged=0)   # a different source is a change too
    got = store.read("ohlcv", "BTCUSDT", "1h")
    assert len(got) == 51
    assert got.loc[bars.index[10], "volume"] == bars.iloc[10]["volume"] + 5.0


def test_read_is_half_open_and_utc(store):
    bars = make_bars()
    store.write("ohlcv", "BTCUSDT", "1h", bars, "binance")

    window = store.read("ohlcv", "BTCUSDT", "1h", "2024-01-01T07:00+02:00", pd.Timestamp("2024-01-01T08:00Z"))
    before = store.read("ohlcv", "BTCUSDT", "1h", end=T0)
    from_start = store.read("ohlcv", "BTCUSDT", "1h", start=T0 + 46 * H)

    assert list(window.index) == list(bars.index[5:8])       # 05:00Z included, 08:00Z excluded
    assert str(window.index.dtype) == "datetime64[ns, UTC]" and window.index.name == "ts"
    assert list(window.columns) == ["open", "high", "low", "close", "volume"]
    assert (window.dtypes == "float64").all()
    assert len(before) == 0 and str(before.index.dtype) == "datetime64[ns, UTC]"
    assert list(from_start.index) == list(bars.index[46:])


def test_series_are_kept_apart_by_kind_key_and_interval(store):
    h1, h4 = make_bars(), make_bars(n=6, interval=4 * H, seed=2)
    store.write("ohlcv", "BTCUSDT", "1h", h1, "binance")
    store.write("ohlcv", "BTCUSDT", "4h", h4, "binance")
    store.write("ohlcv", "ETHUSDT", "1h", h1.iloc[:5], "binance")
    store.write("funding", "BTCUSDT", "8h", pd.DataFrame({"funding_rate": [1e-4]}, index=pd.DatetimeIndex([T0], name="ts")),
                "binance")

    assert store.times("ohlcv", "BTCUSDT", "1h").equals(h1.index)
    assert store.times("ohlcv", "BTCUSDT", "4h").equals(h4.index)
    assert len(store.times("ohlcv", "SOLUSDT", "1h")) == 0
    assert store.series() == [
        SeriesInfo(SeriesKind.OHLCV, "BTCUSDT", "1h", 48, h1.index[0], h1.index[-1]),
        SeriesInfo(SeriesKind.OHLCV, "BTCUSDT", "4h", 6, h4.index[0], h4.index[-1]),
        SeriesInfo(SeriesKind.OHLCV, "ETHUSDT", "1h", 5, h1.index[0], h1.index[4]),
        SeriesInfo(SeriesKind.FUNDING, "BTCUSDT", "8h", 1, T0, T0),
    ]


def test_data_survives_reopening_the_store(store_target):
    bars = make_bars()
    with open_store(store_target.url, store_target.schema) as store:
        store.write("ohlcv", "BTCUSDT", "1h", bars, "binance")

    with open_store(store_target.url, store_target.schema) as store:
        assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars)
        assert store.write("ohlcv", "BTCUSDT", "1h", bars, "binance").unchanged == 48


def test_65k_hourly_bars_round_trip_exactly(store):
    bars = make_bars(start="2017-01-01T00:00Z", n=65_000, seed=1)
    first = store.write("ohlcv", "BTCUSDT", "1h", bars, "binance")
    again = store.write("ohlcv", "BTCUSDT", "1h", bars, "binance")
    assert (first.inserted, again.unchanged) == (65_000, 65_000)
    assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars)


# --- backfill -------------------------------------------------------------------------------------------------

def test_backfill_fetches_only_missing_bars_and_is_idempotent(store):
    bars = make_bars()
    store.write("ohlcv", "BTCUSDT", "1h", bars.iloc[list(range(0, 10)) + list(range(20, 30))], "binance")
    source = FrameSource(bars, name="binance")

    first = backfill(store, source, "ohlcv", "BTCUSDT", "1h", T0, T0 + 48 * H, chunk=12)
    calls_after_first = len(source.calls)
    second = backfill(store, source, "ohlcv", "BTCUSDT", "1h", T0, T0 + 48 * H, chunk=12)

    assert first.requested == ((T0 + 10 * H, T0 + 20 * H), (T0 + 30 * H, T0 + 48 * H))
    assert [(c[3], c[4]) for c in source.calls] == [(T0 + 10 * H, T0 + 20 * H), (T0 + 30 * H, T0 + 42 * H),
                                                     (T0 + 42 * H, T0 + 48 * H)]
    assert (first.calls, first.fetched, first.inserted, first.updated, first.still_missing) == (3, 28, 28, 0, ())
    assert second.requested == () and len(source.calls) == calls_after_first      # nothing missing: no fetch
    assert (second.fetched, second.inserted, second.written) == (0, 0, 0)
    assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars)


def test_backfill_reports_progress_once_per_missing_range_before_fetching_it(store):
    bars = make_bars()
    store.write("ohlcv", "BTCUSDT", "1h", bars.iloc[list(range(0, 10)) + list(range(20, 30))], "binance")
    source, steps = FrameSource(bars, name="binance"), []

    def progress(number, total, start, end, fetched):
        steps.append((number, total, start, end, fetched, len(source.calls)))

    backfill(store, source, "ohlcv", "BTCUSDT", "1h", T0, T0 + 48 * H, chunk=12, progress=progress)

    # (range number, ranges, range start, range end, rows fetched so far, fetch calls made before it)
    assert steps == [(1, 2, T0 + 10 * H, T0 + 20 * H, 0, 0), (2, 2, T0 + 30 * H, T0 + 48 * H, 10, 1)]


def test_backfill_keeps_real_exchange_gaps(store):
    bars = make_bars()
    exchange = bars.drop(bars.index[30:33])          # the exchange was down for three hours
    source = FrameSource(exchange, name="binance")

    first = backfill(store, source, "ohlcv", "BTCUSDT", "1h", T0, T0 + 48 * H)
    second = backfill(store, source, "ohlcv", "BTCUSDT", "1h", T0, T0 + 48 * H)

    assert first.inserted == 45 and first.still_missing == ((T0 + 30 * H, T0 + 33 * H),)
    assert first.still_missing_bars == 3
    assert second.requested == ((T0 + 30 * H, T0 + 33 * H),)   # asked again, honestly
    assert (second.fetched, second.inserted) == (0, 0)         # and never invented
    assert second.still_missing == first.still_missing
    assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), exchange)


def test_backfill_refuses_rows_outside_the_requested_range(store):
    bars = make_bars()
    store.write("ohlcv", "BTCUSDT", "1h", bars.iloc[:5], "binance")

    class SloppySource(FrameSource):
        def fetch(self, kind, key, interval, start, end):
            return self.frame[(self.frame.index >= start - H) & (self.frame.index < end)]

    revised = bars.copy()
    revised["volume"] += 1.0
    with pytest.raises(DataError, match="outside the range"):
        backfill(store, SloppySource(revised, "sloppy"), "ohlcv", "BTCUSDT", "1h", T0, T0 + 10 * H)

    assert_same_frame(store.read("ohlcv", "BTCUSDT", "1h"), bars.iloc[:5])


# --- opening stores ------------------------------------------------------------------------------------------

def test_open_store_rejects_unknown_urls_and_schemas():
    with pytest.raises(ConfigError, match="is not understood"):
        open_store("sqlite:///store.db")
    with pytest.raises(ConfigError, match="lower-case SQL name"):
        open_store("duckdb:///:memory:", schema="x; drop table bars")


def test_unreachable_postgres_is_a_config_error_naming_the_server_but_not_the_password():
    with pytest.raises(ConfigError, match=r"cannot connect to PostgreSQL at postgresql://trader@127.0.0.1:1/tm") as e:
        open_store("postgresql://trader:s3cret@127.0.0.1:1/tm")
    assert "s3cret" not in str(e.value)


@pytest.mark.services
def test_postgres_uses_timescaledb_only_when_available(pg_test_database_url):
    import psycopg

    with psycopg.connect(pg_test_database_url) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone() is not None

    schema = f"t_{secrets.token_hex(6)}"
    with open_store(pg_test_database_url, schema=schema) as store:
        assert store.timescale is available
    if available:   # all three tables are hypertables (not exercised on a server without the extension)
        with psycopg.connect(pg_test_database_url) as conn:
            names = conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables "
                                 "WHERE hypertable_schema = %s ORDER BY 1", (schema,)).fetchall()
        assert [n for (n,) in names] == ["bars", "dvol", "funding"]
