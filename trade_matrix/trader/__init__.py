"""The one decision step the replay and the live trader share, and the trader's configuration. Never imports
backtest, research, the paper exchange or training."""
