"""Reconciliation configuration from the environment (prefix NEXUS_RECON_), defaults that run locally."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.variance_rules import Tolerances

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / ".local" / "recon"


def recon_day_for(logical_date: datetime) -> date:
    """The DAG runs after the day it reconciles: logical date D+1 01:00 (or D+1 00:00) reconciles D."""
    return (logical_date.astimezone(UTC) - timedelta(days=1)).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The recon day in UTC: [00:00, next 00:00)."""
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


class ReconSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_RECON_", env_file=".env", extra="ignore")

    # Where everything lives; the other paths default to folders under it.
    home: Path = DEFAULT_HOME
    duckdb_path: Path | None = Field(default=None, description="warehouse file; default <home>/warehouse.duckdb")
    inbox_dir: Path | None = Field(default=None, description="JSONL topic exports; default <home>/inbox/<date>/")
    statements_dir: Path | None = Field(default=None, description="provider statements; <dir>/<date>/<provider>.*")
    archive_dir: Path | None = Field(default=None, description="sent reports; default <home>/archive")
    reports_dir: Path | None = Field(default=None, description="rendered PDFs; default <home>/reports")

    # Snapshot source: "kafka" reads the registry's topics (the platform's own records); "jsonl" reads exports
    # <inbox_dir>/<date>/<topic>.jsonl (seeded test and benchmark data).
    snapshot_source: Literal["kafka", "jsonl"] = "kafka"
    kafka_bootstrap_servers: str | None = Field(default=None, description="default: the platform's Kafka")
    kafka_group_id: str = "nexus-recon-snapshot"
    kafka_poll_timeout_s: float = 1.0
    # The Kafka window of recon day D, by record timestamp: [D 00:00 - lookback, D+1 00:00 + late). Which day an
    # event counts for is its own business time; the window only decides which records are read (see
    # warehouse/snapshot_loader.py for the rule on late records).
    snapshot_lookback_minutes: int = Field(
        default=5, ge=0, description="records stamped before the day that carry its events (clock skew, >= 1 min)"
    )
    snapshot_late_minutes: int = Field(
        default=30,
        ge=0,
        description="records of the day appended after midnight, and what became of holds open at the cut-off;"
        " the 01:00 snapshot reads up to what exists then",
    )

    # Provider reports: "api" asks each provider's report API for the day (PayPay, which has none: its statement
    # file), "files" reads every provider's statement file <statements_dir>/<date>/. Unset: the APIs when the
    # snapshot reads the platform's topics, the files with JSONL exports (seeded data comes with its statements).
    provider_source: Literal["api", "files"] | None = None

    # Tolerances (see domain/variance_rules.py).
    amount_tolerance_minor: int = Field(default=1, ge=0)
    fee_tolerance_minor: int = Field(default=1, ge=0)
    fx_tolerance_ppm: int = Field(default=50, ge=0)
    match_window_minutes: int = Field(default=15, gt=0)
    cutoff_grace_minutes: int = Field(default=30, ge=0)
    carry_forward_days: int = Field(default=7, ge=0, description="unmatched items re-tried for this many days")

    # Variance engine: both classify identically (the tests compare them row by row), so this is an operational choice.
    engine: Literal["polars", "duckdb"] = "polars"

    # Report e-mail.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    report_from: str = "recon@nexus-x.io"
    report_to: str = "settlement@nexus-x.io"
    trend_days: int = Field(default=14, ge=1)

    # Alerting: critical data-quality failures are posted here (streams.alerting.alertmanager.post_alerts).
    alertmanager_url: str | None = Field(default=None, description="default: streams settings alertmanager_url")
    alert_on_critical: bool = True

    # Review actions' audit records (audit.records) and ledger corrections' requests (governance.requests) wait in
    # the warehouse (outbox) until the broker acknowledges them: sent after each CLI action, by the nightly review
    # and by `exceptions publish`, which also read the corrections' outcome (governance.multisig). True: talk to
    # the platform's Kafka (kafka_bootstrap_servers, default the platform's); False: keep them queued. Unset: True
    # when the snapshot reads the platform's topics, False with seeded JSONL exports (no platform there).
    platform_kafka: bool | None = None
    publish_timeout_s: float = Field(default=10.0, gt=0, description="wait for the broker's acknowledgements")
    # A ledger break's LEDGER_CORRECTION request expires this long after it is asked for (the signers' window; at
    # least the 48 h timelock of the largest amounts, or governance refuses it on arrival).
    correction_expiry_hours: int = Field(default=7 * 24, ge=49, le=90 * 24)
    # Bound on reading governance.multisig (compacted: its latest state per request) to close corrections.
    multisig_read_timeout_s: float = Field(default=30.0, gt=0)

    # DAG timeline (UTC hours after the recon day ends), spec §6.1. False: each step runs at once, also for a day
    # that has not ended (today's: what the topics and the providers' reports hold so far; the tests, the demo).
    wait_for_schedule: bool = True

    def snapshot_window(self, day: date) -> tuple[datetime, datetime]:
        start, end = day_bounds(day)
        return start - timedelta(minutes=self.snapshot_lookback_minutes), end + timedelta(
            minutes=self.snapshot_late_minutes
        )

    @property
    def provider_report_source(self) -> Literal["api", "files"]:
        if self.provider_source is not None:
            return self.provider_source
        return "api" if self.snapshot_source == "kafka" else "files"

    def tolerances(self) -> Tolerances:
        return Tolerances(
            amount_minor=self.amount_tolerance_minor,
            fee_minor=self.fee_tolerance_minor,
            fx_rate_ppm=self.fx_tolerance_ppm,
            match_window=timedelta(minutes=self.match_window_minutes),
            cutoff_grace=timedelta(minutes=self.cutoff_grace_minutes),
        )

    @property
    def talks_to_platform(self) -> bool:
        if self.platform_kafka is not None:
            return self.platform_kafka
        return self.snapshot_source == "kafka"

    @property
    def bootstrap(self) -> str:
        from streams.settings import get_settings  # not at import: the DAG's sensors import this module in Airflow's

        return self.kafka_bootstrap_servers or get_settings().bootstrap_servers

    @property
    def correction_expiry(self) -> timedelta:
        return timedelta(hours=self.correction_expiry_hours)

    @property
    def warehouse_path(self) -> Path:
        return self.duckdb_path or self.home / "warehouse.duckdb"

    @property
    def inbox(self) -> Path:
        return self.inbox_dir or self.home / "inbox"

    @property
    def statements(self) -> Path:
        return self.statements_dir or self.home / "statements"

    @property
    def archive(self) -> Path:
        return self.archive_dir or self.home / "archive"

    @property
    def reports(self) -> Path:
        return self.reports_dir or self.home / "reports"


@lru_cache(maxsize=1)
def get_recon_settings() -> ReconSettings:
    return ReconSettings()
