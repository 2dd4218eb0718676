"""Training-time analysis: out-of-sample signal frames, regime history and GARCH, RL training and evaluation."""
