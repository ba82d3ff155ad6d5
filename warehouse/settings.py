"""Reconciliation configuration from the environment (prefix NEXUS_RECON_), defaults that run locally."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.variance_rules import Tolerances

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO_ROOT / ".local" / "recon"


class ReconSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_RECON_", env_file=".env", extra="ignore")

    # Where everything lives; the other paths default to folders under it.
    home: Path = DEFAULT_HOME
    duckdb_path: Path | None = Field(default=None, description="warehouse file; default <home>/warehouse.duckdb")
    inbox_dir: Path | None = Field(default=None, description="JSONL topic exports; default <home>/inbox/<date>/")
    statements_dir: Path | None = Field(default=None, description="provider statements; <dir>/<date>/<provider>.*")
    archive_dir: Path | None = Field(default=None, description="sent reports; default <home>/archive")
    reports_dir: Path | None = Field(default=None, description="rendered PDFs; default <home>/reports")

    # Snapshot source: "jsonl" reads <inbox_dir>/<date>/<topic>.jsonl, "kafka" consumes the registry topics.
    snapshot_source: Literal["jsonl", "kafka"] = "jsonl"
    kafka_group_id: str = "nexus-recon-snapshot"
    kafka_poll_timeout_s: float = 1.0

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

    # DAG timeline (UTC hours after the recon day ends), spec §6.1.
    wait_for_schedule: bool = True

    def tolerances(self) -> Tolerances:
        return Tolerances(
            amount_minor=self.amount_tolerance_minor,
            fee_minor=self.fee_tolerance_minor,
            fx_rate_ppm=self.fx_tolerance_ppm,
            match_window=timedelta(minutes=self.match_window_minutes),
            cutoff_grace=timedelta(minutes=self.cutoff_grace_minutes),
        )

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
