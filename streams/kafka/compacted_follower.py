"""The latest value per key of a compacted topic, followed from its beginning in a thread.

Governance writes state a service must know before it decides (``governance.pause``: is money out halted;
``governance.parameters``: the rates and limits in force) to compacted topics whose latest record per key is the
state. Every process that needs it reads the topic without a consumer group, every partition from the beginning,
like the FX listener, and keeps the latest decoded value per key; a tombstone removes the key. A record that does not
decode, or that ``check`` refuses, is skipped (logged): the previous value of its key stands.

Until the topic has been read up to the end offsets it had at start, the state is not known (:attr:`caught_up` is
not set); what "not known" means is the caller's (the pause counts as paused). :func:`wait_started` bounds a starting
worker's wait. The values are one mapping replaced (never mutated) on each change, so a reader may keep a reference
and compare it by identity to see whether anything changed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from contracts.topics import Topic
from streams.kafka.clients import consumer_config, watermarks

log = logging.getLogger("nexus.compacted")

POLL_S = 0.1
BATCH_MAX = 100
METADATA_TIMEOUT_S = 30.0


class CompactedFollower:
    """Follows ``topic`` in a thread; :attr:`values` is the latest decoded value per key.

    ``check`` (optional) raises ``ValueError`` for a record (key, decoded value) that must not apply (its words are
    logged).
    ``on_change`` is called (in the follower's thread) with the new values after each change once caught up, and
    once when the start state is reached."""

    def __init__(
        self,
        bootstrap: str,
        topic: Topic,
        consumer: Consumer | None = None,
        check: Callable[[str, Any], None] | None = None,
        on_change: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.topic = topic
        self._consumer = consumer or Consumer(consumer_config(bootstrap, f"nexus-follow-{uuid.uuid4().hex}"))
        self._check = check
        self._on_change = on_change
        self.values: Mapping[str, Any] = {}  # key -> latest value (replaced on each change)
        self.records_seen = 0
        self.records_skipped = 0
        self._ends: dict[int, int] = {}  # partition -> its end offset at start, until read up to it
        self.caught_up = threading.Event()  # every record that was in the log at start has been applied
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic.name}", daemon=True)

    def start(self) -> None:
        name = self.topic.name
        meta = self._consumer.list_topics(name, timeout=METADATA_TIMEOUT_S).topics[name]
        partitions = sorted(meta.partitions)
        for p in partitions:
            low, high = watermarks(self._consumer, name, p, METADATA_TIMEOUT_S)
            if high > low:
                self._ends[p] = high
        self._consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        if not self._ends:
            self._reached_start_state()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            reached: dict[int, int] = {}
            for msg in self._consumer.consume(BATCH_MAX, timeout=POLL_S):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() or partition is None or offset is None:
                    continue
                reached[partition] = offset + 1
                self._apply(msg.key(), msg.value(), offset)
            self._note_reached(reached)
        self._consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        name = (key or b"").decode(errors="replace")
        if value is None:
            changed = {k: v for k, v in self.values.items() if k != name}  # the key's tombstone
        else:
            try:
                decoded = self.topic.decode(value)
                if self._check is not None:
                    self._check(name, decoded)
            except ValueError as exc:
                self.records_skipped += 1
                log.warning("%s: skipped the record at offset %s (key %r): %s", self.topic.name, offset, name, exc)
                return
            changed = {**self.values, name: decoded}
        self.records_seen += 1
        self.values = changed
        if self.caught_up.is_set() and self._on_change is not None:
            self._on_change(changed)

    def _note_reached(self, reached: dict[int, int]) -> None:
        for p, next_offset in reached.items():
            if p in self._ends and next_offset >= self._ends[p]:
                del self._ends[p]
                if not self._ends:
                    self._reached_start_state()

    def _reached_start_state(self) -> None:
        self.caught_up.set()
        if self._on_change is not None:
            self._on_change(self.values)

    def wait_ready(self, timeout_s: float) -> bool:
        """Blocking, bounded: read the topic up to its end offsets at start. False: the state is not known yet."""
        return self.caught_up.wait(max(0.0, timeout_s))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def wait_started(follower: CompactedFollower, timeout_s: float) -> bool:
    """Start ``follower`` and wait (bounded) until it knows the state; logs when it does not."""
    follower.start()
    started = time.monotonic()
    ready = follower.wait_ready(timeout_s)
    if not ready:
        log.error(
            "%s not read to its end after %.1f s: its state is not known yet (the reader's safe default applies)",
            follower.topic.name,
            time.monotonic() - started,
        )
    return ready
