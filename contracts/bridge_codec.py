"""The High-Speed Bridge's wire formats <-> its domain records (``domain.bridge``, ``domain.fx``).

JSON of ``bridge.requests``, ``bridge.settlements.completed`` / ``.failed`` and ``bridge.payouts.journal``, built
directly from the domain records on the hot path (no pydantic model per record); tests/unit/test_bridge_service.py
holds each to its contract. Decoding goes through the validated models. Times are exact (``domain.timeconv``).

A payment's origin (``CardPayment.origin``, which tells a repeated request from its first record read again) is
the ``bridge.requests`` record's ``"<partition>:<offset>"`` (:func:`request_origin`); the journal keeps it with
each transaction (``request_record``), so a restarted worker still tells them apart.

A request's ``payout`` block (a holder's auto-payout) maps to ``CardPayment.payout`` and back; the journal keeps it
with each intent's request, so recovery after a crash still settles a payout as one. Results carry ``payout_id``.
"""

from __future__ import annotations

from typing import Any

from contracts import models as m
from contracts.construct import utc_text, utc_text_ms
from contracts.topics import BRIDGE_PAYOUTS_JOURNAL
from domain.bridge import (
    BridgeAudit,
    CardPayment,
    HolderPayout,
    PayoutIntent,
    Phase,
    ReasonCode,
    Rejected,
    Result,
    Settled,
)
from domain.cashback import PayerTier
from domain.fx import Quote, format_rate
from domain.money import Money, kaus_to_decimal
from domain.rails import PRIMARY_RAIL, Provider, Rail, RailSubstitution, Region
from domain.timeconv import from_ms, to_ms, us_to_ms

REASON_CHARS_MAX = 2000  # the contract's bound on a failure's reason text

# --------------------------------------------------------------------------- bridge.requests


# Taken over unchanged between a payment and its request; the rest is converted (enums, times).
_PAYMENT_FIELDS = (
    "request_id",
    "payer_account_id",
    "merchant_id",
    "merchant_program",
    "amount_minor",
    "currency",
    "quoted_rate",
)


def _copied(source: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``source``'s fields ``names`` as keyword arguments."""
    return {name: getattr(source, name) for name in names}


def request_origin(partition: int, offset: int) -> str:
    """The origin of a payment read from ``bridge.requests`` at (``partition``, ``offset``)."""
    return f"{partition}:{offset}"


_PAYOUT_FIELDS = ("rule_id", "payout_account", "amount_kaus_units", "payout_account_sealed")


def payout_from_request(payout: m.HolderPayout | None) -> HolderPayout | None:
    if payout is None:
        return None
    return HolderPayout(**_copied(payout, _PAYOUT_FIELDS), provider=Provider(payout.provider))


def payment_from_request(req: m.BridgeRequest, origin: str | None = None) -> CardPayment:
    return CardPayment(
        **_copied(req, _PAYMENT_FIELDS),
        region=Region(req.region.value),
        payer_tier=PayerTier(req.payer_tier.value),
        requested_at_ms=to_ms(req.requested_at),
        origin=origin,
        payout=payout_from_request(req.payout),
    )


def payout_json(payout: HolderPayout | None) -> dict[str, Any] | None:
    """``HolderPayout`` JSON of a payment's payout block (None for a card payment)."""
    if payout is None:
        return None
    return {
        "rule_id": payout.rule_id,
        "provider": str(payout.provider),
        "payout_account": payout.payout_account,
        "amount_kaus_units": payout.amount_kaus_units,
        "payout_account_sealed": payout.payout_account_sealed,
    }


def request_from_payment(p: CardPayment) -> m.BridgeRequest:
    payout = None if p.payout is None else m.HolderPayout.model_validate(payout_json(p.payout))
    return m.BridgeRequest(
        **_copied(p, _PAYMENT_FIELDS),
        region=m.Region(p.region.value),
        payer_tier=m.PayerTier(p.payer_tier.value),
        requested_at=from_ms(p.requested_at_ms),
        payout=payout,
    )


def iso(ms: int) -> str:
    """The bridge's timestamps: exact integer arithmetic, the second's text cached (test_construct.py)."""
    return utc_text_ms(ms)


def request_json(p: CardPayment) -> dict[str, Any]:
    """``bridge.requests`` JSON of a payment."""
    return {
        "request_id": p.request_id,
        "payer_account_id": p.payer_account_id,
        "merchant_id": p.merchant_id,
        "merchant_program": p.merchant_program,
        "amount_minor": p.amount_minor,
        "currency": str(p.currency),
        "region": str(p.region),
        "payer_tier": str(p.payer_tier),
        "quoted_rate": format_rate(p.quoted_rate),
        "requested_at": iso(p.requested_at_ms),
        "payout": payout_json(p.payout),
    }


# --------------------------------------------------------------------------- bridge.settlements.*


def result_json(result: Result, repeat: bool = False) -> dict[str, Any]:
    """The wire JSON of a result in the contract's shape (``bridge.settlements.completed`` / ``.failed``); ``repeat``:
    the answer to a repeated request (``domain.bridge.is_repeat``)."""
    durations = {str(p): us_to_ms(us) for p, us in result.phase_durations_us}
    if isinstance(result, Settled):
        return {
            "request_id": result.request_id,
            "bridge_tx_id": result.bridge_tx_id,
            "payer_account_id": result.payer_account_id,
            "merchant_id": result.merchant_id,
            "region": str(result.region),
            "currency": str(result.currency),
            "amount_minor": result.amount_minor,
            "kaus_debited_units": result.kaus_debited_units,
            "rate": format_rate(result.rate),
            "rail": str(result.rail),
            "primary_rail": str(result.primary_rail),
            "rail_substitution_reason": str(result.rail_substitution) if result.rail_substitution else None,
            "provider_reference": result.provider_reference,
            "provider_fee_minor": result.provider_fee_minor,
            "cashback_kaus_units": result.cashback_kaus_units,
            "ecosystem_bonus_kaus_units": result.ecosystem_bonus_kaus_units,
            "phase_durations_ms": durations,
            "total_duration_ms": us_to_ms(result.total_duration_us),
            "repeat": repeat,
            "completed_at": iso(result.completed_at_ms),
            "payout_id": result.payout_id,
        }
    return {
        "request_id": result.request_id,
        "bridge_tx_id": result.bridge_tx_id,
        "payer_account_id": result.payer_account_id,
        "region": str(result.region),
        "currency": str(result.currency),
        "amount_minor": result.amount_minor,
        "failed_phase": str(result.failed_phase),
        "reason_code": str(result.reason_code),
        "reason": result.reason[:REASON_CHARS_MAX],
        "rail": str(result.rail) if result.rail else None,
        "phase_durations_ms": durations,
        "repeat": repeat,
        "failed_at": iso(result.failed_at_ms),
        "payout_id": result.payout_id,
        "merchant_id": result.merchant_id,
    }


def result_to_json(result: Result) -> dict[str, Any]:
    """A result as stored (wire JSON plus what the wire leaves out: ``x``), read back by :func:`result_from_json`."""
    wire = result_json(result)
    extra: dict[str, Any] = {
        "fingerprint": result.fingerprint,
        "durations_us": [[str(p), us] for p, us in result.phase_durations_us],
        "origin": result.origin,
    }
    if isinstance(result, Settled):
        extra.update(provider=str(result.provider), total_duration_us=result.total_duration_us)
    else:
        extra.update(hold_voided=result.hold_voided, needs_reconciliation=result.needs_reconciliation)
    return {"ok": isinstance(result, Settled), "wire": wire, "x": extra}


def result_from_json(d: dict[str, Any]) -> Result:
    x = d["x"]
    durations = tuple((Phase(p), int(us)) for p, us in x["durations_us"])
    if d["ok"]:
        c = m.BridgeSettlementCompleted.model_validate(d["wire"])
        return Settled(
            request_id=c.request_id,
            bridge_tx_id=c.bridge_tx_id,
            payer_account_id=c.payer_account_id,
            merchant_id=c.merchant_id,
            region=Region(c.region.value),
            currency=c.currency,
            amount_minor=c.amount_minor,
            kaus_debited_units=c.kaus_debited_units,
            rate=c.rate,
            rail=Rail(c.rail.value),
            # Older entries name neither: the region's primary rail, and an unknown reason.
            primary_rail=Rail(c.primary_rail) if c.primary_rail else PRIMARY_RAIL[Region(c.region.value)],
            rail_substitution=RailSubstitution(c.rail_substitution_reason) if c.rail_substitution_reason else None,
            provider=Provider(x["provider"]),
            provider_reference=c.provider_reference,
            provider_fee_minor=c.provider_fee_minor,
            cashback_kaus_units=c.cashback_kaus_units,
            ecosystem_bonus_kaus_units=c.ecosystem_bonus_kaus_units,
            phase_durations_us=durations,
            total_duration_us=int(x["total_duration_us"]),
            completed_at_ms=to_ms(c.completed_at),
            fingerprint=x["fingerprint"],
            origin=x.get("origin"),
            payout_id=c.payout_id,
        )
    f = m.BridgeSettlementFailed.model_validate(d["wire"])
    return Rejected(
        request_id=f.request_id,
        bridge_tx_id=f.bridge_tx_id,
        payer_account_id=f.payer_account_id,
        region=Region(f.region.value),
        currency=f.currency,
        amount_minor=f.amount_minor,
        failed_phase=Phase(f.failed_phase.value),
        reason_code=ReasonCode(f.reason_code),
        reason=f.reason,
        rail=Rail(f.rail.value) if f.rail else None,
        phase_durations_us=durations,
        failed_at_ms=to_ms(f.failed_at),
        fingerprint=x["fingerprint"],
        hold_voided=bool(x["hold_voided"]),
        needs_reconciliation=bool(x["needs_reconciliation"]),
        origin=x.get("origin"),
        payout_id=f.payout_id,
        merchant_id=f.merchant_id,
    )


# --------------------------------------------------------------------------- payout intents


def intent_json(i: PayoutIntent) -> dict[str, Any]:
    """``BridgePayoutIntent`` JSON of an intent (persisted before every provider call)."""
    return {
        "intent_id": f"{i.bridge_tx_id}:{i.provider_attempt}:{i.send_no}",
        "bridge_tx_id": i.bridge_tx_id,
        "idempotency_key": i.idempotency_key,
        "provider_attempt": i.provider_attempt,
        "send_no": i.send_no,
        "rail": str(i.rail),
        "provider": str(i.provider),
        "amount_minor": i.amount_minor,
        "currency": str(i.currency),
        "fee_minor": i.fee_minor,
        "kaus_units": i.kaus_units,
        "rate": format_rate(i.rate),
        "lock_id": i.lock_id,
        "locked_at": iso(i.locked_at_ms),
        "lock_expires_at": iso(i.lock_expires_at_ms),
        "hold_id": i.hold_id,
        "hold_units": i.hold_units,
        "tried_providers": [str(p) for p in i.tried_providers],
        "request": request_json(i.payment),
        "created_at": iso(i.created_at_ms),
        "rail_substitution_reason": str(i.substitution) if i.substitution else None,
    }


# Taken over unchanged from a journaled intent record; the rest is converted (enums, times, the payment).
_INTENT_FIELDS = (
    "bridge_tx_id",
    "idempotency_key",
    "provider_attempt",
    "send_no",
    "amount_minor",
    "currency",
    "fee_minor",
    "kaus_units",
    "rate",
    "lock_id",
    "hold_id",
    "hold_units",
)


def intent_from_record(r: m.BridgePayoutIntent, origin: str | None = None) -> PayoutIntent:
    """The intent of a journaled record; ``origin``: its payment's (the journal entry's ``request_record``)."""
    return PayoutIntent(
        **_copied(r, _INTENT_FIELDS),
        rail=Rail(r.rail.value),
        provider=Provider(r.provider),
        locked_at_ms=to_ms(r.locked_at),
        lock_expires_at_ms=to_ms(r.lock_expires_at),
        tried_providers=tuple(Provider(p) for p in r.tried_providers),
        payment=payment_from_request(r.request, origin),
        created_at_ms=to_ms(r.created_at),
        substitution=RailSubstitution(r.rail_substitution_reason) if r.rail_substitution_reason else None,
    )


# --------------------------------------------------------------------------- bridge.payouts.journal


def journal_of_intent(intent: PayoutIntent) -> dict[str, Any]:
    """A ``BridgeJournalEntry`` (JSON-ready) for an intent about to be sent."""
    return {
        "bridge_tx_id": intent.bridge_tx_id,
        "request_id": intent.payment.request_id,
        "intent": intent_json(intent),
        "fingerprint": intent.payment.fingerprint(),
        "request_record": intent.payment.origin,
    }


def intent_of_journal(entry: m.BridgeJournalEntry) -> PayoutIntent:
    assert entry.intent is not None, "a result entry has no intent"
    return intent_from_record(entry.intent, entry.request_record)


def journal_of_result(result: Result, bridge_tx_id: str) -> dict[str, Any]:
    """A ``BridgeJournalEntry`` (JSON-ready) closing a transaction with its result."""
    stored = result_to_json(result)
    extra = stored["x"]
    entry: dict[str, Any] = {
        "bridge_tx_id": bridge_tx_id,
        "request_id": result.request_id,
        "completed" if stored["ok"] else "failed": stored["wire"],
        "fingerprint": extra["fingerprint"],
        "phase_durations_us": dict(extra["durations_us"]),
        "request_record": result.origin,
    }
    if isinstance(result, Settled):
        entry.update(provider=extra["provider"], total_duration_us=extra["total_duration_us"])
    else:
        entry.update(hold_voided=extra["hold_voided"], needs_reconciliation=extra["needs_reconciliation"])
    return entry


def result_of_journal(entry: m.BridgeJournalEntry) -> Result:
    wire = entry.completed or entry.failed
    assert wire is not None, "an intent entry has no result"
    x: dict[str, Any] = {
        "fingerprint": entry.fingerprint,
        "durations_us": [[str(p), us] for p, us in entry.phase_durations_us.items()],
        "provider": entry.provider,
        "total_duration_us": entry.total_duration_us,
        "hold_voided": entry.hold_voided,
        "needs_reconciliation": entry.needs_reconciliation,
        "origin": entry.request_record,
    }
    return result_from_json({"ok": entry.completed is not None, "wire": wire.model_dump(mode="json"), "x": x})


def result_of_entry(value: bytes) -> Result:
    """A result journal entry's bytes (as the result index stores them) back to the result."""
    return result_of_journal(BRIDGE_PAYOUTS_JOURNAL.decode(value))


# --------------------------------------------------------------------------- audit.records


def audit_json(a: BridgeAudit) -> dict[str, Any]:
    """The ``audit.records`` JSON (spec §7.2, camelCase) of a payment's audit (``domain.bridge.audit_of``); keyed by
    its ``transactionId``. Unsigned here (``signature`` null)."""
    return {
        "auditId": a.audit_id,
        "timestamp": utc_text(a.at_ms),  # as the model writes it, like P2P's records
        "transactionId": a.transaction_id,
        "action": str(a.action),
        "actor": {"userId": a.actor_account_id, "ip": None, "userAgent": "NEXUS-X/2.0"},
        "details": {
            "kausAmount": None if a.kaus_units is None else str(kaus_to_decimal(a.kaus_units)),
            "fiatAmount": str(Money(a.amount_minor, a.currency).to_decimal()),
            "currency": str(a.currency),
            "exchangeRate": None if a.rate is None else format_rate(a.rate),
            "settlementRail": None if a.rail is None else str(a.rail),
            "duration": us_to_ms(a.duration_us),
        },
        "signature": None,
        "blockchainRef": None,
    }


# --------------------------------------------------------------------------- fx.rates


def quote_of_rate(rate: m.FxRate) -> Quote:
    """An ``fx.rates`` record as the FX book's quote."""
    return Quote(rate.source.value, rate.base, rate.quote, rate.rate, to_ms(rate.as_of), rate.quote_id)


__all__ = [
    "audit_json",
    "intent_from_record",
    "intent_json",
    "intent_of_journal",
    "iso",
    "journal_of_intent",
    "journal_of_result",
    "payment_from_request",
    "payout_from_request",
    "payout_json",
    "quote_of_rate",
    "request_from_payment",
    "request_json",
    "request_origin",
    "result_from_json",
    "result_json",
    "result_of_entry",
    "result_of_journal",
    "result_to_json",
]
