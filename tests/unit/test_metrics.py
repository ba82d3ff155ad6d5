"""streams.alerting.metrics: names, labels and units of the exposition; metrics derived from registry messages."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import models as m
from contracts.examples import build
from streams.alerting import metrics


def sample(name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_helpers_expose_the_documented_series() -> None:
    before = (
        sample("nexus_settlements_total", {"status": "completed", "currency": "USD", "rail": "STRIPE_INSTANT"}) or 0
    )
    metrics.count_settlement("COMPLETED", m.Currency.USD, m.Rail.STRIPE_INSTANT)
    assert sample("nexus_settlements_total", {"status": "completed", "currency": "USD", "rail": "STRIPE_INSTANT"}) == (
        before + 1
    )
    metrics.count_settlement("failed", "KRW", None)
    assert sample("nexus_settlements_total", {"status": "failed", "currency": "KRW", "rail": "none"}) is not None

    metrics.observe_bridge_phase(m.BridgePhase.FX_CONVERSION, m.Region.KR, 0.12)
    assert (
        sample("nexus_bridge_phase_duration_seconds_bucket", {"phase": "FX_CONVERSION", "region": "KR", "le": "0.15"})
        is not None
    )

    metrics.set_breaker_state(m.Rail.TOSS_PAYMENTS, "open")
    assert sample("nexus_rail_breaker_state", {"rail": "TOSS_PAYMENTS"}) == 2
    metrics.set_breaker_state("TOSS_PAYMENTS", "half_open")
    assert sample("nexus_rail_breaker_state", {"rail": "TOSS_PAYMENTS"}) == 1
    with pytest.raises(KeyError):
        metrics.set_breaker_state("TOSS_PAYMENTS", "ajar")

    metrics.set_consumer_lag("energy.orders", 3, 17)
    assert sample("nexus_consumer_lag_messages", {"topic": "energy.orders", "partition": "3"}) == 17
    metrics.count_dead_letter("energy.orders", "MALFORMED_JSON")
    assert (
        sample("nexus_deadletters_total", {"source_topic": "energy.orders", "reason_code": "MALFORMED_JSON"}) or 0
    ) >= 1

    metrics.set_alerts_firing({("SettlementFailed", "critical"): 1})
    assert sample("nexus_alerts_firing", {"alertname": "SettlementFailed"}) == 1
    metrics.set_alerts_firing({})
    assert sample("nexus_alerts_firing", {"alertname": "SettlementFailed"}) == 0


def test_metrics_derived_from_registry_messages() -> None:
    from streams.alerting.agent import record_metrics

    t = datetime(2026, 1, 23, tzinfo=UTC)
    labels = {"flow": "bridge", "currency": "JPY"}
    before = sample("nexus_settled_kaus_total", labels) or 0
    record_metrics(
        build(
            m.BridgeSettlementCompleted,
            region=m.Region.JP,
            currency=m.Currency.JPY,
            kaus_debited_units=2_500_000,
            rail=m.Rail.PAYPAY_BUSINESS,
            phase_durations_ms={m.BridgePhase.MERCHANT_CREDIT: 200},
            total_duration_ms=480,
            completed_at=t,
        )
    )
    assert sample("nexus_settled_kaus_total", labels) == before + 2.5
    assert (sample("nexus_settlement_duration_seconds_count", {"flow": "bridge", "region": "JP"}) or 0) >= 1
    assert (sample("nexus_bridge_phase_duration_seconds_count", {"phase": "MERCHANT_CREDIT", "region": "JP"}) or 0) >= 1
    record_metrics(
        build(
            m.TradeSettled,
            market_id="2026-11-24T10:00Z/KR-SEOUL",
            phase_durations_us={"matching": 35, "transfer": 40},
            settled_at=t,
        )
    )
    assert (sample("nexus_p2p_phase_duration_seconds_count", {"phase": "matching"}) or 0) >= 1
    assert (sample("nexus_settlement_duration_seconds_count", {"flow": "p2p", "region": "KR"}) or 0) >= 1


def test_endpoint_serves_the_registry() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert metrics.start_metrics_server(port)
    try:
        assert metrics.start_metrics_server(port)  # idempotent within the process
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "# TYPE nexus_bridge_phase_duration_seconds histogram" in text
        assert "# TYPE nexus_settlements_total counter" in text
        assert "process_cpu_seconds_total" in text
    finally:
        metrics.stop_metrics_server()
