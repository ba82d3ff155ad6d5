"""Import each provider's settlement statement for a day into ``raw_provider_lines`` (idempotent).

A statement re-delivered with the same bytes changes nothing; one re-delivered with different bytes
(the provider corrected it) replaces that provider's lines for the day.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl

from contracts.models import Provider
from warehouse.matching import RATE_DTYPE
from warehouse.provider_statements import FORMATS, assign_line_ids, statement_path


@dataclass(frozen=True)
class StatementImport:
    provider: str
    path: str
    delivered: bool
    lines: int
    new_lines: int
    replaced: bool


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sync_statements(con: duckdb.DuckDBPyConnection, statements_dir: Path, day: date) -> list[StatementImport]:
    out = []
    now = datetime.now(UTC)
    for provider, fmt in FORMATS.items():
        path = statement_path(statements_dir, day, provider)
        if not path.exists():
            con.execute(
                """
                INSERT INTO meta_statement_files VALUES ($p, $d, $path, NULL, 0, $now)
                ON CONFLICT DO NOTHING
            """,
                {"p": provider.value, "d": day, "path": str(path), "now": now},
            )
            out.append(StatementImport(provider.value, str(path), False, 0, 0, False))
            continue
        sha = _sha256(path)
        rows = con.execute(
            "SELECT sha256 FROM meta_statement_files WHERE provider = $p AND statement_date = $d",
            {"p": provider.value, "d": day},
        ).fetchall()
        previous = rows[0] if rows else None
        lines = fmt.parse(path)
        ids = assign_line_ids(provider, day, lines)
        frame = _frame(provider, day, lines, ids, path, now)
        replaced = previous is not None and previous[0] is not None and previous[0] != sha
        con.execute("BEGIN")
        try:
            if replaced:
                con.execute(
                    "DELETE FROM raw_provider_lines WHERE provider = $p AND statement_date = $d",
                    {"p": provider.value, "d": day},
                )
            before = con.execute("SELECT count(*) FROM raw_provider_lines").fetchall()[0]
            con.register("stmt_lines", frame)
            con.execute("INSERT INTO raw_provider_lines SELECT * FROM stmt_lines ON CONFLICT DO NOTHING")
            con.unregister("stmt_lines")
            after = con.execute("SELECT count(*) FROM raw_provider_lines").fetchall()[0]
            con.execute(
                """
                INSERT INTO meta_statement_files VALUES ($p, $d, $path, $sha, $n, $now)
                ON CONFLICT (provider, statement_date) DO UPDATE SET
                    loaded_at = CASE WHEN meta_statement_files.sha256 IS DISTINCT FROM excluded.sha256
                                     THEN excluded.loaded_at ELSE meta_statement_files.loaded_at END,
                    path = CASE WHEN meta_statement_files.sha256 IS DISTINCT FROM excluded.sha256
                                THEN excluded.path ELSE meta_statement_files.path END,
                    sha256 = excluded.sha256, lines = excluded.lines
            """,
                {"p": provider.value, "d": day, "path": str(path), "sha": sha, "n": len(lines), "now": now},
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        assert before is not None and after is not None
        out.append(StatementImport(provider.value, str(path), True, len(lines), after[0] - before[0], replaced))
    return out


def _frame(provider: Provider, day: date, lines: list, ids: list[str], path: Path, now: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        [
            (
                lid,
                provider.value,
                day,
                ln.provider_reference,
                ln.our_reference,
                ln.counterparty,
                ln.currency.value,
                ln.amount_minor,
                ln.fee_minor,
                ln.fx_rate,
                ln.value_date,
                ln.created_at,
                str(path),
                now,
            )
            for ln, lid in zip(lines, ids, strict=True)
        ],
        schema={
            "line_id": pl.String,
            "provider": pl.String,
            "statement_date": pl.Date,
            "provider_reference": pl.String,
            "our_reference": pl.String,
            "counterparty": pl.String,
            "currency": pl.String,
            "amount_minor": pl.Int64,
            "fee_minor": pl.Int64,
            "fx_rate": RATE_DTYPE,
            "value_date": pl.Date,
            "booked_at": pl.Datetime("us", "UTC"),
            "source_file": pl.String,
            "loaded_at": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )
