"""Notebook-first ML/RL crypto trading: research to production

Modules:

- `trade_matrix.data`: The bottom layer. Everything above it reads market data through here, so this is where we make sure the bars are what they claim to be and that no later layer can see the future by accident.
- `trade_matrix.features`: Where research results are won or silently lost. Every feature here is strictly causal, defined once, and computed the same way in research (batch) and in the live loop (incremental)."""

__version__ = "0.1.0"
