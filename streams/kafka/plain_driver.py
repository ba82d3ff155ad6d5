"""The plain confluent-kafka driver of `RecordProcessor`s: consume, hand records over, produce, commit.

The same processors as the Faust agents at about a third of Faust's CPU per record (docs/performance.md).
Outputs are acknowledged before the offsets that produced them are committed (`streams.kafka.commits`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, Message, Producer, TopicPartition

from contracts.topics import PLATFORM_DEADLETTERS
from streams.kafka import commits
from streams.kafka.clients import consume_now, produce_bounded
from streams.kafka.commits import Health, Positions, commit_acknowledged
from streams.kafka.gc_policy import HeapPolicy
from streams.kafka.processor import RecordProcessor
from streams.ops import health as ops_health
from streams.ops import logs, metrics
from streams.settings import Settings, get_settings

log = logging.getLogger("nexus.plain")
BATCH_MAX = 1000
# Outputs flow without waiting for acks; this often they are all acknowledged (flush) and only then are the
# positions that produced them committed: waiting per batch put two round trips on every record's path.
COMMIT_EVERY_S = 0.05
METER = metrics.RecordMeter()


def main(run: Callable[[], int]) -> int:
    """Run a plain worker; a `commits.WorkerFailed` ends the process at once with commits.EXIT_FATAL and what to do."""
    logs.setup(get_settings())
    try:
        return run()
    except commits.WorkerFailed as failure:
        log.critical("%s", failure)
        logging.shutdown()
        # At once, as a SIGKILL would: no flush, no commit, no group leave that could block on a broken client.
        os._exit(commits.EXIT_FATAL)


class Rebalance:
    """The consumer's rebalance callbacks: a revoked partition's progress is handed on, a lost one forgotten."""

    def __init__(self, producer: Producer, health: Health, positions: Positions) -> None:
        self.producer, self.health, self.positions = producer, health, positions

    def on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", commits.partitions_text(partitions))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", commits.partitions_text(partitions))
        # Outputs acknowledged, then their offsets committed; if that fails the next owner replays (repeats only).
        offsets = self.positions.snapshot(partitions)
        self.positions.forget(partitions)
        if not offsets:
            return
        if self.producer.flush(commits.FLUSH_TIMEOUT_S) or self.health.undelivered:
            self.health.fatal = self.health.fatal or "outputs not acknowledged while partitions were revoked"
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as failure:
            log.warning("commit on revocation failed (the next owner replays from the last commit): %s", failure)

    def on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "lost %s (session timed out or fenced; rebuilt if assigned again)", commits.partitions_text(partitions)
        )
        self.positions.forget(partitions)


def run(settings: Settings, processors: dict[str, RecordProcessor]) -> int:
    """Drive `processors` (input topic name -> processor) until SIGTERM/SIGINT."""
    health = Health()
    consumer_conf, producer_conf = commits.client_configs(settings, health, settings.plain_kafka_debug)
    consumer, producer = Consumer(consumer_conf), Producer(producer_conf)
    positions = Positions()
    rebalance = Rebalance(producer, health, positions)
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    consumer.subscribe(
        list(processors), on_assign=rebalance.on_assign, on_revoke=rebalance.on_revoke, on_lost=rebalance.on_lost
    )
    ops = ops_health.start(settings, "p2p", consumer_groups=[consumer_conf["group.id"]])
    metrics.add_refresher(metrics.snapshot_age_refresher(processors.values()))
    metrics.add_refresher(metrics.holds_open_refresher(processors.values()))
    log.info("Worker ready (plain confluent-kafka loop)")
    heap = HeapPolicy.from_settings(settings)
    heap.start()
    last_commit = time.monotonic()
    while not stopping:
        ops.beat()
        heap.maybe_tick()
        batch: list[Message] = consume_now(consumer, 0.05, BATCH_MAX)
        health.check()
        for msg in batch:
            handle(msg, processors, producer, health, positions)
        producer.poll(0)
        # A failed commit is re-sent until one succeeds (bounded by COMMIT_PATIENCE_S in health.check).
        due = positions.dirty or health.commit_failing_since is not None
        if due and time.monotonic() - last_commit >= COMMIT_EVERY_S:
            commit_acknowledged(consumer, producer, health, positions, asynchronous=True)
            last_commit = time.monotonic()
            for processor in processors.values():  # right after the flush: between records
                processor.maybe_snapshot(last_commit)
    stop(consumer, producer, health, positions, processors)
    return 0


def handle(
    msg: Message, processors: dict[str, RecordProcessor], producer: Producer, health: Health, positions: Positions
) -> None:
    """Hand one consumed record to its processor and queue its outputs."""
    error = msg.error()
    if error is not None:
        health.on_error(error, "consumer")
        health.check()
        return
    name, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if name is None or partition is None or offset is None:
        return
    positions.handled(name, partition, offset)  # committed only after the outputs are acknowledged
    kind, stamped_ms = msg.timestamp()
    record_ms = None if kind == TIMESTAMP_NOT_AVAILABLE else stamped_ms  # the broker's, on ledger.commands
    started = time.perf_counter()
    outcome = "ok"
    for topic, output in processors[name].process(partition, offset, msg.key(), msg.value(), record_ms):
        outcome = "dead_letter" if topic is PLATFORM_DEADLETTERS else outcome
        produce_bounded(producer, topic.name, topic.encode(output), topic.key_of(output))
    METER.observe(name, outcome, time.perf_counter() - started)


def stop(
    consumer: Consumer, producer: Producer, health: Health, positions: Positions, processors: dict[str, Any]
) -> None:
    log.info("stopping: flushing outputs, committing, leaving the group")
    try:
        commit_acknowledged(consumer, producer, health, positions, asynchronous=False)
    except KafkaException as failure:
        log.warning("final commit failed (the next start replays from the last commit): %s", failure)
    positions.forget(positions.snapshot())  # committed: nothing left for on_revoke during close()
    consumer.close()
    for processor in processors.values():
        processor.close()
