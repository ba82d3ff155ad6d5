"""The settlement monitoring dashboard (spec §5.1), live from the registry topics.

    python -m dashboards.server [--port 19098] [--host 127.0.0.1] [--bootstrap HOST:PORT]  -> http://127.0.0.1:19098/

A standard-library HTTP server: ``/`` is the page (static HTML/CSS/JS in ``dashboards/static``, no CDN),
``/api/summary`` the figures as JSON (``dashboards.figures``), refreshed by the page every 2 s while a
background consumer (``dashboards.source``) follows the settlement, payout, holder-notification and
alert topics. It listens on ``NEXUS_DASHBOARD_HOST`` (loopback by default). ``/healthz`` answers
``ok`` once the topics' current content has been read. Teams running Grafana use
``dashboards/grafana/`` (the settlement panels over the worker's Prometheus metrics; the payout panels are
here only: the services export no payout metrics) instead.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dashboards.figures import Figures
from dashboards.source import TopicTail
from infra.http_serving import QuietHandler, run_until_signalled, serve_in_background, shut_down, url_host

STATIC = Path(__file__).resolve().parent / "static"


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Dashboard:
    """Figures + the Kafka follower + the HTTP server; ``clock`` is injectable (tests pin a day)."""

    def __init__(
        self,
        bootstrap: str,
        port: int = 0,
        host: str | None = None,
        clock: Callable[[], datetime] = wall_clock,
        lookback: timedelta = timedelta(hours=25),
    ) -> None:
        self.clock = clock
        self.figures = Figures()
        self.lock = threading.Lock()
        self.tail = TopicTail(bootstrap, self.figures, self.lock, lookback)
        if host is None:
            from streams.settings import get_settings

            host = get_settings().dashboard_host
        self._host, self._port = host, port
        self._http: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._http is not None, "not started"
        return f"http://{url_host(self._host)}:{self._http.server_address[1]}"

    def summary(self) -> dict[str, Any]:
        with self.lock:
            data = self.figures.summary(self.clock())
        data["source"] = {
            "loaded": self.tail.loaded.is_set(),
            "errors": self.tail.errors,
            "rejected": self.tail.rejected,
            "bootstrap": self.tail.bootstrap,
        }
        return data

    def start(self) -> Dashboard:
        dashboard = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/api/summary":
                    self._send(200, json.dumps(dashboard.summary()).encode(), "application/json")
                elif path == "/healthz":
                    ready = dashboard.tail.loaded.is_set() and not dashboard.tail.errors
                    self._send(200 if ready else 503, b"ok" if ready else b"loading", "text/plain")
                else:
                    name = "index.html" if path == "/" else path.removeprefix("/static/")
                    file = (STATIC / name).resolve()
                    if STATIC not in file.parents or not file.is_file():
                        self._send(404, b"not found", "text/plain")
                        return
                    kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                    self._send(200, file.read_bytes(), kind)

            def _send(self, status: int, body: bytes, kind: str) -> None:
                kind += "; charset=utf-8" if kind.startswith("text") else ""
                self.send_body(status, body, kind, {"Cache-Control": "no-store"})

        self.tail.start()
        self._http = serve_in_background(self._host, self._port, Handler, "dashboard-http")
        return self

    def stop(self) -> None:
        shut_down(self._http)
        self._http = None
        self.tail.stop()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    from streams.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m dashboards.server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=settings.dashboard_port)
    parser.add_argument("--host", default=settings.dashboard_host, help="listen address (NEXUS_DASHBOARD_HOST)")
    parser.add_argument("--bootstrap", default=settings.bootstrap_servers)
    args = parser.parse_args(argv)
    dashboard = Dashboard(args.bootstrap, port=args.port, host=args.host).start()
    return run_until_signalled(f"dashboard on {dashboard.url}/ (Kafka {args.bootstrap})", dashboard.stop)


if __name__ == "__main__":
    sys.exit(main())
