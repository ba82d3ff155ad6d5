"""The status read model's process: a plain confluent-kafka loop that folds the settlement topics into SQLite.

    python -m streams.status          (settings from NEXUS_* and NEXUS_STATUS_*)

**Every partition, one file.** A status needs every topic that speaks of its settlement, and a history needs
every settlement, so the service assigns itself all partitions of its inputs instead of joining a group that
would split them between instances: each instance keeps a complete file of its own (run one beside each API
host, or one for all). The consumer group (``{NEXUS_APP_ID}-status-{NEXUS_WORKER_INSTANCE_ID}``) only carries
the positions, committed after each batch, for lag monitoring; a start reads from the file's positions, never the
group's: the file is the truth (streams.status.store).

**Batches.** Records are applied in batches of at most ``batch_records_max`` records or ``batch_wait_ms`` after
the batch's first record, each batch one transaction with its offsets. Records that do not validate against
their topic's contract are counted and logged, not applied (the services owning those topics dead-letter them).

**Rebuild.** Without the file (deleted, a new host) every input is read from its beginning: the statuses come
back as far as the topics' retention reaches (docs/status-read-model.md).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, Message, TopicPartition

from contracts.topics import Topic
from streams.kafka import ingress
from streams.kafka.clients import consume_now, consumer_config, watermarks
from streams.kafka.service_loop import position_of, run_until_stopped
from streams.kafka.topic_admin import ensure_topics
from streams.ops import health, logs
from streams.settings import Settings, get_settings
from streams.status.observe import INPUTS, OBSERVERS
from streams.status.settings import StatusSettings, get_status_settings, status_db_path
from streams.status.store import Input, StatusStore

log = logging.getLogger("nexus.status")

POLL_S = 0.1
METADATA_TIMEOUT_S = 30.0
WATERMARK_TIMEOUT_S = 5.0
SKIPPED_LOGGED_MAX = 20  # the first skipped records are logged one by one, then one in SKIPPED_LOG_EVERY
SKIPPED_LOG_EVERY = 1_000


class StatusLoop:
    def __init__(self, settings: Settings, status_settings: StatusSettings, path: Path) -> None:
        self.settings = settings
        self.status_settings = status_settings
        self.store = StatusStore(path)
        self.topics: dict[str, Topic] = {t.name: t for t in INPUTS}
        config = consumer_config(settings.bootstrap_servers, f"{settings.app_id}-status-{settings.worker_instance_id}")
        self.consumer = Consumer(config)
        self.assigned: list[TopicPartition] = []
        self.pending: list[Input] = []
        self.batch_due = 0.0  # monotonic time the pending batch must be committed by
        self.skipped = 0
        self.stopping = False
        log.info("status store %s, %d partition positions stored", path, len(self.store.positions()))

    # ------------------------------------------------------------------ assignment

    def assign(self) -> int:
        """Partitions of the inputs not assigned yet, each at the file's position (its beginning without one)."""
        have = {(tp.topic, tp.partition) for tp in self.assigned}
        positions = self.store.positions()
        new: list[TopicPartition] = []
        for topic in INPUTS:
            meta = self.consumer.list_topics(topic.name, timeout=METADATA_TIMEOUT_S).topics[topic.name]
            if meta.error is not None:
                raise RuntimeError(f"{topic.name}: {meta.error}")
            for p in sorted(meta.partitions):
                if (topic.name, p) not in have:
                    new.append(TopicPartition(topic.name, p, positions.get((topic.name, p), OFFSET_BEGINNING)))
        if new:
            self.consumer.incremental_assign(new)
            self.assigned += [TopicPartition(tp.topic, tp.partition) for tp in new]
        return len(new)

    # ------------------------------------------------------------------ records

    def take(self, msg: Message) -> None:
        where = position_of(msg)
        if where is None:
            return
        topic, partition, offset = where
        kind, stamp = msg.timestamp()
        stamp_ms = time.time_ns() // 1_000_000 if kind == TIMESTAMP_NOT_AVAILABLE else stamp
        if not self.pending:
            self.batch_due = time.monotonic() + self.status_settings.batch_wait_ms / 1000
        self.pending.append(self.observe(topic, partition, offset, stamp_ms, msg.key(), msg.value()))

    def observe(
        self, topic: str, partition: int, offset: int, stamp_ms: int, key: bytes | None, value: bytes | None
    ) -> Input:
        if value is None:  # a compacted journal's tombstone: nothing to observe
            return Input(topic, partition, offset, stamp_ms, None)
        decoded = ingress.validate(self.topics[topic], key, value, self.settings.max_ingress_message_bytes)
        if isinstance(decoded, ingress.Rejected):
            self._skipped(f"{topic}[{partition}]@{offset}: {decoded.code}: {decoded.reason}")
            return Input(topic, partition, offset, stamp_ms, None, skipped=True)
        try:
            return Input(topic, partition, offset, stamp_ms, OBSERVERS[topic](decoded))
        except Exception:  # a bug: this record only, and loudly
            log.exception("%s[%d]@%d: could not be observed; skipped", topic, partition, offset)
            self._skipped(f"{topic}[{partition}]@{offset}: processing failed")
            return Input(topic, partition, offset, stamp_ms, None, skipped=True)

    def _skipped(self, what: str) -> None:
        self.skipped += 1
        if self.skipped <= SKIPPED_LOGGED_MAX or self.skipped % SKIPPED_LOG_EVERY == 0:
            log.warning("record skipped (%d so far; its topic's owner dead-letters it): %s", self.skipped, what)

    def flush(self) -> None:
        """The pending batch and its positions in one transaction; then the positions to the group (for lag)."""
        if not self.pending:
            return
        outcome = self.store.apply_batch(self.pending, datetime.now(UTC))
        self.pending = []
        for record_id in outcome.conflicts:
            log.warning("settlement %s: a second, different final state ignored (the first one stays)", record_id)
        if outcome.stale:
            log.warning("%d records below their partition's stored position ignored", outcome.stale)
        positions = self.store.positions()
        offsets = [
            TopicPartition(t, p, positions[(t, p)])
            for t, p in ((tp.topic, tp.partition) for tp in self.assigned)
            if (t, p) in positions
        ]
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:  # only the group's copy, for monitoring: the file has the positions
                log.warning("positions not committed to the group: %s", exc)

    def check_lag(self) -> None:
        """The inputs' watermarks into the file (readers compute the lag from them); new partitions assigned."""
        if self.assign():
            log.info("new input partitions assigned")
        ends = []
        for tp in self.assigned:
            low, high = watermarks(self.consumer, tp.topic, tp.partition, WATERMARK_TIMEOUT_S)
            ends.append((tp.topic, tp.partition, low, high))
        self.store.record_ends(ends, datetime.now(UTC))

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        partitions = self.assign()
        self.check_lag()
        log.info("Worker ready (status read model: %d input partitions, one instance per file)", partitions)
        limit = self.status_settings.batch_records_max
        next_lag = time.monotonic() + self.status_settings.lag_every_s
        while not self.stopping:
            now = time.monotonic()
            wait = POLL_S if not self.pending else max(0.0, min(POLL_S, self.batch_due - now))
            for msg in consume_now(self.consumer, wait, max(1, limit - len(self.pending))):
                self.take(msg)
            now = time.monotonic()
            if self.pending and (len(self.pending) >= limit or now >= self.batch_due):
                self.flush()
            if now >= next_lag:
                self.check_lag()
                next_lag = now + self.status_settings.lag_every_s

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.consumer.close()
            counters = self.store.counters()
            self.store.close()
            log.info("stopped; %s", counters)


def main() -> int:
    settings = get_settings()
    logs.setup(settings)
    ensure_topics(settings)
    status_settings = get_status_settings()
    loop = StatusLoop(settings, status_settings, status_db_path(settings, status_settings))
    group = f"{settings.app_id}-status-{settings.worker_instance_id}"
    return run_until_stopped(loop, health.start(settings, "status", [group]))


if __name__ == "__main__":
    sys.exit(main())
