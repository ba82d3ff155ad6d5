"""The workers' garbage-collector policy: survivors are frozen, garbage cycles are still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.kafka.gc_policy import HeapPolicy
from streams.settings import Settings


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.collect()


def test_a_tick_freezes_live_records_and_collects_dead_cycles_first() -> None:
    policy = HeapPolicy(interval_s=60)
    policy.start()
    live = [("trade", i) for i in range(1000)]  # tracked: the list holds them
    dead, dead_ref = cycle()
    del dead  # garbage only the cycle collector can free
    frozen_before = gc.get_freeze_count()
    policy.tick()
    assert dead_ref() is None, "a garbage cycle was frozen instead of collected"
    assert gc.get_freeze_count() > frozen_before
    tracked = {id(o) for o in gc.get_objects()}
    assert id(live) not in tracked, "a survivor stayed in the collected generations"
    assert policy.ticks == 1 and policy.last_pause_ms >= 0


def test_a_cycle_that_dies_after_a_freeze_is_reclaimed_at_the_periodic_unfreeze() -> None:
    policy = HeapPolicy(interval_s=60, unfreeze_every=3)
    policy.start()
    alive, ref = cycle()
    policy.tick()  # frozen while alive
    del alive
    policy.tick()
    assert ref() is not None, "frozen objects are not collected until the unfreeze tick"
    policy.tick()  # third tick: unfreeze, collect everything, freeze again
    assert ref() is None


def test_maybe_tick_waits_for_the_interval() -> None:
    policy = HeapPolicy(interval_s=3600)
    policy.start()
    assert policy.maybe_tick() is False
    policy._due = 0.0  # the interval has passed
    assert policy.maybe_tick() is True
    assert policy.ticks == 1


def test_settings_pick_the_interval_and_the_full_collection_period() -> None:
    policy = HeapPolicy.from_settings(Settings(gc_freeze_interval_s=0.5, gc_full_collection_every_s=60))
    assert policy.interval_s == 0.5 and policy.unfreeze_every == 120
    off = HeapPolicy.from_settings(Settings(gc_freeze_interval_s=0))
    off.start()
    assert off.maybe_tick() is False, "an interval of 0 must never tick"
    never = HeapPolicy.from_settings(Settings(gc_full_collection_every_s=0))
    assert never.unfreeze_every == 0
