"""The order journal on both stores, and across crashes.

Every behaviour runs on the embedded DuckDB file and on a real PostgreSQL database. The crash tests kill a
child process with `os._exit` (no cleanup, no commit) inside and after the bar's outbox write, then reopen the
journal: what was committed is all there, what was not is not there at all.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import replace
from decimal import Decimal

import pandas as pd
import pytest

from trade_matrix.execution.journal import Intent, IntentState, JournalError, open_journal
from trade_matrix.execution.orders import Fill, Order, OrderSide

BAR = pd.Timestamp("2024-03-01T00:00Z")


def _intent(cid="tm0-1c8b2a0-BTCUSDT-0", run="run-1", qty="0.005", bar=BAR, symbol="BTCUSDT", side="buy"):
    return Intent.from_order(Order(cid, symbol, side, qty, price="60000"), run, bar)


@pytest.fixture(params=["duckdb", "postgres"])
def journal_url(request, tmp_path, pg_test_database_url):
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path}/journal.duckdb"
    # a fresh schema per test: the journal's tables live in the search path's first schema
    import psycopg
    from psycopg import sql
    schema = f"j_{os.urandom(4).hex()}"
    with psycopg.connect(pg_test_database_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    sep = "&" if "?" in pg_test_database_url else "?"
    return f"{pg_test_database_url}{sep}options=-csearch_path%3D{schema}"


def test_the_bar_is_written_whole_or_not_at_all(journal_url):
    j = open_journal(journal_url)
    j.begin_run("run-1", 0, "paper")
    good, other = _intent(), _intent("tm0-1c8b2a0-ETHUSDT-0", symbol="ETHUSDT", side="sell", qty="0.1")
    assert j.record_bar("run-1", BAR, [good], [{"symbol": "BTCUSDT", "tier": "PURE_KELLY"}], {"n": 1}) == 1
    clash = replace(good, quantity=Decimal("0.007"))
    with pytest.raises(JournalError, match="refusing to guess"):
        j.record_bar("run-1", BAR, [other, clash], [{"symbol": "ETHUSDT"}], {"n": 2})
    assert j.intent(other.client_id) is None                          # nothing of the failed bar
    assert j.last_checkpoint("run-1")[1] == {"n": 1}
    assert [d["symbol"] for d in j.decisions("run-1", BAR)] == ["BTCUSDT"]
    j.close()


def test_states_fills_and_positions_are_exact_on_both_stores(journal_url):
    j = open_journal(journal_url)
    j.begin_run("run-1", 0, "live")
    i = _intent()
    j.record_bar("run-1", BAR, [i])
    for state in ("SENDING", "UNKNOWN", "SENDING", "ACKED", "PARTIALLY_FILLED"):
        j.transition(i.client_id, state, f"to {state}")
    f = Fill(i.client_id, "BTCUSDT", OrderSide.BUY, Decimal("0.002"), Decimal("60012.10"), Decimal("0.06601331"), BAR)
    assert j.add_fill("exec-1", i.client_id, f) and not j.add_fill("exec-1", i.client_id, f)
    j.add_fill("exec-2", i.client_id, replace(f, quantity=Decimal("0.003")))
    j.transition(i.client_id, "FILLED")
    with pytest.raises(JournalError, match="terminal"):
        j.transition(i.client_id, "CANCELLED")
    assert j.filled(i.client_id) == Decimal("0.005")
    assert j.positions("run-1") == {"BTCUSDT": Decimal("0.005")}
    assert j.intent(i.client_id).attempts == 2
    assert [e[2] for e in j.events(i.client_id)] == ["PLANNED", "SENDING", "UNKNOWN", "SENDING", "ACKED",
                                                     "PARTIALLY_FILLED", "FILLED"]
    assert j.open_intents() == []
    j.close()


def _write_then_die(url: str, when: str) -> None:
    "Child: begin a run, then die inside the bar's transaction ('inside') or right after its commit ('after')."
    j = open_journal(url)
    j.begin_run("run-1", 0, "paper")
    if when == "inside":
        original = j._insert_intent

        def insert_then_die(intent, now_ns):
            original(intent, now_ns)
            os._exit(3)                                             # killed mid-transaction: no commit, no cleanup
        j._insert_intent = insert_then_die
    j.record_bar("run-1", BAR, [_intent()], [{"symbol": "BTCUSDT"}], {"n": 1})
    os._exit(0)                                                     # killed right after the commit


@pytest.mark.parametrize("when, survives", [("inside", False), ("after", True)])
def test_a_process_killed_during_or_after_the_outbox_write(journal_url, when, survives):
    child = mp.get_context("spawn").Process(target=_write_then_die, args=(journal_url, when))
    child.start()
    child.join(60)
    assert child.exitcode == (3 if when == "inside" else 0)
    j = open_journal(journal_url)
    found = j.intent("tm0-1c8b2a0-BTCUSDT-0")
    if survives:
        assert found is not None and found.state is IntentState.PLANNED      # to be sent, or looked up, on restart
        assert j.last_checkpoint("run-1")[1] == {"n": 1}
    else:
        assert found is None and j.last_checkpoint("run-1") is None         # the bar is undecided: decided again
    j.close()


def test_a_corrupt_intent_row_is_a_clear_error(tmp_path):
    j = open_journal(f"duckdb:///{tmp_path}/j.duckdb")
    j.begin_run("run-1", 0, "paper")
    j.record_bar("run-1", BAR, [_intent()])
    j._execute("UPDATE intents SET quantity = 'lots' WHERE client_id = ?", ("tm0-1c8b2a0-BTCUSDT-0",))
    with pytest.raises(JournalError, match="journal table intents, row tm0-1c8b2a0-BTCUSDT-0: column quantity is 'lots'"):
        j.open_intents()
    j._execute("UPDATE intents SET quantity = '0.005', state = 'HALF_SENT' WHERE client_id = ?", ("tm0-1c8b2a0-BTCUSDT-0",))
    with pytest.raises(JournalError, match="column state is 'HALF_SENT', not one of"):
        j.intent("tm0-1c8b2a0-BTCUSDT-0")
    j._execute("UPDATE intents SET state = 'PLANNED' WHERE client_id = ?", ("tm0-1c8b2a0-BTCUSDT-0",))
    j.transition("tm0-1c8b2a0-BTCUSDT-0", "SENDING")
    j._execute("UPDATE intents SET state = 'PLANNED' WHERE client_id = ?", ("tm0-1c8b2a0-BTCUSDT-0",))   # rolled back
    with pytest.raises(JournalError, match="column state is 'PLANNED', but its last event says 'SENDING'"):
        j.open_intents()
    j.close()
