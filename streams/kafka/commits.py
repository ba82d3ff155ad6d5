"""What a plain confluent-kafka consumer may commit, and when it must stop (the plain driver's bookkeeping).

Commits carry explicit offsets, captured after the flush that acknowledged the outputs of the records they cover
(`Positions`); `enable.auto.offset.store` is off, so librdkafka's stored offsets stay empty.

Errors: every consumer and producer error is logged with its code and fatal/retriable flags. One that leaves the
client unusable (`must_exit`: librdkafka-fatal, fenced static member, authentication or authorization) ends the
process at once; so does a failed or unacknowledged output (flush bounded to FLUSH_TIMEOUT_S), and offset commits
failing for COMMIT_PATIENCE_S in a row. Nothing is committed after such an error and recovery is by replay, so a
supervisor just restarts the worker. Other errors are logged and skipped: librdkafka retries them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streams.kafka.clients import consumer_config, describe, must_exit, producer_config
from streams.settings import Settings

log = logging.getLogger("nexus.plain")

FLUSH_TIMEOUT_S = 30.0
# Commits may fail for a moment (a rebalance, a coordinator moving); each later commit supersedes a failed
# one. If none succeeds for this long, the worker exits: a restart re-joins and replays.
COMMIT_PATIENCE_S = 60.0
EXIT_FATAL = 3


class WorkerFailed(Exception):
    """The worker cannot go on; the message says why and what to do."""


@dataclass
class Health:
    """What the librdkafka callbacks saw, for the loop to act on (callbacks run inside poll/consume/flush)."""

    fatal: str | None = None
    undelivered: int = 0
    first_undelivered: str = ""
    commit_failing_since: float | None = None
    last_commit_error: str = ""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def on_error(self, error: KafkaError, where: str) -> None:
        """A client-level error (error_cb) or an error event delivered as a message."""
        if must_exit(error):
            log.error("%s error, cannot go on: %s", where, describe(error))
            self.fatal = self.fatal or f"{where} error {describe(error)}"
        else:
            log.warning("%s error, librdkafka retries it: %s", where, describe(error))

    def on_delivery(self, error: KafkaError | None, msg: Message) -> None:
        """Called for failed deliveries only (delivery.report.only.error)."""
        if error is None:
            return
        self.undelivered += 1
        if not self.first_undelivered:
            self.first_undelivered = f"{msg.topic()}: {describe(error)}"
        log.error("output to %s not delivered: %s", msg.topic(), describe(error))

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [(tp, tp.error) for tp in partitions or [] if tp.error is not None]
        if error is None and not failed:
            self.commit_failing_since = None
            return
        if error is not None and error.code() == KafkaError._NO_OFFSET:
            return  # nothing new to commit: not a failure
        parts = [describe(error)] if error is not None else []
        parts += [f"{tp.topic}[{tp.partition}]@{tp.offset}: {describe(e)}" for tp, e in failed]
        detail = "; ".join(parts)
        self.last_commit_error = detail
        if self.commit_failing_since is None:
            self.commit_failing_since = self.clock()
        log.warning("offset commit failed (a later commit supersedes it): %s", detail)
        if error is not None and must_exit(error):
            self.fatal = self.fatal or f"offset commit error {describe(error)}"

    def check(self) -> None:
        """Raise WorkerFailed if what the callbacks saw means this process must stop."""
        if self.fatal:
            raise WorkerFailed(
                f"{self.fatal}. Exiting without committing; restart the worker (recovery is by replay). "
                "If it says fenced: another process runs with the same NEXUS_WORKER_INSTANCE_ID, give each its own."
            )
        if self.undelivered:
            raise WorkerFailed(
                f"{self.undelivered} outputs not delivered (first: {self.first_undelivered}). Exiting without "
                "committing the offsets that produced them; restart the worker: replay re-emits them."
            )
        if self.commit_failing_since is not None and self.clock() - self.commit_failing_since > COMMIT_PATIENCE_S:
            raise WorkerFailed(
                f"no offset commit succeeded for {COMMIT_PATIENCE_S:.0f} s (last: {self.last_commit_error}). "
                "Exiting so a restart re-joins the group; check the group coordinator broker."
            )


def partitions_text(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{t}{sorted(ps)}" for t, ps in sorted(by_topic.items())) or "nothing"


class Positions:
    """What to commit: per partition, the offset after the last record whose outputs have been produced.

    Commits send these explicit offsets, captured after the flush that acknowledged those outputs. A bare
    ``consumer.commit()`` would instead commit librdkafka's *stored* offsets as they are when its own thread
    gets to the request, and every record ``consume()`` hands over is stored at once: a commit asked for
    after batch N's flush could carry batch N+1's positions before N+1's outputs were produced.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}
        self.dirty = False  # handled records since the last snapshot

    def handled(self, topic: str, partition: int, offset: int) -> None:
        self._next[(topic, partition)] = offset + 1
        self.dirty = True

    def snapshot(self, partitions: list[TopicPartition] | None = None) -> list[TopicPartition]:
        """Offsets to commit, for `partitions` (default: every partition handled); clears `dirty`."""
        wanted = None if partitions is None else {(tp.topic, tp.partition) for tp in partitions}
        if wanted is None:
            self.dirty = False
        return [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in self._next.items()
            if wanted is None or (topic, partition) in wanted
        ]

    def forget(self, partitions: list[TopicPartition]) -> None:
        """No longer ours (revoked or lost): never commit for them again unless they are handled anew."""
        for tp in partitions:
            self._next.pop((tp.topic, tp.partition), None)


def client_configs(settings: Settings, health: Health, debug: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Consumer and producer settings; every error, failed delivery and failed commit reaches `health`.

    `debug`: librdkafka debug contexts for the consumer (NEXUS_PLAIN_KAFKA_DEBUG, e.g. "cgrp"), to diagnose
    the group protocol from the worker's log.
    """
    consumer = {
        **consumer_config(
            settings.bootstrap_servers,
            f"{settings.app_id}-plain",
            group_instance_id=f"{settings.worker_instance_id}-plain",
            session_timeout_ms=int(settings.static_session_timeout_s * 1000),
            enable_auto_offset_store=False,  # commits carry explicit offsets (Positions)
        ),
        "error_cb": lambda error: health.on_error(error, "consumer"),
        "on_commit": health.on_commit,
    }
    if debug:
        consumer["debug"] = debug
    producer = {
        **producer_config(settings.bootstrap_servers),
        "error_cb": lambda error: health.on_error(error, "producer"),
        "delivery.report.only.error": True,  # acks are awaited by flush(); only failures need a callback
        "on_delivery": health.on_delivery,
    }
    return consumer, producer


def commit_acknowledged(
    consumer: Consumer, producer: Producer, health: Health, positions: Positions, *, asynchronous: bool
) -> None:
    """Wait until every output produced so far is acknowledged, then commit the positions of the records
    that produced them. Raises WorkerFailed, committing nothing, if an output is missing or failed."""
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining:
        raise WorkerFailed(
            f"{remaining} outputs not acknowledged within {FLUSH_TIMEOUT_S:.0f} s. Exiting without "
            "committing; restart the worker once the brokers answer: replay re-emits them."
        )
    health.check()  # a failed delivery reported by this flush: do not commit past it
    offsets = positions.snapshot()  # taken after the flush: only records whose outputs are acknowledged
    if not offsets:
        return
    if asynchronous:
        consumer.commit(offsets=offsets, asynchronous=True)  # the outcome arrives in Health.on_commit
    else:
        consumer.commit(offsets=offsets, asynchronous=False)
