"""What the bridge agent writes to Kafka, built as JSON directly, must match the contracts exactly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from contracts import ledger_codec
from contracts import models as m
from contracts.bridge_codec import (
    intent_of_journal,
    journal_of_intent,
    journal_of_result,
    result_json,
    result_of_journal,
)
from contracts.topics import (
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    LEDGER_COMMANDS,
)
from domain.bridge import LedgerRejected, PayoutIntent, PostHold, Rejected, Settled
from domain.ledger import Leg, Reference, SettlementKind
from domain.rails import Rail, RailSubstitution
from streams.bridge.journal import KafkaJournal
from streams.bridge.ledger_client import KafkaHoldLedger
from tests.unit.test_bridge_core import DOWN, T0, fx_book, harness, payment, result_of


def test_ledger_commands_are_valid_contract_messages() -> None:
    rewards = [
        ledger_codec.RewardGrant("BRIDGE-card-1:cashback", m.RewardAccount.REWARDS, "acct-1", 30),
        ledger_codec.RewardGrant("BRIDGE-card-1:bonus", m.RewardAccount.ECOSYSTEM, "acct-1", 3),
    ]
    now_ms = 1_700_000_000_123
    decoded = [
        LEDGER_COMMANDS.decode(c)
        for c in (
            ledger_codec.place_hold(
                "BRIDGE-card-1:hold", "acct-1", "bridge:settlement", 1_003, 1_800_000_000_000, now_ms
            ),
            ledger_codec.post_hold("BRIDGE-card-1:post", "BRIDGE-card-1:hold", 1_000, (), now_ms),
            ledger_codec.void_hold("BRIDGE-card-1:void", "BRIDGE-card-1:hold", now_ms),
            ledger_codec.post_hold("BRIDGE-card-2:post", "BRIDGE-card-2:hold", 1_000, rewards, now_ms),
        )
    ]
    assert [type(d) for d in decoded] == [m.PlaceHold, m.PostHold, m.VoidHold, m.PostHold]
    assert decoded[0].amount_kaus_units == 1_003
    plain, with_rewards = decoded[1], decoded[3]
    assert isinstance(plain, m.PostHold) and plain.rewards == []
    assert isinstance(with_rewards, m.PostHold)
    assert [(g.transfer_id, g.from_account_id, g.account_id, g.amount_kaus_units) for g in with_rewards.rewards] == [
        ("BRIDGE-card-1:cashback", m.RewardAccount.REWARDS, "acct-1", 30),
        ("BRIDGE-card-1:bonus", m.RewardAccount.ECOSYSTEM, "acct-1", 3),
    ]
    assert {g.reason for g in with_rewards.rewards} == {"bridge.reward"}


def test_journal_round_trips_intents_and_results_exactly() -> None:
    """Including what a restarted worker needs to answer the same way: the substitution, the request's origin."""
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, DOWN)  # failover: the intent and the result carry a substitution
    settled = result_of(h.run(payment(program="AURA_SYDNEY", origin="2:40")))
    assert isinstance(settled, Settled) and settled.rail_substitution is RailSubstitution.PRIMARY_FAILED
    intents = [e for e in h.effects if isinstance(e, PayoutIntent)]
    assert [i.substitution for i in intents] == [None, RailSubstitution.PRIMARY_FAILED]
    for intent in intents:
        entry = m.BridgeJournalEntry.model_validate_json(orjson.dumps(journal_of_intent(intent)))
        assert entry.request_record == "2:40" and intent_of_journal(entry) == intent

    rejected = result_of(harness(book=fx_book("0.15045")).run(payment("card-2", origin="2:41")))  # slippage
    assert isinstance(rejected, Rejected)
    for result in (settled, rejected):
        raw = orjson.dumps(journal_of_result(result, f"BRIDGE-{result.request_id}"))
        assert result_of_journal(m.BridgeJournalEntry.model_validate_json(raw)) == result


def test_result_json_is_the_contract_message() -> None:
    settled = result_of(harness().run(payment()))
    rejected = result_of(harness(book=fx_book("0.15045")).run(payment("card-2")))
    for result, topic in ((settled, BRIDGE_SETTLEMENTS_COMPLETED), (rejected, BRIDGE_SETTLEMENTS_FAILED)):
        for repeat in (False, True):
            raw = orjson.dumps(result_json(result, repeat))
            decoded = topic.decode(raw)  # valid, and every field written explicitly
            assert set(orjson.loads(raw)) == set(type(decoded).model_fields)
            assert decoded.request_id == result.request_id and decoded.repeat is repeat


def test_a_completed_answer_names_the_primary_rail_and_why_another_one_paid() -> None:
    h = harness()
    for _ in range(3):
        h.breakers[Rail.STRIPE_INSTANT] = h.breakers[Rail.STRIPE_INSTANT].on_failure(T0)
    substituted = result_of(h.run(payment()))
    direct = result_of(harness().run(payment("card-2")))
    answers = [BRIDGE_SETTLEMENTS_COMPLETED.decode(orjson.dumps(result_json(r))) for r in (substituted, direct)]
    assert [(a.rail, a.primary_rail, a.rail_substitution_reason) for a in answers] == [
        (Rail.WISE, Rail.STRIPE_INSTANT, RailSubstitution.PRIMARY_CIRCUIT_OPEN),
        (Rail.STRIPE_INSTANT, Rail.STRIPE_INSTANT, None),
    ]


class _RecordingProducer:
    """AsyncProducer's send (with acks the test resolves by hand) and send_unacked (no ack at all)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self.unacked: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, ack))
        return ack

    def send_unacked(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        self.unacked.append((topic, key, value))

    def topics(self) -> list[str]:
        return [topic for topic, _key, _ack in self.sent]


class _Outcomes:
    """LedgerOutcomes' expect/forget; the test answers by hand (or never: a lost command)."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[m.LedgerOutcome]] = {}

    def expect(self, command_id: str) -> asyncio.Future[m.LedgerOutcome]:
        future: asyncio.Future[m.LedgerOutcome] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        return future

    def forget(self, command_id: str) -> None:
        self.waiting.pop(command_id, None)

    def answer(self, command_id: str, status: m.LedgerOutcomeStatus, **kw: Any) -> None:
        outcome = m.LedgerOutcome(
            command_id=command_id,
            command_type="POST_HOLD",
            status=status,
            amount_kaus_units=kw.pop("amount_kaus_units", 0),
            occurred_at=datetime(2026, 11, 24, tzinfo=UTC),
            **kw,
        )
        self.waiting.pop(command_id).set_result(outcome)


REWARD_ACCOUNTS = {"bridge:rewards": m.RewardAccount.REWARDS, "bridge:ecosystem": m.RewardAccount.ECOSYSTEM}


def test_a_capture_is_one_unacked_command_carrying_its_rewards() -> None:
    h = harness()
    settled = result_of(h.run(payment(program="AURA_SYDNEY")))
    assert isinstance(settled, Settled)
    [post] = [e for e in h.effects if isinstance(e, PostHold)]
    assert len(post.rewards) == 2

    async def scenario() -> None:
        producer, outcomes = _RecordingProducer(), _Outcomes()
        ledger = KafkaHoldLedger(producer, outcomes, REWARD_ACCOUNTS)  # type: ignore[arg-type]
        call = asyncio.ensure_future(
            ledger.post_hold(
                transfer_id=post.transfer_id, hold_id=post.hold_id, amount_units=post.amount_units, rewards=post.rewards
            )
        )
        await asyncio.sleep(0)
        assert producer.sent == [] and len(producer.unacked) == 1  # no delivery future: the outcome answers
        topic, key, value = producer.unacked[0]
        command = LEDGER_COMMANDS.decode(value)
        assert topic == LEDGER_COMMANDS.name and key == post.transfer_id.encode()
        assert isinstance(command, m.PostHold) and command.amount_kaus_units == post.amount_units
        assert [
            (g.transfer_id, g.from_account_id.value, g.account_id, g.amount_kaus_units) for g in command.rewards
        ] == [(r.transfer_id, r.debit_account_id, r.credit_account_id, r.amount_units) for r in post.rewards]
        assert not call.done()  # waits for the ledger's answer
        outcomes.answer(post.transfer_id, m.LedgerOutcomeStatus.APPLIED, amount_kaus_units=post.amount_units)
        await asyncio.wait_for(call, 1)

        refused = asyncio.ensure_future(
            ledger.post_hold(transfer_id="BRIDGE-card-2:post", hold_id="BRIDGE-card-2:hold", amount_units=5)
        )
        await asyncio.sleep(0)
        outcomes.answer(
            "BRIDGE-card-2:post",
            m.LedgerOutcomeStatus.REJECTED,
            reason_code="PENDING_EXPIRED",
            reason="expired",
        )
        with pytest.raises(LedgerRejected) as rejected:
            await asyncio.wait_for(refused, 1)
        assert rejected.value.code == "PENDING_EXPIRED"

    asyncio.run(scenario())


def test_a_lost_hold_command_times_out_and_is_voided_in_ledger_order() -> None:
    async def scenario() -> None:
        producer, outcomes = _RecordingProducer(), _Outcomes()
        ledger = KafkaHoldLedger(producer, outcomes, REWARD_ACCOUNTS, timeout_s=0.01)  # type: ignore[arg-type]
        with pytest.raises(LedgerRejected) as timed_out:
            await ledger.place_hold(
                transfer_id="BRIDGE-card-1:hold",
                debit_account_id="acct-1",
                credit_account_id="bridge:settlement",
                amount_units=1_003,
                expires_at_ms=1_800_000_000_000,
                reference=Reference(SettlementKind.PAYOUT, "payout-1", Leg.HOLD),
            )
        assert timed_out.value.code == "LEDGER_TIMEOUT" and outcomes.waiting == {}
        commands = [LEDGER_COMMANDS.decode(value) for _topic, _key, value in producer.unacked]
        assert [type(c) for c in commands] == [m.PlaceHold, m.VoidHold]
        # the hold names the payment the core put on its PlaceHold (here a holder's payout), nothing derived
        assert commands[0].reference == m.LedgerReference(kind=SettlementKind.PAYOUT, id="payout-1", leg=Leg.HOLD)
        void = commands[1]
        assert isinstance(void, m.VoidHold) and void.hold_id == "BRIDGE-card-1:hold"
        assert void.command_id == "BRIDGE-card-1:hold:void-timeout"

    asyncio.run(scenario())


def test_a_result_is_journaled_at_once_and_the_request_waits_only_for_that_entry() -> None:
    h = harness()
    settled = result_of(h.run(payment()))
    assert isinstance(settled, Settled) and settled.cashback_kaus_units > 0

    async def scenario() -> None:
        producer = _RecordingProducer()
        journal = KafkaJournal("unused:9092", producer)  # type: ignore[arg-type]
        journal.partition_of[settled.request_id] = 2
        # The capture's APPLIED outcome came first and its rewards rode on it: nothing else to wait for.
        await asyncio.wait_for(journal.persist_result(settled), 1)  # returns at once: the result can go out
        assert producer.topics() == [BRIDGE_PAYOUTS_JOURNAL.name] and producer.unacked == []
        acked = asyncio.ensure_future(journal.result_acked(settled.request_id))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not acked.done()  # the request may be acked only once the journal entry is durable
        producer.sent[0][2].set_result(None)
        await asyncio.wait_for(acked, 1)

    asyncio.run(scenario())


def test_a_bad_request_is_dead_lettered_and_finishes_only_once_the_dead_letter_is_acknowledged() -> None:
    from contracts.topics import PLATFORM_DEADLETTERS
    from streams.bridge.service import BridgeService

    async def scenario() -> None:
        producer = _RecordingProducer()
        journal = KafkaJournal("unused:9092", producer)  # type: ignore[arg-type]
        service = BridgeService(None, journal, producer)  # type: ignore[arg-type]  # a bad record never reaches it
        finished: list[int] = []
        await service.handle(b"card-1", b"{not json", 3, 41, lambda: finished.append(41))
        assert producer.topics() == [PLATFORM_DEADLETTERS.name]
        await asyncio.sleep(0)
        assert finished == []  # its offset stays uncommitted until the dead letter is durable
        producer.sent[0][2].set_result(None)
        await asyncio.sleep(0)
        assert finished == [41]

    asyncio.run(scenario())
