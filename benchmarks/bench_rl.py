"""Benchmark: the RL position sizer: inference latency, environment speed, curriculum training time, OOS vs Kelly.

1. `RLPolicy.act` latency per bar (p50 / p99 microseconds), dict and array inputs, next to SB3's own `predict`.
2. Environment steps per second (random actions, the default 8-field observation).
3. Curriculum training wall time per instrument with the default `RLConfig` (30,000 timesteps: calm / mixed /
   full), SAC and PPO, one torch thread each (the deployment setting: instruments train in parallel processes).
4. Out of sample on BTCUSDT: RL (SAC and PPO) vs fractional Kelly vs always-long vs flat, net of the same fees,
   slippage and funding (the one `CostConfig`). The signal frame is `trade_matrix.research.signals.signal_frame` (out-of-sample walk-forward
   predictions); the policy trains on the bars before `--split` and is tested on the bars after it.

Run: `python benchmarks/bench_rl.py [--symbol BTCUSDT] [--split 2024-07-01] [--algorithms SAC PPO]`.
"""
import argparse
import logging
import os
import sys
import time
import warnings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pandas as pd

from trade_matrix.research.rl import TradingEnv, evaluate_policy, synthetic_signal_frame, train_policy
from trade_matrix.research.rl_evaluation import compare_with_kelly
from trade_matrix.strategy.policy import EnvSpec, RLConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--symbol", default="BTCUSDT")
parser.add_argument("--split", default="2024-07-01", help="RL trains on signal-frame bars before this, is tested after")
parser.add_argument("--algorithms", nargs="+", default=["SAC", "PPO"])
parser.add_argument("--timesteps", type=int, default=None, help="rescale the default curriculum to this many steps")
args = parser.parse_args()
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="  (log) %(message)s")
warnings.filterwarnings("ignore", category=UserWarning)
pd.set_option("display.width", 200)
print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}\n")

# -- the real signal frame ----------------------------------------------------------------------------------
t = time.perf_counter()
try:
    from trade_matrix.data.market import load_market_data
    from trade_matrix.research.signals import kelly_positions, signal_frame
    from trade_matrix.strategy.sizing import KellyConfig
    md = load_market_data(symbols=[args.symbol])
    try:
        frame = signal_frame(md, args.symbol)
        regimes = "with regime probabilities"
    except ImportError as e:   # the regime module is not there yet: neutral probabilities, said loudly
        frame = signal_frame(md, args.symbol, regimes=False)
        frame = frame.assign(p_Bear=0.0, p_Neutral=1.0, p_Bull=0.0, p_Crisis=0.0)
        regimes = f"WITHOUT regime probabilities ({e}); p_Neutral = 1"
    source = f"{args.symbol} signal_frame, {regimes}"
except ImportError as e:
    frame, kelly_positions, KellyConfig = synthetic_signal_frame(6000, seed=0, ic=0.05), None, None
    source = f"synthetic (trade_matrix.research.signals unavailable: {e})"
print(f"signal frame: {source}: {len(frame)} bars {frame.index[0]} .. {frame.index[-1]}, "
      f"built in {time.perf_counter() - t:.1f} s\n")
split = pd.Timestamp(args.split, tz="UTC")
train, test = frame[frame.index < split], frame[frame.index >= split]
print(f"training bars {len(train)} (before {args.split}), out-of-sample bars {len(test)}\n")

config = RLConfig() if args.timesteps is None else RLConfig().scaled(args.timesteps)
stages = ", ".join(f"{s.name} {s.timesteps} ({s.cost_multiplier}x costs)" for s in config.stages)
print(f"curriculum: {stages}; total {config.total_timesteps} timesteps\n")

# -- 3. training wall time ---------------------------------------------------------------------------------
policies = {}
for algorithm in args.algorithms:
    cfg = config.model_copy(update={"algorithm": algorithm})
    t = time.perf_counter()
    policies[algorithm] = train_policy(train, args.symbol, cfg)
    wall = time.perf_counter() - t
    timings = ", ".join(f"{k} {v:.1f}" for k, v in policies[algorithm].timings.items())
    print(f"3. {algorithm} curriculum training, {cfg.total_timesteps} timesteps: {wall:.1f} s wall "
          f"({cfg.total_timesteps / wall:.0f} steps/s incl. learning-curve evaluations; {timings})")
    print(policies[algorithm].curve.round(3).to_string(index=False))
    print()

# -- 1. inference latency ----------------------------------------------------------------------------------
policy = next(iter(policies.values()))
spec = policy.spec
row = test.dropna(subset=list(spec.frame_columns)).iloc[-1]
obs_dict = {**{c: float(row[c]) for c in spec.frame_columns}, "position": 0.3, "drawdown": 0.02}
obs_array = policy.observation_vector(obs_dict)


def latency(fn, n=3000):
    for _ in range(100):
        fn()
    times = []
    for _ in range(n):
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
    us = np.array(times) * 1e6
    return np.percentile(us, 50), np.percentile(us, 99)


for name, p in policies.items():
    for label, fn in (("act(dict)", lambda p=p: p.act(obs_dict)), ("act(array)", lambda p=p: p.act(obs_array)),
                      ("SB3 predict(array)", lambda p=p: p.model.predict(obs_array, deterministic=True))):
        p50, p99 = latency(fn)
        print(f"1. {name} {label}: p50 {p50:.0f} us, p99 {p99:.0f} us per bar")
print()

# -- 2. environment speed ----------------------------------------------------------------------------------
env = TradingEnv(train.dropna(subset=list(spec.frame_columns) + ["ret"]), EnvSpec(), seed=0)
env.reset(seed=0)
actions = np.random.default_rng(0).uniform(-1, 1, (20_000, 1)).astype(np.float32)
t = time.perf_counter()
for a in actions:
    _, _, term, trunc, _ = env.step(a)
    if term or trunc:
        env.reset()
print(f"2. environment: {len(actions) / (time.perf_counter() - t):,.0f} steps/s (random actions)\n")

# -- 4. out of sample vs Kelly -----------------------------------------------------------------------------
if kelly_positions is not None:
    kelly = kelly_positions(test, KellyConfig())
else:   # synthetic fallback: a simple z-score rule stands in for Kelly
    kelly = np.clip(test["signal"].to_numpy() / 3, -1, 1)
for name, p in policies.items():
    table = compare_with_kelly(p, test, kelly)
    missing = evaluate_policy(p, test)["metrics"]["held_on_missing"]
    print(f"4. {args.symbol} out of sample {test.index[0]} .. {test.index[-1]} ({len(test)} bars), RL = {name} "
          f"(trained until {p.trained_until}; {missing} bars held on missing inputs):")
    print(table.round(4).to_string())
    print()
