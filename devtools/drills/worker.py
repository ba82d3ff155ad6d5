"""A worker as an OS process (the drills', the soak's and the integration tests'), and a supervisor restarting it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_MARK = "Worker ready"


@dataclass
class WorkerProcess:
    """A worker run as a real OS process in its own process group (so a drill or a test can SIGKILL it); its
    settings in the environment, ``bootstrap`` read at each start (a failover moves it)."""

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
    _log_offset: int = field(default=0, repr=False)

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
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
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
        """SIGTERM (commit and leave), SIGKILL after ``timeout_s``: a worker whose brokers died may hang."""
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def p2p_worker(
    bootstrap: str, app_id: str, data_dir: Path, web_port: int, metrics_port: int, **env: str
) -> WorkerProcess:
    """The drills' worker: the plain runtime's matching and ledger, no dividend timer (``env``: more settings)."""
    extra = {"NEXUS_AGENTS": "matching,settlement", "NEXUS_DIVIDEND_TIMER_EVERY_S": "0", **env}
    return WorkerProcess(bootstrap, app_id, data_dir, web_port, metrics_port, extra_env=extra, module="streams.p2p")


class Supervisor(threading.Thread):
    """Starts the worker again whenever it exits, as systemd's Restart=always or a Kubernetes Deployment would: a
    worker exits by design on errors it cannot go on from (streams/kafka/clients.py, ``must_exit``). ``paused``
    while an operator moves it."""

    RESTARTS_MAX = 5

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(name="dr-supervisor", daemon=True)
        self.worker, self.restarts = worker, 0
        self.done, self.paused = threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            proc = self.worker.proc
            exited = proc is not None and proc.poll() is not None
            if exited and not self.paused.is_set() and self.restarts < self.RESTARTS_MAX:
                self.restarts += 1
                self.worker.start(wait=False)

    def close(self) -> None:
        self.done.set()
        self.join(5)
        self.worker.stop()
