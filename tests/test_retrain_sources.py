"""The retrain's data step with `source="bybit"`: bars and funding backfilled from a loopback Bybit, DVOL from a
loopback Deribit, through the store into bundle files, then validated like the bundled data."""
import ast
import json
from pathlib import Path

import pandas as pd

from trade_matrix.core import SeriesKind
from trade_matrix.data.market import DataCatalog, read_data_file
from trade_matrix.core import ManualClock
from trade_matrix.testing.bybit import BybitLoopback
from trade_matrix.testing.deribit import DeribitLoopback
from trade_matrix.retrain.params import RetrainParams
from trade_matrix.retrain.steps import step_data

ROOT = Path(__file__).resolve().parents[1]


def _bundled(kind, key, interval, start, end):
    return read_data_file(DataCatalog().find(kind, key, interval)).frame.loc[start:end]


def test_bybit_source_backfills_validates_and_keeps_gaps(tmp_path, monkeypatch):
    btc = _bundled(SeriesKind.OHLCV, "BTCUSDT", "1h", "2024-01-01", "2024-03-31")
    btc = btc.drop(btc.index[100:104])                          # a real-looking 4-hour hole: reported, never filled
    funding = _bundled(SeriesKind.FUNDING, "BTCUSDT", "8h", "2024-01-01", "2024-03-31")
    dvol = _bundled(SeriesKind.DVOL, "BTC", "1d", "2023-12-01", "2024-03-31")
    clock = ManualClock("2024-04-01T00:00Z")
    with BybitLoopback(clock=clock) as bybit, DeribitLoopback(clock=clock) as deribit:
        bybit.load_klines("linear", "BTCUSDT", btc)
        bybit.load_funding("BTCUSDT", funding)
        deribit.load_dvol("BTC", dvol)
        monkeypatch.setenv("TM_BYBIT__ENDPOINT", bybit.url)
        params = RetrainParams(symbols=["BTCUSDT"], source="bybit", fetch_from="2024-01-01", as_of="2024-04-01",
                               deribit_url=deribit.url, home=str(tmp_path / "home"))
        data = step_data(params)

    md = data.outputs["md"]
    out = tmp_path / "home" / "retrain-data"
    assert {p.name for p in out.iterdir()} >= {"bybit_linear_BTCUSDT_1h.csv.gz", "bybit_linear_BTCUSDT_funding_8h.csv.gz",
                                              "deribit_BTC_DVOL_1d.csv.gz"}
    assert len(md.bars("BTCUSDT")) == 91 * 6 - 1                     # Jan 1 .. Mar 31 less the 4h bar of the hole
    btc_summary = data.summary["symbols"]["BTCUSDT"]
    assert btc_summary["gap_episodes"] == 1 and btc_summary["missing_bars"] == 4
    assert btc_summary["funding_rows"] == len(funding) and data.summary["source"] == "bybit"
    files = DataCatalog(out)
    got = read_data_file(files.find(SeriesKind.OHLCV, "BTCUSDT", "1h")).frame
    pd.testing.assert_frame_equal(got[btc.columns], btc, check_freq=False)
    assert len(read_data_file(files.find(SeriesKind.DVOL, "BTC", "1d")).frame) == len(dvol.loc["2024-01-01":])


def test_the_papermill_notebook_declares_every_parameter():
    nb = json.loads((ROOT / "research" / "retrain.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1
    names = {t.id for node in ast.parse("".join(cells[0]["source"])).body for t in getattr(node, "targets", [])}
    assert set(RetrainParams.model_fields) <= names and "run_dir" in names
