"""Run the provider simulator as a background process (pid file, health wait) and talk to its admin API.

CLI (``python -m devtools.provider_sim``)::

    python -m devtools.provider_sim start [--port 19480]   # detached; pid file .local/provider_sim/sim-<port>.pid
    python -m devtools.provider_sim status
    python -m devtools.provider_sim stop
    python -m devtools.provider_sim run                    # foreground (what ``start`` spawns)

Library::

    sim = ProviderSimProcess(port=free_port(), state_dir=tmp)
    sim.start()
    sim.configure({"STRIPE_INSTANT": {"latency_ms": 220, "fail_next": 3}})
    sim.payouts()            # every payout the simulator made
    sim.report_break("BRIDGE-card-7", "amount", 14_990)   # its provider now reports 149.90 for that payout
    sim.stop()

The simulator listens on ``NEXUS_PROVIDER_SIM_HOST`` (loopback by default; ``host`` / ``--host`` override it).
Only processes this module started are ever signalled: the pid must come from our pid file and its command
line must be ``-m devtools.provider_sim run --port <port>``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from infra.http_serving import url_host
from infra.processes import ManagedProcess, cmdline_matches
from streams.bridge.providers.base import DEFAULT_SIM_PORT, REPO_ROOT

STATE_DIR = REPO_ROOT / ".local" / "provider_sim"


class SimError(RuntimeError):
    pass


class ProviderSimProcess:
    def __init__(
        self,
        port: int = DEFAULT_SIM_PORT,
        host: str | None = None,
        state_dir: Path = STATE_DIR,
        env: dict[str, str] | None = None,
        nice: int = 0,
    ) -> None:
        self.port = port
        if host is None:
            from streams.settings import get_settings

            host = get_settings().provider_sim_host
        self.host = host
        self.state_dir = Path(state_dir)
        self.env = env or {}
        self.nice = nice
        self._process = ManagedProcess(
            f"The provider simulator on {self.url}", self.pid_file, self.log_file, self._ours, SimError
        )

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"sim-{self.port}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"sim-{self.port}.log"

    def _ours(self, pid: int) -> bool:
        return cmdline_matches(
            pid, lambda args: "devtools.provider_sim" in args and "run" in args and str(self.port) in args
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def healthy(self, timeout_s: float = 1.0) -> bool:
        try:
            return bool(self._admin("GET", "/_admin/health", timeout_s=timeout_s).get("ok"))
        except (OSError, SimError, ValueError):
            return False

    def start(self, timeout_s: float = 20.0) -> float:
        if self.pid is not None:
            raise SimError(f"provider simulator already running on {self.url} (pid {self.pid}); stop it first")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "devtools.provider_sim", "run", "--host", self.host, "--port", str(self.port)]
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONPATH", str(REPO_ROOT))
        preexec = (lambda: os.nice(self.nice)) if self.nice else None
        return self._process.start(
            cmd, lambda left_s: self.healthy(min(0.5, left_s)), timeout_s, REPO_ROOT, env=env, preexec_fn=preexec
        )

    def stop(self, timeout_s: float = 5.0) -> bool:
        return self._process.stop(timeout_s, kill_wait_s=5.0)

    # ------------------------------------------------------------------ admin API

    def _admin(self, method: str, path: str, body: Any = None, timeout_s: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise SimError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from exc

    def configure(self, patch: dict[str, dict[str, Any]]) -> Any:
        return self._admin("POST", "/_admin/config", patch)

    def reset(self) -> Any:
        return self._admin("POST", "/_admin/reset", {})

    def payouts(self, **query: str) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode(query)
        return list(self._admin("GET", "/_admin/payouts" + (f"?{qs}" if qs else ""))["payouts"])

    def stats(self) -> dict[str, int]:
        return dict(self._admin("GET", "/_admin/stats"))

    def statements(self, out_dir: Path, day: str | None = None) -> list[Path]:
        """Every provider's statement file (per booking day, or for ``day``), the same lines its report API serves."""
        answer = self._admin("POST", "/_admin/statements", {"dir": str(out_dir), "day": day})
        return [Path(f) for f in answer["files"]]

    def report_break(self, reference: str, kind: str, value: Any = None) -> dict[str, Any]:
        """Make the provider's report wrong about one payout (any of its references): ``drop``, ``amount``,
        ``fee``, ``fx_rate``, ``duplicate`` or ``late`` (devtools/provider_sim/reports.py)."""
        return dict(
            self._admin("POST", "/_admin/report_breaks", {"reference": reference, "kind": kind, "value": value})
        )

    def report_breaks(self) -> dict[str, dict[str, Any]]:
        return dict(self._admin("GET", "/_admin/report_breaks")["breaks"])


def main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(prog="python -m devtools.provider_sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "run"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("NEXUS_PROVIDER_SIM_PORT", DEFAULT_SIM_PORT)))
    parser.add_argument("--host", default=None, help="listen address (default NEXUS_PROVIDER_SIM_HOST, loopback)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sim = ProviderSimProcess(args.port, args.host)
    if args.command == "run":
        from devtools.provider_sim.server import serve
        from streams.kafka import event_loop
        from streams.settings import get_settings

        async def forever() -> None:
            runner = await serve(sim.host, args.port, seed=args.seed)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            where = f"http://{sim.host}:{args.port} (pid {os.getpid()}, {event_loop.running_kind()} event loop)"
            print(f"provider simulator listening on {where}", flush=True)
            await stop.wait()
            await runner.cleanup()

        event_loop.run(forever(), get_settings().event_loop)
        return 0
    if args.command == "start":
        secs = sim.start()
        print(f"provider simulator ready on {sim.url} in {secs:.1f}s (pid {sim.pid}); log {sim.log_file}")
        return 0
    if args.command == "stop":
        print("stopped" if sim.stop() else "not running")
        return 0
    pid = sim.pid
    print(f"running on {sim.url} (pid {pid})" if pid and sim.healthy() else "stopped")
    return 0 if pid else 1
