"""Notebook-first ML/RL crypto trading: research to production

Modules:

- `trade_matrix.data`: The bottom layer. Everything above it reads market data through here, so this is where we make sure the bars are what they claim to be and that no later layer can see the future by accident.
- `trade_matrix.execution`: Where a decision becomes a position. The paper exchange fills at the next bar's open with slippage and the taker fee, settles funding, and keeps cash and positions to the last satoshi.
- `trade_matrix.features`: Where research results are won or silently lost. Every feature here is strictly causal, defined once, and computed the same way in research (batch) and in the live loop (incremental).
- `trade_matrix.models`: A model is allowed into production only as the output of a procedure that was itself tested out of sample: features chosen before the test windows, trees fitted only on the past of each window, figures net of fees, and a p-value that knows how many variants were tried.
- `trade_matrix.regime`: Sizing and risk need to know what kind of market this is (calm and rising, calm and falling, drifting, or in a crisis) using only what was known at the time. This notebook fits a 4-state Markov-switching model on the past, names its states by a written rule, and runs its Hamilton filter forward, one bar at a time, without ever refitting inside a bar.
- `trade_matrix.replay`: The exact code the live trader runs on every closed bar, fed the history in time order against the paper exchange, and a check that it holds the same positions as the research backtest.
- `trade_matrix.risk`: A strategy proposes, risk approves, resizes or denies, execution sends. Nothing reaches the exchange that this module has not checked, and every "no" is written down with its reason.
- `trade_matrix.rl`: A policy that decides how much to hold, trained on a simulator that charges fees, spread and impact on every change of position, and trusted only as far as it beats fractional Kelly out of sample."""

__version__ = "0.1.0"
