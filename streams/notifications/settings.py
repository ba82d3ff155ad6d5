"""The notifier's settings, from the environment (prefix ``NEXUS_NOTIFY_``), with defaults that reach the local sink
(``python -m devtools.alert_sink``: SMTP on 19097, the SMS and push gateways on 19096). Kafka's address and the
consumer group's name come from the platform settings (``NEXUS_KAFKA_BOOTSTRAP_SERVERS``, ``NEXUS_APP_ID``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_NOTIFY_", env_file=".env", extra="ignore")

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=19097, ge=1, le=65535)
    smtp_starttls: bool = False  # a real relay: true (and a username / password)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    from_address: str = Field(default="payouts@nexus-x.io", pattern=r"^[^@\s]+@[^@\s]+$")

    # Webhook gateways (Twilio / Vonage / FCM proxies): POST JSON with an Idempotency-Key header.
    sms_gateway_url: str = "http://127.0.0.1:19096/sms-gateway"
    push_gateway_url: str = "http://127.0.0.1:19096/push"
    gateway_timeout_s: float = Field(default=10.0, gt=0)

    # Retries: `attempts` sends at most, waiting backoff_initial_ms, then twice as long each time, at most
    # backoff_max_ms (a gateway's Retry-After, if shorter than that cap, is honoured instead).
    attempts: int = Field(default=5, ge=1, le=100)
    backoff_initial_ms: int = Field(default=1000, ge=0)
    backoff_max_ms: int = Field(default=10_000, ge=0)

    # Notifications being delivered at once (one slow or failing holder holds one slot, never the stream).
    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    # Notification ids remembered as done (rebuilt from notifications.deliveries at start); the oldest are
    # forgotten beyond this many.
    remembered_ids_max: int = Field(default=200_000, ge=1)
    # On SIGTERM, deliveries under way get this long to finish before their records are left to the next start.
    stop_grace_s: float = Field(default=10.0, ge=0)


@lru_cache(maxsize=1)
def get_notify_settings() -> NotifySettings:
    return NotifySettings()
