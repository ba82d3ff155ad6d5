"""The exception queue: raised from each day's breaks, aged, reviewed by people, every action audited.

States: open -> approved | corrected | written_off, and for a ledger break open -> correction_requested ->
corrected | open (domain.variance_rules.transition). The nightly review (:func:`sync_exceptions`) opens new
exceptions, reclassifies ones whose break changed (e.g. missing at the provider yesterday, matched late today =
timing), auto-resolves ones whose item now reconciles, closes the ledger corrections governance decided, and ages
the rest. People act through the CLI (:func:`act`, :func:`request_correction`). Every change writes a row to
``recon_exception_actions`` with an ``AuditRecord`` in the spec §7.2 shape, which ``warehouse.outbox`` publishes
on audit.records.

A ledger break (class capture_refused: the payer owes K-AUS) is never auto-resolved by a provider match. It is
corrected by a multi-sig LEDGER_CORRECTION (``warehouse.corrections``): :func:`request_correction` stores the
request (sent by the outbox) and moves the exception to correction_requested; :func:`close_corrections` moves it
to corrected once governance.multisig says EXECUTED, back to open when REJECTED or EXPIRED. Or a person writes
it off / approves it.

System actions are stamped with the recon day's review time (04:00 UTC the next day), not the wall clock,
so re-running a day writes the same rows again and changes nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import duckdb
import polars as pl

from contracts.models import AuditActor, AuditDetails, AuditRecord, MultisigRequest
from domain.money import Currency, Money, kaus_to_decimal
from domain.variance_rules import (
    LEDGER_BREAKS,
    ExceptionState,
    InvalidTransition,
    correction_outcome,
    correction_request_id,
    transition,
)
from warehouse.corrections import Correction, correction_request
from warehouse.db import query

SYSTEM_ACTOR = "recon-bot"
REVIEW_HOUR_UTC = 4
_ID_SAFE = re.compile(r"[^A-Za-z0-9._:/@-]")
AUDIT_PREFIX = "AUDIT-RECON-"
ID_CHARS_MAX = 128
UNRESOLVED = (ExceptionState.OPEN.value, ExceptionState.CORRECTION_REQUESTED.value)


class ExceptionNotFound(LookupError):
    pass


def review_time(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(REVIEW_HOUR_UTC), UTC)


def audit_id(action_id: str) -> str:
    """The audit record's id: the action's id made safe, or its digest when that is too long (never cut short:
    two actions must not share an id, and the audit log keeps one record per id)."""
    text = _ID_SAFE.sub("_", f"{AUDIT_PREFIX}{action_id}")
    return text if len(text) <= ID_CHARS_MAX else AUDIT_PREFIX + hashlib.sha256(action_id.encode()).hexdigest()


def _audit(
    action_id: str,
    exception: dict[str, Any],
    action: str,
    actor: str,
    at: datetime,
    kaus_units: int | None = None,
) -> str:
    ccy = exception.get("currency")
    details: dict[str, Any] = {}
    if isinstance(ccy, str) and ccy in Currency.__members__:
        details = {
            "fiat_amount": str(Money(int(exception["amount_delta_minor"]), Currency(ccy)).to_decimal()),
            "currency": Currency(ccy),
        }
    if kaus_units is not None:
        details["kaus_amount"] = str(kaus_to_decimal(kaus_units))
    record = AuditRecord(
        audit_id=audit_id(action_id),
        timestamp=at,
        transaction_id=_ID_SAFE.sub("_", exception["exception_id"])[:ID_CHARS_MAX],
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
    kaus_units: int | None = None,
) -> None:
    con.execute(
        "INSERT INTO recon_exception_actions (action_id, exception_id, action, from_state, to_state, from_class,"
        " to_class, actor, reason, recon_date, acted_at, audit_record)"
        " VALUES ($id, $e, $a, $fs, $ts, $fc, $tc, $actor, $reason, $d, $at, $audit) ON CONFLICT DO NOTHING",
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
            "audit": _audit(action_id, exc, action, actor, at, kaus_units),
        },
    )


@dataclass(frozen=True)
class ReviewSummary:
    opened: int
    reclassified: int
    auto_resolved: int
    open_total: int
    oldest_age_days: int
    corrections_executed: int = 0  # ledger corrections governance executed: their exceptions corrected
    corrections_reopened: int = 0  # rejected or expired: their exceptions open again
    corrections_waiting: int = 0


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


def sync_exceptions(
    con: duckdb.DuckDBPyConnection, day: date, corrections: Mapping[str, MultisigRequest] | None = None
) -> ReviewSummary:
    """The nightly review of ``day``; ``corrections``: governance.multisig's latest state of the corrections that
    wait (:func:`waiting_corrections`), closed here too."""
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
        closed = _close_corrections(con, corrections or {})
        # age what is still unresolved (monotone, so re-running an earlier day never rejuvenates)
        con.execute(
            "UPDATE recon_exceptions SET age_days = greatest(age_days, date_diff('day', opened_on, $d))"
            " WHERE state IN $unresolved AND opened_on <= $d",
            {"d": day, "unresolved": list(UNRESOLVED)},
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    stats = con.execute(
        "SELECT count(*), coalesce(max(age_days), 0) FROM recon_exceptions WHERE state = 'open'"
    ).fetchall()[0]
    return ReviewSummary(
        opened, reclassified, resolved, int(stats[0]), int(stats[1]), closed.corrected, closed.reopened, closed.waiting
    )


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
    cur = _exception(con, exception_id)
    new_state = transition(ExceptionState(cur["state"]), target, reason, cur["break_class"])  # InvalidTransition
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


def _exception(con: duckdb.DuckDBPyConnection, exception_id: str) -> dict[str, Any]:
    rows = query(con, "SELECT * FROM recon_exceptions WHERE exception_id = $e", {"e": exception_id}).to_dicts()
    if not rows:
        raise ExceptionNotFound(
            f"no exception {exception_id!r}; list open ones with `python -m warehouse.cli exceptions list`"
        )
    return rows[0]


def request_correction(
    con: duckdb.DuckDBPyConnection,
    exception_id: str,
    correction: Correction,
    actor: str,
    reason: str,
    expiry: timedelta,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A ledger break's correction asked of the signers: ONE LEDGER_CORRECTION request stored for the outbox, the
    exception moved to correction_requested, the action audited, in one transaction. Returns the request's row."""
    cur = _exception(con, exception_id)
    transition(ExceptionState(cur["state"]), ExceptionState.CORRECTION_REQUESTED, reason, cur["break_class"])
    at = now or datetime.now(UTC)
    (attempts,) = con.execute(
        "SELECT count(*) FROM recon_corrections WHERE exception_id = $e", {"e": exception_id}
    ).fetchall()[0]
    request_id = correction_request_id(exception_id, int(attempts) + 1)
    request = correction_request(request_id, exception_id, correction, actor, reason, at, at + expiry)
    row = {
        "request_id": request_id,
        "exception_id": exception_id,
        "attempt": int(attempts) + 1,
        "from_account": correction.from_account,
        "to_account": correction.to_account,
        "amount_kaus_units": correction.amount_kaus_units,
        "requested_by": actor,
        "requested_at": at,
        "expires_at": request.expires_at,
        "request": request.model_dump_json(),
    }
    con.execute("BEGIN")
    try:
        con.execute(
            "INSERT INTO recon_corrections (request_id, exception_id, attempt, from_account, to_account,"
            " amount_kaus_units, requested_by, requested_at, expires_at, request, state) VALUES ($request_id,"
            " $exception_id, $attempt, $from_account, $to_account, $amount_kaus_units, $requested_by, $requested_at,"
            " $expires_at, $request, 'REQUESTED')",
            row,
        )
        con.execute(
            "UPDATE recon_exceptions SET state = $s, resolution_reason = $why WHERE exception_id = $e",
            {"s": str(ExceptionState.CORRECTION_REQUESTED), "why": f"{request_id}: {reason}", "e": exception_id},
        )
        action = str(ExceptionState.CORRECTION_REQUESTED)
        _log_action(con, f"{exception_id}|{action}|{request_id}", cur, action, cur["state"], action,
                    cur["break_class"], cur["break_class"], actor, f"{request_id}: {reason}", None, at,
                    correction.amount_kaus_units)  # fmt: skip
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return row


def waiting_corrections(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The request ids whose exception waits in correction_requested (what to look up on governance.multisig)."""
    rows = con.execute(
        "SELECT c.request_id FROM recon_corrections c JOIN recon_exceptions e USING (exception_id)"
        " WHERE e.state = $s AND c.decided_at IS NULL ORDER BY c.requested_at, c.request_id",
        {"s": str(ExceptionState.CORRECTION_REQUESTED)},
    ).fetchall()
    return [str(r[0]) for r in rows]


@dataclass(frozen=True)
class CorrectionsClosed:
    corrected: int
    reopened: int
    waiting: int


def close_corrections(con: duckdb.DuckDBPyConnection, states: Mapping[str, MultisigRequest]) -> CorrectionsClosed:
    """Apply governance's outcome to the corrections that wait, in one transaction (a CLI command between runs)."""
    con.execute("BEGIN")
    try:
        closed = _close_corrections(con, states)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return closed


def _close_corrections(con: duckdb.DuckDBPyConnection, states: Mapping[str, MultisigRequest]) -> CorrectionsClosed:
    """EXECUTED -> corrected; REJECTED (refused, or the ledger refused the transfer) / EXPIRED -> open again, with
    the reason; PENDING / APPROVED: its state noted, still waiting. Stamped with governance's time, so applying
    the same states again writes nothing."""
    corrected = reopened = waiting = 0
    for request_id in waiting_corrections(con):
        state = states.get(request_id)
        if state is None:
            waiting += 1
            continue
        outcome = correction_outcome(state.state.value)
        con.execute(
            "UPDATE recon_corrections SET state = $st, reason_code = $code, reason = $why, decided_at = $at"
            " WHERE request_id = $r",
            {"st": state.state.value, "code": state.reason_code, "why": state.reason,
             "at": state.updated_at if outcome is not None else None, "r": request_id},
        )  # fmt: skip
        if outcome is None:
            waiting += 1
            continue
        _apply_outcome(con, request_id, state, outcome)
        corrected += outcome is ExceptionState.CORRECTED
        reopened += outcome is ExceptionState.OPEN
    return CorrectionsClosed(corrected, reopened, waiting)


def _apply_outcome(
    con: duckdb.DuckDBPyConnection, request_id: str, state: MultisigRequest, outcome: ExceptionState
) -> None:
    (exception_id, units, debit, credit) = con.execute(
        "SELECT exception_id, amount_kaus_units, from_account, to_account FROM recon_corrections WHERE request_id = $r",
        {"r": request_id},
    ).fetchall()[0]
    cur = _exception(con, exception_id)
    if outcome is ExceptionState.CORRECTED:
        action = "correction_executed"
        why = f"{request_id} executed: {kaus_to_decimal(units)} K-AUS moved from {debit} to {credit}"
    else:
        failed = state.reason_code == "EXECUTION_FAILED"
        action = "correction_failed" if failed else f"correction_{state.state.value.lower()}"
        why = f"{request_id} {'failed' if failed else state.state.value}: {state.reason or state.reason_code}"
    transition(ExceptionState(cur["state"]), outcome, why, cur["break_class"])
    resolved = outcome is ExceptionState.CORRECTED
    con.execute(
        "UPDATE recon_exceptions SET state = $s, resolved_at = $at, resolved_by = $who, resolution_reason = $why"
        " WHERE exception_id = $e",
        {"s": str(outcome), "at": state.updated_at if resolved else None, "who": SYSTEM_ACTOR if resolved else None,
         "why": why, "e": exception_id},
    )  # fmt: skip
    _log_action(con, f"{exception_id}|{action}|{request_id}", cur, action, cur["state"], str(outcome),
                cur["break_class"], cur["break_class"], SYSTEM_ACTOR, why, None, state.updated_at,
                int(units))  # fmt: skip


__all__ = [
    "CorrectionsClosed",
    "ExceptionNotFound",
    "InvalidTransition",
    "ReviewSummary",
    "act",
    "close_corrections",
    "list_exceptions",
    "request_correction",
    "sync_exceptions",
    "waiting_corrections",
]
