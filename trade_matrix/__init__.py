"""Notebook-first ML/RL crypto trading: research to production

Modules:

- `trade_matrix.data.market`: The bottom layer. Everything above it reads market data through here, so this is where we make sure the bars are what they claim to be and that no later layer can see the future by accident.
- `trade_matrix.features.catalogue`: Where research results are won or silently lost. Every feature here is strictly causal, defined once, and computed the same way in research (batch) and in the live loop (incremental).
- `trade_matrix.models.training`: A model is allowed into production only as the output of a procedure that was itself tested out of sample: features chosen before the test windows, trees fitted only on the past of each window, figures net of fees, slippage and funding, and gates that know how many variants and weekly looks were tried.
- `trade_matrix.research.rl`: A policy that decides how much to hold, trained on a simulator that charges the one cost model (fee and slippage on every change of position, funding on the position held), and trusted only as far as it beats fractional Kelly out of sample.
- `trade_matrix.strategy.regime`: Sizing and risk need to know what kind of market this is (calm and rising, calm and falling, drifting, or in a crisis) using only what was known at the time. The regime layer fits a 4-state Markov-switching model on the past, names its states by a written rule, and runs its Hamilton filter forward, one bar at a time, without ever refitting inside a bar."""

__version__ = "0.1.0"
