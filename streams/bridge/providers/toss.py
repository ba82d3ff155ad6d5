"""Toss Payments payouts to a sub-mall (지급대행 v1): ``POST /v1/payouts/sub-malls/settlements``.

Authentication: ``Authorization: Basic base64("<secret key>:")`` — the secret key as user name and an
empty password (note the colon). ``Idempotency-Key: <bridge tx id>``: Toss keeps the first response per
key (15 days) and returns it for repeats, which is how ``lookup`` learns a lost outcome.

Body: a JSON array of ``{"subMallId", "payoutDate": "YYYY-MM-DD", "payoutAmount": <KRW integer>}``; the
payout date is the rate-lock date in KST, fixed per intent so a replay is byte-identical. Answer: an
array of Payout objects (``payoutKey``, ``subMallId``, ``payoutDate``, ``payoutAmount``, ``status``
REQUESTED/IN_PROGRESS/COMPLETED accepted; FAILED/CANCELED declined, with ``failure``). Errors are
``{"code": "...", "message": "..."}`` with the HTTP status. (Toss' v2 payouts API additionally encrypts
bodies as JWE; the v1 API and the simulator use plain JSON.)
"""

from __future__ import annotations

from datetime import timedelta, timezone

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency
from domain.rails import Provider
from domain.timeconv import from_ms
from streams.bridge.providers.base import (
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    ReplayingAdapter,
    answered,
    basic_auth,
    classify_status,
    dumps,
)

KST = timezone(timedelta(hours=9))
_ACCEPTED = {"REQUESTED", "IN_PROGRESS", "COMPLETED"}
# Toss errors about our merchant account (not this payment): the rail is unusable until fixed.
_RAIL_LEVEL = {
    "UNAUTHORIZED_KEY",
    "INVALID_API_KEY",
    "NOT_ENOUGH_BALANCE",
    "PROVIDER_ERROR",
    "FAILED_INTERNAL_SYSTEM_PROCESSING",
}


def payout_date(intent: PayoutIntent) -> str:
    return from_ms(intent.locked_at_ms).astimezone(KST).date().isoformat()


def build_payout_request(intent: PayoutIntent, base_url: str, secret_key: str, submall_id: str) -> HttpRequest:
    assert intent.currency is Currency.KRW, "Toss pays KRW only"
    body = [{"subMallId": submall_id, "payoutDate": payout_date(intent), "payoutAmount": intent.amount_minor}]
    return HttpRequest(
        "POST",
        f"{base_url}/v1/payouts/sub-malls/settlements",
        (
            ("Authorization", basic_auth(secret_key, "")),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", intent.idempotency_key),
        ),
        dumps(body),
    )


def parse_payout_response(resp: HttpResponse) -> PayoutOutcome:
    kind = classify_status(resp.status)
    body = resp.json_or_none()
    if kind is None:
        if not isinstance(body, list) or not body or not isinstance(body[0], dict) or not body[0].get("payoutKey"):
            return HttpAdapter.unparseable(resp, "Toss payout")
        payout = body[0]
        failure = payout.get("failure") or {}
        code = None if payout.get("status") in _ACCEPTED else failure.get("code") or f"PAYOUT_{payout.get('status')}"
        return answered(resp, payout["payoutKey"], code, failure.get("message"))
    body = body if isinstance(body, dict) else {}
    code = str(body.get("code") or f"HTTP_{resp.status}")
    if code in _RAIL_LEVEL:
        kind = PayoutStatus.UNAVAILABLE
    return PayoutOutcome(kind, http_status=resp.status, error_code=code, error_message=body.get("message"))


class TossAdapter(ReplayingAdapter):
    """The same Idempotency-Key makes Toss return the stored response."""

    provider = Provider.TOSS
    parse = staticmethod(parse_payout_response)

    def build(self, intent: PayoutIntent) -> HttpRequest:
        submall = self.merchants.account(intent.payment.merchant_id).toss_submall_id
        return build_payout_request(intent, self.base_url, self.settings.toss_secret_key.get_secret_value(), submall)
