"""The same processing as the Faust matching and ledger agents, as a plain confluent-kafka loop.

The same services at about a third of Faust's CPU per order (docs/performance.md), under the same SIGKILL
recovery test as the Faust worker (tests/integration/test_p2p_recovery.py).

    python -m streams.kafka.plain_driver            (matching + ledger, settings from NEXUS_*; NEXUS_AGENTS=matching or
                                             settlement runs one of them; NEXUS_PLAIN_KAFKA_DEBUG=cgrp adds
                                             librdkafka's group-protocol debug lines to the log)

Same services, same replay-on-assignment recovery, same dead letters, same rule: outputs are
acknowledged before the offsets that produced them are committed. `bench/bench_p2p_kafka.py` runs
both and reports what Faust costs.

Commits carry explicit offsets, taken after the flush (`Positions`). The loop used to call a bare
``consumer.commit(asynchronous=True)``, which commits the offsets librdkafka has *stored* when its own
thread handles the request; every record ``consume()`` hands over is stored at once, so the commit asked for
after batch N's flush often carried batch N+1, consumed a moment later and not yet processed. A SIGKILL
before N+1's flush then lost its outputs: the restart replays silently up to the committed offset. The kill
test saw that as "no progress after the last restart": the worker had consumed everything, and 301 of 2,149
trades never came (debug log: a commit of energy.orders[3]@1589 before any record of that partition had been
processed).

Errors: every consumer and producer error is logged with its code and fatal/retriable flags. One that
leaves the client unusable (`must_exit`: librdkafka-fatal, fenced static member, authentication or
authorization) ends the process at once with exit code 3 and a line saying what to do; nothing is
committed after it and recovery is by replay, so a supervisor just restarts it. So does a failed or
unacknowledged output (flush bounded to 30 s), and offset commits failing for 60 s in a row. Other
errors are logged and skipped: librdkafka retries them. Assignment, revocation and loss of partitions
are logged.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS, PLATFORM_DEADLETTERS, Topic
from streams.kafka import ingress
from streams.kafka.clients import (
    consume_now,
    consumer_config,
    describe,
    must_exit,
    produce_bounded,
    producer_config,
)
from streams.kafka.gc_policy import HeapPolicy
from streams.kafka.partition_log import rebuild_state
from streams.kafka.topic_admin import ensure_topics, topic_id
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition
from streams.p2p.snapshots import LedgerSnapshots
from streams.settings import Settings, get_settings

log = logging.getLogger("nexus.plain")
FACTORIES = {ENERGY_ORDERS.name: MatchingPartition, LEDGER_COMMANDS.name: LedgerPartition}
# The agent each input stands for (NEXUS_AGENTS picks a subset, as for the Faust worker).
ROLES = {"matching": ENERGY_ORDERS, "settlement": LEDGER_COMMANDS}


def inputs_for(agents: str) -> dict[str, Topic]:
    wanted = [name.strip() for name in agents.split(",") if name.strip()] or list(ROLES)
    unknown = sorted(set(wanted) - set(ROLES))
    if unknown:
        raise ValueError(f"the plain loop runs {sorted(ROLES)}; not {unknown}")
    return {ROLES[name].name: ROLES[name] for name in wanted}


BATCH_MAX = 1000
COMMIT_EVERY_S = 0.05
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
    after batch N's flush could carry batch N+1's positions before N+1's outputs were produced (the kill
    test lost trades that way). ``enable.auto.offset.store`` is off too, so stored offsets stay empty.
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
            session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
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


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run()
    except WorkerFailed as failure:
        log.critical("%s", failure)
        logging.shutdown()
        # At once, as a SIGKILL would: no flush, no commit, no group leave that could block on a broken client.
        os._exit(EXIT_FATAL)


def run() -> int:
    settings = get_settings()
    ensure_topics(settings)
    bootstrap = settings.bootstrap_servers
    health = Health()
    consumer_conf, producer_conf = client_configs(settings, health, settings.plain_kafka_debug)
    consumer = Consumer(consumer_conf)
    producer = Producer(producer_conf)
    inputs = inputs_for(settings.agents)
    states: dict[tuple[str, int], Any] = {}
    snapshots = ledger_snapshots(settings) if LEDGER_COMMANDS.name in inputs else None
    snapshot_taken_at = float("-inf")  # the first commit after a start takes one: a rebuild is not paid twice
    snapshot_offsets: dict[int, int] = {}  # partition -> next_offset of the last snapshot started or restored

    def restored(partition: int, until_offset: int) -> Any:
        assert snapshots is not None
        state = snapshots.load(partition, until_offset)
        if state is not None:
            snapshot_offsets[partition] = state.next_offset
            name, offset = LEDGER_COMMANDS.name, state.next_offset
            log.info("%s[%d] restored from the snapshot at offset %d", name, partition, offset)
        return state

    positions = Positions()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", partitions_text(partitions))

    def on_revoke(revoked_from: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", partitions_text(partitions))
        # Hand the next owner our progress: outputs acknowledged, then their offsets committed. If that
        # fails, the next owner replays from the last commit (repeats, never losses).
        offsets = positions.snapshot(partitions)
        positions.forget(partitions)
        if not offsets:
            return
        if producer.flush(FLUSH_TIMEOUT_S) or health.undelivered:
            health.fatal = health.fatal or "outputs not acknowledged while partitions were revoked"
            return
        try:
            revoked_from.commit(offsets=offsets, asynchronous=False)
        except KafkaException as failure:
            log.warning("commit on revocation failed (the next owner replays from the last commit): %s", failure)

    def on_lost(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "lost %s (session timed out or fenced; they are rebuilt if assigned again)", partitions_text(partitions)
        )
        positions.forget(partitions)

    # States are kept across a rebalance, as in streams.kafka.faust_driver: a fold over an immutable log stays right,
    # records offered again below `next_offset` are skipped and a gap is rebuilt from the log.
    consumer.subscribe(list(inputs), on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    log.info("Worker ready (plain confluent-kafka loop)")

    def emit(topic: Topic, message: Any) -> None:
        produce_bounded(producer, topic.name, topic.encode(message), topic.key_of(message))

    heap = HeapPolicy.from_settings(settings)
    heap.start()
    last_commit = time.monotonic()
    while not stopping:
        heap.maybe_tick()
        batch: list[Message] = consume_now(consumer, 0.05, BATCH_MAX)
        health.check()
        for msg in batch:
            error = msg.error()
            if error is not None:
                health.on_error(error, "consumer")
                health.check()
                continue
            name, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if name is None or partition is None or offset is None:
                continue
            positions.handled(name, partition, offset)  # committed only after the flush below
            topic = inputs[name]
            state = states.get((name, partition))
            if state is None or offset > state.next_offset:
                started = time.monotonic()
                state = states[(name, partition)] = rebuild_state(
                    bootstrap,
                    topic,
                    partition,
                    offset,
                    FACTORIES[name],
                    settings.max_ingress_message_bytes,
                    restored if snapshots is not None and name == LEDGER_COMMANDS.name else None,
                )
                log.info(
                    "%s[%d] rebuilt up to offset %d in %.1f s", name, partition, offset, time.monotonic() - started
                )
            if offset < state.next_offset:
                continue
            decoded = ingress.validate(topic, msg.key(), msg.value(), settings.max_ingress_message_bytes)
            if isinstance(decoded, ingress.Rejected):
                state.apply(offset, None)
                origin = ingress.Origin(name, partition, offset)
                emit(PLATFORM_DEADLETTERS, ingress.dead_letter(origin, msg.key(), msg.value(), decoded))
                continue
            kind, stamped_ms = msg.timestamp()
            record_ms = None if kind == TIMESTAMP_NOT_AVAILABLE else stamped_ms  # the broker's, on ledger.commands
            for out_topic, output in state.apply(offset, decoded, record_ms):
                emit(out_topic, output)
        producer.poll(0)
        # Outputs flow without waiting for acks; every COMMIT_EVERY_S they are all acknowledged (flush),
        # and only then are the positions that produced them committed. Waiting for acks after every
        # batch instead put a produce round trip and a commit round trip on every record's path.
        # A failed commit is re-sent until one succeeds (bounded by COMMIT_PATIENCE_S in health.check).
        due = positions.dirty or health.commit_failing_since is not None
        if due and time.monotonic() - last_commit >= COMMIT_EVERY_S:
            commit_acknowledged(consumer, producer, health, positions, asynchronous=True)
            last_commit = time.monotonic()
            # Right after the flush: the ledger's state is at the positions just committed, between batches.
            if snapshots is not None and last_commit - snapshot_taken_at >= settings.ledger_snapshot_every_s:
                snapshot_taken_at = last_commit
                for (name, partition), state in states.items():
                    fresh = name == LEDGER_COMMANDS.name and state.next_offset > snapshot_offsets.get(partition, 0)
                    if fresh and snapshots.write_in_background(state):
                        snapshot_offsets[partition] = state.next_offset
    log.info("stopping: flushing outputs, committing, leaving the group")
    try:
        commit_acknowledged(consumer, producer, health, positions, asynchronous=False)
    except KafkaException as failure:
        log.warning("final commit failed (the next start replays from the last commit): %s", failure)
    positions.forget(positions.snapshot())  # committed: nothing left for on_revoke during close()
    consumer.close()
    if snapshots is not None:
        snapshots.wait()
    return 0


def ledger_snapshots(settings: Settings) -> LedgerSnapshots | None:
    """The ledger's snapshot files (streams/p2p/snapshots.py), or None when NEXUS_LEDGER_SNAPSHOT_EVERY_S is 0."""
    if not settings.ledger_snapshot_every_s:
        return None
    directory = settings.data_dir / "snapshots" / settings.app_id
    return LedgerSnapshots(directory, topic_id(settings.bootstrap_servers, LEDGER_COMMANDS.name))


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


if __name__ == "__main__":
    sys.exit(main())
