"""Worker processes for the Kafka benches: start one and wait until it is ready; stop them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

READY_MARK = "Worker ready"


def start_worker(module: str, env: dict[str, str], log_path: Path, timeout_s: float = 120.0) -> subprocess.Popen[bytes]:
    """`python -m module` in its own process group; returns once its log says it is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while READY_MARK not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_workers([proc])
            raise RuntimeError(f"{module} did not become ready:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return proc


def start_role_workers(
    module: str, env: dict[str, str], roles: list[str], app_id: str, web_port: int, log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """One worker per role (a comma-separated agent list), each its own consumer group and web port."""
    return [
        start_worker(
            module,
            dict(
                env,
                NEXUS_AGENTS=role,
                NEXUS_APP_ID=f"{app_id}-{i}",
                NEXUS_WORKER_INSTANCE_ID=f"bench-{i}",
                NEXUS_WORKER_WEB_PORT=str(web_port + i),
            ),
            log_dir / f"worker-{i}.log",
        )
        for i, role in enumerate(roles)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout_s: float = 20.0) -> None:
    """SIGTERM each process group, SIGKILL what is still there after ``timeout_s``."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
