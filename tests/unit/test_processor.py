"""The record processor gives every record exactly one outcome: a record that makes the state raise (a bug, a value
nobody foresaw) is dead-lettered as PROCESSING_ERROR with none of its effects, the partition moves on, and a replay
after a restart gives the same state."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import LEDGER_COMMANDS, LEDGER_TRANSFERS, PLATFORM_DEADLETTERS
from streams.kafka import partition_log
from streams.kafka.processor import RecordProcessor
from streams.p2p.ledger import LedgerPartition

AT = datetime(2026, 11, 24, 10, tzinfo=UTC)
BUGGY = "dep-bug"


def deposit(command_id: str, account: str, units: int) -> tuple[bytes, bytes]:
    message = m.Deposit(command_id=command_id, account_id=account, amount_kaus_units=units, occurred_at=AT)
    return LEDGER_COMMANDS.key_of(message), LEDGER_COMMANDS.encode(message)


class BuggyLedger(LedgerPartition):
    """Applies a deposit, then raises for one command id: a bug after a half-applied record."""

    def _deposit(self, command: m.Deposit) -> list[Any]:
        outputs = super()._deposit(command)
        if command.command_id == BUGGY:
            raise KeyError("boom")
        return outputs


RECORDS = [
    deposit("dep-1", "alice", 1_000),
    deposit(BUGGY, "alice", 50_000),
    deposit("dep-2", "bob", 2_000),
    (b"ledger-x", b'{"not": "a command"}'),  # a plain bad record too: one dead letter, as before
    deposit("dep-3", "alice", 3_000),
]


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """ledger.commands[0] held in memory: what a rebuild reads instead of the broker."""

    def read(
        _bootstrap: str, _topic: str, _partition: int, end: int, start: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes, int]]:
        for offset in range(start or 0, end):
            key, value = RECORDS[offset]
            yield offset, key, value, 0

    monkeypatch.setattr(partition_log, "read_partition", read)
    return RECORDS


def processor() -> RecordProcessor:
    return RecordProcessor(LEDGER_COMMANDS, BuggyLedger, "unused:9092", 64 * 1024)


def test_a_record_that_raises_is_dead_lettered_with_none_of_its_effects(log: list[Any]) -> None:
    p = processor()
    outcomes = [p.process(0, offset, key, value, None) for offset, (key, value) in enumerate(log)]

    assert all(outcomes), "every record has an outcome"
    letters = {i: out[0][1] for i, out in enumerate(outcomes) if out[0][0] is PLATFORM_DEADLETTERS}
    assert sorted(letters) == [1, 3]
    assert letters[1].reason_code == "PROCESSING_ERROR" and "KeyError" in letters[1].reason
    assert base64.b64decode(letters[1].value_b64 or "") == log[1][1], "the original bytes, for a replay"
    assert letters[3].reason_code != "PROCESSING_ERROR"
    assert [t for t, _ in outcomes[4]] == [LEDGER_TRANSFERS], "the partition moves on"
    state = p.states[0]
    assert isinstance(state, LedgerPartition)
    assert state.balances()["alice"] == 4_000, "the buggy deposit's 50,000 were rolled back"
    assert state.balances()["bob"] == 2_000
    assert sum(state.balances().values()) == 0, "the ledger still balances (mint account included)"
    assert state.next_offset == len(log)


def test_a_restart_replays_to_the_same_state_without_the_record(log: list[Any]) -> None:
    first = processor()
    for offset, (key, value) in enumerate(log):
        first.process(0, offset, key, value, None)
    restarted = processor()  # knows nothing of the failure: the replay meets it again
    assert restarted.process(0, len(log) - 1, *log[-1], None) != []
    before, after = first.states[0], restarted.states[0]
    assert isinstance(before, LedgerPartition) and isinstance(after, LedgerPartition)
    assert after.balances() == before.balances()
    assert restarted.failed_offsets[0] == {1}


def test_records_offered_again_are_skipped_not_failed_twice(log: list[Any]) -> None:
    p = processor()
    for offset, (key, value) in enumerate(log[:3]):
        p.process(0, offset, key, value, None)
    assert p.process(0, 1, *log[1], None) == [], "already handled: no second dead letter"


def test_a_record_the_validator_raises_on_is_skipped_live_and_in_a_replay(
    log: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validator itself raising (an input nobody foresaw) is dead-lettered live; a replay after a restart meets
    the same record, raises the same way, and must skip it too instead of failing the whole rebuild."""
    from streams.kafka import ingress

    real_validate = ingress.validate

    def validate(topic: Any, key: bytes | None, value: bytes | None, max_bytes: int) -> Any:
        if value == log[2][1]:
            raise RecursionError("deeply nested")
        return real_validate(topic, key, value, max_bytes)

    monkeypatch.setattr(ingress, "validate", validate)
    first = processor()
    outcomes = [first.process(0, offset, key, value, None) for offset, (key, value) in enumerate(log)]
    assert outcomes[2][-1][1].reason_code == "PROCESSING_ERROR"
    assert 2 in first.failed_offsets[0]
    restarted = processor()
    assert restarted.process(0, len(log) - 1, *log[-1], None) != []
    before, after = first.states[0], restarted.states[0]
    assert isinstance(before, LedgerPartition) and isinstance(after, LedgerPartition)
    assert after.balances() == before.balances() and "bob" not in after.balances()
    assert restarted.failed_offsets[0] == {1, 2}
