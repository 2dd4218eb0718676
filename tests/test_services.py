"""The real services the system uses are reachable, and each test run is isolated from every other."""
import psycopg
import pytest
import redis


@pytest.mark.services
def test_each_run_gets_its_own_postgres_database(pg_test_database_url):
    with psycopg.connect(pg_test_database_url) as conn:
        name = conn.execute("select current_database()").fetchone()[0]
    assert name.startswith("tm_test_") and name in pg_test_database_url


@pytest.mark.services
def test_each_run_gets_its_own_redis_prefix(redis_url_prefix):
    client = redis.Redis.from_url(redis_url_prefix.url)
    assert redis_url_prefix.prefix.startswith("tm_test_")
    assert not list(client.scan_iter(match=redis_url_prefix.prefix + "*")), "a fresh prefix holds nothing"
    client.set(redis_url_prefix.prefix + "probe", "1", ex=60)
    assert client.get(redis_url_prefix.prefix + "probe") == b"1"
