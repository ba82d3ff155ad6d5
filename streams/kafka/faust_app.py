"""The Faust runtime's shared parts: the app factory, registry topics bound to an app, the outbox.

Flows register their agents with ``register(app, settings)`` (called by ``streams.worker.bootstrap``);
nothing here is built at import time. Values travel as raw bytes so that validation errors are ours to
catch (Faust's own deserialisation would crash the agent on a bad record).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from confluent_kafka import Producer

from contracts.topics import Topic
from streams.kafka import ingress
from streams.kafka.clients import AsyncProducer, produce_bounded, producer_config
from streams.settings import Settings

log = logging.getLogger("nexus.app")


def make_app(settings: Settings) -> faust.App:
    datadir = settings.data_dir / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    broker = ";".join(f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(","))
    return faust.App(
        settings.app_id,
        broker=broker,
        store="memory://",
        # Registry topics are created by streams.kafka.topic_admin; Faust still declares its own internal ones.
        topic_replication_factor=settings.topic_replication_factor or 1,  # streams.worker.main sets the cluster's
        topic_partitions=4,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=0,  # as streams.kafka.clients.producer_config: no per-hop wait
        broker_commit_interval=0.5,
        consumer_group_instance_id=settings.worker_instance_id,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=1.0,
        stream_buffer_maxsize=8192,
        web_enabled=True,
        # web_bind is the listen address; web_host only names the worker's URL (Faust binds 0.0.0.0 by default).
        web_bind=settings.worker_web_host,
        web_host="127.0.0.1" if settings.worker_web_host in ("", "0.0.0.0", "::") else settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        logging_config=None,
        datadir=str(datadir),
    )


def faust_topic(app: faust.App, topic: Topic, settings: Settings) -> faust.TopicT:
    """The Faust handle of a registry topic (raw bytes in and out), one per app and topic."""
    handles: dict[str, faust.TopicT] = app.__dict__.setdefault("_nexus_topics", {})
    handle = handles.get(topic.name)
    if handle is None:
        handle = app.topic(
            topic.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=topic.partitions_with(settings.topic_partitions_override),
            allow_empty=True,
        )
        handles[topic.name] = handle
    return handle


class Outbox:
    """Outputs go through librdkafka (confluent-kafka): Faust's per-message send path costs ~10x more.

    `emit_nowait` queues a record; `flush` waits until Kafka acknowledged everything queued (agents call it
    before their batch's offsets may be committed). `emit` also returns a future for one record's ack.

    The `emit_nowait` producer reports deliveries only on error (`delivery.report.only.error`): a success
    costs no Python callback, and no poller thread competes with `flush` for the reports (librdkafka's flush
    otherwise sleeps in 10 ms steps when another thread took the report that would have woken it). A failure
    is still recorded, by `flush`, and raised. `emit` needs a report per record, so it goes through a
    `streams.kafka.clients.AsyncProducer` (created on first use; the alerting agent and dead letters use it).
    """

    MAX_QUEUED = 500_000

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._producer: Producer | None = None
        self._acked: AsyncProducer | None = None
        self._failures: list[str] = []

    def _new_producer(self, **overrides: Any) -> Producer:
        return Producer(producer_config(self._bootstrap, queue_buffering_max_messages=self.MAX_QUEUED, **overrides))

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = self._new_producer(delivery_report_only_error=True)
        return self._producer

    @property
    def acked_producer(self) -> AsyncProducer:
        if self._acked is None:
            self._acked = AsyncProducer(self._bootstrap, max_queued=self.MAX_QUEUED)
        return self._acked

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err}")

    @staticmethod
    def encode_all(outputs: list[tuple[Topic, Any]]) -> list[tuple[str, bytes, bytes]]:
        """(topic, message) -> (topic name, key, value), ready for `send` (an `Encoded` record is its bytes)."""
        return [(topic.name, topic.key_of(message), topic.encode(message)) for topic, message in outputs]

    def send(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Queue encoded records, in order (what `emit_nowait` does for one message)."""
        producer = self.producer
        on_delivery = self._on_delivery
        for name, key, value in records:
            produce_bounded(producer, name, value, key, on_delivery=on_delivery)

    def emit_nowait(self, topic: Topic, message: Any) -> None:
        key, value = topic.key_of(message), topic.encode(message)
        produce_bounded(self.producer, topic.name, value, key, on_delivery=self._on_delivery)

    async def emit(self, topic: Topic, message: Any) -> asyncio.Future[int]:
        return self.acked_producer.send(topic.name, topic.key_of(message), topic.encode(message))

    def _flush(self, timeout_s: float) -> int:
        remaining = self.producer.flush(timeout_s)  # serves the (error) delivery reports too
        if self._acked is not None:
            remaining += self._acked.flush(timeout_s)
        return remaining

    async def flush(self, timeout_s: float = 60.0) -> None:
        remaining = await asyncio.to_thread(self._flush, timeout_s)
        if remaining or self._failures:
            failures, self._failures = self._failures[:5], []
            raise RuntimeError(f"{remaining} outputs unacknowledged after {timeout_s}s; failures: {failures}")


def decode(topic: Topic, event: faust.EventT, max_bytes: int) -> Any | ingress.Rejected:
    message = event.message
    return ingress.validate(topic, message.key, message.value, max_bytes)


__all__ = ["Outbox", "decode", "faust_topic", "make_app"]
