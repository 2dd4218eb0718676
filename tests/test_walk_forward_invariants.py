"""Purged walk-forward splits, property-based: for any layout the splits never let a training label reach a test
window, the test windows tile the end of the data in order, the purge gap is honoured, and a purge shorter than
the label horizon is refused.

Each example draws a layout (windows, window length, horizon, purge >= horizon, embargo, expanding or rolling,
optional cap on the training length) and a row count that leaves room for it, then checks every split.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trade_matrix.core import DataError
from trade_matrix.models.validation import WalkForwardConfig, walk_forward_splits

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layouts(draw) -> tuple[int, WalkForwardConfig]:
    "A valid walk-forward layout and a row count large enough for it (sometimes with spare rows)."
    horizon = draw(st.integers(1, 12))
    purge = horizon + draw(st.integers(0, 30))
    min_train = draw(st.integers(1, 60))
    mode = draw(st.sampled_from(["expanding", "rolling"]))
    if mode == "rolling":
        train_bars = min_train + draw(st.integers(0, 40))
    else:
        train_bars = draw(st.one_of(st.none(), st.integers(min_train, min_train + 40)))
    config = WalkForwardConfig(n_windows=draw(st.integers(1, 12)), test_bars=draw(st.integers(1, 25)),
                               purge_bars=purge, embargo_bars=draw(st.integers(0, 20)), horizon=horizon, mode=mode,
                               train_bars=train_bars, min_train_bars=min_train)
    need = (train_bars if mode == "rolling" else min_train) + purge + config.test_rows
    return need + draw(st.integers(0, 150)), config


@SETTINGS
@given(layouts())
def test_no_training_label_reaches_the_test_window_or_the_purge_gap(layout):
    n_rows, c = layout
    for s in walk_forward_splits(n_rows, c):
        assert len(s.train) > 0
        # every training row lies before the purge gap, so its label (row + horizon) ends before the test window
        assert s.train.max() < s.test_start - c.purge_bars
        assert (s.train + c.horizon).max() < s.test_start
        # nothing in [test start - purge, test end + embargo) trains this split, in particular no test row
        assert not np.any((s.train >= s.test_start - c.purge_bars) & (s.train < s.test_end + c.embargo_bars))
        assert np.intersect1d(s.train, s.test).size == 0
        assert s.train.min() >= 0 and s.test.max() < n_rows


@SETTINGS
@given(layouts())
def test_test_windows_are_disjoint_ordered_and_contiguous_and_end_with_the_data(layout):
    n_rows, c = layout
    splits = walk_forward_splits(n_rows, c)
    assert [s.window for s in splits] == list(range(c.n_windows))
    for s in splits:
        np.testing.assert_array_equal(s.test, np.arange(s.test_start, s.test_start + c.test_bars))
        # training rows are one contiguous block, sorted
        np.testing.assert_array_equal(s.train, np.arange(s.train_start, s.train_end))
    for before, after in zip(splits, splits[1:]):
        assert after.test_start == before.test_end          # back to back: no test row skipped or shared
    assert splits[0].test_start == n_rows - c.test_rows and splits[-1].test_end == n_rows


@SETTINGS
@given(layouts())
def test_purge_gap_is_at_least_purge_and_training_length_follows_the_mode(layout):
    n_rows, c = layout
    splits = walk_forward_splits(n_rows, c)
    for s in splits:
        assert s.test_start - s.train_end >= c.purge_bars
        if c.mode == "rolling":
            assert len(s.train) == c.train_bars
        else:
            assert len(s.train) >= min(c.min_train_bars, s.train_end)
            if c.train_bars is None:
                assert s.train_start == 0
            else:
                assert len(s.train) <= c.train_bars
    if c.mode == "expanding":
        assert all(a.train_end < b.train_end for a, b in zip(splits, splits[1:]))
        assert all(len(a.train) <= len(b.train) for a, b in zip(splits, splits[1:]))


@SETTINGS
@given(horizon=st.integers(2, 50), short_by=st.integers(1, 50))
def test_a_purge_shorter_than_the_horizon_is_refused_with_a_clear_error(horizon, short_by):
    purge = max(0, horizon - short_by)
    with pytest.raises(ValidationError, match=rf"purge_bars \({purge}\) is below horizon \({horizon}\).*purge_bars >= horizon"):
        WalkForwardConfig(purge_bars=purge, horizon=horizon)


@SETTINGS
@given(layouts(), st.integers(1, 50))
def test_too_few_rows_for_the_layout_is_a_data_error_naming_the_rows_needed(layout, missing):
    n_rows, c = layout
    need = (c.train_bars if c.mode == "rolling" else c.min_train_bars) + c.purge_bars + c.test_rows
    with pytest.raises(DataError, match=rf"walk-forward needs {need} labelled rows"):
        walk_forward_splits(need - missing, c)
