"""The feature graph (operators with a batch and an incremental form) and the catalogue of 112 causal features."""
