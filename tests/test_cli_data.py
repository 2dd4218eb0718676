"""`tm data` end to end: loopback exchanges speaking the real wire formats, the embedded store, and files."""
import json
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from trade_matrix.cli.app import app
from trade_matrix.core import SeriesKind
from trade_matrix.data.market import DataCatalog, load_series, read_data_file, parse_data_filename
from trade_matrix.testing.bybit import BybitLoopback
from trade_matrix.testing.deribit import DeribitLoopback
from trade_matrix.data.store import open_store

runner = CliRunner()


def tm(*args):
    res = runner.invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout) if "--json" in args else res.stdout


@pytest.fixture()
def sol_1h():
    return load_series(DataCatalog().find(SeriesKind.OHLCV, "SOLUSDT", "1h")).frame


def test_backfill_fetches_only_missing_bars_keeps_exchange_gap_and_is_idempotent(tmp_path, sol_1h):
    # Arrange: the exchange has the real bars of March 2023, with its real maintenance gap after 2023-03-24 12:00;
    # our store holds the same window with 30 bars lost.
    window = sol_1h.loc["2023-03-20":"2023-03-27"]
    stored = window.drop(window.index[40:70])
    url = f"duckdb:///{tmp_path}/store.duckdb"
    with open_store(url) as st:
        st.write(SeriesKind.OHLCV, "SOLUSDT", "1h", stored, "bybit_linear")
    with BybitLoopback() as ex:
        ex.load_klines("linear", "SOLUSDT", window)
        # Act
        first = tm("data", "backfill", "--symbol", "SOLUSDT", "--from", "2023-03-20", "--to", "2023-03-28",
                   "--endpoint", ex.url, "--store", url, "--json")
        second = tm("data", "backfill", "--symbol", "SOLUSDT", "--from", "2023-03-20", "--to", "2023-03-28",
                    "--endpoint", ex.url, "--store", url, "--json")
    # Assert: exactly the 30 lost bars came back; the exchange's own gap stays a gap; the rerun writes nothing
    assert (first["inserted"], first["updated"]) == (30, 0)
    assert first["still_missing"] == [{"from": "2023-03-24T13:00:00Z", "to": "2023-03-24T14:00:00Z"}]
    assert (second["inserted"], second["updated"], second["still_missing_bars"]) == (0, 0, 1)
    with open_store(url) as st:
        pd.testing.assert_frame_equal(st.read(SeriesKind.OHLCV, "SOLUSDT", "1h"), window, check_freq=False)


def test_fetch_klines_pages_backwards_into_store_and_file(tmp_path, sol_1h):
    window = sol_1h.loc["2024-01-01":"2024-03-31"]  # ~2,180 bars: three pages of 1000
    url = f"duckdb:///{tmp_path}/store.duckdb"
    with BybitLoopback() as ex:
        ex.load_klines("linear", "SOLUSDT", window)
        doc = tm("data", "fetch", "--symbol", "SOLUSDT", "--from", "2024-01-01", "--to", "2024-04-01",
                 "--endpoint", ex.url, "--store", url, "--out-dir", str(tmp_path / "files"), "--json")
        assert ex.requests["/v5/market/kline"] == 3
    assert doc["rows"] == len(window) == doc["inserted"]
    back = read_data_file(parse_data_filename(doc["file"])).frame
    pd.testing.assert_frame_equal(back, window, check_freq=False)


def test_fetch_dvol_from_deribit_follows_continuation(tmp_path):
    dvol = load_series(DataCatalog().find(SeriesKind.DVOL, "BTC")).frame.loc["2024-01-01":"2024-12-31"]
    with DeribitLoopback(page_size=100) as ex:
        ex.load_dvol("BTC", dvol)
        doc = tm("data", "fetch", "--kind", "dvol", "--symbol", "BTC", "--interval", "1d", "--from", "2024-01-01",
                 "--to", "2025-01-01", "--deribit-url", ex.url, "--out-dir", str(tmp_path), "--no-store", "--json")
    assert doc["rows"] == 366 and doc["gaps"] == []
    pd.testing.assert_frame_equal(read_data_file(parse_data_filename(doc["file"])).frame, dvol, check_freq=False)


def test_import_is_idempotent_and_export_round_trips(tmp_path):
    url = f"duckdb:///{tmp_path}/store.duckdb"
    first = tm("data", "import", "--symbols", "SOLUSDT", "--store", url, "--json")
    again = tm("data", "import", "--symbols", "SOLUSDT", "--store", url, "--json")
    assert {f["file"] for f in first["files"]} == {"binance_SOLUSDT_1h.csv.gz", "binance_futures_SOLUSDT_funding_8h.csv.gz"}
    assert all(f["inserted"] == f["rows"] for f in first["files"])
    assert all(f["inserted"] == 0 and f["updated"] == 0 for f in again["files"])
    tm("data", "export", "--out-dir", str(tmp_path / "out"), "--store", url, "--exchange", "binance")
    exported = DataCatalog(tmp_path / "out")
    original = load_series(DataCatalog().find(SeriesKind.OHLCV, "SOLUSDT", "1h")).frame
    pd.testing.assert_frame_equal(load_series(exported.find(SeriesKind.OHLCV, "SOLUSDT", "1h")).frame, original)


def test_exchange_failure_exits_3_with_a_clear_message(tmp_path):
    import subprocess
    import sys

    from trade_matrix.testing.loopback import Fault
    with BybitLoopback() as ex:
        ex.inject(Fault.param_error("Invalid period!"))
        r = subprocess.run([sys.executable, "-c", "from trade_matrix.cli import main; main()", "data", "fetch", "--symbol",
                            "SOLUSDT", "--from", "2024-01-01", "--to", "2024-01-02", "--endpoint", ex.url, "--no-store"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert "ExchangeError" in r.stderr and "SOLUSDT" in r.stderr and "Invalid period!" in r.stderr


def one_line(text: str) -> str:
    "A usage message as one line, without the box rich draws around it."
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("threshold", ["0", "-2"])
def test_check_refuses_a_gap_threshold_below_one_as_a_usage_error(threshold):
    res = runner.invoke(app, ["data", "check", "--symbols", "SOLUSDT", "--minor-max-bars", threshold, "--json"])
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    assert f"Invalid value for --minor-max-bars: {threshold}: Input should be greater than or equal to 1" in one_line(res.stderr)


def test_check_applies_a_valid_gap_threshold_instead_of_the_default():
    default = tm("data", "check", "--symbols", "SOLUSDT", "--json")["series"][0]["gaps"]
    strict = tm("data", "check", "--symbols", "SOLUSDT", "--minor-max-bars", "1", "--json")["series"][0]["gaps"]
    assert strict["episodes"] == default["episodes"] > 0
    assert strict["minor"] == sum(g["missing_bars"] <= 1 for g in strict["list"])
    assert default["minor"] == sum(g["missing_bars"] <= 4 for g in default["list"])
    assert strict["minor"] < default["minor"]


def test_check_usage_error_exits_2_through_the_console_script():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "from trade_matrix.cli import main; main()", "data", "check", "--symbols",
                        "SOLUSDT", "--minor-max-bars", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Invalid value for --minor-max-bars: 0" in one_line(r.stderr) and r.stdout == ""
