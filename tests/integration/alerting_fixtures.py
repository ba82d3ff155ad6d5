"""The alerting stack for end-to-end tests: own Kafka broker, recording sink (HTTP + SMTP), real Alertmanager, worker.

The e2e tests count notifications exactly, so the stack does not share the session broker (other tests'
settlements and governance records would fire alerts of their own). Everything binds free ports and is
stopped at the end of the module.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.alert_sink import Record, Sink
from infra.alertmanager.launcher import LocalAlertmanager, Timings
from streams.settings import REPO_ROOT, Settings
from tests.support import schema_check
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

RULES_FILE = REPO_ROOT / "streams" / "alerting" / "rules.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fast_rules(tmp: Path) -> Path:
    """The shipped rules, thresholds and windows unchanged; evaluated every 250 ms and re-posted every 2 s."""
    text = RULES_FILE.read_text()
    for old, new in (
        ('evaluate_every = "1s"', 'evaluate_every = "250ms"'),
        ('repost_every = "1m"', 'repost_every = "2s"'),
    ):
        assert old in text, f"{RULES_FILE} no longer contains {old!r}"
        text = text.replace(old, new)
    path = tmp / "rules.toml"
    path.write_text(text)
    return path


@dataclass
class AlertingWorker(WorkerProcess):
    """A worker process running only the alerting agent (python -m streams.alerting.worker)."""

    module: str = "streams.alerting.worker"
    cwd: Path | None = REPO_ROOT


def classify(record: Record) -> tuple[str, str, str]:
    """(channel, alertname, firing|resolved) read back from each receiver's own payload format."""
    channel: str = record["channel"]
    body: Any = record.get("body")
    if channel == "slack":
        title = body["attachments"][0]["title"]  # "[FIRING:1] SettlementDelay · KR"
        status = "firing" if title.startswith("[FIRING") else "resolved"
        return channel, title.split("] ", 1)[1].split(" · ")[0], status
    if channel == "pagerduty":
        status = {"trigger": "firing", "resolve": "resolved"}[body["event_action"]]
        return channel, body["payload"]["custom_details"]["alertname"], status
    if channel == "email":
        subject = record["subject"]  # "[NEXUS-X FIRING] HighVolume (1 alert)"
        status = "firing" if "FIRING" in subject.split("]")[0] else "resolved"
        return channel, subject.split("] ", 1)[1].split(" (")[0], status
    if channel == "sms":
        return channel, body["commonLabels"]["alertname"], body["status"]
    raise AssertionError(f"unexpected notification {record}")


@dataclass
class AlertingStack:
    kafka: KafkaIO
    sink: Sink
    alertmanager: LocalAlertmanager
    worker: AlertingWorker
    timings: Timings
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.worker.web_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.worker.metrics_port}/metrics"

    def state(self) -> dict[str, Any]:
        response = self.http.get(f"{self.web_url}/alerting/state/")
        response.raise_for_status()
        return dict(response.json())

    def advance(self, seconds: float) -> dict[str, Any]:
        """Move the engine clock forward and evaluate at once (the worker's test-only clock endpoint)."""
        response = self.http.post(f"{self.web_url}/alerting/clock/", json={"advance_s": seconds})
        response.raise_for_status()
        return dict(response.json())

    def now(self) -> datetime:
        """The engine's 'now' (wall clock + the offset the tests have advanced)."""
        return datetime.now(UTC) + timedelta(seconds=self.state()["offset_s"])

    def wait_state(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        state = self.state()
        while not predicate(state):
            if time.monotonic() > deadline:
                raise AssertionError(f"worker state not reached in {timeout_s}s: {state}")
            time.sleep(0.1)
            state = self.state()
        return state

    def wait_received(self, topic: str, at_least: int, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.wait_state(lambda s: s["received"].get(topic, 0) >= at_least, timeout_s)

    def notifications(self, since: int = 0) -> list[tuple[str, str, str]]:
        return [classify(r) for r in self.sink.records()[since:]]

    def records(self, since: int = 0) -> list[Record]:
        return self.sink.records()[since:]

    def wait_notifications(
        self, expected: dict[tuple[str, str, str], int], since: int, timeout_s: float = 20.0
    ) -> list[tuple[str, str, str]]:
        """Wait until each (channel, alertname, status) arrived at least its count since record index ``since``."""

        def done(records: list[Record]) -> bool:
            seen = [classify(r) for r in records[since:]]
            return all(seen.count(key) >= n for key, n in expected.items())

        self.sink.wait_for(done, timeout_s)
        return self.notifications(since)

    def metrics_text(self) -> str:
        response = self.http.get(self.metrics_url)
        response.raise_for_status()
        return response.text


@pytest.fixture(scope="module")
def alerting_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertingStack]:
    from infra.kafka.broker import LocalKafka

    tmp = tmp_path_factory.mktemp("alerting")
    broker = LocalKafka(port=free_port(), controller_port=free_port(), data_dir=tmp / "kafka")
    broker.start(timeout_s=90)
    sink = alertmanager = worker = None
    try:
        kafka = KafkaIO(broker.bootstrap)
        kafka.ensure_topics()
        sink = Sink(tmp / "sink.jsonl", port=0, smtp_port=0).start()
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap,
            alert_slack_webhook_url=f"{sink.url}/slack",
            alert_pagerduty_url=f"{sink.url}/pagerduty",
            alert_sms_webhook_url=f"{sink.url}/sms",
            alert_smtp_smarthost=sink.smarthost,
        )
        timings = Timings.fast()
        alertmanager = LocalAlertmanager(
            port=free_port(), data_dir=tmp / "alertmanager", settings=settings, timings=timings
        )
        alertmanager.start()
        worker = AlertingWorker(
            bootstrap=broker.bootstrap,
            app_id="nexus-alerting-test",
            data_dir=tmp / "worker",
            web_port=free_port(),
            metrics_port=free_port(),
            extra_env={
                "NEXUS_ALERTMANAGER_URL": alertmanager.url,
                "NEXUS_ALERTING_RULES_FILE": str(fast_rules(tmp)),
                "NEXUS_ALERTING_CLOCK_CONTROL": "true",
                "NEXUS_ALERTING_LAG_INTERVAL_S": "1",
            },
        )
        worker.start(timeout_s=90)
        stack = AlertingStack(kafka, sink, alertmanager, worker, timings)
        stack.wait_state(lambda s: True)
        yield stack
        stack.http.close()
        worker.stop()  # its last records written: then every record on this broker must match its schema
        schema_check.verify(broker.bootstrap, "the alerting stack's broker")
    finally:
        if worker is not None:
            worker.stop()
        if alertmanager is not None:
            alertmanager.stop()
        if sink is not None:
            sink.stop()
        broker.stop()
