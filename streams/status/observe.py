"""Each input topic's message as observations of the settlements it speaks of (domain.settlement_status).

A bridge request with ``payout`` (and a bridge answer with ``payout_id``) is a holder's payout, not a card
payment: the auto-payout service sends it under the payout's id, so it is the same row as the payout's
``payouts.*`` records, of kind PAYOUT, owned by the holder. A repeated answer (``repeat``: the bridge answering a
duplicate request) observes nothing: the first answer already did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contracts import models as m
from contracts.topics import (
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_WAITING,
    Topic,
)
from domain.bridge import Phase
from domain.settlement_status import STEP_IN_FLIGHT, Details, Kind, Observation, State

# What the read model consumes; the journal only for the phase a pending card payment is in (and, being
# compacted, the results of transactions older than the answer topics keep).
INPUTS: tuple[Topic, ...] = (
    BRIDGE_REQUESTS,
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    PAYOUT_REQUESTS,
    PAYOUT_WAITING,
    PAYOUT_RESULTS,
)


def of_request(req: m.BridgeRequest) -> Observation:
    payout = req.payout
    return Observation(
        id=req.request_id,
        kind=Kind.PAYOUT if payout else Kind.BRIDGE,
        state=State.PENDING,
        at=req.requested_at,
        requested_at=req.requested_at,
        details=Details(
            owner_id=req.payer_account_id if payout else req.merchant_id,
            payer_account_id=req.payer_account_id,
            currency=str(req.currency),
            amount_minor=req.amount_minor,
            kaus_units=payout.amount_kaus_units if payout else None,
        ),
    )


def of_completed(res: m.BridgeSettlementCompleted) -> Observation | None:
    if res.repeat:
        return None
    payout = res.payout_id is not None
    return Observation(
        id=res.payout_id or res.request_id,
        kind=Kind.PAYOUT if payout else Kind.BRIDGE,
        state=State.COMPLETED,
        at=res.completed_at,
        details=Details(
            owner_id=res.payer_account_id if payout else res.merchant_id,
            payer_account_id=res.payer_account_id,
            currency=str(res.currency),
            amount_minor=res.amount_minor,
            kaus_units=res.kaus_debited_units,
            rail=str(res.rail),
            provider_reference=res.provider_reference,
            bridge_tx_id=res.bridge_tx_id,
        ),
    )


def of_failed(res: m.BridgeSettlementFailed) -> Observation | None:
    """A failed card payment names its merchant since contracts 1.3.0; an older one's owner comes from its request
    (or stays unknown)."""
    if res.repeat:
        return None
    payout = res.payout_id is not None
    return Observation(
        id=res.payout_id or res.request_id,
        kind=Kind.PAYOUT if payout else Kind.BRIDGE,
        state=State.FAILED,
        at=res.failed_at,
        phase=str(res.failed_phase),
        reason_code=str(res.reason_code),
        reason=res.reason,
        details=Details(
            owner_id=res.payer_account_id if payout else res.merchant_id,
            payer_account_id=res.payer_account_id,
            currency=str(res.currency),
            amount_minor=res.amount_minor,
            rail=None if res.rail is None else str(res.rail),
            bridge_tx_id=res.bridge_tx_id,
        ),
    )


def of_journal(entry: m.BridgeJournalEntry) -> Observation | None:
    """An open intent: the provider is being paid (MERCHANT_CREDIT); a result: as on the answer topics."""
    if entry.completed is not None:
        return of_completed(entry.completed)
    if entry.failed is not None:
        return of_failed(entry.failed)
    intent = entry.intent
    assert intent is not None  # the contract holds exactly one of the three
    req = intent.request
    return Observation(
        id=req.request_id,
        kind=Kind.PAYOUT if req.payout else Kind.BRIDGE,
        state=State.PENDING,
        at=intent.created_at,
        phase=str(Phase.MERCHANT_CREDIT),
        step=STEP_IN_FLIGHT,
        details=Details(
            owner_id=req.payer_account_id if req.payout else req.merchant_id,
            payer_account_id=req.payer_account_id,
            currency=str(intent.currency),
            amount_minor=intent.amount_minor,
            kaus_units=intent.kaus_units,
            rail=str(intent.rail),
            bridge_tx_id=intent.bridge_tx_id,
        ),
    )


def of_payout_request(req: m.PayoutRequest) -> Observation:
    return Observation(
        id=req.payout_id,
        kind=Kind.PAYOUT,
        state=State.PENDING,
        at=req.requested_at,
        requested_at=req.requested_at,
        details=Details(
            owner_id=req.account_id,
            payer_account_id=req.account_id,
            currency=str(req.currency),
            kaus_units=req.amount_kaus_units,
        ),
    )


def of_payout_waiting(wait: m.PayoutWaiting) -> Observation:
    return Observation(
        id=wait.payout_id,
        kind=Kind.PAYOUT,
        state=State.WAITING,
        at=wait.waiting_since,
        reason_code=str(wait.reason_code),
        reason=wait.reason,
        details=Details(owner_id=wait.account_id, payer_account_id=wait.account_id),
    )


def of_payout_result(res: m.PayoutResult) -> Observation:
    failed = res.status is m.PayoutStatus.FAILED
    return Observation(
        id=res.payout_id,
        kind=Kind.PAYOUT,
        state=State.FAILED if failed else State.COMPLETED,
        at=res.completed_at,
        phase=None if res.failed_phase is None else str(res.failed_phase),
        reason_code=None if res.reason_code is None else str(res.reason_code),
        reason=res.reason if failed else None,
        details=Details(
            owner_id=res.account_id,
            payer_account_id=res.account_id,
            currency=str(res.currency),
            amount_minor=res.amount_minor,
            kaus_units=res.kaus_debited_units,
            rail=None if res.rail is None else str(res.rail),
            provider_reference=res.provider_reference,
            bridge_tx_id=res.bridge_tx_id,
        ),
    )


OBSERVERS: dict[str, Callable[[Any], Observation | None]] = {
    BRIDGE_REQUESTS.name: of_request,
    BRIDGE_PAYOUTS_JOURNAL.name: of_journal,
    BRIDGE_SETTLEMENTS_COMPLETED.name: of_completed,
    BRIDGE_SETTLEMENTS_FAILED.name: of_failed,
    PAYOUT_REQUESTS.name: of_payout_request,
    PAYOUT_WAITING.name: of_payout_waiting,
    PAYOUT_RESULTS.name: of_payout_result,
}
assert set(OBSERVERS) == {t.name for t in INPUTS}
