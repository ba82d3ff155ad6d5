"""Garbage-collector policy for long-running workers: collection pauses must not grow with state.

Why: a worker's state is hundreds of thousands of immutable records (order book entries, settled
trades, the ledger's transfers and results). They are namedtuples, which CPython's cycle collector
never untracks, so every full collection walks all of them. In-process on this machine, 150,000
orders of P2P state gave full-collection pauses of 190-410 ms (11 in 24 s, 9% of the CPU), growing
with uptime: that pause is the latency tail.

Policy: every `interval_s`, collect everything not yet frozen, then move what survived into the
permanent generation (`gc.freeze`). Full collections then walk only what was allocated since the
last freeze, so a pause is bounded by the allocation rate times the interval, not by the state.

What it costs: refcounting still frees frozen objects, so only a reference cycle that was alive at a
freeze and becomes garbage later escapes collection. State records cannot form cycles (tuples of
atoms and other records); in-flight runtime objects can. Every `unfreeze_every` ticks the permanent
generation is collected once in full (one long pause, rarely): such cycles are reclaimed then, and
the log says how many there were (0 in the P2P and bridge benches after the first).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from streams.settings import Settings

log = logging.getLogger("nexus.gc")


@dataclass
class HeapPolicy:
    interval_s: float = 0.5
    unfreeze_every: int = 7200  # ticks; ~an hour at the default interval; 0 = never
    ticks: int = 0
    last_pause_ms: float = 0.0
    _due: float = field(default=0.0, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> HeapPolicy:
        """The policy the settings ask for; an interval of 0 never ticks (start-up is still frozen)."""
        interval_s = settings.gc_freeze_interval_s or float("inf")
        full_every = settings.gc_full_collection_every_s
        return cls(interval_s=interval_s, unfreeze_every=max(1, round(full_every / interval_s)) if full_every else 0)

    def start(self) -> None:
        """Freeze what start-up built (imports, configuration, rebuilt state) once it is all there."""
        gc.collect()
        gc.freeze()
        self._due = time.monotonic() + self.interval_s
        log.info("gc policy: %d objects frozen at start; collect and freeze every %.1fs", gc.get_freeze_count(),
                 self.interval_s)  # fmt: skip

    def maybe_tick(self) -> bool:
        """For loops that poll: tick when the interval has passed."""
        if time.monotonic() < self._due:
            return False
        self.tick()
        return True

    def tick(self) -> None:
        started = time.perf_counter()
        self.ticks += 1
        full = bool(self.unfreeze_every) and self.ticks % self.unfreeze_every == 0
        if full:
            gc.unfreeze()  # reclaim cycles that died after being frozen (see the module doc)
        collected = gc.collect()
        gc.freeze()
        if full:
            log.info("gc policy: full collection reclaimed %d objects; %d frozen", collected, gc.get_freeze_count())
        self.last_pause_ms = (time.perf_counter() - started) * 1000
        self._due = time.monotonic() + self.interval_s


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cycle collection while building a large state (a replay, a snapshot load): each automatic full
    collection would walk everything built so far, much of the build's time (a 97,000-command ledger: a
    replay 6.0 s with collections, 3.5 s without; docs/performance.md). Cycles made meanwhile are
    collected once it ends, by the next collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
