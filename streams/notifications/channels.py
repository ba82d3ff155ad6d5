"""The notifier's channels: e-mail over SMTP, SMS and push through webhook gateways.

Each ``send`` makes one attempt and raises ``DeliveryFailed`` (permanent or not) when it fails; retrying is the
policy's business (``streams.notifications.policy.deliver``). Every attempt of one notification carries the same
identity: the e-mail's Message-ID, the gateways' ``Idempotency-Key`` header.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

import httpx

from contracts.models import HolderNotification, NotificationChannel
from streams.notifications.policy import DeliveryFailed, message_id, scrub, smtp_code_permanent
from streams.notifications.policy import http_status_permanent as permanent_status
from streams.notifications.settings import NotifySettings


class Channel(Protocol):
    async def send(self, notification: HolderNotification) -> None: ...


class SmtpChannel:
    """One SMTP session per message (stdlib smtplib, in a thread): notifications are few, and a fresh session
    never inherits a half-broken connection."""

    def __init__(
        self,
        host: str,
        port: int,
        from_address: str,
        timeout_s: float,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.from_address, self.timeout_s = host, port, from_address, timeout_s
        self.starttls, self.username, self.password = starttls, username, password

    def compose(self, notification: HolderNotification) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = notification.destination
        message["Subject"] = notification.subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = message_id(notification.notification_id, self.from_address.rpartition("@")[2])
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office robots do not answer it
        message.set_content(notification.text)
        return message

    async def send(self, notification: HolderNotification) -> None:
        message = self.compose(notification)
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except smtplib.SMTPRecipientsRefused as refused:
            codes = [code for code, _text in refused.recipients.values()]
            raise DeliveryFailed(
                scrub(f"SMTP recipient refused: {refused.recipients}", notification.destination),
                permanent=all(smtp_code_permanent(c) for c in codes),
            ) from None
        except smtplib.SMTPResponseException as answer:  # sender refused, data error, authentication ...
            text = answer.smtp_error.decode(errors="replace") if isinstance(answer.smtp_error, bytes) else ""
            raise DeliveryFailed(
                scrub(f"SMTP {answer.smtp_code} {text}", notification.destination),
                permanent=smtp_code_permanent(answer.smtp_code),
            ) from None
        except (smtplib.SMTPException, OSError) as error:  # disconnected, refused connection, timeout
            raise DeliveryFailed(scrub(f"SMTP {type(error).__name__}: {error}", notification.destination)) from None

    def _send_blocking(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


class WebhookChannel:
    """An HTTP gateway: POST of a JSON body built by `body_of`, 2xx = accepted for delivery."""

    def __init__(self, name: str, url: str, client: httpx.AsyncClient, body_of: Any) -> None:
        self.name, self.url, self.client, self.body_of = name, url, client, body_of

    async def send(self, notification: HolderNotification) -> None:
        headers = {"Idempotency-Key": notification.notification_id}
        try:
            answer = await self.client.post(self.url, json=self.body_of(notification), headers=headers)
        except httpx.HTTPError as error:  # connect error, timeout, broken connection
            reason = f"{self.name} gateway: {type(error).__name__}: {error}"
            raise DeliveryFailed(scrub(reason, notification.destination)) from None
        if 200 <= answer.status_code < 300:
            return
        reason = f"{self.name} gateway answered {answer.status_code}: {answer.text[:200]}"
        raise DeliveryFailed(
            scrub(reason, notification.destination),
            permanent=permanent_status(answer.status_code),
            retry_after_s=retry_after_s(answer.headers.get("Retry-After")),
        )


def retry_after_s(header: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored: the back-off applies then)."""
    if header is None:
        return None
    try:
        return max(0.0, float(header.strip()))
    except ValueError:
        return None


def sms_body(notification: HolderNotification) -> dict[str, str]:
    return {"to": notification.destination, "text": notification.text}


def push_body(notification: HolderNotification) -> dict[str, str]:
    return {"token": notification.destination, "title": notification.subject, "body": notification.text}


def build_channels(settings: NotifySettings, client: httpx.AsyncClient) -> Mapping[NotificationChannel, Channel]:
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return {
        NotificationChannel.EMAIL: SmtpChannel(
            settings.smtp_host,
            settings.smtp_port,
            settings.from_address,
            settings.smtp_timeout_s,
            settings.smtp_starttls,
            settings.smtp_username,
            password,
        ),
        NotificationChannel.SMS: WebhookChannel("SMS", settings.sms_gateway_url, client, sms_body),
        NotificationChannel.PUSH: WebhookChannel("push", settings.push_gateway_url, client, push_body),
    }
