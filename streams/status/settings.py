"""The status read model's settings, from the environment (prefix ``NEXUS_STATUS_``), with defaults that run
locally. Kafka's address, the consumer group's name and the data directory come from the platform settings
(``NEXUS_KAFKA_BOOTSTRAP_SERVERS``, ``NEXUS_APP_ID``, ``NEXUS_DATA_DIR``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.settings import Settings


class StatusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_STATUS_", env_file=".env", extra="ignore")

    # The SQLite file; empty: $NEXUS_DATA_DIR/status/status-<app id>.sqlite3 (the API reads the same path).
    db_path: Path | None = None
    # A batch of records is committed (rows and offsets in one transaction) when it holds this many records, or
    # when its first record has waited this long: the bound on how stale a status is while records arrive.
    batch_records_max: int = Field(default=2_000, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=100, ge=0, le=60_000)
    # How often the topics' end offsets are read for the lag (also a heartbeat when nothing arrives).
    lag_every_s: float = Field(default=5.0, gt=0)


def status_db_path(settings: Settings, status: StatusSettings | None = None) -> Path:
    """Where the read model's file is: the status service writes it, the API reads it."""
    status = status or StatusSettings()
    return status.db_path or settings.data_dir / "status" / f"status-{settings.app_id}.sqlite3"


def get_status_settings() -> StatusSettings:
    return StatusSettings()
