"""The auto-payout service's settings, from the environment (prefix ``NEXUS_PAYOUTS_``), with defaults that run
locally. Kafka's address, the consumer group's name and the data directory come from the platform settings
(``NEXUS_KAFKA_BOOTSTRAP_SERVERS``, ``NEXUS_APP_ID``, ``NEXUS_DATA_DIR``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PayoutSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_PAYOUTS_", env_file=".env", extra="ignore")

    # The timer: schedules and the end of a failure's back-off are checked this often.
    tick_every_s: float = Field(default=1.0, gt=0)
    # State (rules, balances, what was reported, input positions) is written this often, and at shutdown.
    save_every_s: float = Field(default=2.0, gt=0)
    # A payout's result (or a dividend) is applied once the balance mirror has the movement it implies (the
    # hold's capture or release, the dividend's credit); if that has not arrived after this long, it is applied
    # anyway and logged (the next decision may then read a balance from before it).
    mirror_wait_ms: int = Field(default=10_000, ge=0)
    # Duplicate window of the balance mirror: the last this many transfer ids per ledger.transfers partition.
    mirror_window: int = Field(default=20_000, ge=1)
    # Payout ids remembered as reported (a repeated bridge answer is ignored); the oldest are forgotten beyond.
    remembered_ids_max: int = Field(default=100_000, ge=1)
    # Back-off after a FAILED payout before the holder's account pays again (domain.payouts.PayoutConfig).
    retry_after_failure_ms: int = Field(default=3_600_000, ge=0)
    # ... and after a failure of the platform's moment, e.g. a ledger restart (domain.payouts.TRANSIENT_FAILURES)
    retry_after_transient_ms: int = Field(default=60_000, ge=0)
    max_rules_per_account: int = Field(default=20, ge=1)
    # For demos and tests only: the rules' clock (schedules) runs this far ahead of the wall clock. The FX
    # rates' freshness and every record's timestamp keep the wall clock.
    clock_offset_ms: int = 0
    # A payout above the governed auto-approval limit asks the signers for a PAYOUT_APPROVAL that expires after this
    # many days; if they refuse it (or let it expire) the holder's account backs off this long before it pays again.
    approval_window_days: float = Field(default=7.0, gt=0, le=365)
    retry_after_refusal_ms: int = Field(default=86_400_000, ge=0)
    # A quote older than this does not price a payout (the bridge's own limit is the same: domain.fx.FxPolicy).
    fx_max_age_ms: int = Field(default=10_000, ge=0)


def get_payout_settings() -> PayoutSettings:
    return PayoutSettings()
