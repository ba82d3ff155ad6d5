"""The Faust bridge acks in offset order: Faust's commit position never passes a request still in flight.

Driven through faust-streaming's own ``Consumer._new_offset`` (the code that turns acks into the committed
position), so the test fails if the acks reach Faust out of order and Faust commits past the gap.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.bridge.offsets import OrderedAcks

TOPIC_PARTITION = TP("bridge.requests", 0)


class FaustAcks:
    """The part of a Faust consumer that records acks and computes the next committed position."""

    def __init__(self, committed: int | None) -> None:
        self.consumer: Any = SimpleNamespace(  # the attributes _new_offset reads, as Consumer.__init__ makes them
            _acked=defaultdict(list),
            _acked_index=defaultdict(set),
            _gap=defaultdict(IntervalTree),
            _committed_offset=defaultdict(lambda: None, {TOPIC_PARTITION: committed}),
        )

    def ack(self, offset: int) -> None:
        self.consumer._acked[TOPIC_PARTITION].append(offset)
        self.consumer._acked_index[TOPIC_PARTITION].add(offset)

    def commit(self) -> int | None:
        position: int | None = Consumer._new_offset(self.consumer, TOPIC_PARTITION)
        if position is not None:
            self.consumer._committed_offset[TOPIC_PARTITION] = position
        return self.consumer._committed_offset[TOPIC_PARTITION]


def test_faust_alone_commits_past_a_request_in_flight() -> None:
    """Why OrderedAcks exists: 10 in flight, 11 and 12 finished and acked directly: Faust commits 13."""
    faust = FaustAcks(committed=10)
    faust.ack(11)
    faust.ack(12)
    assert faust.commit() == 13  # offset 10 never finished; a crash now loses it


def test_acks_reach_faust_only_as_a_finished_prefix() -> None:
    faust, acks = FaustAcks(committed=10), OrderedAcks()
    done = {o: acks.started(0, o, functools.partial(faust.ack, o)) for o in range(10, 15)}
    done[11]()
    done[12]()
    assert faust.commit() == 10 and acks.unacked() == 5  # 10 is in flight: nothing passes it
    done[10]()
    assert faust.commit() == 13  # 10, 11, 12 finished
    done[14]()
    assert faust.commit() == 13
    done[13]()
    assert faust.commit() == 15 and acks.unacked() == 0


def test_a_first_commit_with_nothing_committed_does_not_skip_the_head() -> None:
    faust, acks = FaustAcks(committed=None), OrderedAcks()
    done = {o: acks.started(0, o, functools.partial(faust.ack, o)) for o in range(0, 3)}
    done[2]()
    assert faust.commit() is None
    done[0]()
    done[1]()
    assert faust.commit() == 3


def test_revoked_or_redelivered_partitions_drop_their_pending_acks() -> None:
    acked: list[tuple[int, int]] = []
    acks = OrderedAcks()
    stale = acks.started(0, 5, lambda: acked.append((0, 5)))
    acks.started(1, 7, lambda: acked.append((1, 7)))
    acks.forget([1])
    assert acks.unacked() == 1
    again = acks.started(0, 5, lambda: acked.append((0, 5)))  # re-delivered: the agent restarted
    stale()  # the old registration finishing acks nothing twice
    again()
    assert acked == [(0, 5)] and acks.unacked() == 0
