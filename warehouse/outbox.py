"""The warehouse's outbox: what a review action must tell the platform, sent once the action is committed.

A review action commits in DuckDB first, with what it must publish: its audit record
(``recon_exception_actions.audit_record``, for audit.records) and, for a ledger correction, its governance request
(``recon_corrections.request``, for governance.requests). :func:`publish` then sends every row not yet
acknowledged and marks it (``published_at`` / ``sent_at``) only after the broker acknowledged it. A crash or an
unreachable broker between the two leaves the row unmarked: the next CLI action, nightly review or ``exceptions
publish`` sends it again, with the same bytes, so the same auditId (the audit log appends it once) and the same
request (the governance service ignores a request it already has). Nothing is lost; nothing is applied twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
from confluent_kafka import Producer

from contracts.topics import AUDIT_RECORDS, GOVERNANCE_REQUESTS, Topic
from streams.kafka.clients import produce_bounded, producer_config

log = logging.getLogger("nexus.recon.outbox")

BATCH_MAX = 5_000  # rows sent per round; a round's marks commit together
ROUNDS_MAX = 200  # so one call sends at most 1,000,000 rows, then reports the rest as queued

ProducerFactory = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Published:
    requests_sent: int
    audits_sent: int
    requests_queued: int  # still waiting for an acknowledgement
    audits_queued: int
    error: str | None = None  # why some are still queued

    @property
    def queued(self) -> int:
        return self.requests_queued + self.audits_queued


# (topic, table, id column, value column, marker column, order)
_OUTBOXES: tuple[tuple[Topic, str, str, str, str, str], ...] = (
    (GOVERNANCE_REQUESTS, "recon_corrections", "request_id", "request", "sent_at", "requested_at, request_id"),
    (AUDIT_RECORDS, "recon_exception_actions", "action_id", "audit_record", "published_at", "acted_at, action_id"),
)


def queued(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(governance requests, audit records) not yet acknowledged."""
    counts = [
        con.execute(f"SELECT count(*) FROM {table} WHERE {marker} IS NULL").fetchall()[0][0]
        for _topic, table, _id, _value, marker, _order in _OUTBOXES
    ]
    return int(counts[0]), int(counts[1])


def publish(
    con: duckdb.DuckDBPyConnection,
    bootstrap: str,
    timeout_s: float,
    producer_factory: ProducerFactory = Producer,
) -> Published:
    """Send what is queued (requests first: an action's audit record never precedes the request it announces)."""
    producer = producer_factory(producer_config(bootstrap, message_timeout_ms=int(timeout_s * 1000), logger=log))
    sent = [0, 0]
    error: str | None = None
    try:
        for i, outbox in enumerate(_OUTBOXES):
            for _ in range(ROUNDS_MAX):
                n, error = _round(con, producer, outbox, timeout_s)
                sent[i] += n
                if error is not None or n < BATCH_MAX:
                    break
            if error is not None:
                break
    finally:
        producer.purge()  # nothing unacknowledged may go out later, unmarked and unknown to us
    left = queued(con)
    if error is not None:
        log.warning("outbox: %d requests and %d audit records stay queued: %s", *left, error)
    return Published(sent[0], sent[1], left[0], left[1], error)


def _round(
    con: duckdb.DuckDBPyConnection, producer: Any, outbox: tuple[Topic, str, str, str, str, str], timeout_s: float
) -> tuple[int, str | None]:
    """One batch of one outbox: produce, wait for the acknowledgements, mark the acknowledged; (marked, error)."""
    topic, table, id_col, value_col, marker, order = outbox
    rows = con.execute(
        f"SELECT {id_col}, CAST({value_col} AS VARCHAR) FROM {table} WHERE {marker} IS NULL ORDER BY {order}"
        f" LIMIT {BATCH_MAX}"
    ).fetchall()
    acked: list[str] = []
    failed: list[str] = []
    for row_id, text in rows:
        value = text.encode()
        key = topic.key_of(topic.decode(value))

        def delivered(err: Any, _msg: Any, row_id: str = row_id) -> None:
            (failed if err is not None else acked).append(row_id if err is None else f"{row_id}: {err}")

        produce_bounded(producer, topic.name, value, key, on_delivery=delivered)
    left = producer.flush(timeout_s)
    if acked:
        at = datetime.now(UTC)
        con.execute("BEGIN")
        try:
            con.executemany(f"UPDATE {table} SET {marker} = $1 WHERE {id_col} = $2", [(at, a) for a in acked])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    if left or failed:
        return len(acked), f"{topic.name}: {left} unacknowledged after {timeout_s}s, {len(failed)} failed {failed[:3]}"
    return len(acked), None


__all__ = ["Published", "publish", "queued"]
