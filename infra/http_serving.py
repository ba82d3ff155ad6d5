"""The small standard-library HTTP serving the local servers share (dashboard, alert sink).

Production code (``dashboards``) uses it too, so it lives in ``infra`` rather than ``devtools``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that answers with one complete body and keeps the console free of access logs."""

    def send_body(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def url_host(bind: str) -> str:
    """The host part of a URL reaching a server bound to ``bind``: loopback for a wildcard, brackets for IPv6."""
    host = "127.0.0.1" if bind in WILDCARD_HOSTS else bind
    return f"[{host}]" if ":" in host else host


def serve_in_background(host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str) -> ThreadingHTTPServer:
    """Bind now (port 0 = any free port) and serve from a daemon thread, so a crashed caller leaves nothing behind."""
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def shut_down(server: ThreadingHTTPServer | None) -> None:
    """Stop serving and release the port; nothing to do for a server that never started."""
    if server is not None:
        server.shutdown()
        server.server_close()


def run_until_signalled(banner: str, stop: Callable[[], None]) -> int:
    """A foreground server's CLI: print where it serves, block until SIGTERM or SIGINT, then ``stop`` it."""
    print(banner, flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stopping.wait()
    stop()
    return 0
