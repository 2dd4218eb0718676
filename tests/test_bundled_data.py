"""The bundled data checks out exactly as its provenance note says, and the as-of view never leaks."""
import re

import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import BUNDLED_DATA_DIR, SeriesKind, parse_interval
from trade_matrix.data.market import DataCatalog, data_report, load_market_data, load_series, resample_ohlcv

ROW = re.compile(r"^\| (?P<file>\S+\.csv\.gz) \| .*? \| (?P<interval>\w+) \| (?P<first>\S+) \| (?P<last>\S+) \| (?P<rows>\d+) \| "
                 r"(?P<gaps>.*?) \| (?P<largest>.*?) \|$")


def provenance_table():
    rows = {}
    for line in (BUNDLED_DATA_DIR / "PROVENANCE.md").read_text().splitlines():
        if m := ROW.match(line):
            rows[m["file"]] = m.groupdict()
    return rows


def test_report_matches_provenance_row_and_gap_counts():
    expected = provenance_table()
    report = data_report()
    assert {s.file for s in report.series} == set(expected), "every bundled file is in the provenance table"
    for s in report.series:
        e = expected[s.file]
        assert s.rows == int(e["rows"]), s.file
        assert s.first.strftime("%Y-%m-%dT%H:%M:%SZ") == e["first"]
        assert s.last.strftime("%Y-%m-%dT%H:%M:%SZ") == e["last"]
        if e["gaps"] == "0":
            assert s.gaps == [], s.file
        else:
            episodes, missing = re.match(r"(\d+) \((\d+) missing bars\)", e["gaps"]).groups()
            assert (len(s.gaps), s.missing_bars) == (int(episodes), int(missing)), s.file
            size, after = re.match(r"(\d+) bars missing after (\S+)", e["largest"]).groups()
            assert (s.largest_gap.missing_bars, s.largest_gap.to_dict()["after"]) == (int(size), after), s.file


def test_4h_resample_equals_exchange_buckets_and_flags_partial_ones():
    btc = load_series(DataCatalog().find(SeriesKind.OHLCV, "BTCUSDT", "1h"))
    four = btc.resample("4h").frame
    assert (four.index.hour % 4 == 0).all() and (four.index.minute == 0).all()
    # every complete bucket is exactly the aggregate of its four hours
    raw = btc.frame
    for t in four.index[four["complete"]][::997]:
        hours = raw.loc[t: t + pd.Timedelta(hours=3)]
        assert len(hours) == 4
        assert four.loc[t, "open"] == hours["open"].iloc[0] and four.loc[t, "close"] == hours["close"].iloc[-1]
        assert four.loc[t, "high"] == hours["high"].max() and four.loc[t, "low"] == hours["low"].min()
        assert np.isclose(four.loc[t, "volume"], hours["volume"].sum())
    # a bucket with a missing hour is flagged: the 2021-02-11 04:00 hour (maintenance after the 03:00 bar)
    assert four.loc[pd.Timestamp("2021-02-11T04:00Z"), "n_bars"] == 3
    assert not four.loc[pd.Timestamp("2021-02-11T04:00Z"), "complete"]
    # the number of flagged buckets equals the buckets touched by gaps (plus a partial first bucket if any)
    assert int((~four["complete"]).sum()) == 36


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
def test_as_of_view_equals_truncated_inputs_at_random_times(symbol):
    """Cut every input at random times t, keeping only what was known by t; the as-of view must match."""
    md = load_market_data(symbols=[symbol])
    rng = np.random.default_rng(7)
    bars_1h = md.series[(SeriesKind.OHLCV, symbol)].frame
    lo, hi = bars_1h.index[200].value, bars_1h.index[-1].value
    for t in pd.to_datetime(rng.integers(lo, hi, 25), utc=True):
        view = md.as_of(t)
        # bars: only hourly bars that closed by t, only 4h buckets that closed by t
        truncated = bars_1h[bars_1h.index + pd.Timedelta(hours=1) <= t]
        expect = resample_ohlcv(truncated, "1h", "4h")
        expect = expect[expect.index + pd.Timedelta(hours=4) <= t]
        pd.testing.assert_frame_equal(view.bars(symbol), expect)
        assert (view.bars(symbol).index + pd.Timedelta(hours=4) <= t).all()
        # DVOL stamped at a day's start is known only when that day has ended
        d = view.dvol("BTC")
        if len(d):
            assert d.index[-1] + pd.Timedelta(days=1) <= t
            full = md.dvol("BTC")
            nxt = full.index[full.index > d.index[-1]]
            assert not len(nxt) or nxt[0] + pd.Timedelta(days=1) > t
        f = view.funding(symbol)
        if len(f):
            assert f.index[-1] <= t


def test_interval_grid_is_midnight_utc_for_every_file():
    for f in DataCatalog().files:
        s = load_series(f)
        step = parse_interval(f.interval).value
        assert (s.frame.index.asi8 % step == 0).all(), f.path.name
