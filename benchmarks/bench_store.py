"""Benchmark: write, unchanged rewrite, read and gap scan of the bundled BTCUSDT 1h bars (65,590 rows) per store.

DuckDB always; PostgreSQL when reachable at TM_BENCH_PG_URL (default postgresql://root@127.0.0.1:5432/postgres,
using a throwaway schema). Run: `python benchmarks/bench_store.py`.
"""
import os
import secrets
import statistics
import tempfile
import time

import psycopg

from trade_matrix.core import SeriesKind
from trade_matrix.data.market import DataCatalog, load_series
from trade_matrix.data.store import open_store

bars = load_series(DataCatalog().find(SeriesKind.OHLCV, "BTCUSDT", "1h")).frame


def bench(url, schema="public", repeats=5):
    rows = []
    for i in range(repeats):
        url_i = url.format(i=i)  # DuckDB: a fresh file per repeat, so the first write really inserts
        with open_store(url_i, schema) as st:
            t0 = time.perf_counter(); st.write("ohlcv", "BTCUSDT", "1h", bars, "binance")
            t1 = time.perf_counter(); st.write("ohlcv", "BTCUSDT", "1h", bars, "binance")
            t2 = time.perf_counter(); st.read("ohlcv", "BTCUSDT", "1h")
            t3 = time.perf_counter(); st.times("ohlcv", "BTCUSDT", "1h")
            t4 = time.perf_counter()
            rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        if url.startswith("postgresql"):  # empty the table so the next repeat inserts again
            with psycopg.connect(url, autocommit=True) as c:
                c.execute(f'TRUNCATE "{schema}".bars')
    for i, name in enumerate(["write (insert)", "rewrite (unchanged)", "read", "times (gap scan input)"]):
        xs = [r[i] for r in rows]
        print(f"  {name:24s} best {min(xs) * 1e3:8.1f} ms   median {statistics.median(xs) * 1e3:8.1f} ms")


with tempfile.TemporaryDirectory() as d:
    print(f"DuckDB file store, {len(bars):,} bars")
    bench(f"duckdb:///{d}/bench{{i}}.duckdb")

pg = os.environ.get("TM_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
try:
    with psycopg.connect(pg, connect_timeout=3) as c:
        pass
except psycopg.Error as e:
    print(f"PostgreSQL not reachable at {pg}: skipped ({e})")
else:
    schema = f"bench_{secrets.token_hex(4)}"
    print(f"PostgreSQL store (schema {schema}), {len(bars):,} bars")
    try:
        bench(pg, schema)
    finally:
        with psycopg.connect(pg, autocommit=True) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
