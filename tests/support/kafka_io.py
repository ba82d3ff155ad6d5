"""Test-side Kafka client: produce raw bytes, read topics back until a condition holds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from contracts.topics import Topic
from streams.kafka.clients import watermarks
from streams.kafka.topic_admin import ensure_topics
from streams.settings import Settings

# A record a test writes on purpose against its topic's contract (junk on a topic the platform writes): the
# session-end schema check (tests/support/schema_check.py) exempts exactly the records carrying this header.
BAD_INPUT_HEADER: tuple[str, str | bytes | None] = ("nexus-test-bad-input", b"1")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class KafkaIO:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, "batch.size": 512 * 1024}
        )
        self._errors: list[str] = []

    def ensure_topics(self) -> None:
        ensure_topics(Settings(kafka_bootstrap_servers=self.bootstrap))

    def produce(self, topic: Topic | str, key: bytes | None, value: bytes | None, bad_input: bool = False) -> None:
        """`bad_input`: the record breaks its topic's contract on purpose (marked with BAD_INPUT_HEADER)."""
        name = topic if isinstance(topic, str) else topic.name
        headers = [BAD_INPUT_HEADER] if bad_input else None
        self._producer.produce(name, key=key, value=value, headers=headers, on_delivery=self._delivered)
        self._producer.poll(0)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err}")

    def produce_acked(
        self, topic: Topic | str, key: bytes | None, value: bytes | None, bad_input: bool = False
    ) -> tuple[int, int]:
        """Produce one record and wait for it: returns its (partition, offset). `bad_input` as in `produce`."""
        name = topic if isinstance(topic, str) else topic.name
        result: list[tuple[int, int]] = []

        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            result.append((msg.partition(), msg.offset()))

        headers = [BAD_INPUT_HEADER] if bad_input else None
        self._producer.produce(name, key=key, value=value, headers=headers, on_delivery=delivered)
        self.flush()
        assert result, "no delivery report"
        return result[0]

    def produce_messages(self, topic: Topic, messages: Iterable[Any]) -> int:
        count = 0
        for message in messages:
            self.produce(topic, topic.key_of(message), topic.encode(message))
            count += 1
        self.flush()
        return count

    def flush(self) -> None:
        remaining = self._producer.flush(30)
        assert remaining == 0, f"{remaining} messages not delivered"
        errors, self._errors = self._errors, []
        assert not errors, f"deliveries failed: {errors[:3]}"

    def values(self, topic: Topic, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The topic's valid messages as JSON objects. The session broker is shared: other tests put deliberately
        bad records on the same topics (dead-letter tests), which are not any reader's business, so a record its
        contract refuses is skipped."""
        out: list[dict[str, Any]] = []
        for record in self.read_all(topic, timeout_s):
            if not record.value:
                continue
            try:
                topic.decode(record.value)
            except ValueError:
                continue
            out.append(orjson.loads(record.value))
        return out

    def read_all(self, topic: Topic | str, timeout_s: float = 10.0) -> list[Record]:
        """Every record currently in the topic (from offset 0 to the high watermark)."""
        name = topic if isinstance(topic, str) else topic.name
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"test-read-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            meta = consumer.list_topics(name, timeout=timeout_s)
            partitions = list(meta.topics[name].partitions)
            ends = {}
            for p in partitions:
                ends[p] = watermarks(consumer, name, p, timeout_s)[1]
            wanted = {p: end for p, end in ends.items() if end > 0}
            consumer.assign([TopicPartition(name, p, 0) for p in wanted])
            records: list[Record] = []
            done = {p: False for p in wanted}
            deadline = time.monotonic() + timeout_s
            while wanted and not all(done.values()) and time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=0.5):
                    if msg.error():
                        continue
                    partition, offset = msg.partition(), msg.offset()
                    assert partition is not None and offset is not None  # a message, not an error event
                    records.append(Record(name, partition, offset, msg.key(), msg.value()))
                    if offset >= wanted[partition] - 1:
                        done[partition] = True
            return records
        finally:
            consumer.close()

    def wait_for(
        self,
        topic: Topic | str,
        predicate: Callable[[list[Record]], bool],
        timeout_s: float = 60.0,
        poll_s: float = 0.5,
    ) -> list[Record]:
        """Re-read the topic until `predicate(records)` holds; fail with what was seen."""
        deadline = time.monotonic() + timeout_s
        records: list[Record] = []
        while time.monotonic() < deadline:
            records = self.read_all(topic)
            if predicate(records):
                return records
            time.sleep(poll_s)
        raise AssertionError(f"timed out after {timeout_s}s waiting on {topic}; saw {len(records)} records")
