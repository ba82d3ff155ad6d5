"""What the bridge agent writes to Kafka, built as JSON directly, must match the contracts exactly."""

from __future__ import annotations

import orjson

from contracts import models as m
from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED, LEDGER_COMMANDS
from domain.bridge import PayoutIntent, Rejected, Settled
from streams.bridge_service import (
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
