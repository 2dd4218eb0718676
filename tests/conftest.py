"""Shared fixtures for the integration tests.

Service fixtures use the real PostgreSQL and Redis. When a service is down they FAIL with a message that says
what to start; they never skip, so a green run always means the services were exercised.

Override the targets with TM_TEST_PG_ADMIN_URL (a database the test user may connect to and CREATE DATABASE
from, default postgresql://root@127.0.0.1:5432/postgres) and TM_TEST_REDIS_URL (default redis://127.0.0.1:6379/0).
"""
from __future__ import annotations

import os
import secrets
from typing import NamedTuple
from urllib.parse import urlsplit

from decimal import Decimal

import pandas as pd
import psycopg
import pytest
import redis
from psycopg import sql

from trade_matrix.core import ManualClock
from trade_matrix.execution.bybit import BybitGateway
from trade_matrix.execution.journal import open_journal
from trade_matrix.testing.bybit_exchange import BybitExchange

# the machine's PostgreSQL trusts `root` or `postgres`; use the first that connects unless told otherwise
PG_ADMIN_URLS = ([os.environ["TM_TEST_PG_ADMIN_URL"]] if os.environ.get("TM_TEST_PG_ADMIN_URL") else
                 ["postgresql://root@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/postgres"])
PG_ADMIN_URL = PG_ADMIN_URLS[0]
REDIS_URL = os.environ.get("TM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


# --- PostgreSQL ---------------------------------------------------------------------------------------------

def _pg_admin() -> psycopg.Connection:
    global PG_ADMIN_URL
    problems = []
    for url in PG_ADMIN_URLS:
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
            PG_ADMIN_URL = url
            return conn
        except psycopg.Error as e:
            problems.append(f"{url}: {str(e).strip()}")
    problem = "; ".join(problems)
    pytest.fail(f"PostgreSQL is not reachable: {problem}\n"
                "Start it (for example `service postgresql start`) or point TM_TEST_PG_ADMIN_URL at a server. "
                "Service tests fail rather than skip.", pytrace=False)


@pytest.fixture(scope="session")
def pg_test_database_url() -> str:
    "URL of a fresh database `tm_test_<random>` for this test run; dropped (connections forced closed) at the end."
    name = f"tm_test_{secrets.token_hex(6)}"
    with _pg_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlsplit(PG_ADMIN_URL)._replace(path="/" + name).geturl()
    try:
        yield url
    finally:
        with _pg_admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- Redis --------------------------------------------------------------------------------------------------

class RedisTestTarget(NamedTuple):
    "Where a test may write in Redis: the server URL and a key prefix unique to this run."
    url: str
    prefix: str


@pytest.fixture(scope="session")
def redis_url_prefix() -> RedisTestTarget:
    "(url, prefix) with a run-unique key prefix `tm_test_<random>:`; every key under it is deleted at the end."
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    problem = None
    try:
        client.ping()
    except redis.RedisError as e:
        problem = str(e)
    if problem is not None:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {problem}\n"
                    "Start it (for example `service redis-server start`) or point TM_TEST_REDIS_URL at a server. "
                    "Service tests fail rather than skip.", pytrace=False)
    prefix = f"tm_test_{secrets.token_hex(6)}:"
    try:
        yield RedisTestTarget(REDIS_URL, prefix)
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i:i + 1000])
        client.close()


# --- The simulated Bybit account (the loopback exchange, a journal, the gateway) -----------------------------
# Shared by the order tests (test_bybit_venue, test_bybit_faults, test_reconcile, ...): one simulated account
# with BTCUSDT at 60,000 and ETHUSDT at 3,000, a clock one minute after the 04:00 close of the 00:00 bar, and a
# journal holding run `run-1`. A test that needs something else defines its own fixture of the same name.

SIM_KEY, SIM_SECRET = "key", "secret"
SIM_BAR = pd.Timestamp("2024-03-01T00:00Z")


@pytest.fixture
def clock() -> ManualClock:
    "The simulated time: one minute after the first bar's close."
    return ManualClock(SIM_BAR + pd.Timedelta("4h1min"))


@pytest.fixture
def exchange(clock):
    "The loopback Bybit exchange on that clock, 100,000 USDT, BTCUSDT at 60,000 and ETHUSDT at 3,000."
    with BybitExchange(clock, api_keys={SIM_KEY: SIM_SECRET}, initial_cash=Decimal("100000")) as simulated:
        simulated.set_price("BTCUSDT", "60000")
        simulated.set_price("ETHUSDT", "3000")
        yield simulated


@pytest.fixture
def journal(tmp_path):
    "A DuckDB journal file with run `run-1` begun."
    opened = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    opened.begin_run("run-1", 0, "testnet")
    yield opened
    opened.close()


@pytest.fixture
def gateway(exchange, clock) -> BybitGateway:
    "The Bybit gateway signed with the simulator's key, measuring server time against the simulated clock."
    return BybitGateway(SIM_KEY, SIM_SECRET, endpoint=exchange.url, timeout=5, clock=clock)
