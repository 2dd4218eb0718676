"""Notebook-first ML/RL crypto trading: research to production

Modules:

- `trade_matrix.data`: The bottom layer. Everything above it reads market data through here, so this is where we make sure the bars are what they claim to be and that no later layer can see the future by accident.
- `trade_matrix.features`: Where research results are won or silently lost. Every feature here is strictly causal, defined once, and computed the same way in research (batch) and in the live loop (incremental).
- `trade_matrix.models`: A model is allowed into production only as the output of a procedure that was itself tested out of sample: features chosen before the test windows, trees fitted only on the past of each window, figures net of fees, and a p-value that knows how many variants were tried."""

__version__ = "0.1.0"
