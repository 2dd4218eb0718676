"""The circuit breaker, portfolio VaR, the pre-trade risk engine and the hierarchical-risk-parity allocation."""
