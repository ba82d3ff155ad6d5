"""The plain loop: role selection, what it does with each kind of Kafka error, and what it commits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS
from streams.kafka import plain_driver
from streams.kafka.clients import must_exit
from streams.kafka.commits import (
    COMMIT_PATIENCE_S,
    EXIT_FATAL,
    Health,
    Positions,
    WorkerFailed,
    client_configs,
    commit_acknowledged,
    partitions_text,
)
from streams.p2p.processors import ROLES, roles_of
from streams.settings import Settings


def inputs_for(agents: str) -> dict[str, object]:
    return {ROLES[role].name: ROLES[role] for role in roles_of(agents)}


def test_roles_pick_inputs() -> None:
    assert inputs_for("") == {ENERGY_ORDERS.name: ENERGY_ORDERS, LEDGER_COMMANDS.name: LEDGER_COMMANDS}
    assert inputs_for("matching") == {ENERGY_ORDERS.name: ENERGY_ORDERS}
    assert inputs_for(" settlement ") == {LEDGER_COMMANDS.name: LEDGER_COMMANDS}


def test_an_agent_the_loop_does_not_run_is_an_error() -> None:
    with pytest.raises(ValueError, match="bridge"):
        inputs_for("matching,bridge")


# --- which errors end the worker ----------------------------------------------------------------------------------

FATAL = [
    KafkaError(KafkaError._FENCED, "static consumer fenced", fatal=True),
    KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced by another member with the same group.instance.id"),
    # What error_cb really receives for a fenced static member: code _FATAL, fatal() False.
    KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by other consumer"),
    KafkaError(KafkaError._FAIL, "anything librdkafka flags fatal", fatal=True),
    KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED),
    KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED),
    KafkaError(KafkaError._AUTHENTICATION),
]
TRANSIENT = [
    KafkaError(KafkaError._TRANSPORT, "broker connection lost", retriable=True),
    KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"),
    KafkaError(KafkaError._MAX_POLL_EXCEEDED, "left the group; rejoins on the next poll"),
    KafkaError(KafkaError.REBALANCE_IN_PROGRESS, retriable=True),
    KafkaError(KafkaError.UNKNOWN_MEMBER_ID),
    KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "subscribed topic not available"),
    KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, retriable=True),
]


@pytest.mark.parametrize("error", FATAL, ids=lambda e: e.name())
def test_an_error_that_leaves_the_client_unusable_ends_the_worker(
    error: KafkaError, caplog: pytest.LogCaptureFixture
) -> None:
    assert must_exit(error)
    health = Health()
    with caplog.at_level(logging.WARNING, logger="nexus.plain"):
        health.on_error(error, "consumer")
    assert f"{error.name()} (code {error.code()}, fatal={error.fatal()}" in caplog.text
    with pytest.raises(WorkerFailed, match="restart the worker"):
        health.check()


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: e.name())
def test_an_error_librdkafka_recovers_from_is_logged_and_skipped(
    error: KafkaError, caplog: pytest.LogCaptureFixture
) -> None:
    assert not must_exit(error)
    health = Health()
    with caplog.at_level(logging.WARNING, logger="nexus.plain"):
        health.on_error(error, "consumer")
    assert f"{error.name()} (code {error.code()}, fatal=False, retriable={error.retriable()})" in caplog.text
    health.check()  # does not raise: the loop goes on


def test_a_fenced_worker_says_what_to_do() -> None:
    health = Health()
    health.on_error(KafkaError(KafkaError.FENCED_INSTANCE_ID), "consumer")
    health.on_error(KafkaError(KafkaError._TRANSPORT), "consumer")  # a later, lesser error does not hide it
    with pytest.raises(WorkerFailed, match=r"FENCED_INSTANCE_ID.*NEXUS_WORKER_INSTANCE_ID"):
        health.check()


def test_a_failed_exit_is_non_zero_and_immediate(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []

    def fail() -> int:
        raise WorkerFailed("consumer error _FENCED")

    def record_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(plain_driver.os, "_exit", record_exit)
    with pytest.raises(SystemExit):
        plain_driver.main(fail)
    assert exits == [EXIT_FATAL] and EXIT_FATAL != 0


# --- commits --------------------------------------------------------------------------------------------------------


@dataclass
class FakeTopicPartition:  # a commit result: confluent-kafka's TopicPartition.error is read-only
    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


class FakeProducer:
    """flush() reports `failures` through the delivery callback (as librdkafka does) and leaves `unacked`."""

    def __init__(self, health: Health, failures: int = 0, unacked: int = 0) -> None:
        self.health, self.failures, self.unacked = health, failures, unacked
        self.flushes = 0

    def flush(self, timeout_s: float) -> int:
        self.flushes += 1
        for _ in range(self.failures):
            self.health.on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), FakeMessage())  # type: ignore[arg-type]
        return self.unacked


class FakeMessage:
    def topic(self) -> str:
        return "energy.trades"


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[str, int, int]], bool]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:  # no bare commit()
        self.commits.append(([(tp.topic, tp.partition, tp.offset) for tp in offsets], asynchronous))


def commit(consumer: FakeConsumer, producer: FakeProducer, health: Health, positions: Positions) -> None:
    commit_acknowledged(consumer, producer, health, positions, asynchronous=True)  # type: ignore[arg-type]


def test_a_commit_carries_the_records_handled_before_the_flush_and_no_later_ones() -> None:
    health, positions, consumer = Health(), Positions(), FakeConsumer()
    positions.handled("energy.orders", 0, 9)
    positions.handled("energy.orders", 0, 10)
    positions.handled("ledger.commands", 0, 4)
    commit(consumer, FakeProducer(health), health, positions)
    assert consumer.commits == [([("energy.orders", 0, 11), ("ledger.commands", 0, 5)], True)]
    # The next batch, handed over after the commit was asked for, is not in it (a bare commit() could carry it).
    positions.handled("energy.orders", 0, 11)
    assert consumer.commits[0][0] == [("energy.orders", 0, 11), ("ledger.commands", 0, 5)]
    assert positions.dirty


def test_the_consumer_never_commits_what_librdkafka_stored() -> None:
    consumer_conf, producer_conf = client_configs(Settings(kafka_bootstrap_servers="kafka:9092"), Health())
    assert consumer_conf["enable.auto.offset.store"] is False
    assert consumer_conf["enable.auto.commit"] is False
    assert callable(consumer_conf["error_cb"]) and callable(consumer_conf["on_commit"])
    assert callable(producer_conf["error_cb"]) and callable(producer_conf["on_delivery"])


def test_a_failed_delivery_stops_the_worker_before_the_commit() -> None:
    health, positions, consumer = Health(), Positions(), FakeConsumer()
    positions.handled("energy.orders", 2, 41)
    with pytest.raises(WorkerFailed, match=r"1 outputs not delivered.*_MSG_TIMED_OUT"):
        commit(consumer, FakeProducer(health, failures=1), health, positions)
    assert consumer.commits == []


def test_unacknowledged_outputs_stop_the_worker_before_the_commit() -> None:
    health, positions, consumer = Health(), Positions(), FakeConsumer()
    positions.handled("energy.orders", 2, 41)
    with pytest.raises(WorkerFailed, match="3 outputs not acknowledged"):
        commit(consumer, FakeProducer(health, unacked=3), health, positions)
    assert consumer.commits == []


def test_nothing_handled_commits_nothing() -> None:
    health, consumer = Health(), FakeConsumer()
    commit(consumer, FakeProducer(health), health, Positions())
    assert consumer.commits == []


def test_revoked_or_lost_partitions_are_no_longer_committed() -> None:
    positions = Positions()
    positions.handled("energy.orders", 0, 5)
    positions.handled("energy.orders", 1, 7)
    revoked = [TopicPartition("energy.orders", 1)]
    assert [(tp.partition, tp.offset) for tp in positions.snapshot(revoked)] == [(1, 8)]
    assert positions.dirty  # a partial snapshot (on revocation) leaves the rest to commit
    positions.forget(revoked)
    assert [(tp.partition, tp.offset) for tp in positions.snapshot()] == [(0, 6)]
    assert not positions.dirty


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_commits_are_logged_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    health = Health(clock=clock)
    with caplog.at_level(logging.WARNING, logger="nexus.plain"):
        health.on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, retriable=True), [])
    assert "offset commit failed" in caplog.text and "REBALANCE_IN_PROGRESS (code 27" in caplog.text
    clock.now += COMMIT_PATIENCE_S
    failed = FakeTopicPartition("energy.orders", 0, 6, KafkaError(KafkaError.ILLEGAL_GENERATION))
    health.on_commit(None, [failed])  # type: ignore[list-item]
    health.check()  # failing for COMMIT_PATIENCE_S: still waiting for one to succeed
    clock.now += 1
    with pytest.raises(WorkerFailed, match=r"no offset commit succeeded.*ILLEGAL_GENERATION"):
        health.check()


def test_a_successful_commit_ends_the_failing_streak() -> None:
    clock = Clock()
    health = Health(clock=clock)
    health.on_commit(KafkaError(KafkaError.REQUEST_TIMED_OUT), [])
    health.on_commit(None, [FakeTopicPartition("energy.orders", 0, 6)])  # type: ignore[list-item]
    clock.now += COMMIT_PATIENCE_S * 10
    health.check()
    assert health.commit_failing_since is None


def test_nothing_to_commit_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    health = Health()
    with caplog.at_level(logging.WARNING, logger="nexus.plain"):
        health.on_commit(KafkaError(KafkaError._NO_OFFSET), [])
    assert health.commit_failing_since is None and caplog.text == ""


def test_a_commit_refused_because_the_member_was_fenced_ends_the_worker() -> None:
    health = Health()
    health.on_commit(KafkaError(KafkaError.FENCED_INSTANCE_ID), [])
    with pytest.raises(WorkerFailed, match="FENCED_INSTANCE_ID"):
        health.check()


def test_partition_lists_read_well_in_the_log() -> None:
    partitions: list[Any] = [TopicPartition("energy.orders", p) for p in (3, 0, 1)] + [
        TopicPartition("ledger.commands", 0)
    ]
    assert partitions_text(partitions) == "energy.orders[0, 1, 3], ledger.commands[0]"
    assert partitions_text([]) == "nothing"
