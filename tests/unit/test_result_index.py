"""The bridge's result index: where a journal partition's checkpoint may be, and the SQLite file behind it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts.bridge_codec import journal_of_result, result_of_entry
from domain.bridge import PayoutIntent, Result, Settled
from infra.sql_state import load_statements
from streams.bridge.journal import KafkaJournal
from streams.bridge.result_index import SQL, JournalProgress, ResultIndex
from tests.unit.test_bridge_core import harness, payment, result_of

# ------------------------------------------------------------------ JournalProgress (pure)


def test_an_intent_registered_before_it_is_sent_holds_the_checkpoint_against_later_acks() -> None:
    progress = JournalProgress(10)
    progress.intent_open("tx-a")  # about to be sent: its offset will be 10 or more
    progress.closed("tx-b", 11)  # another transaction's result, acknowledged after it
    assert progress.checkpoint() == 10  # a load from here finds tx-a's intent again
    progress.acked(10)  # tx-a's intent acknowledged: still open until its result is
    assert progress.checkpoint() == 10
    progress.closed("tx-a", 12)
    assert progress.checkpoint() == 13 and progress.open_count == 0


def test_a_replayed_intent_holds_the_checkpoint_at_its_own_offset() -> None:
    progress = JournalProgress(0)
    progress.intent_open("tx-a", 3)
    progress.acked(3)
    progress.closed("tx-b", 4)
    assert progress.checkpoint() == 3
    progress.closed("tx-a", 9)
    assert progress.checkpoint() == 10


def test_acknowledgements_in_any_order_only_move_the_checkpoint_forward() -> None:
    progress = JournalProgress(5)
    progress.acked(8)
    progress.acked(6)
    assert progress.checkpoint() == 9
    progress.intent_open("tx-a", 7)  # read back at a lower offset than acknowledged: it wins
    assert progress.checkpoint() == 7


# ------------------------------------------------------------------ ResultIndex (SQLite)


def settled_results(n: int) -> list[Settled]:
    results = []
    for i in range(n):
        result = result_of(harness().run(payment(f"card-{i}")))
        assert isinstance(result, Settled)
        results.append(result)
    return results


def entry_bytes(result: Result) -> bytes:
    return orjson.dumps(journal_of_result(result, f"BRIDGE-{result.request_id}"))


def test_results_move_from_memory_to_the_file_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    index = ResultIndex(path, "journal-1", result_of_entry)
    first, second = settled_results(2)
    index[first.request_id] = first
    assert index.get(first.request_id) == first and index.in_memory == 1
    assert index.get(second.request_id) is None and second.request_id not in index

    index.acked(first.request_id, 2, entry_bytes(first))
    rows = index.take_acked()
    index.commit(rows, {2: 41})
    index.written(rows)
    assert index.in_memory == 0  # memory holds only what is not yet in the file
    assert index[first.request_id] == first and first.request_id in index
    index.close()

    reopened = ResultIndex(path, "journal-1", result_of_entry)
    assert reopened[first.request_id] == first
    assert reopened.checkpoint(2) == 41 and reopened.checkpoint(0) is None
    with pytest.raises(KeyError):
        reopened[second.request_id]
    reopened.close()


def test_a_file_built_from_another_journal_is_wiped(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    [result] = settled_results(1)
    index = ResultIndex(path, "journal-1", result_of_entry)
    index.commit([(result.request_id, 0, entry_bytes(result))], {0: 7})
    index.close()
    other = ResultIndex(path, "journal-2", result_of_entry)  # the topic was recreated, or another cluster
    assert other.get(result.request_id) is None and other.checkpoint(0) is None
    other.close()


def test_rows_and_checkpoints_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    good, bad = settled_results(2)
    index = ResultIndex(path, "journal-1", result_of_entry)
    rows: list[tuple[str, int, Any]] = [(good.request_id, 1, entry_bytes(good)), (bad.request_id, 1, None)]
    with pytest.raises(sqlite3.IntegrityError):  # the second row breaks NOT NULL
        index.commit(rows, {1: 99})
    assert index.get(good.request_id) is None and index.checkpoint(1) is None
    index.close()


def test_reset_forgets_one_partition_only(tmp_path: Path) -> None:
    a, b = settled_results(2)
    index = ResultIndex(tmp_path / "results.sqlite3", "journal-1", result_of_entry)
    index.commit([(a.request_id, 0, entry_bytes(a)), (b.request_id, 1, entry_bytes(b))], {0: 5, 1: 6})
    index.reset(0)
    assert index.get(a.request_id) is None and index.checkpoint(0) is None
    assert index[b.request_id] == b and index.checkpoint(1) == 6
    index.close()


def test_every_statement_the_index_runs_is_in_the_sql_file() -> None:
    assert load_statements("bridge_result_index.sql") == SQL
    assert {"result", "put_result", "checkpoint", "set_checkpoint", "journal_id"} <= set(SQL)
    assert all(statement.rstrip().endswith(";") for statement in SQL.values())


# ------------------------------------------------------------------ the journal keeps the index and checkpoints


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, asyncio.Future[int]]] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> asyncio.Future[int]:
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value, ack))
        return ack


def settled_with_intent(request_id: str) -> tuple[Settled, PayoutIntent]:
    h = harness()
    settled = result_of(h.run(payment(request_id)))
    assert isinstance(settled, Settled)
    [intent] = [e for e in h.effects if isinstance(e, PayoutIntent)]
    return settled, intent


def journal_on(
    tmp_path: Path, request_id: str, partition: int, next_offset: int
) -> tuple[_Producer, ResultIndex, KafkaJournal]:
    """A journal over a recording producer and a fresh index, with ``request_id`` admitted on ``partition``."""
    producer = _Producer()
    index = ResultIndex(tmp_path / "results.sqlite3", "journal-1", result_of_entry)
    journal = KafkaJournal("unused:9092", producer, index)  # type: ignore[arg-type]
    journal.progress[partition] = JournalProgress(next_offset)
    journal.partition_of[request_id] = partition
    return producer, index, journal


async def intent_sent(journal: KafkaJournal, intent: PayoutIntent) -> asyncio.Future[None]:
    """Start persisting ``intent`` and let it reach the producer; its ack is the test's to give."""
    sending = asyncio.ensure_future(journal.persist_intent(intent))
    await asyncio.sleep(0)
    return sending


def test_the_journal_checkpoints_past_a_transaction_only_once_its_result_is_durable(tmp_path: Path) -> None:
    settled, intent = settled_with_intent("card-9")

    async def scenario() -> None:
        producer, index, journal = journal_on(tmp_path, settled.request_id, partition=3, next_offset=20)
        sending = await intent_sent(journal, intent)
        assert journal.checkpoints() == {3: 20}  # registered before its ack
        producer.sent[0][3].set_result(20)
        await sending
        assert journal.checkpoints() == {3: 20}  # acknowledged, but the payout's result is not durable yet

        await journal.persist_result(settled)
        assert index.take_acked() == [] and journal.checkpoints() == {3: 20}
        producer.sent[1][3].set_result(21)
        await journal.result_acked(settled.request_id)
        await asyncio.sleep(0)
        assert journal.checkpoints() == {3: 22}
        rows = index.take_acked()
        assert [(r, p) for r, p, _ in rows] == [(settled.request_id, 3)]
        assert result_of_entry(rows[0][2]) == settled  # the file stores the journal entry itself
        index.close()

    asyncio.run(scenario())


def test_a_result_entry_that_fails_leaves_its_intent_open(tmp_path: Path) -> None:
    settled, intent = settled_with_intent("card-8")

    async def scenario() -> None:
        producer, index, journal = journal_on(tmp_path, settled.request_id, partition=0, next_offset=0)
        sending = await intent_sent(journal, intent)
        producer.sent[0][3].set_result(0)
        await sending
        await journal.persist_result(settled)
        producer.sent[1][3].set_exception(RuntimeError("Kafka delivery failed"))
        with pytest.raises(RuntimeError):
            await journal.result_acked(settled.request_id)
        await asyncio.sleep(0)
        assert journal.checkpoints() == {0: 0} and index.take_acked() == []  # the next load resolves it
        index.close()

    asyncio.run(scenario())
