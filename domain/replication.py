"""How far the standby region is behind the primary, in seconds: the records it would lose were the primary lost now.

MirrorMaker 2 does not keep offsets (the standby's offsets differ), but it keeps each record's key, value and
timestamp. So a prober reads the last records of every partition on both sides, and this tracker remembers, per
partition, when it first saw each new primary tail (a *mark*). A mark is replicated once the standby holds that
record, or a record timestamped after it (the copies keep the primary's broker times, in order), or the primary's
current last record (MM2 copies a partition in order). Records of one broker batch share one time, so a mark
among more same-time records than the standby's tail shows waits for one of these to tell.
The delay of a partition is the age of its oldest mark not yet replicated; 0 when the standby has everything.

Bounded: at most ``marks_max`` marks a partition. When full, the newest mark takes the newer tail but keeps its
first-seen time, so the delay is over-stated, never under-stated (an RPO alert fires early rather than late).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)  # a partition's name, e.g. (topic, partition)


class Tail(NamedTuple):
    """A partition's last committed record as the prober compares it."""

    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class _Mark(NamedTuple):
    seen_s: float
    tail: Tail


def replicated(tail: Tail, standby_tails: Sequence[Tail]) -> bool:
    """The standby holds ``tail``: it is among the standby's last records, or the standby has a later record."""
    return tail in standby_tails or (bool(standby_tails) and standby_tails[-1].timestamp_ms > tail.timestamp_ms)


@dataclass
class ReplicationDelay(Generic[K]):
    """Per-partition replication delay from successive probes of both regions (``observe``)."""

    marks_max: int = 3_600
    _marks: dict[K, deque[_Mark]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.marks_max >= 1

    def observe(
        self,
        now_s: float,
        primary: Mapping[K, Tail | None],
        standby: Mapping[K, Sequence[Tail]] | None,
    ) -> dict[K, float]:
        """One probe: ``primary``'s last record per partition (None: empty), ``standby``'s last records per
        partition (oldest first; None: the standby could not be read, so nothing counts as replicated).
        Returns the delay in seconds of every partition the primary has."""
        delays: dict[K, float] = {}
        for key, tail in primary.items():
            marks = self._marks.setdefault(key, deque())
            if tail is not None and (not marks or marks[-1].tail != tail):
                if len(marks) < self.marks_max:
                    marks.append(_Mark(now_s, tail))
                else:
                    marks[-1] = _Mark(marks[-1].seen_s, tail)
            if standby is not None:
                copies = standby.get(key, ())
                if tail is not None and tail in copies:  # MM2 copies a partition in order: it has all before
                    marks.clear()
                while marks and replicated(marks[0].tail, copies):
                    marks.popleft()
            delays[key] = max(0.0, now_s - marks[0].seen_s) if marks else 0.0
        for gone in self._marks.keys() - primary.keys():  # a partition the primary no longer lists
            del self._marks[gone]
        return delays
