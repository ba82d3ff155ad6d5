"""A ledger break corrected through governance, and every review action published through the outbox.

The state machine (domain.variance_rules), the LEDGER_CORRECTION request (exact units, deterministic id and nonce),
the exception's life in DuckDB (correction_requested, then corrected or open again by governance.multisig's state),
the defaults taken from a real refused capture's records, and the outbox (nothing marked before the broker
acknowledged it; a re-send carries the same bytes)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest

from contracts import models as m
from contracts.topics import AUDIT_RECORDS, GOVERNANCE_REQUESTS
from domain.governance import Operation, Request, check_request, kaus_units
from domain.variance_rules import (
    BreakClass,
    ExceptionState,
    InvalidTransition,
    correction_nonce,
    correction_outcome,
    correction_request_id,
    transition,
)
from tests.unit.test_warehouse_capture_refused import REFUSED, RefusedDay, refused_day, settings  # noqa: F401
from warehouse import exceptions, outbox
from warehouse.corrections import Correction, CorrectionUnknown, correction_request, default_correction
from warehouse.db import connect, query, warehouse
from warehouse.settings import ReconSettings
from warehouse.sqlrunner import init_schema

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
EXC = "K:card-7f3a"
CORRECTION = Correction("payer-1", "bridge:settlement", 12_345_678)
WEEK = timedelta(days=7)


# --------------------------------------------------------------------------- the state machine


def test_a_ledger_break_is_corrected_only_through_governance() -> None:
    cr, op, done = ExceptionState.CORRECTION_REQUESTED, ExceptionState.OPEN, ExceptionState.CORRECTED
    ledger, fee = BreakClass.CAPTURE_REFUSED, BreakClass.FEE_VARIANCE
    with pytest.raises(InvalidTransition, match="needs the signers"):
        transition(op, done, "booked it", ledger)
    assert transition(op, cr, "payer agreed", ledger) is cr
    assert transition(cr, done, "executed", ledger) is done
    assert transition(cr, op, "rejected: not enough funds", ledger) is op
    for target in (ExceptionState.APPROVED, ExceptionState.WRITTEN_OFF, cr):
        with pytest.raises(InvalidTransition, match="cannot move"):
            transition(cr, target, "meanwhile", ledger)  # the signers could still move the K-AUS
    with pytest.raises(InvalidTransition, match="only a ledger break"):
        transition(op, cr, "why not", fee)
    assert transition(op, done, "ADJ-77 booked", fee) is done  # other classes keep today's correct
    assert transition(op, ExceptionState.WRITTEN_OFF, "collect it never", ledger) is ExceptionState.WRITTEN_OFF
    assert (correction_outcome("EXECUTED"), correction_outcome("REJECTED"), correction_outcome("EXPIRED")) == (
        done, op, op)  # fmt: skip
    assert correction_outcome("PENDING") is None and correction_outcome("APPROVED") is None


# --------------------------------------------------------------------------- the request


def test_request_ids_and_nonces_are_deterministic_per_attempt() -> None:
    assert correction_request_id(EXC, 1) == "RECON-CORR:K:card-7f3a:1"
    assert correction_request_id(EXC, 2) == "RECON-CORR:K:card-7f3a:2"
    assert correction_nonce("RECON-CORR:K:card-7f3a:1") == correction_nonce(correction_request_id(EXC, 1))
    nonces = {correction_nonce(correction_request_id(EXC, n)) for n in range(1, 50)}
    assert len(nonces) == 49 and all(0 <= n < 2**63 for n in nonces)
    long_id = "K:" + "x" * 130
    hashed = correction_request_id(long_id, 1)
    assert len(hashed) <= 124 and hashed == correction_request_id(long_id, 1) != correction_request_id(long_id, 2)
    with pytest.raises(ValueError, match="from 1"):
        correction_request_id(EXC, 0)


def test_the_request_moves_exactly_the_units_and_governance_accepts_its_shape() -> None:
    units = kaus_units("12.345678")
    assert units == 12_345_678
    rid = correction_request_id(EXC, 1)
    req = correction_request(rid, EXC, Correction("payer-1", "bridge:settlement", units), "ana", " payer agreed ",
                             T0, T0 + WEEK)  # fmt: skip
    assert (req.operation, req.amount_kaus_units, req.nonce) == (
        m.GovernanceOperation.LEDGER_CORRECTION, 12_345_678, correction_nonce(rid))  # fmt: skip
    assert req.params == {"from_account": "payer-1", "to_account": "bridge:settlement", "exception_id": EXC,
                          "reason": "payer agreed"}  # fmt: skip
    assert (req.requested_by, req.created_at, req.expires_at) == ("ana", T0, T0 + WEEK)
    assert req == correction_request(rid, EXC, Correction("payer-1", "bridge:settlement", units), "ana",
                                     "payer agreed", T0, T0 + WEEK)  # fmt: skip
    as_governance = Request(rid, Operation.LEDGER_CORRECTION, req.amount_kaus_units, req.params, req.nonce,
                            req.expires_at, req.requested_by, req.created_at)  # fmt: skip
    assert check_request(as_governance) is None
    with pytest.raises(CorrectionUnknown):
        Correction("payer-1", "payer-1", 1)
    with pytest.raises(CorrectionUnknown):
        Correction("payer-1", "bridge:settlement", 0)


# --------------------------------------------------------------------------- the exception in DuckDB


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = connect()
    init_schema(c)
    for eid, cls in ((EXC, "capture_refused"), ("S:BR-1", "fee_variance")):
        c.execute(
            "INSERT INTO recon_exceptions VALUES ($e, $c, 'open', 'STRIPE', 'USD', $s, NULL, 'BRIDGE-x', -1234, 0,"
            " DATE '2026-11-01', $at, DATE '2026-11-01', 0, NULL, NULL, NULL)",
            {"e": eid, "c": cls, "s": eid[2:], "at": T0 - timedelta(hours=5)},
        )
    yield c
    c.close()


def multisig(rid: str, state: str, at: datetime, code: str | None = None, reason: str | None = None) -> Any:
    return m.MultisigRequest(
        request_id=rid,
        amount_kaus_units=CORRECTION.amount_kaus_units,
        required_signers=3,
        signatures=3,
        state=m.MultisigState(state),
        created_at=T0,
        updated_at=at,
        operation=m.GovernanceOperation.LEDGER_CORRECTION,
        reason_code=code,
        reason=reason,
    )


def state_of(con: duckdb.DuckDBPyConnection, eid: str = EXC) -> dict[str, Any]:
    return query(con, "SELECT * FROM recon_exceptions WHERE exception_id = $e", {"e": eid}).to_dicts()[0]


def actions(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute(
        "SELECT action, from_state, to_state, actor, audit_record FROM recon_exception_actions ORDER BY acted_at"
    ).fetchall()


def test_correct_asks_once_and_governance_closes_it(con: duckdb.DuckDBPyConnection) -> None:
    row = exceptions.request_correction(con, EXC, CORRECTION, "ana", "payer agreed", WEEK, T0)
    rid = correction_request_id(EXC, 1)
    assert (row["request_id"], row["attempt"], row["amount_kaus_units"]) == (rid, 1, 12_345_678)
    assert state_of(con)["state"] == "correction_requested"
    stored = GOVERNANCE_REQUESTS.decode(
        con.execute("SELECT request FROM recon_corrections WHERE request_id = $r", {"r": rid}).fetchall()[0][0]
    )
    assert stored == correction_request(rid, EXC, CORRECTION, "ana", "payer agreed", T0, T0 + WEEK)
    [(action, src, dst, actor, audit)] = actions(con)
    record = m.AuditRecord.model_validate_json(audit)
    assert (action, src, dst, actor) == ("correction_requested", "open", "correction_requested", "ana")
    assert (record.action, record.details.kaus_amount, record.transaction_id) == (
        "RECON_EXCEPTION_CORRECTION_REQUESTED", "12.345678", EXC)  # fmt: skip
    with pytest.raises(InvalidTransition):  # ONE request: asking again while it waits is refused
        exceptions.request_correction(con, EXC, CORRECTION, "ana", "again", WEEK, T0)
    with pytest.raises(InvalidTransition, match="cannot move"):
        exceptions.act(con, EXC, ExceptionState.WRITTEN_OFF, "cfo", "meanwhile")
    assert exceptions.waiting_corrections(con) == [rid]

    pending = exceptions.close_corrections(con, {rid: multisig(rid, "PENDING", T0 + timedelta(minutes=1))})
    assert (pending.corrected, pending.waiting, state_of(con)["state"]) == (0, 1, "correction_requested")
    executed_at = T0 + timedelta(days=1)
    done = exceptions.close_corrections(con, {rid: multisig(rid, "EXECUTED", executed_at)})
    assert (done.corrected, done.reopened) == (1, 0)
    exc = state_of(con)
    assert (exc["state"], exc["resolved_at"], exc["resolved_by"]) == ("corrected", executed_at, "recon-bot")
    assert "12.345678 K-AUS moved from payer-1 to bridge:settlement" in exc["resolution_reason"]
    assert [a[0] for a in actions(con)] == ["correction_requested", "correction_executed"]
    assert exceptions.close_corrections(con, {rid: multisig(rid, "EXECUTED", executed_at)}).corrected == 0
    assert len(actions(con)) == 2 and exceptions.waiting_corrections(con) == []


def test_a_failed_correction_reopens_the_exception_and_the_next_is_a_new_request(
    con: duckdb.DuckDBPyConnection,
) -> None:
    first = exceptions.request_correction(con, EXC, CORRECTION, "ana", "payer agreed", WEEK, T0)["request_id"]
    failed = multisig(first, "REJECTED", T0 + timedelta(days=1), "EXECUTION_FAILED", "insufficient funds")
    assert exceptions.close_corrections(con, {first: failed}).reopened == 1
    exc = state_of(con)
    assert exc["state"] == "open" and "insufficient funds" in exc["resolution_reason"]
    assert actions(con)[-1][:3] == ("correction_failed", "correction_requested", "open")
    second = exceptions.request_correction(con, EXC, CORRECTION, "ana", "funded now", WEEK, T0 + timedelta(days=2))
    assert (second["request_id"], second["attempt"]) == (correction_request_id(EXC, 2), 2)
    expired = multisig(second["request_id"], "EXPIRED", T0 + timedelta(days=9), "EXPIRED", "expired")
    assert exceptions.close_corrections(con, {second["request_id"]: expired}).reopened == 1
    assert actions(con)[-1][0] == "correction_expired" and state_of(con)["state"] == "open"


def test_the_nightly_review_closes_corrections_and_ages_them(con: duckdb.DuckDBPyConnection) -> None:
    rid = exceptions.request_correction(con, EXC, CORRECTION, "ana", "payer agreed", WEEK, T0)["request_id"]
    day = T0.date() + timedelta(days=3)
    waiting = exceptions.sync_exceptions(con, day, {})
    assert waiting.corrections_waiting == 1 and state_of(con)["age_days"] == 4  # opened on 11-01, still unresolved
    review = exceptions.sync_exceptions(con, day, {rid: multisig(rid, "EXECUTED", T0 + timedelta(days=1))})
    assert (review.corrections_executed, state_of(con)["state"]) == (1, "corrected")


def test_other_classes_keep_todays_correct(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(InvalidTransition, match="only a ledger break"):
        exceptions.request_correction(con, "S:BR-1", CORRECTION, "ana", "no", WEEK, T0)
    done = exceptions.act(con, "S:BR-1", ExceptionState.CORRECTED, "ana", "ADJ-77 booked", T0)
    assert done["state"] == "corrected"
    with pytest.raises(InvalidTransition, match="needs the signers"):
        exceptions.act(con, EXC, ExceptionState.CORRECTED, "ana", "booked it myself", T0)


def test_the_defaults_come_from_the_refused_capture(refused_day: RefusedDay, settings: ReconSettings) -> None:  # noqa: F811
    with warehouse(settings.warehouse_path) as con:
        exc = {"exception_id": f"K:{REFUSED}", "settlement_id": REFUSED, "related_id": refused_day.refused.bridge_tx_id}
        found = default_correction(con, exc)
        refused = refused_day.refused  # the payer owes what the capture would have moved to the hold's account
        assert found == Correction(refused.payer_account_id, "bridge:settlement", refused.kaus_debited_units)
        assert (
            default_correction(con, exc, to_account="treasury:main", amount_kaus_units=5).to_account == "treasury:main"
        )
        with pytest.raises(CorrectionUnknown, match="--from-account, --to-account, --amount"):
            default_correction(con, {"exception_id": "K:nope", "settlement_id": "nope", "related_id": None})


# --------------------------------------------------------------------------- the outbox


class FakeProducer:
    """Acknowledges (or fails) every record at flush, like librdkafka's delivery callbacks."""

    def __init__(self, ack: bool) -> None:
        self.ack = ack
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.waiting: list[Any] = []
        self.purged = False

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.sent.append((topic, key, value))
        self.waiting.append(on_delivery)

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        if not self.ack:
            return len(self.waiting)
        for callback in self.waiting:
            callback(None, None)
        self.waiting = []
        return 0

    def purge(self) -> None:
        self.purged = True


def test_the_outbox_marks_only_what_the_broker_acknowledged(con: duckdb.DuckDBPyConnection) -> None:
    exceptions.request_correction(con, EXC, CORRECTION, "ana", "payer agreed", WEEK, T0)
    exceptions.act(con, "S:BR-1", ExceptionState.APPROVED, "ana", "provider confirmed", T0)
    down = FakeProducer(ack=False)
    result = outbox.publish(con, "unused:9092", 0.1, lambda _config: down)
    assert (result.requests_sent, result.audits_sent, result.queued) == (0, 0, 3) and down.purged
    assert "unacknowledged" in (result.error or "")
    up = FakeProducer(ack=True)
    result = outbox.publish(con, "unused:9092", 0.1, lambda _config: up)
    assert (result.requests_sent, result.audits_sent, result.queued, result.error) == (1, 2, 0, None)
    assert [t for t, _k, _v in up.sent] == [GOVERNANCE_REQUESTS.name, AUDIT_RECORDS.name, AUDIT_RECORDS.name]
    assert up.sent[:1] == down.sent  # sent again byte for byte: the same request (audits wait behind it)
    ids = [AUDIT_RECORDS.decode(v).audit_id for t, _k, v in up.sent if t == AUDIT_RECORDS.name]
    assert len(set(ids)) == 2 and all(i.startswith("AUDIT-RECON-") for i in ids)
    assert [k for t, k, _v in up.sent if t == AUDIT_RECORDS.name] == [EXC.encode(), b"S:BR-1"]
    assert outbox.queued(con) == (0, 0)
    again = FakeProducer(ack=True)
    assert outbox.publish(con, "unused:9092", 0.1, lambda _config: again).audits_sent == 0 and again.sent == []
