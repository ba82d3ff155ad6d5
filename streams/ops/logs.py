"""One logging setup for every process: JSON lines (``NEXUS_LOG_FORMAT=json``, the default) or the classic text line.

    from streams.ops import logs
    logs.setup(settings)                       # instead of logging.basicConfig(...), first thing in main()

    with logs.transaction(request_id):        # every line logged inside (and in tasks started inside) carries it
        log.info("hold placed")
    log.info("captured", extra={"transaction_id": tx_id})   # or per line

A JSON line is ``{"ts", "level", "logger", "message"[, "transaction_id"][, "exc"]}``; ``message`` is the text the
text format would print after the logger's name, so a search for a message (tests wait for "Worker ready") finds it
in either format. Grep one settlement across workers: ``grep '"transaction_id": "tx-1"' .local/run/*.log``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TRANSACTION_ID: ContextVar[str | None] = ContextVar("nexus_transaction_id", default=None)

LogFormat = Literal["json", "text"]


@contextlib.contextmanager
def transaction(transaction_id: str | None) -> Iterator[None]:
    """Tag every record logged in this context (and in asyncio tasks created in it) with ``transaction_id``."""
    token = TRANSACTION_ID.set(transaction_id)
    try:
        yield
    finally:
        TRANSACTION_ID.reset(token)


class TransactionFilter(logging.Filter):
    """Puts the context's transaction id on records that carry none of their own (``extra``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "transaction_id", None) is None:
            record.transaction_id = TRANSACTION_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; non-ASCII kept as is (UTF-8 stream), so messages read the same as in text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        transaction_id = getattr(record, "transaction_id", None)
        if transaction_id is not None:
            line["transaction_id"] = str(transaction_id)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def handler(log_format: LogFormat) -> logging.Handler:
    """A stderr handler writing ``log_format``, with the transaction filter."""
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    out.addFilter(TransactionFilter())
    return out


def setup(settings: object | None = None, level: int = logging.INFO, log_format: LogFormat | None = None) -> None:
    """Replace the root logger's handlers with one stderr handler in the settings' ``log_format``.

    ``settings``: a :class:`streams.settings.Settings` (read for ``log_format``); None reads the environment.
    Idempotent: calling it twice leaves one handler.
    """
    if log_format is None:
        if settings is None:
            from streams.settings import get_settings

            settings = get_settings()
        log_format = getattr(settings, "log_format", "json")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(log_format or "json"))
    root.setLevel(level)


__all__ = ["TRANSACTION_ID", "JsonFormatter", "TransactionFilter", "handler", "setup", "transaction"]
