"""The bridge on a plain confluent-kafka consumer: the same :class:`streams.bridge.service.BridgeService` as the
Faust agent (``streams/bridge/agent.py``), driven by a consume loop.

    python -m streams.bridge          (or python -m streams.bridge.loop; settings from NEXUS_*; the ledger runs
                                       in another process)

A thin driver: it consumes, hands each raw record to :meth:`BridgeService.handle`, and commits per partition the
lowest offset still unfinished (:class:`OffsetTracker`): records finish out of order (a slow rail holds one
request while later ones complete), so a crash re-delivers exactly the unfinished requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from contracts.topics import BRIDGE_REQUESTS
from streams.bridge.offsets import OffsetTracker
from streams.bridge.service import BridgeService, build_service, watch_metrics
from streams.kafka import event_loop
from streams.kafka.clients import consume_now, consumer_config, describe, must_exit
from streams.kafka.gc_policy import HeapPolicy
from streams.kafka.topic_admin import ensure_topics
from streams.ops import health, logs
from streams.settings import Settings, get_settings

log = logging.getLogger("nexus.bridge_loop")

BATCH_MAX = 500
POLL_S = 0.05
COMMIT_EVERY_S = 0.2


class BridgeLoop:
    def __init__(self, settings: Settings, service: BridgeService) -> None:
        self.settings = settings
        self.service = service
        self.offsets = OffsetTracker()
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        # Changed by the rebalance callbacks through the event loop, in order with the batches they precede.
        self.assigned: set[int] = set()
        config = consumer_config(
            settings.bootstrap_servers,
            f"{settings.app_id}-bridge",
            group_instance_id=f"{settings.worker_instance_id}-bridge",
            session_timeout_ms=int(settings.static_session_timeout_s * 1000),
        )
        self.consumer = Consumer({**config, "on_commit": self._on_commit})

    # librdkafka calls these from inside consume(), in the polling thread: hand the change to the event loop.
    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        got = [tp.partition for tp in partitions]
        log.info("assigned %s", sorted(got))
        self.loop.call_soon_threadsafe(self.assigned.update, got)

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        lost = [tp.partition for tp in partitions]
        log.info("revoked %s", sorted(lost))
        self.loop.call_soon_threadsafe(self._forget, lost)

    def _forget(self, partitions: list[int]) -> None:
        self.assigned.difference_update(partitions)  # records of theirs still in hand are left to the new owner
        self.offsets.forget(partitions)
        self.service.forget(partitions)

    @staticmethod
    def _on_commit(err: Any, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("offset commit failed (the next one covers it): %s", err)

    async def run(self) -> None:
        self.consumer.subscribe([BRIDGE_REQUESTS.name], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("Worker ready (bridge on a plain confluent-kafka consumer, %s event loop)", event_loop.running_kind())
        committer = asyncio.create_task(self._commit_periodically())
        try:
            while not self.stopping.is_set():
                batch = await asyncio.to_thread(consume_now, self.consumer, POLL_S, BATCH_MAX)
                for msg in batch:
                    await self._admit(msg)
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer

    async def _admit(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if must_exit(err):  # a restart re-joins; unfinished requests are recovered from the journal
                raise RuntimeError(f"consumer error, cannot go on; restart the worker: {describe(err)}")
            log.warning("consumer error, librdkafka retries it: %s", describe(err))
            return
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        if partition not in self.assigned:
            return
        self.offsets.started(partition, offset)
        await self.service.handle(
            msg.key(), msg.value(), partition, offset, lambda: self.offsets.finished(partition, offset)
        )

    async def _commit_periodically(self) -> None:
        while not self.stopping.is_set():  # run() cancels it when the loop stops
            await asyncio.sleep(COMMIT_EVERY_S)
            self.commit()

    def commit(self) -> None:
        moved = self.offsets.to_commit()
        if moved:
            positions = [TopicPartition(BRIDGE_REQUESTS.name, p, o) for p, o in moved.items()]
            self.consumer.commit(offsets=positions, asynchronous=True)

    async def close(self) -> None:
        await self.service.aclose()  # in-flight settlements stay unacked: a restart recovers them
        self.commit()
        log.info("stopped; %d requests unfinished, left to recovery", self.offsets.unfinished())
        await asyncio.to_thread(self.consumer.close)


async def serve(settings: Settings) -> int:
    service = await build_service(settings)
    bridge = BridgeLoop(settings, service)
    for sig in (signal.SIGTERM, signal.SIGINT):
        bridge.loop.add_signal_handler(sig, bridge.stopping.set)
    heap = HeapPolicy.from_settings(settings)
    heap.start()
    ops = health.start(settings, "bridge", consumer_groups=[f"{settings.app_id}-bridge"])
    watch_metrics(lambda: (service,))

    async def beat() -> None:  # the event loop's liveness: a loop stuck in a call stops beating
        while not bridge.stopping.is_set():
            ops.beat()
            await asyncio.sleep(1.0)

    beating = asyncio.create_task(beat())

    async def collect_and_freeze() -> None:
        while not bridge.stopping.is_set():
            await asyncio.sleep(heap.interval_s)
            heap.tick()

    gc_task = asyncio.create_task(collect_and_freeze()) if settings.gc_freeze_interval_s else None
    try:
        await bridge.run()
    finally:
        beating.cancel()
        if gc_task is not None:
            gc_task.cancel()
        await bridge.close()
    return 0


def main() -> int:
    settings = get_settings()
    logs.setup(settings)
    ensure_topics(settings)
    return event_loop.run(serve(settings), settings.event_loop)


if __name__ == "__main__":
    sys.exit(main())
