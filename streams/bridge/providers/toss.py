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

Report (``settlements(day)``): ``GET /v1/settlements?startDate&endDate`` (KST dates of ``dateType=soldDate``,
inclusive) ``&page=<n>&size=<rows>``, same Basic auth; the answer is a JSON array of settlement records
(``paymentKey``, ``orderId``, ``amount``, ``payOutAmount`` after fees, ``approvedAt`` with its +09:00 offset,
``soldDate``, ``paidOutDate``), paged until a page comes back short. A UTC day spans two KST dates, so both are
asked for and the lines outside the UTC day dropped.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency
from domain.rails import Provider
from domain.statements import StatementLine, booked_on, day_window
from domain.timeconv import from_ms
from streams.bridge.providers.base import (
    MAX_PAGES,
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    ReplayingAdapter,
    ReportError,
    answered,
    basic_auth,
    classify_status,
    destination_of,
    dumps,
    report_field,
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


# --------------------------------------------------------------------------- report

PAGE_SIZE = 5_000


def build_settlements_request(base_url: str, secret_key: str, day: date, page: int) -> HttpRequest:
    start, end = day_window(day)
    query = [
        ("startDate", start.astimezone(KST).date().isoformat()),
        ("endDate", (end - timedelta(microseconds=1)).astimezone(KST).date().isoformat()),
        ("dateType", "soldDate"),
        ("page", str(page)),
        ("size", str(PAGE_SIZE)),
    ]
    return HttpRequest(
        "GET", f"{base_url}/v1/settlements?{urlencode(query)}", (("Authorization", basic_auth(secret_key, "")),)
    )


def settlement_line(row: dict[str, Any]) -> StatementLine:
    """One Toss settlement record as a statement line (KRW integers; the fee is amount minus payOutAmount)."""
    amount = int(row["amount"])
    return StatementLine(
        provider_reference=str(row["paymentKey"]),
        our_reference=row.get("orderId") or None,
        amount_minor=amount,
        fee_minor=amount - int(row["payOutAmount"]),
        currency=Currency(str(row["currency"]).upper()),
        fx_rate=None,
        value_date=date.fromisoformat(row["paidOutDate"]),
        created_at=datetime.fromisoformat(row["approvedAt"]).astimezone(UTC),
        counterparty=None,
    )


def settlements_page(body: Any) -> list[StatementLine]:
    if not isinstance(body, list):
        raise ValueError("expected a JSON array of settlements")
    return [settlement_line(row) for row in body]


class TossAdapter(ReplayingAdapter):
    """The same Idempotency-Key makes Toss return the stored response."""

    provider = Provider.TOSS
    parse = staticmethod(parse_payout_response)

    async def settlements(self, day: date) -> list[StatementLine]:
        key = self.settings.toss_secret_key.get_secret_value()
        lines: list[StatementLine] = []
        for page in range(1, MAX_PAGES + 1):
            body = await self.fetch_json(build_settlements_request(self.base_url, key, day, page), "settlements")
            found = report_field(self.provider, "settlements", settlements_page, body)
            lines.extend(ln for ln in found if booked_on(ln, day))
            if len(found) < PAGE_SIZE:
                return lines
        raise ReportError(f"{self.provider} settlements: more than {MAX_PAGES} pages")

    def build(self, intent: PayoutIntent) -> HttpRequest:
        submall = destination_of(intent, self.merchants).toss_submall_id
        return build_payout_request(intent, self.base_url, self.settings.toss_secret_key.get_secret_value(), submall)
