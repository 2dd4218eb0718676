"""Benchmark: bar-decisions per second of the replay (the live decision path) and its parity with research.

Three symbols (BTC, ETH, SOL) over about six months of real 4h bars (2024-01-01 .. 2024-07-01), models of
200 trees fitted on the 3,000 labelled bars before the start (the first 40 features), regimes fitted at the start.
A bar-decision is one symbol's full step at one close: incremental features, the model, the signal state, the
regime filter, sizing, the risk check and the order. The figure is the trading loop's (warm-up and the one-off
fits excluded, reported separately), by wall clock and by the thread's CPU time; the target is >= 2,000 per second per process.

Then the research side: `batch_targets` (batch features, the same sizing) through `research_backtest` (or the
replay's plain accounting when `trade_matrix.backtest.accounting` is absent), and `parity_check`.

Run: `python benchmarks/bench_replay.py` (`--days N` for another length, `--trees N` for bigger models).
"""
import argparse
import logging
import time

import pandas as pd

from trade_matrix.data.market import load_market_data
from trade_matrix.features.catalogue import compute_features, forward_return
from trade_matrix.models.tree import ModelConfig, fit_model
from trade_matrix.backtest.parity import research_parity
from trade_matrix.backtest.replay import replay
from trade_matrix.trader.config import TraderConfig, fit_regime_models
from trade_matrix.risk.breaker import BreakerConfig

parser = argparse.ArgumentParser()
parser.add_argument("--days", type=int, default=182)
parser.add_argument("--trees", type=int, default=200)
parser.add_argument("--repeat", type=int, default=3)
args = parser.parse_args()
logging.getLogger("trade_matrix.risk.breaker").setLevel(logging.ERROR)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START = pd.Timestamp("2024-01-01", tz="UTC")
END = START + pd.Timedelta(days=args.days)
md = load_market_data(symbols=SYMBOLS)

t0 = time.perf_counter()
models = {}
for s in SYMBOLS:
    view = md.as_of(START)
    ff = compute_features(view, s).features
    y = forward_return(view.bars(s)).dropna()
    x = ff.loc[y.index].iloc[-3000:, :40]
    models[s] = fit_model(x, y.loc[x.index], s, START, ModelConfig(n_estimators=args.trees))
t_models = time.perf_counter() - t0
config = TraderConfig(breaker=BreakerConfig(max_drawdown=0.3), allocation="hrp")
t0 = time.perf_counter()
regimes = fit_regime_models(md, SYMBOLS, START, config.regime)
t_regimes = time.perf_counter() - t0
print(f"setup: models {t_models:.1f} s ({args.trees} trees each), regime fits {t_regimes:.1f} s")

rates, cpu_rates, results = [], [], []
for _ in range(args.repeat):
    t0 = time.perf_counter()
    res = replay(md, SYMBOLS, START, END, models, config, regime_models=regimes)
    wall = time.perf_counter() - t0
    rates.append(res.timings["decisions_per_s"])
    cpu_rates.append(res.timings["decisions_per_cpu_s"])
    results.append((wall, res))
wall, res = results[-1]
tm = res.timings
print(f"replay: {len(res.equity)} bars x {len(SYMBOLS)} symbols = {tm['decisions']} bar-decisions "
      f"(+ {config.warmup_bars} warm-up bars, {config.history_bars} feature-history bars per symbol)")
print(f"  trading loop: {tm['trading_s']:.2f} s -> {max(rates):,.0f} bar-decisions/s (best of {args.repeat}; "
      f"all: {', '.join(f'{r:,.0f}' for r in rates)}); whole replay incl. warm-up {wall:.2f} s")
print(f"  per CPU second of the thread (what the path costs, independent of other load on the machine): "
      f"{max(cpu_rates):,.0f} bar-decisions/s (all: {', '.join(f'{r:,.0f}' for r in cpu_rates)})")
print(f"  tiers: {res.decisions['tier'].value_counts().to_dict()}")
print(f"  risk: {res.decisions['risk_action'].value_counts().to_dict()}")
print(f"  fills {len(res.fills)}, fees {res.fees:.2f}, funding {res.funding_paid:.2f}, "
      f"final equity {res.exchange.equity():.2f} ({res.summary()['return']:+.2%}); weights {res.weights.round(3).to_dict()}")

t0 = time.perf_counter()
report, bt = research_parity(md, res, models)
print(f"research side: batch targets + backtest {time.perf_counter() - t0:.1f} s")
print(f"  largest |intended target| difference live vs batch: {float((bt.targets - res.targets).abs().max().max()):.2e}")
print(f"  {report}")
print(f"  passed={report.passed}; max position diff {report.max_position_diff:.2e} (fraction of equity), "
      f"max excess over tolerance {report.max_position_excess:.2e}; max bar-return diff {report.max_return_diff:.2e}; "
      f"total return replay {report.total_return[0]:+.4%} vs research {report.total_return[1]:+.4%}")
