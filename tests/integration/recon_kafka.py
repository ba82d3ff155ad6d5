"""A Kafka broker of the reconciliation tests' own, and seeded days produced into it as the services would.

Each record carries its event's business time as its record timestamp (CreateTime, as a service's producer
stamps it), and the seeded days are weeks old. The session broker cannot hold such records: Kafka finds offsets
by time assuming a partition's timestamps do not go back (records older than the ones before them would hide
other tests' windows), and its retention would delete them. This broker keeps everything (retention off).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from contracts import topics as t
from domain.timeconv import to_ms
from infra.kafka.broker import LocalKafka, find_free_ports
from streams.kafka.topic_admin import ensure_topics
from streams.settings import Settings
from warehouse.snapshot_loader import SNAPSHOT_TOPICS, event_time

# (topic, key, value, record timestamp in ms)
Row = tuple[t.Topic, bytes, bytes, int]


@contextmanager
def backdated_broker(data_dir: Path) -> Iterator[str]:
    """A fresh single-node broker with the registry's topics, keeping every record whatever its timestamp."""
    port, controller = find_free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller, data_dir=data_dir)
    broker.start(timeout_s=90)
    try:
        ensure_topics(Settings(kafka_bootstrap_servers=broker.bootstrap))
        _keep_forever(broker.bootstrap)
        yield broker.bootstrap
    finally:
        broker.stop()


def _keep_forever(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            topic.name,
            incremental_configs=[ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)],
        )
        for topic in SNAPSHOT_TOPICS
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


def produce(bootstrap: str, rows: Iterable[Row]) -> int:
    """Produce ``rows`` in their order (give them in timestamp order) and wait for every acknowledgement."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    count = 0
    for topic, key, value, ts_ms in rows:
        while True:
            try:
                producer.produce(topic.name, value=value, key=key, timestamp=ts_ms, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        count += 1
    assert producer.flush(60) == 0 and not errors, errors[:5]
    return count


def event_rows(events: dict[Any, dict[str, list[Any]]]) -> list[Row]:
    """A seeded period's events (``SeededPeriod.events``) as records stamped with their business time, in order."""
    rows = [
        (topic, topic.key_of(value), topic.encode(value), to_ms(event_time(value)))
        for by_topic in events.values()
        for name, values in by_topic.items()
        for topic in (t.topic(name),)
        for value in values
    ]
    return sorted(rows, key=lambda row: row[3])
