"""The settlement API's routes, middleware and stores in one process: the real app, token issuer and idempotency
store (SQLite under tmp_path), with the broker and the status read model replaced by fakes (the real ones are in
tests/integration/test_api_e2e.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contracts import models as m
from contracts.topics import BRIDGE_REQUESTS, BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED, PAYOUT_RULES
from domain.settlement_status import InvalidCursor
from streams.api.airflow import AirflowClient, logical_date_for, run_id_for
from streams.api.app import Services, assemble
from streams.api.auth import TokenIssuer
from streams.api.follower import RulesView, Waiters
from streams.api.idempotency import IdempotencyStore, fingerprint
from streams.api.middleware import ApiMetrics, TokenBuckets
from streams.api.settings import ApiSettings
from streams.status.store import Freshness, StatusRecord

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
MERCHANT = "merchant-cafe-9"


def bridge_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "payer_account_id": "acct-1",
        "merchant_id": MERCHANT,
        "amount_minor": 15_000,
        "currency": "USD",
        "region": "US",
        "payer_tier": "GOLD",
        "quoted_rate": "0.15",
    }
    return body | overrides


def completed_for(request: m.BridgeRequest) -> bytes:
    return BRIDGE_SETTLEMENTS_COMPLETED.encode(
        m.BridgeSettlementCompleted(
            request_id=request.request_id,
            bridge_tx_id=f"btx-{request.request_id}",
            payer_account_id=request.payer_account_id,
            merchant_id=request.merchant_id,
            region=request.region,
            currency=request.currency,
            amount_minor=request.amount_minor,
            kaus_debited_units=1_000_000_000,
            rate="0.15",
            rail="STRIPE_INSTANT",
            provider_reference="po_1",
            provider_fee_minor=30,
            cashback_kaus_units=30_000_000,
            ecosystem_bonus_kaus_units=0,
            phase_durations_ms={},
            total_duration_ms=120,
            completed_at=NOW,
        )
    )


@dataclass
class FakeProducer:
    """Records what was produced; answers bridge requests as the bridge would (``answer``), or fails."""

    waiters: Waiters
    answer: Callable[[m.BridgeRequest], tuple[str, bytes] | None] | None = None
    fail: bool = False
    sent: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)

    async def send(self, topic: str, key: bytes, value: bytes | None) -> int:
        if self.fail:
            raise RuntimeError("broker down")
        self.sent.append((topic, key, value))
        if topic == BRIDGE_REQUESTS.name and self.answer is not None and value is not None:
            request = BRIDGE_REQUESTS.decode(value)
            answer = self.answer(request)
            if answer is not None:
                asyncio.get_running_loop().call_later(0.01, self.waiters.resolve, request.request_id, answer)
        return len(self.sent) - 1

    async def reachable(self) -> bool:
        return not self.fail


def record(record_id: str, owner: str, kind: str = "BRIDGE", seq: int = 1, state: str = "COMPLETED") -> StatusRecord:
    return StatusRecord(
        id=record_id, kind=kind, owner_id=owner, payer_account_id="acct-1", state=state, phase=None,
        reason_code=None, reason=None, currency="USD", amount_minor=100, kaus_units=None, rail="STRIPE_INSTANT",
        provider_reference=None, bridge_tx_id=None, created_at=NOW, updated_at=NOW, seq=seq,
    )  # fmt: skip


class FakeStatus:
    def __init__(self) -> None:
        self.records: dict[str, StatusRecord] = {}
        self.asked: list[dict[str, Any]] = []

    def get(self, record_id: str) -> StatusRecord | None:
        return self.records.get(record_id)

    def history(self, owner_id: str | None, **filters: Any) -> tuple[list[StatusRecord], str | None]:
        self.asked.append({"owner_id": owner_id, **filters})
        cursor, limit = filters.get("cursor"), filters.get("limit", 50)
        if cursor is not None and not cursor.isdigit():
            raise InvalidCursor("not ours")
        rows = sorted(
            (r for r in self.records.values() if owner_id is None or r.owner_id == owner_id),
            key=lambda r: -r.seq,
        )
        if filters.get("kind"):
            rows = [r for r in rows if r.kind == filters["kind"]]
        if cursor is not None:
            rows = [r for r in rows if r.seq < int(cursor)]
        page = rows[:limit]
        return page, str(page[-1].seq) if len(rows) > limit else None

    def freshness(self) -> Freshness:
        return Freshness(True, NOW, NOW, 10, 0, 0, datetime.now(UTC), "g1")


@dataclass
class Api:
    client: TestClient
    services: Services
    producer: FakeProducer
    status: FakeStatus
    tokens: TokenIssuer
    secrets: dict[str, str]

    def token(self, client_id: str, scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": self.secrets[client_id]}
        if scope:
            form["scope"] = scope
        response = self.client.post("/oauth/token", data=form)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def headers(self, client_id: str, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(client_id)}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers


def make_api(tmp_path: Path, **settings: Any) -> Api:
    api_settings = ApiSettings(**{"bridge_wait_s": 0.5, "rate_per_s": 1000, "rate_burst": 1000, **settings})
    tokens = TokenIssuer(tmp_path / "api", api_settings.token_ttl_s)
    secrets = {
        "cafe": tokens.clients.add("cafe", ("merchant",), MERCHANT),
        "bakery": tokens.clients.add("bakery", ("merchant",), "merchant-bakery-2"),
        "rules-team": tokens.clients.add("rules-team", ("producer",)),
        "analyst": tokens.clients.add("analyst", ("analyst",)),
        "ops": tokens.clients.add("ops", ("operations",)),
    }
    waiters, status = Waiters(100), FakeStatus()
    producer = FakeProducer(waiters)
    services = Services(
        settings=api_settings,
        tokens=tokens,
        keys=IdempotencyStore(tmp_path / "api" / "idempotency.sqlite3", 3600, 30),
        status=status,
        producer=producer,
        waiters=waiters,
        rules=RulesView(10),
        rules_ready=lambda: True,
        follower_error=lambda: None,
        airflow=AirflowClient(api_settings),
        metrics=ApiMetrics(),
        now=lambda: NOW,
    )
    return Api(TestClient(assemble(services)), services, producer, status, tokens, secrets)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    built = make_api(tmp_path)
    with built.client:
        yield built


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code and body["type"].endswith(code), body
    assert body["title"] and body["detail"]
    return body


# ------------------------------------------------------------------------------------------------ tokens and scopes


def test_client_credentials_by_form_or_basic_and_refusals(api: Api) -> None:
    basic = base64.b64encode(f"cafe:{api.secrets['cafe']}".encode()).decode()
    response = api.client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    issued = response.json()
    assert issued["token_type"] == "Bearer" and issued["scope"] == "settlements:read settlements:write"
    assert api.tokens.verify(issued["access_token"]).subject == MERCHANT

    wrong = {"grant_type": "client_credentials", "client_id": "cafe", "client_secret": "guess"}
    body = assert_problem(api.client.post("/oauth/token", data=wrong), 401, "INVALID_CLIENT")
    assert body["error"] == "invalid_client"
    grant = {"grant_type": "password", "client_id": "cafe", "client_secret": api.secrets["cafe"]}
    assert_problem(api.client.post("/oauth/token", data=grant), 400, "INVALID_GRANT_TYPE")
    more = {"grant_type": "client_credentials", "client_id": "cafe", "client_secret": api.secrets["cafe"],
            "scope": "rules:write"}  # fmt: skip
    assert_problem(api.client.post("/oauth/token", data=more), 400, "INVALID_SCOPE")


def test_no_credential_a_bad_or_expired_token_and_a_wrong_scope_are_refused(api: Api, tmp_path: Path) -> None:
    status = "/api/settlement/status/x"
    response = api.client.get(status)
    assert_problem(response, 401, "UNAUTHENTICATED")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem(api.client.get(status, headers={"Authorization": "Basic abc"}), 401, "UNAUTHENTICATED")
    token = api.token("cafe")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_problem(api.client.get(status, headers={"Authorization": f"Bearer {forged}"}), 401, "UNAUTHENTICATED")

    past = TokenIssuer(tmp_path / "api", 60, clock=lambda: time.time() - 3600)  # same key, issued an hour ago
    old = past.issue("cafe", api.secrets["cafe"], None)["access_token"]
    assert_problem(api.client.get(status, headers={"Authorization": f"Bearer {old}"}), 401, "TOKEN_EXPIRED")

    rules_only = api.headers("rules-team", key="k-1")
    response = api.client.post("/api/settlement/bridge", json=bridge_body(), headers=rules_only)
    assert_problem(response, 403, "INSUFFICIENT_SCOPE")
    narrowed = {"Authorization": f"Bearer {api.token('cafe', scope='settlements:read')}", "Idempotency-Key": "k-2"}
    assert_problem(api.client.post("/api/settlement/bridge", json=bridge_body(), headers=narrowed), 403,
                   "INSUFFICIENT_SCOPE")  # fmt: skip
    assert api.producer.sent == []


# ------------------------------------------------------------------------------------------------ POST /bridge


def test_a_card_payment_answered_in_time_is_a_200_with_the_settlement(api: Api) -> None:
    api.producer.answer = lambda r: (BRIDGE_SETTLEMENTS_COMPLETED.name, completed_for(r))
    response = api.client.post("/api/settlement/bridge", json=bridge_body(), headers=api.headers("cafe", "pay-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["state"], body["kaus_units"]) == ("pay-1", "COMPLETED", 10**9)
    assert body["rail"] == "STRIPE_INSTANT"
    assert body["result"]["bridge_tx_id"] == "btx-pay-1" and body["owner_id"] == MERCHANT
    [(topic, key, value)] = api.producer.sent
    assert topic == BRIDGE_REQUESTS.name and key == b"acct-1"
    sent = BRIDGE_REQUESTS.decode(value or b"")
    assert sent.request_id == "pay-1" and sent.requested_at == NOW  # the key and the API's clock filled them


def test_a_failed_payment_is_a_200_with_its_phase_and_reason(api: Api) -> None:
    def failed(r: m.BridgeRequest) -> tuple[str, bytes]:
        answer = m.BridgeSettlementFailed(
            request_id=r.request_id, payer_account_id=r.payer_account_id, region=r.region, currency=r.currency,
            amount_minor=r.amount_minor, failed_phase="BALANCE_LOCK", reason_code="INSUFFICIENT_FUNDS",
            reason="not enough", failed_at=NOW,
        )  # fmt: skip
        return BRIDGE_SETTLEMENTS_FAILED.name, BRIDGE_SETTLEMENTS_FAILED.encode(answer)

    api.producer.answer = failed
    body = api.client.post("/api/settlement/bridge", json=bridge_body(), headers=api.headers("cafe", "pay-f")).json()
    assert (body["state"], body["phase"], body["reason_code"]) == ("FAILED", "BALANCE_LOCK", "INSUFFICIENT_FUNDS")


def test_no_answer_in_time_is_a_202_whose_location_answers_pending(api: Api) -> None:
    headers = api.headers("cafe", "pay-slow")
    response = api.client.post("/api/settlement/bridge", json=bridge_body(request_id="req-slow"), headers=headers)
    assert response.status_code == 202 and response.headers["location"] == "/api/settlement/status/req-slow"
    assert response.json()["state"] == "PENDING"
    status = api.client.get(response.headers["location"], headers=headers)  # the read model has not seen it yet
    assert status.status_code == 200 and status.json()["state"] == "PENDING"
    other = api.client.get(response.headers["location"], headers=api.headers("bakery"))
    assert_problem(other, 404, "NOT_FOUND")


def test_same_key_same_body_replays_another_body_is_refused_and_a_restart_keeps_keys(tmp_path: Path) -> None:
    api = make_api(tmp_path)
    api.producer.answer = lambda r: (BRIDGE_SETTLEMENTS_COMPLETED.name, completed_for(r))
    headers = api.headers("cafe", "pay-dup")
    with api.client:
        first = api.client.post("/api/settlement/bridge", json=bridge_body(), headers=headers)
        again = api.client.post(
            "/api/settlement/bridge", content=json.dumps(bridge_body(), indent=2), headers=headers
        )  # the same data, spelt differently
        assert again.status_code == first.status_code == 200 and again.content == first.content
        assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
        changed = api.client.post("/api/settlement/bridge", json=bridge_body(amount_minor=1), headers=headers)
        assert_problem(changed, 422, "IDEMPOTENCY_KEY_REUSED")
        other_path = api.client.post("/api/settlement/reconcile", json={"day": "2026-11-01"}, headers=headers)
        assert_problem(other_path, 403, "INSUFFICIENT_SCOPE")
    assert len(api.producer.sent) == 1

    restarted = make_api(tmp_path)  # same data dir: same signing key, clients and idempotency keys
    restarted.secrets = api.secrets
    with restarted.client:
        replay = restarted.client.post("/api/settlement/bridge", json=bridge_body(), headers=headers)
    assert replay.status_code == 200 and replay.content == first.content and restarted.producer.sent == []


def test_a_key_in_use_is_409_and_a_missing_or_bad_key_400(api: Api) -> None:
    headers = api.headers("cafe", "pay-busy")
    body = json.dumps(bridge_body()).encode()
    api.services.keys.begin("cafe", "pay-busy", fingerprint("POST", "/api/settlement/bridge", body), time.time())
    response = api.client.post("/api/settlement/bridge", content=body, headers=headers)
    assert_problem(response, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert response.headers["retry-after"] == "1"
    del headers["Idempotency-Key"]
    assert_problem(api.client.post("/api/settlement/bridge", content=body, headers=headers), 400,
                   "IDEMPOTENCY_KEY_MISSING")  # fmt: skip
    headers["Idempotency-Key"] = "has space"
    assert_problem(api.client.post("/api/settlement/bridge", content=body, headers=headers), 400, "INVALID_FORMAT")
    assert api.producer.sent == []


def test_a_pending_key_of_a_dead_request_is_taken_over_after_its_lock(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "keys.sqlite3", ttl_s=100, lock_s=5)
    assert store.begin("c", "k", "f", now=1000) is None
    with pytest.raises(Exception, match="IDEMPOTENCY_KEY_IN_USE"):
        store.begin("c", "k", "f", now=1004)
    assert store.begin("c", "k", "f", now=1006) is None  # the lock ran out
    assert store.begin("other-client", "k", "g", now=1006) is None  # keys are per client
    assert store.purge(now=1200) == 2 and store.begin("c", "k", "changed", now=1200) is None  # expired: forgotten


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (bridge_body(amount_minor=150.0), "WRONG_TYPE", "amount_minor"),
        ({k: v for k, v in bridge_body().items() if k != "currency"}, "MISSING_FIELD", "currency"),
        (bridge_body(amount_minor=-5), "NEGATIVE_AMOUNT", "amount_minor"),
        (bridge_body(currency="XXX"), "UNKNOWN_ENUM_VALUE", "currency"),
        (bridge_body(requested_at="2026-11-24T09:00:00"), "NAIVE_TIMESTAMP", "requested_at"),
        (bridge_body(quoted_rate=0.15), "WRONG_TYPE", "quoted_rate"),
        (bridge_body(tip=5), "UNKNOWN_FIELD", "tip"),
    ],
)
def test_a_body_the_contract_refuses_is_a_422_with_the_dead_letter_code(
    api: Api, body: dict[str, Any], code: str, field: str
) -> None:
    response = api.client.post("/api/settlement/bridge", json=body, headers=api.headers("cafe", f"bad-{code}"))
    problem = assert_problem(response, 422, code)
    assert problem["errors"][0]["field"] == field and problem["errors"][0]["code"] == code
    again = api.client.post("/api/settlement/bridge", json=bridge_body(), headers=api.headers("cafe", f"bad-{code}"))
    assert again.status_code == 202  # a refused request does not keep its key
    assert len(api.producer.sent) == 1


def test_malformed_json_another_merchant_and_a_payout_are_refused(api: Api) -> None:
    headers = api.headers("cafe", "k-x")
    assert_problem(api.client.post("/api/settlement/bridge", content=b"{", headers=headers), 422, "MALFORMED_JSON")
    assert_problem(api.client.post("/api/settlement/bridge", content=b"[1]", headers=headers), 422, "WRONG_TYPE")
    response = api.client.post("/api/settlement/bridge", json=bridge_body(merchant_id="merchant-bakery-2"),
                               headers=headers)  # fmt: skip
    assert_problem(response, 403, "NOT_YOUR_MERCHANT")
    payout = {"provider": "PAYPAL", "payout_account": "a@b.c", "amount_kaus_units": 5}
    assert_problem(api.client.post("/api/settlement/bridge", json=bridge_body(payout=payout), headers=headers), 422,
                   "INVALID_VALUE")  # fmt: skip
    assert api.producer.sent == []


def test_a_broker_that_does_not_acknowledge_is_503_and_the_key_can_be_retried(api: Api) -> None:
    headers = api.headers("cafe", "pay-retry")
    api.producer.fail = True
    response = api.client.post("/api/settlement/bridge", json=bridge_body(), headers=headers)
    assert_problem(response, 503, "BROKER_UNAVAILABLE")
    api.producer.fail = False
    assert api.client.post("/api/settlement/bridge", json=bridge_body(), headers=headers).status_code == 202


# ------------------------------------------------------------------------------------------------ status and history


def test_a_merchant_sees_only_its_own_card_payments_an_analyst_everything(api: Api) -> None:
    api.status.records = {
        "mine": record("mine", MERCHANT, seq=1),
        "theirs": record("theirs", "merchant-bakery-2", seq=2),
        "payout-1": record("payout-1", MERCHANT, kind="PAYOUT", seq=3),  # an account id that happens to match
    }
    cafe = api.headers("cafe")
    assert api.client.get("/api/settlement/status/mine", headers=cafe).json()["state"] == "COMPLETED"
    theirs = assert_problem(api.client.get("/api/settlement/status/theirs", headers=cafe), 404, "NOT_FOUND")
    unknown = assert_problem(api.client.get("/api/settlement/status/nothing", headers=cafe), 404, "NOT_FOUND")
    assert theirs["detail"].replace("theirs", "X") == unknown["detail"].replace("nothing", "X")  # nothing told apart
    assert_problem(api.client.get("/api/settlement/status/payout-1", headers=cafe), 404, "NOT_FOUND")
    analyst = api.headers("analyst")
    assert api.client.get("/api/settlement/status/theirs", headers=analyst).status_code == 200
    assert api.client.get("/api/settlement/status/payout-1", headers=analyst).json()["kind"] == "PAYOUT"
    assert_problem(api.client.get("/api/settlement/status/mine", headers=api.headers("ops")), 403, "INSUFFICIENT_SCOPE")

    page = api.client.get("/api/settlement/history", params={"owner_id": "merchant-bakery-2"}, headers=cafe).json()
    assert [i["id"] for i in page["items"]] == ["mine"]  # the owner filter is the token's, whatever is asked
    assert api.status.asked[-1]["owner_id"] == MERCHANT and api.status.asked[-1]["kind"] == "BRIDGE"
    everything = api.client.get("/api/settlement/history", params={"limit": 2}, headers=analyst).json()
    assert [i["id"] for i in everything["items"]] == ["payout-1", "theirs"] and everything["next_cursor"] == "2"
    rest = api.client.get("/api/settlement/history", params={"cursor": "2"}, headers=analyst).json()
    assert [i["id"] for i in rest["items"]] == ["mine"] and rest["next_cursor"] is None


def test_history_refuses_a_foreign_cursor_a_naive_time_and_a_bad_limit(api: Api) -> None:
    cafe = api.headers("cafe")
    assert_problem(api.client.get("/api/settlement/history", params={"cursor": "zz"}, headers=cafe), 422,
                   "INVALID_CURSOR")  # fmt: skip
    naive = {"created_from": "2026-11-24T09:00:00"}
    assert_problem(api.client.get("/api/settlement/history", params=naive, headers=cafe), 422, "NAIVE_TIMESTAMP")
    problem = assert_problem(api.client.get("/api/settlement/history", params={"limit": 0}, headers=cafe), 422,
                             "OUT_OF_RANGE")  # fmt: skip
    assert problem["errors"][0]["field"] == "query.limit"
    assert_problem(api.client.get("/api/settlement/history", params={"state": "LOST"}, headers=cafe), 422,
                   "UNKNOWN_ENUM_VALUE")  # fmt: skip


# ------------------------------------------------------------------------------------------------ rules


def rule_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "account_id": "holder-1",
        "trigger_type": "THRESHOLD",
        "threshold_kaus_units": 500_000_000,
        "payout_provider": "PAYPAL",
        "payout_currency": "USD",
        "payout_account": "holder@example.com",
        "max_payout_per_tx_kaus_units": 100_000_000,
    }
    return body | overrides


def test_rules_are_written_read_replaced_and_deleted(api: Api) -> None:
    team = api.headers("rules-team", "rule-1")
    written = api.client.post("/api/settlement/auto-payout", json=rule_body(), headers=team)
    assert written.status_code == 200, written.text
    assert written.json()["rule_id"] == "rule-1" and written.headers["location"] == "/api/settlement/auto-payout/rule-1"
    [(topic, key, value)] = api.producer.sent
    assert (topic, key) == (PAYOUT_RULES.name, b"rule-1") and PAYOUT_RULES.decode(value or b"").is_active
    got = api.client.get("/api/settlement/auto-payout/rule-1", headers=team)
    assert got.status_code == 200 and got.json()["threshold_kaus_units"] == 500_000_000

    replace = {**team, "Idempotency-Key": "rule-1-v2"}
    body = rule_body(rule_id="rule-1", is_active=False)
    assert api.client.post("/api/settlement/auto-payout", json=body, headers=replace).status_code == 200
    assert api.client.get("/api/settlement/auto-payout/rule-1", headers=team).json()["is_active"] is False

    assert api.client.delete("/api/settlement/auto-payout/rule-1", headers=team).status_code == 204
    assert api.producer.sent[-1] == (PAYOUT_RULES.name, b"rule-1", None)  # a tombstone
    assert_problem(api.client.get("/api/settlement/auto-payout/rule-1", headers=team), 404, "NOT_FOUND")
    assert_problem(api.client.delete("/api/settlement/auto-payout/rule-1", headers=team), 404, "NOT_FOUND")
    assert_problem(api.client.get("/api/settlement/auto-payout/rule-1", headers=api.headers("cafe")), 403,
                   "INSUFFICIENT_SCOPE")  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"keep_minimum_kaus_units": 600_000_000}, "KEEP_MINIMUM_ABOVE_THRESHOLD"),
        ({"payout_provider": "ALIPAY"}, "PROVIDER_NOT_OFFERED"),
        ({"schedule_time_utc": "09:00"}, "FIELD_NOT_FOR_TRIGGER"),
        ({"threshold_kaus_units": None}, "INVALID_VALUE"),
        ({"max_payout_per_tx_kaus_units": "100"}, "WRONG_TYPE"),
    ],
)
def test_a_rule_that_cannot_work_is_refused_with_the_payouts_code(
    api: Api, overrides: dict[str, Any], code: str
) -> None:
    response = api.client.post("/api/settlement/auto-payout", json=rule_body(**overrides),
                               headers=api.headers("rules-team", f"r-{code}"))  # fmt: skip
    assert_problem(response, 422, code)
    assert api.producer.sent == []


def test_the_rules_view_reads_its_own_writes_before_older_records() -> None:
    view = RulesView(rules_max=2)
    view.read("a", b"v1")
    view.wrote("a", None)  # deleted through the API; the follower has not read the tombstone yet
    view.read("a", b"v1")  # an older record of the rule, read late
    assert view.get("a") is None
    view.read("a", None)  # the tombstone itself: the view follows the topic again
    view.read("a", b"v2")
    assert view.get("a") == b"v2"
    view.read("b", b"x")
    view.read("c", b"y")  # full
    assert view.get("c") is None and view.dropped == 1


# ------------------------------------------------------------------------------------------------ reconcile


def test_reconcile_refuses_a_future_day_and_answers_503_without_airflow(api: Api) -> None:
    ops = api.headers("ops", "recon-1")
    assert_problem(api.client.post("/api/settlement/reconcile", json={"day": "2026-11-25"}, headers=ops), 422,
                   "OUT_OF_RANGE")  # fmt: skip
    assert_problem(api.client.post("/api/settlement/reconcile", json={"day": "yesterday"}, headers=ops), 422,
                   "INVALID_VALUE")  # fmt: skip
    response = api.client.post("/api/settlement/reconcile", json={"day": "2026-11-23"}, headers=ops)
    assert_problem(response, 503, "AIRFLOW_UNAVAILABLE")
    assert_problem(api.client.get("/api/settlement/reconcile/api__x", headers=api.headers("ops")), 503,
                   "AIRFLOW_UNAVAILABLE")  # fmt: skip
    assert_problem(api.client.get("/api/settlement/reconcile/api__x", headers=api.headers("cafe")), 403,
                   "INSUFFICIENT_SCOPE")  # fmt: skip


def test_a_days_run_has_a_logical_date_the_next_day_and_a_run_id_per_key() -> None:
    day = datetime(2026, 11, 1).date()
    logical = logical_date_for(day, datetime(2026, 11, 5, 13, 14, 15, 123456, tzinfo=UTC))
    assert logical == datetime(2026, 11, 2, 13, 14, 15, 123456, tzinfo=UTC)
    assert (logical - timedelta(days=1)).date() == day  # warehouse.settings.recon_day_for
    assert run_id_for(day, "ops", "k") == run_id_for(day, "ops", "k") != run_id_for(day, "ops", "k2")
    assert run_id_for(day, "ops", "k").startswith("api__2026-11-01__")


# ------------------------------------------------------------------------------------------------ the rest


def test_unknown_paths_methods_large_bodies_and_bursts_are_problems(tmp_path: Path) -> None:
    api = make_api(tmp_path, rate_per_s=1, rate_burst=8, body_bytes_max=2048)
    with api.client:
        headers = api.headers("cafe", "big")  # one token request from this address
        assert_problem(api.client.get("/nowhere", headers=headers), 404, "NOT_FOUND")
        response = api.client.put("/api/settlement/bridge", headers=headers)
        assert_problem(response, 405, "METHOD_NOT_ALLOWED")
        assert "POST" in response.headers["allow"]
        large = bridge_body(payer_account_id="a" * 4000)
        assert_problem(api.client.post("/api/settlement/bridge", json=large, headers=headers), 413, "OVERSIZED")
        answers = [api.client.get("/api/settlement/status/x", headers=headers) for _ in range(10)]
        limited = [r for r in answers if r.status_code == 429]
        assert limited and all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert_problem(limited[0], 429, "RATE_LIMITED")
        other = api.headers("bakery")  # another client has its own bucket (its token came from the same address)
        assert api.client.get("/api/settlement/status/x", headers=other).status_code != 429


def test_token_buckets_refill_at_their_rate() -> None:
    buckets = TokenBuckets(rate_per_s=2, burst=2, callers_max=2)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert buckets.take("a", 0.5) == 0.0  # one token back after 0.5 s
    buckets.take("b", 0.5)
    buckets.take("c", 0.5)  # "a" is the idlest: forgotten, it starts full again
    assert buckets.take("a", 0.5) == 0.0 and buckets.take("a", 0.5) == 0.0


def test_healthz_and_metrics(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ready"
    api.producer.fail = True
    api.services.producer = api.producer
    body = assert_problem(api.client.get("/healthz"), 503, "NOT_READY")
    assert body["checks"]["broker"] == "not reachable"
    text = api.client.get("/metrics").text
    assert 'nexus_api_requests_total{method="GET",route="/healthz",status="503"} 1.0' in text
