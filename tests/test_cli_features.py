"""`tm features`: the 112 columns, computed only from what was known by --until."""
import subprocess
import sys

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from trade_matrix.cli.app import app
from trade_matrix.data.market import load_market_data
from trade_matrix.features.catalogue import FEATURE_NAMES, compute_features


def test_features_until_writes_112_columns_known_by_then(tmp_path):
    out = tmp_path / "sol.parquet"
    res = CliRunner().invoke(app, ["features", "--symbol", "SOLUSDT", "--until", "2024-06-01T10:00Z", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    f = pd.read_parquet(out)
    assert list(f.columns) == FEATURE_NAMES and str(f.index.dtype) == "datetime64[ns, UTC]"
    # the 04:00 bar closed at 08:00 <= 10:00; the 08:00 bar closes at 12:00, after --until
    assert f.index[-1] == pd.Timestamp("2024-06-01T04:00Z")
    full = compute_features(load_market_data(symbols=["SOLUSDT", "BTCUSDT", "ETHUSDT"]), "SOLUSDT").features
    np.testing.assert_array_equal(f.to_numpy(), full.loc[: f.index[-1]].to_numpy())
    assert set(pd.read_parquet(out.with_suffix(".mask.parquet")).columns) >= {"dvol_available", "funding_available"}


def test_unknown_symbol_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from trade_matrix.cli import main; main()", "features", "--symbol", "XRPUSDT",
                        "--out", str(tmp_path / "x.parquet")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no bar file for XRPUSDT" in r.stderr and "BTCUSDT" in r.stderr


def test_select_prints_9_to_13_features_and_writes_a_verifiable_lock(tmp_path):
    from trade_matrix.models.selection import LockedFeatures
    lock = tmp_path / "locked_features.json"
    res = CliRunner().invoke(app, ["select", "--symbol", "SOLUSDT", "--until", "2025-01-01", "--lock", str(lock), "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    import json
    doc = json.loads(res.stdout)
    assert 9 <= doc["count"] <= 13 and doc["known_by"] == "2025-01-01T00:00:00Z"
    locked = LockedFeatures.read(lock)
    assert list(locked.features) == doc["selected"] and locked.checksum == doc["sha256"]
    assert set(doc["selected"]) <= set(FEATURE_NAMES)
