"""The demo's environment for tests: every port free, its own data dir, no setting inherited from the shell."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from infra.kafka.broker import find_free_ports
from infra.processes import port_bindable

STREAMING = "press Ctrl-C to stop"
PORT_SETTINGS = [
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "STANDBY_KAFKA_PORT",  # the standby region's broker (devtools/standby_demo.py); MirrorMaker 2 listens on none
    "STANDBY_KAFKA_CONTROLLER_PORT",
    "STANDBY_MONITOR_PORT",  # the replication delay's /metrics (infra/kafka/replication_monitor.py)
    "WORKER_WEB_PORT",
    "METRICS_PORT",  # the first of METRICS_PORTS consecutive ports: one per process serving /metrics
    "ALERTMANAGER_PORT",
    "ALERT_SINK_PORT",
    "ALERT_SMTP_PORT",
    "DASHBOARD_PORT",
    "PROVIDER_SIM_PORT",
    "KYC_PORT",
    "KYC_SIMULATOR_PORT",  # not a setting: NEXUS_KYC_APPLICANT_API_URL below
    "API_PORT",  # the settlement API (streams/api/settings.py)
    "PROMETHEUS_PORT",
]
METRICS_PORTS = 8  # devtools/demo.py gives each process serving /metrics a port from NEXUS_METRICS_PORT up


def demo_env(data_dir: Path, app_id: str) -> tuple[dict[str, str], list[int]]:
    """The environment and the ports (in PORT_SETTINGS order), so a test's demo never meets a developer's."""
    ports = find_free_ports(len(PORT_SETTINGS))
    ports[PORT_SETTINGS.index("METRICS_PORT")] = free_port_block(METRICS_PORTS, avoid=set(ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_") and k != "F_WEB_BIND"}
    env.update({f"NEXUS_{name}": str(port) for name, port in zip(PORT_SETTINGS, ports, strict=True)})
    env.update(
        NEXUS_ALERTMANAGER_URL=f"http://127.0.0.1:{ports[PORT_SETTINGS.index('ALERTMANAGER_PORT')]}",
        NEXUS_KYC_APPLICANT_API_URL=f"http://127.0.0.1:{ports[PORT_SETTINGS.index('KYC_SIMULATOR_PORT')]}",
        NEXUS_DATA_DIR=str(data_dir),
        NEXUS_APP_ID=app_id,
        COLUMNS="160",
    )
    return env, ports


def free_port_block(count: int, avoid: set[int], tries: int = 200) -> int:
    """The first of ``count`` consecutive ports free right now on loopback (none of them in ``avoid``)."""
    for _ in range(tries):
        first = random.randrange(20_000, 30_000)  # below the kernel's ephemeral range: no client socket takes one
        block = range(first, first + count)
        if not avoid.intersection(block) and all(port_bindable(port) for port in block):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found in {tries} tries")


def start_demo(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The demo in its own process group (as a terminal would run it), its output readable line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def read_until_streaming(demo: subprocess.Popen[str], timeout_s: float) -> str:
    """The demo's output until it says it streams (or ends, or `timeout_s` passes): the caller asserts on it."""
    assert demo.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout_s
    while STREAMING not in seen and time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        seen += line
    return seen
