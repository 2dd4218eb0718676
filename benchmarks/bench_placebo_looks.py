"""Benchmark: years of weekly placebo looks through the real gates: the per-week correction against the deflated Sharpe.

The weekly update looks at every instrument again each week, and the last model that passed keeps serving. The
old rule corrected for multiple testing within one week only (Bonferroni over variants x instruments); the new one
adds the deflated Sharpe gate, whose number of trials counts every variant tried at every look since the
instrument's last deployment. This measures how often a model with no skill gets deployed at least once in a year of
weekly looks under each rule, beside the nominal rate `1 - min_deflated_sharpe` (5%).

Method (everything seeded):
1. One real purged walk-forward of the symbol on the bundled data, with the weekly backtest's settings (each look
   judges 12 windows; variants full and transfer_50/150/250, the transfer variants on the same list), over
   12 + 51 windows ending at the cut-off: look j judges windows j .. j + 11, as the weekly retrain of that week
   would (expanding training: a window's full-variant predictions are the same at every look). Each row carries
   the four variants' predictions, the 1-bar return and the funding its position pays. The features are a fixed
   list (the benchmark is about the gate, not the selection).
2. A placebo per seed: the rows' label, 1-bar return and funding permuted together (`_placebo_labels`), the
   predictions kept, so they carry no information about what they are judged on. Two nulls:
   - shared: one permutation per year; successive looks judge overlapping windows of one placebo market, as a
     model with no skill retrained weekly on the same market is judged;
   - fresh: a new permutation at every look (what a weekly `shuffle_labels=True` training does): the looks are
     nearly independent, the hardest case for a per-week rule.
3. Each year's 52 looks through `gate_looks` (the real `decide` and `gate`, trials counted since the last
   deployment) under the old rule (`min_deflated_sharpe=0`) and the new (`0.95`); a year is a false deployment
   if any look passes.
4. For scale, a planted signal (the label plus `--planted` x its standard deviation x the standardised full-variant
   prediction, so the predictions do carry information): how often each rule deploys it within the year.

Prints the fraction of years with a deployment per null and rule, with a 95% Wilson interval, beside the nominal
rate, and the wall times. Run: `python benchmarks/bench_placebo_looks.py [--seeds 200] [--looks 52]
[--instruments 1] [--planted 0.1] [--jobs 2]`.
"""
import argparse
import logging
import math
import sys
import time

import numpy as np
import pandas as pd

from trade_matrix.core import parallel_map
from trade_matrix.data.market import load_market_data
from trade_matrix.models.training import (_labelled, _placebo_labels, gate_looks, TrainConfig,
                                          walk_forward_variants)
from trade_matrix.models.tree import ModelConfig
from trade_matrix.models.validation import GateConfig, next_bar_funding, WalkForwardConfig

FEATURES = ("ret_1", "ret_6", "ret_24", "rsi_14", "macd_hist", "atr_14", "bb_width_20", "rvol_24", "volume_ratio_20",
            "sma_dist_50", "rs_eth_42", "funding_rate", "dvol_z_30", "hour_sin", "hour_cos")
BAR_ROWS = 42   # one weekly window of 4h bars


def walk_forward(symbol: str, cutoff: str, windows: int, looks: int, seed: int) -> pd.DataFrame:
    "The variants' out-of-sample predictions over `windows + looks - 1` weekly windows ending at the cut-off."
    md = load_market_data(symbols=sorted({symbol, "BTCUSDT", "ETHUSDT"})).as_of(cutoff)
    cfg = TrainConfig(model=ModelConfig(seed=seed, transfer_trees=(50, 150, 250)),
                      walk_forward=WalkForwardConfig(n_windows=windows + looks - 1))
    x, y, r1 = _labelled(md, symbol, cfg)
    funding = next_bar_funding(md.funding(symbol), y.index, cfg.bar_interval)
    preds, _ = walk_forward_variants(x.loc[:, list(FEATURES)], y, symbol, cfg, transfer_features=FEATURES,
                                     returns=r1, funding=funding)
    return preds


def permuted(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    "The frame with its label, 1-bar return and funding permuted together (the placebo of `train_instrument`)."
    label, returns, funding = _placebo_labels(frame["label"], frame["returns"], seed, frame["funding"])
    return frame.assign(label=label, returns=returns, funding=funding)


def planted(frame: pd.DataFrame, strength: float) -> pd.DataFrame:
    "The label plus `strength` x its standard deviation x the standardised full-variant prediction (a real signal)."
    p = frame["full"]
    label = frame["label"] + strength * frame["label"].std() * (p - p.mean()) / p.std()
    return frame.assign(label=label, returns=label)


def one_year(args) -> dict:
    "Worker: one seed's year of looks under both rules: the first look that deployed (None: none)."
    preds, seed, null, strength, windows, looks, instruments = args
    year = permuted(preds, seed) if null in ("shared", "planted") else preds
    if null == "planted":
        year = planted(year, strength)
    frames = []
    for j in range(looks):
        look = year.iloc[j * BAR_ROWS:(j + windows) * BAR_ROWS]
        frames.append(permuted(look, seed * 1000 + j) if null == "fresh" else look)
    out = {}
    for rule, gates in RULES.items():
        log = gate_looks(frames, TrainConfig(gates=gates), other_tests=instruments, until_deployed=True)
        hit = log.index[log["passed"]]
        out[rule] = int(log.loc[hit[0], "look"]) if len(hit) else None
        out[f"{rule}_trials"] = int(log.loc[hit[0], "trials"]) if len(hit) else None
        out[f"{rule}_ic"], out[f"{rule}_sharpe"] = float(log["ic"].median()), float(log["sharpe"].median())
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    "95% Wilson interval of a binomial proportion."
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


RULES = {"old": GateConfig(min_deflated_sharpe=0.0), "new": GateConfig()}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--cutoff", default="2025-06-01", help="the walk-forward ends here")
    parser.add_argument("--seeds", type=int, default=200, help="placebo years per null")
    parser.add_argument("--looks", type=int, default=52, help="weekly looks per year")
    parser.add_argument("--windows", type=int, default=12, help="walk-forward windows judging each look")
    parser.add_argument("--instruments", type=int, default=1, help="instruments tried each week (Bonferroni)")
    parser.add_argument("--planted", type=float, default=0.1, help="planted signal strength (0: skip)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="  (log) %(message)s")
    nominal = 1 - GateConfig().min_deflated_sharpe

    t0 = time.perf_counter()
    preds = walk_forward(args.symbol, args.cutoff, args.windows, args.looks, seed=7)
    variants = [c for c in preds.columns if c == "full" or c.startswith("transfer_")]
    print(f"walk-forward of {args.symbol}: {preds['window'].nunique()} windows ({preds.index[0]} .. "
          f"{preds.index[-1]}), variants {variants}, {time.perf_counter() - t0:.1f} s")
    print(f"each look: {args.windows} windows x {BAR_ROWS} bars, {len(variants)} variants, {args.instruments} "
          f"instrument(s): n_tests {len(variants) * args.instruments}; {args.looks} looks a year\n")

    nulls = [("shared", args.seeds), ("fresh", args.seeds)]
    nulls += [("planted", max(20, args.seeds // 4))] if args.planted else []
    rows = {}
    for null, seeds in nulls:
        t = time.perf_counter()
        jobs = [(preds, seed, null, args.planted, args.windows, args.looks, args.instruments) for seed in range(seeds)]
        years = parallel_map(one_year, jobs, args.jobs)
        for rule in RULES:
            first = [y[rule] for y in years if y[rule] is not None]
            trials = [y[f"{rule}_trials"] for y in years if y[rule] is not None]
            lo, hi = wilson(len(first), seeds)
            rows[(null, rule)] = {"years": seeds, "deployed": len(first), "rate": len(first) / seeds, "ci_low": lo,
                                  "ci_high": hi, "median_first_look": float(np.median(first)) if first else np.nan,
                                  "median_trials": float(np.median(trials)) if trials else np.nan,
                                  "look_ic": float(np.median([y[f"{rule}_ic"] for y in years])),
                                  "look_sharpe": float(np.median([y[f"{rule}_sharpe"] for y in years]))}
        print(f"{null}: {seeds} years in {time.perf_counter() - t:.1f} s")

    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["null", "rule"]
    pd.set_option("display.width", 200)
    print(f"\nyears with at least one deployment (nominal rate of the new rule: {nominal:.0%}; old rule: "
          f"per-week Bonferroni only, new: plus the deflated Sharpe over every trial since the last deployment)")
    print(table.round(3).to_string())
    print("(look_ic, look_sharpe: medians over the years of the median pooled IC and net Sharpe of the chosen variant "
          "at the looks made until the first deployment)")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
