"""Prometheus metrics of the platform: one registry, small helpers, served by the worker on ``metrics_port``.

Other modules call the helpers; names follow Prometheus conventions (base unit last, ``_total`` on
counters, which prometheus-client appends)::

    from streams.alerting import metrics
    metrics.set_breaker_state("TOSS_PAYMENTS", "open")

Settlement counts, latencies and dead-letter counts are *derived from the registry topics* by the
monitoring agent (``streams/alerting/agent.py``), so every settlement is counted once whichever
agent produced it; producers should not call ``count_settlement``/``observe_bridge_phase`` for
records they also publish (set ``NEXUS_METRICS_FROM_TOPICS=false`` if they do). State that is not
on any topic (circuit breakers) is set directly by its owner.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

log = logging.getLogger("nexus.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Spec §2.2: phases of 100-200 ms inside a 650 ms target; §5.2: 1000 ms is an alert.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.65, 0.8, 1.0, 1.5, 2.5, 5.0)

BRIDGE_PHASE_SECONDS = Histogram(
    "nexus_bridge_phase_duration_seconds",
    "High-Speed Bridge phase duration (spec §2.2 phases 1-4)",
    ["phase", "region"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
P2P_PHASE_SECONDS = Histogram(
    "nexus_p2p_phase_duration_seconds",
    "P2P energy settlement phase duration (spec §2.1)",
    ["phase"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
SETTLEMENT_SECONDS = Histogram(
    "nexus_settlement_duration_seconds",
    "End-to-end settlement duration (bridge target 650 ms)",
    ["flow", "region"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
SETTLEMENTS = Counter(
    "nexus_settlements",
    "Settlements by outcome, currency and rail",
    ["status", "currency", "rail"],
    registry=REGISTRY,
)
SETTLED_KAUS = Counter(
    "nexus_settled_kaus",
    "K-AUS moved by completed settlements (1 K-AUS = 1,000,000 base units)",
    ["flow", "currency"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "nexus_rail_breaker_state",
    "Circuit breaker per settlement rail: 0 closed, 1 half-open, 2 open",
    ["rail"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "nexus_consumer_lag_messages",
    "Messages not yet consumed by this worker's consumer group",
    ["topic", "partition"],
    registry=REGISTRY,
)
DEADLETTERS = Counter(
    "nexus_deadletters",
    "Messages rejected into platform.deadletters",
    ["source_topic", "reason_code"],
    registry=REGISTRY,
)
ALERTS_FIRING = Gauge("nexus_alerts_firing", "Alerts currently firing", ["alertname", "severity"], registry=REGISTRY)
ALERT_DELIVERIES = Counter(
    "nexus_alertmanager_posts",
    "Batches posted to Alertmanager, by result (ok, error)",
    ["result"],
    registry=REGISTRY,
)

BREAKER_STATES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}
UNITS_PER_KAUS = 1_000_000


def _label(value: object) -> str:
    if value is None:
        return "none"
    return str(getattr(value, "value", value))


# ----------------------------------------------------------------------------- helpers (the API)


def observe_bridge_phase(phase: object, region: object, seconds: float) -> None:
    BRIDGE_PHASE_SECONDS.labels(_label(phase), _label(region)).observe(seconds)


def observe_p2p_phase(phase: str, seconds: float) -> None:
    P2P_PHASE_SECONDS.labels(phase).observe(seconds)


def observe_settlement(flow: str, region: object, seconds: float) -> None:
    """End-to-end duration of one completed settlement; ``flow`` is ``bridge`` or ``p2p``."""
    SETTLEMENT_SECONDS.labels(flow, _label(region)).observe(seconds)


def count_settlement(status: str, currency: object, rail: object, n: int = 1) -> None:
    """``status``: ``completed`` or ``failed``; ``rail`` None (failed before a rail was chosen) -> ``none``."""
    SETTLEMENTS.labels(status.lower(), _label(currency), _label(rail)).inc(n)


def add_settled_kaus(flow: str, currency: object, kaus_units: int) -> None:
    SETTLED_KAUS.labels(flow, _label(currency)).inc(kaus_units / UNITS_PER_KAUS)


def set_breaker_state(rail: object, state: str | int) -> None:
    """``state``: ``closed`` / ``half_open`` / ``open`` (or 0 / 1 / 2)."""
    value = state if isinstance(state, int) else BREAKER_STATES[state.lower()]
    if value not in (0, 1, 2):
        raise ValueError(f"breaker state must be 0, 1 or 2, got {value}")
    BREAKER_STATE.labels(_label(rail)).set(value)


def set_consumer_lag(topic: str, partition: int, lag: int) -> None:
    CONSUMER_LAG.labels(topic, str(partition)).set(max(lag, 0))


def count_dead_letter(source_topic: str, reason_code: str) -> None:
    DEADLETTERS.labels(source_topic, reason_code).inc()


def set_alerts_firing(counts: Mapping[tuple[str, str], int]) -> None:
    """(alertname, severity) -> number firing; pairs not given are set to 0."""
    for labels in list(_firing_seen):
        if labels not in counts:
            ALERTS_FIRING.labels(*labels).set(0)
    for labels, n in counts.items():
        _firing_seen.add(labels)
        ALERTS_FIRING.labels(*labels).set(n)


_firing_seen: set[tuple[str, str]] = set()


def count_alert_delivery(ok: bool) -> None:
    ALERT_DELIVERIES.labels("ok" if ok else "error").inc()


def render() -> bytes:
    """The exposition text, as the endpoint serves it."""
    return generate_latest(REGISTRY)


# ----------------------------------------------------------------------------- consumer lag


def measure_consumer_lag(bootstrap: str, group_id: str, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
    """Lag of a consumer group per partition (high watermark - committed offset); also sets the gauges.

    Blocking (network); call it from a thread. Partitions without a committed offset count from the low
    watermark.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id)], request_timeout=timeout_s)
    committed: list[Any] = future[group_id].result(timeout=timeout_s).topic_partitions or []
    probe = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"nexus-lag-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    lags: dict[tuple[str, int], int] = {}
    try:
        for tp in committed:
            if tp.topic.startswith("__") or tp.error is not None:
                continue
            low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
            position = tp.offset if tp.offset >= 0 else low
            lags[(tp.topic, tp.partition)] = max(high - position, 0)
    finally:
        probe.close()
    for (topic, partition), lag in lags.items():
        set_consumer_lag(topic, partition, lag)
    return lags


# ----------------------------------------------------------------------------- endpoint

_server_lock = threading.Lock()
_server: Any = None


def start_metrics_server(port: int, host: str = "127.0.0.1") -> bool:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread, once per process. False if the port is taken."""
    global _server
    with _server_lock:
        if _server is not None:
            return True
        try:
            _server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
        except OSError as exc:
            log.error("metrics endpoint not started on %s:%d: %s", host, port, exc)
            return False
        log.info("metrics on http://%s:%d/metrics", host, port)
        return True


def stop_metrics_server() -> None:
    global _server
    with _server_lock:
        if _server is not None:
            _server.shutdown()
            _server.server_close()
            _server = None


__all__ = [
    "REGISTRY",
    "add_settled_kaus",
    "count_alert_delivery",
    "count_dead_letter",
    "count_settlement",
    "measure_consumer_lag",
    "observe_bridge_phase",
    "observe_p2p_phase",
    "observe_settlement",
    "render",
    "set_alerts_firing",
    "set_breaker_state",
    "set_consumer_lag",
    "start_metrics_server",
    "stop_metrics_server",
]
