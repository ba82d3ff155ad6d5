"""The demo's settlement API scene (issue 19; docs/api.md, docs/status-read-model.md): a merchant's backend over HTTP.

The demo starts ``python -m streams.status`` and ``python -m streams.api`` with the workers (same NEXUS_DATA_DIR and
NEXUS_APP_ID: one read model's file). Then, as a merchant's backend would:

1. a merchant client is registered (``streams.api.auth.Clients``, what ``python -m streams.api clients add
   demo-merchant --role merchant --subject merchant-demo`` does; its secret stays in this process) and gets a
   token from ``POST /oauth/token`` (client credentials, HTTP Basic);
2. ``POST /api/settlement/bridge``: a GOLD payer's card payment (200 COMPLETED, with its cashback), the same request
   again under the same Idempotency-Key (``Idempotent-Replayed: true``, the same body byte for byte, the provider
   paid once), a payer without the funds (200 FAILED at BALANCE_LOCK, INSUFFICIENT_FUNDS);
3. once the signers' change of GOLD's cashback is in force (devtools/governed_demo.py), another GOLD payment: its
   cashback at the new rate;
4. ``GET /api/settlement/status/{id}`` of each payment from the read model, and one ``GET /api/settlement/history``
   page of the merchant's settlements.

Reconciliation through the API (``POST /api/settlement/reconcile``) needs an Airflow api-server, which the demo does
not run (it reconciles in process when it stops): left out here, tested in tests/integration/test_api_airflow.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from confluent_kafka import Producer
from rich.table import Table

from contracts import models as m
from contracts.topics import LEDGER_COMMANDS
from devtools.bridge_demo import FX_DAY
from devtools.fx_feed import domain_quotes
from devtools.provider_sim.launcher import SimError
from devtools.scene import Stopped, wait_until
from devtools.security_demo import produce
from domain.fx import FxBook
from domain.money import Currency, kaus_text
from infra.http_serving import url_host
from streams.api.auth import Clients
from streams.api.settings import ApiSettings
from streams.settings import Settings

log = logging.getLogger("nexus.demo.api")
KAUS = 1_000_000
CLIENT_ID = "demo-merchant"
MERCHANT = "merchant-demo"
PAYER_FUNDS_KAUS = 2_000
POOR_FUNDS_KAUS = 1
AMOUNT_MINOR = 2_500  # EUR 25.00 (the EU rail: the bridge scene breaks the US rail on purpose)
POOR_AMOUNT_MINOR = 150_000  # EUR 1,500.00: far more than 1 K-AUS
# What the demo's API runs with (unless the environment says otherwise): a POST waits up to 10 s for the settlement
# (2 s by default), so the scene's payments answer 200 on a busy demo machine.
DEMO_ENV = {"NEXUS_API_BRIDGE_WAIT_S": "10"}
READY_WAIT_S = 90.0
FINAL_WAIT_S = 30.0
CASHBACK_WAIT_S = 120.0
FINAL_STATES = ("COMPLETED", "FAILED")


def prepare_environment() -> None:
    for name, value in DEMO_ENV.items():
        os.environ.setdefault(name, value)


def card(payer: str, amount_minor: int = AMOUNT_MINOR) -> dict[str, Any]:
    """A GOLD payer's card payment in EUR at the rate the FX feed quotes now (the slippage check passes)."""
    now_ms = time.time_ns() // 1_000_000
    rate = FxBook().with_quotes(domain_quotes(FX_DAY, 0, now_ms)).combined_rate(Currency.EUR, now_ms).rate
    return {"payer_account_id": payer, "merchant_id": MERCHANT, "amount_minor": amount_minor, "currency": "EUR",
            "region": "EU", "payer_tier": "GOLD", "quoted_rate": str(rate)}  # fmt: skip


def cashback_bps(body: dict[str, Any]) -> int | None:
    """The cashback a completed payment earned, in bps of the K-AUS debited (rounded: the bridge floors units)."""
    result = body.get("result") or {}
    debited, cashback = result.get("kaus_debited_units"), result.get("cashback_kaus_units")
    if not debited or cashback is None:
        return None
    return int((Decimal(cashback) * 10_000 / Decimal(debited)).to_integral_value())


def answer_text(body: dict[str, Any]) -> str:
    if body["state"] == "COMPLETED":
        bps = cashback_bps(body)
        cashback = "" if bps is None else f", cashback {bps} bps"
        return f"{body['state']} on {body['rail']}: {kaus_text(body['kaus_units'] or 0)} K-AUS{cashback}"
    return f"{body['state']} in {body.get('phase')}: {body.get('reason_code')}"


@dataclass
class ApiDemo:
    settings: Settings
    governed: Any = None  # devtools.governed_demo.GovernedDemo: when the new GOLD cashback is in force
    sim: Any = None  # the provider simulator: how many payouts it made for the replayed payment
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    rows: list[tuple[str, str]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # payment id -> its state from GET /status
    history: str = ""
    step: str = "starting"
    payments_sent: threading.Event = field(default_factory=threading.Event)  # the scene sends no more payments
    done: threading.Event = field(default_factory=threading.Event)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    _secret: str = ""
    _token: str = ""

    @property
    def url(self) -> str:
        api = ApiSettings()
        return f"http://{url_host(api.host)}:{api.port}"

    def key(self, what: str) -> str:
        return f"demo-api-{what}-{self.tag}"

    def start(self) -> None:
        thread = threading.Thread(target=self._scenario, name="api-demo", daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)

    # ------------------------------------------------------------------ the scene

    def _scenario(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=30) as http:
                self._run_scenario(http)
        except Stopped:
            return
        except Exception as exc:  # the rest of the demo goes on; the panel says what failed
            log.exception("API scene failed")
            self.step = f"[red]failed: {exc}[/]"
        finally:
            self.payments_sent.set()
            self.done.set()

    def _run_scenario(self, http: httpx.Client) -> None:
        self.step = "waiting for GET /healthz: the broker, the rules view, a fresh read model"
        self._until(lambda: self._ready(http), "the API's readiness", READY_WAIT_S)
        self._secret = Clients(ApiSettings().data_dir(self.settings.data_dir)).add(CLIENT_ID, ("merchant",), MERCHANT)
        self.rows.append(("client", f"{CLIENT_ID}: role merchant, subject {MERCHANT} (its secret never shown)"))
        payer, poor = f"acct-api-payer-{self.tag}", f"acct-api-poor-{self.tag}"
        producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "enable.idempotence": True})
        for account, funds in ((payer, PAYER_FUNDS_KAUS), (poor, POOR_FUNDS_KAUS)):
            produce(producer, LEDGER_COMMANDS, m.Deposit(command_id=f"demo-api-funds:{account}", account_id=account,
                    amount_kaus_units=funds * KAUS, occurred_at=datetime.now(UTC)))  # fmt: skip
        self.step = "POST /oauth/token, then card payments through POST /api/settlement/bridge"
        self._get_token(http)
        paid = self.key("gold")
        first = self._pay(http, "POST /bridge (GOLD)", paid, card(payer))
        self._replay(http, paid, card(payer), first)
        self._pay(http, "POST /bridge (no funds)", self.key("poor"), card(poor, POOR_AMOUNT_MINOR))
        ids = [paid, self.key("poor")]
        if self.governed is not None:
            self.step = "waiting for the signers' GOLD cashback change to be in force"
            self._until(self.governed.cashback_applied.is_set, "the new GOLD cashback", CASHBACK_WAIT_S)
            after = self.key("gold-after")
            self._pay(http, "POST /bridge (GOLD, new rate)", after, card(payer))
            ids.append(after)
        self.payments_sent.set()
        self.step = "GET /api/settlement/status/{id} and one history page"
        for payment_id in ids:
            self._status(http, payment_id)
        self._history(http)
        self.step = "[green]done[/]: token, payments, an idempotent replay, a refusal, statuses and history"

    def _ready(self, http: httpx.Client) -> bool:
        try:
            return http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def _get_token(self, http: httpx.Client) -> None:
        response = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, self._secret))
        if response.status_code != 200:
            raise RuntimeError(f"POST /oauth/token answered {response.status_code}: {response.text[:200]}")
        body = response.json()
        self._token = body["access_token"]
        self.rows.append(("POST /oauth/token", f"200 {body['token_type']} JWT for {body['expires_in']} s, scopes "
                                               f"{body['scope']}"))  # fmt: skip

    def _headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} | ({"Idempotency-Key": key} if key else {})

    def _pay(self, http: httpx.Client, label: str, key: str, body: dict[str, Any]) -> httpx.Response:
        response = http.post("/api/settlement/bridge", json=body, headers=self._headers(key))
        if response.status_code == 202:  # not settled within the API's wait: the status says when it is
            self.rows.append((label, f"202 accepted, Location {response.headers.get('location')} (key {key})"))
        elif response.status_code == 200:
            self.rows.append((label, f"200 {answer_text(response.json())} (key {key})"))
        else:
            raise RuntimeError(f"POST /bridge answered {response.status_code}: {response.text[:200]}")
        return response

    def _replay(self, http: httpx.Client, key: str, body: dict[str, Any], first: httpx.Response) -> None:
        again = http.post("/api/settlement/bridge", json=body, headers=self._headers(key))
        same = "the same body byte for byte" if again.content == first.content else "[red]another body[/]"
        replayed = again.headers.get("idempotent-replayed", "absent")
        self.rows.append(("same key again", f"{again.status_code}, Idempotent-Replayed: {replayed}, {same}"))
        if self.sim is not None:
            self._until(lambda: self._final(http, key) is not None, f"{key}'s final state", FINAL_WAIT_S)
            try:
                times = sum(1 for p in self.sim.payouts() if f"BRIDGE-{key}" in str(p))
            except (OSError, SimError):
                return
            self.rows.append(("provider paid", f"{times} time(s) for {key}, however often it was sent"))

    def _final(self, http: httpx.Client, payment_id: str) -> dict[str, Any] | None:
        response = http.get(f"/api/settlement/status/{payment_id}", headers=self._headers())
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and body["state"] in FINAL_STATES else None

    def _status(self, http: httpx.Client, payment_id: str) -> None:
        self._until(lambda: self._final(http, payment_id) is not None, f"{payment_id}'s final state", FINAL_WAIT_S)
        body = self._final(http, payment_id) or {}
        self.statuses[payment_id] = str(body.get("state"))
        failed = f"{body.get('phase')} {body.get('reason_code')}"
        detail = body.get("rail") if body.get("state") == "COMPLETED" else failed
        self.rows.append((f"GET /status/{payment_id}", f"{body.get('state')} {detail}, owner {body.get('owner_id')}"))

    def _history(self, http: httpx.Client) -> None:
        response = http.get("/api/settlement/history", params={"limit": 10}, headers=self._headers())
        if response.status_code != 200:
            raise RuntimeError(f"GET /history answered {response.status_code}: {response.text[:200]}")
        page = response.json()
        items = ", ".join(f"{i['id']} {i['state']}" for i in page["items"])
        more = "more: next_cursor given" if page["next_cursor"] else "last page"
        self.history = f"{len(page['items'])} of {MERCHANT}'s, newest first: {items} ({more})"

    def _until(self, check: Any, what: str, timeout_s: float) -> None:
        wait_until(self.stop_event, check, what, timeout_s)

    def render(self) -> Table:
        table = Table(title=f"Settlement API ({self.url}): OAuth2, idempotency keys, the status read model",
                      show_header=False, expand=True)  # fmt: skip
        table.add_column("what", style="bold")
        table.add_column("seen")
        table.add_row("scene", self.step)
        for label, seen in list(self.rows):
            table.add_row(label, seen)
        if self.history:
            table.add_row("GET /history", self.history)
        return table
