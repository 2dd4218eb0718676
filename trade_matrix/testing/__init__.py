"""Loopback Bybit v5 and Deribit servers on 127.0.0.1 that speak the real wire formats (signatures, error codes,
faults), for tests."""
