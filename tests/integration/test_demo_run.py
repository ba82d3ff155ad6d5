"""Issue 2 acceptance: the run command brings the stack up, shows events flowing, and stops cleanly
(no broker, worker, Alertmanager or dashboard process left behind)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from infra.kafka.broker import find_free_ports

pytestmark = pytest.mark.slow


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_streams_events_and_leaves_nothing_running(tmp_path: Path) -> None:
    ports = find_free_ports(9)
    names = ["KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "WORKER_WEB_PORT", "METRICS_PORT", "ALERTMANAGER_PORT",
             "ALERT_SINK_PORT", "ALERT_SMTP_PORT", "DASHBOARD_PORT", "PROVIDER_SIM_PORT"]
    env = {k: v for k, v in os.environ.items() if k != "NEXUS_KAFKA_BOOTSTRAP_SERVERS"}
    env.update({f"NEXUS_{name}": str(port) for name, port in zip(names, ports, strict=True)})
    env.update(NEXUS_ALERTMANAGER_URL=f"http://127.0.0.1:{ports[4]}", NEXUS_DATA_DIR=str(tmp_path),
               NEXUS_APP_ID="demo-test", COLUMNS="160")
    run = subprocess.run([sys.executable, "-m", "streams.demo", "--duration", "20", "--rate", "200"], env=env,
                         capture_output=True, text=True, timeout=300)
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "Kafka broker ready" in out and "Faust worker ready" in out
    assert "→ energy.trades" in out and "→ energy.settlements" in out
    assert "Latest dead letters" in out and "MALFORMED_JSON" in out
    assert "High-Speed Bridge" in out and "settled" in out
    assert "stopped the worker and the broker" in out
    for port in ports:
        assert not _port_open(port), f"something still listens on {port} after the demo stopped"
    assert not (tmp_path / "run" / "worker.pid").exists()
