"""Snapshots of the ledger's state, so that a restart replays ``ledger.commands`` from a recent offset
instead of from the beginning (the topic is kept forever: a full replay grows with the ledger's history).

A snapshot is the state after every command below ``next_offset``, as plain data (the domain's own
``TradeSettler.to_dict``, whose ``from_dict`` re-checks every invariant, and the open holds' references, which
their captures and releases carry), in a local file. It only
accelerates the silent replay a restart does anyway: a restart that must rebuild up to offset *U* takes the
newest snapshot at or below *U* and replays the rest. One above *U* (taken after records whose outputs may
not be acknowledged, then a crash) is never used; a corrupt, foreign (another ``ledger.commands``: its
topic id is in the file) or unreadable one is skipped for the next older, and without any the replay
starts at the beginning, as before. The latest ``KEEP`` are kept.

The ledger's applied ids and the settler's settled trades are not in a snapshot: they live in two stores beside
it, one SQLite file each per partition (``ids-<partition>.sqlite3``: ``streams/p2p/id_store.py``;
``settled-<partition>.sqlite3``: ``streams/p2p/settled_store.py``), which a snapshot names by their sequences.
Both are flushed before each snapshot is taken; restoring a snapshot makes them forget the entries past it (the
commands the restart replays), and a store behind a snapshot makes that snapshot unusable. States built here
(restored, or new for a replay from the beginning: :meth:`LedgerSnapshots.on_disk`) use them. A format /2
snapshot (every id inside) and a /3 one (every settled trade inside) still load: their entries move into the stores.

Writing one must not stall the single writer: :meth:`LedgerSnapshots.write_in_background` forks, and the
child (a copy-on-write image of the state at that instant, between two batches) serialises it, writes
``*.tmp``, fsyncs and renames, then exits. At most one child at a time.
"""

from __future__ import annotations

import gc
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from domain.dividends import EpochScheduler
from domain.ledger import IdStore, PendingState, SettlementKind
from domain.staking import StakingVault
from domain.trade_settlement import SettledStore, TradeSettler
from streams.p2p.id_store import SqliteIdStore
from streams.p2p.ledger import LedgerPartition
from streams.p2p.settled_store import SqliteSettledStore

log = logging.getLogger("nexus.ledger_snapshots")

FORMAT = "nexus-x.ledger-partition-snapshot/4"  # /4: settled trades in the settled store, not in the snapshot
_FORMAT_3 = "nexus-x.ledger-partition-snapshot/3"  # every settled trade inside: loaded, moved into the store
_FORMAT_2 = "nexus-x.ledger-partition-snapshot/2"  # every id inside too: loaded, its ids moved into the store
# /1 had no hold references: skipped, the replay rebuilds them
KEEP = 2  # the newest may be above a restart's offset (its commit was lost): the previous one is then used
SUFFIX = ".snapshot"


@dataclass(frozen=True)
class SnapshotFile:
    path: Path
    next_offset: int


class LedgerSnapshots:
    def __init__(self, directory: Path, topic_id: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.topic_id = topic_id
        self._child: int | None = None
        self._child_offset = 0
        self._ids: dict[int, SqliteIdStore] = {}
        self._settled: dict[int, SqliteSettledStore] = {}
        for stale in directory.glob("*.tmp"):  # a child killed mid-write
            stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the id stores

    def id_store(self, partition: int) -> SqliteIdStore:
        """The partition's applied ids (one object per file: it holds the recent entries not yet written)."""
        store = self._ids.get(partition)
        if store is None:
            path = self.directory / f"ids-{partition}.sqlite3"
            store = self._ids[partition] = SqliteIdStore(path, self.topic_id)
        return store

    def settled_store(self, partition: int) -> SqliteSettledStore:
        """The partition's settled trades (one object per file, as for the id store)."""
        store = self._settled.get(partition)
        if store is None:
            path = self.directory / f"settled-{partition}.sqlite3"
            store = self._settled[partition] = SqliteSettledStore(path, self.topic_id)
        return store

    def on_disk(self, factory: Callable[..., LedgerPartition]) -> Callable[[int], LedgerPartition]:
        """``factory(partition)`` for a replay from the beginning, over the partition's stores (emptied)."""
        return lambda partition: factory(partition, ids=self.id_store(partition), settled=self.settled_store(partition))

    # ------------------------------------------------------------------ reading

    def files(self, partition: int) -> list[SnapshotFile]:
        """This partition's snapshots, newest first."""
        found = []
        for path in self.directory.glob(f"ledger-{partition}-*{SUFFIX}"):
            try:
                offset = int(path.name.removesuffix(SUFFIX).rsplit("-", 1)[1])
            except ValueError:
                continue
            found.append(SnapshotFile(path, offset))
        return sorted(found, key=lambda f: f.next_offset, reverse=True)

    def load(self, partition: int, until_offset: int) -> LedgerPartition | None:
        """The newest usable snapshot at or below ``until_offset``, restored and checked; None if there is none."""
        for snapshot in self.files(partition):
            if snapshot.next_offset > until_offset:
                log.info(
                    "ledger snapshot at offset %d is past the restart's offset %d: not used",
                    snapshot.next_offset, until_offset,
                )  # fmt: skip
                continue
            ids, settled = self.id_store(partition), self.settled_store(partition)
            stored_seq, stored_settled = ids.last_seq(), settled.last_seq()
            try:
                raw = zlib.decompress(snapshot.path.read_bytes())
                state = restore(raw, self.topic_id, partition, ids, settled)
            except Exception as exc:  # any defect means "not this one": the log is the truth
                log.warning("ledger snapshot %s not used: %s: %s", snapshot.path.name, type(exc).__name__, exc)
                continue
            assert state.next_offset == snapshot.next_offset, snapshot.path
            log.info(
                "ledger ids: %d entries past the snapshot's sequence %d forgotten, settled trades: %d past %d "
                "(the replay applies them again)",
                max(0, stored_seq - state.ledger.id_seq), state.ledger.id_seq,
                max(0, stored_settled - state.settler.settled_seq), state.settler.settled_seq,
            )  # fmt: skip
            return state
        return None

    # ------------------------------------------------------------------ writing

    def write(self, state: LedgerPartition) -> Path:
        """Flush the state's stores, then serialise and write one snapshot now (blocking)."""
        _flush_stores(state)
        return self._write(state)

    def _write(self, state: LedgerPartition) -> Path:
        """Serialise and write one snapshot (the forked child calls this: it touches no store)."""
        data = zlib.compress(serialise(state, self.topic_id), 1)
        final = self.directory / f"ledger-{state.partition}-{state.next_offset:020d}{SUFFIX}"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
        for old in self.files(state.partition)[KEEP:]:
            old.path.unlink(missing_ok=True)
        return final

    def write_in_background(self, state: LedgerPartition) -> bool:
        """Fork a child that writes ``state`` as it is now; False if one is still writing."""
        if self.busy():
            return False
        offset = state.next_offset
        _flush_stores(state)  # every entry the snapshot relies on is in the files before it exists
        pid = os.fork()
        if pid == 0:  # the child: a frozen image of the state; no Kafka, no logging locks, no cleanup
            gc.disable()  # no collection may run a finaliser that touches the parent's clients
            code = 1
            try:
                self._write(state)
                code = 0
            finally:
                os._exit(code)
        self._child, self._child_offset = pid, offset
        return True

    def busy(self) -> bool:
        """Reap a finished child (logging how it ended); True while one is still writing."""
        if self._child is None:
            return False
        pid, status = os.waitpid(self._child, os.WNOHANG)
        if pid == 0:
            return True
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            log.info("ledger snapshot written at offset %d", self._child_offset)
        else:
            log.error("ledger snapshot at offset %d failed (exit %d); the next one retries", self._child_offset, code)
        self._child = None
        return False

    def wait(self) -> None:
        """Block until a writing child ends (shutdown, tests)."""
        if self._child is not None:
            os.waitpid(self._child, 0)
            self._child = None

    def close(self) -> None:
        self.wait()
        for ids in self._ids.values():
            ids.close()
        for settled in self._settled.values():
            settled.close()
        self._ids.clear()
        self._settled.clear()


def _flush_stores(state: LedgerPartition) -> None:
    for store in (state.ledger.ids, state.settler.settled):
        if isinstance(store, SqliteIdStore | SqliteSettledStore):
            store.flush(durable=True)


def serialise(state: LedgerPartition, topic_id: str) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "topic_id": topic_id,
            "partition": state.partition,
            "next_offset": state.next_offset,
            "settler": state.settler.to_dict(),
            "hold_references": {hold: [kind.value, ref] for hold, (kind, ref) in sorted(state.hold_references.items())},
            "staking": state.vault.to_dict() if state.vault is not None else None,
            "epochs": state.epochs.to_dict() if state.epochs is not None else None,
        }
    )


def restore(
    raw: bytes, topic_id: str, partition: int, ids: IdStore | None = None, settled: SettledStore | None = None
) -> LedgerPartition:
    """The state a snapshot recorded, its applied ids in ``ids`` and its settled trades in ``settled`` (default:
    in memory; a snapshot taken over a durable store then cannot load)."""
    data: dict[str, Any] = orjson.loads(raw)
    if data.get("format") not in (FORMAT, _FORMAT_3, _FORMAT_2):
        raise ValueError(f"unknown format {data.get('format')!r}")
    if data["topic_id"] != topic_id:
        raise ValueError(f"taken from another ledger.commands (topic id {data['topic_id']}, now {topic_id})")
    if data["partition"] != partition:
        raise ValueError(f"taken from partition {data['partition']}, not {partition}")
    settler = TradeSettler.from_dict(data["settler"], ids=ids, settled=settled)  # re-checks every invariant
    references = {hold: (SettlementKind(kind), ref) for hold, (kind, ref) in data["hold_references"].items()}
    for hold in references:
        view = settler.ledger.pending(hold)
        if view is None or view.state is not PendingState.PENDING:
            raise ValueError(f"a reference is kept for {hold!r}, which is no open hold")
    staking, epochs = data.get("staking"), data.get("epochs")  # absent before the staking vault: empty
    return LedgerPartition(
        partition=partition,
        settler=settler,
        next_offset=int(data["next_offset"]),
        hold_references=references,
        vault=None if staking is None else StakingVault.from_dict(staking, settler.ledger),
        epochs=None if epochs is None else EpochScheduler.from_dict(epochs),
    )
