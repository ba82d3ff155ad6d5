"""PayFort / Amazon Payment Services (AED rail): the server-to-server JSON API, ``POST /FortAPI/paymentApi``.

Every request is one flat JSON object of strings: ``access_code``, ``merchant_identifier``,
``merchant_reference`` (≤ 40 of ``A-Za-z0-9 - _ .``: the bridge tx id), ``language`` and ``signature`` =
hex SHA-256 of ``<SHA request phrase><k1>=<v1><k2>=<v2>...<SHA request phrase>`` over every other parameter
sorted by name. Answers echo the request and add ``response_code`` (5 digits: a 2-digit status such as 14
"Purchase Success", 15 "Uncertain Transaction", 00 "Invalid Request", and a 3-digit message such as 000
"Success", 007 "Duplicate order number", 008 "Signature mismatch"), ``response_message``, ``status`` and
``fort_id``, signed the same way with the SHA *response* phrase; an unsigned or forged success is not
evidence of a payout.

* Pay: ``command`` = ``payfort_payout_command`` with ``amount`` in minor units (the currency's ISO decimals:
  AED 150.00 → ``"15000"``), ``currency``, ``token_name`` (the merchant's payout instrument, tokenised at
  onboarding) and ``order_description``. APS's public reference documents collection and maintenance
  commands (PURCHASE, AUTHORIZATION, CAPTURE, REFUND, VOID_AUTHORIZATION) and no credit-push payout, so the
  command name is a setting, to be confirmed with APS for the account (the fee in ``domain.rails`` is a
  placeholder for the same reason). Everything else is the documented envelope.
* Idempotency: APS refuses a ``merchant_reference`` it has seen (007 / 047 / 066); the adapter then asks
  Check Status and reports that order, so a re-send never pays twice.
* Look up: ``query_command=CHECK_STATUS`` by ``merchant_reference`` (read-only) → status 12 with
  ``transaction_status`` / ``transaction_code`` of the order's last operation, or 036 "Order not found".

Report (``settlements(day)``): APS's Reporting API, ``POST /FortAPI/reportingApi`` (``payfort_reporting_url``), in
two steps under one ``merchant_reference``: ``query_command=GENERATE_REPORT`` with ``from_date`` / ``to_date``
(ISO 8601 with offset) and ``columns`` (the fields wanted; at most 200,000 transactions per report), then the
download of that report by the same reference. Both are signed like payment calls; an array parameter enters the
signature text as Java writes it (``[a, b]``, a row ``{k=v, ...}``), which APS's reference does not spell out.
What the public page leaves open is ours to confirm with APS: the download command's name (``DOWNLOAD_REPORT``),
where the rows come back (``report_data``), the answer while the report is being built (status 19, polled), and
the column names beyond ``fort_id``, ``amount``, ``currency`` and ``status`` (``merchant_reference``, ``command``,
``transaction_date``, ``total_fees``). Rows of the payout command with an accepted status are the day's payouts.

Docs: https://paymentservices.amazon.com/docs/developer-resources/signature (signature),
https://paymentservices.amazon.com/docs/api/managing-payments/reporting (Reporting API),
https://paymentservices.amazon.com/docs/api/managing-payments/check-status (Check Status),
https://paymentservices.amazon.com/docs/developer-resources/error-codes and
https://docs.payfort.com/docs/api/build/index.html#messages (the status and message code tables),
https://docs.payfort.com/docs/in-common/build/index.html (paymentApi URLs, the PASS/SHA-256 worked example).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from typing import Any

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency
from domain.rails import Provider
from domain.statements import StatementLine, booked_on, day_window
from streams.bridge.providers.base import (
    HttpAdapter,
    HttpRequest,
    HttpResponse,
    ReportError,
    classify_status,
    dumps,
    report_field,
)

CHECK_STATUS = "CHECK_STATUS"
# Statuses under which an order exists and is not failed: success, pending, on hold, in review.
_ACCEPTED = {"14", "19", "20", "40"}
ACCEPTED_STATUSES = frozenset(_ACCEPTED)
_UNCERTAIN_STATUS = {"15"}
# Messages about our account or credentials (every payout on the rail would fail alike), by message code:
# option not available to the account, invalid command, signature mismatch, invalid merchant identifier or
# access code, inactive option or account, insufficient funds (for a payout: our balance).
_RAIL_LEVEL = {"003", "004", "008", "009", "010", "014", "015", "029"}
# Outcome unknown: technical problem/error, processed without confirmation, still processing, request dropped.
_UNKNOWN = {"006", "051", "777", "784", "119"}
_DUPLICATE = {"007", "047", "066"}  # duplicate order number, order already processed, reference already exists
_NOT_FOUND = {"036"}  # order not found (Check Status)
_ANSWERED = (PayoutStatus.PAID, PayoutStatus.DECLINED)


def _signed_text(value: Any) -> str:
    """A parameter's text in the signature: strings as they are, arrays and rows as Java prints them."""
    if isinstance(value, list):
        return "[" + ", ".join(_signed_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_signed_text(value[k])}" for k in sorted(value)) + "}"
    return str(value)


def signature(params: Mapping[str, Any], phrase: str) -> str:
    """APS's SHA-256 signature: every parameter but ``signature``, sorted by name, ``k=v`` joined, phrase-wrapped."""
    text = "".join(f"{k}={_signed_text(params[k])}" for k in sorted(params) if k != "signature")
    return hashlib.sha256(f"{phrase}{text}{phrase}".encode()).hexdigest()


def verify(params: Mapping[str, Any], phrase: str) -> bool:
    given = params.get("signature")
    return isinstance(given, str) and hmac.compare_digest(given.lower(), signature(params, phrase))


def merchant_reference(key: str) -> str:
    # At most 40 characters of letters, digits and - _ . ; keep ours when it fits, else a stable digest of it.
    return key if re.fullmatch(r"[A-Za-z0-9._-]{1,40}", key) else "NX" + hashlib.sha256(key.encode()).hexdigest()[:38]


def _request(url: str, params: dict[str, Any], phrase: str) -> HttpRequest:
    params["signature"] = signature(params, phrase)
    return HttpRequest("POST", url, (("Content-Type", "application/json"),), dumps(params))


def build_payout_request(
    intent: PayoutIntent,
    url: str,
    access_code: str,
    merchant_identifier: str,
    request_phrase: str,
    token_name: str,
    command: str,
) -> HttpRequest:
    params = {
        "command": command,
        "access_code": access_code,
        "merchant_identifier": merchant_identifier,
        "merchant_reference": merchant_reference(intent.idempotency_key),
        "amount": str(intent.amount_minor),  # minor units already: the currency's ISO decimals
        "currency": intent.currency.value,
        "language": "en",
        "token_name": token_name,
        "order_description": f"NEXUS-X settlement {intent.bridge_tx_id}"[:150],
    }
    return _request(url, params, request_phrase)


def build_check_status_request(
    key: str, url: str, access_code: str, merchant_identifier: str, request_phrase: str
) -> HttpRequest:
    params = {
        "query_command": CHECK_STATUS,
        "access_code": access_code,
        "merchant_identifier": merchant_identifier,
        "merchant_reference": merchant_reference(key),
        "language": "en",
    }
    return _request(url, params, request_phrase)


def _codes(params: Mapping[str, Any], code_field: str, status_field: str) -> tuple[str, str, str]:
    code = str(params.get(code_field) or "")
    status = str(params.get(status_field) or code[:2])
    return code, status, code[2:]


def classify(params: Mapping[str, Any], http_status: int, lookup: bool = False) -> PayoutOutcome:
    """What a (verified) answer says about the order; for Check Status, about the order's last operation."""
    code, status, message = _codes(params, "response_code", "status")
    text = params.get("response_message")
    if lookup and status == "12":  # the query succeeded: the order's own state is in the transaction_* fields
        code, status, message = _codes(params, "transaction_code", "transaction_status")
        text = params.get("transaction_message")
    reference = str(params.get("fort_id") or "") or None
    if status in _ACCEPTED:
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=reference, http_status=http_status)
    if lookup and message in _NOT_FOUND:
        kind = PayoutStatus.NOT_FOUND
    elif status in _UNCERTAIN_STATUS or message in _UNKNOWN or message in _DUPLICATE:
        kind = PayoutStatus.TIMEOUT  # exists or may exist: resolved by Check Status
    elif message in _RAIL_LEVEL:
        kind = PayoutStatus.UNAVAILABLE
    else:
        kind = PayoutStatus.DECLINED
    return PayoutOutcome(
        kind, provider_reference=reference, http_status=http_status, error_code=code or None, error_message=text
    )


def parse_response(resp: HttpResponse, response_phrase: str, lookup: bool = False) -> PayoutOutcome:
    kind = classify_status(resp.status)
    if kind is not None:
        return PayoutOutcome(kind, http_status=resp.status, error_code=f"HTTP_{resp.status}")
    params = resp.json_or_none()
    if not isinstance(params, dict) or not params.get("response_code"):
        return HttpAdapter.unparseable(resp, "PayFort answer")
    outcome = classify(params, resp.status, lookup)
    if outcome.status is PayoutStatus.PAID and not verify(params, response_phrase):
        # An unsigned or forged success is not evidence of a payout; treat the outcome as unknown.
        return PayoutOutcome(PayoutStatus.TIMEOUT, http_status=resp.status, error_code="INVALID_RESPONSE_SIGNATURE")
    return outcome


def is_duplicate(outcome: PayoutOutcome) -> bool:
    return (outcome.error_code or "")[2:] in _DUPLICATE


# --------------------------------------------------------------------------- report

GENERATE_REPORT = "GENERATE_REPORT"
DOWNLOAD_REPORT = "DOWNLOAD_REPORT"
REPORT_COLUMNS = [
    "fort_id",
    "merchant_reference",
    "command",
    "amount",
    "currency",
    "status",
    "transaction_date",
    "total_fees",
]
REPORT_PENDING = "19"
_REPORT_OK = "12"
REPORT_POLLS = 30
REPORT_POLL_S = 1.0


def report_reference(day: date) -> str:
    """A fresh merchant_reference per report request (APS wants it unique per merchant)."""
    return f"NXRPT-{day:%Y%m%d}-{secrets.token_hex(6)}"


def build_generate_report_request(
    url: str, access_code: str, merchant_identifier: str, request_phrase: str, reference: str, day: date
) -> HttpRequest:
    start, end = day_window(day)
    params: dict[str, Any] = {
        "query_command": GENERATE_REPORT,
        "access_code": access_code,
        "merchant_identifier": merchant_identifier,
        "merchant_reference": reference,
        "from_date": start.isoformat(timespec="seconds"),
        "to_date": (end - timedelta(seconds=1)).isoformat(timespec="seconds"),
        "columns": list(REPORT_COLUMNS),
        "language": "en",
    }
    return _request(url, params, request_phrase)


def build_download_report_request(
    url: str, access_code: str, merchant_identifier: str, request_phrase: str, reference: str
) -> HttpRequest:
    params: dict[str, Any] = {
        "query_command": DOWNLOAD_REPORT,
        "access_code": access_code,
        "merchant_identifier": merchant_identifier,
        "merchant_reference": reference,
        "language": "en",
    }
    return _request(url, params, request_phrase)


def report_row_line(row: Mapping[str, Any]) -> StatementLine:
    """One report row (or a row of the back-office CSV export, same columns) as a statement line."""
    created = datetime.fromisoformat(str(row["transaction_date"])).astimezone(UTC)
    return StatementLine(
        provider_reference=str(row["fort_id"]),
        our_reference=str(row.get("merchant_reference") or "") or None,
        amount_minor=int(row["amount"]),  # minor units, as in payment calls
        fee_minor=int(row.get("total_fees") or 0),
        currency=Currency(str(row["currency"])),
        fx_rate=None,
        value_date=created.date(),
        created_at=created,
        counterparty=None,
    )


def report_lines(rows: list[Mapping[str, Any]], payout_command: str) -> list[StatementLine]:
    """The rows that are payouts APS accepted, as statement lines."""
    return [
        report_row_line(r)
        for r in rows
        if r.get("command") == payout_command and str(r.get("status") or "")[:2] in _ACCEPTED
    ]


def report_answer(params: Any, response_phrase: str, what: str) -> tuple[str, Any]:
    """(status, params) of a verified reporting answer; :class:`ReportError` for a refusal or a bad signature."""
    if not isinstance(params, dict) or not params.get("response_code"):
        raise ReportError(f"PAYFORT {what}: not an APS answer: {str(params)[:200]}")
    if not verify(params, response_phrase):
        raise ReportError(f"PAYFORT {what}: the answer's signature does not verify")
    status = str(params.get("status") or str(params["response_code"])[:2])
    if status not in (_REPORT_OK, REPORT_PENDING):
        raise ReportError(f"PAYFORT {what}: {params['response_code']} {params.get('response_message')}")
    return status, params


class PayFortAdapter(HttpAdapter):
    provider = Provider.PAYFORT

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        s = self.settings
        token = self.merchants.account(intent.payment.merchant_id).payfort_token_name
        req = build_payout_request(
            intent,
            self.base_url,
            s.payfort_access_code,
            s.payfort_merchant_identifier,
            s.payfort_sha_request_phrase.get_secret_value(),
            token,
            s.payfort_payout_command,
        )
        resp = await self.send(req)
        if isinstance(resp, PayoutOutcome):
            return resp
        outcome = parse_response(resp, s.payfort_sha_response_phrase.get_secret_value())
        if not is_duplicate(outcome):
            return outcome
        # APS has this merchant_reference already (an earlier send): report that order, never a second one. If
        # Check Status cannot say, the duplicate answer stays TIMEOUT: the order exists, resolved later.
        looked = await self.lookup(intent)
        return replace(looked, replayed=True) if looked.status in _ANSWERED else outcome

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        s = self.settings
        req = build_check_status_request(
            intent.idempotency_key,
            self.base_url,
            s.payfort_access_code,
            s.payfort_merchant_identifier,
            s.payfort_sha_request_phrase.get_secret_value(),
        )
        resp = await self.send(req)
        if isinstance(resp, PayoutOutcome):
            return resp
        return parse_response(resp, s.payfort_sha_response_phrase.get_secret_value(), lookup=True)

    async def settlements(self, day: date) -> list[StatementLine]:
        s = self.settings
        url, phrase = s.payfort_reporting(), s.payfort_sha_request_phrase.get_secret_value()
        answer_phrase = s.payfort_sha_response_phrase.get_secret_value()
        reference = report_reference(day)
        generate = build_generate_report_request(
            url, s.payfort_access_code, s.payfort_merchant_identifier, phrase, reference, day
        )
        body = await self.fetch_json(generate, "generate report")
        report_answer(body, answer_phrase, "generate report")
        download = build_download_report_request(
            url, s.payfort_access_code, s.payfort_merchant_identifier, phrase, reference
        )
        for _ in range(REPORT_POLLS):
            status, params = report_answer(
                await self.fetch_json(download, "download report"), answer_phrase, "download"
            )
            if status != REPORT_PENDING:
                rows = report_field(self.provider, "report", itemgetter("report_data"), params)
                found = report_field(self.provider, "report", report_lines, rows, s.payfort_payout_command)
                return [ln for ln in found if booked_on(ln, day)]
            await asyncio.sleep(REPORT_POLL_S)
        raise ReportError(f"{self.provider} report {reference}: not ready after {REPORT_POLLS} polls")
