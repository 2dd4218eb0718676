"""Benchmark: regime fits per instrument, per-bar filter updates, GARCH, walk-forward refits, refit stability.

1. Fit time of the Markov-switching model per instrument (BTCUSDT, ETHUSDT, SOLUSDT; daily returns, 1,500 days,
   28 starts): the first fit in the process (numba kernels loaded or compiled) and the median of 5 more, with the
   EM iterations, the convergence flag and how many refined starts reached the best objective.
2. RegimeFilter.update per period (p50/p99 us over 10,000 updates), RegimeFilter.observe_bar per 4h bar, and the
   batch filter per period.
3. GARCH(1,1): fit time (arch, 3,000 4h bars) and GarchFilter.update per bar (p50/p99 us over 10,000 updates).
4. walk_forward_regimes: weekly refits over 6 months of BTCUSDT (seconds per refit).
5. With --stability: agreement of refits on windows ending 4 dates two weeks apart with the first fit, over the
   last year's days, in 8 eras x 3 instruments, chained (as the weekly pipeline runs) and independent.

Run: `python benchmarks/bench_regime.py [--stability]`.
"""
import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

from trade_matrix.data.market import load_market_data
from trade_matrix.research.regimes import GarchFilter, fit_garch, walk_forward_regimes
from trade_matrix.strategy.regime import RegimeConfig, regime_returns
from trade_matrix.strategy.regime_filter import RegimeFilter, filtered_probabilities
from trade_matrix.strategy.regime_fit import fit_regimes

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--stability", action="store_true", help="also measure refit stability over 8 eras (~30 s)")
args = parser.parse_args()
pd.set_option("display.width", 200)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
print(f"cores {os.cpu_count()}, NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR')}")
t0 = time.perf_counter()
md = load_market_data(symbols=SYMBOLS)
daily = {s: regime_returns(md.bars(s), "1d") for s in SYMBOLS}
print(f"data loaded and daily returns built in {time.perf_counter() - t0:.2f} s\n")


def percentiles(fn, values, warmup=200):
    for x in values[:warmup]:
        fn(x)
    times = np.empty(len(values))
    for i, x in enumerate(values):
        s = time.perf_counter()
        fn(x)
        times[i] = time.perf_counter() - s
    us = times * 1e6
    return np.percentile(us, 50), np.percentile(us, 99)


# 1. fits
print("1. regime fit per instrument (1,500 daily returns, 28 starts: 30 EM iterations each, best 4 to convergence)")
models = {}
for i, sym in enumerate(SYMBOLS):
    s = time.perf_counter()
    models[sym] = fit_regimes(daily[sym], symbol=sym)
    first = time.perf_counter() - s
    runs = []
    for _ in range(5):
        s = time.perf_counter()
        fit_regimes(daily[sym], symbol=sym)
        runs.append(time.perf_counter() - s)
    m = models[sym]
    note = " (includes loading/compiling the numba kernels)" if i == 0 else ""
    print(f"   {sym}: first {first:.3f} s{note}, median of 5 {np.median(runs):.3f} s; {m.iterations} EM iterations, "
          f"converged {m.converged}, best reached by {m.starts_at_best}/{m.n_refined} refined starts, "
          f"loglike {m.loglike:.1f}")

# 2. filter
model = models["BTCUSDT"]
rng = np.random.default_rng(0)
returns = rng.normal(0, 0.03, 10_000)
f = RegimeFilter(model)
p50, p99 = percentiles(f.update, returns)
print(f"\n2. RegimeFilter.update per period: p50 {p50:.1f} us, p99 {p99:.1f} us (10,000 updates)")
bars = md.bars("BTCUSDT").iloc[-10_000:]
items = list(zip(bars.index, bars["close"].to_numpy()))
live = RegimeFilter(model)
p50, p99 = percentiles(lambda x: live.observe_bar(*x), items, warmup=0)
print(f"   RegimeFilter.observe_bar per 4h bar (updates once a day): p50 {p50:.1f} us, p99 {p99:.1f} us "
      f"(10,000 real bars)")
series = daily["BTCUSDT"]
s = time.perf_counter()
for _ in range(20):
    filtered_probabilities(model, series)
batch = (time.perf_counter() - s) / 20
print(f"   filtered_probabilities over {len(series)} days: {batch * 1e3:.2f} ms ({batch / len(series) * 1e6:.2f} us a day)")

# 3. GARCH
r4 = regime_returns(md.bars("BTCUSDT"), "4h")
fits = []
for _ in range(5):
    s = time.perf_counter()
    garch = fit_garch(r4, symbol="BTCUSDT")
    fits.append(time.perf_counter() - s)
g = GarchFilter(garch)
p50, p99 = percentiles(g.update, rng.normal(0, 0.01, 10_000))
print(f"\n3. GARCH(1,1) fit on 3,000 4h bars: median {np.median(fits):.3f} s (converged {garch.converged}); "
      f"GarchFilter.update per bar: p50 {p50:.1f} us, p99 {p99:.1f} us (10,000 updates)")

# 4. walk-forward
s = time.perf_counter()
wf = walk_forward_regimes(md, "BTCUSDT", "2025-01-01", "2025-07-01", refit_every="7D")
wall = time.perf_counter() - s
n = wf["fitted_until"].nunique()
print(f"\n4. walk_forward_regimes BTCUSDT 2025-01-01..2025-07-01, weekly: {n} refits in {wall:.1f} s "
      f"({wall / n:.2f} s a refit, {len(wf)} bars)")

if not args.stability:
    sys.exit(0)

# 5. stability
print("\n5. refit stability: 4 fits on windows ending 14 days apart; agreement of the most probable regime with the "
      "first fit over the 365 days before the first date")
eras = ["2021-01-01", "2021-11-01", "2022-05-01", "2022-11-15", "2023-09-01", "2024-04-01", "2024-11-01", "2025-03-01"]
rows = []
for sym in SYMBOLS:
    r = daily[sym]
    known_at = r.index + pd.Timedelta("1D")
    for era in eras:
        t0 = pd.Timestamp(era, tz="UTC")
        ends = [t0 + i * pd.Timedelta("14D") for i in range(4)]
        if (known_at <= t0).sum() < RegimeConfig().min_fit_bars // 6:
            continue
        year = r[known_at <= t0].iloc[-1500:]
        row = {"symbol": sym, "era": era}
        for mode in ("chained", "independent"):
            fitted = []
            for e in ends:
                prev = fitted[-1] if (fitted and mode == "chained") else None
                fitted.append(fit_regimes(r[known_at <= e], symbol=sym, previous=prev))
            paths = [filtered_probabilities(m, year).iloc[-365:].idxmax(axis=1) for m in fitted]
            row[mode] = min(float((p == paths[0]).mean()) for p in paths[1:])
        rows.append(row)
table = pd.DataFrame(rows)
print(table.round(3).to_string(index=False))
for mode in ("chained", "independent"):
    ok = int((table[mode] >= 0.85).sum())
    print(f"   {mode}: >= 85% agreement in {ok} of {len(table)} cases; median {table[mode].median():.3f}, "
          f"min {table[mode].min():.3f}")
