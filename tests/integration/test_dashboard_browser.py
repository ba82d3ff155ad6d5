"""The §5.1 dashboard in headless Chromium: every panel shows the figures of the seeded settlements and payouts.

Settlements are produced to the session broker with event times on a pinned day in 2031 and the
dashboard's clock is pinned to that day, so records other tests leave on the shared topics (event times
now) fall outside every window. The page is loaded twice by the real browser: ``--dump-dom`` after its
JavaScript fetched ``/api/summary`` (the panel texts are checked), then ``--screenshot`` (tall enough for the
payout panels), saved to ``artifacts/dashboard.png`` (and copied to ``dashboards/screenshot.png``).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from contracts import models as m
from contracts.examples import build
from contracts.topics import (
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    ENERGY_SETTLEMENTS,
    MONITORING_ALERTS,
    NOTIFICATIONS_DELIVERIES,
    PAYOUT_RESULTS,
    PAYOUT_WAITING,
)
from dashboards.server import Dashboard
from domain.money import Money, kaus_to_decimal
from streams.settings import REPO_ROOT
from tests.support.kafka_io import KafkaIO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")]

NOW = datetime(2031, 3, 1, 15, 0, tzinfo=UTC)
# Spec §2.2 rail table: region -> (currency, rail); counts shaped like the spec's example panel.
REGIONS = {
    m.Region.US: (m.Currency.USD, m.Rail.STRIPE_INSTANT, 390),
    m.Region.KR: (m.Currency.KRW, m.Rail.TOSS_PAYMENTS, 214),
    m.Region.EU: (m.Currency.EUR, m.Rail.STRIPE_SEPA, 157),
    m.Region.JP: (m.Currency.JPY, m.Rail.PAYPAY_BUSINESS, 99),
    m.Region.AU: (m.Currency.AUD, m.Rail.STRIPE_AU, 123),
    m.Region.SG: (m.Currency.SGD, m.Rail.STRIPE_ASIA, 57),
    m.Region.HK: (m.Currency.HKD, m.Rail.STRIPE_HK, 45),
    m.Region.AE: (m.Currency.AED, m.Rail.PAYFORT, 23),
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def seed(run_id: str) -> tuple[list[m.BridgeSettlementCompleted], list[m.BridgeSettlementFailed], list[m.TradeSettled]]:
    completed: list[m.BridgeSettlementCompleted] = []
    n = 0
    for region, (currency, rail, count) in REGIONS.items():
        for i in range(count):
            n += 1
            at = NOW - timedelta(minutes=(n * 7) % (23 * 60))  # spread over the last 23 h (some before midnight)
            total = 380 + (n * 37) % 240  # 380..619 ms
            completed.append(
                build(
                    m.BridgeSettlementCompleted,
                    request_id=f"{run_id}-{region.value}-{i}",
                    bridge_tx_id=f"BRIDGE-{run_id}-{n}",
                    region=region,
                    currency=currency,
                    kaus_debited_units=1_000_000_000 + n * 1_000,
                    rail=rail,
                    phase_durations_ms={m.BridgePhase.MERCHANT_CREDIT: total - 100, m.BridgePhase.BALANCE_LOCK: 100},
                    total_duration_ms=total,
                    completed_at=at,
                )
            )
    # outside the 24 h window: must not count anywhere
    completed.append(
        completed[0].model_copy(update={"request_id": f"{run_id}-old", "completed_at": NOW - timedelta(hours=30)})
    )
    failed = [
        build(
            m.BridgeSettlementFailed,
            request_id=f"{run_id}-f{i}",
            region=m.Region.KR,
            currency=m.Currency.KRW,
            failed_phase=m.BridgePhase.MERCHANT_CREDIT,
            reason_code="PAYOUT_FAILED",
            failed_at=NOW - timedelta(hours=i + 1),
        )
        for i in range(3)
    ]
    trades = [
        build(
            m.TradeSettled,
            trade_id=f"{run_id}-t{i}",
            market_id="2031-03-01T10:00Z/KR-SEOUL",
            notional_kaus_units=375_000_000,
            phase_durations_us={"matching": 35_000},
            settled_at=NOW - timedelta(minutes=10 + i),
        )
        for i in range(250)
    ]
    return completed, failed, trades


def seed_payouts(
    run_id: str, completed: list[m.BridgeSettlementCompleted]
) -> tuple[list[m.PayoutResult], list[m.PayoutWaiting], list[m.NotificationDelivery]]:
    """Every 25th bridge settlement in the window settles a holder's payout (it gets a payout_id and a PAID result;
    every other one of them waited for KYC first); three payouts failed, four are still waiting; an e-mail for each
    result, an SMS that could not be delivered."""
    results: list[m.PayoutResult] = []
    waits: list[m.PayoutWaiting] = []
    for i in range(0, len(completed) - 1, 25):  # the last one is outside the window
        c = completed[i] = completed[i].model_copy(update={"payout_id": f"{run_id}-po{i}"})
        results.append(
            build(
                m.PayoutResult,
                payout_id=c.payout_id,
                currency=c.currency,
                amount_minor=c.amount_minor + i,
                kaus_debited_units=c.kaus_debited_units,
                rail=c.rail,
                completed_at=c.completed_at,
            )
        )
        if i % 50 == 0:
            waits.append(
                build(m.PayoutWaiting, payout_id=c.payout_id, waiting_since=c.completed_at - timedelta(hours=1))
            )
    for i, code in enumerate(("PAYOUT_FAILED", "PAYOUT_FAILED", "PROVIDER_DECLINED")):
        results.append(
            build(
                m.PayoutResult,
                payout_id=f"{run_id}-pf{i}",
                status=m.PayoutStatus.FAILED,
                kaus_debited_units=None,
                reason_code=code,
                failed_phase=m.BridgePhase.MERCHANT_CREDIT,
                completed_at=NOW - timedelta(minutes=30 + i),
            )
        )
    for i, code in enumerate(("KYC_PENDING", "KYC_PENDING", "KYC_PENDING", "KYC_REJECTED")):
        waits.append(
            build(
                m.PayoutWaiting, payout_id=f"{run_id}-pw{i}", reason_code=code, waiting_since=NOW - timedelta(hours=i)
            )
        )
    deliveries = [
        build(
            m.NotificationDelivery,
            notification_id=f"{r.payout_id}:{'PAYOUT_COMPLETED' if r.reason_code is None else 'PAYOUT_FAILED'}:EMAIL",
            delivered_at=r.completed_at,
        )
        for r in results
    ]
    deliveries.append(
        build(
            m.NotificationDelivery,
            notification_id=f"{run_id}-pf0:PAYOUT_FAILED:SMS",
            channel=m.NotificationChannel.SMS,
            status=m.DeliveryStatus.UNDELIVERED,
            attempts=5,
            delivered_at=NOW - timedelta(minutes=29),
        )
    )
    return results, waits, deliveries


def chromium(url: str, tmp: Path, *args: str) -> str:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args, url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def panel_text(dom: str, panel: str) -> str:
    match = re.search(rf'<article[^>]*id="{panel}".*?</article>', dom, re.S)
    assert match, f"panel {panel} missing from the page"
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(0)))


def words(text: str) -> str:
    return " ".join(text.split())


def test_dashboard_panels_show_the_platform_numbers(kafka_bootstrap: str, run_id: str, tmp_path: Path) -> None:
    completed, failed, trades = seed(run_id)
    results, waits, deliveries = seed_payouts(run_id, completed)
    io = KafkaIO(kafka_bootstrap)
    io.ensure_topics()
    io.produce_messages(PAYOUT_RESULTS, results)
    io.produce_messages(PAYOUT_WAITING, waits)
    io.produce_messages(NOTIFICATIONS_DELIVERIES, deliveries)
    io.produce_messages(BRIDGE_SETTLEMENTS_COMPLETED, completed)
    io.produce_messages(BRIDGE_SETTLEMENTS_FAILED, failed)
    io.produce_messages(ENERGY_SETTLEMENTS, trades)
    io.produce_messages(
        MONITORING_ALERTS,
        [
            build(
                m.Alert,
                fingerprint=f"dash-{run_id}",
                rule="SettlementFailed",
                state=m.AlertState.FIRING,
                channel="pagerduty",
                summary="3 settlement(s) failed in the last 5m (region: KR 3; reason_code: PAYOUT_FAILED 3)",
                labels={"escalation": "immediate"},
                value="3",
                starts_at=NOW - timedelta(minutes=2),
            )
        ],
    )

    # What the panels must say, computed here from the seed.
    in_day = [c for c in completed if c.completed_at > NOW - timedelta(hours=24)]
    midnight = NOW.replace(hour=0, minute=0)
    volume = (sum(c.kaus_debited_units for c in in_day) + sum(t.notional_kaus_units for t in trades)) / 1e6
    today = sum(1 for c in in_day if c.completed_at >= midnight) + len(trades)
    avg_ms = sum(c.total_duration_ms for c in in_day) / len(in_day)
    rate = 100 * len(in_day) / (len(in_day) + len(failed))
    usd_share = 100 * REGIONS[m.Region.US][2] / len(in_day)
    assert 1e6 <= volume < 2e6 and today < len(in_day) + len(trades)  # the seed spans midnight
    paid = [r for r in results if r.status is m.PayoutStatus.PAID]
    fiat: dict[m.Currency, int] = {}
    for r in paid:
        fiat[r.currency] = fiat.get(r.currency, 0) + r.amount_minor
    kaus = kaus_to_decimal(sum(r.kaus_debited_units or 0 for r in paid))
    payout_ms = [c.total_duration_ms for c in in_day if c.payout_id is not None]
    assert len(payout_ms) == len(paid) and any(w.payout_id == paid[0].payout_id for w in waits)

    dashboard = Dashboard(kafka_bootstrap, clock=lambda: NOW).start()
    try:
        deadline = time.monotonic() + 30
        summary = httpx.get(f"{dashboard.url}/api/summary").json()
        while summary["bridge_completed_24h"] < len(in_day) and time.monotonic() < deadline:
            time.sleep(0.2)
            summary = httpx.get(f"{dashboard.url}/api/summary").json()
        assert summary["bridge_completed_24h"] == len(in_day)
        # ready once every topic it follows was read up to where it ended at start (the bridge's figures can be
        # complete before the last of the others, on a busy machine)
        while httpx.get(f"{dashboard.url}/healthz").text != "ok" and time.monotonic() < deadline + 60:
            time.sleep(0.2)
        assert httpx.get(f"{dashboard.url}/healthz").text == "ok", dashboard.tail.errors

        dom = chromium(f"{dashboard.url}/", tmp_path, "--dump-dom")
        assert 'data-loaded="true"' in dom, "the page's script did not render the summary"
        assert words(panel_text(dom, "panel-volume")) == f"24H Volume {volume / 1e6:.1f}M K-AUS"
        assert words(panel_text(dom, "panel-today")) == f"Settlements Today {today:,} txns"
        assert words(panel_text(dom, "panel-latency")) == f"Avg Settlement Time {avg_ms:.0f}ms target: 650ms"
        success = words(panel_text(dom, "panel-success"))
        assert success == f"Settlement Success Rate {rate:.2f}% {len(in_day):,} completed · {len(failed)} failed"
        currency = words(panel_text(dom, "panel-currency"))
        assert currency.startswith(f"Currency Breakdown USD {usd_share:.0f}% KRW")
        assert all(c.value in currency for c in (m.Currency.EUR, m.Currency.JPY, m.Currency.AED))
        bridges = words(panel_text(dom, "panel-bridges"))
        expected = " ".join(f"{r.value}: {n:,}" for r, (_c, _r, n) in REGIONS.items())
        assert bridges == "Active Bridges " + " ".join(f"{r.value}: {REGIONS[r][2]:,}" for r in m.Region), expected

        alerts = words(panel_text(dom, "panel-alerts"))
        assert "SettlementFailed → pagerduty: 3 settlement(s) failed in the last 5m" in alerts

        payouts = words(panel_text(dom, "panel-payouts"))
        assert payouts == (
            f"Payouts · 24h {len(paid)} paid 3 failed 4 waiting failed PAYOUT_FAILED 2 failed PROVIDER_DECLINED 1 "
            "waiting KYC_PENDING 3 waiting KYC_REJECTED 1"
        )
        paid_out = words(panel_text(dom, "panel-paid-out"))
        amounts = " ".join(f"{c.value} {Money(n, c).to_decimal():,}" for c, n in sorted(fiat.items()))
        mean_ms = sum(payout_ms) / len(payout_ms)
        assert paid_out == f"Paid Out · 24h {kaus:,} K-AUS avg payout time {mean_ms:.0f}ms {amounts}"
        notes = words(panel_text(dom, "panel-notifications"))
        emails = len(results)
        assert notes == f"Holder Notifications · 24h delivered undelivered EMAIL {emails} 0 SMS 0 1 PUSH 0 0"

        artifacts = REPO_ROOT / "artifacts"
        artifacts.mkdir(exist_ok=True)
        shot = artifacts / "dashboard.png"
        shot.unlink(missing_ok=True)
        chromium(f"{dashboard.url}/", tmp_path, f"--screenshot={shot}", "--window-size=1280,1010")
        assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        shutil.copyfile(shot, REPO_ROOT / "dashboards" / "screenshot.png")
    finally:
        dashboard.stop()
