"""What the drills read and write on a cluster: whole topics with record times, acknowledged sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from confluent_kafka import KafkaException, Producer, TopicPartition

from contracts.topics import Topic
from infra.kafka.mirror import probe_consumer
from streams.kafka.clients import watermarks
from streams.kafka.topic_admin import ensure_topics
from streams.settings import Settings

READ_TIMEOUT_S = 60.0


class Record(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_s: float


def create_topics(bootstrap: str) -> None:
    ensure_topics(Settings(kafka_bootstrap_servers=bootstrap))


def read_topic(
    bootstrap: str, topic: Topic | str, since_ms: int | None = None, call_timeout_s: float = READ_TIMEOUT_S
) -> list[Record]:
    """Every record of ``topic`` (from the first at or after ``since_ms``, if given) up to its end now; each metadata
    or offsets request waits up to ``call_timeout_s``."""
    name = topic if isinstance(topic, str) else topic.name
    consumer = probe_consumer(bootstrap, "drill-read")
    try:
        partitions = list(consumer.list_topics(name, timeout=call_timeout_s).topics[name].partitions)
        ends = {p: watermarks(consumer, name, p, call_timeout_s) for p in partitions}
        starts = {p: low for p, (low, _high) in ends.items()}
        if since_ms is not None:
            asked = [TopicPartition(name, p, since_ms) for p in partitions]
            for tp in consumer.offsets_for_times(asked, timeout=call_timeout_s):
                starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition][1]
        left = {p for p in partitions if ends[p][1] > starts[p]}
        consumer.assign([TopicPartition(name, p, starts[p]) for p in left])
        found: list[Record] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                found.append(Record(partition, offset, msg.key(), msg.value(), msg.timestamp()[1] / 1000))
                if offset >= ends[partition][1] - 1:
                    left.discard(partition)
        if left:
            raise TimeoutError(f"{name} partitions {sorted(left)} not read to their end in {READ_TIMEOUT_S:.0f} s")
        return found
    finally:
        consumer.close()


def decoded(bootstrap: str, topic: Topic, keep: Callable[[Any], bool]) -> list[Any]:
    """The topic's messages ``keep`` selects (a drill's markets or accounts), decoded."""
    return [m for m in (topic.decode(r.value) for r in read_topic(bootstrap, topic) if r.value) if keep(m)]


def send_acked(bootstrap: str, topic: Topic, messages: Iterable[Any], timeout_s: float = 60.0) -> None:
    """Produce and wait until every record is acknowledged (acks=all, idempotent)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
    errors: list[str] = []
    for message in messages:
        producer.produce(
            topic.name, topic.encode(message), topic.key_of(message),
            on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
        )  # fmt: skip
    if producer.flush(timeout_s) or errors:
        raise KafkaException(f"{topic.name}: not every record acknowledged: {errors[:3]}")


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 1.0) -> float:
    """Poll ``check`` until it holds; return the seconds waited."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - t0
