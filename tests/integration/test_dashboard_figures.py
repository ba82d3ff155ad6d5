"""Dashboard figures (pure, fast) and the provisioned Grafana dashboard's queries against streams.alerting.metrics."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from contracts import models as m
from contracts.examples import build
from dashboards.figures import Figures, compact_number
from streams.alerting import metrics
from streams.settings import REPO_ROOT

NOW = datetime(2031, 3, 1, 0, 30, tzinfo=UTC)


def completed(
    rid: str, at: datetime, ms: int = 400, region: m.Region = m.Region.KR, currency: m.Currency = m.Currency.KRW
) -> m.BridgeSettlementCompleted:
    return build(
        m.BridgeSettlementCompleted,
        request_id=rid,
        bridge_tx_id=f"B-{rid}",
        region=region,
        currency=currency,
        kaus_debited_units=2_000_000,
        rail=m.Rail.TOSS_PAYMENTS,
        total_duration_ms=ms,
        completed_at=at,
    )


def test_windows_today_and_dedupe() -> None:
    figures = Figures()
    figures.add(completed("a", NOW - timedelta(minutes=10), 300))  # today
    figures.add(completed("b", NOW - timedelta(hours=2), 500, m.Region.US, m.Currency.USD))  # yesterday, in 24 h
    figures.add(completed("b", NOW - timedelta(hours=2), 500, m.Region.US, m.Currency.USD))  # replayed: once
    figures.add(completed("c", NOW - timedelta(hours=25), 900))  # outside 24 h
    failed = build(
        m.BridgeSettlementFailed, region=m.Region.KR, currency=m.Currency.KRW, failed_at=NOW - timedelta(minutes=1)
    )
    figures.add(failed)
    s = figures.summary(NOW)
    assert s["settlements_today"] == 1
    assert s["bridge_completed_24h"] == 2 and s["bridge_failed_24h"] == 1
    assert s["avg_settlement_ms"] == 400.0
    assert s["success_rate"] == round(2 / 3, 6)
    assert s["volume_24h_kaus"] == "4"
    assert s["active_bridges"]["KR"] == 1 and s["active_bridges"]["US"] == 1 and s["active_bridges"]["AE"] == 0
    assert s["display"]["success_rate"] == "66.67%" and s["display"]["avg_settlement"] == "400ms"
    assert [c["currency"] for c in s["currency_breakdown"]] == ["KRW", "USD"]


def test_alerts_follow_firing_and_resolved_records() -> None:
    figures = Figures()
    alert = build(m.Alert, rule="SettlementDelay", severity=m.Severity.WARNING, channel="slack", starts_at=NOW)
    figures.add(alert)
    assert [a["rule"] for a in figures.summary(NOW)["firing_alerts"]] == ["SettlementDelay"]
    figures.add(alert.model_copy(update={"state": m.AlertState.RESOLVED, "ends_at": NOW}))
    assert figures.summary(NOW)["firing_alerts"] == []


def test_payout_figures_from_the_payout_topics() -> None:
    """Results, waits and deliveries as the auto-payout service and the notifier write them; the bridge's
    settlements of those payouts give the payout time and still count as bridge settlements."""
    figures = Figures()
    at = NOW - timedelta(minutes=20)
    result = build(m.PayoutResult, completed_at=at)  # PAYOUT-1: PAID 150.00 USD, 1,000 K-AUS
    figures.add(build(m.PayoutWaiting, payout_id="PAYOUT-1", waiting_since=at - timedelta(hours=1)))
    figures.add(result)
    figures.add(result)  # reported again after a restart
    figures.add(result.model_copy(update={"payout_id": "PAYOUT-2", "currency": m.Currency.KRW, "amount_minor": 1_501}))
    figures.add(result.model_copy(update={"payout_id": "PAYOUT-3", "amount_minor": 1, "kaus_debited_units": 6_667}))
    for pid, code in (("PAYOUT-4", "PAYOUT_FAILED"), ("PAYOUT-5", "PROVIDER_DECLINED"), ("PAYOUT-6", "PAYOUT_FAILED")):
        figures.add(
            result.model_copy(
                update={
                    "payout_id": pid,
                    "status": m.PayoutStatus.FAILED,
                    "kaus_debited_units": None,
                    "reason_code": code,
                    "failed_phase": m.BridgePhase.MERCHANT_CREDIT,
                }
            )
        )
    figures.add(build(m.PayoutWaiting, payout_id="rule-2:D2031-03-01", waiting_since=at))  # KYC_PENDING
    figures.add(build(m.PayoutWaiting, payout_id="rule-9:D2031-03-01", waiting_since=at, reason_code="KYC_EXPIRED"))
    delivered = build(m.NotificationDelivery, delivered_at=at)  # PAYOUT-1:PAYOUT_COMPLETED:EMAIL
    figures.add(delivered)
    figures.add(
        delivered.model_copy(
            update={
                "notification_id": "PAYOUT-4:PAYOUT_FAILED:SMS",
                "channel": m.NotificationChannel.SMS,
                "status": m.DeliveryStatus.UNDELIVERED,
                "attempts": 5,
            }
        )
    )
    for rid, ms in (("PAYOUT-1", 300), ("PAYOUT-2", 500)):
        figures.add(completed(rid, at, ms).model_copy(update={"payout_id": rid}))
    figures.add(completed("card-1", at, 2_000))  # a card payment: not a payout

    s = figures.summary(NOW)
    p = s["payouts"]
    assert (p["paid"], p["failed"], p["waiting"]) == (3, 3, 2)
    assert p["failed_by_reason"] == {"PAYOUT_FAILED": 2, "PROVIDER_DECLINED": 1}
    assert p["waiting_by_reason"] == {"KYC_EXPIRED": 1, "KYC_PENDING": 1}
    assert p["fiat_paid_minor"] == {"USD": 15_001, "KRW": 1_501}
    assert p["kaus_paid_units"] == 2 * 1_000_000_000 + 6_667
    assert p["display"]["fiat_paid"] == {"USD": "150.01", "KRW": "1,501"}
    assert p["display"]["kaus_paid"] == "2,000.006667 K-AUS"
    assert p["notifications"]["EMAIL"] == {"delivered": 1, "undelivered": 0}
    assert p["notifications"]["SMS"] == {"delivered": 0, "undelivered": 1}
    assert p["avg_payout_ms"] == 400.0 and p["display"]["avg_payout"] == "400ms"
    assert s["bridge_completed_24h"] == 3 and s["avg_settlement_ms"] == 933.3


def test_compact_number() -> None:
    assert compact_number(2_400_000) == "2.4M"
    assert compact_number(12_847) == "12.8K"
    assert compact_number(487) == "487"


def test_grafana_dashboard_covers_spec_panels_with_existing_metrics() -> None:
    dashboard = json.loads((REPO_ROOT / "dashboards" / "grafana" / "nexus-settlement.json").read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in (
        "24H Volume",
        "Settlements Today",
        "Avg Settlement Time",
        "Settlement Success Rate",
        "Currency Breakdown",
        "Active Bridges",
    ):
        assert any(t.startswith(wanted) for t in titles), f"no {wanted} panel"
    exposed = {f.name for f in metrics.REGISTRY.collect()}
    suffixes = ("_total", "_bucket", "_sum", "_count")
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(nexus_[a-z_]+)", target["expr"]):
                base = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
                assert base in exposed or name in exposed, (
                    f"{panel['title']}: {name} is not in streams.alerting.metrics"
                )
            assert target["datasource"]["uid"] == "prometheus"
