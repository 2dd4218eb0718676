"""Benchmark: the order path (intent -> journal -> simulator ack -> fill recorded) and reconciliation, per journal.

1. Order path. Each of N intents (default 200, after 10 warm-up intents that are not counted) goes through what the
   live trader does for one bar: `Journal.record_bar` (the outbox transaction: the intent, the bar's decision record
   and the trader's checkpoint), then `OrderManager.send`, which marks it SENDING, places a market order through
   `BybitGateway` (pybit, signed HTTP) on the loopback Bybit simulator, reads the order and its executions back, records
   the fill and moves the intent to FILLED. Each intent is timed end to end with `perf_counter` (wall clock) and split
   into: the outbox write; the journal work inside `send` (the SENDING and FILLED transitions, the fill); the create
   request; the read-back requests (open orders by client id, then its executions); the gateway's own parsing.
   The simulator is an aiohttp server on 127.0.0.1 in a thread of this same process: the network is excluded, but
   every request still pays pybit's signing, HTTP over loopback, the server's signature check and JSON both ways,
   and the two threads share one GIL. The loopback floor (a public `/v5/market/time` request) is printed for scale.

2. Reconciliation. 1,000 executions (one market order each) in 3 symbols on the simulator, all ours. The journal has
   every intent; nine in ten went SENDING -> fill -> FILLED as the order manager records them, each tenth was left
   SENDING with its fill missing (a crash between the send and its answer). `reconcile` (with the 3 symbols) is timed:
   cold (the open intents looked up one by one and their 100 fills recovered; the fills are deleted again between
   runs), settled (every intent terminal, executions read from the run's first bar: 10 pages of 100) and from the
   last cursor (the per-bar steady state). Median of 3 runs each, split into the venue side (the gateway's requests
   and parsing) and the journal side, with requests, execution pages and executions per second; and
   `Journal.positions(run_id)`, the journal side of the comparison, alone.

Both on a DuckDB file journal and on PostgreSQL (a throwaway database, dropped afterwards) when reachable at
TM_BENCH_PG_URL (default: postgresql://root@127.0.0.1:5432/postgres, then the same as postgres). No timing is
asserted; the figures are from a shared, noisy machine and move by tens of percent between runs.

Run: `python benchmarks/bench_orders.py` (`--intents N`, `--executions N`, `--runs N`; env TM_BENCH_INTENTS too).
"""
import argparse
import logging
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from trade_matrix.core import ManualClock
from trade_matrix.execution.bybit import BybitGateway
from trade_matrix.execution.journal import Intent, open_journal
from trade_matrix.execution.manager import OrderManager, OrderManagerConfig
from trade_matrix.execution.reconcile import reconcile
from trade_matrix.testing.bybit_exchange import BybitExchange

parser = argparse.ArgumentParser()
parser.add_argument("--intents", type=int, default=int(os.environ.get("TM_BENCH_INTENTS", 200)))
parser.add_argument("--executions", type=int, default=1000)
parser.add_argument("--runs", type=int, default=3)
args = parser.parse_args()
logging.getLogger("pybit").setLevel(logging.ERROR)

KEY, SECRET = "bench-key", "bench-secret"
T0 = pd.Timestamp("2024-03-01T00:00Z")
BAR = pd.Timedelta("15min")                                   # bars of the benchmark's run
PRICES = {"BTCUSDT": "60000", "ETHUSDT": "3000", "SOLUSDT": "150"}
QTY = {"BTCUSDT": "0.002", "ETHUSDT": "0.05", "SOLUSDT": "1.0"}
SYMBOLS = list(PRICES)
WARMUP = 10


def exchange_for(clock):
    ex = BybitExchange(clock, api_keys={KEY: SECRET}, initial_cash=Decimal("1000000")).start()
    for s, p in PRICES.items():
        ex.set_price(s, p)
    return ex


class Timed:
    "Wraps a callable; adds its wall time to `spent[name]` and counts its calls."
    def __init__(self, fn, name, spent, calls):
        self.fn, self.name, self.spent, self.calls = fn, name, spent, calls

    def __call__(self, *a, **kw):
        t = time.perf_counter()
        try:
            return self.fn(*a, **kw)
        finally:
            self.spent[self.name] += time.perf_counter() - t
            self.calls[self.name] += 1


def instrument(gateway):
    "Time the gateway's `place` and each pybit request kind on this gateway instance (nothing else changes)."
    spent, calls = Counter(), Counter()
    gateway.place = Timed(gateway.place, "gateway.place", spent, calls)
    for name in ("place_order", "get_open_orders", "get_order_history", "get_executions", "get_positions",
                 "get_server_time", "get_instruments_info"):
        setattr(gateway.http, name, Timed(getattr(gateway.http, name), name, spent, calls))
    return spent, calls


def clocked(fn, *a, **kw):
    "(fn's result, its wall time in seconds)."
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def ms(xs, q):
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def order_path(url: str, n: int):
    clock = ManualClock(T0)
    ex = exchange_for(clock)
    journal = open_journal(url)
    try:
        journal.begin_run("bench", 0, "testnet", started=T0)
        gateway = BybitGateway(KEY, SECRET, endpoint=ex.url, timeout=5, clock=clock)
        spent, calls = instrument(gateway)
        journal._execute = Timed(journal._execute, "sql", spent, calls)   # counts the journal's SQL statements
        om = OrderManager(journal, gateway, OrderManagerConfig(bar_interval="15m", lookup_pause_s=0),
                          clock=clock, sleep=lambda s: None)
        floor = [clocked(gateway.http.get_server_time)[1] for _ in range(50)]   # the loopback floor: a public request
        rows, states, statements = [], Counter(), Counter()
        for k in range(WARMUP + n):
            bar = T0 + k * BAR
            clock.set(bar + BAR + pd.Timedelta("2s"))         # just after the bar's close
            symbol = SYMBOLS[k % 3]
            side = "buy" if (k // 3) % 2 == 0 else "sell"     # in and out again: positions stay small
            intent = Intent(f"tm0-{k}-{symbol}-0", "bench", bar, symbol, side, Decimal(QTY[symbol]),
                            price=Decimal(PRICES[symbol]), reason="bench")
            decision = {"symbol": symbol, "bar": bar, "signal": 1 if side == "buy" else -1, "target": QTY[symbol],
                        "risk": "approved"}
            checkpoint = {"bar": bar, "positions": {s: str(ex.position(s)) for s in SYMBOLS}, "breaker": "CLOSED"}
            spent.clear()
            t0 = time.perf_counter()
            journal.record_bar("bench", bar, [intent], [decision], checkpoint, now=clock())
            t1 = time.perf_counter()
            sql_outbox = calls["sql"]
            done = om.send(intent)
            t2 = time.perf_counter()
            states[done.state.value] += 1
            if k >= WARMUP:
                http_back = spent["get_open_orders"] + spent["get_order_history"] + spent["get_executions"]
                rows.append({"total": t2 - t0, "outbox": t1 - t0, "journal in send": t2 - t1 - spent["gateway.place"],
                             "create request": spent["place_order"], "read-back requests": http_back,
                             "gateway parsing": spent["gateway.place"] - spent["place_order"] - http_back})
                statements["outbox"] += sql_outbox
                statements["send"] += calls["sql"] - sql_outbox
            calls["sql"] = 0
        fills = len(journal.fills())
    finally:
        journal.close()
        ex.stop()
    print(f"  loopback floor (GET /v5/market/time via pybit): p50 {ms(floor, 50):.2f} ms  p99 {ms(floor, 99):.2f} ms")
    print(f"  {n} intents timed ({WARMUP} warm-up not counted); end states {dict(states)}; fills recorded {fills}; "
          f"requests per intent: {sum(v for k, v in calls.items() if k not in ('gateway.place', 'get_server_time', 'sql')) / (n + WARMUP):.1f}; "
          f"journal SQL statements per intent (BEGIN/COMMIT not counted): outbox {statements['outbox'] / n:.0f}, "
          f"inside send {statements['send'] / n:.0f}")
    print(f"  {'':22s} {'p50':>8s} {'p99':>8s} {'mean':>8s}  ms")
    for name in rows[0]:
        xs = [r[name] for r in rows]
        print(f"  {name:22s} {ms(xs, 50):8.2f} {ms(xs, 99):8.2f} {statistics.fmean(xs) * 1e3:8.2f}")
    total = sum(r["total"] for r in rows)
    print(f"  throughput, one intent after another: {n / total:,.0f} intents/s")


def reconciliation(url: str, n: int, runs: int):
    clock = ManualClock(T0)
    ex = exchange_for(clock)
    journal = open_journal(url)
    try:
        journal.begin_run("bench", 0, "testnet", started=T0)
        gateway = BybitGateway(KEY, SECRET, endpoint=ex.url, timeout=5, clock=clock)
        # the venue: n market orders in 3 symbols, one execution each, made by the simulator's create handler
        # in-process (its HTTP route runs the same handler; over HTTP the setup would only be slower)
        intents = {}
        for k in range(n):
            bar, symbol = T0 + (k // 3) * BAR, SYMBOLS[k % 3]
            clock.set(bar + BAR + pd.Timedelta(seconds=2 + k % 3))
            side = "Buy" if (k // 3) % 2 == 0 else "Sell"
            cid = f"tm0-{k // 3}-{symbol}-0"
            ex._create({"category": "linear", "symbol": symbol, "side": side, "orderType": "Market",
                        "qty": QTY[symbol], "orderLinkId": cid}, KEY)
            intents.setdefault(bar, []).append(Intent(cid, "bench", bar, symbol, side.lower(), Decimal(QTY[symbol]),
                                                      price=Decimal(PRICES[symbol])))
        # the journal: every intent; nine in ten SENDING -> fill -> FILLED as the order manager records them; each
        # tenth left SENDING with its fill missing, as a crash between the send and its answer leaves it
        for bar, batch in intents.items():
            journal.record_bar("bench", bar, batch, now=bar + BAR)
        executions = gateway.executions_since(T0 - pd.Timedelta("1h"))
        assert len(executions) == n, f"the simulator has {len(executions)} executions, not {n}"
        missing = []
        for k, (exec_id, link, fill) in enumerate(executions):
            journal.transition(link, "SENDING", now=fill.time)
            if k % 10 == 9:
                missing.append(exec_id)
                continue
            journal.add_fill(exec_id, link, fill)
            journal.transition(link, "FILLED", "Filled", now=fill.time)
        spent, calls = instrument(gateway)
        venue_calls = ("server_time", "instruments", "open_orders", "lookup", "executions_since", "positions")
        for name in venue_calls:                                                      # the venue side
            setattr(gateway, name, Timed(getattr(gateway, name), name, spent, calls))
        sweep = gateway.executions_since

        def executions_since(start):
            "The sweep, counting its own execution pages (lookups read executions too)."
            before = calls["get_executions"]
            try:
                return sweep(start)
            finally:
                calls["sweep pages"] += calls["get_executions"] - before
        gateway.executions_since = executions_since

        def forget_missing():
            "Delete the recovered fills again so the next cold run has the same work (the benchmark's own SQL)."
            with journal._transaction():
                for exec_id in missing:
                    journal._execute("DELETE FROM fills WHERE exec_id = ?", (exec_id,))

        def timed_reconcile(since=None):
            calls.clear()
            spent.clear()
            report, t = clocked(reconcile, journal, gateway, "bench", since, clock=clock, symbols=tuple(SYMBOLS))
            if not report.ok:
                raise SystemExit(f"reconciliation found problems: {report.problems[:3]}")
            return (report, t, sum(spent[k] for k in venue_calls), calls["sweep pages"],
                    sum(v for k, v in calls.items() if k.startswith("get_") or k == "place_order"))

        cases = {}
        for _ in range(runs):
            forget_missing()
            report, *m = timed_reconcile()
            assert len(report.recovered_fills) == len(missing), (len(report.recovered_fills), len(missing))
            cases.setdefault(f"cold: {len(missing)} left SENDING, fills missing", []).append(m)
        for cid in {link for exec_id, link, _ in executions if exec_id in set(missing)}:
            journal.transition(cid, "FILLED", "settled by the order manager", now=clock())
        for _ in range(runs):
            report, *m = timed_reconcile()
            assert not report.recovered_fills and not report.unsettled
            cases.setdefault("settled: all terminal, from run start", []).append(m)
            cursor = report.cursor
        for _ in range(runs):
            report, *m = timed_reconcile(cursor)
            cases.setdefault("settled, from the last cursor", []).append(m)
        pos = [clocked(journal.positions, "bench") for _ in range(max(runs, 5))]
        venue_pos = gateway.positions()
        assert pos[-1][0] == venue_pos, (pos[-1][0], venue_pos)
        pos = [t for _, t in pos]
    finally:
        journal.close()
        ex.stop()
    print(f"  {n:,} executions in {len(SYMBOLS)} symbols (one order each); {len(missing)} of their fills missed by the "
          f"journal; median of {runs} runs; executions/s = {n:,} / the median")
    print(f"  {'':40s} {'median':>9s} {'best':>9s} {'venue':>9s} {'journal':>9s} {'requests':>8s} {'pages':>5s} "
          f"{'executions/s':>12s}")
    for what, ms_ in cases.items():
        t, v = statistics.median(x[0] for x in ms_), statistics.median(x[1] for x in ms_)
        rate = f"{n / t:12,.0f}" if "cursor" not in what else f"{'-':>12s}"
        print(f"  {what:40s} {t * 1e3:6.1f} ms {min(x[0] for x in ms_) * 1e3:6.1f} ms {v * 1e3:6.1f} ms "
              f"{(t - v) * 1e3:6.1f} ms {ms_[0][3]:8d} {ms_[0][2]:5d} {rate}")
    print("  venue = the gateway's calls (requests and parsing: server time, instruments, open orders, lookups of "
          "open intents, executions, positions); journal = the rest; pages = execution pages of 100")
    m = statistics.median(pos)
    print(f"  journal positions(run_id) alone, {n:,} fills of {n:,} intents: {m * 1e3:.1f} ms "
          f"({n / m:,.0f} fills/s; best {min(pos) * 1e3:.1f} ms)")


def pg_admin():
    urls = ([os.environ["TM_BENCH_PG_URL"]] if os.environ.get("TM_BENCH_PG_URL") else
            ["postgresql://root@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"])
    problems = []
    for url in urls:
        try:
            return url, psycopg.connect(url, autocommit=True, connect_timeout=3)
        except psycopg.Error as e:
            problems.append(f"{url}: {str(e).strip()}")
    return None, "; ".join(problems)


started = time.perf_counter()
print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, Python {platform.python_version()} "
      f"({sys.implementation.name}), {platform.platform()}")
print("a shared, noisy machine: the tails (p99) move most between runs; compare medians")
print("simulator: the loopback Bybit exchange in this process (127.0.0.1, network excluded)\n")

with tempfile.TemporaryDirectory() as d:
    print("DuckDB file journal - order path")
    order_path(f"duckdb:///{d}/orders.duckdb", args.intents)
    print("\nDuckDB file journal - reconciliation")
    reconciliation(f"duckdb:///{d}/reconcile.duckdb", args.executions, args.runs)

admin_url, admin = pg_admin()
if admin_url is None:
    print(f"\nPostgreSQL not reachable: skipped ({admin})")
else:
    settings = {k: admin.execute(f"SHOW {k}").fetchone()[0] for k in ("server_version", "fsync", "synchronous_commit")}
    admin.close()
    print(f"\nPostgreSQL {settings['server_version']} (fsync {settings['fsync']}, synchronous_commit "
          f"{settings['synchronous_commit']}): every commit is durable, as the outbox needs")
    name = f"tm_bench_{secrets.token_hex(4)}"
    for what, fn in (("orders", lambda u: order_path(u, args.intents)),
                     ("reconcile", lambda u: reconciliation(u, args.executions, args.runs))):
        db = f"{name}_{what}"
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        try:
            print(f"\nPostgreSQL journal (throwaway database {db} on 127.0.0.1, dropped after) - {what}")
            fn(urlsplit(admin_url)._replace(path="/" + db).geturl())
        finally:
            with psycopg.connect(admin_url, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
print(f"\nwhole script: {time.perf_counter() - started:.1f} s")
