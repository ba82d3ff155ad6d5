"""The settlement API's settings, from the environment (prefix ``NEXUS_API_``), with defaults that run locally.

Kafka's address, the data directory and the app id come from the platform settings (``NEXUS_KAFKA_BOOTSTRAP_SERVERS``,
``NEXUS_DATA_DIR``, ``NEXUS_APP_ID``). Secrets are never settings with a default: the token-signing key and the
client registry are files under ``$NEXUS_DATA_DIR/api/`` made on first run (owner-only), the Airflow password comes
from ``NEXUS_API_AIRFLOW_PASSWORD`` or the file ``NEXUS_API_AIRFLOW_PASSWORD_FILE`` names.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_API_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"  # loopback unless told otherwise (0.0.0.0 = all interfaces), as every server we start
    port: int = 19100
    # POST /bridge waits this long for the bridge's answer (200); then 202 with a Location to the status.
    bridge_wait_s: float = Field(default=2.0, ge=0, le=30)
    # Requests waiting for an answer at once; beyond, POST /bridge answers 202 at once (no waiter is kept).
    bridge_waiters_max: int = Field(default=10_000, ge=0)
    # A produce not acknowledged by the broker in this time is a 503 (the idempotency key is released).
    produce_timeout_s: float = Field(default=10.0, gt=0)
    # Idempotency keys (Stripe's semantics): a key is remembered this long after its first use.
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=60)
    # A key whose request is still being processed after this long (the API died mid-request) may be taken over.
    idempotency_lock_s: float = Field(default=30.0, gt=0)
    # Access tokens (JWT, HS256) live this long.
    token_ttl_s: int = Field(default=900, ge=10, le=86_400)
    # Per-client token bucket: this many requests a second on average, bursts up to `rate_burst`.
    rate_per_s: float = Field(default=50.0, gt=0)
    rate_burst: int = Field(default=100, ge=1)
    rate_buckets_max: int = Field(default=100_000, ge=1)  # clients tracked at once (the idlest are forgotten)
    # Request bodies above this are refused (413): a bridge request or a rule is well under 1 KiB.
    body_bytes_max: int = Field(default=64 * 1024, ge=1024)
    # The payouts.rules view GET /auto-payout reads (rule id -> the record's bytes): at most this many rules.
    rules_view_max: int = Field(default=200_000, ge=1)
    # /healthz: the status read model (streams/status, its file opened read-only) is fresh when its service looked
    # at the topics' ends at most this long ago (it does every NEXUS_STATUS_LAG_EVERY_S, idle or not) and was at
    # most this many records behind them then.
    status_heartbeat_max_s: float = Field(default=30.0, gt=0)
    status_lag_records_max: int = Field(default=10_000, ge=0)
    # Airflow 3's REST API (`airflow api-server`), for POST /reconcile: its base URL and a user of the simple
    # auth manager (role op or admin). Empty URL: the reconcile endpoints answer 503.
    airflow_url: str = ""
    airflow_username: str = "nexus-api"
    airflow_password: SecretStr | None = None
    airflow_password_file: Path | None = None
    airflow_timeout_s: float = Field(default=10.0, gt=0)
    airflow_dag_id: str = "daily_reconciliation"

    def data_dir(self, platform_data_dir: Path) -> Path:
        return platform_data_dir / "api"

    def airflow_secret(self) -> str | None:
        if self.airflow_password is not None:
            return self.airflow_password.get_secret_value()
        if self.airflow_password_file is not None:
            return self.airflow_password_file.read_text().strip()
        return None


def get_api_settings() -> ApiSettings:
    return ApiSettings()
