"""The signal state, the regime model and filter, Kelly sizing and the RL/Kelly cascade, and the RL policy as the
cascade uses it. Imports only core."""
