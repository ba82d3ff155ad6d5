"""The plain bridge runtime's commit rule: a position passes a request only once it and all before it finished."""

from __future__ import annotations

import pytest

from streams.bridge.offsets import OffsetTracker


def test_a_slow_request_holds_the_position_of_its_partition_only() -> None:
    offsets = OffsetTracker()
    for offset in (10, 11, 12):
        offsets.started(0, offset)
    offsets.started(1, 5)
    offsets.finished(0, 11)  # a later request finished first (its rail was faster)
    offsets.finished(1, 5)
    assert offsets.to_commit() == {1: 6}  # partition 0 waits for offset 10
    offsets.finished(0, 10)
    assert offsets.to_commit() == {0: 12}  # 10 and 11 done: resume at 12
    assert offsets.to_commit() == {}  # nothing moved since
    offsets.finished(0, 12)
    assert offsets.to_commit() == {0: 13}
    assert offsets.unfinished() == 0


def test_revoked_partitions_are_forgotten_and_late_finishes_ignored() -> None:
    offsets = OffsetTracker()
    offsets.started(2, 7)
    offsets.forget([2])
    offsets.finished(2, 7)  # its settlement ended after the partition moved away: the new owner commits
    assert offsets.to_commit() == {}
    offsets.started(2, 3)  # assigned again later, from wherever the group committed
    offsets.finished(2, 3)
    assert offsets.to_commit() == {2: 4}


def test_an_offset_handed_out_twice_is_a_bug() -> None:
    offsets = OffsetTracker()
    offsets.started(0, 4)
    with pytest.raises(AssertionError):
        offsets.started(0, 4)
