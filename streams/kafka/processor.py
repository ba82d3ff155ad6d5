"""The per-partition record processor both runtimes drive (the Faust agent and the plain confluent-kafka loop).

A `PartitionState` is a deterministic fold over one input partition: `apply(offset, message, record_ms)`
returns the outputs of one record. The processor owns one state per partition and everything a record goes
through: recovery (a state is rebuilt from the log, or restored from a snapshot and the rest replayed, when a
partition is first seen or a gap appears), skipping records already applied, ingress validation, the dead
letter of a bad record, the record's timestamp, and applying it. A driver only consumes, hands records over,
produces the outputs and commits (see docs/state-and-recovery.md).

States are kept when partitions are revoked: a fold over an immutable log stays right at `next_offset` whoever
processes the partition meanwhile. Records offered again below `next_offset` are skipped; a gap (another worker
moved on) is rebuilt from the log. Memory stays bounded by the topic's partition count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts.topics import Topic
from streams.kafka import ingress
from streams.kafka.partition_log import ReplayFailed, rebuild_state

log = logging.getLogger("nexus.processor")
# A replay that meets a record that raises starts again without it; this many such records per rebuild at most.
FAILED_RECORDS_PER_REBUILD_MAX = 100

Output = tuple[Topic, Any]


class PartitionState(Protocol):
    next_offset: int

    def apply(self, offset: int, message: Any | None, record_ms: int | None = None) -> list[Output]: ...


class Snapshots(Protocol):
    """Recovery points of a partition's state (e.g. streams.p2p.snapshots.LedgerSnapshots)."""

    def load(self, partition: int, until_offset: int) -> Any | None: ...

    def write_in_background(self, state: Any) -> bool: ...

    def wait(self) -> None: ...


@dataclass
class RecordProcessor:
    """One input topic's records -> outputs, partition by partition (see the module docstring)."""

    topic: Topic
    factory: Callable[[int], PartitionState]
    bootstrap: str
    max_bytes: int
    snapshots: Snapshots | None = None
    snapshot_every_s: float = 0.0
    states: dict[int, PartitionState] = field(default_factory=dict)
    # partition -> next_offset of the newest snapshot written or restored: an unchanged state is not written again
    snapshot_offsets: dict[int, int] = field(default_factory=dict)
    # the first snapshot chance after a start takes one, so a long rebuild is not paid twice
    snapshot_taken_at: float = float("-inf")
    # partition -> offsets of records that made `apply` raise: replayed as dead letters were
    failed_offsets: dict[int, set[int]] = field(default_factory=dict)

    def needs_rebuild(self, partition: int, offset: int) -> bool:
        state = self.states.get(partition)
        return state is None or offset > state.next_offset

    def rebuild(self, partition: int, until_offset: int) -> PartitionState:
        """A state with every record before `until_offset` applied silently (outputs were produced before)."""
        started = time.monotonic()
        restore = self._restored if self.snapshots is not None else None
        failed = self.failed_offsets.setdefault(partition, set())
        for _ in range(FAILED_RECORDS_PER_REBUILD_MAX):
            try:
                state: PartitionState = rebuild_state(
                    self.bootstrap,
                    self.topic,
                    partition,
                    until_offset,
                    self.factory,
                    self.max_bytes,
                    restore,
                    frozenset(failed),
                )
                break
            except ReplayFailed as replay:
                log.error("%s[%d] replay again without a record: %s", self.topic.name, partition, replay)
                failed.add(replay.offset)
        else:
            raise RuntimeError(f"{self.topic.name}[{partition}]: over {FAILED_RECORDS_PER_REBUILD_MAX} records raise")
        self.states[partition] = state
        log.info(
            "%s[%d] rebuilt up to offset %d in %.2f s",
            self.topic.name,
            partition,
            until_offset,
            time.monotonic() - started,
        )
        return state

    def _restored(self, partition: int, until_offset: int) -> Any | None:
        assert self.snapshots is not None
        state = self.snapshots.load(partition, until_offset)
        if state is not None:
            self.snapshot_offsets[partition] = state.next_offset
            log.info("%s[%d] restored from the snapshot at offset %d", self.topic.name, partition, state.next_offset)
        return state

    def process(
        self, partition: int, offset: int, key: bytes | None, value: bytes | None, record_ms: int | None
    ) -> list[Output]:
        """The outputs of one record: [] if already applied, one dead letter if it is bad, else its state's."""
        state = self.states.get(partition)
        if state is None or offset > state.next_offset:
            state = self.rebuild(partition, offset)
        if offset < state.next_offset:
            return []  # offered again after a rebalance or restart: already applied and emitted
        try:
            decoded = ingress.validate(self.topic, key, value, self.max_bytes)
        except Exception as exc:  # the validator met an input nobody foresaw: this record only
            decoded = self._processing_error(partition, offset, exc)
            self.failed_offsets.setdefault(partition, set()).add(offset)  # a replay skips it as it was skipped here
        if isinstance(decoded, ingress.Rejected):
            state.apply(offset, None)
            return self._dead_letter(partition, offset, key, value, decoded)
        try:
            return state.apply(offset, decoded, record_ms)
        except Exception as exc:  # a bug or a value nobody foresaw: this record only, and none of its effects
            rejected = self._processing_error(partition, offset, exc)
            self.failed_offsets.setdefault(partition, set()).add(offset)
            self.rebuild(partition, offset + 1)  # the state as if the record had been a dead letter
            return self._dead_letter(partition, offset, key, value, rejected)

    def _processing_error(self, partition: int, offset: int, exc: Exception) -> ingress.Rejected:
        log.exception("%s[%d]@%d raised while processed; dead-lettered", self.topic.name, partition, offset)
        return ingress.processing_failed(self.topic.name, exc)

    def _dead_letter(
        self, partition: int, offset: int, key: bytes | None, value: bytes | None, rejected: ingress.Rejected
    ) -> list[Output]:
        log.warning("dead-lettered %s[%d]@%d: %s", self.topic.name, partition, offset, rejected.reason)
        origin = ingress.Origin(self.topic.name, partition, offset)
        return ingress.dead_letter_outputs(origin, key, value, rejected)  # payload records, then the letter

    def maybe_snapshot(self, now_s: float) -> None:
        """Write due snapshots. Call between records: every state is then a fold at its `next_offset`."""
        if self.snapshots is None or now_s - self.snapshot_taken_at < self.snapshot_every_s:
            return
        self.snapshot_taken_at = now_s
        for partition, state in self.states.items():
            fresh = state.next_offset > self.snapshot_offsets.get(partition, 0)
            if fresh and self.snapshots.write_in_background(state):
                self.snapshot_offsets[partition] = state.next_offset

    def close(self) -> None:
        if self.snapshots is not None:
            self.snapshots.wait()
