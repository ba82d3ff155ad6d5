"""What the notifier does with one ``notifications.holders`` record, free of Kafka: validate it, skip it if its id
is done, else deliver it over its channel with retries, and say which records that produces.

Outputs, in the order they must be acknowledged: a dead letter (bad input, or every attempt failed:
``NOTIFICATION_UNDELIVERED`` with the notification's original bytes), then the ``notifications.deliveries``
record, the notifier's memory of what it sent. The driver (``streams.notifications.loop``) commits the input
offset only once all of them are acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from contracts.models import DeliveryStatus, HolderNotification, NotificationChannel, NotificationDelivery
from contracts.topics import NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_HOLDERS, Topic
from streams.kafka import ingress
from streams.notifications.channels import Channel
from streams.notifications.policy import DoneIds, Outcome, RetryPolicy, clip, deliver
from streams.security.envelope import Sealer, SealError, mask, open_text

log = logging.getLogger("nexus.notifier")

UNDELIVERED_CODE = "NOTIFICATION_UNDELIVERED"
# A sealed destination that does not open (altered, or its key is not usable here); the reason says which.
UNSEALABLE_CODE = "INVALID_VALUE"
Outputs = list[tuple[Topic, Any]]


class Notifier:
    def __init__(
        self,
        channels: Mapping[NotificationChannel, Channel],
        policy: RetryPolicy,
        done: DoneIds,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sealer: Sealer | None = None,
    ) -> None:
        self.channels, self.policy, self.done, self.sleep = channels, policy, done, sleep
        self.sealer = sealer  # opens destination_sealed (streams.security.envelope); None: sealing is off here
        # Deliveries under way, by notification id: a repeat of the record waits for the first, then skips.
        self._under_way: dict[str, asyncio.Future[None]] = {}
        self.sent = self.skipped = self.undelivered = 0

    async def handle(self, key: bytes | None, value: bytes | None, origin: ingress.Origin) -> Outputs:
        message = ingress.validate(NOTIFICATIONS_HOLDERS, key, value)
        if isinstance(message, ingress.Rejected):
            log.warning("dead-lettered %s:%d@%d: %s", origin.topic, origin.partition, origin.offset, message.code)
            return ingress.dead_letter_outputs(origin, key, value, message)
        try:
            notification = self._opened(message)
        except SealError as bad:  # altered, or sealed by a key this process cannot use: no retry helps
            reason = f"{NOTIFICATIONS_HOLDERS.name}: {message.notification_id}: {clip(str(bad))}"
            log.warning("dead-lettered %s:%d@%d: %s", origin.topic, origin.partition, origin.offset, reason)
            return ingress.dead_letter_outputs(origin, key, value, ingress.Rejected(UNSEALABLE_CODE, reason, []))
        nid = notification.notification_id
        while (first := self._under_way.get(nid)) is not None:
            await asyncio.shield(first)
        if nid in self.done:
            self.skipped += 1
            return []
        under_way = asyncio.get_running_loop().create_future()
        self._under_way[nid] = under_way
        try:
            channel = self.channels[notification.channel]
            outcome = await deliver(lambda: channel.send(notification), self.policy, self.sleep)
            self.done.add(nid)  # the driver exits if its record is not acknowledged: the restart re-reads the topic
        finally:
            del self._under_way[nid]
            under_way.set_result(None)
        return self._outputs(notification, outcome, origin, key, value)

    def _opened(self, notification: HolderNotification) -> HolderNotification:
        """The notification with its real destination, opened just before sending; in memory only (never logged:
        logs and reasons show ``mask`` of it, and the channels scrub it from error texts)."""
        if notification.destination_sealed is None:
            return notification
        destination = open_text(self.sealer, notification.destination_sealed)
        return notification.model_copy(update={"destination": destination, "destination_sealed": None})

    def _outputs(
        self,
        notification: HolderNotification,
        outcome: Outcome,
        origin: ingress.Origin,
        key: bytes | None,
        value: bytes | None,
    ) -> Outputs:
        where = f"{notification.channel} {notification.notification_id} to {mask(notification.destination)}"
        record = NotificationDelivery(
            notification_id=notification.notification_id,
            channel=notification.channel,
            status=DeliveryStatus.DELIVERED if outcome.delivered else DeliveryStatus.UNDELIVERED,
            attempts=outcome.attempts,
            reason=outcome.reason,
            delivered_at=datetime.now(UTC),
        )
        if outcome.delivered:
            self.sent += 1
            log.info("delivered %s (attempt %d)", where, outcome.attempts)
            return [(NOTIFICATIONS_DELIVERIES, record)]
        self.undelivered += 1
        log.warning("undelivered %s after %d attempts: %s", where, outcome.attempts, outcome.reason)
        reason = f"{NOTIFICATIONS_HOLDERS.name}: {outcome.reason}"
        letter = ingress.dead_letter_outputs(origin, key, value, ingress.Rejected(UNDELIVERED_CODE, reason, []))
        return [*letter, (NOTIFICATIONS_DELIVERIES, record)]
