"""Every card payment's outcome has one spec §7.2 audit record on ``audit.records``, written with its answer.

One record per completed and per failed payment (BRIDGE_SETTLEMENT_COMPLETED / _FAILED), sent with the first answer
and acknowledged before the request may be committed; none with a repeat answer. Its ``auditId`` is a function of
the request id, so a record written again after a crash is the same record (readers deduplicate by it).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson
import pytest

from contracts import models as m
from contracts.bridge_codec import audit_json
from contracts.topics import AUDIT_RECORDS, BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED
from domain.bridge import BridgeAuditAction, Rejected, Settled, audit_of
from domain.money import Currency
from domain.rails import Rail, Region
from streams.bridge import runner, service
from tests.unit.test_bridge_core import K, fx_book, harness, payment, result_of
from tests.unit.test_bridge_outcomes import Producer, Stand, card, journal_left_by, until


def audits(stand: Stand) -> list[m.AuditRecord]:
    return [AUDIT_RECORDS.decode(v) for v in stand.producer.on(AUDIT_RECORDS.name)]


def settlement_audits(stand: Stand) -> list[m.AuditRecord]:
    """The payments' records (a refused capture's reconciliation record aside)."""
    kept = {BridgeAuditAction.SETTLEMENT_COMPLETED, BridgeAuditAction.SETTLEMENT_FAILED}
    return [a for a in audits(stand) if a.action in kept]


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CAPTURE_BACKOFF_S", (0.01,))
    monkeypatch.setattr(service, "PARKED_RETRY_S", 0.05)


def encoded(audit: Any) -> bytes:
    return orjson.dumps(audit_json(audit))


# --------------------------------------------------------------------------- the record


def test_a_completed_payments_record_states_its_figures_in_the_contracts_exact_form() -> None:
    settled = result_of(harness().run(payment(program="AURA_SYDNEY")))
    assert isinstance(settled, Settled)
    settled = replace(settled, kaus_debited_units=1_000 * K + 123_456, total_duration_us=487_499)
    raw = encoded(audit_of(settled))
    record = AUDIT_RECORDS.decode(raw)
    assert AUDIT_RECORDS.encode(record) == raw  # byte for byte what the validated model writes
    assert AUDIT_RECORDS.key_of(record) == b"BRIDGE-card-1"
    assert (record.audit_id, record.transaction_id) == ("AUDIT:BRIDGE-card-1:completed", "BRIDGE-card-1")
    assert record.action == "BRIDGE_SETTLEMENT_COMPLETED"
    assert (record.actor.user_id, record.actor.ip) == ("acct-payer-1", None)
    d = record.details
    assert (d.kaus_amount, d.fiat_amount, d.currency) == ("1000.123456", "150.00", Currency.USD)
    assert (d.exchange_rate, d.settlement_rail, d.duration) == (Decimal("0.15"), Rail.STRIPE_INSTANT, 487)
    assert record.timestamp == BRIDGE_SETTLEMENTS_COMPLETED.decode(_answer(settled)).completed_at
    assert (record.signature, record.blockchain_ref) == (None, None)  # signing is not the bridge's


def test_a_failed_payments_record_names_no_debit_and_no_rate() -> None:
    rejected = result_of(harness(book=fx_book("0.15045")).run(payment("card-2")))  # slippage after the hold
    assert isinstance(rejected, Rejected)
    phases = tuple((p, 100_400) for p, _us in rejected.phase_durations_us)
    rejected = replace(rejected, phase_durations_us=phases)
    raw = encoded(audit_of(rejected))
    record = AUDIT_RECORDS.decode(raw)
    assert AUDIT_RECORDS.encode(record) == raw
    assert (record.audit_id, record.transaction_id) == ("AUDIT:BRIDGE-card-2:failed", "BRIDGE-card-2")
    assert record.action == "BRIDGE_SETTLEMENT_FAILED"
    d = record.details
    assert (d.kaus_amount, d.exchange_rate, d.fiat_amount, d.currency) == (None, None, "150.00", Currency.USD)
    assert d.duration == 402  # the phases' 401.6 ms
    assert record.timestamp == BRIDGE_SETTLEMENTS_FAILED.decode(_answer(rejected)).failed_at


def test_a_zero_decimal_currency_is_stated_in_whole_units() -> None:
    won = result_of(
        harness(book=fx_book("210.4321", Currency.KRW)).run(
            payment(amount_minor=20_000, ccy=Currency.KRW, region=Region.KR, quoted="210.4321")
        )
    )
    assert isinstance(won, Settled)
    record = AUDIT_RECORDS.decode(encoded(audit_of(won)))
    d = record.details
    assert (d.fiat_amount, d.currency, d.kaus_amount) == ("20000", Currency.KRW, "95.042534")
    assert (d.exchange_rate, d.settlement_rail) == (Decimal("210.4321"), Rail.TOSS_PAYMENTS)


def test_a_result_without_a_transaction_id_is_audited_under_its_request_id() -> None:
    """What the warehouse joins a settlement's audit on: its bridge_tx_id, else its request id. The audit id stays
    the one the request's transaction would have: within the id bound whatever the request id's length."""
    rejected = result_of(harness(balance=0).run(payment("r" * 128)))
    assert isinstance(rejected, Rejected)
    record = AUDIT_RECORDS.decode(encoded(audit_of(replace(rejected, bridge_tx_id=None))))
    assert record.transaction_id == "r" * 128
    assert record.audit_id.startswith("AUDIT:BRIDGE-") and record.audit_id.endswith(":failed")


def _answer(result: Settled | Rejected) -> bytes:
    from contracts.bridge_codec import result_json

    return orjson.dumps(result_json(result))


# --------------------------------------------------------------------------- with the answers


def test_a_completed_and_a_failed_payment_each_have_exactly_one_record_sent_before_their_answer() -> None:
    async def scenario() -> None:
        stand = Stand()
        stand.ledger.back()
        await stand.submit(card(), 7)
        await stand.submit(card("card-slipped", rate_off_bps=100), 8)  # fails: slippage
        await until(lambda: sorted(stand.done) == [7, 8])
        [completed], [failed] = stand.outcomes()
        by_tx = {a.transaction_id: a for a in audits(stand)}
        assert len(audits(stand)) == 2 and set(by_tx) == {completed.bridge_tx_id, failed.bridge_tx_id}
        done = by_tx[completed.bridge_tx_id]
        assert done.action == "BRIDGE_SETTLEMENT_COMPLETED" and done.timestamp == completed.completed_at
        assert Decimal(done.details.kaus_amount or "") * K == completed.kaus_debited_units
        assert (done.details.exchange_rate, done.details.settlement_rail) == (completed.rate, completed.rail)
        assert done.details.duration == completed.total_duration_ms and done.actor.user_id == "acct-payer-1"
        bad = by_tx[failed.bridge_tx_id]
        assert bad.action == "BRIDGE_SETTLEMENT_FAILED" and bad.timestamp == failed.failed_at
        assert bad.details.fiat_amount == "150.00" and bad.details.kaus_amount is None
        sent = [(t, k) for t, k, _v in stand.producer.sent if t != "bridge.payouts.journal"]
        for answer, topic in ((completed, BRIDGE_SETTLEMENTS_COMPLETED), (failed, BRIDGE_SETTLEMENTS_FAILED)):
            recorded = sent.index((AUDIT_RECORDS.name, answer.bridge_tx_id.encode()))
            assert recorded < sent.index((topic.name, answer.request_id.encode()))
        assert stand.service.stats.audited == 2

    asyncio.run(scenario())


def test_a_repeated_request_writes_no_second_record() -> None:
    async def scenario() -> None:
        stand = Stand()
        stand.ledger.back()
        await stand.submit(card(), 7)
        await stand.submit(card("card-slipped", rate_off_bps=100), 8)
        await until(lambda: sorted(stand.done) == [7, 8])
        await stand.submit(card(), 9)  # the producer sent both again
        await stand.submit(card("card-slipped", rate_off_bps=100), 10)
        await until(lambda: sorted(stand.done) == [7, 8, 9, 10])
        completed, failed = stand.outcomes()
        assert [a.repeat for a in (*completed, *failed)] == [False, True, False, True]  # both repeats answered
        assert sorted(a.audit_id for a in audits(stand)) == [
            "AUDIT:BRIDGE-card-late-capture:completed",
            "AUDIT:BRIDGE-card-slipped:failed",
        ]

    asyncio.run(scenario())


class _AuditAcksHeld(Producer):
    """Acknowledges everything at once but the audit records, which the test acknowledges (or fails) by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.audit_acks: list[asyncio.Future[int]] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> asyncio.Future[int]:
        ack = super().send(topic, key, value, partition)
        if topic != AUDIT_RECORDS.name:
            return ack
        held: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.audit_acks.append(held)
        return held


@pytest.mark.parametrize("kafka_accepts", [True, False])
def test_the_request_is_finished_only_once_its_audit_record_is_acknowledged(kafka_accepts: bool) -> None:
    async def scenario() -> None:
        producer = _AuditAcksHeld()
        stand = Stand(producer=producer)
        stand.ledger.back()
        await stand.submit(card(), 7)
        await until(lambda: len(producer.audit_acks) == 1)
        for _ in range(5):
            await asyncio.sleep(0)
        assert stand.outcomes()[0] != [] and stand.done == []  # answered, but not finished without its record
        if kafka_accepts:
            producer.audit_acks[0].set_result(1)
            await until(lambda: stand.done == [7])
        else:  # Kafka refused it: the request stays uncommitted, a restart answers and records it again
            producer.audit_acks[0].set_exception(RuntimeError("KafkaError: _MSG_TIMED_OUT"))
            for _ in range(20):
                await asyncio.sleep(0)
            assert stand.done == []

    asyncio.run(scenario())


# --------------------------------------------------------------------------- after a crash


def test_a_result_journaled_before_a_crash_is_recorded_again_as_the_same_record() -> None:
    """The worker died after journaling (and maybe publishing) the result, before the offset was committed: the
    record read again is answered as first, with its audit record, byte for byte the earlier one; a later record
    of the same request is a repeat and writes none."""

    async def scenario() -> None:
        before = Stand()
        before.ledger.back()
        await before.submit(card(), 7)
        await until(lambda: before.done == [7])
        [first] = before.producer.on(AUDIT_RECORDS.name)

        after = Stand(earlier=journal_left_by(before), stripe=before.stripe)
        await after.submit(card(), 7)  # delivered again: uncommitted
        await after.submit(card(), 9)
        await until(lambda: sorted(after.done) == [7, 9])
        assert after.producer.on(AUDIT_RECORDS.name) == [first]

    asyncio.run(scenario())


def test_a_payout_recovered_after_a_crash_is_recorded_once_under_the_same_audit_id() -> None:
    """The worker died after the payout, before the result entry was durable: recovery reaches the result again
    and records it under the audit id of the first run (its measured durations differ: the id is what dedups)."""

    async def scenario() -> None:
        before = Stand()
        before.ledger.back()
        await before.submit(card(), 7)
        await until(lambda: before.done == [7])
        [first] = audits(before)

        after = Stand(earlier=journal_left_by(before, with_results=False), stripe=before.stripe)
        after.ledger.back()
        await after.submit(card(), 7)  # loading the partition recovers the intent first
        await after.submit(card(), 9)
        await until(lambda: sorted(after.done) == [7, 9])
        [again] = audits(after)  # with the recovery's answer; both records read after it are repeats
        assert again.audit_id == first.audit_id and again.transaction_id == first.transaction_id
        assert again.details.kaus_amount == first.details.kaus_amount
        assert after.service.stats.recovered == 1

    asyncio.run(scenario())


@pytest.mark.usefixtures("short_waits")
def test_a_capture_refused_after_payout_has_its_settlement_record_and_its_reconciliation_record() -> None:
    async def scenario() -> None:
        stand = Stand(refuse_capture="hold expired")
        stand.ledger.back()
        await stand.submit(card(), 7)
        await until(lambda: stand.done == [7])
        assert [a.action for a in audits(stand)] == [
            "BRIDGE_CAPTURE_REFUSED_AFTER_PAYOUT",
            "BRIDGE_SETTLEMENT_COMPLETED",
        ]
        assert len({a.audit_id for a in audits(stand)}) == 2
        assert [a.transaction_id for a in settlement_audits(stand)] == ["BRIDGE-card-late-capture"]

    asyncio.run(scenario())


# --------------------------------------------------------------------------- in the warehouse


def test_the_warehouse_counts_the_records_as_the_settlements_audit_coverage() -> None:
    """Landed as the nightly snapshot lands them (a record written twice after a crash included): each settlement,
    completed or failed, has its audit; one row per audit id."""
    from warehouse.db import connect, query
    from warehouse.snapshot_loader import SourceRecord, land_records
    from warehouse.sqlrunner import build_models, init_schema

    settled = result_of(harness().run(payment()))
    rejected = result_of(harness(book=fx_book("0.15045")).run(payment("card-2")))
    unaudited = result_of(harness().run(payment("card-3")))
    values = [
        (BRIDGE_SETTLEMENTS_COMPLETED.name, _answer(settled)),
        (BRIDGE_SETTLEMENTS_FAILED.name, _answer(rejected)),
        (BRIDGE_SETTLEMENTS_COMPLETED.name, _answer(unaudited)),
        (AUDIT_RECORDS.name, encoded(audit_of(settled))),
        (AUDIT_RECORDS.name, encoded(audit_of(rejected))),
        (AUDIT_RECORDS.name, encoded(audit_of(settled))),  # re-emitted after a crash
    ]
    con = connect()
    try:
        init_schema(con)
        stats = land_records(con, [SourceRecord(topic, 0, n, v) for n, (topic, v) in enumerate(values)])
        assert not stats.rejected, stats.rejected
        build_models(con)
        covered = query(con, "SELECT settlement_id, status, has_audit FROM fct_settlements ORDER BY settlement_id")
        assert covered.rows() == [
            ("card-1", "completed", True),
            ("card-2", "failed", True),
            ("card-3", "completed", False),
        ]
        staged = query(con, "SELECT audit_id, transaction_id, action, actor_user_id, currency FROM stg_audit_records")
        assert sorted(staged.rows()) == [
            ("AUDIT:BRIDGE-card-1:completed", "BRIDGE-card-1", "BRIDGE_SETTLEMENT_COMPLETED", "acct-payer-1", "USD"),
            ("AUDIT:BRIDGE-card-2:failed", "BRIDGE-card-2", "BRIDGE_SETTLEMENT_FAILED", "acct-payer-1", "USD"),
        ]
    finally:
        con.close()
