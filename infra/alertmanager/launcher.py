"""Render the Alertmanager configuration and run Prometheus Alertmanager (Debian ``prometheus-alertmanager``).

Library use::

    from infra.alertmanager.launcher import LocalAlertmanager, Timings

    am = LocalAlertmanager(port=19094)            # receiver URLs from streams.settings (NEXUS_ALERT_*)
    am.start()                                    # renders .local/alertmanager/alertmanager.yml, waits for /-/ready
    am.url                                        # "http://127.0.0.1:19094"
    am.stop()                                     # SIGTERM to its process group, SIGKILL after a timeout

CLI::

    python -m infra.alertmanager.launcher start | stop | status | render | check  [--port N] [--data-dir D] [--fast]

``--fast`` renders the test timings (1 s group wait) instead of the spec's. The process runs in its own
process group and outlives the caller; ``stop`` works from any process (pid file in the data dir).
The web/API listener binds ``NEXUS_ALERTMANAGER_HOST`` (loopback by default). HA clustering is disabled
(``--cluster.listen-address=``; Alertmanager's default would gossip on 0.0.0.0:9094): one local instance.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

from infra.http_serving import url_host
from infra.processes import DataDirFiles, DataPath, ManagedProcess, cmdline_matches, port_bindable
from streams.settings import Settings, get_settings

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "alertmanager.yml.tmpl"
TEMPLATES_DIR = HERE / "templates"
BINARY = "prometheus-alertmanager"
AMTOOL = "amtool"


class AlertmanagerError(RuntimeError):
    """Alertmanager could not be configured, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class Timings:
    """Grouping and escalation intervals (Alertmanager duration syntax). Defaults are the spec's (§5.2)."""

    group_wait: str = "10s"
    group_interval: str = "1m"
    group_wait_immediate: str = "0s"
    resolve_timeout: str = "5m"
    repeat_immediate: str = "5m"
    repeat_l1: str = "5m"
    repeat_l2_email: str = "15m"
    repeat_l2_sms: str = "30m"
    repeat_l3: str = "24h"
    repeat_watchdog: str = "1m"  # how often the dead man's switch hears the Watchdog

    @classmethod
    def fast(cls) -> Timings:
        """For tests and the demo: notifications within a second or two; repeats stay as specified."""
        return cls(group_wait="1s", group_interval="1s", group_wait_immediate="0s")


def render_config(settings: Settings, timings: Timings | None = None) -> str:
    """The Alertmanager YAML for these settings and timings (receiver URLs etc. quoted safely)."""
    timings = timings or Timings()
    values: dict[str, str] = {
        "slack_webhook_url": settings.alert_slack_webhook_url,
        "slack_channel": settings.alert_slack_channel,
        "pagerduty_url": settings.alert_pagerduty_url,
        "pagerduty_routing_key": settings.alert_pagerduty_routing_key,
        "sms_webhook_url": settings.alert_sms_webhook_url,
        "deadmansswitch_url": settings.alert_deadmansswitch_url,
        "smtp_smarthost": settings.alert_smtp_smarthost,
        "email_from": settings.alert_email_from,
        "email_to": settings.alert_email_to,
        "templates_glob": str(TEMPLATES_DIR / "*.tmpl"),
    }
    rendered = {k: json.dumps(v) for k, v in values.items()}  # JSON strings are valid quoted YAML scalars
    rendered.update(asdict(timings))
    rendered["smtp_require_tls"] = "true" if settings.alert_smtp_require_tls else "false"
    try:
        return Template(TEMPLATE.read_text()).substitute(rendered)
    except KeyError as exc:
        raise AlertmanagerError(f"{TEMPLATE} uses ${{{exc.args[0]}}}, which render_config does not provide") from None


def check_config(path: Path) -> str:
    """``amtool check-config``; raises AlertmanagerError with amtool's output when the file is invalid."""
    amtool = shutil.which(AMTOOL)
    if amtool is None:
        raise AlertmanagerError("amtool not found; install the Debian package: bash infra/install-system-deps.sh")
    done = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AlertmanagerError(f"invalid Alertmanager config {path}:\n{done.stdout}{done.stderr}")
    return done.stdout


def _is_alertmanager(pid: int) -> bool:
    return cmdline_matches(pid, lambda args: Path(args[0]).name == BINARY)


@dataclass
class LocalAlertmanager(DataDirFiles):
    """One Alertmanager process on ``host``:``port`` (default: the settings'), its files under ``data_dir``."""

    port: int = 0
    data_dir: Path | None = None
    settings: Settings = field(default_factory=get_settings)
    timings: Timings = field(default_factory=Timings)
    host: str | None = None
    _process: ManagedProcess = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.port = self.port or self.settings.alertmanager_port
        self.host = self.settings.alertmanager_host if self.host is None else self.host
        self.data_dir = Path(self.data_dir or self.settings.data_dir / "alertmanager").resolve()
        self._process = ManagedProcess(
            f"Alertmanager on {self.url}", self.pid_file, self.log_file, _is_alertmanager, AlertmanagerError
        )

    # -- paths

    config_file = DataPath("alertmanager.yml")
    pid_file = DataPath("alertmanager.pid")
    log_file = DataPath("alertmanager.log")

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host or '')}:{self.port}"

    @property
    def listen_address(self) -> str:
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    # -- state

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=timeout_s) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def status(self) -> dict[str, object]:
        pid = self.pid
        return {
            "url": self.url,
            "pid": pid,
            "running": pid is not None,
            "ready": pid is not None and self.is_ready(),
            "config": str(self.config_file),
            "log": str(self.log_file),
        }

    # -- lifecycle

    def render(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(render_config(self.settings, self.timings))
        check_config(self.config_file)
        return self.config_file

    def start(self, timeout_s: float = 20.0) -> float:
        """Render, validate and start; return the seconds until ``/-/ready`` answered 200."""
        t0 = time.monotonic()
        if self.pid is not None:
            raise AlertmanagerError(
                f"Alertmanager already runs for {self.url} (pid {self.pid}); "
                f"stop it first: python -m infra.alertmanager.launcher stop --port {self.port}"
            )
        binary = shutil.which(BINARY)
        if binary is None:
            raise AlertmanagerError(f"{BINARY} not found; install it: bash infra/install-system-deps.sh")
        if not port_bindable(self.port):
            raise AlertmanagerError(f"port {self.port} is in use; pick another: --port N (NEXUS_ALERTMANAGER_PORT)")
        self.render()
        storage = self.dir / "data"
        storage.mkdir(parents=True, exist_ok=True)
        cmd = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.path={storage}",
            f"--web.listen-address={self.listen_address}",
            "--cluster.listen-address=",  # empty = no cluster listener (the default binds 0.0.0.0:9094)
            f"--web.external-url={self.url}",
            "--log.level=info",
        ]
        self._process.start(
            cmd, lambda left_s: self.is_ready(min(0.5, left_s)), t0 + timeout_s - time.monotonic(), self.dir
        )
        return time.monotonic() - t0

    def reload(self) -> None:
        """Re-render the config and tell the running process to load it (POST /-/reload)."""
        self.render()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            if response.status != 200:
                raise AlertmanagerError(f"reload failed: HTTP {response.status}")

    def stop(self, timeout_s: float = 10.0) -> bool:
        """SIGTERM the process group, SIGKILL after ``timeout_s``; False if nothing ran. Idempotent."""
        return self._process.stop(timeout_s)

    def __enter__(self) -> LocalAlertmanager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.alertmanager.launcher", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "render", "check"])
    parser.add_argument("--port", type=int, default=0, help="web/API port (default NEXUS_ALERTMANAGER_PORT)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default .local/alertmanager")
    parser.add_argument("--fast", action="store_true", help="1 s group wait/interval (tests, demo)")
    args = parser.parse_args(argv)
    am = LocalAlertmanager(port=args.port, data_dir=args.data_dir, timings=Timings.fast() if args.fast else Timings())
    try:
        if args.command == "start":
            took = am.start()
            print(f"Alertmanager ready at {am.url} in {took:.1f}s (pid {am.pid}, config {am.config_file})")
        elif args.command == "stop":
            print("stopped" if am.stop() else "not running")
        elif args.command == "status":
            print(json.dumps(am.status(), indent=2))
            return 0 if am.status()["ready"] else 1
        elif args.command == "render":
            print(am.render())
        else:
            print(check_config(am.render()), end="")
    except AlertmanagerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
