"""Land the registry's topics in DuckDB, idempotently (keyed on each message's event id).

Two sources feed the same landing code:

* :func:`load_kafka_window` consumes the topics with confluent-kafka for a time window (Kafka record
  timestamps) — bootstrap from ``streams.settings.get_settings().bootstrap_servers``;
* :func:`load_jsonl_day` reads JSONL exports (``<inbox>/<day>/<topic>.jsonl``), which the seeded generator,
  the demo and the DAG test use so they need no broker.

Every message read is validated against its contract (``Topic.decode``); invalid ones go to ``raw_rejects``.
Every offset read is recorded in ``raw_offsets`` (landed / duplicate / rejected) and the high-water mark per
partition in ``meta_topic_offsets``, which the completeness check compares against.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from pydantic import ValidationError

from contracts import topics as t
from domain.timeconv import to_ms
from streams.settings import get_settings

# The topics the warehouse snapshots, and the field that identifies one event on each.
SNAPSHOT_TOPICS: tuple[t.Topic, ...] = (
    t.ENERGY_TRADES,
    t.ENERGY_SETTLEMENTS,
    t.LEDGER_TRANSFERS,
    t.FX_RATES,
    t.BRIDGE_SETTLEMENTS_COMPLETED,
    t.BRIDGE_SETTLEMENTS_FAILED,
    t.PAYOUT_REQUESTS,
    t.PAYOUT_RESULTS,
    t.AUDIT_RECORDS,
)
EVENT_ID_FIELD: dict[str, str] = {
    t.ENERGY_TRADES.name: "trade_id",
    t.ENERGY_SETTLEMENTS.name: "trade_id",
    t.LEDGER_TRANSFERS.name: "transfer_id",
    t.FX_RATES.name: "quote_id",
    t.BRIDGE_SETTLEMENTS_COMPLETED.name: "request_id",
    t.BRIDGE_SETTLEMENTS_FAILED.name: "request_id",
    t.PAYOUT_REQUESTS.name: "payout_id",
    t.PAYOUT_RESULTS.name: "payout_id",
    t.AUDIT_RECORDS.name: "audit_id",
}
_TIME_FIELDS = (
    "completed_at",
    "failed_at",
    "settled_at",
    "executed_at",
    "occurred_at",
    "requested_at",
    "as_of",
    "timestamp",
)
BATCH_SIZE = 20_000


@dataclass(frozen=True, slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | str


@dataclass
class LoadStats:
    read: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    landed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duplicates: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def merge(self, other: LoadStats) -> None:
        for mine, theirs in (
            (self.read, other.read),
            (self.landed, other.landed),
            (self.duplicates, other.duplicates),
            (self.rejected, other.rejected),
        ):
            for k, v in theirs.items():
                mine[k] += v

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "read": dict(self.read),
            "landed": dict(self.landed),
            "duplicates": dict(self.duplicates),
            "rejected": dict(self.rejected),
        }


def event_time(value: Any) -> datetime:
    for attr in _TIME_FIELDS:
        ts = getattr(value, attr, None)
        if isinstance(ts, datetime):
            return ts.astimezone(UTC)
    raise ValueError(f"{type(value).__name__} carries no event time")


def land_records(
    con: duckdb.DuckDBPyConnection,
    records: Iterable[SourceRecord],
    bounds: dict[tuple[str, int], tuple[int, int]] | None = None,
) -> LoadStats:
    """Validate and land; re-landing the same records changes nothing. ``bounds``: (low, high) read per partition."""
    stats = LoadStats()
    batch: list[SourceRecord] = []
    seen_bounds: dict[tuple[str, int], list[int]] = {}
    for rec in records:
        key = (rec.topic, rec.partition)
        lo_hi = seen_bounds.setdefault(key, [rec.offset, rec.offset + 1])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], rec.offset), max(lo_hi[1], rec.offset + 1)
        batch.append(rec)
        if len(batch) >= BATCH_SIZE:
            stats.merge(_land_batch(con, batch))
            batch = []
    if batch:
        stats.merge(_land_batch(con, batch))
    merged = {k: (v[0], v[1]) for k, v in seen_bounds.items()}
    merged.update(bounds or {})
    _record_offsets(con, merged)
    return stats


_EVENT_SCHEMA: dict[str, Any] = {
    "topic": pl.String,
    "event_id": pl.String,
    "partition": pl.Int32,
    "offset": pl.Int64,
    "event_ts": pl.Datetime("us", "UTC"),
    "payload": pl.String,
}
_OFFSET_SCHEMA: dict[str, Any] = {"topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "event_id": pl.String}
_REJECT_SCHEMA: dict[str, Any] = {
    "topic": pl.String,
    "partition": pl.Int32,
    "offset": pl.Int64,
    "reason": pl.String,
    "payload": pl.String,
}


def _land_batch(con: duckdb.DuckDBPyConnection, batch: Sequence[SourceRecord]) -> LoadStats:
    stats = LoadStats()
    ev, off, rej = _decode_batch(batch, stats)
    now = datetime.now(UTC)
    inserted = _insert_batch(con, ev, off, rej, now)
    if ev.height:
        for topic_name, n in _landed_by_topic(con, ev, now):
            stats.landed[topic_name] += n
        for topic_name, n in ev.group_by("topic").len().iter_rows():
            stats.duplicates[topic_name] += n - stats.landed.get(topic_name, 0)
    assert sum(stats.landed.values()) == inserted, (stats.landed, inserted)
    return stats


def _decode_batch(batch: Sequence[SourceRecord], stats: LoadStats) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Events, offsets (every record's, with its event id or none) and rejects; counts read and rejected."""
    events: list[tuple[str, str, int, int, datetime, str]] = []
    offsets: list[tuple[str, int, int, str | None]] = []
    rejects: list[tuple[str, int, int, str, str]] = []
    for rec in batch:
        stats.read[rec.topic] += 1
        topic = t.topic(rec.topic)
        raw = rec.value if isinstance(rec.value, str) else rec.value.decode("utf-8", errors="replace")
        try:
            value = topic.decode(raw)
            event_id = str(getattr(value, EVENT_ID_FIELD[rec.topic]))
            events.append((rec.topic, event_id, rec.partition, rec.offset, event_time(value), raw))
            offsets.append((rec.topic, rec.partition, rec.offset, event_id))
        except (ValidationError, ValueError) as exc:
            reason = str(exc).splitlines()
            rejects.append((rec.topic, rec.partition, rec.offset, " | ".join(reason[:6])[:2000], raw[:100_000]))
            offsets.append((rec.topic, rec.partition, rec.offset, None))
            stats.rejected[rec.topic] += 1
    return (
        pl.DataFrame(events, schema=_EVENT_SCHEMA, orient="row"),
        pl.DataFrame(offsets, schema=_OFFSET_SCHEMA, orient="row"),
        pl.DataFrame(rejects, schema=_REJECT_SCHEMA, orient="row"),
    )


def _insert_batch(
    con: duckdb.DuckDBPyConnection, ev: pl.DataFrame, off: pl.DataFrame, rej: pl.DataFrame, now: datetime
) -> int:
    """Land one batch in one transaction (the first copy of an event wins); returns how many events it added."""
    con.register("batch_events", ev)
    con.register("batch_offsets", off)
    con.register("batch_rejects", rej)
    try:
        con.execute("BEGIN")
        before = con.execute("SELECT count(*) FROM raw_events").fetchall()[0]
        con.execute(
            """
            INSERT INTO raw_events
            SELECT b.topic, b.event_id, b."partition", b."offset", b.event_ts, CAST(b.payload AS JSON), $now
            FROM batch_events b
            ANTI JOIN raw_events r ON r.topic = b.topic AND r.event_id = b.event_id
            QUALIFY row_number() OVER (PARTITION BY b.topic, b.event_id ORDER BY b."partition", b."offset") = 1
        """,
            {"now": now},
        )
        after = con.execute("SELECT count(*) FROM raw_events").fetchall()[0]
        con.execute("""
            INSERT INTO raw_offsets
            SELECT o.topic, o."partition", o."offset", o.event_id,
                   CASE WHEN o.event_id IS NULL THEN 'rejected'
                        WHEN e."partition" = o."partition" AND e."offset" = o."offset" THEN 'landed'
                        ELSE 'duplicate' END
            FROM batch_offsets o
            LEFT JOIN raw_events e ON e.topic = o.topic AND e.event_id = o.event_id
            ON CONFLICT DO NOTHING
        """)
        con.execute("INSERT INTO raw_rejects SELECT * FROM batch_rejects ON CONFLICT DO NOTHING")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("batch_events", "batch_offsets", "batch_rejects"):
            con.unregister(name)
    assert before is not None and after is not None
    return int(after[0] - before[0])


def _landed_by_topic(con: duckdb.DuckDBPyConnection, ev: pl.DataFrame, now: datetime) -> list[tuple[str, int]]:
    con.register("ev_keys", ev.select("topic", "event_id", "partition", "offset"))
    try:
        rows = con.execute(
            """
            SELECT r.topic, count(*) FROM raw_events r
            JOIN ev_keys k ON k.topic = r.topic AND k.event_id = r.event_id
                          AND k."partition" = r."partition" AND k."offset" = r."offset"
            WHERE r.loaded_at = $now GROUP BY r.topic
        """,
            {"now": now},
        ).fetchall()
    finally:
        con.unregister("ev_keys")
    return [(str(a), int(b)) for a, b in rows]


def _record_offsets(con: duckdb.DuckDBPyConnection, bounds: dict[tuple[str, int], tuple[int, int]]) -> None:
    now = datetime.now(UTC)
    for (topic, partition), (low, high) in sorted(bounds.items()):
        con.execute(
            """
            INSERT INTO meta_topic_offsets VALUES ($topic, $partition, $low, $high, $now)
            ON CONFLICT (topic, "partition") DO UPDATE SET
                updated_at = CASE WHEN least(meta_topic_offsets.low_offset, excluded.low_offset)
                                       <> meta_topic_offsets.low_offset
                                    OR greatest(meta_topic_offsets.high_offset, excluded.high_offset)
                                       <> meta_topic_offsets.high_offset
                                  THEN excluded.updated_at ELSE meta_topic_offsets.updated_at END,
                low_offset = least(meta_topic_offsets.low_offset, excluded.low_offset),
                high_offset = greatest(meta_topic_offsets.high_offset, excluded.high_offset)
        """,
            {"topic": topic, "partition": partition, "low": low, "high": high, "now": now},
        )


# --------------------------------------------------------------------------- JSONL source


def jsonl_records(inbox_dir: Path, day: date, topics: Iterable[t.Topic] = SNAPSHOT_TOPICS) -> Iterable[SourceRecord]:
    folder = Path(inbox_dir) / day.isoformat()
    for topic in topics:
        path = folder / f"{topic.name}.jsonl"
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    value = row["value"]
                    yield SourceRecord(
                        topic.name,
                        int(row["partition"]),
                        int(row["offset"]),
                        value if isinstance(value, str) else json.dumps(value, separators=(",", ":")),
                    )
                except (KeyError, ValueError, TypeError) as exc:
                    raise ValueError(f"{path}:{n}: not an export row {{partition, offset, value}}: {exc}") from exc


def load_jsonl_day(con: duckdb.DuckDBPyConnection, inbox_dir: Path, day: date) -> LoadStats:
    folder = Path(inbox_dir) / day.isoformat()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no topic export for {day} in {folder}; run the exporter (or the seeded generator)"
            " or set NEXUS_RECON_SNAPSHOT_SOURCE=kafka"
        )
    return land_records(con, jsonl_records(inbox_dir, day))


# --------------------------------------------------------------------------- Kafka source

ConsumerFactory = Callable[[dict[str, Any]], Any]


def load_kafka_window(
    con: duckdb.DuckDBPyConnection,
    start: datetime,
    end: datetime,
    *,
    topics: Sequence[t.Topic] = SNAPSHOT_TOPICS,
    bootstrap_servers: str | None = None,
    group_id: str = "nexus-recon-snapshot",
    consumer_factory: ConsumerFactory | None = None,
    timeout_s: float = 30.0,
    poll_timeout_s: float = 1.0,
) -> LoadStats:
    """Consume [start, end) by record timestamp from every partition of ``topics`` and land it."""
    from confluent_kafka import TopicPartition  # imported here: the Airflow venv may not have it

    if consumer_factory is None:
        from confluent_kafka import Consumer

        consumer_factory = Consumer
    if bootstrap_servers is None:
        bootstrap_servers = get_settings().bootstrap_servers
    consumer = consumer_factory(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    try:
        bounds = _assign_window(consumer, TopicPartition, topics, (start, end), bootstrap_servers, timeout_s)
        return land_records(con, _window_records(consumer, bounds, timeout_s, poll_timeout_s), bounds)
    finally:
        consumer.close()


def _assign_window(
    consumer: Any,
    topic_partition: Any,  # confluent_kafka.TopicPartition, imported by the caller
    topics: Sequence[t.Topic],
    window: tuple[datetime, datetime],
    bootstrap_servers: str,
    timeout_s: float,
) -> dict[tuple[str, int], tuple[int, int]]:
    """Assign every partition with records in the window at its first one; returns (first, stop) per partition."""
    start, end = window
    meta = consumer.list_topics(timeout=timeout_s)
    start_ms, end_ms = to_ms(start), to_ms(end)
    wanted = []
    for topic in topics:
        if topic.name not in meta.topics:
            raise RuntimeError(
                f"topic {topic.name} does not exist on {bootstrap_servers}; create the registry's"
                " topics first (python -m streams ... create-topics)"
            )
        wanted += [(topic.name, p) for p in meta.topics[topic.name].partitions]
    starts = consumer.offsets_for_times([topic_partition(n, p, start_ms) for n, p in wanted], timeout=timeout_s)
    ends = consumer.offsets_for_times([topic_partition(n, p, end_ms) for n, p in wanted], timeout=timeout_s)
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    assign = []
    for s_tp, e_tp in zip(starts, ends, strict=True):
        _low, high = consumer.get_watermark_offsets(topic_partition(s_tp.topic, s_tp.partition), timeout=timeout_s)
        first = s_tp.offset if s_tp.offset >= 0 else high
        stop = e_tp.offset if e_tp.offset >= 0 else high
        bounds[(s_tp.topic, s_tp.partition)] = (first, stop)
        if first < stop:
            assign.append(topic_partition(s_tp.topic, s_tp.partition, first))
    consumer.assign(assign)
    return bounds


def _window_records(
    consumer: Any, bounds: dict[tuple[str, int], tuple[int, int]], timeout_s: float, poll_timeout_s: float
) -> Iterator[SourceRecord]:
    """The assigned partitions' records before each one's stop offset; ends when every partition reached it."""
    remaining = {key for key, (first, stop) in bounds.items() if first < stop}
    idle_since = datetime.now(UTC)
    while remaining:
        msg = consumer.poll(poll_timeout_s)
        if msg is None:
            if (datetime.now(UTC) - idle_since).total_seconds() > timeout_s:
                raise TimeoutError(
                    f"no messages for {timeout_s}s while partitions {sorted(remaining)} "
                    "had not reached the window end; is the broker reachable?"
                )
            continue
        idle_since = datetime.now(UTC)
        if msg.error():
            raise RuntimeError(f"Kafka error on {msg.topic()}[{msg.partition()}]: {msg.error()}")
        topic_name, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic_name is not None and partition is not None and offset is not None
        key = (str(topic_name), int(partition))
        stop = bounds[key][1]
        if offset < stop:
            yield SourceRecord(key[0], key[1], offset, msg.value() or b"")
        if offset >= stop - 1:
            remaining.discard(key)
