"""Read one partition's records [start, end) straight from Kafka — used to rebuild state by replay."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from contracts.topics import Topic
from streams.kafka import ingress
from streams.kafka.clients import consume_now
from streams.kafka.gc_policy import collection_paused

POLL_TIMEOUT_S = 1.0
MAX_IDLE_POLLS = 30  # bounded: a partition that stops answering fails the rebuild, loudly


class ReplayFailed(Exception):
    """Applying the record at `offset` raised during a replay (the state is half-applied: replay again)."""

    def __init__(self, offset: int, error: Exception) -> None:
        super().__init__(f"the record at offset {offset} raised {type(error).__name__}: {error}")
        self.offset = offset


def rebuild_state(
    bootstrap: str,
    topic: Topic,
    partition: int,
    until_offset: int,
    factory: Callable[[int], Any],
    max_bytes: int,
    snapshot: Callable[[int, int], Any | None] | None = None,
    failed: frozenset[int] = frozenset(),
) -> Any:
    """A state for `partition` with every record before `until_offset` applied silently (no outputs).

    ``snapshot(partition, until_offset)``, if given, may return a state restored at some ``next_offset`` at or
    below ``until_offset``: only the records from there on are replayed. Records at the offsets in ``failed`` made
    ``apply`` raise when they were processed: they are replayed as dead letters were (``apply(offset, None)``). A
    record that raises during the replay raises `ReplayFailed`: the caller adds it to ``failed`` and replays again,
    so no state ever keeps half of a record."""
    with collection_paused():
        state = snapshot(partition, until_offset) if snapshot is not None and until_offset > 0 else None
        if state is None:
            state = factory(partition)
        assert state.next_offset <= until_offset, f"{topic.name}[{partition}]: state ahead of {until_offset}"
        if until_offset > state.next_offset:  # an empty rest needs no consumer: the common case at first start
            entries = read_partition(bootstrap, topic.name, partition, until_offset, state.next_offset or None)
            for offset, key, value, record_ms in entries:
                try:
                    decoded = None if offset in failed else ingress.validate(topic, key, value, max_bytes)
                    state.apply(offset, None if isinstance(decoded, ingress.Rejected) else decoded, record_ms)
                except Exception as exc:
                    raise ReplayFailed(offset, exc) from exc
    state.next_offset = until_offset
    return state


def read_partition(
    bootstrap: str, topic: str, partition: int, end_offset: int, start_offset: int | None = None
) -> Iterator[tuple[int, bytes | None, bytes | None, int | None]]:
    """Yield (offset, key, value, timestamp in ms or None) for offsets in [start, end_offset) of one partition."""
    if end_offset <= 0:
        return
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"nexus-replay-{uuid.uuid4().hex}",  # never commits: assign(), not subscribe()
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 32 * 1024 * 1024,
        }
    )
    try:
        start = OFFSET_BEGINNING if start_offset is None else start_offset
        consumer.assign([TopicPartition(topic, partition, start)])
        idle = 0
        while True:
            # Records as soon as there are some: consume(n, timeout) waits out the whole timeout for fewer than n.
            batch = consume_now(consumer, POLL_TIMEOUT_S, 5000)
            if not batch:
                idle += 1
                if idle > MAX_IDLE_POLLS:
                    raise TimeoutError(f"replay of {topic}[{partition}] stalled before offset {end_offset}")
                continue
            idle = 0
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if error.code() == -191:  # _PARTITION_EOF
                        raise RuntimeError(f"replay of {topic}[{partition}] reached the end before offset {end_offset}")
                    raise RuntimeError(f"replay of {topic}[{partition}] failed: {error}")
                offset = msg.offset()
                assert offset is not None
                if offset >= end_offset:
                    return
                kind, timestamp_ms = msg.timestamp()
                yield offset, msg.key(), msg.value(), None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp_ms
                if offset == end_offset - 1:
                    return
    finally:
        consumer.close()
