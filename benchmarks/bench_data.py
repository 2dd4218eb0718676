"""Benchmark: load + validate + resample every bundled file (the work `make demo` and `tm data check` do).

Prints wall times (best and median of N runs) per stage and in total. Run: `python benchmarks/bench_data.py`.
"""
import statistics
import sys
import time

from trade_matrix.core import SeriesKind
from trade_matrix.data.market import DataCatalog, data_report, load_series

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 7


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def one_run():
    cat = DataCatalog()
    t_load = t_resample = 0.0
    rows = bars4 = 0
    for f in cat.files:
        dt, s = timed(lambda f=f: load_series(f))  # read CSV.gz + validate
        t_load += dt
        rows += len(s)
        if s.kind is SeriesKind.OHLCV and s.interval == "1h":
            dt, r = timed(lambda s=s: s.resample("4h"))
            t_resample += dt
            bars4 += len(r)
    t_report, _ = timed(lambda: data_report())  # everything, plus gap detection and the report
    return t_load, t_resample, t_report, rows, bars4


runs = [one_run() for _ in range(REPEATS)]
rows, bars4 = runs[0][3], runs[0][4]
for i, name in enumerate(["load + validate (all files)", "resample 1h->4h (5 symbols)", "full data report (load+validate+gaps+resample)"]):
    xs = [r[i] for r in runs]
    print(f"{name:50s} best {min(xs) * 1e3:8.1f} ms   median {statistics.median(xs) * 1e3:8.1f} ms")
best = min(r[0] + r[1] for r in runs)
print(f"{'rows validated':50s} {rows:,}  ({rows / best / 1e6:.2f} M rows/s load+validate+resample)")
print(f"{'4h bars built':50s} {bars4:,}")
