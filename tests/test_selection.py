"""Boruta selection and the locked feature list: scenarios on synthetic data with a known answer, the locked file's
refusals, fail-closed alignment, and the real bundled data.

The full-size real-data runs are marked `slow` (about a minute for the three symbols and the placebo); CI runs them.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trade_matrix.core import DataError, ModelError
from trade_matrix.models.selection import (Decision, LockedFeatures, SelectionConfig, apply_size_rule, boruta,
                                           boruta_decide, features_checksum, planted_signal_frame, select_features)

# small and quick: 50 trees, 30 iterations
FAST = SelectionConfig(n_estimators=50, max_iter=30)


@pytest.fixture(scope="module")
def planted():
    return planted_signal_frame(n_rows=2000, n_noise=40, seed=3)


@pytest.fixture(scope="module")
def planted_result(planted):
    X, y, _ = planted
    return boruta(X, y, FAST, symbol="PLANTED")


def test_planted_signal_features_are_selected(planted, planted_result):
    _, _, names = planted
    r = planted_result

    assert set(names) <= set(r.confirmed)
    assert set(r.selected[: len(names)]) == set(names)  # the planted features lead the list
    assert len(set(r.confirmed) - set(names)) <= 1


def test_noise_beside_a_planted_signal_is_mostly_rejected(planted, planted_result):
    X, _, names = planted
    noise = [c for c in X.columns if c not in names]

    rejected_noise = [c for c in noise if planted_result.decisions[c] is Decision.REJECTED]

    assert len(rejected_noise) >= 0.85 * len(noise)


def test_placebo_noise_features_are_rejected():
    X, _, names = planted_signal_frame(n_rows=1500, n_noise=40, seed=11)
    placebo = pd.Series(np.random.default_rng(12).standard_normal(len(X)), index=X.index)

    r = boruta(X, placebo, FAST)

    assert r.confirmed == ()
    assert len(r.rejected) >= 0.8 * X.shape[1]
    assert r.roughly_fixed == ()                          # the rough fix accepts no noise either
    assert len(r.selected) == FAST.min_features           # the size rule still returns a list ...
    assert len(r.filled) >= FAST.min_features - len(r.tentative)
    assert "filled" in r.rule                             # ... and says it was filled from rejected features


def test_padding_is_recorded_in_the_result_and_named_in_a_warning(caplog):
    X, _, _ = planted_signal_frame(n_rows=1500, n_noise=40, seed=11)
    placebo = pd.Series(np.random.default_rng(12).standard_normal(len(X)), index=X.index)

    with caplog.at_level("WARNING", logger="trade_matrix.models.selection"):
        r = boruta(X, placebo, FAST, symbol="PLACEBO")

    assert len(r.filled) == FAST.min_features
    assert set(r.filled) <= set(r.selected) and not set(r.filled) & set(r.confirmed + r.roughly_fixed)
    message = " ".join(rec.getMessage() for rec in caplog.records)
    assert "PLACEBO" in message and "padded with 9" in message
    assert all(name in message for name in r.filled)


def test_rough_fix_accepts_the_tentative_whose_median_importance_beats_the_median_shadow_bar(planted):
    X, y, _ = planted
    cfg = SelectionConfig(n_estimators=30, max_iter=8)  # few iterations: many features still tentative

    rough = boruta(X, y, cfg)
    keep = boruta(X, y, cfg.model_copy(update={"tentative_fix": "keep"}))

    med, bar = rough.median_importance, rough.shadow_max.median()
    assert len(rough.tentative) >= 5
    assert set(rough.roughly_fixed) == {n for n in rough.tentative if med[n] > bar}
    assert 0 < len(rough.roughly_fixed) < len(rough.tentative)          # it decides, both ways
    declined = set(rough.tentative) - set(rough.roughly_fixed)
    assert not declined & (set(rough.selected) - set(rough.filled))      # declined ones are only ever padding
    assert keep.roughly_fixed == () and keep.decisions == rough.decisions
    assert "accepted by the rough fix" in rough.rule and "accepted by the rough fix" not in keep.rule


def test_selection_is_deterministic_under_seed(planted):
    X, y, _ = planted
    cfg = SelectionConfig(n_estimators=30, max_iter=12)

    a, b = boruta(X, y, cfg), boruta(X, y, cfg)
    c = boruta(X, y, cfg.model_copy(update={"seed": cfg.seed + 1}))

    assert a.selected == b.selected
    assert a.decisions == b.decisions
    pd.testing.assert_frame_equal(a.importance_history, b.importance_history)
    pd.testing.assert_series_equal(a.shadow_max, b.shadow_max)
    assert not c.shadow_max.equals(a.shadow_max)          # the seed really drives the shadows


def test_result_records_the_evidence(planted, planted_result):
    X, _, _ = planted
    r = planted_result

    assert list(r.importance_history.columns) == list(X.columns)
    assert len(r.shadow_max) == r.n_iterations == len(r.importance_history)
    assert set(r.decisions) == set(X.columns)
    for name in r.rejected:  # a rejected feature leaves the fits: NaN from then on
        assert r.importance_history[name].isna().iloc[-1] or r.n_iterations == 1
    assert r.seed == FAST.seed and r.elapsed_s > 0
    summary = r.summary()
    assert summary["selected"].dropna().tolist() == list(range(1, len(r.selected) + 1))


def test_decisions_match_borutapy_reference():
    from boruta import BorutaPy
    ref = BorutaPy(estimator=None)
    rng = np.random.default_rng(4)
    for _ in range(200):
        n, it = int(rng.integers(2, 50)), int(rng.integers(1, 60))
        dec, hits = rng.choice([-1, 0, 0, 1], n), rng.binomial(it, rng.uniform(0, 1, n))
        assert boruta_decide(dec, hits, it).tolist() == ref._do_tests(dec.copy(), hits.copy(), it).tolist()


def test_size_rule_caps_at_max_and_fills_to_min():
    names = [f"f{i}" for i in range(20)]
    history = pd.DataFrame([np.linspace(0.2, 0.01, 20)] * 5, columns=names)
    hits = pd.Series(np.arange(20, 0, -1), index=names)
    many = {n: Decision.CONFIRMED if i < 15 else Decision.REJECTED for i, n in enumerate(names)}
    few = {n: Decision.CONFIRMED if i < 3 else Decision.REJECTED for i, n in enumerate(names)}

    capped, rule_cap, _ = apply_size_rule(many, hits, history, 9, 13)
    filled_list, rule_fill, filled = apply_size_rule(few, hits, history, 9, 13)

    assert capped == tuple(names[:13]) and "capped" in rule_cap
    assert len(filled_list) == 9 and filled == tuple(names[3:9]) and "filled 6" in rule_fill


def test_bad_inputs_are_refused_with_what_to_fix(planted):
    X, y, _ = planted
    with pytest.raises(DataError, match="not aligned"):
        boruta(X.iloc[1:], y)
    with pytest.raises(DataError, match="label has 1 NaN"):
        boruta(X, y.mask(y.index == y.index[5]))
    with pytest.raises(DataError, match="infinite values in"):
        boruta(X.assign(**{X.columns[0]: np.inf}), y)


# --- the locked feature list ----------------------------------------------------------------------------------

LOCK = LockedFeatures(model_id="m1", instrument="BTCUSDT", training_date="2025-01-01",
                      features=("ret_6", "atr_14", "mfi_14", "rs_eth_42", "bb_width_20"),
                      feature_set_version="fs-test", created_at="2025-01-02T10:00Z")


def test_locked_features_round_trip(tmp_path):
    path = LOCK.write(tmp_path / "sub" / "locked_features.json")

    back = LockedFeatures.read(path)
    doc = json.loads(path.read_text())

    assert back == LOCK
    assert doc["sha256"] == features_checksum(LOCK.features) == LOCK.checksum
    assert doc["count"] == 5 and doc["training_date"] == "2025-01-01T00:00:00Z"
    # the canonical form, spelled out
    import hashlib
    assert LOCK.checksum == hashlib.sha256(b'["ret_6","atr_14","mfi_14","rs_eth_42","bb_width_20"]').hexdigest()


def _edit(fn):
    def apply(text):
        doc = json.loads(text)
        fn(doc)
        return json.dumps(doc)
    return apply


CORRUPTIONS = {
    "truncated_json": (lambda t: t[: len(t) // 3], "not valid JSON"),
    "empty_file": (lambda t: "", "not valid JSON"),
    "missing_field": (_edit(lambda d: d.pop("count")), "missing fields ['count']"),
    "unknown_field": (_edit(lambda d: d.update(extra=1)), "unexpected fields ['extra']"),
    "count_mismatch": (_edit(lambda d: d.update(count=4)), "count says 4 but 5"),
    "tampered_checksum": (_edit(lambda d: d.update(sha256="f" * 64)), "checksum mismatch"),
    "tampered_list_reordered": (_edit(lambda d: d["features"].reverse()), "checksum mismatch"),
    "tampered_list_renamed": (_edit(lambda d: d["features"].__setitem__(1, "atr_21")), "checksum mismatch"),
    "tampered_list_dropped_with_count": (_edit(lambda d: (d["features"].pop(), d.update(count=4))), "checksum mismatch"),
    "features_not_a_list": (_edit(lambda d: d.update(features="ret_6")), "must be a list"),
    "duplicate_names_rehashed": (_edit(lambda d: d.update(features=["a", "a"], count=2, sha256=features_checksum(["a", "a"]))),
                                 "repeat"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_locked_features_refuse_each_corruption(tmp_path, case):
    path = LOCK.write(tmp_path / "locked_features.json")
    corrupt, message = CORRUPTIONS[case]
    path.write_text(corrupt(path.read_text()))

    with pytest.raises(ModelError) as err:
        LockedFeatures.read(path)

    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_locked_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        LockedFeatures.read(tmp_path / "locked_features.json")


def _inference_frame(n=300, seed=0, extra=()):
    rng = np.random.default_rng(seed)
    cols = list(LOCK.features) + list(extra)
    X = pd.DataFrame(rng.standard_normal((n, len(cols))), columns=cols,
                     index=pd.date_range("2024-01-01", periods=n, freq="4h", tz="UTC", name="ts"))
    X.iloc[::17, 2] = np.nan
    return X


def test_reordered_frame_predicts_identically():
    import xgboost as xgb
    X = _inference_frame()
    y = 0.5 * X["ret_6"] - 0.3 * X["atr_14"].fillna(0) + np.random.default_rng(1).normal(0, 0.1, len(X))
    model = xgb.XGBRegressor(n_estimators=25, max_depth=3, n_jobs=1, random_state=0)
    model.fit(LOCK.align(X).to_numpy(), y.to_numpy())
    reordered = X[list(np.random.default_rng(2).permutation(X.columns))]
    assert list(reordered.columns) != list(X.columns)

    aligned = LOCK.align(reordered)

    pd.testing.assert_frame_equal(aligned, LOCK.align(X))
    np.testing.assert_array_equal(model.predict(aligned.to_numpy()), model.predict(LOCK.align(X).to_numpy()))
    assert not np.array_equal(model.predict(reordered.to_numpy()), model.predict(X.to_numpy()))  # the hazard


@pytest.mark.parametrize("change, missing, extra", [
    (lambda X: X.drop(columns=["mfi_14"]), ["mfi_14"], []),
    (lambda X: X.assign(vwap_dist_42=0.0), [], ["vwap_dist_42"]),
    (lambda X: X.rename(columns={"atr_14": "atr_14_rank"}), ["atr_14"], ["atr_14_rank"]),
    (lambda X: X.drop(columns=["ret_6", "bb_width_20"]).assign(ret_7=0.0), ["ret_6", "bb_width_20"], ["ret_7"]),
])
def test_align_refuses_missing_extra_or_renamed_before_predicting(change, missing, extra):
    with pytest.raises(ModelError) as err:
        LOCK.align(change(_inference_frame()))
    assert f"missing {missing}, extra {extra}" in str(err.value)
    assert "model m1" in str(err.value)


def test_align_with_allow_extra_picks_the_locked_columns_from_a_full_frame():
    X = _inference_frame(extra=("ema_slope_12", "dvol_level"))
    aligned = LOCK.align(X, allow_extra=True)
    assert list(aligned.columns) == list(LOCK.features)
    with pytest.raises(ModelError, match=r"missing \['atr_14'\]"):
        LOCK.align(X.drop(columns=["atr_14"]), allow_extra=True)  # missing is never allowed


# --- real bundled data -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def market():
    from trade_matrix.data.market import load_market_data
    return load_market_data(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"])


def test_select_features_sees_only_data_known_at_until(market):
    until = pd.Timestamp("2024-01-01", tz="UTC")
    cfg = SelectionConfig(n_estimators=30, max_iter=8, train_bars=1500)

    r = select_features(market, "BTCUSDT", until=until, config=cfg)

    assert r.n_rows == 1500 and r.known_by == until
    # the last training row's label needs the close of the next bar: known by `until`
    assert r.train_end + 2 * pd.Timedelta(hours=4) <= until
    lock = LockedFeatures.from_selection(r, model_id="btc-test")
    assert lock.training_date == "2024-01-01T00:00:00Z" and lock.features == r.selected
    assert lock.feature_set_version.startswith("fs-112-")


@pytest.mark.slow
@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
def test_real_data_selection_chooses_9_to_13_features(market, symbol):
    r = select_features(market, symbol)
    assert 9 <= len(r.selected) <= 13
    assert len(r.confirmed) >= 5
    accepted = len(r.confirmed) + len(r.roughly_fixed)
    assert len(r.filled) == max(0, r.config.min_features - accepted) <= 2  # mostly Boruta's own, padding only to the floor


@pytest.mark.slow
def test_real_features_against_a_shuffled_label_confirm_and_roughly_fix_nothing(market):
    from trade_matrix.features.catalogue import compute_features, forward_return
    features = compute_features(market, "BTCUSDT").features
    label = forward_return(market.bars("BTCUSDT"))
    ok = label.notna().to_numpy()
    x, y = features[ok].iloc[-4000:], label[ok].iloc[-4000:]
    shuffled = pd.Series(np.random.default_rng(0).permutation(y.to_numpy()), index=y.index)

    r = boruta(x, shuffled, SelectionConfig())

    assert len(r.confirmed) <= 1 and r.roughly_fixed == ()
