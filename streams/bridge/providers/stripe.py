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

Report (``settlements(day)``): payouts live on the connected accounts, so the platform lists its accounts
(``GET /v1/accounts``) and, on each (``Stripe-Account``), the day's payout balance transactions ``GET
/v1/balance_transactions?type=payout&created[gte]=<start>&created[lt]=<end>&limit=100&expand[]=data.source``.
Both are Stripe list objects paged with ``starting_after=<last id>`` while ``has_more``. A payout's balance
transaction carries ``amount`` (negative: it leaves the balance), ``fee``, ``exchange_rate`` (null unless Stripe
converted), ``created`` and ``available_on`` (Unix seconds); the expanded ``source`` is the Payout, whose
``metadata[nexus_tx_id]`` is our reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any
from urllib.parse import urlencode

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency, kaus_to_decimal
from domain.rails import Provider
from domain.statements import StatementLine, day_window
from streams.bridge.providers.base import (
    MAX_PAGES,
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    ReplayingAdapter,
    ReportError,
    answered,
    classify_status,
    destination_of,
    form_encode,
    payout_label,
    report_field,
)

_ACCEPTED = {"pending", "in_transit", "paid"}


def build_payout_request(
    intent: PayoutIntent, base_url: str, secret_key: str, account: str, destination: str
) -> HttpRequest:
    """``destination`` empty: none is sent, and Stripe pays the connected account's default external account (a
    holder's payout: the holder's Stripe account is all the rule names)."""
    form = [
        ("amount", str(intent.amount_minor)),
        ("currency", intent.currency.value.lower()),
        ("method", "instant"),
        *((("destination", destination),) if destination else ()),
        ("description", payout_label(intent)),
        ("metadata[nexus_tx_id]", intent.bridge_tx_id),
        ("metadata[kaus_converted]", str(kaus_to_decimal(intent.kaus_units))),
        ("metadata[nexus_rail]", intent.rail.value),
        ("metadata[merchant_id]", intent.payment.merchant_id),
    ]
    if intent.payment.payout is not None:
        form.append(("metadata[nexus_payout_id]", intent.payment.request_id))
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


# --------------------------------------------------------------------------- report

PAGE_LIMIT = 100  # Stripe's maximum page size
_ACCOUNTS_IN_FLIGHT = 8  # connected accounts listed at once (Stripe's rate limit is per platform)


def _list_request(
    base_url: str, path: str, secret_key: str, query: list[tuple[str, str]], account: str | None = None
) -> HttpRequest:
    headers = [("Authorization", f"Bearer {secret_key}")]
    if account is not None:
        headers.append(("Stripe-Account", account))
    return HttpRequest("GET", f"{base_url}{path}?{urlencode(query)}", tuple(headers))


def build_accounts_request(base_url: str, secret_key: str, starting_after: str | None = None) -> HttpRequest:
    query = [("limit", str(PAGE_LIMIT))]
    if starting_after:
        query.append(("starting_after", starting_after))
    return _list_request(base_url, "/v1/accounts", secret_key, query)


def build_balance_transactions_request(
    base_url: str, secret_key: str, account: str, day: date, starting_after: str | None = None
) -> HttpRequest:
    start, end = day_window(day)
    query = [
        ("type", "payout"),
        ("created[gte]", str(int(start.timestamp()))),
        ("created[lt]", str(int(end.timestamp()))),
        ("limit", str(PAGE_LIMIT)),
        ("expand[]", "data.source"),
    ]
    if starting_after:
        query.append(("starting_after", starting_after))
    return _list_request(base_url, "/v1/balance_transactions", secret_key, query, account)


def list_page(body: Any) -> tuple[list[dict[str, Any]], bool]:
    """(data, has_more) of a Stripe list object."""
    if not isinstance(body, dict) or body.get("object") != "list" or not isinstance(body.get("data"), list):
        raise ValueError("not a Stripe list object")
    return body["data"], bool(body.get("has_more"))


def balance_transaction_line(txn: dict[str, Any], account: str) -> StatementLine:
    """A payout's balance transaction as a statement line (amounts positive, Stripe's minor units)."""
    source = txn["source"]
    payout = source if isinstance(source, dict) else {"id": source, "metadata": {}}
    rate = txn.get("exchange_rate")
    return StatementLine(
        provider_reference=str(payout["id"]),
        our_reference=(payout.get("metadata") or {}).get("nexus_tx_id") or None,
        amount_minor=-int(txn["amount"]),
        fee_minor=int(txn["fee"]),
        currency=Currency(str(txn["currency"]).upper()),
        fx_rate=None if rate is None else Decimal(str(rate)),
        value_date=datetime.fromtimestamp(int(txn["available_on"]), UTC).date(),
        created_at=datetime.fromtimestamp(int(txn["created"]), UTC),
        counterparty=account,
    )


class StripeReports(HttpAdapter):
    """Stripe's side of ``settlements(day)`` (see the module doc)."""

    async def settlements(self, day: date) -> list[StatementLine]:
        accounts = await self._accounts()
        gate = asyncio.Semaphore(_ACCOUNTS_IN_FLIGHT)

        async def one(account: str) -> list[StatementLine]:
            async with gate:
                return await self._account_day(account, day)

        per_account = await asyncio.gather(*(one(a) for a in accounts))
        return [line for lines in per_account for line in lines]

    async def _pages(self, build: Callable[[str | None], HttpRequest], what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            body = await self.fetch_json(build(after), what)
            data, more = report_field(self.provider, what, list_page, body)
            items.extend(data)
            if not more or not data:
                return items
            after = str(report_field(self.provider, what, itemgetter("id"), data[-1]))
        raise ReportError(f"{self.provider} {what}: still has_more after {MAX_PAGES} pages")

    async def _accounts(self) -> list[str]:
        key = self.settings.stripe_secret_key.get_secret_value()
        found = await self._pages(lambda after: build_accounts_request(self.base_url, key, after), "accounts list")
        return [str(a["id"]) for a in found]

    async def _account_day(self, account: str, day: date) -> list[StatementLine]:
        key = self.settings.stripe_secret_key.get_secret_value()
        what = f"balance transactions of {account}"
        txns = await self._pages(
            lambda after: build_balance_transactions_request(self.base_url, key, account, day, after), what
        )
        payouts = [t for t in txns if t.get("type") == "payout"]
        return [report_field(self.provider, what, balance_transaction_line, t, account) for t in payouts]


class StripeAdapter(StripeReports, ReplayingAdapter):
    """Replaying under the same Idempotency-Key returns the stored outcome (or executes it if Stripe never
    received the original): never a second payout."""

    provider = Provider.STRIPE
    parse = staticmethod(parse_payout_response)

    def build(self, intent: PayoutIntent) -> HttpRequest:
        acct = destination_of(intent, self.merchants)
        return build_payout_request(
            intent,
            self.base_url,
            self.settings.stripe_secret_key.get_secret_value(),
            acct.stripe_account,
            acct.stripe_destination,
        )
