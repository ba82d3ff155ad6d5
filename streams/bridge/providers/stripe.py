"""Stripe Connect instant payouts (spec §3.2): ``POST /v1/payouts`` on the merchant's connected account.

Request: form-encoded (Stripe's API is ``application/x-www-form-urlencoded``, nested keys as
``metadata[nexus_tx_id]``), ``Authorization: Bearer sk_...``, ``Stripe-Account: acct_...`` (act on the
connected account) and ``Idempotency-Key: <bridge tx id>``. Amounts are integers in the currency's
smallest unit and the currency is lower-case, as Stripe requires.

Answer: a Payout object (``id`` ``po_...``, ``status`` pending/in_transit/paid → accepted;
failed/canceled → declined with ``failure_code``), or an error object
``{"error": {"type", "code", "message", "param", "decline_code"}}``. Stripe stores the response of the
first request per idempotency key (24 h) and replays it (header ``Idempotent-Replayed: true``); a key
reused with other parameters is an ``idempotency_error`` (400), a key still in flight is 409. So
``lookup`` replays the identical request under the same key — Stripe's documented way to learn the
outcome of a request whose answer was lost (payouts cannot be searched by metadata).
"""

from __future__ import annotations

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import kaus_to_decimal
from domain.rails import Provider
from streams.bridge.providers.base import (
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    ReplayingAdapter,
    answered,
    classify_status,
    form_encode,
)

_ACCEPTED = {"pending", "in_transit", "paid"}


def build_payout_request(
    intent: PayoutIntent, base_url: str, secret_key: str, account: str, destination: str
) -> HttpRequest:
    form = [
        ("amount", str(intent.amount_minor)),
        ("currency", intent.currency.value.lower()),
        ("method", "instant"),
        ("destination", destination),
        ("description", f"NEXUS-X bridge settlement {intent.bridge_tx_id}"),
        ("metadata[nexus_tx_id]", intent.bridge_tx_id),
        ("metadata[kaus_converted]", str(kaus_to_decimal(intent.kaus_units))),
        ("metadata[nexus_rail]", intent.rail.value),
        ("metadata[merchant_id]", intent.payment.merchant_id),
    ]
    return HttpRequest(
        "POST",
        f"{base_url}/v1/payouts",
        (
            ("Authorization", f"Bearer {secret_key}"),
            ("Stripe-Account", account),
            ("Idempotency-Key", intent.idempotency_key),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ),
        form_encode(form),
    )


def parse_payout_response(resp: HttpResponse) -> PayoutOutcome:
    replayed = resp.headers.get("idempotent-replayed", "").lower() == "true"
    kind = classify_status(resp.status)
    body = resp.json_or_none()
    if kind is None:
        if not isinstance(body, dict) or body.get("object") != "payout" or not body.get("id"):
            return HttpAdapter.unparseable(resp, "Stripe payout")
        status = body.get("status")
        failure = None if status in _ACCEPTED else body.get("failure_code") or f"payout_{status}"
        return answered(resp, body["id"], failure, body.get("failure_message"), replayed)
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code = err.get("code") or err.get("type") or f"http_{resp.status}"
    message = err.get("message")
    if resp.status == 409 or code == "idempotency_key_in_use":
        # The first request under this key is still executing: its outcome is not known yet.
        kind = PayoutStatus.TIMEOUT
    return PayoutOutcome(kind, http_status=resp.status, error_code=code, error_message=message, replayed=replayed)


class StripeAdapter(ReplayingAdapter):
    """Replaying under the same Idempotency-Key returns the stored outcome (or executes it if Stripe never
    received the original): never a second payout."""

    provider = Provider.STRIPE
    parse = staticmethod(parse_payout_response)

    def build(self, intent: PayoutIntent) -> HttpRequest:
        acct = self.merchants.account(intent.payment.merchant_id)
        return build_payout_request(
            intent,
            self.base_url,
            self.settings.stripe_secret_key.get_secret_value(),
            acct.stripe_account,
            acct.stripe_destination,
        )
