"""ensure_topics on a real broker: a fold's input keeps every record, even one made before; partition counts
that are part of a topic's meaning survive an override and are checked on existing topics."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from contracts import models as m
from contracts.topics import DAY_MS, KEEP_FOREVER, LEDGER_COMMANDS, Topic
from streams.kafka.topic_admin import ensure_topics, partition_counts
from streams.settings import Settings

KEPT_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
APPLIED_WITHIN_S = 15.0


def retention_of(admin: AdminClient, name: str) -> dict[str, str]:
    return configs_of(admin, name, ("retention.ms", "retention.bytes"))


def configs_of(admin: AdminClient, name: str, keys: Iterable[str]) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {k: entries[k].value for k in keys}


def configs_once_applied(admin: AdminClient, name: str, want: dict[str, str]) -> dict[str, str]:
    """The topic's configs that ``want`` names, read again until they match or APPLIED_WITHIN_S passes. KRaft
    answers an alter once the controller has committed it; each broker applies it from the metadata log a moment
    later, and describe_configs reads the broker's copy (a stale read seen once in CI)."""
    deadline = time.monotonic() + APPLIED_WITHIN_S
    while (seen := configs_of(admin, name, want)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen


def test_the_ledger_input_and_an_existing_fold_input_are_kept_forever(kafka_bootstrap: str, run_id: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    # Made earlier with a 30-day retention (the registry's old setting), as on a cluster that predates the fix.
    name = f"test.fold.{run_id}"
    made = admin.create_topics([NewTopic(name, 1, 1, config={"retention.ms": str(30 * DAY_MS)})])
    made[name].result(timeout=30)
    assert retention_of(admin, name)["retention.ms"] == str(30 * DAY_MS)
    fold_input = Topic(name, m.LedgerCommand, "command_id", "a fold's input", retention_ms=KEEP_FOREVER)

    assert ensure_topics(settings, [fold_input]) == []  # it existed: nothing created, its retention fixed
    assert configs_once_applied(admin, name, KEPT_FOREVER) == KEPT_FOREVER

    ensure_topics(settings, [LEDGER_COMMANDS])
    assert configs_once_applied(admin, LEDGER_COMMANDS.name, KEPT_FOREVER) == KEPT_FOREVER
    other = f"test.plain.{run_id}"
    ensure_topics(settings, [Topic(other, m.LedgerCommand, "command_id", "an ordinary topic", retention_ms=DAY_MS)])
    assert retention_of(admin, other)["retention.ms"] == str(DAY_MS)  # ordinary topics keep their bounds


def test_an_override_does_not_split_a_single_writer_and_a_wrong_existing_count_stops_the_start(
    kafka_bootstrap: str, run_id: str
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, topic_partitions_override=3)
    single = Topic(f"test.single.{run_id}", m.LedgerCommand, "command_id", "one writer", partitions=1,
                   fixed_partitions=True)  # fmt: skip
    ordinary = Topic(f"test.ordinary.{run_id}", m.LedgerCommand, "command_id", "scales out")
    assert sorted(ensure_topics(settings, [single, ordinary])) == sorted([single.name, ordinary.name])
    assert partition_counts(admin, [single.name, ordinary.name]) == {single.name: 1, ordinary.name: 3}

    # A single-writer topic made by hand with 2 partitions: the start stops and says what to do.
    split = Topic(f"test.split.{run_id}", m.LedgerCommand, "command_id", "one writer", partitions=1,
                  fixed_partitions=True)  # fmt: skip
    admin.create_topics([NewTopic(split.name, 2, 1)])[split.name].result(timeout=30)
    with pytest.raises(RuntimeError, match=rf"{split.name} has 2 partitions; it must have exactly 1"):
        ensure_topics(settings, [split])


def test_a_journal_with_fewer_partitions_than_its_requests_stops_the_start(kafka_bootstrap: str, run_id: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    requests = Topic(f"test.requests.{run_id}", m.BridgeRequest, "payer_account_id", "requests")
    journal = Topic(f"test.journal.{run_id}", m.BridgeJournalEntry, "bridge_tx_id", "journal",
                    copartitioned_with=requests.name)  # fmt: skip
    assert len(ensure_topics(settings, [requests, journal])) == 2  # made together: same count, accepted
    admin.create_partitions([NewPartitions(requests.name, 6)])[requests.name].result(timeout=30)
    with pytest.raises(RuntimeError, match=rf"{journal.name} has 4 partitions and {requests.name} has 6"):
        ensure_topics(settings, [requests, journal])


def test_an_existing_topic_gets_broker_timestamps_and_records_carry_the_append_time(
    kafka_bootstrap: str, run_id: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from confluent_kafka import Producer

    from streams.kafka.partition_log import read_partition

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    name = f"test.stamped.{run_id}"
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)  # made before: CreateTime
    stamped = Topic(name, m.LedgerCommand, "command_id", "a ledger-like input", broker_timestamps=True)
    ensure_topics(settings, [stamped])
    broker_time = {"message.timestamp.type": "LogAppendTime"}
    assert configs_once_applied(admin, name, broker_time) == broker_time  # the broker applies it, then the send

    # A producer whose clock is ten years ahead stamps its record so; the broker's time replaces it.
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    ahead_ms = int((datetime.now(UTC) + timedelta(days=3650)).timestamp() * 1000)
    producer.produce(name, b"x", b"k", timestamp=ahead_ms)
    assert producer.flush(30) == 0
    [(offset, _key, _value, record_ms)] = list(read_partition(kafka_bootstrap, name, 0, 1))
    assert offset == 0 and record_ms is not None
    assert abs(record_ms - datetime.now(UTC).timestamp() * 1000) < 60_000  # the append time, not ahead_ms
    ensure_topics(settings, [LEDGER_COMMANDS])
    assert configs_once_applied(admin, LEDGER_COMMANDS.name, broker_time) == broker_time


def test_a_topic_missing_from_the_listing_but_already_made_still_gets_its_configs(
    kafka_bootstrap: str, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just after a create (or with another creator racing), the metadata may not list a topic yet; creating
    it then answers TOPIC_ALREADY_EXISTS, and its retention must still be set (seen once in CI)."""
    import streams.kafka.topic_admin as topic_admin

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"test.unlisted.{run_id}"
    admin.create_topics([NewTopic(name, 1, 1, config={"retention.ms": str(30 * DAY_MS)})])[name].result(timeout=30)

    class StaleListing(AdminClient):  # type: ignore[misc]
        def list_topics(self, *args: Any, **kwargs: Any) -> Any:
            metadata = super().list_topics(*args, **kwargs)
            metadata.topics.pop(name, None)
            return metadata

    monkeypatch.setattr(topic_admin, "AdminClient", StaleListing)
    fold_input = Topic(name, m.LedgerCommand, "command_id", "a fold's input", retention_ms=KEEP_FOREVER)
    assert ensure_topics(Settings(kafka_bootstrap_servers=kafka_bootstrap), [fold_input]) == []
    assert configs_once_applied(admin, name, KEPT_FOREVER) == KEPT_FOREVER
