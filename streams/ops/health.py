"""``/metrics`` and ``/healthz`` of a worker, started with one call whatever the runtime::

    from streams.ops import health
    ops = health.start(settings, "p2p", consumer_groups=[f"{settings.app_id}-plain"])
    ...
    ops.beat()          # each time the worker's loop goes round (a float store: free on the hot path)

``/healthz`` answers 200 ``{"status": "ok", ...}`` while the loop's last beat is younger than ``stale_after_s``
and every registered check passes, else 503 with the reason (a hung loop, a closed consumer). It is a liveness
probe: a worker that answers 503 should be restarted. Served on ``NEXUS_METRICS_HOST:NEXUS_METRICS_PORT``;
port 0 serves nothing (the beat and the gauges still work, so tests can read them in-process).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from streams.ops import metrics

log = logging.getLogger("nexus.ops")

STALE_AFTER_S = 30.0  # a loop that has not gone round for this long is hung (every loop polls within a second)

Check = Callable[[], str | None]  # None: healthy; else what is wrong


@dataclass
class Ops:
    """One process's health state; ``beat()`` from its loop, ``add_check`` for anything else worth a 503."""

    component: str
    stale_after_s: float | None = STALE_AFTER_S  # None: the process beats nowhere; /healthz judges the checks only
    started_at: float = field(default_factory=time.monotonic)
    last_beat: float = field(default_factory=time.monotonic)
    checks: dict[str, Check] = field(default_factory=dict)
    lag: metrics.LagMonitor | None = None
    server: ThreadingHTTPServer | None = None

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def add_check(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def health(self) -> tuple[bool, dict[str, Any]]:
        age_s = time.monotonic() - self.last_beat
        metrics.HEARTBEAT_AGE.labels(self.component).set(age_s)
        stale = self.stale_after_s is not None and age_s >= self.stale_after_s
        problems = {"loop": f"no heartbeat for {age_s:.1f}s"} if stale else {}
        for name, check in self.checks.items():
            try:
                problem = check()
            except Exception as exc:  # a check that cannot tell is a failing check
                problem = f"check raised {exc!r}"
            if problem is not None:
                problems[name] = problem
        body = {
            "status": "ok" if not problems else "failing",
            "component": self.component,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "heartbeat_age_s": round(age_s, 3),
            "problems": problems,
        }
        return not problems, body

    @property
    def port(self) -> int | None:
        return None if self.server is None else int(self.server.server_address[1])

    def stop(self) -> None:
        if self.lag is not None:
            self.lag.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _handler(ops: Ops) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                ops.health()  # refreshes the heartbeat gauge
                self._reply(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/health"):
                ok, body = ops.health()
                self._reply(200 if ok else 503, json.dumps(body).encode(), "application/json")
            else:
                self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every second would drown the worker's log

    return Handler


_current: Ops | None = None
_lock = threading.Lock()


def serve(ops: Ops, port: int, host: str = "127.0.0.1") -> bool:
    """Serve ``ops`` on ``host:port`` in a daemon thread; False (logged) if the port is taken."""
    try:
        ops.server = ThreadingHTTPServer((host, port), _handler(ops))
    except OSError as exc:
        log.error("metrics and health endpoint not started on %s:%d: %s", host, port, exc)
        return False
    ops.server.daemon_threads = True
    threading.Thread(target=ops.server.serve_forever, name="nexus-ops-http", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz", host, ops.port)
    return True


def start(settings: Any, component: str, consumer_groups: Iterable[str] = (), beats: bool = True) -> Ops:
    """The process's :class:`Ops`, serving ``/metrics`` and ``/healthz`` on the settings' port; once per process.

    ``consumer_groups``: groups whose lag ``nexus_consumer_lag_messages`` reports, measured every
    ``settings.metrics_lag_interval_s``. ``beats=False``: the process's loop calls no ``beat()``, so /healthz
    does not judge a heartbeat. A second call returns the first call's Ops (one endpoint per process).
    """
    ops = start_endpoint(component, settings.metrics_port, settings.metrics_host)
    if not beats:
        ops.stale_after_s = None
    groups = list(consumer_groups)
    if groups and ops.lag is None:
        ops.lag = metrics.LagMonitor(settings.bootstrap_servers, groups, settings.metrics_lag_interval_s).start()
    return ops


def start_endpoint(component: str, port: int, host: str = "127.0.0.1") -> Ops:
    """The process's :class:`Ops`, serving on ``host:port`` (0: not served); a second call returns the first's."""
    global _current
    with _lock:
        if _current is None:
            ops = Ops(component)
            if port:
                serve(ops, port, host)
            _current = ops
        return _current


def current() -> Ops | None:
    return _current


def stop() -> None:
    """Stop the process's endpoint and lag thread (tests; a worker just exits)."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
            _current = None


__all__ = ["STALE_AFTER_S", "Check", "Ops", "current", "serve", "start", "start_endpoint", "stop"]
