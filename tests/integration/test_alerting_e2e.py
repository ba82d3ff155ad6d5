"""End to end: events on Kafka -> alerting worker -> real Alertmanager -> Slack / PagerDuty / email / SMS sink.

One stack for the module (own broker, Alertmanager rendered with 1 s group wait/interval, worker with
the shipped rules re-posting every 2 s). Each test moves the engine clock past every window first,
so tests do not see each other's events; notifications are counted from the test's own start.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from contracts import models as m
from contracts.examples import build
from contracts.topics import (
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    FX_RATES,
    GOVERNANCE_KEYS,
    GOVERNANCE_MULTISIG,
    MONITORING_ALERTS,
    PLATFORM_DEADLETTERS,
)
from domain.alert_rules import fingerprint
from tests.integration.alerting_fixtures import AlertingStack, alerting_stack
from tests.support.kafka_io import Record

pytestmark = pytest.mark.slow
_ = alerting_stack  # the module-scoped fixture

QUIET_S = 3.0  # > group_interval (1 s) + repost interval (2 s): time for a duplicate to show up if there were one
PHASES = (
    m.BridgePhase.BALANCE_LOCK,
    m.BridgePhase.FX_CONVERSION,
    m.BridgePhase.MERCHANT_CREDIT,
    m.BridgePhase.CONFIRMATION,
)


def completed(
    request_id: str, at: datetime, total_ms: int, region: m.Region = m.Region.US
) -> m.BridgeSettlementCompleted:
    quarter = total_ms // 4
    return build(
        m.BridgeSettlementCompleted,
        request_id=request_id,
        bridge_tx_id=f"BRIDGE-{request_id}",
        region=region,
        currency=m.Currency.USD,
        rail=m.Rail.STRIPE_INSTANT,
        phase_durations_ms=dict.fromkeys(PHASES[:3], quarter) | {PHASES[3]: total_ms - 3 * quarter},
        total_duration_ms=total_ms,
        completed_at=at,
    )


def failed(request_id: str, at: datetime, region: m.Region = m.Region.KR) -> m.BridgeSettlementFailed:
    return build(
        m.BridgeSettlementFailed,
        request_id=request_id,
        region=region,
        currency=m.Currency.KRW,
        failed_phase=m.BridgePhase.MERCHANT_CREDIT,
        reason_code="PAYOUT_FAILED",
        rail=m.Rail.TOSS_PAYMENTS,
        failed_at=at,
    )


def fx(quote_id: str, at: datetime, rate: str, source: m.FxSource) -> m.FxRate:
    return build(m.FxRate, quote_id=quote_id, source=source, quote=m.Currency.EUR, rate=Decimal(rate), as_of=at)


def isolate(stack: AlertingStack) -> tuple[int, datetime]:
    """Move the engine clock past every window (10 min), wait until nothing fires; the sink mark and the engine now."""
    stack.advance(600)
    stack.wait_state(lambda s: not s["firing"] and not s["delivery"]["pending"])
    time.sleep(1.5)  # resolves of a previous test, if any, reach the sink
    return len(stack.sink.records()), stack.now()


def counts(notifications: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    out: dict[tuple[str, str, str], int] = {}
    for n in notifications:
        out[n] = out.get(n, 0) + 1
    return out


def notified_exactly(stack: AlertingStack, expected: dict[tuple[str, str, str], int], since: int) -> None:
    """Wait for the expected notifications, then a quiet spell: exactly those arrived (re-posts included)."""
    stack.wait_notifications(expected, since=since)
    time.sleep(QUIET_S)
    assert counts(stack.notifications(since)) == expected


def test_event_thresholds_just_under_stay_quiet_crossing_notifies_once_then_resolves(
    alerting_stack: AlertingStack, run_id: str
) -> None:
    stack = alerting_stack
    mark, now = isolate(stack)
    received = stack.state()["received"]
    done_completed = received.get(BRIDGE_SETTLEMENTS_COMPLETED.name, 0)
    done_fx = received.get(FX_RATES.name, 0)

    # Just under every threshold: 5,000 settlements in the minute, the slowest exactly 1000 ms, EUR moved exactly 0.5%.
    under = [completed(f"{run_id}-u{i}", now, 180) for i in range(4999)]
    under.append(completed(f"{run_id}-slow1000", now, 1000, m.Region.KR))
    stack.kafka.produce_messages(BRIDGE_SETTLEMENTS_COMPLETED, under)
    stack.kafka.produce_messages(
        FX_RATES,
        [
            fx(f"{run_id}-fx1", now, "0.15", m.FxSource.BLOOMBERG),
            fx(f"{run_id}-fx2", now, "0.15075", m.FxSource.REUTERS),
        ],
    )
    stack.wait_received(BRIDGE_SETTLEMENTS_COMPLETED.name, done_completed + 5000)
    stack.wait_received(FX_RATES.name, done_fx + 2)
    time.sleep(QUIET_S)
    assert stack.state()["firing"] == []
    assert stack.notifications(mark) == []

    # Crossing: the 5,001st settlement, which also takes 1001 ms in KR, and a quote 0.50007% off.
    crossed_at = time.monotonic()
    crossed_wall = datetime.now(UTC) - timedelta(seconds=1)
    stack.kafka.produce_messages(
        BRIDGE_SETTLEMENTS_COMPLETED, [completed(f"{run_id}-slow1001", now, 1001, m.Region.KR)]
    )
    stack.kafka.produce_messages(FX_RATES, [fx(f"{run_id}-fx3", now, "0.1507501", m.FxSource.REUTERS)])
    firing = {
        ("slack", "SettlementDelay", "firing"): 1,
        ("slack", "FxSlippage", "firing"): 1,
        ("email", "HighVolume", "firing"): 1,
    }
    stack.wait_notifications(firing, since=mark, timeout_s=20)
    delivered_s = time.monotonic() - crossed_at
    time.sleep(QUIET_S)
    assert counts(stack.notifications(mark)) == firing  # exactly one per alert and channel, re-posts included
    assert delivered_s < 60  # within the shortest window (1m) — in practice ~1-2 s

    records = stack.records(mark)
    slack = {r["body"]["attachments"][0]["title"]: r["body"] for r in records if r["channel"] == "slack"}
    delay = slack["[FIRING:1] SettlementDelay · KR"]
    assert delay["channel"] == "#settlement-alerts" and delay["username"] == "nexus-x-alertmanager"
    assert delay["attachments"][0]["color"] == "warning"
    assert "slowest settlement took 1001 ms" in delay["attachments"][0]["text"]
    assert delay["attachments"][0]["footer"] == f"fingerprint {fingerprint('SettlementDelay', [('region', 'KR')])}"
    assert "rate moved 0.5001% within 1m" in slack["[FIRING:1] FxSlippage · KAUS/EUR"]["attachments"][0]["text"]
    mail = next(r for r in records if r["channel"] == "email")
    assert mail["subject"] == "[NEXUS-X FIRING] HighVolume (1 alert)"
    assert mail["to"] == ["settlement@nexus-x.io"]
    assert "5001 settlements in the last 1m" in mail["text"] and "<h3>FIRING: HighVolume</h3>" in mail["html"]

    # The condition clears once the windows move on: one resolve each, no event needed.
    cleared = len(stack.sink.records())
    stack.advance(6 * 60)
    resolved = {
        ("slack", "SettlementDelay", "resolved"): 1,
        ("slack", "FxSlippage", "resolved"): 1,
        ("email", "HighVolume", "resolved"): 1,
    }
    notified_exactly(stack, resolved, since=cleared)

    # Every transition is on monitoring.alerts, with a stable fingerprint per alert.
    wanted = {
        (rule, state) for rule in ("SettlementDelay", "FxSlippage", "HighVolume") for state in ("firing", "resolved")
    }

    def transitions(records: list[Record]) -> list[tuple[str, str, str]]:
        alerts = [MONITORING_ALERTS.decode(r.value or b"") for r in records]
        return [(a.rule, a.state.value, a.fingerprint) for a in alerts if a.starts_at > crossed_wall]

    on_topic = stack.kafka.wait_for(MONITORING_ALERTS, lambda rs: {t[:2] for t in transitions(rs)} >= wanted, 20)
    mine = transitions(on_topic)
    assert sorted(t[:2] for t in mine) == sorted(wanted)  # one record per transition
    assert len({t[2] for t in mine if t[0] == "SettlementDelay"}) == 1  # same fingerprint firing and resolved


def test_time_based_rules_fire_without_events_and_resolve(alerting_stack: AlertingStack, run_id: str) -> None:
    stack = alerting_stack
    mark, now = isolate(stack)
    received = stack.state()["received"]
    key_id, request_id = f"hsm-{run_id}", f"msig-{run_id}"
    # 20 s short of each threshold: 7 days + 20 s left on the key, the request pending 2 h - 20 s.
    stack.kafka.produce_messages(
        GOVERNANCE_KEYS,
        [
            build(
                m.KeyMetadata,
                key_id=key_id,
                label="settlement signing key",
                created_at=now - timedelta(days=83),
                expires_at=now + timedelta(days=7, seconds=20),
                observed_at=now,
            )
        ],
    )
    stack.kafka.produce_messages(
        GOVERNANCE_MULTISIG,
        [
            build(
                m.MultisigRequest,
                request_id=request_id,
                state=m.MultisigState.PENDING,
                created_at=now - timedelta(hours=2) + timedelta(seconds=20),
                updated_at=now,
            )
        ],
    )
    stack.wait_received(GOVERNANCE_KEYS.name, received.get(GOVERNANCE_KEYS.name, 0) + 1)
    stack.wait_received(GOVERNANCE_MULTISIG.name, received.get(GOVERNANCE_MULTISIG.name, 0) + 1)
    time.sleep(QUIET_S)
    assert stack.notifications(mark) == []

    # 21 s later, with no new event, both cross (the timer evaluates them).
    stack.advance(21)
    firing = {("sms", "MultisigPending", "firing"): 1, ("email", "HsmKeyExpiry", "firing"): 1}
    notified_exactly(stack, firing, since=mark)
    records = stack.records(mark)
    sms = next(r for r in records if r["channel"] == "sms")
    assert sms["body"]["version"] == "4" and sms["body"]["receiver"] == "sms"
    assert sms["body"]["commonLabels"]["request_id"] == request_id
    assert sms["body"]["commonLabels"]["fingerprint"] == fingerprint("MultisigPending", [("key", request_id)])
    assert sms["sms_text"].startswith(
        f"NEXUS-X FIRING MultisigPending: Multi-sig request {request_id} pending for 2h 0m"
    )
    assert len(sms["sms_text"]) <= 160
    mail = next(r for r in records if r["channel"] == "email")
    assert mail["subject"] == "[NEXUS-X FIRING] HsmKeyExpiry (1 alert)"
    assert f"HSM key settlement signing key ({key_id}) expires in 6d 23h 59m" in mail["text"]

    # Approval and key rotation clear them: one resolve each.
    cleared = len(stack.sink.records())
    later = stack.now()
    stack.kafka.produce_messages(
        GOVERNANCE_KEYS,
        [
            build(
                m.KeyMetadata, key_id=key_id, created_at=later, expires_at=later + timedelta(days=90), observed_at=later
            )
        ],
    )
    stack.kafka.produce_messages(
        GOVERNANCE_MULTISIG,
        [
            build(
                m.MultisigRequest,
                request_id=request_id,
                signatures=4,
                state=m.MultisigState.APPROVED,
                created_at=now - timedelta(hours=2) + timedelta(seconds=20),
                updated_at=later,
            )
        ],
    )
    resolved = {("sms", "MultisigPending", "resolved"): 1, ("email", "HsmKeyExpiry", "resolved"): 1}
    notified_exactly(stack, resolved, since=cleared)


def test_burst_of_1000_failures_pages_once_and_mutes_the_delay_it_causes(
    alerting_stack: AlertingStack, run_id: str
) -> None:
    stack = alerting_stack
    mark, now = isolate(stack)
    started = time.monotonic()
    stack.kafka.produce_messages(
        BRIDGE_SETTLEMENTS_FAILED,
        [
            failed(f"{run_id}-f{i}", now + timedelta(milliseconds=i), m.Region.KR if i % 4 else m.Region.JP)
            for i in range(1000)
        ],
    )
    # The failures also slow the settlements that still complete: that delay must not notify separately.
    stack.kafka.produce_messages(BRIDGE_SETTLEMENTS_COMPLETED, [completed(f"{run_id}-slow", now, 1500, m.Region.KR)])
    page = {("pagerduty", "SettlementFailed", "firing"): 1}
    stack.wait_notifications(page, since=mark)
    paged_s = time.monotonic() - started
    stack.wait_state(lambda s: s["engine"]["window_samples"].get("settlement_failed", 0) >= 1000)
    time.sleep(QUIET_S)
    assert counts(stack.notifications(mark)) == page, "1,000 failures must page once, and the delay stay muted"
    assert paged_s < 30
    assert any(f["rule"] == "SettlementDelay" for f in stack.state()["firing"])  # firing, but inhibited

    event = next(r["body"] for r in stack.records(mark) if r["channel"] == "pagerduty")
    fp = fingerprint("SettlementFailed", [])
    group_key = f'{{}}/{{channel="pagerduty"}}:{{alertname="SettlementFailed", fingerprint="{fp}"}}'
    assert event["routing_key"] == "nexus-local-routing-key"
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == hashlib.sha256(group_key.encode()).hexdigest()  # one incident per fingerprint
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["source"] == "nexus-x-settlement"
    assert event["payload"]["custom_details"]["fingerprint"] == fp
    # Paged at the first failure (no group wait); the count keeps growing in the one firing alert.
    summary = event["payload"]["summary"]
    assert summary.startswith("SettlementFailed: ") and "settlement(s) failed in the last 5m" in summary
    assert "reason_code: PAYOUT_FAILED" in summary and "phase: MERCHANT_CREDIT" in summary
    failing = next(f for f in stack.state()["firing"] if f["rule"] == "SettlementFailed")
    assert failing["value"] == "1000" and "region: KR 750, JP 250" in failing["summary"]

    cleared = len(stack.sink.records())
    stack.advance(6 * 60)
    resolve = {("pagerduty", "SettlementFailed", "resolved"): 1}
    notified_exactly(stack, resolve, since=cleared)  # and no late Slack message for the muted delay
    resolved = next(r["body"] for r in stack.records(cleared) if r["channel"] == "pagerduty")
    assert resolved["dedup_key"] == event["dedup_key"]


def test_bad_records_are_dead_lettered_and_metrics_are_served(alerting_stack: AlertingStack, run_id: str) -> None:
    stack = alerting_stack
    state = stack.state()
    before = state["rejected"].get(BRIDGE_SETTLEMENTS_FAILED.name, 0)
    now = stack.now()
    stack.kafka.produce_messages(BRIDGE_SETTLEMENTS_COMPLETED, [completed(f"{run_id}-ok", now, 420)])
    stack.kafka.produce_messages(BRIDGE_SETTLEMENTS_FAILED, [failed(f"{run_id}-ko", now)])
    junk = b'{"request_id": "' + run_id.encode() + b'", '
    stack.kafka.produce(BRIDGE_SETTLEMENTS_FAILED, run_id.encode(), junk, bad_input=True)
    stack.kafka.flush()
    stack.wait_state(lambda s: s["rejected"].get(BRIDGE_SETTLEMENTS_FAILED.name, 0) == before + 1)
    letters = stack.kafka.wait_for(
        PLATFORM_DEADLETTERS,
        lambda rs: any(
            r.key == BRIDGE_SETTLEMENTS_FAILED.name.encode()
            and json.loads(r.value or b"{}")["reason_code"] == "MALFORMED_JSON"
            for r in rs
        ),
        timeout_s=20,
    )
    assert letters
    # the agent reads the dead letter back and counts it
    deadline = time.monotonic() + 20
    line = 'nexus_deadletters_total{reason_code="MALFORMED_JSON",source_topic="bridge.settlements.failed"}'
    while line not in stack.metrics_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    text = stack.metrics_text()
    assert line in text
    assert 'nexus_settlements_total{currency="USD",rail="STRIPE_INSTANT",status="completed"}' in text
    assert 'nexus_settlements_total{currency="KRW",rail="TOSS_PAYMENTS",status="failed"}' in text
    assert 'nexus_bridge_phase_duration_seconds_bucket{le="0.25",phase="BALANCE_LOCK",region="US"}' in text
    assert 'nexus_settlement_duration_seconds_count{flow="bridge",region="US"}' in text
    assert 'nexus_consumer_lag_messages{partition="0",topic="bridge.settlements.completed"}' in text
    assert "nexus_alertmanager_posts_total" in text
