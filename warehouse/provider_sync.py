"""Bring each provider's report for a day into ``raw_provider_lines`` (idempotent), through its API or from a file.

Two sources, one result: a provider with a report API (``streams.bridge.providers.REPORT_APIS``) is asked for the
day through its adapter (``settlements(day)``: the provider's own listing, auth and paging, normalised to
:class:`~domain.statements.StatementLine`); a provider without one (PayPay), or every provider when
``source="files"``, is read from its statement file ``<statements_dir>/<day>/<file>``. Either way the lines land in
``raw_provider_lines`` with the same ids (``PROVIDER:day:reference[#n]``) and ``meta_statement_files`` records
the delivery with a SHA-256 of what was delivered (the file's bytes, or the report's lines in a canonical text).

A delivery equal to the last one changes nothing; a different one (the provider corrected its report, a late
booking appeared) replaces that provider's lines for the day, in one transaction, so a day's lines are never
duplicated. A report that cannot be had is recorded as not delivered (the data-quality gate's
``statements_delivered`` then fails) and leaves an earlier delivery of that day as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

from contracts.models import Provider
from domain.statements import StatementLine
from streams.bridge.providers import REPORT_APIS, ReportingAdapter, build_reporters
from streams.bridge.providers.base import ProviderSettings, ReportError, make_report_transport
from warehouse.matching import RATE_DTYPE
from warehouse.provider_statements import FORMATS, StatementFormatError, assign_line_ids, statement_path

Source = Literal["api", "files"]


@dataclass(frozen=True)
class StatementImport:
    provider: str
    path: str  # the file, or "api:<provider>:<base url>"
    delivered: bool
    lines: int
    new_lines: int
    replaced: bool
    source: str = "file"  # "file" | "api"
    error: str | None = None


@dataclass(frozen=True)
class _Delivery:
    provider: Provider
    label: str
    source: str
    lines: list[StatementLine] | None  # None: not delivered
    sha256: str | None
    error: str | None = None


def sync_statements(
    con: duckdb.DuckDBPyConnection,
    statements_dir: Path,
    day: date,
    source: Source = "files",
    provider_settings: ProviderSettings | None = None,
) -> list[StatementImport]:
    """Every provider's report for ``day``: through its API (``source="api"``, providers without one from their
    file) or from the statement files only (``source="files"``)."""
    api = set(REPORT_APIS) if source == "api" else set()
    pulled = pull_reports(day, provider_settings, frozenset(api)) if api else {}
    deliveries = [pulled[p] if p in pulled else _file_delivery(statements_dir, day, p) for p in FORMATS]
    now = datetime.now(UTC)
    return [_store(con, day, d, now) for d in deliveries]


def pull_reports(
    day: date, settings: ProviderSettings | None = None, providers: frozenset[Provider] = REPORT_APIS
) -> dict[Provider, _Delivery]:
    """Ask each provider's report API for ``day``, all at once; a failure is that provider's non-delivery."""
    settings = settings or ProviderSettings()
    return asyncio.run(_pull_all(day, settings, providers))


async def _pull_all(day: date, settings: ProviderSettings, providers: frozenset[Provider]) -> dict[Provider, _Delivery]:
    transport = make_report_transport(settings)
    try:
        reporters = build_reporters(settings, transport, providers)
        results = await asyncio.gather(*(_pull_one(r, day) for r in reporters.values()))
    finally:
        await transport.aclose()
    return {d.provider: d for d in results}


async def _pull_one(reporter: ReportingAdapter, day: date) -> _Delivery:
    provider = Provider(reporter.provider)
    label = f"api:{provider.value}:{getattr(reporter, 'base_url', '')}"
    try:
        lines = canonical_order(await reporter.settlements(day))
    except ReportError as exc:
        return _Delivery(provider, label, "api", None, None, str(exc))
    return _Delivery(provider, label, "api", lines, hashlib.sha256(lines_text(lines).encode()).hexdigest())


def canonical_order(lines: list[StatementLine]) -> list[StatementLine]:
    """A report's lines in one order whatever order its pages came in (line ids number repeats in this order)."""
    return sorted(lines, key=lambda ln: (ln.provider_reference, ln.created_at, lines_text([ln])))


def lines_text(lines: list[StatementLine]) -> str:
    """One text per report content: what its digest is taken of."""
    return "\n".join(
        "|".join(
            (
                ln.provider_reference,
                ln.our_reference or "",
                str(ln.amount_minor),
                str(ln.fee_minor),
                ln.currency.value,
                "" if ln.fx_rate is None else f"{ln.fx_rate.normalize():f}",
                ln.value_date.isoformat(),
                ln.created_at.astimezone(UTC).isoformat(),
                ln.counterparty or "",
            )
        )
        for ln in lines
    )


def _file_delivery(statements_dir: Path, day: date, provider: Provider) -> _Delivery:
    path = statement_path(statements_dir, day, provider)
    if not path.exists():
        return _Delivery(provider, str(path), "file", None, None)
    try:
        lines = FORMATS[provider].parse(path)
    except StatementFormatError as exc:
        return _Delivery(provider, str(path), "file", None, None, str(exc))
    return _Delivery(provider, str(path), "file", lines, hashlib.sha256(path.read_bytes()).hexdigest())


def _store(con: duckdb.DuckDBPyConnection, day: date, d: _Delivery, now: datetime) -> StatementImport:
    p = d.provider.value
    if d.lines is None:
        con.execute(
            "INSERT INTO meta_statement_files VALUES ($p, $d, $path, NULL, 0, $now) ON CONFLICT DO NOTHING",
            {"p": p, "d": day, "path": d.label, "now": now},
        )
        return StatementImport(p, d.label, False, 0, 0, False, d.source, d.error)
    rows = con.execute(
        "SELECT sha256 FROM meta_statement_files WHERE provider = $p AND statement_date = $d", {"p": p, "d": day}
    ).fetchall()
    previous = rows[0][0] if rows else None
    replaced = previous is not None and previous != d.sha256
    frame = _frame(d.provider, day, d.lines, assign_line_ids(d.provider, day, d.lines), d.label, now)
    con.execute("BEGIN")
    try:
        if replaced:
            con.execute(
                "DELETE FROM raw_provider_lines WHERE provider = $p AND statement_date = $d", {"p": p, "d": day}
            )
        before = con.execute("SELECT count(*) FROM raw_provider_lines").fetchall()[0][0]
        con.register("stmt_lines", frame)
        con.execute("INSERT INTO raw_provider_lines SELECT * FROM stmt_lines ON CONFLICT DO NOTHING")
        con.unregister("stmt_lines")
        after = con.execute("SELECT count(*) FROM raw_provider_lines").fetchall()[0][0]
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
            {"p": p, "d": day, "path": d.label, "sha": d.sha256, "n": len(d.lines), "now": now},
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return StatementImport(p, d.label, True, len(d.lines), after - before, replaced, d.source)


def _frame(
    provider: Provider, day: date, lines: list[StatementLine], ids: list[str], source: str, now: datetime
) -> pl.DataFrame:
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
                source,
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
