"""A local payout-provider simulator: the API subset the bridge adapters speak, with fault injection.

One aiohttp server on 127.0.0.1 answers, on the paths the real services use:

=========  =====================================================================================
PayPal     ``POST /v1/oauth2/token`` (Basic client:secret → bearer), ``POST /v1/payments/payouts``
           (``sender_batch_id`` unique: a repeat is 400 USER_BUSINESS_ERROR + link), ``GET
           /v1/payments/payouts/{batch_id}``
Stripe     ``POST /v1/payouts`` (form; ``Idempotency-Key`` replay with ``Idempotent-Replayed: true``,
           400 ``idempotency_error`` on changed params, 409 while the first is executing),
           ``GET /v1/payouts/{id}``
Wise       ``POST /v3/profiles/{pid}/quotes``, ``POST /v1/transfers`` (``customerTransactionId``
           returns the existing transfer), ``POST /v3/profiles/{pid}/transfers/{id}/payments`` (SCA:
           403 + ``x-2fa-approval`` one-time token; retry signed with ``X-Signature`` =
           base64 HMAC-SHA256 of the token), ``GET /v1/transfers/{id}``
Toss       ``POST /v1/payouts/sub-malls/settlements`` (Basic ``secret:``; ``Idempotency-Key``
           replay), ``GET /v1/payouts/sub-malls/settlements/{payoutKey}``
Alipay     ``POST /gateway.do`` methods ``alipay.fund.trans.uni.transfer`` (``out_biz_no`` unique) and
           ``alipay.fund.trans.common.query``; request RSA2 signatures verified with the app public key,
           responses signed with the simulator's 'Alipay' key
PayPay     ``POST /v2/cashback`` (Give Cashback, 202 REQUEST_ACCEPTED; the same ``merchantCashbackId`` again
           grants nothing more), ``GET /v2/cashback/{merchantCashbackId}`` (TRANSACTION_NOT_FOUND if none);
           the ``hmac OPA-Auth`` header verified (key, epoch within 2 min, body hash, HMAC-SHA256)
PayFort    ``POST /FortAPI/paymentApi``: the payout ``command`` (``payfort_payout_command``; a seen
           ``merchant_reference`` is 00007 Duplicate order number) and ``query_command=CHECK_STATUS``
           (11036 Order not found); SHA-256 request signatures verified, answers signed with the response phrase
=========  =====================================================================================

Credentials are the adapters' defaults (``streams.bridge.providers.base.ProviderSettings``, env
``NEXUS_PROVIDER_*``), so a misconfigured client gets the provider's own 401.

**Fault injection**, per rail or provider name (``STRIPE_INSTANT`` overrides ``STRIPE`` overrides
``*``), applied only to the call that moves money (Stripe/PayPal/Toss/Alipay/PayPay/PayFort create, Wise funding):
``latency_ms`` (+ uniform ``jitter_ms``), ``fail_next`` (next N answer ``fail_status``, default 503:
definitely not executed), ``fail_rate`` (probability per call, seeded), ``decline_next`` (next N get the
provider's business-error 4xx), ``timeout_next`` (next N *are executed*, then the answer hangs for
``hang_ms``: a lost response) and ``drop_next`` (next N hang without being executed: a lost request).
Admin API: ``GET|POST /_admin/config``, ``POST /_admin/reset``, ``GET /_admin/payouts`` (every payout made,
once per idempotency key), ``POST /_admin/statements`` (settlement files, one per provider and day, in
each provider's format via ``warehouse.provider_statements``), ``GET|POST /_admin/report_breaks`` (make a
provider's report wrong about one payout: devtools/provider_sim/reports.py), ``GET /_admin/stats``,
``GET /_admin/health``.

**Reports**: each provider's report API (devtools/provider_sim/report_api.py) and the statement files are served
from the payouts made, with the injected report breaks applied.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web

from devtools.provider_sim import report_api
from devtools.provider_sim.reports import PROVIDER_FILES, BreakError, PayoutRecord, break_value, entries
from domain.money import Currency, Money
from domain.rails import Provider, fee_minor
from streams.bridge.providers.alipay import (
    BILL_URL_QUERY,
    QUERY,
    TRANSFER,
    ensure_dev_keys,
    load_private_key,
    load_public_key,
    response_key,
    rsa2_sign,
    rsa2_verify,
    sign_content,
)
from streams.bridge.providers.base import ProviderSettings, basic_auth, dumps, loads_exact
from streams.bridge.providers.payfort import signature as aps_signature
from streams.bridge.providers.payfort import verify as aps_verify
from streams.bridge.providers.paypay import EPOCH_SKEW_S, body_hash, mac, parse_auth_header
from streams.bridge.providers.wise import sign_sca_token

_KST = timezone(timedelta(hours=9))
_CST = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Injection:
    latency_ms: int = 0
    jitter_ms: int = 0
    fail_next: int = 0
    fail_status: int = 503
    fail_rate: float = 0.0  # a test knob, not money
    decline_next: int = 0
    timeout_next: int = 0
    drop_next: int = 0
    hang_ms: int = 30_000

    @classmethod
    def merged(cls, base: Injection, patch: dict[str, Any]) -> Injection:
        names = {f.name for f in fields(cls)}
        unknown = set(patch) - names
        if unknown:
            raise ValueError(f"unknown injection field(s) {sorted(unknown)}; known: {sorted(names)}")
        return replace(base, **patch)


@dataclass
class Stored:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _ref(prefix: str, *parts: str, n: int = 24, upper: bool = False) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
    alnum = digest[:n].upper() if upper else digest[:n]
    return prefix + alnum


def _form(raw: str) -> dict[str, str]:
    """Form body → dict (what parse_qsl gives), decoding only the parts that need it (the hot path)."""
    out = {}
    for part in raw.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        out[unquote_plus(k) if "%" in k or "+" in k else k] = unquote_plus(v) if "%" in v or "+" in v else v
    return out


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type="application/json", headers=headers)


_Check = Callable[["ProviderSim", web.Request], "web.Response | None"]
_Handler = Callable[["ProviderSim", web.Request], Awaitable[web.Response]]


def _guarded(*checks: _Check) -> Callable[[_Handler], _Handler]:
    """The handler behind its provider's request checks (credentials, then profile): the first refusal answers."""

    def wrap(handler: _Handler) -> _Handler:
        @functools.wraps(handler)
        async def guarded(sim: ProviderSim, request: web.Request) -> web.Response:
            for check in checks:
                denied = check(sim, request)
                if denied:
                    return denied
            return await handler(sim, request)

        return guarded

    return wrap


class ProviderSim:
    def __init__(self, settings: ProviderSettings | None = None, seed: int = 0) -> None:
        self.settings = settings or ProviderSettings()
        keys = ensure_dev_keys(self.settings.keys_dir)
        self._app_public = load_public_key(keys / "app_public.pem")
        self._alipay_private = load_private_key(keys / "alipay_private.pem")
        self._rng = random.Random(seed)
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        self.config: dict[str, Injection] = {}
        self.counters: dict[str, dict[str, int]] = {}  # per config key: remaining fail/decline/timeout/drop
        self.payouts: list[PayoutRecord] = []
        self.stored: dict[tuple[str, str], Stored] = {}
        self.executing: set[tuple[str, str]] = set()
        self.paypal_tokens: dict[str, float] = {}
        self.paypal_batches: dict[str, bytes] = {}
        self.wise_quotes: dict[str, dict[str, Any]] = {}
        self.wise_transfers: dict[int, dict[str, Any]] = {}
        self.wise_by_ctid: dict[str, int] = {}
        self.wise_otts: dict[str, int] = {}
        self.wise_funded: dict[int, PayoutRecord] = {}
        self.alipay_orders: dict[str, tuple[str, dict[str, Any]]] = {}
        self.toss_by_key: dict[str, dict[str, Any]] = {}
        self.stripe_payouts: dict[str, tuple[str, bytes]] = {}
        self.paypay_cashbacks: dict[str, tuple[str, dict[str, Any]]] = {}  # merchantCashbackId → (params, details)
        self.payfort_orders: dict[str, dict[str, str]] = {}  # merchant_reference → the order's Check Status fields
        self.wise_statement_otts: dict[str, int] = {}  # one-time SCA token → balance id
        self.alipay_bills: dict[str, tuple[str, date]] = {}  # download file id → (bill type, Beijing day)
        self.payfort_reports: dict[str, list[dict[str, str]]] = {}  # report merchant_reference → its rows
        self.stats: Counter[str] = Counter()

    def configure(self, patch: dict[str, dict[str, Any]]) -> None:
        for key, values in patch.items():
            inj = Injection.merged(self.config.get(key, Injection()), values)
            self.config[key] = inj
            counts = self.counters.setdefault(key, {})
            for name in ("fail_next", "decline_next", "timeout_next", "drop_next"):
                if name in values:
                    counts[name] = int(values[name])

    def _injection(self, rail: str, provider: str) -> tuple[str, Injection]:
        for key in (rail, provider, "*"):
            if key in self.config:
                return key, self.config[key]
        return "", Injection()

    def _take(self, key: str, name: str) -> bool:
        counts = self.counters.get(key)
        if counts and counts.get(name, 0) > 0:
            counts[name] -= 1
            return True
        return False

    async def _money_call(
        self,
        rail: str,
        provider: str,
        execute: Callable[[], Awaitable[web.Response]],
        unavailable: Callable[[int], web.Response],
        decline: Callable[[], web.Response],
        busy_key: tuple[str, str] | None = None,
    ) -> web.Response:
        """Apply fault injection around one money-moving call (see module doc for the order).

        ``busy_key`` marks the idempotency key as executing from the moment the provider accepted the
        request until it executed it (a concurrent repeat meanwhile gets Stripe's 409); a dropped request
        never reached the provider, so it is not marked.
        """
        key, inj = self._injection(rail, provider)
        self.stats[f"{provider}.calls"] += 1
        if self._take(key, "drop_next"):
            self.stats[f"{provider}.dropped"] += 1
            await asyncio.sleep(inj.hang_ms / 1000)
            return unavailable(504)
        if self._take(key, "fail_next") or (inj.fail_rate > 0 and self._rng.random() < inj.fail_rate):
            self.stats[f"{provider}.failed"] += 1
            return unavailable(inj.fail_status)
        if self._take(key, "decline_next"):
            self.stats[f"{provider}.declined"] += 1
            return decline()
        delay_ms = inj.latency_ms + (self._rng.randint(-inj.jitter_ms, inj.jitter_ms) if inj.jitter_ms else 0)
        if busy_key is not None:
            self.executing.add(busy_key)
        try:
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            response = await execute()
        finally:
            if busy_key is not None:
                self.executing.discard(busy_key)
        if self._take(key, "timeout_next"):
            self.stats[f"{provider}.lost_responses"] += 1
            await asyncio.sleep(inj.hang_ms / 1000)
        return response

    def _record(
        self,
        provider: Provider,
        rail: str,
        key: str,
        our_ref: str,
        provider_ref: str,
        amount_minor: int,
        currency: Currency,
        counterparty: str,
    ) -> PayoutRecord:
        rec = PayoutRecord(
            provider=provider.value,
            rail=rail,
            idempotency_key=key,
            our_reference=our_ref,
            provider_reference=provider_ref,
            amount_minor=amount_minor,
            currency=currency.value,
            fee_minor=fee_minor(provider, amount_minor, currency),
            counterparty=counterparty,
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )
        self.payouts.append(rec)
        self.stats[f"{provider.value}.payouts"] += 1
        return rec

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        r = app.router
        r.add_post("/v1/oauth2/token", self.paypal_token)
        r.add_post("/v1/payments/payouts", self.paypal_payout)
        r.add_get("/v1/payments/payouts/{batch_id}", self.paypal_get_batch)
        r.add_post("/v1/payouts", self.stripe_payout)
        r.add_get("/v1/payouts/{payout_id}", self.stripe_get_payout)
        r.add_post("/v3/profiles/{profile_id}/quotes", self.wise_quote)
        r.add_post("/v1/transfers", self.wise_transfer)
        r.add_get("/v1/transfers/{transfer_id}", self.wise_get_transfer)
        r.add_post("/v3/profiles/{profile_id}/transfers/{transfer_id}/payments", self.wise_fund)
        r.add_post("/v1/payouts/sub-malls/settlements", self.toss_payout)
        r.add_get("/v1/payouts/sub-malls/settlements/{payout_key}", self.toss_get_payout)
        r.add_post("/gateway.do", self.alipay_gateway)
        r.add_post("/v2/cashback", self.paypay_cashback)
        r.add_get("/v2/cashback/{merchant_cashback_id}", self.paypay_get_cashback)
        r.add_post("/FortAPI/paymentApi", self.payfort_api)
        r.add_get("/_admin/health", self.admin_health)
        r.add_get("/_admin/config", self.admin_get_config)
        r.add_post("/_admin/config", self.admin_config)
        r.add_post("/_admin/reset", self.admin_reset)
        r.add_get("/_admin/payouts", self.admin_payouts)
        r.add_post("/_admin/statements", self.admin_statements)
        r.add_get("/_admin/stats", self.admin_stats)
        r.add_get("/_admin/report_breaks", self.admin_get_breaks)
        r.add_post("/_admin/report_breaks", self.admin_report_break)
        app.add_routes(report_api.routes(self))
        return app

    # ------------------------------------------------------------------ PayPal

    def _paypal_error(
        self,
        status: int,
        name: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        links: list[dict[str, str]] | None = None,
    ) -> web.Response:
        body: dict[str, Any] = {
            "name": name,
            "message": message,
            "debug_id": secrets.token_hex(7),
            "information_link": "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors",
        }
        if details:
            body["details"] = details
        if links:
            body["links"] = links
        return _json(status, body)

    def _paypal_unavailable(self, status: int) -> web.Response:
        if status == 503:
            return self._paypal_error(status, "SERVICE_UNAVAILABLE", "Service Unavailable.")
        return self._paypal_error(status, "INTERNAL_SERVICE_ERROR", "An internal service error has occurred.")

    def _paypal_duplicate(self, base: str, original: Stored) -> web.Response:
        """PayPal refuses a sender_batch_id it has seen, with a link to the original batch."""
        batch_id = json.loads(original.body)["batch_header"]["payout_batch_id"]
        self.stats["PAYPAL.duplicates"] += 1
        issue = {
            "field": "SENDER_BATCH_ID",
            "location": "body",
            "issue": "Batch with given sender_batch_id already exists",
        }
        link = {
            "href": f"{base}/v1/payments/payouts/{batch_id}",
            "rel": "self",
            "method": "GET",
            "encType": "application/json",
        }
        return self._paypal_error(400, "USER_BUSINESS_ERROR", "User business error.", [issue], [link])

    def _paypal_declined(self) -> web.Response:
        issue = {
            "field": "items[0].receiver",
            "location": "body",
            "issue": "RECEIVER_UNREGISTERED",
            "description": "Receiver is unregistered",
        }
        return self._paypal_error(422, "UNPROCESSABLE_ENTITY", "The requested action could not be performed.", [issue])

    async def paypal_token(self, request: web.Request) -> web.Response:
        s = self.settings
        if request.headers.get("Authorization") != basic_auth(
            s.paypal_client_id, s.paypal_client_secret.get_secret_value()
        ):
            return _json(401, {"error": "invalid_client", "error_description": "Client Authentication failed"})
        form = dict(parse_qsl((await request.read()).decode()))
        if form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"})
        token = "A21AA" + secrets.token_urlsafe(24)
        self.paypal_tokens[token] = time.monotonic() + 32_400
        return _json(
            200,
            {
                "scope": "https://uri.paypal.com/services/payments/payouts",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": 32_400,
                "nonce": secrets.token_hex(8),
            },
        )

    def _paypal_authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        expiry = self.paypal_tokens.get(auth.removeprefix("Bearer "))
        return auth.startswith("Bearer ") and expiry is not None and expiry > time.monotonic()

    async def paypal_payout(self, request: web.Request) -> web.Response:
        if not self._paypal_authorized(request):
            return _json(401, {"error": "invalid_token", "error_description": "Token signature verification failed"})
        try:
            body = loads_exact(await request.read())
            batch_id_in = str(body["sender_batch_header"]["sender_batch_id"])
            item = body["items"][0]
            currency = Currency(item["amount"]["currency"])
            amount_minor = Money.from_decimal(Decimal(str(item["amount"]["value"])), currency).minor_units
            receiver = str(item["receiver"])
        except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as exc:
            return self._paypal_error(
                400,
                "VALIDATION_ERROR",
                "Invalid request - see details",
                [{"field": "body", "location": "body", "issue": f"MALFORMED_REQUEST: {exc}"}],
            )
        key = ("PAYPAL", batch_id_in)
        base = f"http://{request.host}"

        async def execute() -> web.Response:
            if key in self.stored:
                return self._paypal_duplicate(base, self.stored[key])
            batch_id = _ref("", "paypal", batch_id_in, n=13, upper=True)
            rec = self._record(
                Provider.PAYPAL, "PAYPAL", batch_id_in, batch_id_in, batch_id, amount_minor, currency, receiver
            )
            header = {
                "payout_batch_id": batch_id,
                "batch_status": "PENDING",
                "time_created": rec.created_at,
                "sender_batch_header": body["sender_batch_header"],
                "amount": item["amount"],
                "fees": {"currency": currency.value, "value": str(Money(rec.fee_minor, currency).to_decimal())},
            }
            out = {
                "batch_header": header,
                "links": [{"href": f"{base}/v1/payments/payouts/{batch_id}", "rel": "self", "method": "GET"}],
            }
            payload = dumps(out)
            self.stored[key] = Stored("", 201, payload)
            success = dict(
                out,
                batch_header=dict(header, batch_status="SUCCESS"),
                items=[
                    {
                        "payout_item_id": _ref("", "item", batch_id, n=13, upper=True),
                        "transaction_id": _ref("", "txn", batch_id, n=17, upper=True),
                        "transaction_status": "SUCCESS",
                        "payout_batch_id": batch_id,
                        "payout_item": item,
                    }
                ],
            )
            self.paypal_batches[batch_id] = dumps(success)
            return web.Response(status=201, body=payload, content_type="application/json")

        return await self._money_call("PAYPAL", "PAYPAL", execute, self._paypal_unavailable, self._paypal_declined)

    async def paypal_get_batch(self, request: web.Request) -> web.Response:
        if not self._paypal_authorized(request):
            return _json(401, {"error": "invalid_token", "error_description": "Token signature verification failed"})
        body = self.paypal_batches.get(request.match_info["batch_id"])
        if body is None:
            return self._paypal_error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.")
        return web.Response(status=200, body=body, content_type="application/json")

    # ------------------------------------------------------------------ Stripe

    def _stripe_error(
        self, status: int, type_: str, message: str, code: str | None = None, param: str | None = None
    ) -> web.Response:
        err: dict[str, Any] = {
            "type": type_,
            "message": message,
            "request_log_url": f"https://dashboard.stripe.com/logs/req_{secrets.token_hex(7)}",
        }
        if code:
            err["code"] = code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            err["param"] = param
        return _json(status, {"error": err}, {"Request-Id": f"req_{secrets.token_hex(7)}"})

    def _stripe_auth(self, request: web.Request) -> web.Response | None:
        expected = f"Bearer {self.settings.stripe_secret_key.get_secret_value()}"
        if request.headers.get("Authorization") != expected:
            return self._stripe_error(401, "invalid_request_error", "Invalid API Key provided: sk_test_****")
        if not request.headers.get("Stripe-Account", "").startswith("acct_"):
            return self._stripe_error(
                400, "invalid_request_error", "Missing or invalid Stripe-Account header", param="Stripe-Account"
            )
        return None

    def _stripe_unavailable(self, status: int) -> web.Response:
        message = "Stripe is temporarily unavailable; please retry." if status == 503 else "An unknown error occurred"
        return self._stripe_error(status, "api_error", message)

    def _stripe_declined(self) -> web.Response:
        return self._stripe_error(
            400,
            "invalid_request_error",
            "The destination bank account cannot be used for payouts: it was closed.",
            code="bank_account_unusable",
            param="destination",
        )

    @staticmethod
    def _stripe_replay(stored: Stored, headers: dict[str, str]) -> web.Response:
        return web.Response(status=stored.status, body=stored.body, content_type="application/json", headers=headers)

    def _stripe_seen_key(self, key: tuple[str, str], idem: str, fingerprint: str) -> web.Response | None:
        """Stripe's answer to a repeated Idempotency-Key: the stored response, a mismatch, or 409 while in flight."""
        stored = self.stored.get(key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return self._stripe_error(
                    400,
                    "idempotency_error",
                    f"Keys for idempotent requests can only be used with the same parameters they were first "
                    f"used with. Try using a key other than '{idem}' if you meant to execute a different request.",
                )
            self.stats["STRIPE.replays"] += 1
            return self._stripe_replay(stored, {"Idempotent-Replayed": "true", "Idempotency-Key": idem})
        if key in self.executing:
            return self._stripe_error(
                409,
                "idempotency_error",
                "There is currently another in-progress request using this Stripe API "
                "Idempotency Key. Please try again later.",
                code="idempotency_key_in_use",
            )
        return None

    @staticmethod
    def _stripe_payout_object(
        payout_id: str, amount: int, currency: Currency, form: dict[str, str], metadata: dict[str, str]
    ) -> dict[str, Any]:
        created = int(time.time())
        return {
            "id": payout_id,
            "object": "payout",
            "amount": amount,
            "arrival_date": created,
            "automatic": False,
            "balance_transaction": "txn_" + payout_id[3:],
            "created": created,
            "currency": currency.value.lower(),
            "description": form.get("description"),
            "destination": form.get("destination"),
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": metadata,
            "method": form.get("method", "standard"),
            "original_payout": None,
            "reconciliation_status": "not_applicable",
            "reversed_by": None,
            "source_type": "card",
            "statement_descriptor": None,
            "status": "paid" if form.get("method") == "instant" else "pending",
            "type": "bank_account",
        }

    @_guarded(_stripe_auth)
    async def stripe_payout(self, request: web.Request) -> web.Response:
        raw = (await request.read()).decode()
        form = _form(raw)
        idem = request.headers.get("Idempotency-Key")
        account = request.headers["Stripe-Account"]
        fingerprint = hashlib.sha256((account + "|" + "&".join(sorted(raw.split("&")))).encode()).hexdigest()
        key = ("STRIPE", f"{account}|{idem}") if idem else None
        if key is not None and idem:
            seen = self._stripe_seen_key(key, idem, fingerprint)
            if seen is not None:
                return seen
        try:
            amount = int(form["amount"])
            currency = Currency(form["currency"].upper())
            if amount <= 0:
                raise ValueError("amount must be positive")
        except (KeyError, ValueError) as exc:
            return self._stripe_error(
                400,
                "invalid_request_error",
                f"Invalid payout parameters: {exc}",
                code="parameter_invalid_integer",
                param="amount",
            )
        rail = form.get("metadata[nexus_rail]") or "STRIPE"
        metadata = {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")}

        async def execute() -> web.Response:
            if key is not None and key in self.stored:  # executed while we waited (concurrent duplicate): replay
                return self._stripe_replay(self.stored[key], {"Idempotent-Replayed": "true"})
            payout_id = _ref("po_", "stripe", account, idem or secrets.token_hex(8))
            self._record(
                Provider.STRIPE, rail, idem or "", metadata.get("nexus_tx_id", ""), payout_id, amount, currency, account
            )
            payload = dumps(self._stripe_payout_object(payout_id, amount, currency, form, metadata))
            if key is not None:
                self.stored[key] = Stored(fingerprint, 200, payload)
            self.stripe_payouts[payout_id] = (account, payload)
            headers = {"Request-Id": f"req_{secrets.token_hex(7)}"}
            return web.Response(status=200, body=payload, content_type="application/json", headers=headers)

        return await self._money_call(
            rail, "STRIPE", execute, self._stripe_unavailable, self._stripe_declined, busy_key=key
        )

    @_guarded(_stripe_auth)
    async def stripe_get_payout(self, request: web.Request) -> web.Response:
        found = self.stripe_payouts.get(request.match_info["payout_id"])
        if found is None or found[0] != request.headers["Stripe-Account"]:
            return self._stripe_error(
                404,
                "invalid_request_error",
                f"No such payout: '{request.match_info['payout_id']}'",
                code="resource_missing",
                param="id",
            )
        return web.Response(status=200, body=found[1], content_type="application/json")

    # ------------------------------------------------------------------ Wise

    def _wise_error(self, status: int, code: str, message: str, path: str | None = None) -> web.Response:
        return _json(status, {"errors": [{"code": code, "message": message, "path": path, "arguments": []}]})

    def _wise_auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.settings.wise_api_token.get_secret_value()}":
            return _json(401, {"error": "invalid_token", "error_description": "Invalid token"})
        return None

    def _wise_profile(self, request: web.Request) -> web.Response | None:
        if request.match_info["profile_id"] != str(self.settings.wise_profile_id):
            return self._wise_error(403, "profile.not.authorised", "Profile does not belong to this token")
        return None

    @_guarded(_wise_auth, _wise_profile)
    async def wise_quote(self, request: web.Request) -> web.Response:
        try:
            body = loads_exact(await request.read())
            source, target = Currency(body["sourceCurrency"]), Currency(body["targetCurrency"])
            amount = Decimal(str(body["targetAmount"]))
            Money.from_decimal(amount, target)
        except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
            return self._wise_error(422, "NOT_VALID", f"Invalid quote request: {exc}", "targetAmount")
        quote_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        fee = fee_minor(Provider.WISE, Money.from_decimal(amount, target).minor_units, target)
        quote = {
            "id": quote_id,
            "sourceCurrency": source.value,
            "targetCurrency": target.value,
            "sourceAmount": amount + Money(fee, target).to_decimal(),
            "targetAmount": amount,
            "rate": Decimal(1),
            "payOut": body.get("payOut", "BANK_TRANSFER"),
            "rateType": "FIXED",
            "status": "PENDING",
            "createdTime": now.isoformat(timespec="seconds"),
            "profile": self.settings.wise_profile_id,
            "expirationTime": (now + timedelta(minutes=30)).isoformat(timespec="seconds"),
            "paymentOptions": [
                {"payIn": "BALANCE", "payOut": "BANK_TRANSFER", "fee": {"total": Money(fee, target).to_decimal()}}
            ],
        }
        self.wise_quotes[quote_id] = quote
        return _json(200, quote)

    @_guarded(_wise_auth)
    async def wise_transfer(self, request: web.Request) -> web.Response:
        try:
            body = loads_exact(await request.read())
            ctid = str(body["customerTransactionId"])
            quote = self.wise_quotes[str(body["quoteUuid"])]
            target = int(body["targetAccount"])
        except KeyError as exc:
            return self._wise_error(422, "NOT_VALID", f"Unknown or missing {exc}", str(exc).strip("'"))
        except (TypeError, ValueError) as exc:
            return self._wise_error(422, "NOT_VALID", str(exc), "targetAccount")
        existing = self.wise_by_ctid.get(ctid)
        if existing is not None:  # Wise: the same customerTransactionId returns the same transfer
            self.stats["WISE.replays"] += 1
            return _json(200, self.wise_transfers[existing])
        transfer_id = 50_000_000 + len(self.wise_transfers) + 1
        transfer = {
            "id": transfer_id,
            "user": 5_000_001,
            "targetAccount": target,
            "sourceAccount": None,
            "quote": None,
            "quoteUuid": quote["id"],
            "status": "incoming_payment_waiting",
            "reference": body.get("details", {}).get("reference", ""),
            "rate": quote["rate"],
            "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "business": self.settings.wise_profile_id,
            "details": body.get("details", {}),
            "hasActiveIssues": False,
            "sourceCurrency": quote["sourceCurrency"],
            "sourceValue": quote["sourceAmount"],
            "targetCurrency": quote["targetCurrency"],
            "targetValue": quote["targetAmount"],
            "customerTransactionId": ctid,
        }
        self.wise_transfers[transfer_id] = transfer
        self.wise_by_ctid[ctid] = transfer_id
        return _json(200, transfer)

    @_guarded(_wise_auth)
    async def wise_get_transfer(self, request: web.Request) -> web.Response:
        transfer = self.wise_transfers.get(int(request.match_info["transfer_id"]))
        if transfer is None:
            return self._wise_error(404, "transfer.not.found", "Transfer not found")
        return _json(200, transfer)

    @_guarded(_wise_auth, _wise_profile)
    async def wise_fund(self, request: web.Request) -> web.Response:
        transfer_id = int(request.match_info["transfer_id"])
        transfer = self.wise_transfers.get(transfer_id)
        if transfer is None:
            return self._wise_error(404, "transfer.not.found", "Transfer not found")
        ott = request.headers.get("x-2fa-approval")
        signature = request.headers.get("X-Signature")
        if not ott or self.wise_otts.get(ott) != transfer_id:
            token = secrets.token_hex(16)
            self.wise_otts[token] = transfer_id
            return _json(
                403,
                {
                    "timestamp": datetime.now(UTC).isoformat(),
                    "status": 403,
                    "error": "Forbidden",
                    "message": "You are forbidden to send this request",
                    "path": request.path,
                },
                {"x-2fa-approval-result": "REJECTED", "x-2fa-approval": token},
            )
        expected = sign_sca_token(self.settings.wise_signing_key.get_secret_value(), ott)
        if not signature or not hmac.compare_digest(signature, expected):
            return self._wise_error(403, "sca.signature.invalid", "The signature of the one-time token is invalid")
        del self.wise_otts[ott]  # one-time

        async def execute() -> web.Response:
            if transfer_id not in self.wise_funded:
                amount = Money.from_decimal(Decimal(str(transfer["targetValue"])), Currency(transfer["targetCurrency"]))
                self.wise_funded[transfer_id] = self._record(
                    Provider.WISE,
                    "WISE",
                    transfer["customerTransactionId"],
                    transfer["customerTransactionId"],
                    str(transfer_id),
                    amount.minor_units,
                    amount.currency,
                    str(transfer["targetAccount"]),
                )
                # Wise's statement shows the reference the transfer carried, not our customerTransactionId.
                self.wise_funded[transfer_id].report_reference = str(transfer.get("reference") or "")
                transfer["status"] = "processing"
            else:
                self.stats["WISE.replays"] += 1
            return _json(201, {"type": "BALANCE", "status": "COMPLETED", "errorCode": None})

        return await self._money_call(
            "WISE",
            "WISE",
            execute,
            lambda status: self._wise_error(status, "service.unavailable", "Service temporarily unavailable"),
            lambda: _json(201, {"type": "BALANCE", "status": "REJECTED", "errorCode": "transfer.recipient.invalid"}),
        )

    # ------------------------------------------------------------------ Toss

    def _toss_error(self, status: int, code: str, message: str) -> web.Response:
        return _json(status, {"code": code, "message": message})

    def _toss_unavailable(self, status: int) -> web.Response:
        return self._toss_error(
            status,
            "FAILED_INTERNAL_SYSTEM_PROCESSING",
            "내부 시스템 처리 작업이 실패했습니다. 잠시 후 다시 시도해주세요.",
        )

    def _toss_declined(self) -> web.Response:
        return self._toss_error(400, "NOT_FOUND_SUB_MALL", "존재하지 않는 서브몰입니다.")

    async def toss_payout(self, request: web.Request) -> web.Response:
        expected = basic_auth(self.settings.toss_secret_key.get_secret_value(), "")
        if request.headers.get("Authorization") != expected:
            return self._toss_error(401, "UNAUTHORIZED_KEY", "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.")
        raw = await request.read()
        idem = request.headers.get("Idempotency-Key")
        fingerprint = hashlib.sha256(raw).hexdigest()
        if idem and ("TOSS", idem) in self.stored:
            stored = self.stored[("TOSS", idem)]
            if stored.fingerprint != fingerprint:
                return self._toss_error(
                    422,
                    "IDEMPOTENT_REQUEST_MISMATCH",
                    "같은 멱등키로 다른 요청을 보낼 수 없습니다. (same key, different body)",
                )
            self.stats["TOSS.replays"] += 1
            return web.Response(status=stored.status, body=stored.body, content_type="application/json")
        try:
            items = loads_exact(raw)
            item = items[0]
            submall, amount, payout_date = str(item["subMallId"]), int(item["payoutAmount"]), str(item["payoutDate"])
            date.fromisoformat(payout_date)
            if amount <= 0:
                raise ValueError("payoutAmount must be positive")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return self._toss_error(400, "INVALID_REQUEST", f"잘못된 요청입니다. ({exc})")

        async def execute() -> web.Response:
            if idem and ("TOSS", idem) in self.stored:  # executed while we waited
                return web.Response(status=200, body=self.stored[("TOSS", idem)].body, content_type="application/json")
            payout_key = _ref("", "toss", idem or secrets.token_hex(8), n=24)
            self._record(
                Provider.TOSS, "TOSS_PAYMENTS", idem or "", idem or "", payout_key, amount, Currency.KRW, submall
            )
            now_kst = datetime.now(UTC).astimezone(_KST)
            payout = {
                "payoutKey": payout_key,
                "requestId": idem,
                "subMallId": submall,
                "payoutDate": payout_date,
                "payoutAmount": amount,
                "account": None,
                "requestedAt": now_kst.isoformat(timespec="seconds"),
                "status": "REQUESTED",
                "failure": None,
                "transferSummary": "NEXUS-X",
                "metadata": None,
            }
            self.toss_by_key[payout_key] = payout
            payload = dumps([payout])
            if idem:
                self.stored[("TOSS", idem)] = Stored(fingerprint, 200, payload)
            return web.Response(status=200, body=payload, content_type="application/json")

        return await self._money_call("TOSS_PAYMENTS", "TOSS", execute, self._toss_unavailable, self._toss_declined)

    async def toss_get_payout(self, request: web.Request) -> web.Response:
        expected = basic_auth(self.settings.toss_secret_key.get_secret_value(), "")
        if request.headers.get("Authorization") != expected:
            return self._toss_error(401, "UNAUTHORIZED_KEY", "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다.")
        payout = self.toss_by_key.get(request.match_info["payout_key"])
        if payout is None:
            return self._toss_error(404, "NOT_FOUND", "존재하지 않는 정보 입니다.")
        return _json(200, payout)

    # ------------------------------------------------------------------ Alipay

    def _alipay_failure(self, method: str, code: str, sub_code: str, sub_msg: str) -> web.Response:
        msg = {"40001": "Missing Required Arguments", "40002": "Invalid Arguments", "40004": "Business Failed"}[code]
        return self._alipay_answer(method, {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg})

    def _alipay_answer(self, method: str, value: dict[str, Any]) -> web.Response:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        signature = rsa2_sign(self._alipay_private, text)
        body = '{"' + response_key(method) + '":' + text + ',"sign":"' + signature + '"}'
        return web.Response(status=200, body=body.encode(), content_type="application/json", charset="utf-8")

    async def alipay_gateway(self, request: web.Request) -> web.Response:
        params = dict(parse_qsl((await request.read()).decode("utf-8"), keep_blank_values=True))
        method = params.get("method", "")
        if params.get("app_id") != self.settings.alipay_app_id:
            return self._alipay_failure(method or "error", "40002", "isv.invalid-app-id", "无效的AppID参数")
        if params.get("sign_type") != "RSA2" or not rsa2_verify(
            self._app_public, sign_content(params), params.get("sign", "")
        ):
            return self._alipay_failure(method, "40002", "isv.invalid-signature", "验签出错")
        try:
            biz = json.loads(params["biz_content"])
        except (KeyError, ValueError):
            return self._alipay_failure(method, "40001", "isv.missing-biz-content", "缺少业务参数")
        if method == QUERY:
            return self._alipay_query(biz)
        if method == BILL_URL_QUERY:
            return report_api.alipay_bill_url(self, biz, request)
        if method != TRANSFER:
            return self._alipay_failure(method, "40002", "isv.invalid-method", "不存在的方法名")
        try:
            out_no = str(biz["out_biz_no"])
            amount = Money.from_decimal(Decimal(str(biz["trans_amount"])), Currency.CNY)
            identity = str(biz["payee_info"]["identity"])
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            return self._alipay_failure(method, "40002", "isv.invalid-parameter", str(exc))
        fingerprint = f"{amount.minor_units}|{identity}"

        async def execute() -> web.Response:
            existing = self.alipay_orders.get(out_no)
            if existing is not None:
                if existing[0] != fingerprint:
                    return self._alipay_failure(
                        method, "40004", "PAYMENT_INFO_INCONSISTENCY", "两次请求商户单号一样，但是参数不一致"
                    )
                self.stats["ALIPAY.replays"] += 1
                return self._alipay_answer(method, existing[1])
            order_id = datetime.now(UTC).strftime("%Y%m%d") + _ref("", "alipay", out_no, n=24)
            order_id = str(int(hashlib.sha256(order_id.encode()).hexdigest(), 16))[:32]
            rec = self._record(
                Provider.ALIPAY, "ALIPAY", out_no, out_no, order_id, amount.minor_units, Currency.CNY, identity
            )
            value = {
                "code": "10000",
                "msg": "Success",
                "out_biz_no": out_no,
                "order_id": order_id,
                "pay_fund_order_id": "2" + order_id[1:],
                "status": "SUCCESS",
                "trans_date": _cst_text(rec.created_at),
            }
            self.alipay_orders[out_no] = (fingerprint, value)
            return self._alipay_answer(method, value)

        return await self._money_call(
            "ALIPAY",
            "ALIPAY",
            execute,
            lambda status: web.Response(status=status, text="Service Unavailable"),
            lambda: self._alipay_failure(method, "40004", "PAYEE_NOT_EXIST", "收款账号不存在"),
        )

    def _alipay_query(self, biz: dict[str, Any]) -> web.Response:
        found = self.alipay_orders.get(str(biz.get("out_biz_no", "")))
        if found is None:
            return self._alipay_failure(QUERY, "40004", "ORDER_NOT_EXIST", "转账订单不存在")
        value = found[1]
        rec = next(p for p in self.payouts if p.provider == "ALIPAY" and p.our_reference == value["out_biz_no"])
        return self._alipay_answer(
            QUERY,
            {
                "code": "10000",
                "msg": "Success",
                "order_id": value["order_id"],
                "pay_fund_order_id": value["pay_fund_order_id"],
                "out_biz_no": value["out_biz_no"],
                "status": "SUCCESS",
                "trans_amount": str(Money(rec.amount_minor, Currency.CNY).to_decimal()),
                "pay_date": value["trans_date"],
            },
        )

    # ------------------------------------------------------------------ PayPay

    @staticmethod
    def _paypay_answer(status: int, code: str, message: str, data: Any = None, code_id: str = "") -> web.Response:
        info = {"code": code, "message": message, **({"codeId": code_id} if code_id else {})}
        return _json(status, {"resultInfo": info, "data": data})

    def _paypay_denied(self, request: web.Request, body: bytes) -> web.Response | None:
        """PayPay's HMAC check: the key, an epoch within 2 minutes, the body hash and the MAC over the request."""
        s = self.settings
        auth = parse_auth_header(request.headers.get("Authorization", ""))
        content_type = request.headers.get("Content-Type", "") if body else "empty"
        digest = body_hash(content_type, body)
        ok = (
            auth is not None
            and auth.api_key == s.paypay_api_key
            and abs(time.time() - auth.epoch) < EPOCH_SKEW_S
            and hmac.compare_digest(auth.hash, digest)
            and hmac.compare_digest(
                auth.mac,
                mac(
                    s.paypay_api_secret.get_secret_value(),
                    request.path,
                    request.method,
                    auth.nonce,
                    auth.epoch,
                    content_type,
                    digest,
                ),
            )
        )
        if ok:
            return None
        self.stats["PAYPAY.unauthorized"] += 1
        return self._paypay_answer(401, "UNAUTHORIZED", "No valid api key and secret provided")

    async def paypay_cashback(self, request: web.Request) -> web.Response:
        body = await request.read()
        denied = self._paypay_denied(request, body)
        if denied:
            return denied
        try:
            req = loads_exact(body)
            cid, user = str(req["merchantCashbackId"]), str(req["userAuthorizationId"])
            yen, requested_at = req["amount"]["amount"], int(req["requestedAt"])
            if type(yen) is not int or yen <= 0 or req["amount"]["currency"] != "JPY" or not 0 < len(cid) <= 64:
                raise ValueError("amount must be a positive JPY integer, merchantCashbackId 1-64 characters")
        except (KeyError, TypeError, ValueError) as exc:
            return self._paypay_answer(400, "INVALID_REQUEST_PARAMS", f"Invalid request params: {exc}")
        fingerprint = f"{user}|{yen}"

        async def execute() -> web.Response:
            existing = self.paypay_cashbacks.get(cid)
            if existing is not None:
                # The same merchantCashbackId again grants nothing more (PayPay's advice for an unknown outcome is
                # to re-send it); the same id with other parameters is refused.
                if existing[0] != fingerprint:
                    return self._paypay_answer(400, "INVALID_REQUEST_PARAMS", "merchantCashbackId already used")
                self.stats["PAYPAY.replays"] += 1
                return self._paypay_accepted()
            rec = self._record(Provider.PAYPAY, "PAYPAY_BUSINESS", cid, cid, cid, yen, Currency.JPY, user)
            details = {
                "status": "SUCCESS",
                "acceptedAt": int(datetime.fromisoformat(rec.created_at).timestamp()),
                "merchantAlias": "NEXUS-X",
                "amount": {"amount": yen, "currency": "JPY"},
                "requestedAt": requested_at,
                "metadata": "",
                "cashbackId": str(int(_ref("", "paypay", cid, n=15), 16)),
                "merchantCashbackId": cid,
                "userAuthorizationId": user,
                "orderDescription": req.get("orderDescription"),
                "walletType": req.get("walletType", "PREPAID"),
            }
            self.paypay_cashbacks[cid] = (fingerprint, details)
            return self._paypay_accepted()

        return await self._money_call(
            "PAYPAY_BUSINESS",
            "PAYPAY",
            execute,
            lambda status: self._paypay_answer(status, "INTERNAL_SERVER_ERROR", "Something went wrong on PayPay side"),
            lambda: self._paypay_answer(
                401, "INVALID_USER_AUTHORIZATION_ID", "The specified user authorization ID is invalid"
            ),
        )

    def _paypay_accepted(self) -> web.Response:
        return self._paypay_answer(202, "REQUEST_ACCEPTED", "Request accepted", None, "08100001")

    async def paypay_get_cashback(self, request: web.Request) -> web.Response:
        denied = self._paypay_denied(request, b"")
        if denied:
            return denied
        found = self.paypay_cashbacks.get(request.match_info["merchant_cashback_id"])
        if found is None:
            return self._paypay_answer(404, "TRANSACTION_NOT_FOUND", "Transaction not found")
        return self._paypay_answer(200, "SUCCESS", "Success", found[1], "08100001")

    # ------------------------------------------------------------------ PayFort (Amazon Payment Services)

    def _payfort_answer(self, params: dict[str, Any], code: str, message: str, **extra: Any) -> web.Response:
        """APS's answer: the request's parameters echoed, the result, signed with the SHA response phrase."""
        out = {k: v for k, v in params.items() if k != "signature"}
        out.update(extra, response_code=code, response_message=message, status=code[:2])
        out["signature"] = aps_signature(out, self.settings.payfort_sha_response_phrase.get_secret_value())
        return _json(200, out)

    def _payfort_denied(self, params: dict[str, Any]) -> web.Response | None:
        s = self.settings
        if params.get("merchant_identifier") != s.payfort_merchant_identifier:
            return self._payfort_answer(params, "00009", "Invalid merchant identifier.")
        if params.get("access_code") != s.payfort_access_code:
            return self._payfort_answer(params, "00010", "Invalid access code.")
        if not aps_verify(params, s.payfort_sha_request_phrase.get_secret_value()):
            return self._payfort_answer(params, "00008", "Signature mismatch.")
        return None

    async def payfort_api(self, request: web.Request) -> web.Response:
        try:
            params = json.loads(await request.read())
            if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
                raise ValueError("expected one JSON object of strings")
        except ValueError:
            return self._payfort_answer({}, "00073", "Invalid request format.")
        denied = self._payfort_denied(params)
        if denied:
            self.stats["PAYFORT.unauthorized"] += 1
            return denied
        if params.get("query_command") == "CHECK_STATUS":
            return self._payfort_check_status(params)
        if params.get("command") != self.settings.payfort_payout_command:
            return self._payfort_answer(params, "00004", "Invalid command.")
        return await self._payfort_payout(params)

    async def _payfort_payout(self, params: dict[str, Any]) -> web.Response:
        ref, amount, token = params.get("merchant_reference", ""), params.get("amount", ""), params.get("token_name")
        if not token or not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", ref):
            return self._payfort_answer(params, "00001", "Missing parameter.")
        if params.get("currency") not in Currency.__members__:
            return self._payfort_answer(params, "00013", "Invalid currency.")
        if not amount.isdigit() or int(amount) <= 0:
            return self._payfort_answer(params, "00005", "Invalid amount.")
        currency = Currency(params["currency"])

        async def execute() -> web.Response:
            if ref in self.payfort_orders:  # merchant_reference is the merchant's unique order number
                self.stats["PAYFORT.duplicates"] += 1
                return self._payfort_answer(params, "00007", "Duplicate order number.")
            fort_id = str(int(_ref("", "payfort", ref, n=24), 16))[:18]
            self._record(Provider.PAYFORT, "PAYFORT", ref, ref, fort_id, int(amount), currency, token)
            # Status 14 for the payout command: what the real command answers is to confirm with APS.
            self.payfort_orders[ref] = {
                "fort_id": fort_id,
                "transaction_status": "14",
                "transaction_code": "14000",
                "transaction_message": "Success.",
            }
            return self._payfort_answer(params, "14000", "Success.", fort_id=fort_id)

        return await self._money_call(
            "PAYFORT",
            "PAYFORT",
            execute,
            lambda status: web.Response(status=status, text="Service Unavailable"),
            lambda: self._payfort_answer(params, "13044", "Token name does not exist."),
        )

    def _payfort_check_status(self, params: dict[str, Any]) -> web.Response:
        order = self.payfort_orders.get(params.get("merchant_reference", ""))
        if order is None:
            return self._payfort_answer(params, "11036", "Order not found.")
        return self._payfort_answer(params, "12000", "Success.", **order)

    # ------------------------------------------------------------------ admin

    async def admin_health(self, request: web.Request) -> web.Response:
        return _json(200, {"ok": True, "pid": os.getpid(), "payouts": len(self.payouts)})

    async def admin_get_config(self, request: web.Request) -> web.Response:
        return _json(200, {"config": {k: asdict(v) for k, v in self.config.items()}, "remaining": self.counters})

    async def admin_config(self, request: web.Request) -> web.Response:
        try:
            patch = json.loads(await request.read() or b"{}")
            if not isinstance(patch, dict) or not all(isinstance(v, dict) for v in patch.values()):
                raise ValueError('expected {"RAIL_OR_PROVIDER": {"latency_ms": 220, ...}, ...}')
            self.configure(patch)
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        return await self.admin_get_config(request)

    async def admin_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json(200, {"ok": True})

    async def admin_payouts(self, request: web.Request) -> web.Response:
        q = request.query
        rows = [
            asdict(p)
            for p in self.payouts
            if (not q.get("provider") or p.provider == q["provider"])
            and (not q.get("our_reference") or p.our_reference == q["our_reference"])
        ]
        return _json(200, {"count": len(rows), "payouts": rows})

    async def admin_stats(self, request: web.Request) -> web.Response:
        return _json(200, dict(self.stats))

    async def admin_statements(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read() or b"{}")
        out_dir = Path(body.get("dir") or (self.settings.keys_dir.parent / "statements"))
        day = date.fromisoformat(body["day"]) if body.get("day") else None
        files = self.write_statements(out_dir, day)
        return _json(200, {"files": [str(f) for f in files], "dir": str(out_dir)})

    def write_statements(self, out_dir: Path, day: date | None = None) -> list[Path]:
        """Each provider's statement file per booking day (or just ``day``), in its own format, breaks applied:
        the same lines its report API serves."""
        from warehouse.provider_statements import write_statement

        files: list[Path] = []
        for provider in PROVIDER_FILES:
            by_day: dict[date, list[Any]] = {}
            for e in entries(self.payouts, provider):
                by_day.setdefault(e.line.created_at.astimezone(UTC).date(), []).append(e.line)
            days = [day] if day is not None else sorted(by_day)
            files.extend(write_statement(provider, by_day.get(d, []), out_dir, d) for d in days)
        return files

    async def admin_get_breaks(self, request: web.Request) -> web.Response:
        found = {f"{p.provider}:{p.provider_reference}": p.breaks for p in self.payouts if p.breaks}
        return _json(200, {"breaks": found})

    async def admin_report_break(self, request: web.Request) -> web.Response:
        """Make the provider's report wrong about one payout: ``{"reference", "kind", "value"}``
        (devtools/provider_sim/reports.py lists the kinds). The reference is any of the payout's references."""
        try:
            body = json.loads(await request.read() or b"{}")
            reference, kind = str(body["reference"]), str(body["kind"])
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error": 'expected {"reference": "...", "kind": "drop|amount|...", "value": ...}'})
        rec = next(
            (p for p in self.payouts if reference in (p.provider_reference, p.our_reference, p.idempotency_key)), None
        )
        if rec is None:
            return _json(404, {"error": f"no payout with reference {reference!r}"})
        try:
            rec.breaks[kind] = break_value(Provider(rec.provider), kind, body.get("value"))
        except BreakError as exc:
            return _json(400, {"error": str(exc)})
        self.stats[f"{rec.provider}.report_breaks"] += 1
        return _json(
            200, {"provider": rec.provider, "provider_reference": rec.provider_reference, "breaks": rec.breaks}
        )


def _cst_text(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(_CST).strftime("%Y-%m-%d %H:%M:%S")


SIM = web.AppKey("sim", ProviderSim)  # the simulator behind a served app: runner.app[SIM]


async def serve(host: str, port: int, settings: ProviderSettings | None = None, seed: int = 0) -> web.AppRunner:
    """Start the simulator inside the running event loop (tests); returns the runner (``await runner.cleanup()``)."""
    sim = ProviderSim(settings, seed)
    app = sim.app()
    app[SIM] = sim
    # Hanging handlers (injected lost answers) must not hold a shutdown for aiohttp's default 60 s.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True).start()
    return runner
