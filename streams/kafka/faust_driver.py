"""Replay-based recovery shared by every stateful agent (see docs/state-and-recovery.md).

A `PartitionState` is a deterministic fold: `apply(offset, message)` returns the outputs
of one input record. `ReplayingProcessor` owns one state per input partition, rebuilds
it from the log when a partition is first seen (start, crash, rebalance), dead-letters
bad records, and makes a batch's outputs durable before its offsets can be committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import faust

from contracts.topics import PLATFORM_DEADLETTERS, Topic
from streams.kafka import ingress
from streams.kafka.faust_app import Outbox, app, dead_letter_record, decode, faust_topic, settings
from streams.kafka.partition_log import rebuild_state

log = logging.getLogger("nexus.replay")


class PartitionState(Protocol):
    next_offset: int

    def apply(self, offset: int, message: Any | None, record_ms: int | None = None) -> list[tuple[Topic, Any]]: ...


class ReplayingProcessor:
    def __init__(self, topic: Topic, factory: Callable[[int], PartitionState]) -> None:
        self.topic = topic
        self.factory = factory
        self.states: dict[int, PartitionState] = {}
        # Its own producer: `flush` then waits for this agent's outputs only, not for another agent's
        # records produced meanwhile (one shared producer made the agents wait on each other's batches).
        self.outbox = Outbox(settings.bootstrap_servers)

    def rebuild(self, partition: int, until_offset: int) -> PartitionState:
        started = time.perf_counter()
        state: PartitionState = rebuild_state(
            settings.bootstrap_servers,
            self.topic,
            partition,
            until_offset,
            self.factory,
            settings.max_ingress_message_bytes,
        )
        log.info(
            "rebuilt %s[%d] up to offset %d in %.2fs",
            self.topic.name,
            partition,
            until_offset,
            time.perf_counter() - started,
        )
        return state

    async def outputs_of(self, events: list[faust.EventT]) -> list[tuple[Topic, Any]]:
        """Apply a batch to its partitions' states; return its outputs in order (nothing is sent yet)."""
        outputs: list[tuple[Topic, Any]] = []
        for event in events:
            message = event.message
            state = self.states.get(message.partition)
            if state is None or message.offset > state.next_offset:
                state = await asyncio.to_thread(self.rebuild, message.partition, message.offset)
                self.states[message.partition] = state
            if message.offset < state.next_offset:
                continue  # offered again after a rebalance: already applied and emitted
            decoded = decode(self.topic, event)
            if isinstance(decoded, ingress.Rejected):
                state.apply(message.offset, None)
                outputs.append((PLATFORM_DEADLETTERS, dead_letter_record(event, decoded)))
                continue
            stamped_s = getattr(message, "timestamp", None)  # Faust: seconds, the broker's on ledger.commands
            record_ms = int(stamped_s * 1000) if stamped_s else None
            outputs.extend(state.apply(message.offset, decoded, record_ms))
        return outputs

    async def flush_and_ack(self, stream: faust.StreamT[bytes], events: list[faust.EventT], sent: bool) -> None:
        if sent:
            await self.outbox.flush()
        for event in events:  # only now may the batch's offsets be committed
            await stream.ack(event)


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("outputs of a batch were not acknowledged: %s", task.exception())


def replaying_agent(
    topic: Topic, factory: Callable[[int], PartitionState], *, batch_max: int = 1000, within_s: float = 0.005
) -> ReplayingProcessor:
    processor = ReplayingProcessor(topic, factory)
    channel = faust_topic(topic)

    async def consume(stream: faust.StreamT[bytes]) -> None:
        # Batch N+1 is decoded, applied and encoded while batch N's outputs are being acknowledged; its
        # outputs are sent only once N's are acknowledged (and N's events acked), so what reaches Kafka, in
        # which order, is as before. Each batch's events are acked (their offsets committable) only after
        # its own outputs are acknowledged.
        pending: asyncio.Task[None] | None = None
        async for events in stream.noack_take(batch_max, within=within_s):  # type: ignore[attr-defined]
            batch: list[faust.EventT] = list(events)
            records = processor.outbox.encode_all(await processor.outputs_of(batch))
            if pending is not None:
                try:
                    await pending  # raises if the previous batch's outputs failed: nothing more is sent
                except BaseException:
                    # This batch is applied but will not be sent: no state may claim it was (a redelivery
                    # would be skipped as already emitted). States are rebuilt from the log when next needed.
                    processor.states.clear()
                    raise
            processor.outbox.send(records)
            pending = asyncio.ensure_future(processor.flush_and_ack(stream, batch, bool(records)))
            pending.add_done_callback(_report_failure)

    consume.__name__ = f"process_{topic.name.replace('.', '_')}"
    consume.__qualname__ = consume.__name__
    app.agent(channel, name=f"nexus.{topic.name}")(consume)
    # States are kept when partitions are revoked. A state is a fold over an immutable input log, so the
    # state at `next_offset` stays right whoever processes the partition meanwhile: if the partition comes
    # back, records offered again below `next_offset` are skipped, and a gap (another worker moved on) is
    # rebuilt from the log. Dropping states on revoke re-emitted every output since the last commit after
    # each rebalance, even one that handed a lone worker its own partitions back. Memory stays bounded by
    # the topic's partition count.
    return processor
