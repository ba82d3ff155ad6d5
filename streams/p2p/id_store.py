"""The ledger's applied ids on local disk, so that its memory and its snapshots follow balances and open holds,
not history (``domain.ledger.IdStore``; SQL in ``sql/state/ledger_ids.sql``).

One SQLite file per ledger partition, beside its snapshots. Entries are written in order of the ledger's id
sequence; recent ones stay in memory until ``FLUSH_ROWS`` of them are written in one transaction, with the
sequence they reach (``last_seq``). Crash consistency rests on the sequence, not on timing:

* A snapshot records the sequence it covers, and is written only after a :meth:`SqliteIdStore.flush` (the
  snapshot writer calls it before it forks), so the file holds every entry the snapshot relies on.
* Restoring a snapshot at sequence *N* deletes every row past *N*: rows a crashed worker wrote after the
  snapshot belong to commands the restart replays, which must be applied again, not answered as duplicates.
* A file that holds less than a snapshot's sequence (lost, or a power cut took its last transactions) cannot
  serve that snapshot: ``Ledger.from_dict`` refuses it and the restart falls back to an older snapshot or a full
  replay, which empties the file and writes it again. A file from another ``ledger.commands`` is emptied at open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson

from domain.ledger import (
    HoldResolution,
    LedgerCommand,
    PendingState,
    PendingTransfer,
    PostPending,
    Transfer,
    TransferResult,
    TransferStatus,
    VoidPending,
)
from infra.sql_state import load_statements

SQL = load_statements("ledger_ids.sql")
FLUSH_ROWS = 1_000  # recent entries held in memory at most: one transaction writes them
_COMMAND_TYPES: dict[str, type[LedgerCommand]] = {
    t.__name__: t for t in (Transfer, PendingTransfer, PostPending, VoidPending)
}


class SequencedFile:
    """A state file whose rows carry a sequence: this store and ``settled_store``'s (the module docstring says
    why). Subclasses keep their recent entries and say which rows they make (``_recent_rows``); this class writes
    them with the sequence they reach in one transaction, forgets rows past a restored point, and checks that the
    sequence has no gap.

    Its tables are made by the ``creates`` statements of ``sql``; a file of another ``ledger.commands`` is emptied by
    the ``forgets`` ones (each deletes the rows past a sequence). ``sql`` also has ``meta`` and ``set_meta``.
    """

    durable = True

    def __init__(
        self, path: Path, topic_id: str, sql: dict[str, str], creates: tuple[str, ...], forgets: tuple[str, ...]
    ) -> None:
        self.path, self._sql, self._forgets = path, sql, forgets
        path.parent.mkdir(parents=True, exist_ok=True)
        # WAL, synchronous=NORMAL: a commit survives the process's death, not a power cut (which the sequence
        # check covers); the flush before a snapshot is synchronous=FULL (durable when it returns).
        con = self._con = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.isolation_level = "DEFERRED"
        with con:
            for statement in creates:
                con.execute(sql[statement])
            if self._meta("topic_id") != topic_id:  # another ledger.commands (recreated topic, other cluster)
                for statement in forgets:
                    con.execute(sql[statement], (0,))
                con.execute(sql["set_meta"], ("topic_id", topic_id))
                con.execute(sql["set_meta"], ("last_seq", "0"))
        self._flushed_seq = self._last_seq = int(self._meta("last_seq") or 0)

    def _meta(self, key: str) -> str | None:
        row = self._con.execute(self._sql["meta"], (key,)).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ what a subclass keeps

    def _recent_rows(self) -> list[tuple[str, list[tuple[int, str, bytes]]]]:
        """The recent entries as (put statement, rows of sequence, id, body), to be written."""
        raise NotImplementedError

    def _drop_recent_after(self, seq: int) -> None:
        raise NotImplementedError

    def _clear_recent(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ the sequence

    def _advance(self, seq: int) -> None:
        assert seq == self._last_seq + 1, f"{type(self).__name__}: sequence {seq} after {self._last_seq}"
        self._last_seq = seq

    def last_seq(self) -> int:
        return self._last_seq

    def forget_after(self, seq: int) -> None:
        assert seq >= 0
        self._drop_recent_after(seq)
        if seq < self._flushed_seq:
            with self._con:
                for statement in self._forgets:
                    self._con.execute(self._sql[statement], (seq,))
                self._con.execute(self._sql["set_meta"], ("last_seq", str(seq)))
            self._flushed_seq = seq
        self._last_seq = min(self._last_seq, seq)

    def flush(self, *, durable: bool = False) -> None:
        """Write the recent entries and the sequence they reach in one transaction (``durable``: fsynced)."""
        if self._last_seq == self._flushed_seq:
            return
        if durable:
            self._con.execute("PRAGMA synchronous=FULL")
        with self._con:
            for statement, rows in self._recent_rows():
                self._con.executemany(self._sql[statement], rows)
            self._con.execute(self._sql["set_meta"], ("last_seq", str(self._last_seq)))
        if durable:
            self._con.execute("PRAGMA synchronous=NORMAL")
        self._flushed_seq = self._last_seq
        self._clear_recent()

    def close(self) -> None:
        self.flush(durable=True)
        self._con.close()


def encode_entry(command: LedgerCommand, result: TransferResult) -> bytes:
    """An applied command and its result as a JSON array: the command's type and fields, then what the result adds."""
    assert result.code is None and result.transfer_id == command.transfer_id, "only applied commands are kept"
    r = result
    outcome = [r.status.value, r.debit_account_id, r.credit_account_id, r.amount_units, r.at_ms]
    return orjson.dumps([type(command).__name__, *command, *outcome])


def decode_entry(body: bytes) -> tuple[LedgerCommand, TransferResult]:
    row = orjson.loads(body)
    kind = _COMMAND_TYPES[row[0]]
    n = len(kind._fields)
    command = kind(*row[1 : 1 + n])
    status, debit, credit, amount, at_ms = row[1 + n :]
    return command, TransferResult(command.transfer_id, TransferStatus(status), None, debit, credit, amount, at_ms, "")


def encode_resolution(r: HoldResolution) -> bytes:
    return orjson.dumps([r.state.value, r.posted_units, r.resolved_by, r.resolved_at_ms])


def decode_resolution(pending_id: str, body: bytes) -> HoldResolution:
    state, posted_units, resolved_by, resolved_at_ms = orjson.loads(body)
    return HoldResolution(pending_id, PendingState(state), posted_units, resolved_by, resolved_at_ms)


class SqliteIdStore(SequencedFile):
    """``domain.ledger.IdStore`` in a SQLite file (see the module docstring). Used by the ledger's thread only."""

    def __init__(self, path: Path, topic_id: str) -> None:
        creates = ("create_meta", "create_transfers", "create_resolutions")
        super().__init__(path, topic_id, SQL, creates, ("forget_transfers_after", "forget_resolutions_after"))
        self._recent: dict[str, tuple[int, LedgerCommand, TransferResult]] = {}  # not yet in the file
        self._recent_resolutions: dict[str, tuple[int, HoldResolution]] = {}

    # ------------------------------------------------------------------ the IdStore protocol

    def get(self, transfer_id: str) -> tuple[LedgerCommand, TransferResult] | None:
        entry = self._recent.get(transfer_id)
        if entry is not None:
            return entry[1], entry[2]
        row = self._con.execute(SQL["transfer"], (transfer_id,)).fetchone()
        return None if row is None else decode_entry(row[0])

    def resolution(self, pending_id: str) -> HoldResolution | None:
        entry = self._recent_resolutions.get(pending_id)
        if entry is not None:
            return entry[1]
        row = self._con.execute(SQL["resolution"], (pending_id,)).fetchone()
        return None if row is None else decode_resolution(pending_id, row[0])

    def put(self, seq: int, command: LedgerCommand, result: TransferResult) -> None:
        self._advance(seq)
        self._recent[command.transfer_id] = (seq, command, result)
        if len(self._recent) + len(self._recent_resolutions) >= FLUSH_ROWS:
            self.flush()

    def put_resolution(self, seq: int, resolution: HoldResolution) -> None:
        self._advance(seq)
        self._recent_resolutions[resolution.pending_id] = (seq, resolution)

    def count(self) -> int:
        (count,) = self._con.execute(SQL["count_transfers"]).fetchone()
        return int(count) + len(self._recent)

    # ------------------------------------------------------------------ writing

    @property
    def in_memory(self) -> int:
        return len(self._recent) + len(self._recent_resolutions)

    def _recent_rows(self) -> list[tuple[str, list[tuple[int, str, bytes]]]]:
        transfers = [(seq, transfer_id, encode_entry(c, r)) for transfer_id, (seq, c, r) in self._recent.items()]
        resolutions = [(seq, pid, encode_resolution(r)) for pid, (seq, r) in self._recent_resolutions.items()]
        return [("put_transfer", transfers), ("put_resolution", resolutions)]

    def _drop_recent_after(self, seq: int) -> None:
        self._recent = {k: e for k, e in self._recent.items() if e[0] <= seq}
        self._recent_resolutions = {k: e for k, e in self._recent_resolutions.items() if e[0] <= seq}

    def _clear_recent(self) -> None:
        self._recent.clear()
        self._recent_resolutions.clear()
