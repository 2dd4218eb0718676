"""Research accounting, the replay through the decision step, parity, weekly retraining inside a backtest, reports,
and the backtest use case."""
