"""The settlement API over real HTTP against the running stack: the session broker, the plain ledger and bridge
loops against the provider simulator, the status read model (``python -m streams.status``) and the API itself
(``python -m streams.api``), each its own process.

Checked here: a card payment settles through POST /bridge (200 COMPLETED, the provider paid once), a poor payer's
fails with its phase and reason; the same key and body replays the stored answer, another body is refused, the same
request_id under another key is the bridge's repeat (nothing paid twice); no credential, a wrong scope, an expired
token and another merchant's id are refused; statuses and idempotency keys survive an API restart; history pages
are complete and stable while new settlements arrive; rules are written to payouts.rules, read back, deleted
with a tombstone, and the API's view of them is rebuilt from the topic after a restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.topics import BRIDGE_REQUESTS, PAYOUT_RULES
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.money import Currency
from streams.api.auth import Clients, TokenIssuer
from tests.conftest import free_port
from tests.integration.provider_fixtures import provider_sim, sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_bridge_kafka import FUNDS_UNITS, deposit, fx_feed, quoted_rate  # noqa: F401  (fixture)
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

MERCHANT = "merchant-api-1"
OTHER_MERCHANT = "merchant-api-2"


@dataclass
class Stack:
    """The API process and what a test needs to talk to it."""

    api: WorkerProcess
    url: str
    data_dir: Path
    secrets: dict[str, str]
    http: httpx.Client

    def token(self, client_id: str, scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials", "scope": scope} if scope else {"grant_type": "client_credentials"}
        response = self.http.post(f"{self.url}/oauth/token", data=form, auth=(client_id, self.secrets[client_id]))
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def auth(self, client_id: str, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(client_id)}"}
        return headers | ({"Idempotency-Key": key} if key else {})

    def get(self, path: str, client_id: str, **params: Any) -> httpx.Response:
        return self.http.get(f"{self.url}{path}", headers=self.auth(client_id), params=params)

    def post(self, path: str, client_id: str, key: str, body: Any) -> httpx.Response:
        return self.http.post(f"{self.url}{path}", headers=self.auth(client_id, key), json=body)

    def restart(self) -> None:
        self.api.stop()
        self.api.start()


def start_api(worker_factory: Any, status_db: Path, port: int, **env: str) -> WorkerProcess:
    proc: WorkerProcess = worker_factory(module="streams.api", status_db_path=str(status_db), api_port=str(port), **env)
    return proc


@pytest.fixture
def stack(
    kafka: KafkaIO, sim: ProviderSimProcess, sim_keys_dir: Path, fx_feed: None, worker_factory: Any, tmp_path: Path
) -> Iterator[Stack]:
    """Ledger and bridge (plain loops) against the simulator, the status service and the API."""
    worker_factory(module="streams.p2p", agents="settlement")
    worker_factory(
        module="streams.bridge.loop", provider_sim_url=sim.url, provider_keys_dir=str(sim_keys_dir),
        provider_transport="aiohttp",
    )  # fmt: skip
    status_db = tmp_path / "status.sqlite3"
    worker_factory(module="streams.status", status_db_path=str(status_db), status_batch_wait_ms="20",
                   status_lag_every_s="0.5")  # fmt: skip
    data_dir = tmp_path / "worker"  # worker_factory's NEXUS_DATA_DIR: the API keeps its files under api/
    clients = Clients(data_dir / "api")
    secrets = {
        "cafe": clients.add("cafe", ("merchant",), MERCHANT),
        "bakery": clients.add("bakery", ("merchant",), OTHER_MERCHANT),
        "rules-team": clients.add("rules-team", ("producer",)),
        "analyst": clients.add("analyst", ("analyst",)),
    }
    port = free_port()
    api = start_api(worker_factory, status_db, port, api_bridge_wait_s="10", api_rate_per_s="500",
                    api_rate_burst="500")  # fmt: skip
    with httpx.Client(timeout=30) as http:
        built = Stack(api, f"http://127.0.0.1:{port}", data_dir, secrets, http)
        wait_ready(http, built.url)
        yield built


def wait_ready(http: httpx.Client, url: str, timeout_s: float = 60) -> None:
    """Until /healthz says ready (the broker, the rules view, the read model)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = http.get(f"{url}/healthz")
            if response.status_code == 200:
                return
        except httpx.TransportError as exc:
            response = exc  # type: ignore[assignment]
        if time.monotonic() > deadline:
            raise AssertionError(f"API not ready: {response}")
        time.sleep(0.2)


def card(payer: str, merchant: str = MERCHANT, amount_minor: int = 1_500, **extra: Any) -> dict[str, Any]:
    body = {
        "payer_account_id": payer,
        "merchant_id": merchant,
        "amount_minor": amount_minor,
        "currency": "USD",
        "region": "US",
        "payer_tier": "GOLD",
        "quoted_rate": str(quoted_rate(Currency.USD)),
    }
    return body | extra


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code, response.json()


def eventually(check: Callable[[], Any], timeout_s: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_card_payments_settle_once_and_strangers_are_refused(
    stack: Stack, kafka: KafkaIO, sim: ProviderSimProcess, run_id: str
) -> None:
    rich, poor = f"acct-api-rich-{run_id}", f"acct-api-poor-{run_id}"
    deposit(kafka, rich, FUNDS_UNITS)
    deposit(kafka, poor, 1_000_000)
    key = f"pay-{run_id}"
    first = stack.post("/api/settlement/bridge", "cafe", key, card(rich))
    assert first.status_code == 200, first.text
    settled = first.json()
    assert (settled["id"], settled["state"], settled["rail"]) == (key, "COMPLETED", "STRIPE_INSTANT")
    assert settled["result"]["repeat"] is False and settled["kaus_units"] > 0

    replay = stack.post("/api/settlement/bridge", "cafe", key, card(rich))
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
    assert_problem(stack.post("/api/settlement/bridge", "cafe", key, card(rich, amount_minor=9)), 422,
                   "IDEMPOTENCY_KEY_REUSED")  # fmt: skip
    again = stack.post("/api/settlement/bridge", "cafe", f"other-{key}", card(rich, request_id=key))
    assert again.status_code == 200 and again.json()["result"]["repeat"] is True  # the bridge's own dedup
    assert again.json()["kaus_units"] == settled["kaus_units"]
    assert len([p for p in sim.payouts() if key in str(p)]) == 1  # one payout for the request, however asked
    sent = [r for r in kafka.read_all(BRIDGE_REQUESTS) if r.value and key.encode() in r.value]
    assert len(sent) == 2 and {r.key for r in sent} == {rich.encode()}  # keyed by payer, two sends, one payment

    failed = stack.post("/api/settlement/bridge", "cafe", f"poor-{run_id}", card(poor, amount_minor=150_000))
    assert failed.status_code == 200
    assert (failed.json()["state"], failed.json()["phase"], failed.json()["reason_code"]) == (
        "FAILED", "BALANCE_LOCK", "INSUFFICIENT_FUNDS",
    )  # fmt: skip

    status = eventually(lambda: _final(stack.get(f"/api/settlement/status/{key}", "cafe")), what="read model")
    assert status["state"] == "COMPLETED" and status["owner_id"] == MERCHANT
    assert_problem(stack.get(f"/api/settlement/status/{key}", "bakery"), 404, "NOT_FOUND")
    assert stack.get(f"/api/settlement/status/{key}", "analyst").status_code == 200
    assert_problem(stack.post("/api/settlement/bridge", "cafe", f"x-{run_id}", card(rich, OTHER_MERCHANT)), 403,
                   "NOT_YOUR_MERCHANT")  # fmt: skip
    assert_problem(stack.http.get(f"{stack.url}/api/settlement/status/{key}"), 401, "UNAUTHENTICATED")
    assert_problem(stack.post("/api/settlement/bridge", "rules-team", f"y-{run_id}", card(rich)), 403,
                   "INSUFFICIENT_SCOPE")  # fmt: skip
    expired = TokenIssuer(stack.data_dir / "api", 60, clock=lambda: time.time() - 600)
    old = expired.issue("cafe", stack.secrets["cafe"], None)["access_token"]
    response = stack.http.get(f"{stack.url}/api/settlement/status/{key}", headers={"Authorization": f"Bearer {old}"})
    assert_problem(response, 401, "TOKEN_EXPIRED")


def _final(response: httpx.Response) -> dict[str, Any] | None:
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 and body["state"] in ("COMPLETED", "FAILED") else None


def test_statuses_keys_and_rules_survive_an_api_restart(stack: Stack, kafka: KafkaIO, run_id: str) -> None:
    payer = f"acct-api-restart-{run_id}"
    deposit(kafka, payer, FUNDS_UNITS)
    key, rule_id = f"pay-r-{run_id}", f"rule-r-{run_id}"
    paid = stack.post("/api/settlement/bridge", "cafe", key, card(payer))
    assert paid.status_code == 200
    rule = {
        "account_id": f"holder-{run_id}", "trigger_type": "THRESHOLD", "threshold_kaus_units": 500_000_000,
        "payout_provider": "PAYPAL", "payout_currency": "USD", "payout_account": "holder@example.com",
        "max_payout_per_tx_kaus_units": 100_000_000,
    }  # fmt: skip
    written = stack.post("/api/settlement/auto-payout", "rules-team", rule_id, rule)
    assert written.status_code == 200 and written.json()["rule_id"] == rule_id
    gone = f"rule-gone-{run_id}"
    assert stack.post("/api/settlement/auto-payout", "rules-team", gone, rule).status_code == 200
    response = stack.http.delete(f"{stack.url}/api/settlement/auto-payout/{gone}", headers=stack.auth("rules-team"))
    assert response.status_code == 204
    records = [r for r in kafka.read_all(PAYOUT_RULES) if r.key in (rule_id.encode(), gone.encode())]
    assert [(r.key, r.value is None) for r in records] == [
        (rule_id.encode(), False), (gone.encode(), False), (gone.encode(), True),
    ]  # fmt: skip
    eventually(lambda: _final(stack.get(f"/api/settlement/status/{key}", "cafe")), what="read model")

    stack.restart()
    wait_ready(stack.http, stack.url)
    status = stack.get(f"/api/settlement/status/{key}", "cafe")
    assert status.status_code == 200 and status.json()["state"] == "COMPLETED"
    replay = stack.post("/api/settlement/bridge", "cafe", key, card(payer))
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == paid.content
    again = stack.get(f"/api/settlement/auto-payout/{rule_id}", "rules-team")  # the view, read again from the topic
    assert again.status_code == 200 and again.json() == written.json()
    assert_problem(stack.get(f"/api/settlement/auto-payout/{gone}", "rules-team"), 404, "NOT_FOUND")


def test_history_pages_are_complete_and_stable_while_settlements_arrive(
    stack: Stack, kafka: KafkaIO, run_id: str
) -> None:
    payer = f"acct-api-hist-{run_id}"
    deposit(kafka, payer, FUNDS_UNITS)
    clients = Clients(stack.data_dir / "api")
    merchant = f"merchant-hist-{run_id}"
    stack.secrets["hist"] = clients.add("hist", ("merchant",), merchant)
    first = [f"h-{run_id}-{i:02d}" for i in range(24)]
    for key in first:
        assert stack.post("/api/settlement/bridge", "hist", key, card(payer, merchant, 100)).status_code in (200, 202)

    def everything_seen() -> bool:
        page = stack.get("/api/settlement/history", "hist", limit=100).json()
        return {i["id"] for i in page["items"]} >= set(first)

    eventually(everything_seen, what="the first settlements in the read model")
    stop = threading.Event()
    later: list[str] = []

    def keep_paying() -> None:
        while not stop.is_set() and len(later) < 40:
            key = f"h-{run_id}-late-{uuid.uuid4().hex[:6]}"
            response = stack.post("/api/settlement/bridge", "hist", key, card(payer, merchant, 100))
            assert response.status_code in (200, 202), response.text
            later.append(key)

    writer = threading.Thread(target=keep_paying, daemon=True)
    pages: list[list[str]] = []
    cursor: str | None = None
    first_page = stack.get("/api/settlement/history", "hist", limit=5).json()
    writer.start()
    try:
        pages.append([i["id"] for i in first_page["items"]])
        cursor = first_page["next_cursor"]
        while cursor is not None:
            page = stack.get("/api/settlement/history", "hist", limit=5, cursor=cursor).json()
            pages.append([i["id"] for i in page["items"]])
            cursor = page["next_cursor"]
            time.sleep(0.1)  # settlements land between pages
    finally:
        stop.set()
        writer.join(60)
    seen = [i for page in pages for i in page]
    assert len(seen) == len(set(seen)) == len(first) and set(seen) == set(first)  # each once, none shifted in
    assert later, "nothing arrived while paging"

    def all_there() -> bool:  # they are in the history: the pages after the first did not show them
        newest = stack.get("/api/settlement/history", "hist", limit=100).json()["items"]
        return {i["id"] for i in newest} == set(first) | set(later)

    eventually(all_there, what="the later settlements in the read model")
