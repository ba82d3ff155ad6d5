"""PayPal Payouts (spec §3.2): OAuth 2.0 client credentials, then ``POST /v1/payments/payouts``.

* Token: ``POST /v1/oauth2/token`` with ``Authorization: Basic base64(client_id:secret)`` and
  ``grant_type=client_credentials`` → ``{"access_token", "token_type": "Bearer", "expires_in"}``; cached
  until 60 s before expiry, refreshed once on a 401.
* Payout: a batch of one item, ``sender_batch_header.sender_batch_id`` = our idempotency key (PayPal
  rejects a ``sender_batch_id`` used in the last 30 days and says 5xx may be retried with the same id);
  ``PayPal-Request-Id`` carries the same key. Amount ``{"value": "150.00", "currency": "USD"}`` (major
  units as text). ``201`` → ``batch_header.payout_batch_id`` / ``batch_status``; PENDING, PROCESSING and
  SUCCESS are accepted (PayPal settles the item within the hour), DENIED/CANCELED are declines.
* Errors: ``{"name", "message", "debug_id", "details": [{"field", "issue", ...}], "links"}``. A duplicate
  ``sender_batch_id`` answers 400 ``USER_BUSINESS_ERROR`` with a HATEOAS link to the original batch,
  which the adapter follows (``GET``) to report the original payout — this is also how ``lookup`` works.
* Report (``settlements(day)``): Transaction Search, ``GET /v1/reporting/transactions?start_date&end_date``
  (``yyyy-MM-ddTHH:mm:ss+0000``, at most 31 days, end inclusive) ``&transaction_type=T0001`` (mass payment, the
  code payouts are booked under) ``&fields=transaction_info,payer_info&page_size=500&page=<n>``, paged by ``page``
  up to ``total_pages``. Each ``transaction_info`` has ``transaction_amount`` / ``fee_amount`` (signed decimal
  text, negative for money out), ``transaction_status`` (S success, P pending, D denied, V reversed),
  ``transaction_initiation_date`` / ``transaction_updated_date``, ``invoice_id`` (our reference, as in the
  settlement report's Invoice ID column) and ``paypal_reference_id``: for a payout item the batch it belongs to,
  which is the reference the bridge recorded (PayPal's payouts reporting guide: the related transaction is in
  the PayPal Reference ID). PayPal says new transactions can take up to three hours to appear.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency, Money
from domain.rails import Provider
from domain.statements import StatementLine, day_window
from streams.bridge.providers.base import (
    MAX_PAGES,
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    InvalidPayoutAccount,
    ReportError,
    basic_auth,
    classify_status,
    destination_of,
    dumps,
    invalid_destination,
    payout_label,
    report_field,
    report_json,
)

_ACCEPTED = {"PENDING", "PROCESSING", "SUCCESS"}
# Errors about the sender's PayPal account, not this payment: the rail is unusable until fixed.
_RAIL_LEVEL = {"INSUFFICIENT_FUNDS", "AUTHORIZATION_ERROR", "PERMISSION_DENIED", "RATE_LIMIT_REACHED"}


def build_token_request(base_url: str, client_id: str, secret: str) -> HttpRequest:
    return HttpRequest(
        "POST",
        f"{base_url}/v1/oauth2/token",
        (
            ("Authorization", basic_auth(client_id, secret)),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
        ),
        b"grant_type=client_credentials",
    )


def build_payout_request(intent: PayoutIntent, base_url: str, token: str, receiver: str) -> HttpRequest:
    holder = intent.payment.payout is not None
    body = {
        "sender_batch_header": {
            "sender_batch_id": intent.idempotency_key,
            "email_subject": "NEXUS-X payout" if holder else "NEXUS-X settlement",
            "email_message": "You received your NEXUS-X auto-payout."
            if holder
            else "You received a payment settled through the NEXUS-X High-Speed Bridge.",
            "recipient_type": "EMAIL",
        },
        "items": [
            {
                "recipient_type": "EMAIL",
                "amount": {
                    "value": str(Money(intent.amount_minor, intent.currency).to_decimal()),
                    "currency": intent.currency.value,
                },
                "receiver": receiver,
                "note": payout_label(intent),
                "sender_item_id": intent.idempotency_key,
            }
        ],
    }
    return HttpRequest(
        "POST",
        f"{base_url}/v1/payments/payouts",
        (
            ("Authorization", f"Bearer {token}"),
            ("Content-Type", "application/json"),
            ("PayPal-Request-Id", intent.idempotency_key),
        ),
        dumps(body),
    )


PAGE_SIZE = 500  # Transaction Search's maximum
MASS_PAYMENT = "T0001"
_BOOKED = {"S", "P"}  # success, pending: money left the balance (D denied and V reversed did not stay out)
_TS = "%Y-%m-%dT%H:%M:%S%z"


def build_transactions_request(base_url: str, token: str, day: date, page: int) -> HttpRequest:
    start, end = day_window(day)
    query = [
        ("start_date", start.strftime(_TS)),
        ("end_date", (end - timedelta(seconds=1)).strftime(_TS)),  # PayPal's end is inclusive, to the second
        ("transaction_type", MASS_PAYMENT),
        ("fields", "transaction_info,payer_info"),
        ("page_size", str(PAGE_SIZE)),
        ("page", str(page)),
    ]
    return HttpRequest(
        "GET",
        f"{base_url}/v1/reporting/transactions?{urlencode(query)}",
        (("Authorization", f"Bearer {token}"), ("Accept", "application/json")),
    )


def _money_minor(value: Any, currency: Currency) -> int:
    return Money.from_decimal(abs(Decimal(str(value))), currency).minor_units


def transaction_line(detail: dict[str, Any]) -> StatementLine | None:
    """A Transaction Search detail as a statement line; None for what is not a booked payout."""
    info = detail["transaction_info"]
    if info.get("transaction_event_code") != MASS_PAYMENT or info.get("transaction_status") not in _BOOKED:
        return None
    amount = info["transaction_amount"]
    currency = Currency(amount["currency_code"])
    fee = info.get("fee_amount")
    created = datetime.strptime(info["transaction_initiation_date"], _TS).astimezone(UTC)
    updated = datetime.strptime(info.get("transaction_updated_date") or info["transaction_initiation_date"], _TS)
    return StatementLine(
        provider_reference=str(info.get("paypal_reference_id") or info["transaction_id"]),
        our_reference=info.get("invoice_id") or None,
        amount_minor=_money_minor(amount["value"], currency),
        fee_minor=_money_minor(fee["value"], Currency(fee["currency_code"])) if fee else 0,
        currency=currency,
        fx_rate=None,  # a conversion is its own transaction (T0200), never a rate on the payout
        value_date=updated.astimezone(UTC).date(),
        created_at=created,
        counterparty=(detail.get("payer_info") or {}).get("email_address") or None,
    )


def transactions_page(body: Any) -> tuple[list[StatementLine], int]:
    """(lines, total_pages) of one Transaction Search page."""
    details = body["transaction_details"]
    lines = [line for d in details if (line := transaction_line(d)) is not None]
    return lines, int(body.get("total_pages") or 1)


def parse_batch(resp: HttpResponse) -> PayoutOutcome:
    body = resp.json_or_none()
    header = body.get("batch_header") if isinstance(body, dict) else None
    if not isinstance(header, dict) or not header.get("payout_batch_id"):
        return HttpAdapter.unparseable(resp, "PayPal payout batch")
    status = str(header.get("batch_status", ""))
    if status in _ACCEPTED:
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=header["payout_batch_id"], http_status=resp.status)
    return PayoutOutcome(
        PayoutStatus.DECLINED,
        provider_reference=header["payout_batch_id"],
        http_status=resp.status,
        error_code=f"BATCH_{status or 'UNKNOWN'}",
    )


def duplicate_batch_link(resp: HttpResponse) -> str | None:
    """The HATEOAS link to the original batch when PayPal rejects a reused sender_batch_id."""
    body = resp.json_or_none()
    if resp.status != 400 or not isinstance(body, dict):
        return None
    issues = " ".join(str(d.get("issue", "")) for d in body.get("details", []) if isinstance(d, dict))
    if "sender_batch_id" not in issues.lower() and "SENDER_BATCH_ID" not in str(body.get("details")):
        return None
    for link in body.get("links", []):
        if isinstance(link, dict) and link.get("method", "GET") == "GET" and link.get("href"):
            return str(link["href"])
    return None


def parse_error(resp: HttpResponse) -> PayoutOutcome:
    body = resp.json_or_none()
    body = body if isinstance(body, dict) else {}
    name = str(body.get("name") or f"HTTP_{resp.status}")
    details = body.get("details") or []
    issue = next((str(d.get("issue")) for d in details if isinstance(d, dict) and d.get("issue")), None)
    message = " — ".join(x for x in (str(body.get("message") or ""), issue or "") if x) or None
    kind = classify_status(resp.status) or PayoutStatus.DECLINED
    if name in _RAIL_LEVEL or (issue or "") in _RAIL_LEVEL:
        kind = PayoutStatus.UNAVAILABLE
    # The issue (e.g. RECEIVER_UNREGISTERED) says more than the generic name (UNPROCESSABLE_ENTITY).
    return PayoutOutcome(kind, http_status=resp.status, error_code=issue or name, error_message=message)


class PayPalAdapter(HttpAdapter):
    provider = Provider.PAYPAL

    _token: str | None = None
    _token_expires_mono: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token_lock = asyncio.Lock()

    async def _access_token(self, force: bool = False) -> str | PayoutOutcome:
        if not force and self._token and time.monotonic() < self._token_expires_mono:
            return self._token
        async with self._token_lock:  # one token request at a time; the others reuse its result
            if not force and self._token and time.monotonic() < self._token_expires_mono:
                return self._token
            resp = await self.send(
                build_token_request(
                    self.base_url, self.settings.paypal_client_id, self.settings.paypal_client_secret.get_secret_value()
                )
            )
            if isinstance(resp, PayoutOutcome):
                # No token means nothing was sent: a definite failure of the rail.
                return PayoutOutcome(
                    PayoutStatus.UNAVAILABLE,
                    error_code="OAUTH_" + (resp.error_code or ""),
                    error_message=resp.error_message,
                )
            body = resp.json_or_none()
            if resp.status != 200 or not isinstance(body, dict) or not body.get("access_token"):
                return PayoutOutcome(
                    PayoutStatus.UNAVAILABLE,
                    http_status=resp.status,
                    error_code=str((body or {}).get("error", "OAUTH_FAILED")),
                    error_message=str((body or {}).get("error_description", "")),
                )
            self._token = str(body["access_token"])
            self._token_expires_mono = time.monotonic() + max(0, int(body.get("expires_in", 0)) - 60)
            return self._token

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        try:
            receiver = destination_of(intent, self.merchants).paypal_receiver
        except InvalidPayoutAccount as exc:
            return invalid_destination(exc)
        for attempt in (1, 2):
            token = await self._access_token(force=attempt == 2)
            if isinstance(token, PayoutOutcome):
                return token
            resp = await self.send(build_payout_request(intent, self.base_url, token, receiver))
            if isinstance(resp, PayoutOutcome):
                return resp
            if resp.status == 401 and attempt == 1:
                continue  # token expired early or was revoked: refresh once (nothing was executed)
            if resp.status in (200, 201):
                return parse_batch(resp)
            link = duplicate_batch_link(resp)
            if link:
                return await self._follow(link, token)
            return parse_error(resp)
        raise AssertionError("unreachable")

    async def _follow(self, href: str, token: str) -> PayoutOutcome:
        resp = await self.send(HttpRequest("GET", href, (("Authorization", f"Bearer {token}"),)))
        if isinstance(resp, PayoutOutcome):
            return resp
        if resp.status == 200:
            outcome = parse_batch(resp)
            return PayoutOutcome(
                outcome.status,
                outcome.provider_reference,
                outcome.error_code,
                outcome.error_message,
                outcome.http_status,
                replayed=True,
            )
        return parse_error(resp)

    async def settlements(self, day: date) -> list[StatementLine]:
        lines: list[StatementLine] = []
        page, pages = 1, 1
        while page <= pages:
            if page > MAX_PAGES:
                raise ReportError(f"{self.provider} transaction search: more than {MAX_PAGES} pages")
            body = await self._report_page(day, page)
            found, pages = report_field(self.provider, "transaction search", transactions_page, body)
            lines.extend(found)
            page += 1
        return lines

    async def _report_page(self, day: date, page: int) -> Any:
        for attempt in (1, 2):
            token = await self._access_token(force=attempt == 2)
            if isinstance(token, PayoutOutcome):
                raise ReportError(f"{self.provider} token: {token.error_code}: {token.error_message}")
            resp = await self.fetch(build_transactions_request(self.base_url, token, day, page), "transaction search")
            if resp.status == 401 and attempt == 1:
                continue  # token expired or revoked: refresh once
            return report_json(self.provider, resp, "transaction search")
        raise AssertionError("unreachable")

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        # Re-posting the same sender_batch_id either creates the batch (PayPal never got it) or is refused
        # with a link to the original — one payout either way.
        return await self.payout(intent)
