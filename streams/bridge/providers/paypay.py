"""PayPay (JPY rail): the Open Payment API's "Give Cashback to User", ``POST /v2/cashback``.

Why this endpoint: OPA has no bank payout, and its payment calls (codes, payments, pending payments
``/v1/requestOrder``, preauth) all *collect* from a PayPay user. Give Cashback is the one call that moves money
from the merchant's (here the platform's) balance into a PayPay account, so a JP merchant is paid into the
PayPay account it linked once at onboarding (account link with scope ``cashback``, which yields its
``userAuthorizationId``), as PayPay balance (``walletType: PREPAID``).

Auth, on every call: ``Authorization: hmac OPA-Auth:<API key>:<mac>:<nonce>:<epoch>:<hash>``, where ``hash``
is base64(MD5(content type + body)) (``empty`` without a body, the content type then also ``empty``) and
``mac`` is base64(HMAC-SHA256(API secret, path \\n method \\n nonce \\n epoch \\n content type \\n hash)). The
epoch must be within 2 minutes of PayPay's clock, so each send is signed afresh.

* Pay: ``{"merchantCashbackId", "userAuthorizationId", "amount": {"amount": <yen>, "currency": "JPY"},
  "requestedAt": <epoch s>, "orderDescription", "walletType": "PREPAID"}`` → ``202`` ``resultInfo.code``
  ``REQUEST_ACCEPTED``: accepted, granted asynchronously. ``merchantCashbackId`` (≤ 64, the bridge tx id) is
  the idempotency key: PayPay's advice for an unknown outcome is to send Give Cashback again with the *same*
  id (a new id risks a second grant). ``requestedAt`` is the rate-lock time, so a re-send is byte-identical.
* Look up: ``GET /v2/cashback/{merchantCashbackId}`` (read-only) → ``data.status`` ACCEPTED / SUCCESS /
  FAILURE; ``TRANSACTION_NOT_FOUND`` when PayPay has none (it can also say so for ~1 s after an accept; a
  re-send under the same id is then still safe).
* Errors: ``{"resultInfo": {"code", "message", "codeId"}, "data": null}`` with the HTTP status; 401
  UNAUTHORIZED / OP_OUT_OF_SCOPE (our keys: rail unusable), but 401 INVALID_USER_AUTHORIZATION_ID is about
  the payee's link (a decline); 400 INVALID_REQUEST_PARAMS; 5xx unknown outcome.

Docs: https://www.paypay.ne.jp/opa/doc/v1.0/cashback (Give Cashback, Check Cashback Details),
https://www.paypay.ne.jp/opa/doc/jp/v1.0/api_authorization.html (HMAC),
https://integration.paypay.ne.jp/hc/en-us/articles/11831606311951 (worked HMAC examples, used in the tests),
https://integration.paypay.ne.jp/hc/en-us/articles/4414063010831 (TRANSACTION_NOT_FOUND: re-send, same id),
https://www.paypay.ne.jp/opa/doc/v1.0/cashback_usage_setting (common response codes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import replace
from typing import Any, NamedTuple

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.money import Currency
from domain.rails import Provider
from streams.bridge.providers.base import HttpAdapter, HttpRequest, HttpResponse, classify_status, dumps

AUTH_TYPE = "hmac OPA-Auth"
CONTENT_TYPE = "application/json"
CASHBACK_PATH = "/v2/cashback"
EPOCH_SKEW_S = 120  # PayPay refuses an epoch 2 minutes or more away from its clock
_ACCEPTED = {"ACCEPTED", "SUCCESS"}
_NOT_FOUND = {"TRANSACTION_NOT_FOUND", "RESOURCE_NOT_FOUND"}
_PAYEE = {"INVALID_USER_AUTHORIZATION_ID"}  # a 401 about the merchant's linked account, not our keys


# --------------------------------------------------------------------------- signing


def body_hash(content_type: str, body: bytes) -> str:
    if not body:
        return "empty"
    return base64.b64encode(hashlib.md5(content_type.encode() + body, usedforsecurity=False).digest()).decode()


def mac(secret: str, path: str, method: str, nonce: str, epoch: int, content_type: str, digest: str) -> str:
    data = "\n".join((path, method, nonce, str(epoch), content_type, digest))
    return base64.b64encode(hmac.new(secret.encode(), data.encode(), hashlib.sha256).digest()).decode()


def auth_header(api_key: str, secret: str, method: str, path: str, body: bytes, nonce: str, epoch: int) -> str:
    content_type = CONTENT_TYPE if body else "empty"
    digest = body_hash(content_type, body)
    signature = mac(secret, path, method, nonce, epoch, content_type, digest)
    return f"{AUTH_TYPE}:{api_key}:{signature}:{nonce}:{epoch}:{digest}"


class OpaAuth(NamedTuple):
    api_key: str
    mac: str
    nonce: str
    epoch: int
    hash: str


def parse_auth_header(value: str) -> OpaAuth | None:
    """The fields of an OPA-Auth header (what PayPay, and the simulator, verify), or None if malformed."""
    prefix = AUTH_TYPE + ":"
    parts = value.removeprefix(prefix).split(":") if value.startswith(prefix) else []
    if len(parts) != 5 or not parts[3].isdigit():
        return None
    return OpaAuth(parts[0], parts[1], parts[2], int(parts[3]), parts[4])


def cashback_id(key: str) -> str:
    # merchantCashbackId: at most 64 characters; keep ours when it fits, else a stable digest of it.
    return key if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key) else "NX" + hashlib.sha256(key.encode()).hexdigest()[:40]


# --------------------------------------------------------------------------- requests


def _headers(authorization: str, assume_merchant: str, body: bytes) -> tuple[tuple[str, str], ...]:
    headers: tuple[tuple[str, str], ...] = (("Authorization", authorization),)
    if body:
        headers += (("Content-Type", CONTENT_TYPE),)
    return headers + ((("X-ASSUME-MERCHANT", assume_merchant),) if assume_merchant else ())


def cashback_body(intent: PayoutIntent, user_authorization_id: str) -> dict[str, Any]:
    assert intent.currency is Currency.JPY, "PayPay pays JPY only"
    return {
        "merchantCashbackId": cashback_id(intent.idempotency_key),
        "userAuthorizationId": user_authorization_id,
        "amount": {"amount": intent.amount_minor, "currency": "JPY"},
        "requestedAt": intent.locked_at_ms // 1000,
        "orderDescription": f"NEXUS-X settlement {intent.bridge_tx_id}"[:255],
        "walletType": "PREPAID",
    }


def build_cashback_request(
    intent: PayoutIntent,
    base_url: str,
    api_key: str,
    secret: str,
    user_authorization_id: str,
    nonce: str,
    epoch: int,
    assume_merchant: str = "",
) -> HttpRequest:
    body = dumps(cashback_body(intent, user_authorization_id))
    authorization = auth_header(api_key, secret, "POST", CASHBACK_PATH, body, nonce, epoch)
    return HttpRequest("POST", base_url + CASHBACK_PATH, _headers(authorization, assume_merchant, body), body)


def build_lookup_request(
    key: str, base_url: str, api_key: str, secret: str, nonce: str, epoch: int, assume_merchant: str = ""
) -> HttpRequest:
    path = f"{CASHBACK_PATH}/{cashback_id(key)}"
    authorization = auth_header(api_key, secret, "GET", path, b"", nonce, epoch)
    return HttpRequest("GET", base_url + path, _headers(authorization, assume_merchant, b""))


# --------------------------------------------------------------------------- answers


def _result_info(body: Any) -> tuple[str, str | None]:
    info = body.get("resultInfo") if isinstance(body, dict) else None
    info = info if isinstance(info, dict) else {}
    return str(info.get("code") or ""), info.get("message")


def parse_error(resp: HttpResponse, not_found_is_an_answer: bool = False) -> PayoutOutcome:
    code, message = _result_info(resp.json_or_none())
    code = code or f"HTTP_{resp.status}"
    kind = classify_status(resp.status) or PayoutStatus.DECLINED
    if code in _PAYEE:
        kind = PayoutStatus.DECLINED
    elif not_found_is_an_answer and code in _NOT_FOUND:
        kind = PayoutStatus.NOT_FOUND
    return PayoutOutcome(kind, http_status=resp.status, error_code=code, error_message=message)


def parse_cashback_response(resp: HttpResponse, reference: str) -> PayoutOutcome:
    """Give Cashback's answer: accepted under ``reference`` (our merchantCashbackId, PayPay's key for it)."""
    if classify_status(resp.status) is not None:
        return parse_error(resp)
    code, _ = _result_info(resp.json_or_none())
    if code not in ("REQUEST_ACCEPTED", "SUCCESS"):
        return HttpAdapter.unparseable(resp, "PayPay cashback")
    return PayoutOutcome(PayoutStatus.PAID, provider_reference=reference, http_status=resp.status)


def parse_lookup_response(resp: HttpResponse, reference: str) -> PayoutOutcome:
    if classify_status(resp.status) is not None:
        return parse_error(resp, not_found_is_an_answer=True)
    body = resp.json_or_none()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not data.get("status"):
        return HttpAdapter.unparseable(resp, "PayPay cashback details")
    status = str(data["status"])
    if status in _ACCEPTED:
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=reference, http_status=resp.status)
    return PayoutOutcome(
        PayoutStatus.DECLINED, provider_reference=reference, http_status=resp.status, error_code=f"CASHBACK_{status}"
    )


class PayPayAdapter(HttpAdapter):
    provider = Provider.PAYPAY

    def _signing(self) -> tuple[str, str, str, int]:
        """API key, secret, a fresh nonce and the epoch now: each send is signed when it is made."""
        s = self.settings
        return s.paypay_api_key, s.paypay_api_secret.get_secret_value(), secrets.token_hex(4), int(time.time())

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        key, secret, nonce, epoch = self._signing()
        user = self.merchants.account(intent.payment.merchant_id).paypay_user_authorization_id
        assume = self.settings.paypay_assume_merchant
        req = build_cashback_request(intent, self.base_url, key, secret, user, nonce, epoch, assume)
        resp = await self.send(req)
        if isinstance(resp, PayoutOutcome):
            return resp
        outcome = parse_cashback_response(resp, cashback_id(intent.idempotency_key))
        if outcome.status is not PayoutStatus.DECLINED or intent.send_no == 1:
            return outcome
        # A re-send refused: the earlier send may have been granted after all (PayPay documents no duplicate
        # answer), so only a cashback PayPay does not have makes the refusal a decline.
        looked = await self.lookup(intent)
        if looked.status in (PayoutStatus.PAID, PayoutStatus.DECLINED):
            return replace(looked, replayed=True)
        if looked.status is PayoutStatus.NOT_FOUND:
            return outcome
        return replace(outcome, status=PayoutStatus.TIMEOUT)

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        key, secret, nonce, epoch = self._signing()
        assume = self.settings.paypay_assume_merchant
        req = build_lookup_request(intent.idempotency_key, self.base_url, key, secret, nonce, epoch, assume)
        resp = await self.send(req)
        if isinstance(resp, PayoutOutcome):
            return resp
        return parse_lookup_response(resp, cashback_id(intent.idempotency_key))
