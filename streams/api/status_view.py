"""What the API reads of the status read model (``streams.status.store.StatusStore``, opened read-only), and the
one response shape every status takes (``Settlement``), whichever source it comes from."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from contracts.models import BridgeRequest, BridgeSettlementCompleted, BridgeSettlementFailed
from streams.api.idempotency import Accepted
from streams.api.schemas import Settlement
from streams.status.store import Freshness, StatusRecord


class StatusReader(Protocol):
    """The read side of ``streams.status.store.StatusStore`` (unit tests hand in a fake)."""

    def get(self, record_id: str) -> StatusRecord | None: ...

    def history(
        self,
        owner_id: str | None,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        state: str | None = None,
        currency: str | None = None,
        rail: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[StatusRecord], str | None]: ...

    def freshness(self) -> Freshness: ...


def from_record(record: StatusRecord) -> Settlement:
    return Settlement(
        id=record.id,
        kind=record.kind,  # type: ignore[arg-type]
        state=record.state,  # type: ignore[arg-type]
        phase=record.phase,
        reason_code=record.reason_code,
        reason=record.reason,
        owner_id=record.owner_id,
        payer_account_id=record.payer_account_id,
        currency=record.currency or None,
        amount_minor=record.amount_minor,
        kaus_units=record.kaus_units,
        rail=record.rail,
        provider_reference=record.provider_reference,
        bridge_tx_id=record.bridge_tx_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def from_accepted(accepted: Accepted) -> Settlement:
    """A card payment this API sent and nothing has answered yet."""
    at = datetime.fromisoformat(accepted.accepted_at)
    return Settlement(
        id=accepted.request_id,
        kind="BRIDGE",
        state="PENDING",
        owner_id=accepted.owner_id,
        payer_account_id=accepted.payer_account_id,
        currency=accepted.currency,
        amount_minor=accepted.amount_minor,
        created_at=at,
        updated_at=at,
    )


def from_answer(answer: BridgeSettlementCompleted | BridgeSettlementFailed, request: BridgeRequest) -> Settlement:
    """The bridge's answer to ``request``, as POST /bridge returns it (with the answer itself in ``result``)."""
    common = {
        "id": answer.request_id,
        "kind": "BRIDGE",
        "owner_id": request.merchant_id,
        "payer_account_id": answer.payer_account_id,
        "currency": answer.currency.value,
        "amount_minor": answer.amount_minor,
        "bridge_tx_id": answer.bridge_tx_id,
        "created_at": request.requested_at,
        "result": answer,
    }
    if isinstance(answer, BridgeSettlementCompleted):
        return Settlement(
            state="COMPLETED",
            kaus_units=answer.kaus_debited_units,
            rail=answer.rail.value,
            provider_reference=answer.provider_reference,
            updated_at=answer.completed_at,
            **common,  # type: ignore[arg-type]
        )
    return Settlement(
        state="FAILED",
        phase=answer.failed_phase.value,
        reason_code=answer.reason_code,
        reason=answer.reason,
        rail=answer.rail.value if answer.rail is not None else None,
        updated_at=answer.failed_at,
        **common,  # type: ignore[arg-type]
    )
