"""The bridge's results on local disk, so that answering duplicates neither holds every result in memory nor
makes every start read the whole payout journal.

``bridge.payouts.journal`` stays the truth. This is a cache of it (SQLite, one file per bridge worker) with a
checkpoint per journal partition: every entry below the checkpoint is reflected in the file. A partition's
load reads the journal from its checkpoint instead of from the beginning; a lost or foreign file only costs
a full read (the journal's topic id is stored with it: a recreated journal wipes the file).

* :class:`JournalProgress` — pure: where a partition's checkpoint may be. It never passes an intent whose
  result is not yet durable, so the next load finds every open payout again.
* :class:`ResultIndex` — the SQLite file, and the mapping the runner checks each request against
  (``get``; recent results stay in memory until they are in the file).

SQL: ``sql/state/bridge_result_index.sql``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

from domain.bridge import Result
from infra.sql_state import load_statements

SQL = load_statements("bridge_result_index.sql")


class JournalProgress:
    """One journal partition's checkpoint: the lowest offset a later load must read from.

    Entries below it are reflected in the index: results written, intents closed. An intent is registered
    *before* it is sent, at the offset acknowledged so far (a lower bound of its own), so no acknowledgement
    that arrives meanwhile can move the checkpoint past it. Acknowledgements of one producer to one partition
    arrive in offset order, so a result acknowledged at offset *o* means every entry of ours below *o* is
    acknowledged too.
    """

    def __init__(self, next_offset: int) -> None:
        assert next_offset >= 0
        self._acked_next = next_offset
        self._open: dict[str, int] = {}  # bridge tx id -> offset its intent is at, or a lower bound of it

    def intent_open(self, bridge_tx_id: str, offset: int | None = None) -> None:
        """An intent read back (``offset``) or about to be sent (``None``: only its lower bound is known)."""
        at = self._acked_next if offset is None else offset
        self._open[bridge_tx_id] = min(at, self._open.get(bridge_tx_id, at))

    def acked(self, offset: int) -> None:
        """An entry of ours was acknowledged at ``offset`` (an intent stays open; see :meth:`closed`)."""
        self._acked_next = max(self._acked_next, offset + 1)

    def closed(self, bridge_tx_id: str, offset: int) -> None:
        """The transaction's result entry was acknowledged at ``offset``."""
        self._open.pop(bridge_tx_id, None)
        self.acked(offset)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def checkpoint(self) -> int:
        lowest_open = min(self._open.values(), default=self._acked_next)
        checkpoint = min(lowest_open, self._acked_next)
        assert 0 <= checkpoint <= self._acked_next
        return checkpoint


class ResultIndex(MutableMapping[str, Result]):
    """Results by request id: in memory until written, then in the SQLite file.

    The event loop reads through its own connection; :meth:`commit` (results whose journal entries are
    acknowledged, and the checkpoints that cover them, in one transaction) may run in another thread. The
    file is WAL with ``synchronous=NORMAL``: a crash may lose the last commits, never half of one, and what
    it loses is read again from the journal because the checkpoint is lost with it.
    """

    def __init__(self, path: Path, journal_id: str, decode: Callable[[bytes], Result]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.decode = decode
        self._lock = threading.Lock()  # one writer at a time (commit, reset)
        self._writer = self._connect()
        self._reader = self._connect()
        with self._writer:
            for table in ("create_meta", "create_results", "create_checkpoints"):
                self._writer.execute(SQL[table])
            row = self._writer.execute(SQL["journal_id"]).fetchone()
            if row is None or row[0] != journal_id:  # another journal (new cluster, recreated topic)
                self._writer.execute(SQL["forget_all_results"])
                self._writer.execute(SQL["forget_all_checkpoints"])
                self._writer.execute(SQL["set_journal_id"], (journal_id,))
        self._recent: dict[str, Result] = {}  # reached, not yet in the file
        self._acked: dict[str, tuple[int, bytes]] = {}  # request id -> (partition, journal entry): to write

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.isolation_level = "DEFERRED"  # statements join a transaction; `with con:` commits it
        return con

    # ------------------------------------------------------------------ the mapping the runner checks

    def __getitem__(self, request_id: str) -> Result:
        result = self._recent.get(request_id)
        if result is not None:
            return result
        row = self._reader.execute(SQL["result"], (request_id,)).fetchone()
        if row is None:
            raise KeyError(request_id)
        return self.decode(row[0])

    def __setitem__(self, request_id: str, result: Result) -> None:
        self._recent[request_id] = result

    def __delitem__(self, request_id: str) -> None:
        raise TypeError("results are never forgotten one by one")

    def __iter__(self) -> Iterator[str]:
        raise TypeError("the index is not iterated: it may hold every result the journal has")

    def __len__(self) -> int:
        (count,) = self._reader.execute(SQL["count_results"]).fetchone()
        return int(count) + len(self._recent)  # recent ones are not in the file yet

    def __contains__(self, request_id: object) -> bool:
        if not isinstance(request_id, str):
            return False
        return request_id in self._recent or self._reader.execute(SQL["result"], (request_id,)).fetchone() is not None

    @property
    def in_memory(self) -> int:
        return len(self._recent)

    # ------------------------------------------------------------------ writing

    def acked(self, request_id: str, partition: int, entry: bytes) -> None:
        """The result's journal entry is acknowledged: write it at the next commit."""
        self._acked[request_id] = (partition, entry)

    def take_acked(self) -> list[tuple[str, int, bytes]]:
        """What the next commit writes (call in the event loop, with the checkpoints it pairs with)."""
        taken = [(request_id, p, entry) for request_id, (p, entry) in self._acked.items()]
        self._acked.clear()
        return taken

    def commit(self, rows: list[tuple[str, int, bytes]], checkpoints: dict[int, int]) -> None:
        """Write rows and checkpoints in one transaction (blocking: may run in a thread)."""
        with self._lock, self._writer:
            self._writer.executemany(SQL["put_result"], rows)
            self._writer.executemany(SQL["set_checkpoint"], list(checkpoints.items()))

    def written(self, rows: list[tuple[str, int, bytes]]) -> None:
        """After :meth:`commit`: those results are read from the file from now on (call in the event loop)."""
        for request_id, _partition, _entry in rows:
            if request_id not in self._acked:  # not superseded meanwhile
                self._recent.pop(request_id, None)

    def checkpoint(self, partition: int) -> int | None:
        """Called from a partition's load (a thread): through the writer, not the event loop's reader."""
        with self._lock:
            row = self._writer.execute(SQL["checkpoint"], (partition,)).fetchone()
        return None if row is None else int(row[0])

    def reset(self, partition: int) -> None:
        """Forget a partition: its next load reads the journal from the beginning."""
        with self._lock, self._writer:
            self._writer.execute(SQL["forget_partition_results"], (partition,))
            self._writer.execute(SQL["forget_partition_checkpoint"], (partition,))

    def close(self) -> None:
        with self._lock:
            self._writer.close()
        self._reader.close()


def summary(path: Path) -> tuple[int, dict[int, int]] | None:
    """Results in an index file and its checkpoints, read-only (for the demo and operators); None if absent."""
    if not path.exists():
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        (count,) = con.execute(SQL["count_results"]).fetchone()
        checkpoints = {int(p): int(o) for p, o in con.execute(SQL["checkpoints"]).fetchall()}
    except sqlite3.OperationalError:  # created but not yet initialised by its worker
        return None
    finally:
        con.close()
    return int(count), checkpoints
