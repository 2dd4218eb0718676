"""Benchmark: batch features for 3 symbols over all bundled history, and the incremental update per bar.

Targets (issue 3): batch for BTC, ETH, SOL under 1 s; incremental update under 200 us per bar per symbol.
Run: `python benchmarks/bench_features.py`.
"""
import os
import statistics
import time

import numpy as np

from trade_matrix.data.market import load_market_data
from trade_matrix.features.catalogue import IncrementalFeatures, build_graph, compute_features

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
print(f"load average {os.getloadavg()[0]:.2f} (the machine may be shared: times scale with it)")
md = load_market_data(symbols=SYMBOLS)
graph = build_graph()
t = time.perf_counter()
compute_features(md, "SOLUSDT", graph=graph)  # first call: numba kernels load from cache (or compile)
print(f"first call (numba load/compile)                 {time.perf_counter() - t:8.3f} s")

runs = []
for _ in range(5):
    t = time.perf_counter()
    frames = {s: compute_features(md, s, graph=graph) for s in SYMBOLS}
    runs.append(time.perf_counter() - t)
bars = sum(len(f.features) for f in frames.values())
print(f"batch, 3 symbols, {bars:,} bars x 112 features    best {min(runs):.3f} s   median {statistics.median(runs):.3f} s")

for s in SYMBOLS:
    b = md.bars(s)
    eth = md.bars("ETHUSDT")["close"].reindex(b.index).to_numpy()
    btc = md.bars("BTCUSDT")["close"].reindex(b.index).to_numpy()
    rows = list(b[["open", "high", "low", "close", "volume"]].itertuples(index=False, name=None))
    eng = IncrementalFeatures(s, graph=graph)
    times = np.empty(len(rows))
    for i, (ts, r) in enumerate(zip(b.index, rows)):
        t0 = time.perf_counter()
        eng.on_bar(ts, *r, btc[i], eth[i])
        times[i] = time.perf_counter() - t0
    us = times[1000:] * 1e6
    print(f"incremental on_bar {s:8s} ({len(rows):,} bars)      mean {us.mean():6.1f} us   p50 {np.percentile(us, 50):6.1f} us   p99 {np.percentile(us, 99):6.1f} us")
