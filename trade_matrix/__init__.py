"""Notebook-first ML/RL crypto trading: research to production

Modules:

- `trade_matrix.data`: The bottom layer. Everything above it reads market data through here, so this is where we make sure the bars are what they claim to be and that no later layer can see the future by accident."""

__version__ = "0.1.0"
