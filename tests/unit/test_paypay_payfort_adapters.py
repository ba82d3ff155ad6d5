"""The PayPay and PayFort adapters without a server: request shapes, signatures against the providers' own worked
examples and an independent computation, and what each provider answer means for the bridge."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.bridge import CardPayment, PayoutIntent, PayoutStatus, bridge_tx_id_for
from domain.cashback import PayerTier
from domain.money import Currency
from domain.rails import RAILS, Provider, Rail, Region, fee_minor
from streams.bridge.providers import build_adapters, payfort, paypay
from streams.bridge.providers.base import (
    DerivedMerchantDirectory,
    HttpRequest,
    HttpResponse,
    ProviderSettings,
    TimedOut,
)

LOCKED_AT_MS = 1_790_000_000_123


def intent(rail: Rail, amount_minor: int, currency: Currency, send_no: int = 1) -> PayoutIntent:
    request_id = "card-u-1"
    spec = RAILS[rail]
    tx = bridge_tx_id_for(request_id)
    payment = CardPayment(
        request_id,
        "acct-payer-1",
        "merchant-cafe-9",
        None,
        amount_minor,
        currency,
        spec.region or Region.US,
        PayerTier.GOLD,
        Decimal("0.15"),
        LOCKED_AT_MS,
    )
    return PayoutIntent(
        bridge_tx_id=tx,
        idempotency_key=tx,
        provider_attempt=1,
        send_no=send_no,
        rail=rail,
        provider=spec.provider,
        amount_minor=amount_minor,
        currency=currency,
        fee_minor=fee_minor(spec.provider, amount_minor, currency),
        kaus_units=10**9,
        rate=Decimal("0.15"),
        lock_id=f"{tx}:fx",
        locked_at_ms=LOCKED_AT_MS,
        lock_expires_at_ms=LOCKED_AT_MS + 5_000,
        hold_id=f"{tx}:hold",
        hold_units=10**9,
        tried_providers=(spec.provider,),
        payment=payment,
        created_at_ms=LOCKED_AT_MS,
    )


def response(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())


class ScriptedTransport:
    """Answers each request with the next scripted reply (a response, or an exception to raise); keeps requests."""

    def __init__(self, *replies: HttpResponse | Exception | Callable[[HttpRequest], HttpResponse]) -> None:
        self.replies = list(replies)
        self.requests: list[HttpRequest] = []

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply(request) if callable(reply) else reply

    async def aclose(self) -> None:
        pass


@pytest.fixture
def settings(tmp_path: Path) -> ProviderSettings:
    return ProviderSettings(sim_url="https://sim.test", keys_dir=tmp_path)


def adapter(settings: ProviderSettings, provider: Provider, transport: ScriptedTransport) -> Any:
    return build_adapters(settings, transport, providers=frozenset({provider}))[provider]


# --------------------------------------------------------------------------- PayPay: signing


def test_paypay_hmac_reproduces_paypays_worked_examples() -> None:
    """https://integration.paypay.ne.jp/hc/en-us/articles/11831606311951 (sample_key / sample_secret)."""
    body = (
        b'{\n    "merchantPaymentId": "TEST_QR_Payment",\n    "amount": {\n        "amount":10,\n'
        b'        "currency": "JPY"\n    },\n    "codeType": "ORDER_QR",\n    "isAuthorization":false,\n'
        b'    "redirectUrl":"https://about.paypay.ne.jp/",\n    "redirectType":"WEB_LINK"\n}'
    )
    assert paypay.body_hash("application/json", body) == "T9wzkv1tUWIxzIHQUT7iDQ=="
    posted = paypay.auth_header("sample_key", "sample_secret", "POST", "/v2/codes", body, "fedaa4", 1743138611)
    mac, digest = "C2a7jD7OjL1DXnZhSYQfRI2Oxfdh43htV7pG8cwgCy4=", "T9wzkv1tUWIxzIHQUT7iDQ=="
    assert posted == f"hmac OPA-Auth:sample_key:{mac}:fedaa4:1743138611:{digest}"
    got = paypay.auth_header(
        "sample_key", "sample_secret", "GET", "/v2/payments/TEST_merchantPaymentID", b"", "a360e2", 1743139337
    )
    assert got == "hmac OPA-Auth:sample_key:JbUZwAUKeQ+WDClEjkCGwYG/juFR+Dd5RK5AfL0gK9w=:a360e2:1743139337:empty"


def test_paypay_cashback_request_shape_and_signature() -> None:
    i = intent(Rail.PAYPAY_BUSINESS, 2_300, Currency.JPY)
    req = paypay.build_cashback_request(
        i, "https://api.paypay.ne.jp", "k1", "s3cret", "user-auth-1", "n0nce", 1_790_000_001
    )
    assert (req.method, req.url) == ("POST", "https://api.paypay.ne.jp/v2/cashback")
    assert req.header("Content-Type") == "application/json" and req.header("X-ASSUME-MERCHANT") is None
    assert json.loads(req.body) == {
        "merchantCashbackId": "BRIDGE-card-u-1",
        "userAuthorizationId": "user-auth-1",
        "amount": {"amount": 2_300, "currency": "JPY"},  # whole yen
        "requestedAt": LOCKED_AT_MS // 1000,  # fixed per intent: a re-send is the same request
        "orderDescription": "NEXUS-X settlement BRIDGE-card-u-1",
        "walletType": "PREPAID",
    }
    # computed here from the documented recipe, not with the module's helpers
    digest = base64.b64encode(hashlib.md5(b"application/json" + req.body).digest()).decode()
    signed = f"/v2/cashback\nPOST\nn0nce\n1790000001\napplication/json\n{digest}".encode()
    mac = base64.b64encode(hmac.new(b"s3cret", signed, hashlib.sha256).digest()).decode()
    assert req.header("Authorization") == f"hmac OPA-Auth:k1:{mac}:n0nce:1790000001:{digest}"
    again = paypay.build_cashback_request(i, "https://x", "k1", "s3cret", "user-auth-1", "other", 1_790_000_009, "M1")
    assert again.body == req.body and again.header("X-ASSUME-MERCHANT") == "M1"


def test_paypay_lookup_is_a_get_signed_with_empty_hash() -> None:
    req = paypay.build_lookup_request("BRIDGE-card-u-1", "https://api.paypay.ne.jp", "k1", "s", "n", 1_790_000_001)
    assert (req.method, req.url, req.body) == ("GET", "https://api.paypay.ne.jp/v2/cashback/BRIDGE-card-u-1", b"")
    auth = paypay.parse_auth_header(req.header("Authorization") or "")
    assert auth is not None and auth.hash == "empty" and req.header("Content-Type") is None
    assert auth.mac == paypay.mac("s", "/v2/cashback/BRIDGE-card-u-1", "GET", "n", 1_790_000_001, "empty", "empty")


def test_paypay_ids_longer_than_64_characters_are_digested_stably() -> None:
    long_key = "BRIDGE-" + "x" * 80
    assert paypay.cashback_id(long_key) == paypay.cashback_id(long_key) and len(paypay.cashback_id(long_key)) <= 64
    assert paypay.cashback_id("BRIDGE-card-u-1") == "BRIDGE-card-u-1"
    assert paypay.parse_auth_header("Bearer abc") is None
    assert paypay.parse_auth_header("hmac OPA-Auth:k:m:n:notanumber:h") is None


# --------------------------------------------------------------------------- PayPay: answers


def _info(code: str, data: Any = None) -> dict[str, Any]:
    return {"resultInfo": {"code": code, "message": code.lower(), "codeId": "08100001"}, "data": data}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (202, "REQUEST_ACCEPTED", PayoutStatus.PAID),
        (401, "UNAUTHORIZED", PayoutStatus.UNAVAILABLE),  # our keys: the rail is unusable
        (401, "OP_OUT_OF_SCOPE", PayoutStatus.UNAVAILABLE),
        (401, "INVALID_USER_AUTHORIZATION_ID", PayoutStatus.DECLINED),  # the payee's link, not our keys
        (400, "INVALID_REQUEST_PARAMS", PayoutStatus.DECLINED),
        (429, "RATE_LIMIT", PayoutStatus.UNAVAILABLE),
        (500, "INTERNAL_SERVER_ERROR", PayoutStatus.TIMEOUT),  # may have been accepted
        (200, "SOMETHING_ELSE", PayoutStatus.TIMEOUT),  # a 2xx we cannot read
    ],
)
def test_paypay_cashback_answers(status: int, code: str, expected: PayoutStatus) -> None:
    out = paypay.parse_cashback_response(response(status, _info(code)), "BRIDGE-x")
    assert out.status is expected, out
    if expected is PayoutStatus.PAID:
        assert out.provider_reference == "BRIDGE-x"
    elif status != 200:
        assert out.error_code == code and out.http_status == status


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, _info("SUCCESS", {"status": "SUCCESS", "cashbackId": "1"}), PayoutStatus.PAID),
        (200, _info("SUCCESS", {"status": "ACCEPTED"}), PayoutStatus.PAID),  # accepted, granted asynchronously
        (200, _info("SUCCESS", {"status": "FAILURE"}), PayoutStatus.DECLINED),
        (404, _info("TRANSACTION_NOT_FOUND"), PayoutStatus.NOT_FOUND),
        (400, _info("TRANSACTION_NOT_FOUND"), PayoutStatus.NOT_FOUND),
        (401, _info("UNAUTHORIZED"), PayoutStatus.UNAVAILABLE),
        (503, _info("INTERNAL_SERVER_ERROR"), PayoutStatus.UNAVAILABLE),
    ],
)
def test_paypay_lookup_answers(status: int, body: Any, expected: PayoutStatus) -> None:
    assert paypay.parse_lookup_response(response(status, body), "BRIDGE-x").status is expected


def test_paypay_refused_resend_is_resolved_by_lookup(settings: ProviderSettings) -> None:
    first = intent(Rail.PAYPAY_BUSINESS, 2_300, Currency.JPY)
    resend = replace(first, send_no=2)
    refused = response(400, _info("INVALID_REQUEST_PARAMS"))

    def outcome(i: PayoutIntent, *replies: Any) -> tuple[Any, int]:
        transport = ScriptedTransport(*replies)
        out = asyncio.run(adapter(settings, Provider.PAYPAY, transport).payout(i))
        return out, len(transport.requests)

    # the earlier send was granted: the refusal of the re-send is not a decline
    out, calls = outcome(resend, refused, response(200, _info("SUCCESS", {"status": "SUCCESS"})))
    assert out.status is PayoutStatus.PAID and out.replayed and calls == 2
    # PayPay has none: the refusal stands
    out, _ = outcome(resend, refused, response(404, _info("TRANSACTION_NOT_FOUND")))
    assert out.status is PayoutStatus.DECLINED and out.error_code == "INVALID_REQUEST_PARAMS"
    # the lookup cannot say: unknown, never a decline that would void the hold of a granted payout
    out, _ = outcome(resend, refused, TimedOut("lost"))
    assert out.status is PayoutStatus.TIMEOUT
    # a first send's refusal is a decline at once
    out, calls = outcome(first, refused)
    assert out.status is PayoutStatus.DECLINED and calls == 1


def test_paypay_adapter_signs_each_send_with_a_fresh_nonce(settings: ProviderSettings) -> None:
    accepted = response(202, _info("REQUEST_ACCEPTED"))
    transport = ScriptedTransport(accepted, accepted)
    a = adapter(settings, Provider.PAYPAY, transport)
    i = intent(Rail.PAYPAY_BUSINESS, 2_300, Currency.JPY)
    asyncio.run(a.payout(i))
    asyncio.run(a.payout(replace(i, send_no=2)))
    first, second = (paypay.parse_auth_header(r.header("Authorization") or "") for r in transport.requests)
    assert first is not None and second is not None and first.nonce != second.nonce
    assert transport.requests[0].url == "https://sim.test/v2/cashback"
    user = json.loads(transport.requests[0].body)["userAuthorizationId"]
    assert user == DerivedMerchantDirectory().account("merchant-cafe-9").paypay_user_authorization_id
    uuid.UUID(user)  # the directory's stand-in has PayPay's id shape
    assert settings.paypay_api_secret.get_secret_value() not in repr(transport.requests[0])


# --------------------------------------------------------------------------- PayFort: signing and requests


def test_payfort_signature_reproduces_the_aps_worked_example() -> None:
    """docs.payfort.com "Create Signature Value": phrase PASS, SHA-256."""
    params = {
        "command": "PURCHASE",
        "merchant_reference": "Test010",
        "amount": "1000",
        "access_code": "SILgpo7pWbmzuURp2qri",
        "merchant_identifier": "MxvOupuG",
        "currency": "USD",
        "language": "en",
        "customer_email": "test@gmail.com",
        "signature": "ignored",
    }
    assert payfort.signature(params, "PASS").upper() == (
        "94C38AFC7BDAE0114FC8C740EDF12416F22998241CE4B4EA70D5521233A2C882"
    )


def test_payfort_payout_request_shape_and_signature() -> None:
    i = intent(Rail.PAYFORT, 15_000, Currency.AED)  # AED 150.00
    req = payfort.build_payout_request(i, "https://p/FortAPI/paymentApi", "AC", "MID", "req-phrase", "TOKEN1", "PAYOUT")
    assert (req.method, req.url, req.header("Content-Type")) == (
        "POST",
        "https://p/FortAPI/paymentApi",
        "application/json",
    )
    params = json.loads(req.body)
    assert all(isinstance(v, str) for v in params.values())
    assert params["amount"] == "15000" and params["currency"] == "AED"  # minor units, 2 decimals
    assert params["merchant_reference"] == "BRIDGE-card-u-1" and params["command"] == "PAYOUT"
    assert (params["access_code"], params["merchant_identifier"], params["token_name"]) == ("AC", "MID", "TOKEN1")
    # computed here from the documented recipe
    text = "".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
    assert params["signature"] == hashlib.sha256(f"req-phrase{text}req-phrase".encode()).hexdigest()
    assert payfort.verify(params, "req-phrase") and not payfort.verify({**params, "amount": "15001"}, "req-phrase")


def test_payfort_check_status_request_and_long_references() -> None:
    req = payfort.build_check_status_request("BRIDGE-" + "y" * 60, "https://p", "AC", "MID", "ph")
    params = json.loads(req.body)
    assert params["query_command"] == "CHECK_STATUS" and "command" not in params and "amount" not in params
    assert len(params["merchant_reference"]) == 40 and params["merchant_reference"].startswith("NX")
    assert params["merchant_reference"] == payfort.merchant_reference("BRIDGE-" + "y" * 60)
    assert payfort.verify(params, "ph")


# --------------------------------------------------------------------------- PayFort: answers


def signed(phrase: str = "resp", **params: str) -> dict[str, str]:
    return {**params, "signature": payfort.signature(params, phrase)}


@pytest.mark.parametrize(
    ("params", "lookup", "expected"),
    [
        (signed(response_code="14000", status="14", fort_id="1690"), False, PayoutStatus.PAID),
        (signed(response_code="20064", status="20", fort_id="1690"), False, PayoutStatus.PAID),  # on hold: exists
        (signed(response_code="13044", status="13"), False, PayoutStatus.DECLINED),  # token name does not exist
        (signed(response_code="00005", status="00"), False, PayoutStatus.DECLINED),  # invalid amount
        (signed(response_code="00008", status="00"), False, PayoutStatus.UNAVAILABLE),  # signature mismatch
        (signed(response_code="00010", status="00"), False, PayoutStatus.UNAVAILABLE),  # invalid access code
        (signed(response_code="15000", status="15"), False, PayoutStatus.TIMEOUT),  # uncertain transaction
        (signed(response_code="00006", status="00"), False, PayoutStatus.TIMEOUT),  # technical problem
        (signed(response_code="00007", status="00"), False, PayoutStatus.TIMEOUT),  # duplicate: it exists
        (
            signed(
                response_code="12000", status="12", transaction_status="14", transaction_code="14000", fort_id="1690"
            ),
            True,
            PayoutStatus.PAID,
        ),
        (
            signed(response_code="12000", status="12", transaction_status="13", transaction_code="13044"),
            True,
            PayoutStatus.DECLINED,
        ),
        (signed(response_code="11036", status="11"), True, PayoutStatus.NOT_FOUND),  # order not found
        (
            {"response_code": "14000", "status": "14", "fort_id": "1690", "signature": "0" * 64},
            False,
            PayoutStatus.TIMEOUT,
        ),  # a forged success: not evidence of a payout
    ],
)
def test_payfort_answers(params: dict[str, str], lookup: bool, expected: PayoutStatus) -> None:
    out = payfort.parse_response(response(200, params), "resp", lookup=lookup)
    assert out.status is expected, out
    if expected is PayoutStatus.PAID:
        assert out.provider_reference == "1690"


def test_payfort_http_failures() -> None:
    assert payfort.parse_response(HttpResponse(503, {}, b"Service Unavailable"), "r").status is PayoutStatus.UNAVAILABLE
    assert payfort.parse_response(HttpResponse(502, {}, b"Bad gateway"), "r").status is PayoutStatus.TIMEOUT
    assert payfort.parse_response(HttpResponse(200, {}, b"<html>"), "r").status is PayoutStatus.TIMEOUT


def test_payfort_duplicate_reference_reports_the_existing_order(settings: ProviderSettings) -> None:
    phrase = settings.payfort_sha_response_phrase.get_secret_value()
    duplicate = response(200, signed(phrase, response_code="00007", status="00"))
    found = response(
        200,
        signed(
            phrase,
            response_code="12000",
            status="12",
            transaction_status="14",
            transaction_code="14000",
            fort_id="1690",
        ),
    )

    def outcome(*replies: Any) -> tuple[Any, list[HttpRequest]]:
        transport = ScriptedTransport(*replies)
        out = asyncio.run(
            adapter(settings, Provider.PAYFORT, transport).payout(intent(Rail.PAYFORT, 15_000, Currency.AED))
        )
        return out, transport.requests

    out, requests = outcome(duplicate, found)
    assert out.status is PayoutStatus.PAID and out.replayed and out.provider_reference == "1690"
    assert [json.loads(r.body).get("query_command") for r in requests] == [None, "CHECK_STATUS"]
    assert requests[0].url == "https://sim.test/FortAPI/paymentApi"
    # Check Status cannot answer: the order exists at APS, so the outcome stays unknown (never a failover)
    out, _ = outcome(duplicate, TimedOut("lost"))
    assert out.status is PayoutStatus.TIMEOUT
