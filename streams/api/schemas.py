"""The API's own response and request bodies. Bodies that are messages (a bridge request, a rule, a settlement's
answer) are the contracts' models themselves (``contracts.models``), never copies."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.models import BridgeSettlementCompleted, BridgeSettlementFailed

State = Literal["PENDING", "WAITING", "COMPLETED", "FAILED"]
Kind = Literal["BRIDGE", "PAYOUT"]


class Settlement(BaseModel):
    """A card payment's (BRIDGE) or a holder payout's (PAYOUT) state."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="the bridge request_id, or the payout_id")
    kind: Kind
    state: State = Field(
        description="PENDING (sent, not settled yet; `phase` the bridge phase once known), WAITING (a payout held "
        "back, see `reason_code`), COMPLETED, FAILED (`phase` the phase that failed, `reason_code` why)"
    )
    phase: str | None = Field(default=None, description="BALANCE_LOCK, FX_CONVERSION, MERCHANT_CREDIT, CONFIRMATION")
    reason_code: str | None = Field(default=None, description="FAILED / WAITING: the answer topic's reason code")
    reason: str | None = None
    owner_id: str = Field(description="the merchant_id (BRIDGE) or the holder's account_id (PAYOUT); '' if unknown")
    payer_account_id: str | None = None
    currency: str | None = None
    amount_minor: int | None = Field(default=None, description="fiat minor units")
    kaus_units: int | None = Field(default=None, description="K-AUS base units debited (COMPLETED)")
    rail: str | None = None
    provider_reference: str | None = None
    bridge_tx_id: str | None = None
    created_at: datetime
    updated_at: datetime
    result: BridgeSettlementCompleted | BridgeSettlementFailed | None = Field(
        default=None,
        description="POST /bridge only: the bridge's answer as published on bridge.settlements.completed / .failed",
    )


class HistoryPage(BaseModel):
    items: list[Settlement] = Field(description="newest first (by the order the read model first saw each)")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class TokenResponse(BaseModel):
    """RFC 6749 §5.1."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds")
    scope: str = Field(description="the scopes granted, space-separated")


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    day: date = Field(description="the UTC day to reconcile (YYYY-MM-DD), today or earlier")


class ReconcileRun(BaseModel):
    run_id: str = Field(description="Airflow's dag_run_id")
    dag_id: str
    day: date | None = Field(description="the day this run reconciles")
    state: str | None = Field(description="Airflow's state: queued, running, success, failed")
    logical_date: datetime | None = None
    queued_at: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None


class Health(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="each readiness check and what it found")
