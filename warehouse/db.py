"""DuckDB connection helpers: one warehouse file, UTC session, schema created on open."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from warehouse.sqlrunner import init_schema, render_file


def connect(path: Path | str = ":memory:", *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise RuntimeError(
            f"cannot open the warehouse {path}: {exc}. Another process (a DAG task or the CLI) may hold it; "
            "wait for it to finish or point NEXUS_RECON_DUCKDB_PATH elsewhere."
        ) from exc
    con.execute("SET TimeZone = 'UTC'")
    return con


@contextmanager
def warehouse(path: Path | str, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only)
    try:
        if not read_only:
            init_schema(con)
        yield con
    finally:
        con.close()


def published_path(path: Path | str) -> Path:
    """Where :func:`publish` puts the readers' copy of the warehouse at ``path``: ``<stem>.published.duckdb``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.published{path.suffix}")


def publish(path: Path | str) -> Path:
    """Copy the warehouse for readers (analysts, BI tools) and swap it in for the previous copy by rename.

    DuckDB lets one process write a file or many read it, never both: a reader holding the warehouse itself
    would lock the nightly run out, and a run holding it locks readers out. Readers open this copy instead; a
    reader that has it open keeps the copy it opened (the rename does not touch it), the next open sees the new
    one. The copy is taken through a read-only connection, so no writer can change the file meanwhile.
    """
    src = Path(path)
    dst = published_path(src)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    con = connect(src, read_only=True)
    try:
        (name,) = con.execute("SELECT current_database()").fetchall()[0]
        quoted = str(tmp).replace("'", "''")
        con.execute(f"ATTACH '{quoted}' AS published_copy (READ_WRITE)")
        con.execute(f'COPY FROM DATABASE "{name}" TO published_copy')
        con.execute("DETACH published_copy")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    os.replace(tmp, dst)
    return dst


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
    return con.sql(sql, params=dict(params) if params else None).pl()


def run_sql_file(
    con: duckdb.DuckDBPyConnection, relpath: str, params: Mapping[str, Any] | None = None
) -> pl.DataFrame | None:
    """Run every statement of a file under sql/; return the last statement's rows if it is a query."""
    statements = render_file(relpath)
    params = params or {}
    for statement in statements[:-1]:
        con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})
    last = statements[-1]
    used = {k: v for k, v in params.items() if f"${k}" in last}
    if last.lstrip().upper().startswith(("SELECT", "WITH")):
        return con.sql(last, params=used or None).pl()
    con.execute(last, used)
    return None


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None) -> Any:
    rows = con.execute(sql, dict(params) if params else {}).fetchall()
    return rows[0][0] if rows else None
