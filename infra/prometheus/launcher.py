"""Run Prometheus (Debian ``prometheus``) with our scrape config and the platform alerts, not its systemd unit.

Library use::

    from infra.prometheus.launcher import LocalPrometheus, Target

    prom = LocalPrometheus(targets=[Target("p2p", "127.0.0.1:9464"), Target("bridge", "127.0.0.1:9465")],
                           alertmanager_url="http://127.0.0.1:19094")
    prom.start()          # writes .local/prometheus/{prometheus.yml,platform-alerts.yml}, waits for /-/ready
    prom.url              # "http://127.0.0.1:19090"
    prom.stop()

CLI::

    python -m infra.prometheus start --target p2p=127.0.0.1:9464 --target bridge=127.0.0.1:9465 [--fast]
    python -m infra.prometheus stop | status | render | check

Each target is scraped as job ``nexus-workers`` with its name as the ``component`` label (what ``NexusWorkerDown``
names). ``--fast`` scrapes and evaluates every second (tests, the demo). Data (TSDB) lives under the data dir;
the process runs in its own process group and outlives the caller; ``stop`` works from any process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.http_serving import url_host
from infra.processes import DataDirFiles, DataPath, ManagedProcess, cmdline_matches, port_bindable
from infra.prometheus.rules import JOB, Tuning, rule_file
from streams.settings import REPO_ROOT, Settings, get_settings

BINARY = "prometheus"
PROMTOOL = "promtool"
RUNBOOKS = REPO_ROOT / "docs" / "runbooks"


class PrometheusError(RuntimeError):
    """Prometheus could not be configured, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class Target:
    component: str  # the worker's name: p2p, bridge, payouts, ...
    address: str  # host:port of its /metrics

    @classmethod
    def parse(cls, text: str) -> Target:
        name, sep, address = text.partition("=")
        if not sep or ":" not in address:
            raise PrometheusError(f"a target is name=host:port, not {text!r}")
        return cls(name, address)


def scrape_config(targets: Sequence[Target], alertmanager_url: str, rules_file: Path, interval: str = "15s") -> str:
    """prometheus.yml (as JSON, which is YAML): the workers, the rule file and where alerts go."""
    alertmanager = alertmanager_url.split("://", 1)[-1].rstrip("/")
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [t.address], "labels": {"component": t.component}} for t in targets],
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def promtool(*args: str) -> str:
    """``promtool args``; raises PrometheusError with its output when it fails."""
    tool = shutil.which(PROMTOOL)
    if tool is None:
        raise PrometheusError("promtool not found; install the Debian package: bash infra/install-system-deps.sh")
    done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise PrometheusError(f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _is_prometheus(pid: int) -> bool:
    return cmdline_matches(pid, lambda args: Path(args[0]).name == BINARY)


@dataclass
class LocalPrometheus(DataDirFiles):
    """One Prometheus on ``host``:``port`` (default: the settings'), its files under ``data_dir``."""

    targets: list[Target] = field(default_factory=list)
    alertmanager_url: str = ""
    port: int = 0
    data_dir: Path | None = None
    settings: Settings = field(default_factory=get_settings)
    interval: str = "15s"
    # How often a firing alert is re-sent; an alert not re-sent resolves after 4x this (Prometheus's rule): tests
    # and the demo use their 1 s interval, so a stopped Prometheus's alerts resolve within seconds.
    resend_delay: str = "1m"
    tuning: Tuning = field(default_factory=Tuning)
    runbook_base_url: str = RUNBOOKS.as_uri()
    host: str | None = None
    _process: ManagedProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.port = self.port or self.settings.prometheus_port
        self.host = self.settings.prometheus_host if self.host is None else self.host
        self.alertmanager_url = self.alertmanager_url or self.settings.alertmanager_url
        self.data_dir = Path(self.data_dir or self.settings.data_dir / "prometheus").resolve()
        self._process = ManagedProcess(
            f"Prometheus on {self.url}", self.pid_file, self.log_file, _is_prometheus, PrometheusError
        )

    config_file = DataPath("prometheus.yml")
    rules_file = DataPath("platform-alerts.yml")
    pid_file = DataPath("prometheus.pid")
    log_file = DataPath("prometheus.log")

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host or '')}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=timeout_s) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def render(self) -> Path:
        """Write and check the rule file and prometheus.yml (``promtool check``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rules_file.write_text(rule_file(self.tuning, self.runbook_base_url))
        self.config_file.write_text(scrape_config(self.targets, self.alertmanager_url, self.rules_file, self.interval))
        promtool("check", "config", str(self.config_file))
        return self.config_file

    def start(self, timeout_s: float = 30.0) -> float:
        """Render, check and start; the seconds until ``/-/ready`` answered 200."""
        t0 = time.monotonic()
        if self.pid is not None:
            raise PrometheusError(f"Prometheus already runs for {self.url} (pid {self.pid}); stop it first")
        binary = shutil.which(BINARY)
        if binary is None:
            raise PrometheusError(f"{BINARY} not found; install it: bash infra/install-system-deps.sh")
        if not port_bindable(self.port):
            raise PrometheusError(f"port {self.port} is in use; pick another: --port N (NEXUS_PROMETHEUS_PORT)")
        self.render()
        storage = self.dir / "data"
        storage.mkdir(parents=True, exist_ok=True)
        host = self.host or ""
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        cmd = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address={listen}",
            f"--web.external-url={self.url}",
            "--web.enable-lifecycle",  # POST /-/reload after a re-render
            f"--rules.alert.resend-delay={self.resend_delay}",
            "--log.level=info",
        ]
        self._process.start(
            cmd, lambda left_s: self.is_ready(min(0.5, left_s)), t0 + timeout_s - time.monotonic(), self.dir
        )
        return time.monotonic() - t0

    def reload(self) -> None:
        self.render()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            if response.status != 200:
                raise PrometheusError(f"reload failed: HTTP {response.status}")

    def stop(self, timeout_s: float = 10.0) -> bool:
        return self._process.stop(timeout_s)

    def status(self) -> dict[str, object]:
        pid = self.pid
        return {
            "url": self.url,
            "pid": pid,
            "ready": pid is not None and self.is_ready(),
            "config": str(self.config_file),
        }

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.prometheus", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "render", "check"])
    parser.add_argument("--target", action="append", default=[], help="name=host:port of a worker's /metrics")
    parser.add_argument("--alertmanager-url", default="", help="default NEXUS_ALERTMANAGER_URL")
    parser.add_argument("--port", type=int, default=0, help="default NEXUS_PROMETHEUS_PORT")
    parser.add_argument("--data-dir", type=Path, default=None, help="default .local/prometheus")
    parser.add_argument("--fast", action="store_true", help="scrape and evaluate every second (tests, demo)")
    parser.add_argument("--runbook-base-url", default=RUNBOOKS.as_uri(), help="where docs/runbooks is served")
    args = parser.parse_args(argv)
    try:
        prom = LocalPrometheus(
            targets=[Target.parse(t) for t in args.target],
            alertmanager_url=args.alertmanager_url,
            port=args.port,
            data_dir=args.data_dir,
            interval="1s" if args.fast else "15s",
            resend_delay="1s" if args.fast else "1m",
            runbook_base_url=args.runbook_base_url,
        )
        if args.command == "start":
            took = prom.start()
            print(f"Prometheus ready at {prom.url} in {took:.1f}s (pid {prom.pid}, config {prom.config_file})")
        elif args.command == "stop":
            print("stopped" if prom.stop() else "not running")
        elif args.command == "status":
            print(json.dumps(prom.status(), indent=2))
            return 0 if prom.status()["ready"] else 1
        elif args.command == "render":
            print(prom.render())
        else:
            prom.render()
            print(promtool("check", "rules", str(prom.rules_file)), end="")
    except PrometheusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
