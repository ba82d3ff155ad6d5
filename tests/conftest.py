"""Session-wide servers for integration tests: one real Kafka broker, worker processes on demand.

Set NEXUS_KAFKA_BOOTSTRAP_SERVERS to run the suite against an existing cluster instead.

Before the broker stops, every record the platform wrote on it is validated against its published JSON Schema
(tests/support/schema_check.py); an invalid one fails the run at the session's teardown, and the terminal summary
says how many records of each topic were checked. On an existing cluster only the records written since the
session started are checked.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import schema_check
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

# The ledger's epoch timer would declare yesterday's dividend epoch in every test that starts a ledger: off unless
# a test turns it on (tests/integration/test_dividend_epochs_e2e.py). Worker processes inherit it.
os.environ.setdefault("NEXUS_DIVIDEND_TIMER_EVERY_S", "0")

# CI draws the same property-test examples on every run, so a red CI is reproducible and a green one is not luck;
# a developer's runs draw new examples, which is where new counter-examples come from.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("NEXUS_KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        written_from = schema_check.end_offsets(existing)  # what was there before this session is not ours
        yield existing
        schema_check.verify(existing, f"cluster {existing}, records written by this session", written_from)
        return
    from infra.kafka.broker import LocalKafka, find_free_ports

    port, controller_port = find_free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka") / "data")
    broker.start(timeout_s=60)
    try:
        yield broker.bootstrap
        # Runs once the last test is done (every worker_factory worker is stopped by then), before the stop.
        schema_check.verify(broker.bootstrap, "the session broker")
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka(kafka_bootstrap: str) -> KafkaIO:
    io = KafkaIO(kafka_bootstrap)
    io.ensure_topics()
    return io


@pytest.fixture
def run_id() -> str:
    """A unique token for ids so tests sharing the session broker never read each other's data."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def worker_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[type[WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(app_id: str | None = None, module: str = "streams.worker", **env: str) -> WorkerProcess:
        proc = WorkerProcess(
            bootstrap=kafka_bootstrap,
            app_id=app_id or f"nexus-test-{uuid.uuid4().hex[:8]}",
            data_dir=tmp_path / "worker",
            web_port=free_port(),
            metrics_port=free_port(),
            extra_env={f"NEXUS_{name.upper()}": value for name, value in env.items()},
            module=module,
        )
        proc.start()
        started.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in started:
        proc.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if schema_check.REPORTS:
        terminalreporter.section("records checked against contracts/schemas")
        for report in schema_check.REPORTS:
            terminalreporter.write_line(report.summary())
