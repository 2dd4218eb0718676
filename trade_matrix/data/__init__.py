"""Market data and its validation (gaps, as-of views), the bar store (DuckDB or PostgreSQL), the feature cache and
the state stores."""
