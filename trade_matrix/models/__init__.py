"""Feature selection, purged walk-forward validation and gates, tree training with transfer learning, MLflow
tracking, the registry and its 4-tier loader, compiled tree inference."""
