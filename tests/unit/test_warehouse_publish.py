"""Readers of the warehouse while the reconciliation writes it: DuckDB lets one process write a file or many
read it, never both, so readers open the copy ``warehouse.db.publish`` swaps in after each run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from warehouse.db import connect, publish, published_path, warehouse

READER = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    print(con.execute("SELECT count(*) FROM recon_runs").fetchall()[0][0], flush=True)
    sys.stdin.readline()  # hold the connection until told
    print(con.execute("SELECT count(*) FROM recon_runs").fetchall()[0][0], flush=True)
""")


def _reader(path: Path) -> subprocess.Popen[str]:
    """An analyst's session in another process, holding a read-only connection until its stdin gets a line."""
    return subprocess.Popen(
        [sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def _add_run(path: Path, day: str) -> None:
    with warehouse(path) as con:
        con.execute(
            "INSERT INTO recon_runs VALUES (CAST($d AS DATE), 'polars', 1, 1, 0, 0, 1, 0, 1, '{}', '{}')", {"d": day}
        )


def test_a_reader_of_the_live_file_locks_the_run_out(tmp_path: Path) -> None:
    """Why readers need the copy: DuckDB refuses a writer while another process reads (and the reverse)."""
    live = tmp_path / "warehouse.duckdb"
    _add_run(live, "2026-12-01")
    reader = _reader(live)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "1"
        with pytest.raises(RuntimeError, match="cannot open the warehouse"):
            _add_run(live, "2026-12-02")
    finally:
        reader.communicate("\n", timeout=30)


def test_readers_of_the_published_copy_never_block_the_run_and_see_the_next_one(tmp_path: Path) -> None:
    live = tmp_path / "warehouse.duckdb"
    _add_run(live, "2026-12-01")
    copy = publish(live)
    assert copy == published_path(live) == tmp_path / "warehouse.published.duckdb"
    reader = _reader(copy)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "1"
        _add_run(live, "2026-12-02")  # the next run writes while the analyst's session is open
        assert publish(live) == copy  # and swaps its copy in under the open session
        out, _ = reader.communicate("\n", timeout=30)
    finally:
        reader.kill()
    assert out.strip() == "1"  # the open session kept the copy it opened
    with duckdb.connect(str(copy), read_only=True) as con:  # a new session sees the second run
        assert con.execute("SELECT count(*) FROM recon_runs").fetchall()[0][0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb", "warehouse.published.duckdb"]


def test_the_copy_has_the_models_and_macros_a_reader_queries(tmp_path: Path) -> None:
    from warehouse.sqlrunner import build_models

    live = tmp_path / "warehouse.duckdb"
    with warehouse(live) as con:
        build_models(con)
    con = connect(publish(live), read_only=True)
    try:
        rows = con.execute(
            "SELECT count(*) FROM mart_ledger_tieout_as_of(TIMESTAMPTZ '2026-12-02 00:00:00+00', INTERVAL 30 MINUTE)"
        ).fetchall()
        assert rows == [(0,)]
        assert con.execute("SELECT count(*) FROM fct_settlements").fetchall() == [(0,)]
    finally:
        con.close()
