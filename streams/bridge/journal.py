"""Intent before payout, on the compacted ``bridge.payouts.journal``.

Each entry is written to the partition number of its request's ``bridge.requests`` record. Whoever owns that
request partition reads the journal partition first: open intents are resolved with the provider under the same
idempotency key (never paid twice), and results answer duplicates. The entries' JSON comes from
``contracts.bridge_codec``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer

from contracts.bridge_codec import (
    intent_of_journal,
    journal_of_intent,
    journal_of_result,
    result_of_journal,
)
from contracts.construct import dump_json
from contracts.topics import BRIDGE_PAYOUTS_JOURNAL
from domain.bridge import PayoutIntent, Result, bridge_tx_id_for
from streams.bridge.result_index import JournalProgress, ResultIndex
from streams.kafka.clients import AsyncProducer, consumer_config, watermarks
from streams.kafka.partition_log import read_partition

log = logging.getLogger("nexus.bridge")

REPLAY_COMMIT_EVERY = 10_000  # entries per transaction while a partition is read into the index


@dataclass
class JournalPartition:
    """What one journal partition says: intents still open, where its checkpoint may go, and (without a
    result index only) every result, to answer duplicates with."""

    results: dict[str, Result] = field(default_factory=dict)
    open_intents: dict[str, PayoutIntent] = field(default_factory=dict)
    progress: JournalProgress = field(default_factory=lambda: JournalProgress(0))
    read_from: int = 0
    entries_read: int = 0


class KafkaJournal:
    """:class:`streams.bridge.runner.IntentStore` on ``bridge.payouts.journal`` (see the module doc).

    With a :class:`ResultIndex`, results live in its file and a partition's load reads the journal only
    from the index's checkpoint; ``progress`` tracks, per loaded partition, where the next checkpoint may be.
    """

    def __init__(self, bootstrap: str, producer: AsyncProducer, index: ResultIndex | None = None) -> None:
        self.bootstrap = bootstrap
        self.producer = producer
        self.index = index
        self.progress: dict[int, JournalProgress] = {}  # loaded journal partitions
        self.partition_of: dict[str, int] = {}  # request id -> its bridge.requests partition, while unfinished
        self._result_acks: dict[str, asyncio.Future[int]] = {}

    def _write(self, entry: dict[str, Any], partition: int | None = None) -> tuple[asyncio.Future[int], bytes]:
        """Send an entry now to its request's partition; await the future to wait for Kafka's ack."""
        request_id = entry["request_id"]
        if partition is None:
            partition = self.partition_of.get(request_id)
        assert partition is not None, f"{request_id}: journal partition unknown (request not admitted here)"
        value = dump_json(entry)
        name = BRIDGE_PAYOUTS_JOURNAL.name
        return self.producer.send(name, entry["bridge_tx_id"].encode(), value, partition=partition), value

    async def persist_intent(self, intent: PayoutIntent) -> None:
        partition = self.partition_of.get(intent.payment.request_id)
        progress = self.progress.get(partition) if partition is not None else None
        if progress is not None:
            progress.intent_open(intent.bridge_tx_id)  # before it is sent: no checkpoint may pass it
        ack, _value = self._write(journal_of_intent(intent), partition)
        offset = await ack  # acked (acks=all) before the provider hears of it
        if progress is not None:
            progress.acked(offset)

    async def persist_result(self, result: Result) -> None:
        """Journal the result without waiting here: the result is published meanwhile, and
        :meth:`result_acked` (awaited before the request is acked) waits for the entry's ack.

        Nothing else is awaited: a result is reached only after the capture's APPLIED outcome, and the
        rewards it reports ride on that capture, so the ledger has applied them already. A crash before the
        entry is durable leaves the intent open; recovery resolves it and re-sends the capture with the
        same rewards, which the ledger applies none twice (each by its own id)."""
        bridge_tx_id = result.bridge_tx_id or bridge_tx_id_for(result.request_id)
        entry = journal_of_result(result, bridge_tx_id)
        partition = self.partition_of.pop(result.request_id, None)
        assert partition is not None, f"{result.request_id}: journal partition unknown (request not admitted here)"
        ack, value = self._write(entry, partition)
        self._result_acks[result.request_id] = ack

        def durable(sent: asyncio.Future[int], request_id: str = result.request_id) -> None:
            if sent.cancelled() or sent.exception() is not None:
                return  # the intent stays open in the progress: the next load resolves it
            offset = sent.result()
            progress = self.progress.get(partition)
            if progress is not None:  # not revoked meanwhile
                progress.closed(bridge_tx_id, offset)
            if self.index is not None:  # in the same callback: a commit sees both or neither
                self.index.acked(request_id, partition, value)

        ack.add_done_callback(durable)

    async def result_acked(self, request_id: str) -> None:
        ack = self._result_acks.pop(request_id, None)
        if ack is not None:
            await ack

    def open_intents(self) -> list[PayoutIntent]:
        return []  # recovery is per partition: see load()

    def results(self) -> MutableMapping[str, Result]:
        """What the runner checks every request against: the index, or (without one) a plain dict."""
        return self.index if self.index is not None else {}

    async def aclose(self) -> None:
        return None

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.progress.pop(p, None)  # its last committed checkpoint stays: a later load resumes there

    def checkpoints(self) -> dict[int, int]:
        return {p: progress.checkpoint() for p, progress in self.progress.items()}

    def load(self, partition: int) -> JournalPartition:
        """Read one journal partition from the index's checkpoint (or the beginning) to its end; write its
        results into the index as they come (blocking: call it in a thread)."""
        consumer = Consumer(consumer_config(self.bootstrap, f"nexus-journal-{uuid.uuid4().hex}"))
        try:
            low, high = watermarks(consumer, BRIDGE_PAYOUTS_JOURNAL.name, partition, 30)
        finally:
            consumer.close()
        start = low
        if self.index is not None:
            checkpoint = self.index.checkpoint(partition)
            if checkpoint is not None and checkpoint > high:
                log.warning(
                    "journal partition %d ends at %d, before the index's checkpoint %d: reading it all again",
                    partition, high, checkpoint,
                )  # fmt: skip
                self.index.reset(partition)
            elif checkpoint is not None:
                start = max(low, checkpoint)
        state = JournalPartition(progress=JournalProgress(start), read_from=start)
        rows: list[tuple[str, int, bytes]] = []
        intents: dict[str, PayoutIntent] = state.open_intents
        entries = read_partition(self.bootstrap, BRIDGE_PAYOUTS_JOURNAL.name, partition, high, start)
        for offset, _key, value, _ms in entries if high > start else ():
            state.entries_read += 1
            if value is None:
                state.progress.acked(offset)
                continue
            entry = BRIDGE_PAYOUTS_JOURNAL.decode(value)
            if entry.intent is not None:
                intents[entry.bridge_tx_id] = intent_of_journal(entry)
                state.progress.intent_open(entry.bridge_tx_id, offset)
                state.progress.acked(offset)
                continue
            intents.pop(entry.bridge_tx_id, None)
            state.progress.closed(entry.bridge_tx_id, offset)
            if self.index is None:
                state.results[entry.request_id] = result_of_journal(entry)
                continue
            rows.append((entry.request_id, partition, value))
            if len(rows) >= REPLAY_COMMIT_EVERY:
                self.index.commit(rows, {partition: state.progress.checkpoint()})
                rows = []
        if high > start:
            state.progress.acked(high - 1)  # every entry below the end is reflected now, open intents aside
        if self.index is not None:
            self.index.commit(rows, {partition: state.progress.checkpoint()})
        for intent in intents.values():
            self.partition_of[intent.payment.request_id] = partition
        return state
