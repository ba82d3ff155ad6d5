"""Test-side readers that watch topics as they grow (KafkaIO.read_all re-reads a topic from its beginning)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, TopicPartition

from contracts.topics import Topic
from streams.kafka.clients import watermarks
from tests.support.kafka_io import Record


class TopicTail:
    """Every record appended to ``topics`` after :meth:`start` (all partitions, no consumer group, nothing
    committed): what a test saw happen while it did something, without re-reading the topics' history."""

    def __init__(self, bootstrap: str, topics: Iterable[Topic]) -> None:
        self.names = [t.name for t in topics]
        self.records: list[Record] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )

    def start(self, timeout_s: float = 30.0) -> TopicTail:
        deadline = time.monotonic() + timeout_s
        assignment = []
        for name in self.names:
            for p in sorted(self._consumer.list_topics(name, timeout=timeout_s).topics[name].partitions):
                high = watermarks(self._consumer, name, p, max(0.1, deadline - time.monotonic()))[1]
                assignment.append(TopicPartition(name, p, high))
        self._consumer.assign(assignment)
        return self

    def poll(self, timeout_s: float = 0.2) -> list[Record]:
        """Read what arrived (waiting up to ``timeout_s`` for the first record); returns the new records."""
        new = []
        for msg in self._consumer.consume(1000, timeout=timeout_s):
            if msg.error():
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            new.append(Record(topic, partition, offset, msg.key(), msg.value()))
        self.records.extend(new)
        return new

    def of(self, topic: Topic, key: bytes | None = None) -> list[Record]:
        """The records seen so far on ``topic`` (with this key, if given)."""
        return [r for r in self.records if r.topic == topic.name and (key is None or r.key == key)]

    def wait_until(
        self, condition: Callable[[], bool], timeout_s: float, what: str, during: Callable[[], None] | None = None
    ) -> None:
        """Poll until ``condition()`` holds; ``during()`` runs after each poll (e.g. an assertion that must hold
        all along). Fails with ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            if during is not None:
                during()
            if condition():
                return
            assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"

    def close(self) -> None:
        self._consumer.close()


def committed_offset(bootstrap: str, group: str, topic: Topic, partition: int) -> int:
    """The group's committed offset on one partition (negative: none), read without joining the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [tp] = consumer.committed([TopicPartition(topic.name, partition)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()
