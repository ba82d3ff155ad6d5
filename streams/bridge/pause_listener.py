"""Whether money out is paused: the latest ``governance.pause`` record, followed from the start of the topic.

The governance service writes one :class:`contracts.models.PauseState` per executed PAUSE / UNPAUSE to a compacted
topic keyed by scope, so the latest record is the state. Every bridge worker and the auto-payout service need it,
so this reads without a consumer group, every partition from the beginning, like the FX listener. A tombstone for
the scope means no pause. A record that is not a PauseState is skipped (logged): the previous state stands.

Until the topic has been read up to its end offsets at start, the state is not known: :attr:`PauseListener.paused`
then answers True (fail closed: nothing goes out on a guess); :meth:`wait_ready` bounds a starting worker's wait.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from contracts import models as m
from contracts.topics import Topic
from streams.kafka.clients import consumer_config, watermarks

log = logging.getLogger("nexus.pause")

POLL_S = 0.1
METADATA_TIMEOUT_S = 30.0


class PauseListener:
    """Follows ``topic`` (``contracts.topics.GOVERNANCE_PAUSE``) in a thread; :attr:`paused` is its latest state."""

    def __init__(
        self,
        bootstrap: str,
        topic: Topic,
        consumer: Consumer | None = None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.topic = topic
        self._consumer = consumer or Consumer(consumer_config(bootstrap, f"nexus-pause-{uuid.uuid4().hex}"))
        self.state: m.PauseState | None = None  # the latest record (None: none, or a tombstone)
        self.records_seen = 0
        self.on_change = on_change
        self._ends: dict[int, int] = {}  # partition -> its end offset at start, until read up to it
        self.caught_up = threading.Event()  # every record that was in the log at start has been applied
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="governance-pause", daemon=True)

    @property
    def paused(self) -> bool:
        """Money out is paused (True too while the state is not known yet: fail closed)."""
        if not self.caught_up.is_set():
            return True
        state = self.state
        return state is not None and state.paused

    def start(self) -> None:
        name = self.topic.name
        meta = self._consumer.list_topics(name, timeout=METADATA_TIMEOUT_S).topics[name]
        partitions = sorted(meta.partitions)
        for p in partitions:
            low, high = watermarks(self._consumer, name, p, METADATA_TIMEOUT_S)
            if high > low:
                self._ends[p] = high
        if not self._ends:
            self.caught_up.set()
        self._consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            reached: dict[int, int] = {}
            for msg in self._consumer.consume(100, timeout=POLL_S):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                reached[partition] = offset + 1
                self._apply(msg.value(), offset)
            self._note_reached(reached)
        self._consumer.close()

    def _apply(self, value: bytes | None, offset: int) -> None:
        before = self.paused if self.caught_up.is_set() else None
        if value is None:
            self.state = None  # the scope's tombstone: no pause
        else:
            try:
                decoded = self.topic.decode(value)
            except ValueError:
                log.warning("%s: skipped an invalid record at offset %s", self.topic.name, offset)
                return
            assert isinstance(decoded, m.PauseState), type(decoded)
            self.state = decoded
        self.records_seen += 1
        self._announce(before)

    def _announce(self, before: bool | None) -> None:
        """Log a change (and the state reached at start); tell ``on_change``."""
        if not self.caught_up.is_set():
            return
        now = self.paused
        if before is None or now != before:
            state = self.state
            by = "" if state is None else f" by governance request {state.request_id}"
            reason = "" if state is None or not state.reason else f": {state.reason}"
            log.warning("money out %s%s%s", "PAUSED" if now else "not paused", by, reason)
            if self.on_change is not None:
                self.on_change(now)

    def _note_reached(self, reached: dict[int, int]) -> None:
        for p, next_offset in reached.items():
            if p in self._ends and next_offset >= self._ends[p]:
                del self._ends[p]
                if not self._ends:
                    self.caught_up.set()
                    self._announce(None)

    def wait_ready(self, timeout_s: float) -> bool:
        """Blocking, bounded: read the topic up to its end offsets at start. False: not known yet (paused meanwhile)."""
        return self.caught_up.wait(max(0.0, timeout_s))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def wait_started(listener: PauseListener, timeout_s: float) -> bool:
    """Start ``listener`` and wait (bounded) until it knows the state; logs when it does not."""
    listener.start()
    started = time.monotonic()
    ready = listener.wait_ready(timeout_s)
    if not ready:
        log.error(
            "%s not read to its end after %.1f s: money out counts as PAUSED until it is",
            listener.topic.name,
            time.monotonic() - started,
        )
    return ready
