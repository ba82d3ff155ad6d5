"""The standby's replication delay (domain/replication.py): the age of the oldest primary record it lacks."""

from __future__ import annotations

from typing import Any

from domain.replication import ReplicationDelay, Tail, replicated

P = ("energy.orders", 0)


def rec(ts_ms: int, value: bytes = b"v") -> Tail:
    return Tail(ts_ms, b"k", value)


def test_a_standby_that_keeps_up_is_never_behind() -> None:
    tracker: ReplicationDelay[tuple[str, int]] = ReplicationDelay()
    for second in range(1, 10):
        tail = rec(second * 1000)
        assert tracker.observe(float(second), {P: tail}, {P: [rec(second * 1000 - 500), tail]}) == {P: 0.0}


def test_the_delay_is_the_age_of_the_oldest_record_the_standby_lacks() -> None:
    tracker: ReplicationDelay[tuple[str, int]] = ReplicationDelay()
    first, second = rec(1_000, b"a"), rec(2_000, b"b")
    assert tracker.observe(10.0, {P: first}, {P: []}) == {P: 0.0}  # seen just now
    assert tracker.observe(12.0, {P: second}, {P: []}) == {P: 2.0}  # the first is 2 s old and still missing
    assert tracker.observe(15.0, {P: second}, {P: [first]}) == {P: 3.0}  # first copied; second seen at 12
    assert tracker.observe(16.0, {P: second}, {P: [first, second]}) == {P: 0.0}


def test_a_stalled_mirror_lets_the_delay_grow_until_it_copies_again() -> None:
    tracker: ReplicationDelay[tuple[str, int]] = ReplicationDelay()
    copied = [rec(500)]
    delays = [tracker.observe(float(t), {P: rec(1_000 + t)}, {P: copied})[P] for t in range(0, 100, 10)]
    assert delays == [float(t) for t in range(0, 100, 10)]
    assert tracker.observe(100.0, {P: rec(1_099)}, {P: [rec(1_099)]}) == {P: 0.0}  # caught up at once


def test_an_unreadable_standby_counts_nothing_as_replicated() -> None:
    tracker: ReplicationDelay[tuple[str, int]] = ReplicationDelay()
    tracker.observe(0.0, {P: rec(1)}, None)
    assert tracker.observe(30.0, {P: rec(1)}, None) == {P: 30.0}
    assert tracker.observe(31.0, {P: rec(1)}, {P: [rec(1)]}) == {P: 0.0}


def test_an_empty_primary_partition_is_never_behind_and_a_partition_gone_is_forgotten() -> None:
    tracker: ReplicationDelay[tuple[str, int]] = ReplicationDelay()
    other = ("energy.orders", 1)
    assert tracker.observe(0.0, {P: None, other: rec(5)}, {}) == {P: 0.0, other: 0.0}
    assert tracker.observe(9.0, {P: None}, {}) == {P: 0.0}
    assert tracker.observe(10.0, {P: None, other: rec(5)}, {}) == {P: 0.0, other: 0.0}  # seen anew


def test_a_later_record_on_the_standby_stands_for_the_ones_scrolled_out_of_its_tail() -> None:
    assert replicated(rec(1_000), [rec(1_001, b"later")])
    assert not replicated(rec(1_000), [rec(1_000, b"other")])  # same time, another record: not this one
    assert not replicated(rec(1_000), [])


def test_bounded_marks_overstate_the_delay_never_understate_it() -> None:
    tracker: ReplicationDelay[tuple[str, int]] = ReplicationDelay(marks_max=2)
    for t in range(5):  # five new tails, nothing copied: the second mark absorbs the later three
        tracker.observe(float(t), {P: rec(t)}, {P: []})
    assert tracker.observe(5.0, {P: rec(4)}, {P: [rec(0)]}) == {P: 4.0}  # the truth is 4 s (tail 1 seen at 1)
    assert tracker.observe(6.0, {P: rec(4)}, {P: [rec(3)]}) == {P: 5.0}  # truth 2 s (tail 4 at 4): over, safe
    assert tracker.observe(7.0, {P: rec(4)}, {P: [rec(4)]}) == {P: 0.0}


def test_the_monitor_sets_the_gauge_and_counts_an_unreadable_standby_as_holding_nothing(monkeypatch: Any) -> None:
    from infra.kafka import replication_monitor as rm
    from streams.ops import metrics

    clock = iter([100.0, 130.0, 131.0])
    monkeypatch.setattr(rm, "read_primary", lambda bootstrap, timeout_s: {P: rec(7)})
    standby: dict[str, Any] = {"tails": None}

    def read_standby(bootstrap: str, wanted: list[Any], timeout_s: float) -> dict[Any, list[Tail]]:
        if standby["tails"] is None:
            raise RuntimeError("connection refused")
        return dict(standby["tails"])

    monkeypatch.setattr(rm, "read_standby", read_standby)
    monitor = rm.ReplicationMonitor("primary:9092", "standby:9092", clock=lambda: next(clock))
    gauge = metrics.STANDBY_DELAY.labels(*map(str, P))
    assert monitor.probe() == {P: 0.0} and monitor.error == "standby standby:9092 unreadable: connection refused"
    assert monitor.probe() == {P: 30.0} and gauge._value.get() == 30.0  # seen at 100, still not copied at 130
    standby["tails"] = {P: [rec(7)]}
    assert monitor.probe() == {P: 0.0} and gauge._value.get() == 0.0 and monitor.error is None
    assert (monitor.probes, monitor.worst_delay_s) == (3, 30.0)


def test_a_mark_lost_among_same_time_records_clears_once_the_standby_has_the_primarys_last() -> None:
    tracker: ReplicationDelay[tuple[str, int]] = ReplicationDelay()
    batch = [Tail(5_000, b"k", str(i).encode()) for i in range(40)]  # one broker batch: one LogAppendTime
    tracker.observe(0.0, {P: batch[10]}, {P: []})  # probed mid-way (the first part of the batch seen)
    # the standby copied up to batch[29]: batch[10] is neither among its last 16 nor older than them (over-stated)
    assert tracker.observe(20.0, {P: batch[39]}, {P: batch[14:30]}) == {P: 20.0}
    assert tracker.observe(21.0, {P: batch[39]}, {P: batch[24:40]}) == {P: 0.0}  # the primary's last is there
