"""What the bridge agent writes to Kafka, built as JSON directly, must match the contracts exactly."""

from __future__ import annotations

import asyncio

import orjson

from contracts import models as m
from contracts.topics import (
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    LEDGER_COMMANDS,
)
from domain.bridge import PayoutIntent, Rejected, Settled
from streams.bridge_service import (
    KafkaHoldLedger,
    KafkaJournal,
    grant_reward_command,
    journal_of_intent,
    journal_of_result,
    place_hold_command,
    post_hold_command,
    result_of_journal,
    void_hold_command,
)
from streams.providers.runner import intent_from_record, result_json
from tests.unit.test_bridge_core import fx_book, harness, payment, result_of


def test_ledger_commands_are_valid_contract_messages() -> None:
    decoded = [
        LEDGER_COMMANDS.decode(orjson.dumps(c))
        for c in (
            place_hold_command("BRIDGE-card-1:hold", "acct-1", "bridge:settlement", 1_003, 1_800_000_000_000),
            post_hold_command("BRIDGE-card-1:post", "BRIDGE-card-1:hold", 1_000),
            void_hold_command("BRIDGE-card-1:void", "BRIDGE-card-1:hold"),
            grant_reward_command("BRIDGE-card-1:cashback", "bridge:rewards", "acct-1", 30),
        )
    ]
    assert [type(d) for d in decoded] == [m.PlaceHold, m.PostHold, m.VoidHold, m.GrantReward]
    assert decoded[0].amount_kaus_units == 1_003 and decoded[3].from_account_id is m.RewardAccount.REWARDS


def test_journal_round_trips_intents_and_results_exactly() -> None:
    h = harness()
    settled = result_of(h.run(payment(program="AURA_SYDNEY")))
    assert isinstance(settled, Settled)
    [intent] = [e for e in h.effects if isinstance(e, PayoutIntent)]
    entry = m.BridgeJournalEntry.model_validate_json(orjson.dumps(journal_of_intent(intent)))
    assert entry.intent is not None and intent_from_record(entry.intent) == intent

    rejected = result_of(harness(book=fx_book("0.15045")).run(payment("card-2")))  # slippage
    assert isinstance(rejected, Rejected)
    for result in (settled, rejected):
        raw = orjson.dumps(journal_of_result(result, f"BRIDGE-{result.request_id}"))
        assert result_of_journal(m.BridgeJournalEntry.model_validate_json(raw)) == result


def test_result_json_is_the_contract_message() -> None:
    settled = result_of(harness().run(payment()))
    rejected = result_of(harness(book=fx_book("0.15045")).run(payment("card-2")))
    for result, topic in ((settled, BRIDGE_SETTLEMENTS_COMPLETED), (rejected, BRIDGE_SETTLEMENTS_FAILED)):
        raw = orjson.dumps(result_json(result))
        decoded = topic.decode(raw)  # valid, and every field written explicitly
        assert set(orjson.loads(raw)) == set(type(decoded).model_fields)
        assert decoded.request_id == result.request_id


class _RecordingProducer:
    """AsyncProducer's send, with acks the test resolves by hand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, asyncio.Future[None]]] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, ack))
        return ack

    def topics(self) -> list[str]:
        return [topic for topic, _key, _ack in self.sent]


def test_a_result_is_journaled_only_after_its_rewards_are_acked_but_published_without_waiting() -> None:
    h = harness()
    settled = result_of(h.run(payment()))
    assert isinstance(settled, Settled) and settled.cashback_kaus_units > 0

    async def scenario() -> None:
        producer = _RecordingProducer()
        ledger = KafkaHoldLedger(producer, outcomes=None, reward_accounts={"bridge:rewards": "bridge:rewards"})  # type: ignore[arg-type]
        journal = KafkaJournal("unused:9092", producer, ledger)  # type: ignore[arg-type]
        journal.partition_of[settled.request_id] = 2
        await ledger.transfer(
            transfer_id=f"{settled.bridge_tx_id}:cashback",
            debit_account_id="bridge:rewards",
            credit_account_id=settled.payer_account_id,
            amount_units=settled.cashback_kaus_units,
        )
        await asyncio.wait_for(journal.persist_result(settled), 1)  # returns at once: the result can go out
        acked = asyncio.ensure_future(journal.result_acked(settled.request_id))
        await asyncio.sleep(0)
        assert producer.topics() == [LEDGER_COMMANDS.name]  # no journal entry while the reward is unacked
        producer.sent[0][2].set_result(None)  # the reward is durable
        for _ in range(5):
            await asyncio.sleep(0)
        assert producer.topics() == [LEDGER_COMMANDS.name, BRIDGE_PAYOUTS_JOURNAL.name]
        assert not acked.done()  # the request may be acked only once the journal entry is durable too
        producer.sent[1][2].set_result(None)
        await asyncio.wait_for(acked, 1)

    asyncio.run(scenario())
