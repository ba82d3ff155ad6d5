"""The holder notifier's decisions (streams/notifications): masking, the retry policy, the channels' failure
classes and identities, and what one record becomes (sent once, skipped when done, dead-lettered after the last
attempt with its original bytes)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import smtplib
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from contracts.models import DeliveryStatus, HolderNotification, NotificationChannel, NotificationDelivery
from contracts.topics import NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_HOLDERS, PLATFORM_DEADLETTERS
from streams.kafka.ingress import Origin
from streams.notifications.channels import SmtpChannel, WebhookChannel, push_body, retry_after_s, sms_body
from streams.notifications.notifier import Notifier
from streams.notifications.policy import (
    DeliveryFailed,
    DoneIds,
    RetryPolicy,
    deliver,
    http_status_permanent,
    message_id,
    scrub,
)
from streams.security.envelope import LocalSealer, mask, seal_text

ORIGIN = Origin(NOTIFICATIONS_HOLDERS.name, 2, 41)


def note(channel: NotificationChannel = NotificationChannel.SMS, nid: str = "pay-1:PAYOUT_COMPLETED:SMS") -> Any:
    destination = {
        NotificationChannel.EMAIL: "sam@example.com",
        NotificationChannel.SMS: "+821012345678",
        NotificationChannel.PUSH: "push-token-abcdef123456",
    }[channel]
    return HolderNotification(
        notification_id=nid,
        account_id="acct-1",
        payout_id="pay-1",
        event="PAYOUT_COMPLETED",
        channel=channel,
        destination=destination,
        subject="Payout sent",
        text="Your payout of 12.50 USD is on its way.",
        created_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    )


def wire(message: Any) -> tuple[bytes, bytes]:
    return NOTIFICATIONS_HOLDERS.key_of(message), NOTIFICATIONS_HOLDERS.encode(message)


class FakeChannel:
    """Fails with the given failures first, then succeeds; records every attempt."""

    def __init__(self, failures: list[DeliveryFailed] | None = None, delay_s: float = 0.0) -> None:
        self.failures = list(failures or [])
        self.attempts: list[str] = []
        self.delay_s = delay_s

    async def send(self, notification: HolderNotification) -> None:
        self.attempts.append(notification.notification_id)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.failures:
            raise self.failures.pop(0)


class Sleeps:
    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


def notifier(channel: FakeChannel, attempts: int = 5) -> tuple[Notifier, Sleeps]:
    sleeps = Sleeps()
    channels = dict.fromkeys(NotificationChannel, channel)
    return Notifier(channels, RetryPolicy(attempts, 1.0, 10.0), DoneIds(100), sleeps), sleeps


# ----------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    ("destination", "masked"),
    [
        ("sam@example.com", "s***@example.com"),
        ("a.very.long.name@mail.example.org", "a***@mail.example.org"),
        ("+821012345678", "+82******5678"),
        ("+14155550123", "+14*****0123"),
        ("+1234567", "+*******"),  # too short to show any digit
        ("push-token-abcdef123456", "push***"),
        ("short", "***"),
    ],
)
def test_mask_shows_no_whole_destination(destination: str, masked: str) -> None:
    assert mask(destination) == masked
    assert destination not in mask(destination)


def test_scrub_masks_a_destination_quoted_by_an_error() -> None:
    text = scrub("550 5.1.1 <Sam@Example.com>: Recipient address rejected", "sam@example.com")
    assert "Sam@Example.com" not in text and "s***@example.com" in text
    assert len(scrub("x" * 5000, "+821012345678")) == 1000


# ----------------------------------------------------------------------------- retry policy


def test_backoff_doubles_up_to_the_cap_and_honours_a_shorter_retry_after() -> None:
    policy = RetryPolicy(attempts=6, backoff_initial_s=1.0, backoff_max_s=10.0)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.backoff_s(1, retry_after_s=3.0) == 3.0
    assert policy.backoff_s(1, retry_after_s=120.0) == 10.0  # capped: the retries stay bounded


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
def test_a_4xx_is_permanent(status: int) -> None:
    assert http_status_permanent(status)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 302])
def test_timeouts_rate_limits_and_5xx_are_transient(status: int) -> None:
    assert not http_status_permanent(status)


def test_transient_failures_are_retried_until_success() -> None:
    channel = FakeChannel([DeliveryFailed("503"), DeliveryFailed("503"), DeliveryFailed("timeout")])
    sleeps = Sleeps()
    outcome = asyncio.run(deliver(lambda: channel.send(note()), RetryPolicy(5, 1.0, 10.0), sleeps))
    assert (outcome.delivered, outcome.attempts, outcome.reason) == (True, 4, None)
    assert sleeps.waited == [1.0, 2.0, 4.0]


def test_a_permanent_failure_is_not_retried() -> None:
    channel = FakeChannel([DeliveryFailed("gateway answered 400: unknown number", permanent=True)])
    sleeps = Sleeps()
    outcome = asyncio.run(deliver(lambda: channel.send(note()), RetryPolicy(5, 1.0, 10.0), sleeps))
    assert (outcome.delivered, outcome.attempts) == (False, 1)
    assert outcome.reason is not None and "permanent" in outcome.reason and "unknown number" in outcome.reason
    assert sleeps.waited == [] and len(channel.attempts) == 1


def test_attempts_are_bounded_and_the_last_error_is_the_reason() -> None:
    channel = FakeChannel([DeliveryFailed(f"503 #{n}") for n in range(1, 10)])
    sleeps = Sleeps()
    outcome = asyncio.run(deliver(lambda: channel.send(note()), RetryPolicy(3, 0.5, 1.0), sleeps))
    assert (outcome.delivered, outcome.attempts, len(channel.attempts)) == (False, 3, 3)
    assert outcome.reason is not None and outcome.reason.endswith("503 #3")
    assert sleeps.waited == [0.5, 1.0]  # no wait after the last attempt


def test_a_bug_is_not_a_failed_delivery() -> None:
    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        asyncio.run(deliver(broken, RetryPolicy(5, 0, 0), Sleeps()))


# ----------------------------------------------------------------------------- channels


def gateway(handler: Any) -> tuple[WebhookChannel, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)  # type: ignore[no-any-return]

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return WebhookChannel("SMS", "http://gateway.test/sms", client, sms_body), seen


def test_a_gateway_call_carries_the_idempotency_key_and_the_message() -> None:
    channel, seen = gateway(lambda _r: httpx.Response(202))
    asyncio.run(channel.send(note()))
    assert seen[0].headers["Idempotency-Key"] == "pay-1:PAYOUT_COMPLETED:SMS"
    assert seen[0].read() == b'{"to":"+821012345678","text":"Your payout of 12.50 USD is on its way."}'
    assert push_body(note(NotificationChannel.PUSH)) == {
        "token": "push-token-abcdef123456",
        "title": "Payout sent",
        "body": "Your payout of 12.50 USD is on its way.",
    }


def test_gateway_answers_are_classified_and_scrubbed() -> None:
    rejected, _ = gateway(lambda _r: httpx.Response(400, text="invalid number +821012345678"))
    with pytest.raises(DeliveryFailed) as failed:
        asyncio.run(rejected.send(note()))
    assert (
        failed.value.permanent and "+821012345678" not in failed.value.reason and "+82******5678" in failed.value.reason
    )
    limited, _ = gateway(lambda _r: httpx.Response(429, headers={"Retry-After": "2"}))
    with pytest.raises(DeliveryFailed) as failed:
        asyncio.run(limited.send(note()))
    assert not failed.value.permanent and failed.value.retry_after_s == 2.0

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    unreachable, _ = gateway(down)
    with pytest.raises(DeliveryFailed) as failed:
        asyncio.run(unreachable.send(note()))
    assert not failed.value.permanent
    assert retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT") is None


def smtp_channel() -> SmtpChannel:
    return SmtpChannel("127.0.0.1", 1, "payouts@nexus-x.io", 1.0)


def test_an_email_has_a_message_id_derived_from_the_notification() -> None:
    mail = smtp_channel().compose(note(NotificationChannel.EMAIL, "pay-1:PAYOUT_COMPLETED:EMAIL"))
    again = smtp_channel().compose(note(NotificationChannel.EMAIL, "pay-1:PAYOUT_COMPLETED:EMAIL"))
    other = smtp_channel().compose(note(NotificationChannel.EMAIL, "pay-2:PAYOUT_COMPLETED:EMAIL"))
    assert mail["Message-ID"] == again["Message-ID"] != other["Message-ID"]
    assert mail["Message-ID"] == message_id("pay-1:PAYOUT_COMPLETED:EMAIL", "nexus-x.io")
    assert mail["Message-ID"].endswith("@nexus-x.io>") and ":" not in mail["Message-ID"]
    assert (mail["From"], mail["To"], mail["Subject"]) == ("payouts@nexus-x.io", "sam@example.com", "Payout sent")


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (smtplib.SMTPRecipientsRefused({"sam@example.com": (550, b"no such user")}), True),
        (smtplib.SMTPRecipientsRefused({"sam@example.com": (450, b"mailbox busy")}), False),
        (smtplib.SMTPDataError(554, b"rejected"), True),
        (smtplib.SMTPDataError(451, b"try later"), False),
        (smtplib.SMTPServerDisconnected("gone"), False),
        (ConnectionRefusedError(111, "refused"), False),
    ],
)
def test_smtp_failures_are_classified(error: Exception, permanent: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    channel = smtp_channel()

    def fail(_message: Any) -> None:
        raise error

    monkeypatch.setattr(channel, "_send_blocking", fail)
    with pytest.raises(DeliveryFailed) as failed:
        asyncio.run(channel.send(note(NotificationChannel.EMAIL)))
    assert failed.value.permanent is permanent
    assert "sam@example.com" not in failed.value.reason


# ----------------------------------------------------------------------------- one record


def test_a_notification_is_delivered_and_recorded() -> None:
    channel = FakeChannel([DeliveryFailed("503"), DeliveryFailed("503"), DeliveryFailed("503")])
    service, sleeps = notifier(channel)
    outputs = asyncio.run(service.handle(*wire(note()), ORIGIN))
    assert [topic for topic, _ in outputs] == [NOTIFICATIONS_DELIVERIES]
    record: NotificationDelivery = outputs[0][1]
    assert (record.status, record.attempts, record.channel) == (DeliveryStatus.DELIVERED, 4, NotificationChannel.SMS)
    assert record.notification_id in service.done and len(sleeps.waited) == 3


def test_an_id_already_delivered_is_skipped() -> None:
    channel = FakeChannel()
    service, _ = notifier(channel)
    service.done.add("pay-1:PAYOUT_COMPLETED:SMS")
    assert asyncio.run(service.handle(*wire(note()), ORIGIN)) == []
    assert channel.attempts == [] and service.skipped == 1


def test_a_repeated_record_is_sent_once() -> None:
    channel = FakeChannel(delay_s=0.01)
    service, _ = notifier(channel)

    async def twice() -> tuple[Any, Any]:
        key, value = wire(note())
        return await asyncio.gather(service.handle(key, value, ORIGIN), service.handle(key, value, ORIGIN))

    first, second = asyncio.run(twice())
    assert len(channel.attempts) == 1
    assert sorted([len(first), len(second)]) == [0, 1]


def test_after_the_last_attempt_the_notification_is_dead_lettered_with_its_bytes() -> None:
    channel = FakeChannel([DeliveryFailed(f"gateway answered 503 #{n}") for n in range(5)])
    service, _ = notifier(channel, attempts=3)
    key, value = wire(note())
    outputs = asyncio.run(service.handle(key, value, ORIGIN))
    assert [topic for topic, _ in outputs] == [PLATFORM_DEADLETTERS, NOTIFICATIONS_DELIVERIES]
    letter, record = outputs[0][1], outputs[1][1]
    assert letter.reason_code == "NOTIFICATION_UNDELIVERED"
    assert base64.b64decode(letter.value_b64) == value and base64.b64decode(letter.key_b64) == key
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (ORIGIN.topic, 2, 41)
    assert "503 #2" in letter.reason
    assert (record.status, record.attempts) == (DeliveryStatus.UNDELIVERED, 3)
    assert record.reason is not None and "503 #2" in record.reason
    assert asyncio.run(service.handle(key, value, ORIGIN)) == []  # given up is done too: not retried on replay


def test_a_bad_record_is_dead_lettered_and_nothing_is_sent() -> None:
    channel = FakeChannel()
    service, _ = notifier(channel)
    outputs = asyncio.run(service.handle(b"acct-1", b'{"notificationId": "x"}', ORIGIN))
    assert [topic for topic, _ in outputs] == [PLATFORM_DEADLETTERS]
    assert outputs[0][1].reason_code == "MISSING_FIELD"
    assert channel.attempts == []


def test_done_ids_are_bounded() -> None:
    done = DoneIds(3)
    for n in range(5):
        done.add(f"id-{n}")
    assert len(done) == 3 and "id-0" not in done and "id-4" in done and done.forgotten == 2


# ----------------------------------------------------------------------------- sealed destinations


class SeenChannel(FakeChannel):
    def __init__(self) -> None:
        super().__init__()
        self.destinations: list[str] = []

    async def send(self, notification: HolderNotification) -> None:
        self.destinations.append(notification.destination)
        await super().send(notification)


def test_a_sealed_destination_is_opened_just_before_sending_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sealer = LocalSealer(os.urandom(32))
    sealed = note().model_copy(
        update={"destination": mask("+821012345678"), "destination_sealed": seal_text(sealer, "+821012345678")}
    )
    channel = SeenChannel()
    sleeps = Sleeps()
    sender = Notifier(dict.fromkeys(NotificationChannel, channel), RetryPolicy(3, 0, 0), DoneIds(10), sleeps, sealer)
    with caplog.at_level(logging.DEBUG):
        out = asyncio.run(sender.handle(*wire(sealed), ORIGIN))
    assert channel.destinations == ["+821012345678"]
    assert [topic for topic, _ in out] == [NOTIFICATIONS_DELIVERIES]
    assert "+821012345678" not in caplog.text and "+82******5678" in caplog.text


def test_a_sealed_destination_that_does_not_open_is_dead_lettered_unsent() -> None:
    sealed = note().model_copy(
        update={"destination": "+82******5678", "destination_sealed": seal_text(LocalSealer(os.urandom(32)), "+8210")}
    )
    channel = SeenChannel()
    other_key = LocalSealer(os.urandom(32))
    sender = Notifier(
        dict.fromkeys(NotificationChannel, channel), RetryPolicy(3, 0, 0), DoneIds(10), Sleeps(), other_key
    )
    out = asyncio.run(sender.handle(*wire(sealed), ORIGIN))
    assert channel.destinations == []
    assert [topic for topic, _ in out] == [PLATFORM_DEADLETTERS]
    assert out[0][1].reason_code == "INVALID_VALUE" and "authentication failed" in out[0][1].reason
