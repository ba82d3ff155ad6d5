"""The metrics every worker exposes, whatever its runtime: one registry, the common series, small helpers.

``streams.ops.health.start`` serves them on ``/metrics`` (with ``/healthz``); the alerting agent's business series
(``streams/alerting/metrics.py``) live in the same registry. Names follow Prometheus conventions (base unit last,
``_total`` appended to counters by prometheus-client):

=====================================================  ==================================================
``nexus_records_processed_total{topic,outcome}``       records a worker handled (outcome ``ok`` / ``dead_letter``)
``nexus_record_processing_seconds{topic}``             one record's processing time in the worker
``nexus_consumer_lag_messages{topic,partition}``       high watermark - committed offset of the worker's group
``nexus_deadletters_written_total{source_topic,reason_code}``  dead letters this worker wrote (``ingress``)
``nexus_rail_breaker_state{rail}``                     0 closed, 1 half-open, 2 open (the bridge's breakers)
``nexus_bridge_settlements_in_flight``                 card payments/payouts between admission and result
``nexus_ledger_snapshot_age_seconds{topic,partition}`` age of the newest ledger snapshot of an owned partition
``nexus_ledger_holds_open{topic,partition}``           K-AUS holds placed, not yet captured, voided or expired
``nexus_worker_heartbeat_age_seconds{component}``      since the worker's loop last went round
=====================================================  ==================================================

``nexus_deadletters_total`` (the alerting agent's, read back from ``platform.deadletters``) counts each letter once
platform-wide; ``nexus_deadletters_written_total`` says which worker wrote it, and is what the platform alerts use.
Values that live in a worker's state (breakers, snapshots) are read when scraped, by refreshers
(:func:`add_refresher`), not pushed on every change.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger("nexus.ops.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# A P2P record takes tens of microseconds, a card payment hundreds of milliseconds (spec §2.2: 650 ms target).
RECORD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

RECORDS_PROCESSED = Counter(
    "nexus_records_processed",
    "Records a worker handled, by input topic and outcome (ok, dead_letter)",
    ["topic", "outcome"],
    registry=REGISTRY,
)
RECORD_SECONDS = Histogram(
    "nexus_record_processing_seconds",
    "One record's processing time in the worker (decode, apply, outputs queued)",
    ["topic"],
    buckets=RECORD_BUCKETS,
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "nexus_consumer_lag_messages",
    "Messages not yet consumed by this worker's consumer group",
    ["topic", "partition"],
    registry=REGISTRY,
)
DEADLETTERS_WRITTEN = Counter(
    "nexus_deadletters_written",
    "Dead letters this worker wrote to platform.deadletters, by source topic and reason",
    ["source_topic", "reason_code"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "nexus_rail_breaker_state",
    "Circuit breaker per settlement rail: 0 closed, 1 half-open, 2 open",
    ["rail"],
    registry=REGISTRY,
)
BRIDGE_IN_FLIGHT = Gauge(
    "nexus_bridge_settlements_in_flight",
    "Bridge settlements admitted and not yet finished (each holds at most one K-AUS hold)",
    registry=REGISTRY,
)
SNAPSHOT_AGE = Gauge(
    "nexus_ledger_snapshot_age_seconds",
    "Age of the newest ledger snapshot of a partition this worker owns (since start when it has none)",
    ["topic", "partition"],
    registry=REGISTRY,
)
HOLDS_OPEN = Gauge(
    "nexus_ledger_holds_open",
    "Holds the ledger of an owned partition has placed and not yet captured, voided or expired",
    ["topic", "partition"],
    registry=REGISTRY,
)
STANDBY_DELAY = Gauge(
    "nexus_standby_replication_delay_seconds",
    "Age of the oldest record of the partition the standby region does not have yet (the RPO were the primary lost "
    "now); infra.kafka.replication_monitor",
    ["topic", "partition"],
    registry=REGISTRY,
)
HEARTBEAT_AGE = Gauge(
    "nexus_worker_heartbeat_age_seconds",
    "Seconds since the worker's loop last went round (what /healthz judges)",
    ["component"],
    registry=REGISTRY,
)

BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}


def _label(value: object) -> str:
    if value is None:
        return "none"
    return str(getattr(value, "value", value))


# ----------------------------------------------------------------------------- helpers


class RecordMeter:
    """Counts and times records per topic; label children cached, so a record costs a dict lookup and two adds."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], Any] = {}
        self._times: dict[str, Any] = {}

    def observe(self, topic: str, outcome: str, seconds: float) -> None:
        counter = self._counts.get((topic, outcome))
        if counter is None:
            counter = self._counts[(topic, outcome)] = RECORDS_PROCESSED.labels(topic, outcome)
        counter.inc()
        timer = self._times.get(topic)
        if timer is None:
            timer = self._times[topic] = RECORD_SECONDS.labels(topic)
        timer.observe(seconds)


def count_dead_letter_written(source_topic: str, reason_code: str) -> None:
    DEADLETTERS_WRITTEN.labels(source_topic, reason_code).inc()


def set_breaker_state(rail: object, state: str | int) -> None:
    """``state``: ``closed`` / ``half_open`` / ``open`` (or 0 / 1 / 2)."""
    value = state if isinstance(state, int) else BREAKER_STATES[state.lower()]
    if value not in (0, 1, 2):
        raise ValueError(f"breaker state must be 0, 1 or 2, got {value}")
    BREAKER_STATE.labels(_label(rail)).set(value)


def set_consumer_lag(topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic, str(partition)).set(max(lag, 0))


def set_snapshot_age(topic: str, partition: int, age_s: float) -> None:
    SNAPSHOT_AGE.labels(topic, str(partition)).set(max(age_s, 0.0))


# ----------------------------------------------------------------------------- refreshed when scraped

_refreshers: list[Callable[[], None]] = []
_refreshers_lock = threading.Lock()


def add_refresher(refresh: Callable[[], None]) -> None:
    """``refresh()`` runs before each exposition (in the server's thread): it copies live state into gauges.

    It must only read: a refresher runs beside the worker's loop. One that raises is logged and skipped.
    """
    with _refreshers_lock:
        _refreshers.append(refresh)


def clear_refreshers() -> None:
    with _refreshers_lock:
        _refreshers.clear()


def render() -> bytes:
    """The exposition text, as ``/metrics`` serves it (refreshers run first)."""
    with _refreshers_lock:
        refreshers = list(_refreshers)
    for refresh in refreshers:
        try:
            refresh()
        except Exception:
            log.exception("metrics refresher %r failed; its gauges keep their last values", refresh)
    return generate_latest(REGISTRY)


def breaker_refresher(breakers: Callable[[], dict[Any, Any]]) -> Callable[[], None]:
    """Sets ``nexus_rail_breaker_state`` from live breakers (``domain.rails.CircuitBreaker`` per rail)."""

    def refresh() -> None:
        now_ms = int(time.time() * 1000)
        for rail, breaker in dict(breakers()).items():
            set_breaker_state(rail, str(breaker.state(now_ms)))

    return refresh


def snapshot_age_refresher(processors: Iterable[Any], started_at: float | None = None) -> Callable[[], None]:
    """Sets ``nexus_ledger_snapshot_age_seconds`` for each snapshotting processor's owned partitions.

    Reads only: the processor's ``states`` (partitions owned) and its snapshots' ``files(partition)`` (newest first).
    """
    started = time.time() if started_at is None else started_at
    snapshotting = [p for p in processors if getattr(p, "snapshots", None) is not None and p.snapshot_every_s > 0]

    def refresh() -> None:
        now = time.time()
        for processor in snapshotting:
            for partition in list(processor.states):
                files = processor.snapshots.files(partition)
                written = files[0].path.stat().st_mtime if files else started
                set_snapshot_age(processor.topic.name, partition, now - written)

    return refresh


def holds_open_refresher(processors: Iterable[Any]) -> Callable[[], None]:
    """Sets ``nexus_ledger_holds_open`` for each owned partition whose state is a ledger.

    Reads only: the processor's ``states`` and, of a state with a ``ledger``, its ``open_hold_count()``.
    """
    processors = list(processors)

    def refresh() -> None:
        for processor in processors:
            for partition, state in list(processor.states.items()):
                ledger = getattr(state, "ledger", None)
                if ledger is not None:
                    HOLDS_OPEN.labels(processor.topic.name, str(partition)).set(ledger.open_hold_count())

    return refresh


# ----------------------------------------------------------------------------- consumer lag


class LagMonitor:
    """Measures the lag of consumer groups every ``every_s`` in a daemon thread (a reader per group, one probe)."""

    def __init__(self, bootstrap: str, groups: Iterable[str], every_s: float, timeout_s: float = 5.0) -> None:
        self.bootstrap, self.groups, self.every_s, self.timeout_s = bootstrap, list(groups), every_s, timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nexus-lag", daemon=True)

    def start(self) -> LagMonitor:
        if self.groups:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        probe = lag_reader(self.bootstrap, f"nexus-lag-{uuid.uuid4().hex[:8]}")  # only asks for watermarks
        readers = {group: lag_reader(self.bootstrap, group) for group in self.groups}
        warned = 0.0
        try:
            while not self._stop.wait(self.every_s):
                for group, reader in readers.items():
                    try:
                        measure_group_lag(reader, probe, self.timeout_s)
                    except Exception as exc:  # the broker away a moment: the next round measures again
                        if time.monotonic() - warned > 60:
                            warned = time.monotonic()
                            log.warning("consumer lag of %s not measured: %s", group, exc)
        finally:
            for consumer in (probe, *readers.values()):
                consumer.close()


def lag_reader(bootstrap: str, group: str) -> Consumer:
    """A consumer in ``group`` that never subscribes (so never joins it): it reads the group's committed offsets."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})


def measure_group_lag(reader: Consumer, probe: Consumer, timeout_s: float) -> dict[tuple[str, int], int]:
    """Lag per partition the reader's group has committed on: high watermark - committed offset.

    The offsets come from the consumer's own offset fetch, not the Admin API's: librdkafka's admin request to a
    group coordinator that just died can abort the whole process (use-after-free, librdkafka PR 5397), which
    took a worker down with its coordinator (tests/integration/test_cluster_coordinator_kill.py).
    """
    topics = probe.list_topics(timeout=timeout_s).topics
    asked = [TopicPartition(t, p) for t, meta in topics.items() if not t.startswith("__") for p in meta.partitions]
    lags: dict[tuple[str, int], int] = {}
    for tp in reader.committed(asked, timeout=timeout_s):
        if tp.error is not None or tp.offset < 0:  # nothing committed there: not this group's partition
            continue
        _low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
        lags[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
    for (topic, partition), lag in lags.items():
        set_consumer_lag(topic, partition, lag)
    return lags


__all__ = [
    "BREAKER_STATE",
    "CONSUMER_LAG",
    "HOLDS_OPEN",
    "REGISTRY",
    "LagMonitor",
    "RecordMeter",
    "add_refresher",
    "breaker_refresher",
    "count_dead_letter_written",
    "holds_open_refresher",
    "measure_group_lag",
    "render",
    "set_breaker_state",
    "set_consumer_lag",
    "set_snapshot_age",
    "snapshot_age_refresher",
]
