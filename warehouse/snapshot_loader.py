"""Land the registry's topics in DuckDB, idempotently (keyed on each message's event id).

Two sources feed the same landing code:

* :func:`load_kafka_window` — the default, what the nightly DAG runs — reads the topics with confluent-kafka for
  a window of Kafka record timestamps (per partition, ``offsets_for_times`` gives the first offset at or after
  each end of the window);
* :func:`load_jsonl_day` reads JSONL exports (``<inbox>/<day>/<topic>.jsonl``): seeded test and benchmark data.

Which records a day's snapshot reads, and which day an event counts for. The window of recon day D is
[D 00:00 - lookback, D+1 00:00 + late) by record timestamp (``ReconSettings.snapshot_window``); everything read
lands, and the day an event counts for is its business time (``event_ts``, e.g. ``completed_at``), never the
record's. The minutes before midnight cover events whose business time runs ahead of their record's (the
ledger's clock may lead its producer's by up to ``domain.ledger.MAX_CLOCK_SKEW_MS``). The minutes after it
cover the day's events appended after midnight (producer lag, a retry) and what became of holds open at the
cut-off (their capture or void), so the tie-out can report those holds as open at the cut-off. Consecutive
days' windows overlap, so every offset is read by one snapshot or the next; an event met twice lands once.

A late record — an event of D appended after D's window closed — is not in D's reconciliation: the next
day's snapshot lands it, and counts it in ``late`` (landed now, business time before the window's day).

Landing is idempotent: an event id lands once per topic (the first copy read wins), so re-running a day, an
overlap, or a record repeated by an at-least-once producer never counts twice. Every message read is
validated against its contract (``Topic.decode``); invalid ones go to ``raw_rejects``. Every offset read is
recorded in ``raw_offsets`` (landed / duplicate / rejected) and the range read per partition in
``meta_topic_offsets``, which the completeness check compares against.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from confluent_kafka import Consumer, KafkaError, TopicPartition
from pydantic import ValidationError

from contracts import topics as t
from domain.timeconv import to_ms
from streams.kafka.clients import watermarks
from streams.settings import get_settings

# The topics the warehouse snapshots (the registry's, consumed by Component.WAREHOUSE).
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


def _event_id_field(topic: t.Topic) -> str:
    """The value field that identifies one event: the registry's identity of the topic (one field here)."""
    (wire_name,) = topic.identity
    fields = topic.value_type.model_fields
    return next(name for name, info in fields.items() if wire_name in (name, info.alias))


EVENT_ID_FIELD: dict[str, str] = {topic.name: _event_id_field(topic) for topic in SNAPSHOT_TOPICS}
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
    timestamp_ms: int | None = None  # the record's Kafka timestamp, where there is one


@dataclass
class LoadStats:
    read: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    landed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duplicates: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    late: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # landed after their day's window closed
    batch_seconds: list[float] = field(default_factory=list)  # validate + land, per batch

    def merge(self, other: LoadStats) -> None:
        for mine, theirs in (
            (self.read, other.read),
            (self.landed, other.landed),
            (self.duplicates, other.duplicates),
            (self.rejected, other.rejected),
            (self.late, other.late),
        ):
            for k, v in theirs.items():
                mine[k] += v
        self.batch_seconds += other.batch_seconds

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "read": dict(self.read),
            "landed": dict(self.landed),
            "duplicates": dict(self.duplicates),
            "rejected": dict(self.rejected),
            "late": dict(self.late),
        }


_TIME_FIELDS_OF: dict[type, tuple[str, ...]] = {}


def _time_fields(cls: type) -> tuple[str, ...]:
    """The time fields a model declares, in ``_TIME_FIELDS`` order (asking a model for a field it lacks is slow)."""
    found = _TIME_FIELDS_OF.get(cls)
    if found is None:
        declared = getattr(cls, "model_fields", None)
        found = _TIME_FIELDS if declared is None else tuple(a for a in _TIME_FIELDS if a in declared)
        _TIME_FIELDS_OF[cls] = found
    return found


def event_time(value: object) -> datetime:
    """The business time an event carries: the first of ``_TIME_FIELDS`` it has a value for."""
    for attr in _time_fields(type(value)):
        ts = getattr(value, attr, None)
        if isinstance(ts, datetime):
            return ts.astimezone(UTC)
    raise ValueError(f"{type(value).__name__} carries no event time")


def land_records(
    con: duckdb.DuckDBPyConnection,
    records: Iterable[SourceRecord],
    bounds: dict[tuple[str, int], tuple[int, int]] | None = None,
    late_minutes: int | None = None,
) -> LoadStats:
    """Validate and land; re-landing the same records changes nothing. ``bounds``: (low, high) read per partition;
    ``late_minutes``: an event whose record was stamped this long or more after its business day ended is late
    (its day's window had closed)."""
    stats = LoadStats()
    batch: list[SourceRecord] = []
    seen_bounds: dict[tuple[str, int], list[int]] = {}
    with _one_checkpoint(con):
        for rec in records:
            key = (rec.topic, rec.partition)
            lo_hi = seen_bounds.setdefault(key, [rec.offset, rec.offset + 1])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], rec.offset), max(lo_hi[1], rec.offset + 1)
            batch.append(rec)
            if len(batch) >= BATCH_SIZE:
                stats.merge(_land_batch(con, batch, late_minutes))
                batch = []
        if batch:
            stats.merge(_land_batch(con, batch, late_minutes))
        merged = {k: (v[0], v[1]) for k, v in seen_bounds.items()}
        merged.update(bounds or {})
        _record_offsets(con, merged)
    return stats


@contextmanager
def _one_checkpoint(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Checkpoint once, after the load, not every 16 MiB of WAL: each checkpoint writes the growing event-id index
    again (a million events: a quarter less time, and flat batch latencies). Every batch still commits on its own."""
    (threshold,) = con.execute("SELECT current_setting('checkpoint_threshold')").fetchall()[0]
    con.execute("SET checkpoint_threshold = '1GB'")
    try:
        yield
    finally:
        con.execute(f"SET checkpoint_threshold = '{threshold}'")
    con.execute("CHECKPOINT")


_EVENT_SCHEMA: dict[str, Any] = {
    "topic": pl.String,
    "event_id": pl.String,
    "partition": pl.Int32,
    "offset": pl.Int64,
    "event_ts": pl.Datetime("us", "UTC"),
    "payload": pl.String,
    "record_ms": pl.Int64,
}
_OFFSET_SCHEMA: dict[str, Any] = {"topic": pl.String, "partition": pl.Int32, "offset": pl.Int64, "event_id": pl.String}
_REJECT_SCHEMA: dict[str, Any] = {
    "topic": pl.String,
    "partition": pl.Int32,
    "offset": pl.Int64,
    "reason": pl.String,
    "payload": pl.String,
}


def _land_batch(con: duckdb.DuckDBPyConnection, batch: Sequence[SourceRecord], late_minutes: int | None) -> LoadStats:
    started = time.perf_counter()
    stats = LoadStats()
    ev, off, rej = _decode_batch(batch, stats)
    ev = ev.with_columns(late=_late(late_minutes))
    now = datetime.now(UTC)
    inserted = _insert_batch(con, ev, off, rej, now)
    if ev.height:
        for topic_name, n, late in _landed_by_topic(con, ev, now):
            stats.landed[topic_name] += n
            if late:
                stats.late[topic_name] += late
        for topic_name, n in ev.group_by("topic").len().iter_rows():
            stats.duplicates[topic_name] += n - stats.landed.get(topic_name, 0)
    assert sum(stats.landed.values()) == inserted, (stats.landed, inserted)
    stats.batch_seconds.append(time.perf_counter() - started)
    return stats


def _decode_batch(batch: Sequence[SourceRecord], stats: LoadStats) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Events, offsets (every record's, with its event id or none) and rejects; counts read and rejected."""
    events: list[tuple[str, str, int, int, datetime, str, int | None]] = []
    offsets: list[tuple[str, int, int, str | None]] = []
    rejects: list[tuple[str, int, int, str, str]] = []
    for rec in batch:
        stats.read[rec.topic] += 1
        topic = t.topic(rec.topic)
        raw = rec.value if isinstance(rec.value, str) else rec.value.decode("utf-8", errors="replace")
        try:
            value = topic.decode(raw)
            event_id = str(getattr(value, EVENT_ID_FIELD[rec.topic]))
            events.append((rec.topic, event_id, rec.partition, rec.offset, event_time(value), raw, rec.timestamp_ms))
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


def _late(late_minutes: int | None) -> pl.Expr:
    """Stamped at or after the close of its business day's window (the day's end plus ``late_minutes``)."""
    if late_minutes is None:
        return pl.lit(False)
    closes = pl.col("event_ts").dt.truncate("1d").dt.offset_by(f"1d{late_minutes}m").dt.epoch("ms")
    return pl.col("record_ms").fill_null(-1) >= closes


def _landed_by_topic(con: duckdb.DuckDBPyConnection, ev: pl.DataFrame, now: datetime) -> list[tuple[str, int, int]]:
    """Per topic: the events of this batch this load added, and how many of them are late."""
    con.register("ev_keys", ev.select("topic", "event_id", "partition", "offset", "late"))
    try:
        rows = con.execute(
            """
            SELECT r.topic, count(*), count(*) FILTER (WHERE k.late) FROM raw_events r
            JOIN ev_keys k ON k.topic = r.topic AND k.event_id = r.event_id
                          AND k."partition" = r."partition" AND k."offset" = r."offset"
            WHERE r.loaded_at = $now GROUP BY r.topic
        """,
            {"now": now},
        ).fetchall()
    finally:
        con.unregister("ev_keys")
    return [(str(a), int(b), int(c)) for a, b, c in rows]


def _record_offsets(con: duckdb.DuckDBPyConnection, bounds: dict[tuple[str, int], tuple[int, int]]) -> None:
    """Widen each partition's range read to cover this read's. An empty read (no record in the window yet) claims
    nothing: merged into the range, it would claim the offsets between the range's end and the high-water mark,
    which no snapshot read (records a step of the previous run appended after its snapshot, e.g. the review's audit
    records)."""
    now = datetime.now(UTC)
    for (topic, partition), (low, high) in sorted(bounds.items()):
        if low == high:
            con.execute(
                "INSERT INTO meta_topic_offsets VALUES ($topic, $partition, $low, $high, $now) ON CONFLICT DO NOTHING",
                {"topic": topic, "partition": partition, "low": low, "high": high, "now": now},
            )
            continue
        con.execute(  # an earlier empty read held the place only
            'DELETE FROM meta_topic_offsets WHERE topic = $topic AND "partition" = $partition'
            " AND low_offset = high_offset",
            {"topic": topic, "partition": partition},
        )
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
            f"no topic export for {day} in {folder}: JSONL exports are seeded data (python -m devtools.recon_demo"
            " seed); the platform's own records are read from Kafka (NEXUS_RECON_SNAPSHOT_SOURCE=kafka, the default)"
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
    late_minutes: int | None = None,
) -> LoadStats:
    """Read [start, end) by record timestamp from every partition of ``topics`` and land it (see the module's
    docstring for the window of a recon day). No offset is committed: the window, not a group position, says
    what is read, so a re-run reads the same records."""
    if bootstrap_servers is None:
        bootstrap_servers = get_settings().bootstrap_servers
    consumer = (consumer_factory or Consumer)(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        bounds = _assign_window(consumer, topics, (start, end), bootstrap_servers, timeout_s)
        records = _window_records(consumer, bounds, timeout_s, poll_timeout_s)
        return land_records(con, records, bounds, late_minutes)
    finally:
        consumer.close()


def _assign_window(
    consumer: Any,
    topics: Sequence[t.Topic],
    window: tuple[datetime, datetime],
    bootstrap_servers: str,
    timeout_s: float,
) -> dict[tuple[str, int], tuple[int, int]]:
    """Assign every partition with records in the window at its first one; returns (first, stop) per partition:
    the first offset stamped at or after the window's start, and the first at or after its end (the high-water
    mark when there is none yet: the window reads what exists)."""
    start, end = window
    meta = consumer.list_topics(timeout=timeout_s)
    wanted = []
    for topic in topics:
        if topic.name not in meta.topics:
            raise RuntimeError(
                f"topic {topic.name} does not exist on {bootstrap_servers}; create the registry's"
                " topics first (`nexus topics`)"
            )
        wanted += [(topic.name, p) for p in sorted(meta.topics[topic.name].partitions)]
    starts = consumer.offsets_for_times([TopicPartition(n, p, to_ms(start)) for n, p in wanted], timeout=timeout_s)
    ends = consumer.offsets_for_times([TopicPartition(n, p, to_ms(end)) for n, p in wanted], timeout=timeout_s)
    bounds: dict[tuple[str, int], tuple[int, int]] = {}
    assign = []
    for s_tp, e_tp in zip(starts, ends, strict=True):
        _low, high = watermarks(consumer, s_tp.topic, s_tp.partition, timeout_s)
        first = s_tp.offset if s_tp.offset >= 0 else high
        stop = e_tp.offset if e_tp.offset >= 0 else high
        bounds[(s_tp.topic, s_tp.partition)] = (first, stop)
        if first < stop:
            assign.append(TopicPartition(s_tp.topic, s_tp.partition, first))
    consumer.assign(assign)
    return bounds


def _window_records(
    consumer: Any, bounds: dict[tuple[str, int], tuple[int, int]], timeout_s: float, poll_timeout_s: float
) -> Iterator[SourceRecord]:
    """The assigned partitions' records before each one's stop offset; a partition is paused once it reaches its
    stop (or the end of its log), and the read ends when every one has."""
    remaining = {key for key, (first, stop) in bounds.items() if first < stop}
    idle_since = time.monotonic()
    while remaining:
        msgs = consumer.consume(BATCH_SIZE, timeout=poll_timeout_s)
        if not msgs:
            if time.monotonic() - idle_since > timeout_s:
                raise TimeoutError(
                    f"no messages for {timeout_s}s while partitions {sorted(remaining)} "
                    "had not reached the window end; is the broker reachable?"
                )
            continue
        idle_since = time.monotonic()
        done = []
        for msg in msgs:
            key = (str(msg.topic()), int(msg.partition()))
            error = msg.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"Kafka error on {key[0]}[{key[1]}]: {error}")
            if key not in remaining:
                continue
            stop = bounds[key][1]
            if error is None and msg.offset() < stop:
                yield SourceRecord(key[0], key[1], msg.offset(), msg.value() or b"", msg.timestamp()[1])
            if error is not None or msg.offset() >= stop - 1:  # at the log's end, nothing before stop is left
                remaining.discard(key)
                done.append(TopicPartition(*key))
        if done:
            consumer.pause(done)
