"""The notifier's Kafka driver: one consumer group over ``notifications.holders``, deliveries in parallel.

    python -m streams.notifications     (settings: NEXUS_NOTIFY_* for the channels, NEXUS_* for Kafka)

On start it reads the compacted ``notifications.deliveries`` topic into the set of notification ids done (again
after every partition assignment, for what another instance recorded meanwhile), so a notification is sent once
also across restarts. Records are delivered concurrently (at most ``max_in_flight`` at once: a slow or failing
holder holds one slot, never the stream), in order per account (the topic's key). A record's offset is committed
only when its outputs are acknowledged; records finish out of order, so per partition the position passes a record
only once it and every record before it are finished (``OffsetTracker``, the bridge's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
import uuid
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from contracts.topics import NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_HOLDERS
from streams.bridge.offsets import OffsetTracker
from streams.kafka import event_loop, ingress
from streams.kafka.clients import AsyncProducer, consume_now, consumer_config, describe, must_exit, watermarks
from streams.kafka.topic_admin import ensure_topics
from streams.notifications.channels import build_channels
from streams.notifications.notifier import Notifier
from streams.notifications.policy import DoneIds, RetryPolicy
from streams.notifications.settings import NotifySettings, get_notify_settings
from streams.ops import health, logs
from streams.security.envelope import platform_sealer
from streams.settings import Settings, get_settings

log = logging.getLogger("nexus.notifier")

BATCH_MAX = 500
POLL_S = 0.05
COMMIT_EVERY_S = 0.2
CATCH_UP_TIMEOUT_S = 120.0


class DoneReader:
    """Reads the keys of ``notifications.deliveries`` (the notification ids done): from the beginning at the first
    call, then what was added since. Its own consumer, assigned (no group): it reads everything."""

    def __init__(self, bootstrap: str) -> None:
        name = NOTIFICATIONS_DELIVERIES.name
        self.consumer = Consumer(
            consumer_config(bootstrap, f"nexus-notifier-reader-{uuid.uuid4().hex}", enable_partition_eof=True)
        )
        partitions = sorted(self.consumer.list_topics(name, timeout=30).topics[name].partitions)
        self.consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        self.next_offset = dict.fromkeys(partitions, 0)

    def read_new(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> list[str]:
        """The ids recorded since the last call, up to the topic's end as of this call (blocking)."""
        name = NOTIFICATIONS_DELIVERIES.name
        ends = {p: watermarks(self.consumer, name, p, 30)[1] for p in self.next_offset}
        ids: list[str] = []
        deadline = time.monotonic() + timeout_s
        while any(self.next_offset[p] < end for p, end in ends.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: not read to its end within {timeout_s}s")
            for msg in self.consumer.consume(1000, timeout=0.2):
                self._take(msg, ids)
        return ids

    def _take(self, msg: Message, ids: list[str]) -> None:
        partition, offset, error = msg.partition(), msg.offset(), msg.error()
        if partition is None or offset is None:
            return
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:  # compaction leaves gaps: the end is where EOF says
                self.next_offset[partition] = max(self.next_offset[partition], offset)
            return
        self.next_offset[partition] = max(self.next_offset[partition], offset + 1)
        key = msg.key()
        if key:
            ids.append(key.decode(errors="replace"))

    def close(self) -> None:
        self.consumer.close()


class NotifierLoop:
    def __init__(self, settings: Settings, notify: NotifySettings, notifier: Notifier, reader: DoneReader) -> None:
        self.notify, self.notifier, self.reader = notify, notifier, reader
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.failure: BaseException | None = None
        self.offsets = OffsetTracker()
        self.assigned: set[int] = set()
        self.catch_up_due = False
        self.slots = asyncio.Semaphore(notify.max_in_flight)
        self.tails: dict[bytes | None, asyncio.Task[None]] = {}  # the last record admitted per account (key)
        self.tasks: set[asyncio.Task[None]] = set()
        self.producer = AsyncProducer(settings.bootstrap_servers, max_queued=10_000)
        config = consumer_config(
            settings.bootstrap_servers,
            f"{settings.app_id}-notifier",
            group_instance_id=f"{settings.worker_instance_id}-notifier",
            session_timeout_ms=int(settings.static_session_timeout_s * 1000),
        )
        self.consumer = Consumer({**config, "on_commit": _on_commit})

    # librdkafka calls these inside consume(), in the polling thread: hand the change to the event loop, where it
    # runs before the batch that consume() returns (both are scheduled from that thread, in this order).
    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        got = [tp.partition for tp in partitions]
        log.info("assigned %s", sorted(got))
        self.loop.call_soon_threadsafe(self._assign, got)

    def _assign(self, partitions: list[int]) -> None:
        self.assigned.update(partitions)
        self.catch_up_due = True

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        lost = [tp.partition for tp in partitions]
        log.info("revoked %s", sorted(lost))
        self.loop.call_soon_threadsafe(self._forget, lost)

    def _forget(self, partitions: list[int]) -> None:
        self.assigned.difference_update(partitions)
        self.offsets.forget(partitions)

    async def catch_up(self) -> int:
        ids = await asyncio.to_thread(self.reader.read_new)
        for nid in ids:
            self.notifier.done.add(nid)
        return len(ids)

    async def run(self) -> None:
        self.consumer.subscribe([NOTIFICATIONS_HOLDERS.name], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("Worker ready (holder notifier, %d ids done)", len(self.notifier.done))
        committer = asyncio.create_task(self._commit_periodically())
        try:
            while not self.stopping.is_set():
                batch = await asyncio.to_thread(consume_now, self.consumer, POLL_S, BATCH_MAX)
                if self.catch_up_due:
                    self.catch_up_due = False
                    log.info("read %d more done ids after the assignment", await self.catch_up())
                for msg in batch:
                    if self.stopping.is_set():
                        break
                    await self._admit(msg)
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    async def _admit(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if must_exit(err):
                raise RuntimeError(f"consumer error, cannot go on; restart the notifier: {describe(err)}")
            log.warning("consumer error, librdkafka retries it: %s", describe(err))
            return
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        if partition not in self.assigned:
            return
        await self.slots.acquire()  # bounded: a full house stops the consumption until a delivery finishes
        self.offsets.started(partition, offset)
        key = msg.key()
        previous = self.tails.get(key)
        task = asyncio.create_task(self._process(msg, partition, offset, previous))
        self.tails[key] = task
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: bytes | None, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.tails.get(key) is task:
            del self.tails[key]
        self.slots.release()
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()
            log.error("stopping: %s", self.failure)
            self.stopping.set()

    async def _process(self, msg: Message, partition: int, offset: int, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # the account's earlier notification first (its failure is its own)
        origin = ingress.Origin(NOTIFICATIONS_HOLDERS.name, partition, offset)
        key, value = msg.key(), msg.value()
        try:
            outputs = await self.notifier.handle(key, value, origin)
        except Exception as error:  # a bug or an input nobody foresaw: dead-lettered, never lost
            log.exception("processing %s:%d@%d failed", origin.topic, partition, offset)
            rejected = ingress.processing_failed(origin.topic, error)
            outputs = ingress.dead_letter_outputs(origin, key, value, rejected)
        for topic, output in outputs:  # in order: a dead letter lands before the record that marks the id done
            await self.producer.send(topic.name, topic.key_of(output), topic.encode(output))
        self.offsets.finished(partition, offset)

    async def _commit_periodically(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(COMMIT_EVERY_S)
            self.commit()

    def commit(self) -> None:
        moved = self.offsets.to_commit()
        if moved:
            positions = [TopicPartition(NOTIFICATIONS_HOLDERS.name, p, o) for p, o in moved.items()]
            self.consumer.commit(offsets=positions, asynchronous=True)

    async def close(self) -> None:
        if self.tasks:
            log.info("stopping: %d deliveries under way get %.0fs", len(self.tasks), self.notify.stop_grace_s)
            _done, pending = await asyncio.wait(set(self.tasks), timeout=self.notify.stop_grace_s)
            for task in pending:  # their offsets stay uncommitted: the next start delivers them
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.commit()  # only what is finished: a failed record's offset is never passed
        self.producer.close()
        await asyncio.to_thread(self.consumer.close)
        self.reader.close()
        n = self.notifier
        log.info("stopped: %d sent, %d undelivered, %d skipped as done", n.sent, n.undelivered, n.skipped)


def _on_commit(err: Any, _partitions: list[TopicPartition]) -> None:
    if err is not None and err.code() != KafkaError._NO_OFFSET:
        log.warning("offset commit failed (the next one covers it): %s", err)


async def serve(settings: Settings, notify: NotifySettings) -> int:
    policy = RetryPolicy(notify.attempts, notify.backoff_initial_ms / 1000, notify.backoff_max_ms / 1000)
    limits = httpx.Limits(max_connections=notify.max_in_flight)
    async with httpx.AsyncClient(timeout=notify.gateway_timeout_s, limits=limits) as client:
        done = DoneIds(notify.remembered_ids_max)
        reader = DoneReader(settings.bootstrap_servers)
        notifier = Notifier(build_channels(notify, client), policy, done, sealer=platform_sealer())
        driver = NotifierLoop(settings, notify, notifier, reader)
        log.info("read %d done ids from %s", await driver.catch_up(), NOTIFICATIONS_DELIVERIES.name)
        for sig in (signal.SIGTERM, signal.SIGINT):
            driver.loop.add_signal_handler(sig, driver.stopping.set)
        try:
            await driver.run()
        finally:
            await driver.close()
    if driver.failure is not None:
        log.critical("the notifier failed; its unfinished records are delivered after the restart: %s", driver.failure)
        return 1
    return 0


def main() -> int:
    settings = get_settings()
    logs.setup(settings)
    health.start(settings, "notifier", [f"{settings.app_id}-notifier"], beats=False)
    ensure_topics(settings)
    return event_loop.run(serve(settings, get_notify_settings()), settings.event_loop)


if __name__ == "__main__":
    sys.exit(main())
