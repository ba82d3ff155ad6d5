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

from contracts.topics import Topic
from streams import ingress
from streams.app import Outbox, app, dead_letter_nowait, decode, faust_topic, settings
from streams.partition_log import rebuild_state

log = logging.getLogger("nexus.replay")


class PartitionState(Protocol):
    next_offset: int

    def apply(self, offset: int, message: Any | None) -> list[tuple[Topic, Any]]: ...


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

    def forget(self, revoked: set[Any]) -> None:
        # Another worker may own these partitions now: our copy would go stale.
        for tp in revoked:
            if tp.topic == self.topic.name:
                self.states.pop(tp.partition, None)

    async def process(self, events: list[faust.EventT]) -> None:
        emitted = 0
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
                dead_letter_nowait(event, decoded, self.outbox)
                emitted += 1
                continue
            outputs = state.apply(message.offset, decoded)
            for topic, output in outputs:
                self.outbox.emit_nowait(topic, output)
            emitted += len(outputs)
        if emitted:
            # Outputs acknowledged before this batch's offsets may be committed (acked on return).
            await self.outbox.flush()


def replaying_agent(
    topic: Topic, factory: Callable[[int], PartitionState], *, batch_max: int = 1000, within_s: float = 0.005
) -> ReplayingProcessor:
    processor = ReplayingProcessor(topic, factory)
    channel = faust_topic(topic)

    async def consume(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(batch_max, within=within_s):  # type: ignore[attr-defined]
            await processor.process(list(events))

    consume.__name__ = f"process_{topic.name.replace('.', '_')}"
    consume.__qualname__ = consume.__name__
    app.agent(channel, name=f"nexus.{topic.name}")(consume)

    async def forget_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        processor.forget(revoked)

    app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]
    return processor
