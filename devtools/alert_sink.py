"""A local stand-in for Slack, PagerDuty, the SMS gateway and the mail server: records what Alertmanager sends.

HTTP (one port): ``POST /slack`` (incoming-webhook JSON), ``POST /pagerduty`` (Events API v2, answered
``202`` like PagerDuty), ``POST /sms`` (Alertmanager webhook JSON; the SMS text a gateway would send is
rendered by ``sms_text``). SMTP (optional second port, aiosmtpd): every mail. Each notification becomes
one JSON line in ``path`` and one entry in ``records()``::

    {"channel": "pagerduty", "received_at": "...", "path": "/pagerduty", "body": {...}}
    {"channel": "email", "received_at": "...", "subject": "...", "to": [...], "text": "...", "html": "...",
     "message_id": "<...>"}

Holder notification gateways (streams/notifications), recorded with the request's ``Idempotency-Key``:
``POST /sms-gateway`` ``{"to", "text"}`` (channel ``holder-sms``) and ``POST /push`` ``{"token", "title",
"body"}`` (channel ``push``). A failure switch for tests: ``POST /_admin/fail`` ``{"path": "/sms-gateway",
"count": 3, "status": 503}`` makes the next 3 POSTs to that path (the query string counts if the rule has one)
answer 503; each refused call is recorded as channel ``refused`` (with its path, status and Idempotency-Key).

CLI (demo)::

    python -m devtools.alert_sink [--port 19096] [--smtp-port 19097] [--out .local/alertmanager/sink.jsonl]

Both listeners bind ``NEXUS_ALERT_SINK_HOST`` (loopback by default; ``--host`` overrides it).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from infra.http_serving import QuietHandler, run_until_signalled, serve_in_background, shut_down, url_host
from streams.settings import get_settings

CHANNELS = ("slack", "pagerduty", "sms")
# Holder notification gateways: path segment -> channel recorded.
GATEWAYS = {"sms-gateway": "holder-sms", "push": "push"}
SMS_LIMIT = 160

Record = dict[str, Any]


def sms_text(webhook: dict[str, Any]) -> str:
    """The SMS a gateway sends for one Alertmanager webhook payload (at most 160 characters)."""
    status = "RESOLVED" if webhook.get("status") == "resolved" else "FIRING"
    alerts = webhook.get("alerts", [])
    name = webhook.get("commonLabels", {}).get("alertname") or webhook.get("groupLabels", {}).get("alertname", "?")
    first = alerts[0].get("annotations", {}).get("summary", "") if alerts else ""
    more = f" (+{len(alerts) - 1} more)" if len(alerts) > 1 else ""
    text = f"NEXUS-X {status} {name}: {first}{more}"
    return text if len(text) <= SMS_LIMIT else text[: SMS_LIMIT - 1] + "…"


class Sink:
    """Records notifications; start() binds the ports (0 = any free port) on ``host``, stop() releases them.

    ``host`` defaults to ``NEXUS_ALERT_SINK_HOST`` (loopback).
    """

    def __init__(self, path: Path, port: int = 0, smtp_port: int | None = None, host: str | None = None) -> None:
        self.path = Path(path)
        self.host = get_settings().alert_sink_host if host is None else host
        self._port = port
        self._smtp_port = smtp_port
        self._records: list[Record] = []
        self._lock = threading.Condition()
        self._http: ThreadingHTTPServer | None = None
        self._smtp: Any = None
        self._failures: dict[str, list[int]] = {}  # path -> [calls left to fail, status]
        self.on_record: Callable[[Record], None] | None = None

    # -- addresses

    @property
    def port(self) -> int:
        assert self._http is not None, "sink not started"
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def smtp_port(self) -> int | None:
        return None if self._smtp is None else int(self._smtp.port)

    @property
    def smarthost(self) -> str:
        return f"{url_host(self.host)}:{self.smtp_port}"

    # -- records

    def add(self, record: Record) -> None:
        record = {"received_at": datetime.now(UTC).isoformat(), **record}
        with self._lock:
            self._records.append(record)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
            self._lock.notify_all()
        if self.on_record is not None:
            self.on_record(record)

    def fail(self, path: str, count: int, status: int = 503) -> None:
        """The next `count` POSTs to `path` answer `status` (a rule without a query string matches any query)."""
        with self._lock:
            self._failures[path] = [count, status]

    def _refusal(self, path: str) -> int | None:
        """The status to refuse this call with, if a failure rule covers it (and count it down)."""
        with self._lock:
            for candidate in (path, path.split("?")[0]):
                rule = self._failures.get(candidate)
                if rule is not None and rule[0] > 0:
                    rule[0] -= 1
                    return rule[1]
            return None

    def records(self, channel: str | None = None) -> list[Record]:
        with self._lock:
            return [r for r in self._records if channel is None or r["channel"] == channel]

    def wait_for(self, predicate: Callable[[list[Record]], bool], timeout_s: float) -> list[Record]:
        """Block until ``predicate(all records)`` holds; AssertionError with what arrived otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate(list(self._records)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [summarize(r) for r in self._records]
                    raise AssertionError(f"sink: condition not met within {timeout_s}s; received {seen}")
                self._lock.wait(remaining)
            return list(self._records)

    # -- lifecycle

    def start(self) -> Sink:
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                channel = self.path.strip("/").split("/")[0].split("?")[0]
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                if channel == "_admin":
                    self._admin(body)
                    return
                refused = sink._refusal(self.path)
                if refused is not None:
                    key = self.headers.get("Idempotency-Key")
                    sink.add({"channel": "refused", "path": self.path, "status": refused, "idempotency_key": key})
                    self._reply(refused, {"error": "failure injected by POST /_admin/fail"})
                    return
                record: Record = {
                    "channel": GATEWAYS.get(channel, channel if channel in CHANNELS else "other"),
                    "path": self.path,
                    "body": body,
                    "content_type": self.headers.get("Content-Type", ""),
                }
                if channel in GATEWAYS:
                    record["idempotency_key"] = self.headers.get("Idempotency-Key")
                if channel == "sms" and isinstance(body, dict):
                    record["sms_text"] = sms_text(body)
                sink.add(record)
                if channel == "pagerduty":
                    dedup = body.get("dedup_key", "") if isinstance(body, dict) else ""
                    self._reply(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})
                else:
                    self._reply(200, "ok")

            def _admin(self, body: Any) -> None:
                if self.path != "/_admin/fail" or not isinstance(body, dict) or not isinstance(body.get("path"), str):
                    self._reply(400, {"error": 'POST /_admin/fail {"path": "/sms-gateway", "count": 3, "status": 503}'})
                    return
                sink.fail(body["path"], int(body.get("count", 1)), int(body.get("status", 503)))
                self._reply(200, {"failing": body["path"]})

            def do_GET(self) -> None:
                self._reply(200, {"records": len(sink.records())})

            def _reply(self, status: int, body: Any) -> None:
                if isinstance(body, str):
                    self.send_body(status, body.encode(), "text/plain")
                else:
                    self.send_body(status, json.dumps(body).encode(), "application/json")

        self._http = serve_in_background(self.host, self._port, Handler, "alert-sink-http")
        if self._smtp_port is not None:
            self._start_smtp()
        return self

    def _start_smtp(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self

        class MailHandler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                text = message.get_body(("plain",))
                html = message.get_body(("html",))
                sink.add(
                    {
                        "channel": "email",
                        "mail_from": envelope.mail_from,
                        "to": list(envelope.rcpt_tos),
                        "subject": str(message["Subject"]),
                        "text": text.get_content() if text else "",
                        "html": html.get_content() if html else "",
                        "message_id": str(message["Message-ID"] or ""),
                    }
                )
                return "250 Message accepted for delivery"

        port = self._smtp_port or 0
        if port == 0:
            import socket

            with socket.socket() as probe:
                probe.bind((self.host, 0))
                port = int(probe.getsockname()[1])
        self._smtp = Controller(MailHandler(), hostname=self.host, port=port)
        self._smtp.start()

    def stop(self) -> None:
        shut_down(self._http)
        self._http = None
        if self._smtp is not None:
            self._smtp.stop()
            self._smtp = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def summarize(record: Record) -> str:
    """One line per notification, for consoles and assertion messages."""
    channel = record["channel"]
    body = record.get("body")
    if channel == "email":
        return f"email  {record.get('subject')}"
    if channel == "slack" and isinstance(body, dict):
        attachment = (body.get("attachments") or [{}])[0]
        return f"slack  {attachment.get('title', '')}"
    if channel == "pagerduty" and isinstance(body, dict):
        summary = body.get("payload", {}).get("summary", "")
        return f"pager  {body.get('event_action')} {summary} (dedup {str(body.get('dedup_key', ''))[:12]})"
    if channel == "sms":
        return f"sms    {record.get('sms_text', '')}"
    if channel in ("holder-sms", "push") and isinstance(body, dict):
        return f"{channel} {str(body.get('text') or body.get('title') or '')[:60]}"
    if channel == "refused":
        return f"refused {record.get('path')} with {record.get('status')}"
    return f"{channel} {record.get('path')}"


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m devtools.alert_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=settings.alert_sink_port)
    parser.add_argument("--smtp-port", type=int, default=settings.alert_smtp_port)
    parser.add_argument("--host", default=settings.alert_sink_host, help="listen address (NEXUS_ALERT_SINK_HOST)")
    parser.add_argument("--out", type=Path, default=settings.data_dir / "alertmanager" / "sink.jsonl")
    args = parser.parse_args(argv)
    sink = Sink(args.out, port=args.port, smtp_port=args.smtp_port, host=args.host)
    sink.on_record = lambda record: print(summarize(record), flush=True)
    sink.start()
    paths = "/slack /pagerduty /sms /sms-gateway /push"
    where = f"sink on {sink.url} ({paths}), SMTP {sink.smarthost}, recording to {args.out}"
    return run_until_signalled(where, sink.stop)


if __name__ == "__main__":
    sys.exit(main())
