"""The exception queue: raised from each day's breaks, aged, reviewed by people, every action audited.

States: open -> approved | corrected | written_off (domain.variance_rules.transition). The nightly review
(:func:`sync_exceptions`) opens new exceptions, reclassifies ones whose break changed (e.g. missing at the
provider yesterday, matched late today = timing), auto-resolves ones whose item now reconciles, and ages the
rest. People act through the CLI (:func:`act`). Every change writes a row to ``recon_exception_actions`` with
an ``AuditRecord`` in the spec §7.2 shape.

A ledger break (class capture_refused: the payer owes K-AUS) is never auto-resolved by a provider match; a
person closes it once finance has acted.

System actions are stamped with the recon day's review time (04:00 UTC the next day), not the wall clock,
so re-running a day writes the same rows again and changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import duckdb
import polars as pl

from contracts.models import AuditActor, AuditDetails, AuditRecord
from domain.money import Currency, Money
from domain.variance_rules import LEDGER_BREAKS, ExceptionState, InvalidTransition, transition
from warehouse.db import query

SYSTEM_ACTOR = "recon-bot"
REVIEW_HOUR_UTC = 4
_ID_SAFE = re.compile(r"[^A-Za-z0-9._:/@-]")


class ExceptionNotFound(LookupError):
    pass


def review_time(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(REVIEW_HOUR_UTC), UTC)


def _audit(action_id: str, exception: dict[str, Any], action: str, actor: str, at: datetime) -> str:
    ccy = exception.get("currency")
    details: dict[str, Any] = {}
    if isinstance(ccy, str) and ccy in Currency.__members__:
        details = {
            "fiat_amount": str(Money(int(exception["amount_delta_minor"]), Currency(ccy)).to_decimal()),
            "currency": Currency(ccy),
        }
    record = AuditRecord(
        audit_id=_ID_SAFE.sub("_", f"AUDIT-RECON-{action_id}")[:128],
        timestamp=at,
        transaction_id=_ID_SAFE.sub("_", exception["exception_id"])[:128],
        action=f"RECON_EXCEPTION_{action.upper()}",
        actor=AuditActor(user_id=actor, user_agent="NEXUS-X/recon"),
        details=AuditDetails(**details),
    )
    return record.model_dump_json(by_alias=True)


def _log_action(
    con: duckdb.DuckDBPyConnection,
    action_id: str,
    exc: dict[str, Any],
    action: str,
    from_state: str | None,
    to_state: str,
    from_class: str | None,
    to_class: str | None,
    actor: str,
    reason: str,
    recon_date: date | None,
    at: datetime,
) -> None:
    con.execute(
        "INSERT INTO recon_exception_actions VALUES ($id, $e, $a, $fs, $ts, $fc, $tc, $actor, $reason, $d, $at, $audit)"
        " ON CONFLICT DO NOTHING",
        {
            "id": action_id,
            "e": exc["exception_id"],
            "a": action,
            "fs": from_state,
            "ts": to_state,
            "fc": from_class,
            "tc": to_class,
            "actor": actor,
            "reason": reason,
            "d": recon_date,
            "at": at,
            "audit": _audit(action_id, exc, action, actor, at),
        },
    )


@dataclass(frozen=True)
class ReviewSummary:
    opened: int
    reclassified: int
    auto_resolved: int
    open_total: int
    oldest_age_days: int


def exception_ids() -> pl.Expr:
    """``domain.variance_rules.exception_key`` over a frame of results: K:<settlement> for a ledger break (its
    provider match neither hides nor resolves it), else S:<settlement>, else L:<line>."""
    return (
        pl.when(pl.col("break_class").is_in(sorted(c.value for c in LEDGER_BREAKS)))
        .then(pl.lit("K:") + pl.col("settlement_id"))
        .when(pl.col("settlement_id").is_not_null())
        .then(pl.lit("S:") + pl.col("settlement_id"))
        .otherwise(pl.lit("L:") + pl.col("line_id"))
    )


def sync_exceptions(con: duckdb.DuckDBPyConnection, day: date) -> ReviewSummary:
    at = review_time(day)
    results = query(con, "SELECT * FROM recon_results WHERE recon_date = $d", {"d": day})
    breaks = results.filter(pl.col("outcome") == "break").with_columns(exception_id=exception_ids())
    existing = {r["exception_id"]: r for r in query(con, "SELECT * FROM recon_exceptions").iter_rows(named=True)}
    opened = reclassified = resolved = 0
    con.execute("BEGIN")
    try:
        for row in breaks.iter_rows(named=True):
            change = _review_break(con, row, existing, day, at)
            if change == "opened":
                opened += 1
            elif change == "reclassified":
                reclassified += 1
        resolved = _auto_resolve(con, results, existing, day, at)
        # age what is still open (monotone, so re-running an earlier day never rejuvenates)
        con.execute(
            "UPDATE recon_exceptions SET age_days = greatest(age_days, date_diff('day', opened_on, $d))"
            " WHERE state = 'open' AND opened_on <= $d",
            {"d": day},
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    stats = con.execute(
        "SELECT count(*), coalesce(max(age_days), 0) FROM recon_exceptions WHERE state = 'open'"
    ).fetchall()[0]
    return ReviewSummary(opened, reclassified, resolved, int(stats[0]), int(stats[1]))


def _review_break(
    con: duckdb.DuckDBPyConnection, row: dict[str, Any], existing: dict[str, Any], day: date, at: datetime
) -> str | None:
    """One of the day's breaks: open a new exception, or reclassify an open one and mark it seen."""
    key = row["exception_id"]
    cur = existing.get(key)
    if cur is None:
        _open_exception(con, row, existing, day, at)
        return "opened"
    change = None
    if cur["state"] == ExceptionState.OPEN and cur["break_class"] != row["break_class"] and day >= cur["last_seen_on"]:
        con.execute(
            "UPDATE recon_exceptions SET break_class = $c, line_id = coalesce($l, line_id),"
            " related_id = coalesce($r, related_id), amount_delta_minor = $a, fee_delta_minor = $f"
            " WHERE exception_id = $e",
            {
                "c": row["break_class"],
                "l": row["line_id"],
                "r": row["related_id"],
                "a": row["amount_delta_minor"],
                "f": row["fee_delta_minor"],
                "e": key,
            },
        )
        _log_action(
            con,
            f"{key}|reclassified|{day}",
            cur,
            "reclassified",
            "open",
            "open",
            cur["break_class"],
            row["break_class"],
            SYSTEM_ACTOR,
            f"re-checked on {day}: now {row['break_class']}",
            day,
            at,
        )
        change = "reclassified"
    con.execute(
        "UPDATE recon_exceptions SET last_seen_on = greatest(last_seen_on, $d) WHERE exception_id = $e",
        {"d": day, "e": key},
    )
    return change


def _open_exception(
    con: duckdb.DuckDBPyConnection, row: dict[str, Any], existing: dict[str, Any], day: date, at: datetime
) -> None:
    key = row["exception_id"]
    exc = {
        "exception_id": key,
        "break_class": row["break_class"],
        "state": str(ExceptionState.OPEN),
        "provider": row["provider"],
        "currency": row["currency"],
        "settlement_id": row["settlement_id"],
        "line_id": row["line_id"],
        "related_id": row["related_id"],
        "amount_delta_minor": row["amount_delta_minor"],
        "fee_delta_minor": row["fee_delta_minor"],
    }
    con.execute(
        "INSERT INTO recon_exceptions VALUES ($exception_id, $break_class, $state, $provider, $currency,"
        " $settlement_id, $line_id, $related_id, $amount_delta_minor, $fee_delta_minor, $d, $at, $d, 0,"
        " NULL, NULL, NULL)",
        {**exc, "d": day, "at": at},
    )
    _log_action(
        con,
        f"{key}|opened",
        exc,
        "opened",
        None,
        "open",
        None,
        row["break_class"],
        SYSTEM_ACTOR,
        f"{row['break_class']} found by the {day} reconciliation",
        day,
        at,
    )
    existing[key] = {**exc, "opened_on": day, "last_seen_on": day}


def _auto_resolve(
    con: duckdb.DuckDBPyConnection, results: pl.DataFrame, existing: dict[str, Any], day: date, at: datetime
) -> int:
    """Items that reconcile today (or whose line is now paired) close their open exception; returns how many."""
    paired = results.filter(pl.col("settlement_id").is_not_null() & pl.col("line_id").is_not_null())
    matched_s = paired.filter(pl.col("outcome") == "matched").select(
        exception_id=pl.lit("S:") + pl.col("settlement_id"), tier=pl.col("tier"), other=pl.col("line_id")
    )
    lines_paired = paired.select(
        exception_id=pl.lit("L:") + pl.col("line_id"), tier=pl.col("tier"), other=pl.col("settlement_id")
    )
    resolved = 0
    for row in pl.concat([matched_s, lines_paired]).unique("exception_id").iter_rows(named=True):
        cur = existing.get(row["exception_id"])
        if cur is None or cur["state"] != ExceptionState.OPEN or cur.get("opened_on", day) > day:
            continue
        reason = f"reconciled on {day}: paired with {row['other']} ({row['tier']} match)"
        con.execute(
            "UPDATE recon_exceptions SET state = 'corrected', resolved_at = $at, resolved_by = $who,"
            " resolution_reason = $why WHERE exception_id = $e AND state = 'open'",
            {"at": at, "who": SYSTEM_ACTOR, "why": reason, "e": row["exception_id"]},
        )
        _log_action(
            con,
            f"{row['exception_id']}|auto_resolved|{day}",
            cur,
            "auto_resolved",
            "open",
            "corrected",
            cur["break_class"],
            cur["break_class"],
            SYSTEM_ACTOR,
            reason,
            day,
            at,
        )
        resolved += 1
    return resolved


def list_exceptions(
    con: duckdb.DuckDBPyConnection, state: str | None = "open", break_class: str | None = None, limit: int = 50
) -> pl.DataFrame:
    where, params = [], {}
    if state:
        where.append("state = $state")
        params["state"] = state
    if break_class:
        where.append("break_class = $cls")
        params["cls"] = break_class
    sql = (
        "SELECT exception_id, break_class, state, provider, currency, amount_delta_minor, fee_delta_minor,"
        " opened_on, age_days, related_id, resolved_by, resolution_reason FROM recon_exceptions"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY age_days DESC, abs(amount_delta_minor) DESC, exception_id LIMIT {int(limit)}"
    )
    return query(con, sql, params)


def act(
    con: duckdb.DuckDBPyConnection,
    exception_id: str,
    target: ExceptionState,
    actor: str,
    reason: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A person approves / corrects / writes off an open exception (with a reason)."""
    rows = query(con, "SELECT * FROM recon_exceptions WHERE exception_id = $e", {"e": exception_id}).to_dicts()
    if not rows:
        raise ExceptionNotFound(
            f"no exception {exception_id!r}; list open ones with `python -m warehouse.cli exceptions list`"
        )
    cur = rows[0]
    new_state = transition(ExceptionState(cur["state"]), target, reason)  # raises InvalidTransition
    at = now or datetime.now(UTC)
    con.execute("BEGIN")
    try:
        con.execute(
            "UPDATE recon_exceptions SET state = $s, resolved_at = $at, resolved_by = $who, resolution_reason = $why"
            " WHERE exception_id = $e",
            {"s": str(new_state), "at": at, "who": actor, "why": reason, "e": exception_id},
        )
        action_id = f"{exception_id}|{new_state}|{at.isoformat()}"
        _log_action(
            con,
            action_id,
            cur,
            str(new_state),
            cur["state"],
            str(new_state),
            cur["break_class"],
            cur["break_class"],
            actor,
            reason,
            None,
            at,
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return {**cur, "state": str(new_state), "resolved_by": actor, "resolution_reason": reason, "resolved_at": at}


__all__ = ["ExceptionNotFound", "InvalidTransition", "ReviewSummary", "act", "list_exceptions", "sync_exceptions"]
