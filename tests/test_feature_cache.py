"""The feature cache against the real Redis: keys, TTL, exact NaN round trips, feature-set and prefix isolation.

Every test writes under the run's unique prefix (`redis_url_prefix`), so parallel runs never collide, and the
fixture deletes everything under it afterwards. When Redis is down these tests FAIL (the fixture says what to start).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from trade_matrix.data.cache import MemoryFeatureCache, RedisFeatureCache, open_feature_cache
from trade_matrix.core import ModelError, RedisConfig

pytestmark = pytest.mark.services

T0 = pd.Timestamp("2024-03-01T08:00Z")
NAMES = ["ret_1", "vol_20", "funding_z", "dvol_rank", "aaa_last"]  # deliberately not sorted


def _frame(n=12, seed=3):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n, len(NAMES)))
    values[::3, 2] = np.nan      # missing funding, as during warm-up
    values[5, :] = np.nan        # a whole row of NaN
    values[7, 1] = -0.0
    index = pd.date_range(T0, periods=n, freq="4h", name="ts").as_unit("ns")
    return pd.DataFrame(values, index=index, columns=NAMES)


@pytest.fixture
def cache(redis_url_prefix, request):
    # one sub-prefix per test, under the run's prefix so the fixture's cleanup covers it
    c = RedisFeatureCache(redis_url_prefix.url, prefix=f"{redis_url_prefix.prefix}{request.node.name}:", ttl_s=300)
    yield c
    c.invalidate()
    c.close()


def test_row_round_trips_with_nan_and_name_order(cache):
    row = _frame().iloc[0]
    cache.put("BTCUSDT", T0, "fs1", row)

    got = cache.get("BTCUSDT", T0, "fs1")

    assert list(got.index) == NAMES
    assert got.to_numpy().tobytes() == row.to_numpy().tobytes()  # bit for bit, NaN included
    assert np.isnan(got["funding_z"])
    assert got.name == T0


def test_block_round_trips_in_one_pipeline_and_absent_bars_are_left_out(cache):
    frame = _frame()
    assert cache.put_many("ETHUSDT", "fs1", frame.iloc[:8]) == 8

    got = cache.get_many("ETHUSDT", frame.index, "fs1")

    pd.testing.assert_frame_equal(got, frame.iloc[:8], check_freq=False)
    assert got.iloc[5].isna().all()
    assert np.signbit(got.iloc[7, 1]) and got.iloc[7, 1] == 0.0


def test_every_key_gets_the_ttl(cache):
    frame = _frame()
    cache.put_many("SOLUSDT", "fs1", frame)

    keys = [cache.key("SOLUSDT", t, "fs1") for t in frame.index] + [cache.names_key("fs1")]
    ttls = [cache.client.pttl(k) for k in keys]

    assert all(295_000 < t <= 300_000 for t in ttls), ttls
    assert keys[0] == f"{cache.prefix}features:fs1:SOLUSDT:2024-03-01T08:00:00Z"


def test_short_ttl_expires_the_row(redis_url_prefix):
    c = RedisFeatureCache(redis_url_prefix.url, prefix=f"{redis_url_prefix.prefix}expiry:", ttl_s=0.02)
    c.put("BTCUSDT", T0, "fs1", _frame().iloc[0])
    key = c.key("BTCUSDT", T0, "fs1")
    assert c.client.pttl(key) <= 20
    # poll the server's own expiry (bounded) instead of sleeping a fixed time
    deadline = time.monotonic() + 2.0
    while c.client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not c.client.exists(key), "the key outlived its TTL"
    assert c.get("BTCUSDT", T0, "fs1") is None
    c.close()


def test_another_feature_set_checksum_misses(cache):
    cache.put_many("BTCUSDT", "fs1", _frame())

    assert cache.get("BTCUSDT", T0, "fs2") is None
    assert cache.get_many("BTCUSDT", _frame().index, "fs2").empty
    assert cache.get("ETHUSDT", T0, "fs1") is None


def test_one_checksum_cannot_hold_two_feature_lists(cache):
    cache.put_many("BTCUSDT", "fs1", _frame())
    reordered = _frame()[NAMES[::-1]]

    with pytest.raises(ModelError, match="checksum fs1 already names 5 features"):
        cache.put_many("BTCUSDT", "fs1", reordered)


def test_two_prefixes_never_see_each_others_keys(redis_url_prefix):
    a = RedisFeatureCache(redis_url_prefix.url, prefix=f"{redis_url_prefix.prefix}deploy_a:", ttl_s=300)
    b = RedisFeatureCache(redis_url_prefix.url, prefix=f"{redis_url_prefix.prefix}deploy_b:", ttl_s=300)
    frame = _frame()
    a.put_many("BTCUSDT", "fs1", frame)

    assert b.get("BTCUSDT", T0, "fs1") is None
    assert b.get_many("BTCUSDT", frame.index, "fs1").empty
    b.put_many("BTCUSDT", "fs1", frame[NAMES[::-1]])  # b may use other names under the same checksum
    assert b.invalidate() == len(frame) + 1
    assert len(a.get_many("BTCUSDT", frame.index, "fs1")) == len(frame)  # b's invalidation left a alone
    assert list(a.get("BTCUSDT", T0, "fs1").index) == NAMES
    a.invalidate()
    a.close(), b.close()


def test_invalidate_one_symbol_keeps_the_others(cache):
    frame = _frame()
    cache.put_many("BTCUSDT", "fs1", frame)
    cache.put_many("ETHUSDT", "fs1", frame)

    assert cache.invalidate("BTCUSDT") == len(frame)

    assert cache.get_many("BTCUSDT", frame.index, "fs1").empty
    assert len(cache.get_many("ETHUSDT", frame.index, "fs1")) == len(frame)


def test_open_feature_cache_picks_redis_when_configured(redis_url_prefix):
    c = open_feature_cache(RedisConfig(url=redis_url_prefix.url, prefix=f"{redis_url_prefix.prefix}open:"), ttl_s=60)
    assert isinstance(c, RedisFeatureCache) and c.prefix.endswith("open:")
    c.put("BTCUSDT", T0, "fs1", _frame().iloc[0])
    assert c.get("BTCUSDT", T0, "fs1") is not None
    c.invalidate()
    c.close()
    assert isinstance(open_feature_cache(RedisConfig()), MemoryFeatureCache)
