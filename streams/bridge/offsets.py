"""Which input offsets a driver may commit when records finish out of order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class OffsetTracker:
    """Which input offsets may be committed: per partition, everything below the oldest unfinished record.

    Records finish out of order (a slow rail holds one request while later ones complete); Kafka commits a
    position, so the position may only pass a record once it and every record before it are finished.
    """

    def __init__(self) -> None:
        self._open: dict[int, deque[int]] = {}  # partition -> offsets handed out, in order
        self._finished: dict[int, set[int]] = {}
        self._position: dict[int, int] = {}  # partition -> next offset to commit
        self._committed: dict[int, int] = {}

    def started(self, partition: int, offset: int) -> None:
        started = self._open.setdefault(partition, deque())
        assert not started or offset > started[-1], f"partition {partition}: offset {offset} handed out twice"
        started.append(offset)
        self._finished.setdefault(partition, set())

    def finished(self, partition: int, offset: int) -> list[int]:
        """Mark one record finished; return the offsets this made committable (in order, maybe none)."""
        started, finished = self._open.get(partition), self._finished.get(partition)
        if started is None or finished is None:
            return []  # the partition was revoked meanwhile: its new owner decides
        finished.add(offset)
        passed: list[int] = []
        while started and started[0] in finished:
            done = started.popleft()
            finished.discard(done)
            passed.append(done)
            self._position[partition] = done + 1
        return passed

    def to_commit(self) -> dict[int, int]:
        """Positions that moved since the last call (partition -> next offset to read)."""
        moved = {p: o for p, o in self._position.items() if self._committed.get(p) != o}
        self._committed.update(moved)
        return moved

    def unfinished(self) -> int:
        return sum(len(started) for started in self._open.values())

    def forget(self, partitions: list[int]) -> None:
        for p in partitions:
            for table in (self._open, self._finished, self._position, self._committed):
                table.pop(p, None)


class OrderedAcks:
    """Acks a Faust agent's events in offset order per partition, each once all before it are finished.

    Faust commits the first run of consecutive acked offsets, but lets that run start one past the committed
    position (faust-streaming 0.11 ``Consumer._new_offset``: ``min(acked) - committed > 1``) or anywhere when
    nothing was committed yet: an out-of-order ack then commits past a record still in flight, and a crash loses
    it. Acking only a partition's finished prefix never hands Faust a gap.
    """

    def __init__(self) -> None:
        self.tracker = OffsetTracker()
        self._acks: dict[tuple[int, int], Callable[[], Any]] = {}
        self._last: dict[int, int] = {}  # partition -> last offset handed out

    def started(self, partition: int, offset: int, ack: Callable[[], Any]) -> Callable[[], None]:
        """Register a record handed to the agent; the returned callable marks it finished.

        A record at or before one already handed out is a re-delivery (the agent restarted, the partition came
        back without a revocation seen): what was registered for that partition is stale and dropped.
        """
        if offset <= self._last.get(partition, -1):
            self.forget([partition])
        self._last[partition] = offset
        self.tracker.started(partition, offset)
        self._acks[(partition, offset)] = ack
        return lambda: self._finished(partition, offset)

    def _finished(self, partition: int, offset: int) -> None:
        for done in self.tracker.finished(partition, offset):
            self._acks.pop((partition, done))()

    def unacked(self) -> int:
        return len(self._acks)

    def forget(self, partitions: list[int]) -> None:
        """Partitions revoked: their records are the new owner's (Faust drops their acks too)."""
        self.tracker.forget(partitions)
        lost = set(partitions)
        for p in lost:
            self._last.pop(p, None)
        for key in [k for k in self._acks if k[0] in lost]:
            del self._acks[key]
