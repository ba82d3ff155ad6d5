"""Issue 17 item 5 end to end: the notifier (python -m streams.notifications, a real process) on the session broker
delivers holder notifications to the local sink (SMTP, the SMS and push gateways, in this process), once each, also
after a restart over the same records; a gateway failing then recovering, and failing beyond the attempts.

Each test's gateway URLs carry its run id as a query, so the sink's failure switch and counts are the test's own
(a notifier with a new consumer group reads every earlier record of the session's topic; they are done, and skipped).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.models import DeliveryStatus, HolderNotification, NotificationChannel, NotificationDelivery
from contracts.topics import NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_HOLDERS, PLATFORM_DEADLETTERS
from devtools.alert_sink import Record, Sink
from streams.notifications.policy import message_id
from tests.support.kafka_io import KafkaIO

pytestmark = pytest.mark.slow

TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    with Sink(tmp_path_factory.mktemp("sink") / "sink.jsonl", smtp_port=0) as running:
        yield running


def notification(run_id: str, channel: NotificationChannel, payout: str, account: str | None = None) -> Any:
    destination = {
        NotificationChannel.EMAIL: f"holder-{run_id}@example.com",
        NotificationChannel.SMS: f"+8210{int(run_id, 16) % 10**8:08d}",
        NotificationChannel.PUSH: f"push-{run_id}",
    }[channel]
    return HolderNotification(
        notification_id=f"{payout}:PAYOUT_COMPLETED:{channel}",
        account_id=account or f"acct-{run_id}",
        payout_id=payout,
        event="PAYOUT_COMPLETED",
        channel=channel,
        destination=destination,
        subject="Your payout is on its way",
        text=f"Payout {payout}: 12.50 USD sent to your account.",
        created_at=datetime.now(UTC),
    )


def start_notifier(worker_factory: Any, sink: Sink, run_id: str, app_id: str, **env: str) -> Any:
    assert sink.smtp_port is not None
    return worker_factory(
        app_id=app_id,
        module="streams.notifications",
        notify_smtp_host="127.0.0.1",
        notify_smtp_port=str(sink.smtp_port),
        notify_sms_gateway_url=f"{sink.url}/sms-gateway?run={run_id}",
        notify_push_gateway_url=f"{sink.url}/push?run={run_id}",
        notify_backoff_initial_ms="50",
        notify_backoff_max_ms="200",
        **env,
    )


def deliveries(kafka: KafkaIO, ids: set[str], count: int | None = None) -> list[NotificationDelivery]:
    """Wait until every id has a delivery record (and `count` records in all, if given); return them."""

    def ours(records: list[Any]) -> list[NotificationDelivery]:
        found = (NOTIFICATIONS_DELIVERIES.decode(r.value) for r in records if r.key and r.key.decode() in ids)
        return list(found)

    def ready(records: list[Any]) -> bool:
        mine = ours(records)
        return {d.notification_id for d in mine} == ids and (count is None or len(mine) >= count)

    return ours(kafka.wait_for(NOTIFICATIONS_DELIVERIES, ready, timeout_s=TIMEOUT_S))


def received(sink: Sink, run_id: str) -> dict[str, list[Record]]:
    """What reached the sink for this test, by channel."""
    by_channel: dict[str, list[Record]] = {"email": [], "holder-sms": [], "push": [], "refused": []}
    for record in sink.records():
        if record["channel"] == "email" and any(run_id in to for to in record["to"]):
            by_channel["email"].append(record)
        elif record["channel"] in ("holder-sms", "push", "refused") and f"run={run_id}" in record["path"]:
            by_channel[record["channel"]].append(record)
    return by_channel


def test_each_channel_delivers_once_also_after_a_restart(
    kafka: KafkaIO, worker_factory: Any, sink: Sink, run_id: str
) -> None:
    notes = {c: notification(run_id, c, f"pay-{run_id}") for c in NotificationChannel}
    for note in notes.values():
        kafka.produce_acked(
            NOTIFICATIONS_HOLDERS, NOTIFICATIONS_HOLDERS.key_of(note), NOTIFICATIONS_HOLDERS.encode(note)
        )
    sms = notes[NotificationChannel.SMS]  # the payout service re-sent one (at least once): still one SMS
    kafka.produce_acked(NOTIFICATIONS_HOLDERS, NOTIFICATIONS_HOLDERS.key_of(sms), NOTIFICATIONS_HOLDERS.encode(sms))
    ids = {n.notification_id for n in notes.values()}

    first = start_notifier(worker_factory, sink, run_id, f"notify-{run_id}-a")
    records = deliveries(kafka, ids)
    assert {(d.notification_id, d.status, d.attempts) for d in records} == {
        (i, DeliveryStatus.DELIVERED, 1) for i in ids
    }
    sink.wait_for(lambda _all: all(len(v) == 1 for k, v in received(sink, run_id).items() if k != "refused"), 30)
    assert received(sink, run_id)["refused"] == []
    mail = received(sink, run_id)["email"][0]
    email_id = notes[NotificationChannel.EMAIL].notification_id
    assert mail["to"] == [f"holder-{run_id}@example.com"] and mail["message_id"] == message_id(email_id, "nexus-x.io")
    assert mail["subject"] == "Your payout is on its way" and f"pay-{run_id}" in mail["text"]
    (text,) = received(sink, run_id)["holder-sms"]
    assert text["idempotency_key"] == sms.notification_id
    assert text["body"] == {"to": sms.destination, "text": sms.text}
    (push,) = received(sink, run_id)["push"]
    assert push["idempotency_key"] == notes[NotificationChannel.PUSH].notification_id
    assert push["body"]["token"] == f"push-{run_id}"
    log = first.log_text()
    assert sms.destination not in log and f"holder-{run_id}@example.com" not in log, "destinations are masked"
    first.stop()

    # A notifier of a new consumer group reads every record again: only notifications.deliveries says they are done.
    start_notifier(worker_factory, sink, run_id, f"notify-{run_id}-b")
    sentinel = notification(run_id, NotificationChannel.PUSH, f"pay-{run_id}-after")  # same account: same partition
    kafka.produce_acked(
        NOTIFICATIONS_HOLDERS, NOTIFICATIONS_HOLDERS.key_of(sentinel), NOTIFICATIONS_HOLDERS.encode(sentinel)
    )
    deliveries(kafka, {sentinel.notification_id})  # delivered after the account's earlier records were decided
    after = received(sink, run_id)
    assert (len(after["email"]), len(after["holder-sms"]), len(after["push"])) == (1, 1, 2)
    assert len(deliveries(kafka, ids)) == len(ids), "nothing recorded twice"


def test_a_gateway_failing_three_times_then_succeeding(
    kafka: KafkaIO, worker_factory: Any, sink: Sink, run_id: str
) -> None:
    sink.fail(f"/sms-gateway?run={run_id}", 3, 503)
    note = notification(run_id, NotificationChannel.SMS, f"pay-{run_id}")
    kafka.produce_acked(NOTIFICATIONS_HOLDERS, NOTIFICATIONS_HOLDERS.key_of(note), NOTIFICATIONS_HOLDERS.encode(note))
    start_notifier(worker_factory, sink, run_id, f"notify-{run_id}")
    (record,) = deliveries(kafka, {note.notification_id})
    assert (record.status, record.attempts) == (DeliveryStatus.DELIVERED, 4)
    got = received(sink, run_id)
    assert [r["status"] for r in got["refused"]] == [503, 503, 503]
    assert {r["idempotency_key"] for r in got["refused"] + got["holder-sms"]} == {note.notification_id}
    assert len(got["holder-sms"]) == 1


def test_failing_beyond_the_attempts_is_undelivered_and_dead_lettered_with_the_bytes(
    kafka: KafkaIO, worker_factory: Any, sink: Sink, run_id: str
) -> None:
    sink.fail(f"/push?run={run_id}", 100, 503)  # transient, for ever: every attempt is spent
    sink.fail(f"/sms-gateway?run={run_id}", 1, 400)  # permanent: not retried
    push = notification(run_id, NotificationChannel.PUSH, f"pay-{run_id}")
    sms = notification(run_id, NotificationChannel.SMS, f"pay-{run_id}")
    origins: dict[tuple[int, int], bytes] = {}
    for note in (push, sms):
        value = NOTIFICATIONS_HOLDERS.encode(note)
        origins[kafka.produce_acked(NOTIFICATIONS_HOLDERS, NOTIFICATIONS_HOLDERS.key_of(note), value)] = value
    start_notifier(worker_factory, sink, run_id, f"notify-{run_id}", notify_attempts="3")
    records = {d.notification_id: d for d in deliveries(kafka, {push.notification_id, sms.notification_id})}
    assert (records[push.notification_id].status, records[push.notification_id].attempts) == (
        DeliveryStatus.UNDELIVERED,
        3,
    )
    assert (records[sms.notification_id].status, records[sms.notification_id].attempts) == (
        DeliveryStatus.UNDELIVERED,
        1,
    )
    assert "503" in (records[push.notification_id].reason or "") and "400" in (
        records[sms.notification_id].reason or ""
    )

    def letters(rs: list[Any]) -> list[Any]:
        found = (PLATFORM_DEADLETTERS.decode(r.value) for r in rs)
        return [
            d
            for d in found
            if d.source_topic == NOTIFICATIONS_HOLDERS.name and (d.source_partition, d.source_offset) in origins
        ]

    found = letters(kafka.wait_for(PLATFORM_DEADLETTERS, lambda rs: len(letters(rs)) >= 2, timeout_s=TIMEOUT_S))
    assert len(found) == 2
    for letter in found:
        assert letter.reason_code == "NOTIFICATION_UNDELIVERED"
        original = origins[(letter.source_partition, letter.source_offset)]
        assert base64.b64decode(letter.value_b64 or "") == original, "the notification's original bytes"
        assert letter.reason.startswith(f"{NOTIFICATIONS_HOLDERS.name}: ")
        assert sms.destination not in letter.reason
    got = received(sink, run_id)
    assert sorted(r["status"] for r in got["refused"]) == [400, 503, 503, 503]
    assert got["holder-sms"] == [] and got["push"] == []
