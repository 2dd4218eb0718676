"""Exchange data sources, Bybit v5 (REST and the kline WebSocket) and Deribit (DVOL), behind one retry policy."""
