"""Which input offsets a driver may commit when records finish out of order."""

from __future__ import annotations

from collections import deque


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

    def finished(self, partition: int, offset: int) -> None:
        started, finished = self._open.get(partition), self._finished.get(partition)
        if started is None or finished is None:
            return  # the partition was revoked meanwhile: its new owner decides
        finished.add(offset)
        while started and started[0] in finished:
            done = started.popleft()
            finished.discard(done)
            self._position[partition] = done + 1

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
