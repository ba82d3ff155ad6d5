"""Alerting and monitoring for the demo: notification sink, Alertmanager, dashboard, and a scripted incident.

Standalone (starts Kafka if local, an alerting-only worker, the sink, Alertmanager and the dashboard)::

    python -m devtools.alerting_demo [--duration SECONDS]

Inside ``make run`` (``devtools/demo.py``), after the worker is ready::

    from devtools.alerting_demo import MonitoringStack, produce_incident, stop_monitoring
    stack = MonitoringStack(settings, console).start()   # prints the dashboard / Alertmanager URLs
    produce_incident(settings)                            # optional: one of each alert, within seconds
    ... Group(..., stack.render())                        # latest notifications, in the Live view
    stack.stop()                                          # in the finally block; stop_monitoring() for --stop

``run_alerting_demo(console)`` does all of it for a running platform (worker with the alerting agent).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from contracts import models as m
from contracts.examples import build
from contracts.topics import (
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    FX_RATES,
    GOVERNANCE_KEYS,
    GOVERNANCE_MULTISIG,
    Topic,
)
from dashboards.server import Dashboard
from devtools.alert_sink import Record, Sink, summarize
from infra.alertmanager.launcher import LocalAlertmanager, Timings
from streams.kafka.topic_admin import ensure_topics
from streams.settings import REPO_ROOT, Settings, get_settings


class MonitoringStack:
    """The sink (Slack / PagerDuty / SMS / SMTP stand-in), Alertmanager, and the dashboard server."""

    def __init__(self, settings: Settings, console: Console, fast: bool = True) -> None:
        self.settings = settings
        self.console = console
        self.dir = settings.data_dir / "alertmanager"
        self.sink = Sink(self.dir / "sink.jsonl", port=settings.alert_sink_port, smtp_port=settings.alert_smtp_port)
        self.fast = fast
        self.alertmanager: LocalAlertmanager | None = None
        self.dashboard = Dashboard(settings.bootstrap_servers, port=settings.dashboard_port)

    def start(self) -> MonitoringStack:
        self.sink.start()
        self.console.print(
            f"[green]✓[/] notification sink on {self.sink.url} (Slack/PagerDuty/SMS), "
            f"SMTP {self.sink.smarthost} → {self.sink.path}"
        )
        # Every receiver points at the sink (the demo never reaches real Slack / PagerDuty / SMS / mail).
        local = self.settings.model_copy(
            update={
                "alert_slack_webhook_url": f"{self.sink.url}/slack",
                "alert_pagerduty_url": f"{self.sink.url}/pagerduty",
                "alert_sms_webhook_url": f"{self.sink.url}/sms",
                "alert_smtp_smarthost": self.sink.smarthost,
            }
        )
        self.alertmanager = LocalAlertmanager(settings=local, timings=Timings.fast() if self.fast else Timings())
        self.alertmanager.stop()  # one left over by a killed demo
        took = self.alertmanager.start()
        self.console.print(f"[green]✓[/] Alertmanager ready at {self.alertmanager.url} in {took:.1f}s")
        self.dashboard.start()
        self.console.print(f"[green]✓[/] dashboard at {self.dashboard.url}/")
        return self

    @property
    def alertmanager_url(self) -> str:
        assert self.alertmanager is not None, "not started"
        return self.alertmanager.url

    def stop(self) -> None:
        self.dashboard.stop()
        if self.alertmanager is not None:
            self.alertmanager.stop()
        self.sink.stop()

    def render(self, last: int = 8) -> Table:
        table = Table(title=f"Notifications via Alertmanager (sink: {self.sink.path.name})")
        table.add_column("received")
        table.add_column("notification")
        for record in self.sink.records()[-last:]:
            table.add_row(record["received_at"][11:19], summarize(record))
        return table

    def __enter__(self) -> MonitoringStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_monitoring(settings: Settings, console: Console) -> None:
    """For ``--stop``: the Alertmanager a killed demo left running (sink and dashboard die with the demo)."""
    if LocalAlertmanager(settings=settings).stop():
        console.print("stopped Alertmanager")


def incident(now: datetime) -> list[tuple[Topic, Any]]:
    """One of each §5.2 alert: slow settlement, failures, a high FX move, an expiring key, a stuck multi-sig."""
    tag = now.strftime("%H%M%S")
    return [
        _slow_settlement(now, tag),
        *_failed_settlements(now, tag, count=25),
        *_fx_move(now, tag),
        *_governance(now, tag),
    ]


def _slow_settlement(now: datetime, tag: str) -> tuple[Topic, Any]:
    """A KR settlement whose merchant credit took 1.3 s (SettlementDelay)."""
    return (
        BRIDGE_SETTLEMENTS_COMPLETED,
        build(
            m.BridgeSettlementCompleted,
            request_id=f"demo-slow-{tag}",
            bridge_tx_id=f"BRIDGE-demo-slow-{tag}",
            payer_account_id="acct-demo-1",
            merchant_id="merchant-demo",
            region=m.Region.KR,
            currency=m.Currency.KRW,
            amount_minor=150_000,
            rate=Decimal("150"),
            rail=m.Rail.TOSS_PAYMENTS,
            provider_reference="demo",
            provider_fee_minor=0,
            cashback_kaus_units=0,
            phase_durations_ms={m.BridgePhase.MERCHANT_CREDIT: 1_300, m.BridgePhase.BALANCE_LOCK: 140},
            total_duration_ms=1_440,
            completed_at=now,
        ),
    )


def _failed_settlements(now: datetime, tag: str, count: int) -> list[tuple[Topic, Any]]:
    """US payments failing on STRIPE_INSTANT, enough of them for SettlementFailed (the same failure, ``count`` ids)."""
    failure = build(
        m.BridgeSettlementFailed,
        payer_account_id="acct-demo-2",
        region=m.Region.US,
        currency=m.Currency.USD,
        failed_phase=m.BridgePhase.MERCHANT_CREDIT,
        reason_code="PAYOUT_FAILED",
        reason="STRIPE_INSTANT did not answer",
        rail=m.Rail.STRIPE_INSTANT,
        failed_at=now,
    )
    return [
        (BRIDGE_SETTLEMENTS_FAILED, failure.model_copy(update={"request_id": f"demo-fail-{tag}-{i}"}))
        for i in range(count)
    ]


def _fx_move(now: datetime, tag: str) -> list[tuple[Topic, Any]]:
    """Two JPY quotes 0.87% apart (the FX deviation alert)."""
    quotes = ((m.FxSource.BLOOMBERG, Decimal("23.10")), (m.FxSource.REUTERS, Decimal("23.30")))
    return [
        (
            FX_RATES,
            m.FxRate(quote_id=f"demo-{tag}-{source.value}", source=source, quote=m.Currency.JPY, rate=rate, as_of=now),
        )
        for source, rate in quotes
    ]


def _governance(now: datetime, tag: str) -> list[tuple[Topic, Any]]:
    """A signing key expiring in 3 days and a multi-sig request pending for 2h05m."""
    key = build(
        m.KeyMetadata,
        key_id=f"hsm-demo-{tag}",
        created_at=now - timedelta(days=87),
        expires_at=now + timedelta(days=3),
        observed_at=now,
    )
    multisig = build(
        m.MultisigRequest,
        request_id=f"msig-demo-{tag}",
        state=m.MultisigState.PENDING,
        created_at=now - timedelta(hours=2, minutes=5),
        updated_at=now,
    )
    return [(GOVERNANCE_KEYS, key), (GOVERNANCE_MULTISIG, multisig)]


def produce_incident(settings: Settings) -> int:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5})
    records = incident(datetime.now(UTC))
    for topic, message in records:
        producer.produce(topic.name, key=topic.key_of(message), value=topic.encode(message))
    remaining = producer.flush(15)
    assert remaining == 0, f"{remaining} demo records not delivered"
    return len(records)


def run_alerting_demo(
    console: Console, settings: Settings | None = None, stack: MonitoringStack | None = None, wait_s: float = 30.0
) -> list[Record]:
    """Produce the incident and show the notifications as they arrive (needs a worker running the alerting agent)."""
    settings = settings or get_settings()
    own = stack is None
    stack = stack or MonitoringStack(settings, console).start()
    try:
        before = len(stack.sink.records())
        console.print(
            f"producing an incident: {produce_incident(settings)} records "
            "(slow KR settlement, 25 US failures, JPY moving 0.87%, a key expiring in 3 days, "
            "a multi-sig pending 2h05m)"
        )
        deadline = time.monotonic() + wait_s
        shown = before
        while time.monotonic() < deadline and len(stack.sink.records()) - before < 4:
            for record in stack.sink.records()[shown:]:
                console.print(f"  [bold]→[/] {summarize(record)}")
            shown = len(stack.sink.records())
            time.sleep(0.3)
        for record in stack.sink.records()[shown:]:
            console.print(f"  [bold]→[/] {summarize(record)}")
        console.print(
            "  (SettlementDelay for the slow KR settlement stays muted: Alertmanager inhibits it while "
            "SettlementFailed pages)"
        )
        return stack.sink.records()[before:]
    finally:
        if own:
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.alerting_demo", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=0, help="keep the dashboard up this long (0 = until Ctrl-C)")
    args = parser.parse_args(argv)
    console = Console()
    settings = get_settings()
    broker = None
    worker: subprocess.Popen[bytes] | None = None
    stack: MonitoringStack | None = None
    try:
        if settings.local_kafka:
            from infra.kafka.broker import LocalKafka

            broker = LocalKafka(port=settings.kafka_port, controller_port=settings.kafka_controller_port)
            console.print(f"[green]✓[/] Kafka ready on {broker.bootstrap} in {broker.start(reuse=True):.1f}s")
        ensure_topics(settings)
        stack = MonitoringStack(settings, console).start()
        log_path = settings.data_dir / "alertmanager" / "alerting-worker.log"
        env = dict(
            os.environ,
            NEXUS_KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
            NEXUS_APP_ID="nexus-alerting-demo",
            NEXUS_ALERTMANAGER_URL=stack.alertmanager_url,
            PYTHONUNBUFFERED="1",
        )
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streams.alerting.worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO_ROOT,
            )
        deadline = time.monotonic() + 90
        while "Worker ready" not in Path(log_path).read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the alerting worker did not start; see {log_path}")
            time.sleep(0.2)
        console.print(f"[green]✓[/] alerting worker ready (log: {log_path})")
        run_alerting_demo(console, settings, stack)
        console.print(f"dashboard: {stack.dashboard.url}/ — Alertmanager: {stack.alertmanager_url} — Ctrl-C stops")
        started = time.monotonic()
        while not args.duration or time.monotonic() - started < args.duration:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, 15)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, 9)
        if stack is not None:
            stack.stop()
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
