"""The settlement status read model's SQLite file: what the HTTP API reads, what the status service writes.

One writer (``python -m streams.status``) and any number of readers (the API's processes, ``readonly=True``). The
file is in WAL mode, so readers read while the writer writes, each read seeing one committed batch.

**Positions with the rows.** Each batch's rows and the next offset of every partition it read are committed in
one transaction: after a crash the service resumes exactly after the last committed record (no row applied
twice, none skipped). ``synchronous=NORMAL``: a power loss may lose the last commits, never half of one, and the
offsets are lost with them, so those records are read again.

**Generation.** A new file gets a random generation id; history cursors carry it (a cursor issued before the file
was deleted and rebuilt is refused, its sequence numbers meaning nothing in the new file). A reader notices that
the file it has open was replaced and opens the new one.

Times are stored as integer microseconds since the epoch, UTC; unknown owner and currency read as "" (a failed
card payment whose request is not, or no longer, on ``bridge.requests`` names no merchant).
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from domain.settlement_status import (
    Details,
    Kind,
    Observation,
    State,
    Status,
    apply,
    decode_cursor,
    encode_cursor,
)

log = logging.getLogger("nexus.status")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCHEMA_VERSION = "1"
HISTORY_LIMIT_MAX = 500
REOPEN_CHECK_S = 1.0  # a reader checks at most this often whether the file was replaced

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- grain: one row per settlement id (bridge request_id or payout_id); seq: insertion order, never reused
CREATE TABLE IF NOT EXISTS statuses (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    owner_id TEXT,
    payer_account_id TEXT,
    state TEXT NOT NULL,
    phase TEXT,
    reason_code TEXT,
    reason TEXT,
    currency TEXT,
    amount_minor INTEGER,
    kaus_units INTEGER,
    rail TEXT,
    provider_reference TEXT,
    bridge_tx_id TEXT,
    created_us INTEGER NOT NULL,
    created_from_request INTEGER NOT NULL,
    state_us INTEGER NOT NULL,  -- the state's own event time: updated_at
    state_step INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS statuses_owner ON statuses (owner_id, seq);
CREATE INDEX IF NOT EXISTS statuses_created ON statuses (created_us);
-- grain: one row per input partition; every record below next_offset is reflected in statuses
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL CHECK (next_offset >= 0),
    records INTEGER NOT NULL DEFAULT 0,  -- how many records of the partition were applied (each once)
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
-- grain: one row per input partition: its watermarks when the service last looked (for the lag)
CREATE TABLE IF NOT EXISTS ends (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
"""

COLUMNS = (
    "seq, id, kind, owner_id, payer_account_id, state, phase, reason_code, reason, currency, amount_minor, "
    "kaus_units, rail, provider_reference, bridge_tx_id, created_us, created_from_request, state_us, state_step"
)
COUNTERS = ("records_applied", "records_skipped", "records_ignored", "conflicts", "rows_changed")


@dataclass(frozen=True, slots=True)
class StatusRecord:
    id: str  # bridge request_id or payout_id
    kind: str  # "BRIDGE" | "PAYOUT"
    owner_id: str  # merchant_id (BRIDGE) or holder account_id (PAYOUT); "" while unknown
    payer_account_id: str | None
    state: str  # "PENDING" | "WAITING" | "COMPLETED" | "FAILED"
    phase: str | None  # PENDING: the bridge phase if known; FAILED: failed_phase
    reason_code: str | None
    reason: str | None
    currency: str  # "" while unknown (a waiting payout names none)
    amount_minor: int | None
    kaus_units: int | None
    rail: str | None
    provider_reference: str | None
    bridge_tx_id: str | None
    created_at: datetime
    updated_at: datetime
    seq: int


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current the read model is: what readiness checks (the API's /healthz)."""

    present: bool  # the file exists (False: the status service has not created it yet)
    applied_at: datetime | None  # wall clock of the service's last committed batch of records
    last_record_at: datetime | None  # the Kafka timestamp of the last record applied
    records_applied: int
    records_skipped: int  # records that did not validate (their owners dead-letter them)
    lag: int | None  # records on the input topics not yet applied, as of lag_checked_at; None: not measured yet
    lag_checked_at: datetime | None  # wall clock of the service's last look at the topics' ends (also when idle)
    generation: str | None


@dataclass(frozen=True, slots=True)
class Input:
    """One consumed record for :meth:`StatusStore.apply_batch`: where it was, and what it observes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    observation: Observation | None  # None: nothing to apply (a repeat, a tombstone)
    skipped: bool = False  # it did not validate


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    changed: int
    skipped: int
    ignored: int  # valid records that observe nothing: repeated answers, tombstones
    conflicts: list[str]
    stale: int  # records below the stored position of their partition (read twice): ignored


def to_us(moment: datetime) -> int:
    assert moment.tzinfo is not None, "naive datetime"
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


class StatusStore:
    """The read model's file (see the module doc). Readers: :meth:`get`, :meth:`history`, :meth:`freshness`;
    safe from several threads (one connection per thread). The writer: :meth:`apply_batch` and friends."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._generation: str | None = None
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = self._open()
            with con:
                con.executescript(SCHEMA)
                if con.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone() is None:
                    self._init_meta(con)
            self._positions = self._read_positions(con)
            self._next_seq = int(self._meta(con, "next_seq") or 1)

    # ------------------------------------------------------------------ connections

    def _open(self) -> sqlite3.Connection:
        if self.readonly:  # mode=rw: never creates the file; query_only: never writes it
            con = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, check_same_thread=False, timeout=30)
            con.execute("PRAGMA query_only=1")
        else:
            con = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.isolation_level = "DEFERRED"
        con.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages per connection
        stat = os.stat(self.path)
        with self._lock:
            self._connections.append(con)
        self._local.con = con
        self._local.identity = (stat.st_dev, stat.st_ino)
        return con

    def _con(self) -> sqlite3.Connection | None:
        """This thread's connection; a reader opens (or re-opens, the file replaced) when it is there."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if not self.readonly:
            return con if con is not None else self._open()
        now = time.monotonic()
        if con is not None and now - getattr(self._local, "checked_at", 0.0) < REOPEN_CHECK_S:
            return con
        self._local.checked_at = now
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        if con is not None and getattr(self._local, "identity", None) == (stat.st_dev, stat.st_ino):
            return con
        if con is not None:
            self._forget(con)
            con = None
        try:
            con = self._open()
            generation = self._meta(con, "generation")
        except (sqlite3.Error, OSError) as exc:  # created but not yet initialised by the writer, or gone again
            log.info("status store %s not readable yet: %s", self.path, exc)
            generation = None
        if generation is None:
            if con is not None:
                self._forget(con)
            return None
        self._generation = generation
        return con

    def _forget(self, con: sqlite3.Connection) -> None:
        with self._lock:
            if con in self._connections:
                self._connections.remove(con)
        con.close()
        self._local.con = None

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for con in connections:
            con.close()
        self._local = threading.local()

    # ------------------------------------------------------------------ meta

    @staticmethod
    def _meta(con: sqlite3.Connection, key: str) -> str | None:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _init_meta(self, con: sqlite3.Connection) -> None:
        values = {"generation": secrets.token_hex(8), "schema_version": SCHEMA_VERSION, "next_seq": "1"}
        values.update(dict.fromkeys(COUNTERS, "0"))
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(values.items()))
        log.info("status store %s created (generation %s)", self.path, values["generation"])

    @property
    def generation(self) -> str | None:
        con = self._con()
        if con is None:
            return None
        if self._generation is None:
            self._generation = self._meta(con, "generation")
        return self._generation

    # ------------------------------------------------------------------ reading

    def get(self, record_id: str) -> StatusRecord | None:
        con = self._con()
        if con is None:
            return None
        row = con.execute(f"SELECT {COLUMNS} FROM statuses WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else _record(row)

    def history(
        self,
        owner_id: str | None,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        state: str | None = None,
        currency: str | None = None,
        rail: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[StatusRecord], str | None]:
        """Newest first by insertion sequence; the cursor of the next page, or None on the last page.

        ``created_from`` inclusive, ``created_to`` exclusive (UTC-aware). A page never shifts as new settlements
        arrive: they get higher sequences than any cursor. Raises InvalidCursor (a ValueError) for a cursor this
        file did not issue, ValueError for a naive time or a limit outside 1..HISTORY_LIMIT_MAX.
        """
        if not 1 <= limit <= HISTORY_LIMIT_MAX:
            raise ValueError(f"limit must be 1..{HISTORY_LIMIT_MAX}, got {limit}")
        for name, moment in (("created_from", created_from), ("created_to", created_to)):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must carry a UTC offset")
        con = self._con()
        generation = self.generation
        if con is None or generation is None:
            if cursor is not None:
                decode_cursor(cursor, "<none>")  # raises: no file, so no cursor of it
            return [], None
        where, args = _filters(owner_id, created_from, created_to, state, currency, rail, kind)
        if cursor is not None:
            where.append("seq < ?")
            args.append(decode_cursor(cursor, generation))
        clause = " AND ".join(where) or "1"
        rows = con.execute(
            f"SELECT {COLUMNS} FROM statuses WHERE {clause} ORDER BY seq DESC LIMIT ?", (*args, limit + 1)
        ).fetchall()
        records = [_record(r) for r in rows[:limit]]
        more = len(rows) > limit
        return records, encode_cursor(generation, records[-1].seq) if more else None

    def freshness(self) -> Freshness:
        con = self._con()
        if con is None:
            return Freshness(False, None, None, 0, 0, None, None, None)
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        lag_row = con.execute(
            "SELECT count(*), sum(max(0, e.high - max(e.low, coalesce(o.next_offset, 0)))) "
            "FROM ends e LEFT JOIN offsets o ON o.topic = e.topic AND o.partition = e.partition"
        ).fetchone()
        checked = meta.get("ends_checked_us")
        applied = meta.get("applied_us")
        last = meta.get("last_record_ms")
        return Freshness(
            present=True,
            applied_at=None if applied is None else from_us(int(applied)),
            last_record_at=None if last is None else from_us(int(last) * 1000),
            records_applied=int(meta.get("records_applied", 0)),
            records_skipped=int(meta.get("records_skipped", 0)),
            lag=int(lag_row[1] or 0) if lag_row[0] and checked is not None else None,
            lag_checked_at=None if checked is None else from_us(int(checked)),
            generation=meta.get("generation"),
        )

    def counters(self) -> dict[str, int]:
        con = self._con()
        if con is None:
            return {}
        rows = con.execute(f"SELECT key, value FROM meta WHERE key IN ({','.join('?' * len(COUNTERS))})", COUNTERS)
        return {key: int(value) for key, value in rows}

    # ------------------------------------------------------------------ writing (the status service only)

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read of each input partition the file has seen."""
        return dict(self._positions)

    @staticmethod
    def _read_positions(con: sqlite3.Connection) -> dict[tuple[str, int], int]:
        rows = con.execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return {(topic, int(partition)): int(offset) for topic, partition, offset in rows}

    def apply_batch(self, inputs: Sequence[Input], wall: datetime | None = None) -> BatchOutcome:
        """Every input's observation and its partition's next offset, in one transaction."""
        assert not self.readonly, "a read-only store"
        con = self._con()
        assert con is not None
        positions = dict(self._positions)
        read: dict[tuple[str, int], int] = {}
        counts = dict.fromkeys(COUNTERS, 0)
        conflicts: list[str] = []
        stale = 0
        last_ms: int | None = None
        next_seq = self._next_seq
        with con:
            for item in inputs:
                where = (item.topic, item.partition)
                if item.offset < positions.get(where, 0):
                    stale += 1
                    continue
                positions[where] = item.offset + 1
                read[where] = read.get(where, 0) + 1
                last_ms = item.timestamp_ms if last_ms is None else max(last_ms, item.timestamp_ms)
                if item.skipped:
                    counts["records_skipped"] += 1
                    continue
                counts["records_applied"] += 1
                if item.observation is None:
                    counts["records_ignored"] += 1
                    continue
                changed, conflict, next_seq = self._apply_one(con, item.observation, next_seq)
                counts["rows_changed"] += changed
                if conflict:
                    counts["conflicts"] += 1
                    conflicts.append(item.observation.id)
            self._write_positions(con, positions, read)
            self._write_meta(con, counts, next_seq, last_ms, wall or datetime.now(UTC))
        self._positions, self._next_seq = positions, next_seq
        return BatchOutcome(
            counts["records_applied"],
            counts["rows_changed"],
            counts["records_skipped"],
            counts["records_ignored"],
            conflicts,
            stale,
        )

    def _apply_one(self, con: sqlite3.Connection, obs: Observation, next_seq: int) -> tuple[bool, bool, int]:
        row = con.execute(f"SELECT {COLUMNS} FROM statuses WHERE id = ?", (obs.id,)).fetchone()
        current = None if row is None else _status(row)
        outcome = apply(current, obs)
        new = outcome.status
        if new is None:
            return False, outcome.conflict, next_seq
        if row is None:
            con.execute(f"INSERT INTO statuses ({COLUMNS}) VALUES ({','.join('?' * 19)})", (next_seq, *_values(new)))
            return True, outcome.conflict, next_seq + 1
        con.execute(
            "UPDATE statuses SET kind=?, owner_id=?, payer_account_id=?, state=?, phase=?, reason_code=?, reason=?, "
            "currency=?, amount_minor=?, kaus_units=?, rail=?, provider_reference=?, bridge_tx_id=?, created_us=?, "
            "created_from_request=?, state_us=?, state_step=? WHERE id=?",
            (*_values(new)[1:], new.id),
        )
        return True, outcome.conflict, next_seq

    @staticmethod
    def _write_positions(
        con: sqlite3.Connection, positions: dict[tuple[str, int], int], read: dict[tuple[str, int], int]
    ) -> None:
        con.executemany(
            "INSERT INTO offsets (topic, partition, next_offset, records) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset, "
            "records = records + excluded.records",
            [(topic, partition, positions[where], n) for where, n in read.items() for topic, partition in (where,)],
        )

    def records_read(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Per input partition: (next offset, records applied from it). Each record counts once, however often
        it was delivered: on a topic without compaction or transactions the two are equal from offset 0."""
        con = self._con()
        if con is None:
            return {}
        rows = con.execute("SELECT topic, partition, next_offset, records FROM offsets").fetchall()
        return {(topic, int(p)): (int(offset), int(n)) for topic, p, offset, n in rows}

    @staticmethod
    def _write_meta(
        con: sqlite3.Connection, counts: dict[str, int], next_seq: int, last_ms: int | None, wall: datetime
    ) -> None:
        con.executemany(
            "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = ?",
            [(n, key) for key, n in counts.items() if n],
        )
        values = [("next_seq", str(next_seq)), ("applied_us", str(to_us(wall)))]
        if last_ms is not None:
            values.append(("last_record_ms", str(last_ms)))
        con.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", values
        )

    def record_ends(self, ends: Iterable[tuple[str, int, int, int]], wall: datetime | None = None) -> None:
        """The input partitions' (topic, partition, low, high) watermarks, for the lag readers compute."""
        assert not self.readonly, "a read-only store"
        con = self._con()
        assert con is not None
        at = str(to_us(wall or datetime.now(UTC)))
        with con:
            con.executemany(
                "INSERT INTO ends (topic, partition, low, high) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (topic, partition) DO UPDATE SET low = excluded.low, high = excluded.high",
                list(ends),
            )
            con.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [("ends_checked_us", at)],
            )


def _filters(
    owner_id: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    state: str | None,
    currency: str | None,
    rail: str | None,
    kind: str | None,
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("owner_id", owner_id),
        ("state", state),
        ("currency", currency),
        ("rail", rail),
        ("kind", kind),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if created_from is not None:
        where.append("created_us >= ?")
        args.append(to_us(created_from))
    if created_to is not None:
        where.append("created_us < ?")
        args.append(to_us(created_to))
    return where, args


def _values(s: Status) -> tuple[Any, ...]:
    """A status as the statuses columns after seq (COLUMNS order)."""
    d = s.details
    return (
        s.id,
        str(s.kind),
        d.owner_id,
        d.payer_account_id,
        str(s.state),
        s.phase,
        s.reason_code,
        s.reason,
        d.currency,
        d.amount_minor,
        d.kaus_units,
        d.rail,
        d.provider_reference,
        d.bridge_tx_id,
        to_us(s.created_at),
        int(s.created_from_request),
        to_us(s.state_at),
        s.state_step,
    )


def _status(row: Sequence[Any]) -> Status:
    return Status(
        id=row[1],
        kind=Kind(row[2]),
        state=State(row[5]),
        phase=row[6],
        reason_code=row[7],
        reason=row[8],
        details=Details(
            owner_id=row[3],
            payer_account_id=row[4],
            currency=row[9],
            amount_minor=row[10],
            kaus_units=row[11],
            rail=row[12],
            provider_reference=row[13],
            bridge_tx_id=row[14],
        ),
        created_at=from_us(row[15]),
        created_from_request=bool(row[16]),
        state_at=from_us(row[17]),
        state_step=row[18],
    )


def _record(row: Sequence[Any]) -> StatusRecord:
    return StatusRecord(
        id=row[1],
        kind=row[2],
        owner_id=row[3] or "",
        payer_account_id=row[4],
        state=row[5],
        phase=row[6],
        reason_code=row[7],
        reason=row[8],
        currency=row[9] or "",
        amount_minor=row[10],
        kaus_units=row[11],
        rail=row[12],
        provider_reference=row[13],
        bridge_tx_id=row[14],
        created_at=from_us(row[15]),
        updated_at=from_us(row[17]),  # the state's event time
        seq=row[0],
    )
