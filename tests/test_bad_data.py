"""Bad input gets a clear DataError naming the file, line or timestamp, and what was expected."""
import gzip
import shutil
from pathlib import Path

import pytest

from trade_matrix.core import BUNDLED_DATA_DIR, DataError
from trade_matrix.data.market import data_report, load_market_data

HEADER = "timestamp,open,high,low,close,volume\n"


def write(folder: Path, name: str, body: str):
    with gzip.open(folder / name, "wt") as f:
        f.write(body)


@pytest.mark.parametrize("body, message", [
    (HEADER + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T01:00:00Z,1,2,0.5,1.5,oops\n",
     "line 3 (2024-01-01T01:00:00Z): volume is 'oops'; expected a finite number"),
    (HEADER + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T01:17:00Z,1,2,0.5,1.5,10\n",
     "line 3: timestamp 2024-01-01T01:17:00Z is off the 1h grid"),
    (HEADER + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T01:00:00Z,1,2,0.5,1.5\n",
     "line 3: 5 fields, expected 6 (timestamp,open,high,low,close,volume)"),
    (HEADER + "2024-01-01T00:00:00Z,-1,2,0.5,1.5,10\n", "line 2 (2024-01-01T00:00:00Z): prices must be positive"),
    (HEADER + "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n2024-01-01T00:00:00Z,1,2,0.5,1.6,10\n", "conflicting duplicate bars at 2024-01-01T00:00:00Z (line 2 and line 3)"),
    (HEADER + "2024-01-01T01:00:00Z,1,2,0.5,1.5,10\n2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n",
     "line 3: timestamps not strictly increasing at 2024-01-01T00:00:00Z"),
    (HEADER + "2024-01-01 00:00:00,1,2,0.5,1.5,10\n", "line 2: timestamp '2024-01-01 00:00:00' is not marked UTC"),
    (HEADER + "2024-01-01T00:00:00Z,1,2,1.6,1.5,10\n", "low is above open or close"),
])
def test_malformed_bar_file_names_file_line_and_expectation(tmp_path, body, message):
    write(tmp_path, "binance_BADUSDT_1h.csv.gz", body)
    with pytest.raises(DataError) as e:
        data_report(tmp_path)
    assert "binance_BADUSDT_1h.csv.gz" in str(e.value)
    assert message in str(e.value)


@pytest.mark.parametrize("content", [b"", gzip.compress(b"")], ids=["zero-byte file", "gzip of nothing"])
def test_empty_file_is_a_data_error_naming_the_file_and_the_header_expected(tmp_path, content):
    (tmp_path / "binance_EMPTYUSDT_1h.csv.gz").write_bytes(content)
    with pytest.raises(DataError) as e:
        data_report(tmp_path)
    assert str(e.value) == (f"{tmp_path / 'binance_EMPTYUSDT_1h.csv.gz'}: the file is empty (no header line); "
                            "expected a header timestamp,open,high,low,close,volume and one row per 1h ohlcv row")


def test_identical_duplicates_are_dropped_and_counted(tmp_path):
    row = "2024-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
    write(tmp_path, "binance_DUPUSDT_1h.csv.gz", HEADER + row + row + "2024-01-01T01:00:00Z,1,2,0.5,1.5,10\n")
    s = data_report(tmp_path).find("DUPUSDT")
    assert (s.rows, s.duplicates_dropped) == (2, 1)


def test_user_folder_with_own_symbols_and_unknown_files_is_loaded(tmp_path):
    shutil.copy(BUNDLED_DATA_DIR / "binance_SOLUSDT_1h.csv.gz", tmp_path / "bybit_SOLUSDT_1h.csv.gz")
    (tmp_path / "notes.csv").write_text("hello\n")
    rep = data_report(tmp_path)
    assert [s.key for s in rep.series] == ["SOLUSDT"] and rep.skipped == ["notes.csv"]
    md = load_market_data(tmp_path)
    assert md.symbols == ["SOLUSDT"] and len(md.bars("SOLUSDT")) == 10709


def test_missing_symbol_names_what_exists(tmp_path):
    shutil.copy(BUNDLED_DATA_DIR / "binance_SOLUSDT_1h.csv.gz", tmp_path)
    with pytest.raises(DataError, match="no bar file for XRPUSDT .* have symbols: SOLUSDT"):
        load_market_data(tmp_path, symbols=["XRPUSDT"])
