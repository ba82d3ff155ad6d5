"""What every payout adapter shares: the protocol, HTTP transports with bounded timeouts, settings, merchants.

An adapter turns a :class:`domain.bridge.PayoutIntent` into the provider's real HTTP request (pure
``build_*`` functions), sends it through a :class:`Transport`, and maps the answer to a
:class:`domain.bridge.PayoutOutcome`:

* ``PAID`` — the provider accepted the payout (an object exists under our idempotency key);
* ``DECLINED`` — a 4xx about this payment (bad destination, invalid amount ...): nothing was paid;
* ``UNAVAILABLE`` — definitely not executed: connection refused/pool exhausted before sending, HTTP 503
  or 429, or 401/403 (our credentials are rejected, so the whole rail is unusable until fixed);
* ``TIMEOUT`` — no answer within the bound, the connection dropped mid-request, or HTTP 500/502/504:
  the payout may exist, so the core resolves it (``lookup``) under the same key before failing over.

Timeouts are bounded twice: by the transport's own timeout (``timeout_ms``, total per call) and by an
``asyncio.timeout`` guard 1 s later, so even a transport whose timer fails cannot hold a settlement longer
than ``timeout_ms`` + 1 s. ``lookup(intent)`` takes the whole intent, not just the key: for providers whose documented
recovery is to replay the create call under the same idempotency key (Stripe, PayPal, Wise, Toss) the
request body is needed to replay it.

Reports: each adapter also lists what the provider booked on a UTC day (``settlements(day)``), in the provider's own
report API and shape, normalised to :class:`domain.statements.StatementLine` (the records reconciliation reads). A
report that cannot be had raises :class:`ReportError`; there is no partial report.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote_plus

import aiohttp
import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.bridge import PayoutIntent, PayoutOutcome, PayoutStatus
from domain.rails import Provider
from domain.statements import StatementLine
from streams.bridge.providers.http import (
    ConnectFailed,
    HttpRequest,
    HttpResponse,
    TimedOut,
    Transport,
)
from streams.bridge.providers.http import TransportError as TransportError  # re-exported for the adapters
from streams.bridge.providers.http import loads_exact as loads_exact
from streams.bridge.providers.lean_http import LeanHttpTransport
from streams.security.envelope import mask_account, open_text, shared_sealer

DEFAULT_SIM_PORT = 19480
_GUARD_S = 1.0  # outer safety bound on top of each transport's own timeout
REPO_ROOT = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------- settings


class ProviderSettings(BaseSettings):
    """Provider endpoints and secrets (env prefix ``NEXUS_PROVIDER_``); defaults talk to the local simulator."""

    model_config = SettingsConfigDict(env_prefix="NEXUS_PROVIDER_", env_file=".env", extra="ignore")

    sim_url: str = f"http://127.0.0.1:{DEFAULT_SIM_PORT}"
    paypal_url: str = ""  # empty: the simulator
    stripe_url: str = ""
    wise_url: str = ""
    toss_url: str = ""
    alipay_url: str = ""  # the gateway, e.g. https://openapi.alipay.com/gateway.do
    paypay_url: str = ""  # the OPA host: https://api.paypay.ne.jp (sandbox https://stg-api.sandbox.paypay.ne.jp)
    payfort_url: str = ""  # the endpoint, e.g. https://paymentservices.payfort.com/FortAPI/paymentApi

    timeout_ms: int = Field(default=2_000, ge=1, le=120_000)
    # Per provider host; at least NEXUS_BRIDGE_MAX_IN_FLIGHT (512), or calls queue for a connection (httpx,
    # aiohttp) or connections are closed and reopened (lean: it keeps this many idle ones).
    max_connections: int = Field(default=512, ge=1)
    # "lean" (streams/bridge/providers/lean_http.py) costs the bridge's one thread the least CPU per call; httpx and
    # aiohttp are the general-purpose alternatives (bench/bench_bridge_core.py, bench/bench_bridge_kafka.py).
    transport: str = Field(default="lean", pattern="^(lean|httpx|aiohttp)$")
    ca_file: Path | None = None  # extra trust for the providers' TLS certificates (lean transport); None: system

    paypal_client_id: str = "nexus-sim-client"
    paypal_client_secret: SecretStr = SecretStr("nexus-sim-secret")
    stripe_secret_key: SecretStr = SecretStr("sk_test_51NexusSim0123456789abcdefABCDEF")
    wise_api_token: SecretStr = SecretStr("wise-sim-api-token")
    wise_profile_id: int = 16_000_001
    wise_signing_key: SecretStr = SecretStr("wise-sim-sca-signing-key")
    toss_secret_key: SecretStr = SecretStr("test_sk_nexus_sim_0123456789")
    alipay_app_id: str = "2021000000000001"
    # PEM files; when absent, a development key pair is generated under keys_dir (the simulator reads it too).
    alipay_app_private_key_file: Path | None = None
    alipay_public_key_file: Path | None = None
    paypay_api_key: str = "nexus-sim-paypay-api-key"
    paypay_api_secret: SecretStr = SecretStr("nexus-sim-paypay-api-secret")
    paypay_assume_merchant: str = ""  # X-ASSUME-MERCHANT, for PayPay agent clients only; empty: not sent
    payfort_access_code: str = "NexusSimAccessCode01"
    payfort_merchant_identifier: str = "NexusSimMID"
    payfort_sha_request_phrase: SecretStr = SecretStr("nexus-sim-sha-request-phrase")
    payfort_sha_response_phrase: SecretStr = SecretStr("nexus-sim-sha-response-phrase")
    # APS documents no credit-push command: the one enabled for the account, to confirm (providers/payfort.py).
    payfort_payout_command: str = "PAYOUT"
    keys_dir: Path = REPO_ROOT / ".local" / "provider_sim" / "keys"

    # Reports (settlements(day)): a listing page or a statement file is far larger than a payout answer.
    report_timeout_ms: int = Field(default=30_000, ge=1, le=600_000)
    report_max_bytes: int = Field(default=64 << 20, ge=1 << 20)
    payfort_reporting_url: str = ""  # empty: the payfort endpoint with paymentApi → reportingApi

    def url(self, provider: Provider) -> str:
        explicit = {
            Provider.PAYPAL: self.paypal_url,
            Provider.STRIPE: self.stripe_url,
            Provider.WISE: self.wise_url,
            Provider.TOSS: self.toss_url,
            Provider.ALIPAY: self.alipay_url,
            Provider.PAYPAY: self.paypay_url,
            Provider.PAYFORT: self.payfort_url,
        }.get(provider, "")
        if explicit:
            return explicit.rstrip("/")
        base = self.sim_url.rstrip("/")
        endpoint = {Provider.ALIPAY: "/gateway.do", Provider.PAYFORT: "/FortAPI/paymentApi"}.get(provider, "")
        return base + endpoint

    def payfort_reporting(self) -> str:
        if self.payfort_reporting_url:
            return self.payfort_reporting_url
        payment = self.url(Provider.PAYFORT)
        return payment.removesuffix("paymentApi") + "reportingApi"


# --------------------------------------------------------------------------- HTTP


class HttpxTransport:
    """httpx.AsyncClient with a keep-alive pool: general purpose, several times the lean transport's CPU per call."""

    def __init__(self, max_connections: int = 512) -> None:
        self._httpx = httpx
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            timeout=None,
        )

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        httpx = self._httpx
        seconds = timeout_ms / 1000
        try:
            r = await self._client.request(
                request.method,
                request.url,
                headers=list(request.headers),
                content=request.body or None,
                timeout=httpx.Timeout(seconds, pool=seconds),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise TimedOut(f"{type(exc).__name__}: {exc}") from exc
        return HttpResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpTransport:
    """A faster transport (aiohttp), same contract; used by the benchmark where client CPU is the limit."""

    def __init__(self, max_connections: int = 512) -> None:
        self._max = max_connections
        self._session: Any = None

    def _ensure(self) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max, limit_per_host=self._max, ttl_dns_cache=300),
                auto_decompress=False,
            )
        return self._session

    async def send(self, request: HttpRequest, timeout_ms: int) -> HttpResponse:
        session = self._ensure()
        try:
            # aiohttp's own timer, not a cancellation from outside: cancelling aiohttp mid-request can leave
            # the half-used keep-alive connection in its pool, and the next request on it then hangs.
            async with session.request(
                request.method,
                request.url,
                headers=list(request.headers),
                data=request.body or None,
                timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000),
            ) as r:
                body = await r.read()
                return HttpResponse(r.status, {k.lower(): v for k, v in r.headers.items()}, body)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TimedOut(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_transport(kind: str = "lean", max_connections: int = 512, ca_file: Path | None = None) -> Transport:
    if kind == "lean":
        return LeanHttpTransport(max_connections, ca_file=ca_file)
    if kind == "aiohttp":
        return AiohttpTransport(max_connections)
    if kind == "httpx":
        return HttpxTransport(max_connections)
    raise ValueError(f"unknown transport {kind!r}; use 'lean', 'httpx' or 'aiohttp'")


def make_report_transport(settings: ProviderSettings, max_connections: int = 8) -> Transport:
    """A transport for report calls: few connections, bodies up to ``report_max_bytes`` (lean's payout bound is
    1 MiB)."""
    if settings.transport == "lean":
        return LeanHttpTransport(max_connections, ca_file=settings.ca_file, max_body_bytes=settings.report_max_bytes)
    return make_transport(settings.transport, max_connections, settings.ca_file)


# --------------------------------------------------------------------------- merchants


@dataclass(frozen=True, slots=True)
class MerchantPayoutAccount:
    """Where each provider pays a merchant (onboarding data; the bridge request only names the merchant)."""

    merchant_id: str
    stripe_account: str  # Stripe-Account header (the connected account)
    stripe_destination: str  # external account (bank account / card) of that connected account
    paypal_receiver: str  # e-mail
    wise_recipient_id: int  # targetAccount
    toss_submall_id: str  # ≤ 20 chars
    alipay_identity: str  # ALIPAY_LOGON_ID
    alipay_name: str
    paypay_user_authorization_id: str  # the merchant's PayPay account, linked once (account link, scope cashback)
    payfort_token_name: str  # APS token of the merchant's payout instrument, ≤ 100 chars


class MerchantDirectory(Protocol):
    def account(self, merchant_id: str) -> MerchantPayoutAccount: ...


# What each payout provider's account looks like (the holder's account in a rule; checked before anything is sent).
_PAYPAL_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_STRIPE_ACCOUNT = re.compile(r"acct_[A-Za-z0-9]{1,64}")
_WISE_RECIPIENT = re.compile(r"[0-9]{1,18}")  # Wise's targetAccount: a recipient (account) id, a JSON integer
_TOSS_SUBMALL = re.compile(r"[A-Za-z0-9_-]{1,20}")  # Toss sub-mall ids: at most 20 characters


class InvalidPayoutAccount(ValueError):
    """A holder's payout account that cannot be an account at the payout's provider: nothing is sent."""


def _holder_account(
    provider: Provider, holder_id: str, account: str, shown: str | None = None
) -> MerchantPayoutAccount:
    """The payout destination of a holder: ``account`` in the provider's field, the others blank (never used: a
    payout goes out through its own provider only)."""
    fields: dict[str, Any] = {
        "merchant_id": holder_id,
        "stripe_account": "",
        "stripe_destination": "",  # blank: Stripe pays the connected account's default external account
        "paypal_receiver": "",
        "wise_recipient_id": 0,
        "toss_submall_id": "",
        "alipay_identity": "",
        "alipay_name": "",
        "paypay_user_authorization_id": "",
        "payfort_token_name": "",
    }
    checks: dict[Provider, tuple[re.Pattern[str], str, str]] = {
        Provider.PAYPAL: (_PAYPAL_EMAIL, "paypal_receiver", "a PayPal receiver e-mail"),
        Provider.STRIPE: (_STRIPE_ACCOUNT, "stripe_account", "a Stripe connected account id (acct_...)"),
        Provider.WISE: (_WISE_RECIPIENT, "wise_recipient_id", "a Wise recipient id (digits)"),
        Provider.TOSS: (_TOSS_SUBMALL, "toss_submall_id", "a Toss sub-mall id (at most 20 letters or digits)"),
    }
    if provider not in checks:
        raise InvalidPayoutAccount(f"{provider} does not pay holders out")
    pattern, field, what = checks[provider]
    if not pattern.fullmatch(account):
        # An account that came sealed is quoted masked: this reason reaches payouts.results and the warehouse.
        raise InvalidPayoutAccount(f"the payout account {account[:64] if shown is None else shown!r} is not {what}")
    fields[field] = int(account) if field == "wise_recipient_id" else account
    return MerchantPayoutAccount(**fields)


def destination_of(intent: PayoutIntent, merchants: MerchantDirectory) -> MerchantPayoutAccount:
    """Where ``intent`` is paid: the merchant directory's account for a card payment; for a holder's payout the
    account in its ``payout`` block, for the intent's provider (:class:`InvalidPayoutAccount` if it cannot be one)."""
    payment = intent.payment
    if payment.payout is None:
        return merchants.account(payment.merchant_id)
    assert intent.provider is payment.payout.provider, (intent.provider, payment.payout.provider)
    payout = payment.payout
    account = payout_account_of(payout)
    shown = None if getattr(payout, "payout_account_sealed", None) is None else mask_account(account)
    return _holder_account(intent.provider, payment.payer_account_id, account, shown)


def payout_account_of(payout: object) -> str:
    """The holder's payout account, opened here — just before the provider request is built, in memory only — when
    the request carried it sealed (``payout_account_sealed``; ``payout_account`` is then masked). A sealed account
    that does not open (altered, its key destroyed, the HSM unreachable, sealing off here) declines the payout
    before anything is sent (:class:`InvalidPayoutAccount`)."""
    # getattr: domain.bridge.HolderPayout has the field once contracts/bridge_codec.py carries it over from the request.
    sealed: str | None = getattr(payout, "payout_account_sealed", None)
    plain: str = getattr(payout, "payout_account", "")
    if sealed is None:
        return plain
    try:
        return open_text(shared_sealer(), sealed)
    except Exception as exc:  # SealError, HsmError, a settings error: never paid to a guessed account
        raise InvalidPayoutAccount(f"the sealed payout account {plain!r} cannot be opened: {exc}") from None


def invalid_destination(exc: InvalidPayoutAccount) -> PayoutOutcome:
    """The outcome of a payout whose destination is invalid: declined before sending (nothing was paid)."""
    return PayoutOutcome(PayoutStatus.DECLINED, error_code="INVALID_PAYOUT_ACCOUNT", error_message=str(exc))


def payout_label(intent: PayoutIntent) -> str:
    """What the payee sees the money as (payout notes and descriptions)."""
    payment = intent.payment
    if payment.payout is not None:
        return f"NEXUS-X payout {payment.request_id}"
    return f"NEXUS-X bridge settlement {intent.bridge_tx_id}"


class DerivedMerchantDirectory:
    """Deterministic payout accounts derived from the merchant id (simulator, demo, tests)."""

    def account(self, merchant_id: str) -> MerchantPayoutAccount:
        h = hashlib.sha256(merchant_id.encode()).hexdigest()
        slug = re.sub(r"[^a-z0-9]+", "-", merchant_id.lower()).strip("-")[:40] or "merchant"
        return MerchantPayoutAccount(
            merchant_id=merchant_id,
            stripe_account=f"acct_{h[:16]}",
            stripe_destination=f"ba_{h[16:40]}",
            paypal_receiver=f"{slug}@merchants.nexus-x.io",
            wise_recipient_id=100_000_000 + int(h[:7], 16),
            toss_submall_id=f"nx{h[:18]}",
            alipay_identity=f"{slug}@merchants.nexus-x.cn",
            alipay_name=merchant_id[:64],
            paypay_user_authorization_id=str(uuid.UUID(h[32:64])),
            payfort_token_name=f"NX{h[:30].upper()}",
        )


# --------------------------------------------------------------------------- helpers


_NUM = "__json_number__"
_NUM_RE = re.compile(rf'"{_NUM}(-?[0-9]+(?:[.][0-9]+)?)"')


def dumps(obj: Any) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_decimal_default)
    return _NUM_RE.sub(r"\1", text).encode() if _NUM in text else text.encode()


def json_number(d: Decimal) -> str:
    """A Decimal that ``dumps`` writes as a JSON number literal with exactly its digits (Wise's amounts)."""
    return f"{_NUM}{d:f}"


def _decimal_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return f"{o:f}"
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_FORM_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")


@lru_cache(maxsize=256)
def _form_key(key: str) -> str:
    return quote_plus(key)


def form_encode(pairs: list[tuple[str, str]]) -> bytes:
    """``application/x-www-form-urlencoded`` like ``urlencode`` (same output), without quoting safe values."""
    return "&".join(f"{_form_key(k)}={v if _FORM_SAFE.fullmatch(v) else quote_plus(v)}" for k, v in pairs).encode()


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


_NEXUS_NS = uuid.UUID("6f1c5e2a-4c1d-5d4e-9a1b-1e8a5c0b7d21")


def uuid_for_key(key: str) -> str:
    """A stable UUID for providers whose idempotency field must be a UUID (Wise customerTransactionId)."""
    return str(uuid.uuid5(_NEXUS_NS, key))


def classify_status(status: int) -> PayoutStatus | None:
    """None for 2xx; otherwise what an HTTP error status means for a money-moving call (module doc)."""
    if 200 <= status < 300:
        return None
    if status in (429, 503, 401, 403):
        return PayoutStatus.UNAVAILABLE
    if status >= 500:
        return PayoutStatus.TIMEOUT
    return PayoutStatus.DECLINED


def answered(
    resp: HttpResponse, reference: str, failure_code: str | None, failure_message: str | None, replayed: bool = False
) -> PayoutOutcome:
    """The outcome of a payout the provider answered about: PAID, or DECLINED with the provider's failure."""
    if failure_code is None:
        return PayoutOutcome(
            PayoutStatus.PAID, provider_reference=reference, http_status=resp.status, replayed=replayed
        )
    return PayoutOutcome(
        PayoutStatus.DECLINED,
        provider_reference=reference,
        http_status=resp.status,
        error_code=failure_code,
        error_message=failure_message,
        replayed=replayed,
    )


class ProviderAdapter(Protocol):
    provider: Provider

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome: ...

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome: ...


class ReportError(Exception):
    """A provider report could not be had: transport failure, an error status, or an answer not in its shape."""


class ReportingAdapter(Protocol):
    provider: Provider

    async def settlements(self, day: date) -> list[StatementLine]:
        """What the provider booked on the UTC ``day``, every page of it, normalised."""
        ...


MAX_PAGES = 100_000  # a listing still saying "more" after this many pages is broken, not long


class HttpAdapter:
    """Base of the HTTP adapters: bounded send, transport errors → outcomes."""

    provider: Provider

    def __init__(self, settings: ProviderSettings, transport: Transport, merchants: MerchantDirectory) -> None:
        self.settings = settings
        self.transport = transport
        self.merchants = merchants
        self.base_url = settings.url(self.provider)
        self.timeout_ms = settings.timeout_ms

    async def send(self, request: HttpRequest, timeout_ms: int | None = None) -> HttpResponse | PayoutOutcome:
        bound_ms = timeout_ms or self.timeout_ms
        try:
            # Every transport enforces bound_ms itself; this outer guard only catches a transport whose timer
            # fails (it is 1 s later so it never pre-empts them: cancelling aiohttp from outside can corrupt
            # its connection pool).
            async with asyncio.timeout(bound_ms / 1000 + _GUARD_S):
                return await self.transport.send(request, bound_ms)
        except ConnectFailed as exc:
            return PayoutOutcome(PayoutStatus.UNAVAILABLE, error_code="CONNECT_FAILED", error_message=str(exc))
        except (TimedOut, TimeoutError) as exc:
            return PayoutOutcome(
                PayoutStatus.TIMEOUT,
                error_code="TIMEOUT",
                error_message=f"no answer from {self.provider} within {bound_ms} ms ({exc})",
            )

    async def fetch(self, request: HttpRequest, what: str) -> HttpResponse:
        """A report call: any answer (the caller reads its status), or :class:`ReportError` when none came."""
        resp = await self.send(request, self.settings.report_timeout_ms)
        if isinstance(resp, PayoutOutcome):
            raise ReportError(f"{self.provider} {what}: {resp.error_code}: {resp.error_message}")
        return resp

    async def fetch_json(self, request: HttpRequest, what: str) -> Any:
        """A report call whose answer must be 200 with a JSON body."""
        resp = await self.fetch(request, what)
        return report_json(self.provider, resp, what)

    @staticmethod
    def unparseable(resp: HttpResponse, what: str) -> PayoutOutcome:
        # A 2xx we cannot read: the payout probably exists, so treat it like a lost answer and resolve it.
        return PayoutOutcome(
            PayoutStatus.TIMEOUT,
            http_status=resp.status,
            error_code="UNPARSEABLE_RESPONSE",
            error_message=f"{what}: {resp.body[:200]!r}",
        )


def report_json(provider: Provider, resp: HttpResponse, what: str) -> Any:
    if resp.status != 200:
        raise ReportError(f"{provider} {what}: HTTP {resp.status}: {resp.body[:300]!r}")
    try:
        return resp.json()
    except ValueError as exc:
        raise ReportError(f"{provider} {what}: not JSON ({exc}): {resp.body[:200]!r}") from exc


def report_field(provider: Provider, what: str, read: Any, *args: Any) -> Any:
    """``read(*args)``; a missing or malformed field in a provider's answer becomes a :class:`ReportError`."""
    try:
        return read(*args)
    except (KeyError, IndexError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        raise ReportError(f"{provider} {what}: unexpected shape ({type(exc).__name__}: {exc})") from exc


class ReplayingAdapter(HttpAdapter):
    """An adapter whose payout is one request, and whose lookup sends it again under the same idempotency key:
    the provider answers with the stored outcome, or executes the payout if it never got the original."""

    def build(self, intent: PayoutIntent) -> HttpRequest:
        raise NotImplementedError

    def parse(self, resp: HttpResponse) -> PayoutOutcome:
        raise NotImplementedError

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        try:
            request = self.build(intent)
        except InvalidPayoutAccount as exc:
            return invalid_destination(exc)
        resp = await self.send(request)
        return resp if isinstance(resp, PayoutOutcome) else self.parse(resp)

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        return await self.payout(intent)
