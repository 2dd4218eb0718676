"""Wall time of the weekly retrain for BTCUSDT, ETHUSDT and SOLUSDT on the bundled data, step by step.

Three runs into a temporary home (the project's .tm/ is never touched):
1. a first retrain without RL (no production model yet: full fits only);
2. the versions of run 1 are force-promoted, so the next run has a production model to transfer from, then a
   retrain with RL (full retrain beside the transfer grid, the SAC curriculum): the realistic weekly run;
3. one papermill run of research/retrain.ipynb without RL (the step functions plus kernel and report overhead).

Usage: python benchmarks/bench_retrain.py [--n-windows 40] [--rl-timesteps 30000] [--no-papermill]
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trade_matrix.models.registry import ModelRegistry
from trade_matrix.retrain.runner import run_retrain
from trade_matrix.retrain.params import STEPS, RetrainParams
from trade_matrix.retrain.steps import run_steps

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def timed(label: str, params: RetrainParams, run_dir: Path) -> dict:
    t0 = time.perf_counter()
    steps = run_steps(params, run_dir=run_dir)
    total = time.perf_counter() - t0
    print(f"\n{label}: {total:.1f}s wall")
    for name in STEPS:
        print(f"  {name:9s} {steps[name].seconds:7.1f}s")
    tr = steps["training"].summary["symbols"]
    for s in SYMBOLS:
        t = tr[s]["timings"]
        print(f"  {s}: variant {tr[s]['variant']}, {tr[s]['variants_tried']} variants, walk-forward "
              f"{t.get('walk_forward_s', 0):.1f}s, final fit {t.get('final_fit_s', 0):.1f}s, in-worker total {t.get('total_s', 0):.1f}s")
    if not steps["rl"].summary.get("skipped"):
        for s, d in steps["rl"].summary["symbols"].items():
            print(f"  {s}: RL {d['algorithm']} {d['timesteps']:,} steps on {d['train_bars']} bars: {d['seconds']:.1f}s in the worker")
    return {"total": total, "steps": steps}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-windows", type=int, default=40)
    ap.add_argument("--rl-timesteps", type=int, default=30_000)
    ap.add_argument("--no-papermill", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tm-bench-retrain-") as home:
        base = dict(symbols=SYMBOLS, home=home, n_windows=a.n_windows, n_jobs=2)
        first = timed("run 1: first retrain, no RL, no production model", RetrainParams(**base, rl=False),
                      Path(home) / "run1")
        reg = first["steps"]["registry"].outputs["registry"]
        for s, d in first["steps"]["registry"].summary["symbols"].items():
            if d["production_after"] is None:
                reg.promote(s, d["version"], force=True)   # a production model to transfer from
        timed(f"run 2: weekly retrain with transfer and RL (SAC, {a.rl_timesteps:,} steps)",
              RetrainParams(**base, rl=True, rl_timesteps=a.rl_timesteps), Path(home) / "run2")
        if not a.no_papermill:
            t0 = time.perf_counter()
            run = run_retrain(RetrainParams(**base, rl=False), runs_dir=Path(home) / "runs")
            print(f"\nrun 3: papermill, no RL: {time.perf_counter() - t0:.1f}s wall, ok={run.ok}; steps "
                  + ", ".join(f"{k} {v:.1f}s" for k, v in (run.metrics.get("timings") or {}).items()))
        print("\nproduction after the runs:", {s: ModelRegistry.from_settings(RetrainParams(**base).settings())
                                              .production_version(s) for s in SYMBOLS})


if __name__ == "__main__":
    main()
