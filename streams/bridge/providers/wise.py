"""Wise (cross-border fallback rail): quote → transfer → fund from balance, with signed SCA approval.

Wise's payout flow is three calls, all with ``Authorization: Bearer <API token>``:

1. ``POST /v3/profiles/{profileId}/quotes`` ``{"sourceCurrency", "targetCurrency", "targetAmount",
   "payOut": "BANK_TRANSFER", "targetAccount"}`` → ``{"id": <quote uuid>, ...}``. The platform holds a
   balance in each payout currency, so source = target currency (no conversion at Wise).
2. ``POST /v1/transfers`` ``{"targetAccount", "quoteUuid", "customerTransactionId", "details":
   {"reference", ...}}``. ``customerTransactionId`` is Wise's idempotency field and must be a UUID: we
   send the UUIDv5 of the bridge tx id, so a repeat returns the *same* transfer (no second transfer).
3. ``POST /v3/profiles/{profileId}/transfers/{transferId}/payments`` ``{"type": "BALANCE"}`` — the call
   that moves money. It is protected by strong customer authentication: Wise answers ``403`` with a
   one-time token in ``x-2fa-approval``; the client signs it and repeats the call with headers
   ``x-2fa-approval: <token>`` and ``X-Signature: <signature>``. Wise signs with an RSA key registered
   for the profile (SHA256withRSA); the spec's gateway table lists Wise as **HMAC**, so here the
   signature is ``base64(HMAC-SHA256(signing key, one-time token))`` — swap :func:`sign_sca_token` for an
   RSA signer to talk to production. → ``{"type": "BALANCE", "status": "COMPLETED"|"REJECTED",
   "errorCode"}``.

A transfer that already left ``incoming_payment_waiting`` was funded before (a replay after a lost
answer), so it is reported as paid without funding it again. Errors: ``{"errors": [{"code",
"message", "path"}]}`` (or OAuth-style ``{"error", "error_description"}``). ``lookup`` replays the flow:
the quote is new, the transfer is found by ``customerTransactionId`` and funding is skipped if done.

Report (``settlements(day)``): the profile's balances, ``GET /v4/profiles/{profileId}/balances?types=STANDARD``
(one per currency), then each balance's statement ``GET /v1/profiles/{profileId}/balance-statements/{balanceId}/
statement.json?currency=<ccy>&intervalStart=<UTC ISO>&intervalEnd=<UTC ISO>&type=COMPACT`` — the whole interval
in one answer, no paging. Statements are SCA-protected like funding: a 403 with ``x-2fa-approval`` is answered
by signing the one-time token. A payout is a ``DEBIT`` whose ``details.type`` is ``TRANSFER``: ``amount`` is
the total debited (negative, fees included), ``totalFees`` the fee, ``exchangeDetails.rate`` the rate when Wise
converted, ``referenceNumber`` ``TRANSFER-<transfer id>`` (the id is the bridge's reference) and
``details.paymentReference`` the reference the transfer carried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency, Money
from domain.rails import Provider
from domain.statements import StatementLine, booked_on, day_window
from streams.bridge.providers.base import (
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    InvalidPayoutAccount,
    classify_status,
    destination_of,
    dumps,
    invalid_destination,
    json_number,
    report_field,
    report_json,
    uuid_for_key,
)

_WAITING = "incoming_payment_waiting"
_DEAD = {"cancelled", "funds_refunded", "bounced_back", "charged_back"}
_RAIL_LEVEL = {"transfer.insufficient_funds", "balance.insufficient", "UNAUTHORIZED", "invalid_token"}


def sign_sca_token(signing_key: str, one_time_token: str) -> str:
    return base64.b64encode(hmac.new(signing_key.encode(), one_time_token.encode(), hashlib.sha256).digest()).decode()


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"))


def build_quote_request(
    intent: PayoutIntent, base_url: str, token: str, profile_id: int, recipient: int
) -> HttpRequest:
    amount = Money(intent.amount_minor, intent.currency).to_decimal()
    body = {
        "sourceCurrency": intent.currency.value,
        "targetCurrency": intent.currency.value,
        "targetAmount": json_number(amount),
        "payOut": "BANK_TRANSFER",
        "targetAccount": recipient,
    }
    return HttpRequest("POST", f"{base_url}/v3/profiles/{profile_id}/quotes", _auth(token), dumps(body))


def transfer_reference(intent: PayoutIntent) -> str:
    # Wise limits references (10 characters on some routes); a digest of our id is stable and short.
    return "NX" + hashlib.sha256(intent.bridge_tx_id.encode()).hexdigest()[:8].upper()


def build_transfer_request(
    intent: PayoutIntent, base_url: str, token: str, recipient: int, quote_id: str
) -> HttpRequest:
    body = {
        "targetAccount": recipient,
        "quoteUuid": quote_id,
        "customerTransactionId": uuid_for_key(intent.idempotency_key),
        "details": {
            "reference": transfer_reference(intent),
            "transferPurpose": "verification.transfers.purpose.pay.bills",
            "sourceOfFunds": "verification.source.of.funds.other",
        },
    }
    return HttpRequest("POST", f"{base_url}/v1/transfers", _auth(token), dumps(body))


def build_fund_request(
    base_url: str, token: str, profile_id: int, transfer_id: int, sca: tuple[str, str] | None = None
) -> HttpRequest:
    headers = _auth(token)
    if sca is not None:
        headers = (*headers, ("x-2fa-approval", sca[0]), ("X-Signature", sca[1]))
    return HttpRequest(
        "POST",
        f"{base_url}/v3/profiles/{profile_id}/transfers/{transfer_id}/payments",
        headers,
        dumps({"type": "BALANCE"}),
    )


def parse_error(resp: HttpResponse) -> PayoutOutcome:
    body = resp.json_or_none()
    code, message = f"HTTP_{resp.status}", None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code") or code)
            message = errors[0].get("message")
        elif body.get("error"):
            code, message = str(body["error"]), body.get("error_description")
    kind = classify_status(resp.status) or PayoutStatus.DECLINED
    if code in _RAIL_LEVEL:
        kind = PayoutStatus.UNAVAILABLE
    return PayoutOutcome(kind, http_status=resp.status, error_code=code, error_message=message)


def parse_fund_response(resp: HttpResponse, transfer_id: int) -> PayoutOutcome:
    if classify_status(resp.status) is not None:
        return parse_error(resp)
    body = resp.json_or_none()
    if not isinstance(body, dict) or "status" not in body:
        return HttpAdapter.unparseable(resp, "Wise payment")
    if body["status"] == "COMPLETED":
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=str(transfer_id), http_status=resp.status)
    code = str(body.get("errorCode") or f"payment_{body['status']}")
    kind = PayoutStatus.UNAVAILABLE if code in _RAIL_LEVEL else PayoutStatus.DECLINED
    return PayoutOutcome(kind, provider_reference=str(transfer_id), http_status=resp.status, error_code=code)


# --------------------------------------------------------------------------- report

TRANSFER_PREFIX = "TRANSFER-"


def build_balances_request(base_url: str, token: str, profile_id: int) -> HttpRequest:
    return HttpRequest(
        "GET", f"{base_url}/v4/profiles/{profile_id}/balances?types=STANDARD", (("Authorization", f"Bearer {token}"),)
    )


def _iso_z(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def build_statement_request(
    base_url: str,
    token: str,
    profile_id: int,
    balance_id: int,
    currency: str,
    day: date,
    sca: tuple[str, str] | None = None,
) -> HttpRequest:
    start, end = day_window(day)
    query = urlencode(
        [("currency", currency), ("intervalStart", _iso_z(start)), ("intervalEnd", _iso_z(end)), ("type", "COMPACT")]
    )
    headers: tuple[tuple[str, str], ...] = (("Authorization", f"Bearer {token}"),)
    if sca is not None:
        headers = (*headers, ("x-2fa-approval", sca[0]), ("X-Signature", sca[1]))
    path = f"/v1/profiles/{profile_id}/balance-statements/{balance_id}/statement.json"
    return HttpRequest("GET", f"{base_url}{path}?{query}", headers)


def statement_lines(statement: dict[str, Any]) -> list[StatementLine]:
    """The transfers (payouts) of one Wise balance statement as statement lines."""
    out = []
    for tx in statement.get("transactions") or []:
        details = tx.get("details") or {}
        if tx.get("type") != "DEBIT" or details.get("type") != "TRANSFER":
            continue
        currency = Currency(tx["amount"]["currency"])
        fee = Money.from_decimal(Decimal(str(tx["totalFees"]["value"])), currency).minor_units
        total = Money.from_decimal(abs(Decimal(str(tx["amount"]["value"]))), currency).minor_units
        fx = tx.get("exchangeDetails")
        created = datetime.fromisoformat(str(tx["date"]).replace("Z", "+00:00")).astimezone(UTC)
        reference = str(tx["referenceNumber"])
        out.append(
            StatementLine(
                provider_reference=reference.removeprefix(TRANSFER_PREFIX),
                our_reference=details.get("paymentReference") or None,
                amount_minor=total - fee,
                fee_minor=fee,
                currency=currency,
                fx_rate=Decimal(str(fx["rate"])) if fx else None,
                value_date=date.fromisoformat(tx.get("valueDate") or created.date().isoformat()),
                created_at=created,
                counterparty=(details.get("recipient") or {}).get("bankAccount") or None,
            )
        )
    return out


def _balances(body: Any) -> list[tuple[int, str]]:
    return [(int(b["id"]), str(b["currency"])) for b in body]


class WiseAdapter(HttpAdapter):
    provider = Provider.WISE

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        s = self.settings
        token = s.wise_api_token.get_secret_value()
        try:
            recipient = destination_of(intent, self.merchants).wise_recipient_id
        except InvalidPayoutAccount as exc:
            return invalid_destination(exc)  # e.g. not digits: nothing is sent

        resp = await self.send(build_quote_request(intent, self.base_url, token, s.wise_profile_id, recipient))
        if isinstance(resp, PayoutOutcome):
            # Nothing that moves money has happened yet: a lost quote is a definite failure.
            return PayoutOutcome(
                PayoutStatus.UNAVAILABLE,
                error_code="QUOTE_" + (resp.error_code or ""),
                error_message=resp.error_message,
            )
        if resp.status not in (200, 201):
            out = parse_error(resp)
            # Same reasoning: a failed quote never moves money.
            return (
                out
                if out.status is not PayoutStatus.TIMEOUT
                else PayoutOutcome(PayoutStatus.UNAVAILABLE, http_status=out.http_status, error_code=out.error_code)
            )
        quote = resp.json_or_none()
        if not isinstance(quote, dict) or not quote.get("id"):
            return PayoutOutcome(PayoutStatus.UNAVAILABLE, http_status=resp.status, error_code="QUOTE_UNPARSEABLE")

        resp = await self.send(build_transfer_request(intent, self.base_url, token, recipient, str(quote["id"])))
        if isinstance(resp, PayoutOutcome):
            return resp  # an unfunded transfer moves no money, but its existence is unknown: resolve later
        if resp.status not in (200, 201):
            return parse_error(resp)
        transfer = resp.json_or_none()
        if not isinstance(transfer, dict) or not transfer.get("id"):
            return HttpAdapter.unparseable(resp, "Wise transfer")
        transfer_id = int(transfer["id"])
        status = str(transfer.get("status", ""))
        if status in _DEAD:
            return PayoutOutcome(
                PayoutStatus.DECLINED,
                provider_reference=str(transfer_id),
                http_status=resp.status,
                error_code=f"transfer_{status}",
            )
        if status != _WAITING:
            return PayoutOutcome(
                PayoutStatus.PAID, provider_reference=str(transfer_id), http_status=resp.status, replayed=True
            )  # funded by an earlier attempt

        resp = await self.send(build_fund_request(self.base_url, token, s.wise_profile_id, transfer_id))
        if isinstance(resp, PayoutOutcome):
            return resp
        ott = resp.headers.get("x-2fa-approval")
        if resp.status == 403 and ott:
            signature = sign_sca_token(s.wise_signing_key.get_secret_value(), ott)
            resp = await self.send(
                build_fund_request(self.base_url, token, s.wise_profile_id, transfer_id, (ott, signature))
            )
            if isinstance(resp, PayoutOutcome):
                return resp
        return parse_fund_response(resp, transfer_id)

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        # The transfer is found again by customerTransactionId; funding is skipped when already done.
        return await self.payout(intent)

    async def settlements(self, day: date) -> list[StatementLine]:
        s = self.settings
        token = s.wise_api_token.get_secret_value()
        body = await self.fetch_json(build_balances_request(self.base_url, token, s.wise_profile_id), "balances")
        lines: list[StatementLine] = []
        for balance_id, currency in report_field(self.provider, "balances", _balances, body):
            statement = await self._statement(token, balance_id, currency, day)
            found = report_field(self.provider, f"{currency} statement", statement_lines, statement)
            lines.extend(ln for ln in found if booked_on(ln, day))
        return lines

    async def _statement(self, token: str, balance_id: int, currency: str, day: date) -> Any:
        s = self.settings
        what = f"{currency} balance statement"
        req = build_statement_request(self.base_url, token, s.wise_profile_id, balance_id, currency, day)
        resp = await self.fetch(req, what)
        ott = resp.headers.get("x-2fa-approval")
        if resp.status == 403 and ott:
            signed = (ott, sign_sca_token(s.wise_signing_key.get_secret_value(), ott))
            req = build_statement_request(self.base_url, token, s.wise_profile_id, balance_id, currency, day, signed)
            resp = await self.fetch(req, what)
        return report_json(self.provider, resp, what)
