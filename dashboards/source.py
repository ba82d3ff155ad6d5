"""Follow the registry topics the dashboard needs, with a confluent-kafka consumer in a background thread.

Starts ``lookback`` before now (Kafka record timestamps, ``offsets_for_times``) so a fresh dashboard
does not replay 30 days of settlements (nor of payouts and holder notifications); ``monitoring.alerts`` is
read from its beginning (small) so alerts that have been firing for long are shown too. Nothing is
committed: the dashboard is a read-only view.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from contracts.topics import (
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    ENERGY_SETTLEMENTS,
    MONITORING_ALERTS,
    NOTIFICATIONS_DELIVERIES,
    PAYOUT_RESULTS,
    PAYOUT_WAITING,
    TOPICS,
)
from dashboards.figures import Figures
from streams.kafka import ingress

log = logging.getLogger("nexus.dashboard")
# Exactly the topics contracts.topics declares Component.DASHBOARD a consumer of (tests/unit/test_contract_registry.py).
FOLLOWED = (
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    ENERGY_SETTLEMENTS,
    MONITORING_ALERTS,
    PAYOUT_RESULTS,
    PAYOUT_WAITING,
    NOTIFICATIONS_DELIVERIES,
)


class MissingTopic(RuntimeError):
    pass


class TopicTail:
    def __init__(
        self, bootstrap: str, figures: Figures, lock: threading.Lock, lookback: timedelta = timedelta(hours=25)
    ) -> None:
        self.bootstrap = bootstrap
        self.figures = figures
        self.lock = lock
        self.lookback = lookback
        self.loaded = threading.Event()  # set once everything present at start has been read
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rejected = 0

    def start(self) -> TopicTail:
        self._thread = threading.Thread(target=self._run, name="dashboard-tail", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _assign(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        since_ms = int((time.time() - self.lookback.total_seconds()) * 1000)
        wanted: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        for topic in FOLLOWED:
            meta = consumer.list_topics(topic.name, timeout=10).topics[topic.name]
            if meta.error is not None:
                raise MissingTopic(f"{topic.name}: {meta.error}")
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic.name, p), timeout=10)
                if topic is MONITORING_ALERTS:
                    first = low
                else:
                    found = consumer.offsets_for_times([TopicPartition(topic.name, p, since_ms)], timeout=10)[0]
                    first = found.offset if found.offset >= 0 else high
                wanted.append(TopicPartition(topic.name, p, first))
                if first < high:
                    ends[(topic.name, p)] = high
        consumer.assign(wanted)
        return ends

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"nexus-dashboard-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        try:
            while True:  # topics may not exist yet (a fresh cluster): wait for them, do not give up
                try:
                    pending = self._assign(consumer)
                    break
                except MissingTopic as exc:
                    if self._stop.wait(1.0):
                        return
                    log.info("waiting for topics: %s", exc)
            if not pending:
                self.loaded.set()
            while not self._stop.is_set():
                batch = consumer.consume(2000, timeout=0.5)
                decoded: list[Any] = []
                for msg in batch:
                    if msg.error():
                        continue
                    name, partition, offset = msg.topic(), msg.partition(), msg.offset()
                    if name is None or partition is None or offset is None:
                        continue
                    value = ingress.validate(TOPICS[name], msg.key(), msg.value())
                    if isinstance(value, ingress.Rejected):
                        self.rejected += 1
                    else:
                        decoded.append(value)
                    end = pending.get((name, partition))
                    if end is not None and offset >= end - 1:
                        del pending[(name, partition)]
                if decoded:
                    with self.lock:
                        for value in decoded:
                            self.figures.add(value)
                if not pending and not self.loaded.is_set():
                    self.loaded.set()
        except Exception as exc:  # shown on /api/summary; the server keeps serving what it has
            log.exception("dashboard source failed")
            self.errors.append(str(exc))
            self.loaded.set()
        finally:
            consumer.close()
