"""Shared helpers for the reconciliation integration and DAG tests (imported explicitly, not via conftest)."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from contracts.topics import AUDIT_RECORDS
from devtools.recon_data import GeneratorConfig, SeededPeriod, generate_period
from warehouse.db import connect
from warehouse.exceptions import AUDIT_PREFIX
from warehouse.settings import ReconSettings

FIRST_DAY = date(2026, 11, 1)
STATE_TABLES = (
    "raw_events",
    "raw_offsets",
    "raw_rejects",
    "meta_topic_offsets",
    "raw_provider_lines",
    "meta_statement_files",
    "recon_results",
    "recon_runs",
    "recon_exceptions",
    "recon_exception_actions",
    "recon_corrections",
    "dq_results",
    "report_deliveries",
    "fct_settlements",
    "dim_accounts",
)


def seed(
    home: Path, days: int = 3, per_day: int = 1200, breaks: int = 60, seed_value: int = 11, **cfg: Any
) -> tuple[SeededPeriod, ReconSettings]:
    settings = ReconSettings(home=home, snapshot_source="jsonl", alert_on_critical=False, wait_for_schedule=False)
    period = generate_period(
        seed_value, FIRST_DAY, days, GeneratorConfig(settlements_per_day=per_day, breaks_per_class=breaks, **cfg)
    )
    period.write(settings.inbox, settings.statements)
    return period, settings


# What a run adds for the next one to read: the review's own audit records, sent to audit.records after the
# snapshot (warehouse/outbox.py). A re-run lands them (the warehouse reads the platform's real audit trail) and
# otherwise changes nothing; so the digests leave them, and audit.records' ranges read, out.
OWN_AUDIT = {
    "raw_events": f"NOT (topic = '{AUDIT_RECORDS.name}' AND event_id LIKE '{AUDIT_PREFIX}%')",
    "raw_offsets": f"NOT (topic = '{AUDIT_RECORDS.name}' AND coalesce(event_id, '') LIKE '{AUDIT_PREFIX}%')",
    "meta_topic_offsets": f"topic <> '{AUDIT_RECORDS.name}'",
}


def table_digests(path: Path) -> dict[str, str]:
    """Content hash of every state table (order-independent), to prove a re-run changes nothing (but the previous
    run's own audit records, ``OWN_AUDIT``)."""
    con = connect(path, read_only=True)
    try:
        out = {}
        for table in STATE_TABLES:
            where = f" WHERE {OWN_AUDIT[table]}" if table in OWN_AUDIT else ""
            rows = con.execute(f"SELECT * FROM {table}{where}").fetchall()
            out[table] = hashlib.sha256("\n".join(sorted(map(repr, rows))).encode()).hexdigest()
        return out
    finally:
        con.close()


def pdf_text(pdf: bytes) -> str:
    """The text a report PDF shows, one drawn string per line (reportlab's streams: ASCII85 over Flate)."""
    shown: list[str] = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        data = zlib.decompress(base64.a85decode(stream.strip().removesuffix(b"~>")))
        shown += [s.decode("latin-1") for s in re.findall(rb"\((.*?)(?<!\\)\) Tj", data)]
    return "\n".join(re.sub(r"\\([()\\])", r"\1", s) for s in shown)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pdf_attachments(self) -> list[tuple[str, bytes]]:
        out = []
        for msg in self.messages:
            for part in msg.walk():
                if part.get_content_type() == "application/pdf":
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    out.append((part.get_filename() or "", payload))
        return out


@contextmanager
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    """A real local SMTP server (aiosmtpd) collecting what it receives."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with inbox.lock:
                inbox.messages.append(message_from_bytes(envelope.content))
            return "250 Message accepted for delivery"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()
