"""Each platform alert fires and resolves through the real Prometheus and the real Alertmanager.

The scraped worker is this test process's own ``streams.ops`` endpoint (the registry every worker serves); the
test moves its series (lag, dead letters written through ``ingress``, live breakers, snapshot age) and watches
the notifications arrive at the recording sink on the route each alert names. Prometheus scrapes and evaluates
every second with shortened thresholds (``Tuning``); Alertmanager has the test timings.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from devtools.alert_sink import Record, Sink
from domain.rails import CircuitBreaker, Rail
from infra.alertmanager.launcher import LocalAlertmanager, Timings
from infra.kafka.replication_monitor import ReplicationMonitor
from infra.prometheus.launcher import LocalPrometheus, Target
from infra.prometheus.rules import Tuning
from streams.kafka import ingress
from streams.ops import health, metrics
from streams.settings import Settings
from tests.integration.alerting_fixtures import classify
from tests.support.kafka_io import KafkaIO

pytestmark = [pytest.mark.slow]

TUNING = Tuning(
    worker_down_for="0s",
    lag_messages_max=100,
    lag_for="0s",
    deadletter_window="10s",
    deadletters_per_window_max=2,
    deadletter_for="0s",
    breaker_open_for="0s",
    snapshot_age_max_s=60,
    snapshot_for="0s",
    standby_delay_max_s=3,
    standby_delay_for="0s",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def notice(record: Record) -> tuple[str, str, str]:
    """(channel, alertname, firing|resolved); the dead man's switch gets Alertmanager's webhook JSON."""
    if record.get("path") == "/deadmansswitch":
        return "deadmansswitch", record["body"]["commonLabels"]["alertname"], record["body"]["status"]
    return classify(record)


@dataclass
class PlatformStack:
    sink: Sink
    alertmanager: LocalAlertmanager
    prometheus: LocalPrometheus
    worker: health.Ops
    flaky_port: int

    def wait(self, expected: tuple[str, str, str], since: int, timeout_s: float = 40.0) -> int:
        """Wait for ``expected`` among the notifications after index ``since``; the index after it."""

        def arrived(records: list[Record]) -> bool:
            return expected in [notice(r) for r in records[since:]]

        records = self.sink.wait_for(arrived, timeout_s)
        return len(records)

    def mark(self) -> int:
        return len(self.sink.records())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformStack]:
    tmp = tmp_path_factory.mktemp("platform-alerts")
    sink = Sink(tmp / "sink.jsonl", port=0, smtp_port=0).start()
    alertmanager = prometheus = None
    worker = health.Ops("platform-test")
    try:
        settings = Settings(
            alert_slack_webhook_url=f"{sink.url}/slack",
            alert_pagerduty_url=f"{sink.url}/pagerduty",
            alert_sms_webhook_url=f"{sink.url}/sms",
            alert_smtp_smarthost=sink.smarthost,
            alert_deadmansswitch_url=f"{sink.url}/deadmansswitch",
        )
        timings = Timings(**{**Timings.fast().__dict__, "repeat_watchdog": "2s"})
        alertmanager = LocalAlertmanager(
            port=free_port(), data_dir=tmp / "alertmanager", settings=settings, timings=timings
        )
        alertmanager.start()
        worker_port, flaky_port = free_port(), free_port()
        assert health.serve(worker, worker_port)
        prometheus = LocalPrometheus(
            targets=[Target("platform-test", f"127.0.0.1:{worker_port}"), Target("flaky", f"127.0.0.1:{flaky_port}")],
            alertmanager_url=alertmanager.url,
            port=free_port(),
            data_dir=tmp / "prometheus",
            settings=settings,
            interval="1s",
            resend_delay="1s",
            tuning=TUNING,
        )
        prometheus.start()
        yield PlatformStack(sink, alertmanager, prometheus, worker, flaky_port)
    finally:
        metrics.clear_refreshers()
        worker.stop()
        if prometheus is not None:
            prometheus.stop()
        if alertmanager is not None:
            alertmanager.stop()
        sink.stop()


def test_worker_down_pages_and_resolves_when_it_answers_again(stack: PlatformStack) -> None:
    since = stack.mark()  # "flaky" answers nothing yet: down from the first scrape
    stack.wait(("pagerduty", "NexusWorkerDown", "firing"), 0)
    flaky = health.Ops("flaky")
    assert health.serve(flaky, stack.flaky_port)
    try:
        stack.wait(("pagerduty", "NexusWorkerDown", "resolved"), since)
    finally:
        flaky.stop()


def test_consumer_lag_too_high_fires_and_resolves(stack: PlatformStack) -> None:
    since = stack.mark()
    metrics.set_consumer_lag("test.platform.lag", 0, 500)
    since = stack.wait(("slack", "NexusConsumerLagHigh", "firing"), since)
    metrics.set_consumer_lag("test.platform.lag", 0, 3)
    stack.wait(("slack", "NexusConsumerLagHigh", "resolved"), since)


def test_dead_letter_rate_fires_and_resolves_once_the_window_passes(stack: PlatformStack) -> None:
    since = stack.mark()
    metrics.DEADLETTERS_WRITTEN.labels("test.platform.dl", "MALFORMED_JSON")  # the series exists at 0 first
    time.sleep(2.5)
    rejected = ingress.Rejected("MALFORMED_JSON", "not JSON", [])
    for offset in range(5):  # dead letters as every component writes them
        ingress.dead_letter_outputs(ingress.Origin("test.platform.dl", 0, offset), b"k", b"{", rejected)
    since = stack.wait(("slack", "NexusDeadLetterRate", "firing"), since)
    stack.wait(("slack", "NexusDeadLetterRate", "resolved"), since)  # none more: the 10 s window empties


def test_an_open_breaker_fires_and_resolves_when_it_closes(stack: PlatformStack) -> None:
    since = stack.mark()
    breakers = {Rail.STRIPE_INSTANT: CircuitBreaker(opened_at_ms=int(time.time() * 1000), cooldown_ms=600_000)}
    metrics.add_refresher(metrics.breaker_refresher(lambda: breakers))
    since = stack.wait(("slack", "NexusBreakerOpen", "firing"), since)
    breakers[Rail.STRIPE_INSTANT] = CircuitBreaker()  # a probe succeeded: closed
    stack.wait(("slack", "NexusBreakerOpen", "resolved"), since)


def test_a_ledger_snapshot_too_old_fires_and_resolves(stack: PlatformStack) -> None:
    since = stack.mark()
    metrics.set_snapshot_age("test.platform.snapshots", 0, 120)
    since = stack.wait(("email", "NexusLedgerSnapshotTooOld", "firing"), since)
    metrics.set_snapshot_age("test.platform.snapshots", 0, 1)
    stack.wait(("email", "NexusLedgerSnapshotTooOld", "resolved"), since)


def test_a_standby_that_stops_receiving_pages_and_resolves_once_it_has_the_records(
    stack: PlatformStack, kafka_bootstrap: str, kafka: KafkaIO
) -> None:
    """The real monitor on the session broker as the primary: with the standby unreachable nothing counts as copied
    and the delay grows past the RPO; pointed at a standby holding every record (the primary itself), it resolves."""
    topic = f"test.replication.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept: a client collected drops its futures
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    kafka.produce_acked(topic, b"k", b"a record the standby lacks")
    since = stack.mark()
    monitor = ReplicationMonitor(kafka_bootstrap, f"127.0.0.1:{free_port()}", interval_s=1.0, timeout_s=3.0).start()
    try:
        since = stack.wait(("pagerduty", "NexusStandbyReplicationBehind", "firing"), since, timeout_s=60)
        assert monitor.delays[(topic, 0)] > TUNING.standby_delay_max_s and monitor.error is not None
        monitor.standby = kafka_bootstrap  # a standby with every record of the primary
        stack.wait(("pagerduty", "NexusStandbyReplicationBehind", "resolved"), since, timeout_s=60)
        assert monitor.delays[(topic, 0)] == 0.0
    finally:
        monitor.stop()


def test_the_watchdog_keeps_pinging_the_dead_mans_switch_until_prometheus_stops(stack: PlatformStack) -> None:
    since = stack.wait(("deadmansswitch", "Watchdog", "firing"), 0)
    stack.wait(("deadmansswitch", "Watchdog", "firing"), since)  # re-sent: the switch hears it repeatedly
    since = stack.mark()
    assert stack.prometheus.stop()
    stack.wait(("deadmansswitch", "Watchdog", "resolved"), since)  # silence from here on is what pages
