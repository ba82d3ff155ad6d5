"""ensure_topics on a real broker: a topic some state is a fold over keeps every record, even one made before."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from contracts import models as m
from contracts.topics import DAY_MS, KEEP_FOREVER, LEDGER_COMMANDS, Topic
from streams.settings import Settings
from streams.topic_admin import ensure_topics


def retention_of(admin: AdminClient, name: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {k: entries[k].value for k in ("retention.ms", "retention.bytes")}


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
    assert retention_of(admin, name) == {"retention.ms": "-1", "retention.bytes": "-1"}

    ensure_topics(settings, [LEDGER_COMMANDS])
    assert retention_of(admin, LEDGER_COMMANDS.name) == {"retention.ms": "-1", "retention.bytes": "-1"}
    other = f"test.plain.{run_id}"
    ensure_topics(settings, [Topic(other, m.LedgerCommand, "command_id", "an ordinary topic", retention_ms=DAY_MS)])
    assert retention_of(admin, other)["retention.ms"] == str(DAY_MS)  # ordinary topics keep their bounds
