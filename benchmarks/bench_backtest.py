"""Benchmark: `research_backtest` on 3 symbols x 5 years of 4h bars (~11,000 bars each).

Bars are the bundled BTC, ETH and SOL 4h bars over the last 10,950 bars they share (5 years), with their
funding; targets are seeded random fractions (|sum| <= 80%), re-decided every bar (the worst case for the
accounting: an order per symbol per bar), NaN on 30% of the rows. Printed:

- the first call in the process (vectorbt's import and numba compile, even with `NUMBA_CACHE_DIR` set);
- the warm call, median of 5 (target <= 1 s): the plain loop, two baselines, metrics and the vectorbt cross-check;
- the plain accounting loop alone (`simulate`), median of 5;
- vectorbt's `from_orders` of the reported fills + `value()` alone, median of 5;
- the cross-check: vectorbt re-accounting the reported path (funding priced on its holdings) against the reported
  equity, its largest relative difference and the tolerance.

Run: `NUMBA_CACHE_DIR=.numba_cache python benchmarks/bench_backtest.py`.
"""
import logging
import statistics
import time

t_import = time.perf_counter()
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from trade_matrix.backtest.accounting import (BacktestConfig, align, executed_units, funding_matrix, research_backtest,
                                              simulate, vbt_portfolio)
from trade_matrix.data.market import load_market_data

t_import = time.perf_counter() - t_import
logging.getLogger("trade_matrix.backtest.accounting").setLevel(logging.ERROR)   # SOL has no funding before 2024: reported, not news

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
N = 5 * 365 * 6
md = load_market_data(symbols=SYMBOLS)
bars = {s: md.bars(s) for s in SYMBOLS}
funding = {s: md.funding(s) for s in SYMBOLS}
index = bars[SYMBOLS[0]].index
for s in SYMBOLS[1:]:
    index = index.intersection(bars[s].index)
index = index[-N:]
rng = np.random.default_rng(0)
w = rng.uniform(-1, 1, (len(index), len(SYMBOLS)))
w = w / np.abs(w).sum(axis=1, keepdims=True) * 0.8
w[rng.uniform(size=len(index)) < 0.3] = np.nan
targets = pd.DataFrame(w, index=index, columns=SYMBOLS)
cfg = BacktestConfig()
print(f"{len(SYMBOLS)} symbols x {len(index)} bars ({index[0]:%Y-%m-%d} .. {index[-1]:%Y-%m-%d}); "
      f"trade_matrix.backtest import {t_import:.2f} s")


def timed(fn, repeat=5):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out), min(out)


t0 = time.perf_counter()
first = research_backtest(bars, targets, cfg, funding=funding)
print(f"first call (vectorbt import + numba compile/cache load): {time.perf_counter() - t0:.2f} s")
print("  steps:", {k: round(v, 3) for k, v in first.timings.items()})
med, best = timed(lambda: research_backtest(bars, targets, cfg, funding=funding))
print(f"warm research_backtest: median {med:.3f} s, best {best:.3f} s (target <= 1 s) -> {'OK' if med <= 1 else 'SLOW'}")
print("  steps:", {k: round(v, 3) for k, v in research_backtest(bars, targets, cfg, funding=funding).timings.items()})
t, o, c = align(bars, targets)
rates = funding_matrix(funding, t.index, SYMBOLS)
med, best = timed(lambda: simulate(o, c, t, cfg, rates))
print(f"plain loop (simulate): median {med * 1e3:.1f} ms, best {best * 1e3:.1f} ms "
      f"({med / len(index) * 1e6:.2f} us per bar, {len(first.trades)} fills)")
units = executed_units(first.trades, t.index, SYMBOLS)
med, best = timed(lambda: vbt_portfolio(o, c, units, cfg).value())
print(f"vectorbt from_orders + value: median {med * 1e3:.1f} ms, best {best * 1e3:.1f} ms")
cc = first.cross_check
print(f"cross-check {'passed' if cc['passed'] else 'FAILED'}: max relative equity difference {cc['max_rel_equity_diff']:.1e}, "
      f"max weight difference {cc['max_weight_diff']:.1e} over {cc['fills_checked_against_targets']} fills, "
      f"funding {cc['funding_recomputed']:.2f}, tolerance {cc['tolerance']:.0e}")
