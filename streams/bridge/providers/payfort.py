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

Docs: https://paymentservices.amazon.com/docs/developer-resources/signature (signature),
https://paymentservices.amazon.com/docs/api/managing-payments/check-status (Check Status),
https://paymentservices.amazon.com/docs/developer-resources/error-codes and
https://docs.payfort.com/docs/api/build/index.html#messages (the status and message code tables),
https://docs.payfort.com/docs/in-common/build/index.html (paymentApi URLs, the PASS/SHA-256 worked example).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.rails import Provider
from streams.bridge.providers.base import HttpAdapter, HttpRequest, HttpResponse, classify_status, dumps

CHECK_STATUS = "CHECK_STATUS"
# Statuses under which an order exists and is not failed: success, pending, on hold, in review.
_ACCEPTED = {"14", "19", "20", "40"}
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


def signature(params: Mapping[str, Any], phrase: str) -> str:
    """APS's SHA-256 signature: every parameter but ``signature``, sorted by name, ``k=v`` joined, phrase-wrapped."""
    text = "".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
    return hashlib.sha256(f"{phrase}{text}{phrase}".encode()).hexdigest()


def verify(params: Mapping[str, Any], phrase: str) -> bool:
    given = params.get("signature")
    return isinstance(given, str) and hmac.compare_digest(given.lower(), signature(params, phrase))


def merchant_reference(key: str) -> str:
    # At most 40 characters of letters, digits and - _ . ; keep ours when it fits, else a stable digest of it.
    return key if re.fullmatch(r"[A-Za-z0-9._-]{1,40}", key) else "NX" + hashlib.sha256(key.encode()).hexdigest()[:38]


def _request(url: str, params: dict[str, str], phrase: str) -> HttpRequest:
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
