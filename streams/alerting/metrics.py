"""Prometheus metrics of the platform: one registry, small helpers, served by the worker on ``metrics_port``.

Other modules call the helpers; names follow Prometheus conventions (base unit last, ``_total`` on
counters, which prometheus-client appends)::

    from streams.alerting import metrics
    metrics.set_breaker_state("TOSS_PAYMENTS", "open")

Settlement counts, latencies and dead-letter counts are *derived from the registry topics* by the
monitoring agent (``streams/alerting/agent.py``), so every settlement is counted once whichever
agent produced it; producers should not call ``count_settlement``/``observe_bridge_phase`` for
records they also publish (set ``NEXUS_METRICS_FROM_TOPICS=false`` if they do). The registry and the
series every worker exposes (lag, breakers, dead letters written, ...) are ``streams/ops/metrics.py``'s;
docs/operations.md lists them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from streams.ops import health
from streams.ops import metrics as ops_metrics
from streams.ops.metrics import REGISTRY, set_breaker_state, set_consumer_lag

log = logging.getLogger("nexus.metrics")

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
    return ops_metrics.render()


# ----------------------------------------------------------------------------- consumer lag


def measure_consumer_lag(bootstrap: str, group_id: str, timeout_s: float = 5.0) -> dict[tuple[str, int], int]:
    """Lag of a consumer group per partition (high watermark - committed offset); also sets the gauges.

    Blocking (network); call it from a thread. Only partitions with a committed offset are measured.
    Long-lived workers use ``streams.ops.metrics.LagMonitor`` (clients kept between rounds).
    """
    probe = ops_metrics.lag_reader(bootstrap, f"nexus-lag-{uuid.uuid4().hex[:8]}")
    reader = ops_metrics.lag_reader(bootstrap, group_id)
    try:
        return ops_metrics.measure_group_lag(reader, probe, timeout_s)
    finally:
        probe.close()
        reader.close()


# ----------------------------------------------------------------------------- endpoint


def start_metrics_server(port: int, host: str = "127.0.0.1") -> bool:
    """Serve ``/metrics`` (and ``/healthz``) on ``host:port`` once per process (``streams.ops.health``)."""
    return health.start_endpoint("metrics", port, host).server is not None


def stop_metrics_server() -> None:
    health.stop()


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
