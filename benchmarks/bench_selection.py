"""Benchmark: Boruta feature selection on the bundled 4h data for BTCUSDT, ETHUSDT and SOLUSDT.

Times feature computation and Boruta per symbol (default SelectionConfig: LightGBM, 100 trees of depth 4, up to 50
iterations, shadow bar at the 90th percentile, rough fix of the tentative, trailing 4,000 labelled bars), prints the
counts confirmed / tentative / accepted by the rough fix / padded and the chosen features with their Boruta
decisions, and checks stability across seeds (overlap of the selected lists). Run: `python benchmarks/bench_selection.py [--estimator xgboost]
[--seeds 7 8 9] [--until 2025-01-01]`.
"""
import argparse
import logging
import sys
import time

from trade_matrix.data.market import load_market_data
from trade_matrix.models.selection import SelectionConfig, select_features

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--estimator", default="lightgbm", choices=["lightgbm", "xgboost"])
parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9], help="the first is the reported run")
parser.add_argument("--until", default=None, help="select with the data known at this time (default: all)")
args = parser.parse_args()
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="  (log) %(message)s")

t0 = time.perf_counter()
md = load_market_data(symbols=SYMBOLS)
print(f"loaded {', '.join(SYMBOLS)} in {time.perf_counter() - t0:.2f} s; estimator {args.estimator}, seeds {args.seeds}\n")

total = 0.0
for symbol in SYMBOLS:
    runs = []
    for seed in args.seeds:
        cfg = SelectionConfig(estimator=args.estimator, seed=seed)
        runs.append(select_features(md, symbol, until=args.until, config=cfg))
    r = runs[0]
    total += r.elapsed_s + r.features_s
    print(f"{symbol}: {len(r.selected)} selected in {r.elapsed_s:.2f} s Boruta + {r.features_s:.2f} s features "
          f"({r.n_iterations} iterations, {r.n_rows} rows {r.train_start:%Y-%m-%d} .. {r.train_end:%Y-%m-%d})")
    print(f"  confirmed {len(r.confirmed)}, tentative {len(r.tentative)} (rough fix accepted {len(r.roughly_fixed)}), "
          f"rejected {len(r.rejected)}, padded {len(r.filled)}" + (f" ({', '.join(r.filled)})" if r.filled else ""))
    print(f"  {r.rule}")
    for i, name in enumerate(r.selected, 1):
        print(f"  {i:2d}. {name:28s} {r.decisions[name].value:10s} hits {int(r.hits[name]):3d}/{int(r.importance_history[name].notna().sum()):<3d}"
              f" median gain share {r.median_importance[name]:.4f}")
    if len(runs) > 1:
        base = set(r.selected)
        overlaps = [len(base & set(o.selected)) / len(base | set(o.selected)) for o in runs[1:]]
        times = ", ".join(f"{o.elapsed_s:.2f}" for o in runs)
        counts = "; ".join(f"seed {sd}: {len(o.confirmed)}+{len(o.roughly_fixed)}+{len(o.filled)} -> {len(o.selected)}"
                           for sd, o in zip(args.seeds, runs))
        print(f"  other seeds: Jaccard overlap with seed {args.seeds[0]}: "
              f"{', '.join(f'{x:.2f}' for x in overlaps)}; Boruta seconds per seed: {times}")
        print(f"  confirmed + rough-fixed + padded -> selected: {counts}")
    print()
import os
print(f"total for {len(SYMBOLS)} symbols (first seed): {total:.1f} s; load average {os.getloadavg()[0]:.2f}")
