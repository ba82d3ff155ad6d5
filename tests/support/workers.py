"""Run a worker (`python -m streams.worker`, or the plain loop) as a real OS process (so tests can SIGKILL it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_MARK = "Worker ready"


@dataclass
class WorkerProcess:
    bootstrap: str
    app_id: str
    data_dir: Path
    web_port: int
    metrics_port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    module: str = "streams.worker"  # or "streams.p2p": the same services without Faust
    cwd: Path | None = None  # the process's working directory (None: the test's)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"worker-{self.app_id}.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            NEXUS_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            NEXUS_APP_ID=self.app_id,
            NEXUS_WORKER_WEB_PORT=str(self.web_port),
            NEXUS_METRICS_PORT=str(self.metrics_port),
            NEXUS_DATA_DIR=str(self.data_dir),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True, timeout_s: float = 90.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.cwd,
        )
        self.starts += 1
        if wait:
            self.wait_ready(timeout_s)

    def log_text(self, since_start: bool = True) -> str:
        data = self.log_path.read_bytes()
        return data[self._log_offset :].decode(errors="replace") if since_start else data.decode(errors="replace")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            if READY_MARK in self.log_text():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout_s}s:\n{self.log_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hooks, no flush, no commit."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
