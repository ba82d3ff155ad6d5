"""Session-wide servers for integration tests: one real Kafka broker, worker processes on demand.

Set NEXUS_KAFKA_BOOTSTRAP_SERVERS to run the suite against an existing cluster instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get("NEXUS_KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    from infra.kafka.broker import LocalKafka, find_free_ports

    port, controller_port = find_free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka") / "data")
    broker.start(timeout_s=60)
    try:
        yield broker.bootstrap
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
