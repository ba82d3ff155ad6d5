"""The settlement API's routes (spec §10.B): card payments, auto-payout rules, statuses, history, reconciliation.

Everything a route needs is handed in (:class:`Services`, built by ``streams.api.main``); nothing is built at
import time. Every POST goes through :func:`idempotent` (Idempotency-Key); every error is a problem
(``streams.api.problems``); the caller's token was verified by the middleware (``streams.api.middleware``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from contracts.models import AutoPayoutRule, BridgeRequest, BridgeSettlementCompleted, BridgeSettlementFailed
from contracts.topics import BRIDGE_REQUESTS, BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED, PAYOUT_RULES
from domain.payouts import validate_rule
from domain.rails import Rail
from domain.settlement_status import InvalidCursor
from streams.api import openapi
from streams.api.airflow import AirflowClient, run_id_for
from streams.api.auth import Principal, TokenIssuer, unauthenticated
from streams.api.follower import RulesView, Waiters
from streams.api.idempotency import Accepted, IdempotencyStore, Stored, fingerprint
from streams.api.middleware import ApiMetrics, Gate, TokenBuckets
from streams.api.problems import ApiProblem, problem_response
from streams.api.schemas import Kind, ReconcileRequest, Settlement, State
from streams.api.settings import ApiSettings
from streams.api.status_view import StatusReader, from_accepted, from_answer, from_record
from streams.kafka import ingress
from streams.kafka.ingress import classify  # the dead letters' field codes
from streams.payouts.service import to_rule

log = logging.getLogger("nexus.api")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
HISTORY_LIMIT_MAX = 500  # the read model's own bound (streams.status.store.HISTORY_LIMIT_MAX)
ANSWER_TOPICS = {
    BRIDGE_SETTLEMENTS_COMPLETED.name: BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED.name: BRIDGE_SETTLEMENTS_FAILED,
}


class Producer(Protocol):
    async def send(self, topic: str, key: bytes, value: bytes | None) -> int:
        """Produce and wait for the broker's ack (raises on failure or timeout); the record's offset."""
        ...

    async def reachable(self) -> bool: ...


@dataclass
class Services:
    settings: ApiSettings
    tokens: TokenIssuer
    keys: IdempotencyStore
    status: StatusReader
    producer: Producer
    waiters: Waiters
    rules: RulesView
    rules_ready: Callable[[], bool]
    follower_error: Callable[[], str | None]
    airflow: AirflowClient
    metrics: ApiMetrics
    max_ingress_bytes: int = 64 * 1024
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


def caller(request: Request) -> Principal:
    """The principal the middleware verified, or 401."""
    state = request.scope.get("state", {})
    principal = state.get("principal")
    if principal is not None:
        return principal  # type: ignore[no-any-return]
    problem = state.get("auth_problem")
    raise (
        problem
        if problem is not None
        else unauthenticated("no credential: send Authorization: Bearer <token> (POST /oauth/token issues one)")
    )


Caller = Annotated[Principal, Depends(caller)]


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers, media_type="application/json")


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 422 MALFORMED_JSON / WRONG_TYPE."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem(422, "MALFORMED_JSON", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiProblem(422, "WRONG_TYPE", "the body must be a JSON object")
    return data


def validated(topic: Any, key: str, data: dict[str, Any], max_bytes: int) -> Any:
    """The message as the topic's contract reads it (the same check, codes and words as a dead letter), or 422."""
    verdict = ingress.validate(topic, key.encode() or b"-", orjson.dumps(data), max_bytes)
    if isinstance(verdict, ingress.Rejected):
        raise ApiProblem(422, verdict.code, verdict.reason, errors=verdict.errors)
    return verdict


async def idempotent(
    request: Request, services: Services, principal: Principal, run: Callable[[bytes, str], Awaitable[Response]]
) -> Response:
    """Run a POST once per Idempotency-Key (see streams.api.idempotency); replay its stored response after."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        raise ApiProblem(
            400,
            "IDEMPOTENCY_KEY_MISSING",
            "every POST needs an Idempotency-Key header (1-128 "
            "letters, digits and ._:/@-, unique per request: a UUID will do)",
        )
    if len(key) > 128 or not openapi.ID_RE.match(key):
        raise ApiProblem(
            400,
            "INVALID_FORMAT",
            "Idempotency-Key must be 1-128 letters, digits and ._:/@-, starting with a letter or digit",
        )
    body = await request.body()
    stored = services.keys.begin(
        principal.client_id, key, fingerprint(request.method, request.url.path, body), time.time()
    )
    if stored is not None:
        services.metrics.replayed.inc()
        return Response(stored.body, stored.status, {**stored.headers, REPLAYED_HEADER: "true"})
    try:
        response = await run(body, key)
    except BaseException:
        services.keys.release(principal.client_id, key)
        raise
    if response.status_code >= 400:
        services.keys.release(principal.client_id, key)
        return response
    headers = {k: v for k, v in response.headers.items() if k in ("content-type", "location")}
    services.keys.finish(principal.client_id, key, Stored(response.status_code, headers, bytes(response.body)))
    return response


async def produce(services: Services, topic: Any, key: str, value: bytes | None) -> int:
    try:
        offset = await asyncio.wait_for(
            services.producer.send(topic.name, key.encode(), value), services.settings.produce_timeout_s
        )
    except Exception as exc:  # not acknowledged: nothing is known to be sent; the key is released
        log.warning("produce to %s failed: %s: %s", topic.name, type(exc).__name__, exc)
        raise ApiProblem(
            503,
            "BROKER_UNAVAILABLE",
            f"{topic.name} did not acknowledge the message in time; retry with the same Idempotency-Key",
            headers={"Retry-After": "1"},
        ) from None
    services.metrics.produced.labels(topic.name).inc()
    return offset


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="NEXUS-X settlement API",
        version=openapi.API_VERSION,
        description=openapi.DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    _add_error_handlers(app)
    _add_token_route(app, services)
    _add_bridge_routes(app, services)
    _add_rule_routes(app, services)
    _add_reconcile_routes(app, services)
    _add_operations_routes(app, services)
    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    return app


def assemble(services: Services) -> FastAPI:
    """The app behind its middleware (streams.api.middleware.Gate): what serves."""
    api = services.settings
    app = create_app(services)
    app.add_middleware(
        Gate,  # type: ignore[arg-type]
        tokens=services.tokens,
        buckets=TokenBuckets(api.rate_per_s, api.rate_burst, api.rate_buckets_max),
        body_bytes_max=api.body_bytes_max,
        metrics=services.metrics,
    )
    return app


# ------------------------------------------------------------------------------------------------ errors


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def on_problem(request: Request, problem: ApiProblem) -> Response:
        return problem_response(problem, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [classify(dict(e))[1] for e in exc.errors()]
        first = errors[0]
        problem = ApiProblem(422, first["code"], f"{first['field']}: {first['message']}", errors=errors)
        return problem_response(problem, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            problem = ApiProblem(
                405, "METHOD_NOT_ALLOWED", f"{request.method} is not answered here", headers=dict(exc.headers or {})
            )
        elif exc.status_code == 404:
            problem = ApiProblem(404, "NOT_FOUND", f"no resource at {request.url.path}")
        else:
            problem = ApiProblem(exc.status_code, "PROCESSING_ERROR", str(exc.detail))
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        problem = ApiProblem(500, "PROCESSING_ERROR", f"the API failed: {type(exc).__name__}; nothing was sent")
        return problem_response(problem, request.url.path)


# ------------------------------------------------------------------------------------------------ tokens


def _add_token_route(app: FastAPI, services: Services) -> None:
    @app.post("/oauth/token", tags=["auth"], **openapi.TOKEN_OPERATION)
    async def token(request: Request) -> Response:
        """OAuth2 client credentials (RFC 6749 §4.4): trade the client's id and secret for a bearer token."""
        form = openapi.token_form(await request.body(), request.headers.get("content-type", ""))
        client_id, secret = openapi.client_credentials(form, request.headers.get("authorization"))
        if form.get("grant_type") != "client_credentials":
            raise ApiProblem(
                400,
                "INVALID_GRANT_TYPE",
                "grant_type must be client_credentials",
                extra={"error": "unsupported_grant_type"},
            )
        issued = services.tokens.issue(client_id, secret, form.get("scope"))
        return json_response(200, orjson.dumps(issued), {"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------------------------ card payments


def _add_bridge_routes(app: FastAPI, services: Services) -> None:
    @app.post("/api/settlement/bridge", tags=["settlements"], **openapi.BRIDGE_OPERATION)
    async def settle(request: Request, principal: Caller) -> Response:
        principal.require("settlements:write")

        async def run(body: bytes, key: str) -> Response:
            return await _settle(services, principal, parse_object(body), key)

        return await idempotent(request, services, principal, run)

    @app.get("/api/settlement/status/{settlement_id}", tags=["settlements"], **openapi.STATUS_OPERATION)
    async def status(principal: Caller, settlement_id: Annotated[str, Path(max_length=128)]) -> Response:
        principal.require("settlements:read", "settlements:read_all")
        found = _visible_status(services, principal, settlement_id)
        if found is None:
            raise ApiProblem(404, "NOT_FOUND", f"no settlement {settlement_id} of yours")
        return json_response(200, found.model_dump_json().encode())

    @app.get("/api/settlement/history", tags=["settlements"], **openapi.HISTORY_OPERATION)
    async def history(
        principal: Caller,
        created_from: Annotated[datetime | None, Query(description="inclusive; with an offset")] = None,
        created_to: Annotated[datetime | None, Query(description="exclusive; with an offset")] = None,
        state: Annotated[State | None, Query()] = None,
        currency: Annotated[str | None, Query(max_length=3)] = None,
        rail: Annotated[Rail | None, Query()] = None,
        kind: Annotated[Kind | None, Query()] = None,
        owner_id: Annotated[str | None, Query(max_length=128, description="analysts: one owner's only")] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=HISTORY_LIMIT_MAX)] = 50,
    ) -> Response:
        principal.require("settlements:read", "settlements:read_all")
        if "settlements:read_all" not in principal.scopes:
            owner_id, kind = principal.subject, "BRIDGE"  # a merchant sees its own card payments, nothing else
        for name, moment in (("created_from", created_from), ("created_to", created_to)):
            if moment is not None and moment.tzinfo is None:
                raise ApiProblem(422, "NAIVE_TIMESTAMP", f"{name} must carry a UTC offset (e.g. Z)")
        try:
            records, next_cursor = services.status.history(
                owner_id,
                created_from=created_from,
                created_to=created_to,
                state=state,
                currency=currency,
                rail=rail.value if rail is not None else None,
                kind=kind,
                cursor=cursor,
                limit=limit,
            )
        except InvalidCursor as exc:
            raise ApiProblem(422, "INVALID_CURSOR", f"{exc}: start again without a cursor") from None
        items = [from_record(r).model_dump(mode="json") for r in records]
        return json_response(200, orjson.dumps({"items": items, "next_cursor": next_cursor}))


def _visible_status(services: Services, principal: Principal, settlement_id: str) -> Settlement | None:
    """The status if the caller may see it: analysts every one, a merchant its own card payments only."""
    everyone = "settlements:read_all" in principal.scopes
    record = services.status.get(settlement_id)
    if record is not None:
        if everyone or (record.kind == "BRIDGE" and record.owner_id == principal.subject):
            return from_record(record)
        return None
    accepted = services.keys.accepted(settlement_id)  # sent by this API, not in the read model yet
    if accepted is not None and (everyone or accepted.owner_id == principal.subject):
        return from_accepted(accepted)
    return None


async def _settle(services: Services, principal: Principal, data: dict[str, Any], key: str) -> Response:
    if "payout" in data:
        raise ApiProblem(
            422,
            "INVALID_VALUE",
            "payout is set by the auto-payout service only; use POST /api/settlement/auto-payout for holders' payouts",
            errors=[{"field": "payout", "code": "INVALID_VALUE", "message": "not accepted here"}],
        )
    data.setdefault("request_id", key)
    data.setdefault("requested_at", services.now().isoformat())
    payer = data.get("payer_account_id")
    request: BridgeRequest = validated(
        BRIDGE_REQUESTS, payer if isinstance(payer, str) else "", data, services.max_ingress_bytes
    )
    if request.merchant_id != principal.subject:
        raise ApiProblem(403, "NOT_YOUR_MERCHANT", f"this token settles for merchant {principal.subject} only")
    wait_s = services.settings.bridge_wait_s
    waiter = services.waiters.add(request.request_id) if wait_s > 0 else None
    try:
        await produce(services, BRIDGE_REQUESTS, request.payer_account_id, BRIDGE_REQUESTS.encode(request))
        accepted = Accepted(
            request.request_id,
            request.merchant_id,
            request.payer_account_id,
            request.currency.value,
            request.amount_minor,
            services.now().isoformat(),
        )
        services.keys.accept(accepted, time.time())
        answer = None
        if waiter is not None:
            try:
                answer = await asyncio.wait_for(asyncio.shield(waiter), wait_s)
            except TimeoutError:
                answer = None
    finally:
        if waiter is not None:
            services.waiters.discard(request.request_id, waiter)
    if answer is None:
        services.metrics.bridge_answers.labels("202").inc()
        location = f"/api/settlement/status/{request.request_id}"
        return json_response(202, from_accepted(accepted).model_dump_json().encode(), {"Location": location})
    topic_name, value = answer
    message: BridgeSettlementCompleted | BridgeSettlementFailed = ANSWER_TOPICS[topic_name].decode(value)
    services.metrics.bridge_answers.labels("200").inc()
    return json_response(200, from_answer(message, request).model_dump_json().encode())


# ------------------------------------------------------------------------------------------------ rules


def _add_rule_routes(app: FastAPI, services: Services) -> None:
    @app.post("/api/settlement/auto-payout", tags=["auto-payout rules"], **openapi.RULE_POST_OPERATION)
    async def put_rule(request: Request, principal: Caller) -> Response:
        principal.require("rules:write")

        async def run(body: bytes, key: str) -> Response:
            data = parse_object(body)
            data.setdefault("rule_id", key)
            rule_id = data["rule_id"]
            rule: AutoPayoutRule = validated(
                PAYOUT_RULES, rule_id if isinstance(rule_id, str) else "", data, services.max_ingress_bytes
            )
            problem = validate_rule(to_rule(rule))
            if problem is not None:  # what the payouts service would dead-letter it for
                raise ApiProblem(422, str(problem.code), f"{PAYOUT_RULES.name}: {problem.reason}")
            value = PAYOUT_RULES.encode(rule)
            await produce(services, PAYOUT_RULES, rule.rule_id, value)
            services.rules.wrote(rule.rule_id, value)
            return json_response(200, value, {"Location": f"/api/settlement/auto-payout/{rule.rule_id}"})

        return await idempotent(request, services, principal, run)

    @app.get("/api/settlement/auto-payout/{rule_id}", tags=["auto-payout rules"], **openapi.RULE_GET_OPERATION)
    async def get_rule(principal: Caller, rule_id: Annotated[str, Path(max_length=128)]) -> Response:
        principal.require("rules:read", "rules:write")
        value = _rule(services, rule_id)
        return json_response(200, value)

    @app.delete("/api/settlement/auto-payout/{rule_id}", tags=["auto-payout rules"], **openapi.RULE_DELETE_OPERATION)
    async def delete_rule(principal: Caller, rule_id: Annotated[str, Path(max_length=128)]) -> Response:
        principal.require("rules:write")
        _rule(services, rule_id)
        await produce(services, PAYOUT_RULES, rule_id, None)  # a tombstone: the compacted topic forgets the rule
        services.rules.wrote(rule_id, None)
        return Response(status_code=204)


def _rule(services: Services, rule_id: str) -> bytes:
    """The rule's record as the view holds it (a valid rule), or 404; 503 while the view is loading."""
    if not services.rules_ready():
        raise ApiProblem(
            503, "NOT_READY", "the rules view is still reading payouts.rules", headers={"Retry-After": "1"}
        )
    value = services.rules.get(rule_id)
    if value is not None:
        try:
            PAYOUT_RULES.decode(value)
            return value
        except ValidationError:
            pass  # an invalid record is no rule (the payouts service dead-letters it)
    raise ApiProblem(404, "NOT_FOUND", f"no auto-payout rule {rule_id}")


# ------------------------------------------------------------------------------------------------ reconciliation


def _add_reconcile_routes(app: FastAPI, services: Services) -> None:
    @app.post("/api/settlement/reconcile", tags=["reconciliation"], **openapi.RECONCILE_POST_OPERATION)
    async def reconcile(request: Request, principal: Caller) -> Response:
        principal.require("reconcile:write")

        async def run(body: bytes, key: str) -> Response:
            try:
                asked = ReconcileRequest.model_validate_json(body)
            except ValidationError as exc:
                errors = [classify(dict(e))[1] for e in exc.errors(include_url=False)]
                raise ApiProblem(
                    422, errors[0]["code"], f"{errors[0]['field']}: {errors[0]['message']}", errors=errors
                ) from None
            today = services.now().astimezone(UTC).date()
            if asked.day > today:
                raise ApiProblem(422, "OUT_OF_RANGE", f"day {asked.day} has not come yet (today is {today} UTC)")
            run_id = run_id_for(asked.day, principal.client_id, key)
            started = await services.airflow.trigger(asked.day, run_id, principal.client_id)
            return json_response(202, orjson.dumps(started), {"Location": f"/api/settlement/reconcile/{run_id}"})

        return await idempotent(request, services, principal, run)

    @app.get("/api/settlement/reconcile/{run_id}", tags=["reconciliation"], **openapi.RECONCILE_GET_OPERATION)
    async def reconcile_run(
        principal: Caller, run_id: Annotated[str, Path(max_length=250, pattern=r"^[A-Za-z0-9_.~:+-]+$")]
    ) -> Response:
        principal.require("reconcile:read", "reconcile:write")
        return json_response(200, orjson.dumps(await services.airflow.run(run_id)))


# ------------------------------------------------------------------------------------------------ operations


def _add_operations_routes(app: FastAPI, services: Services) -> None:
    @app.get("/healthz", tags=["operations"], **openapi.HEALTH_OPERATION)
    async def healthz() -> Response:
        checks, ready = await readiness(services)
        if not ready:
            raise ApiProblem(
                503,
                "NOT_READY",
                "; ".join(f"{k}: {v}" for k, v in checks.items()),
                headers={"Retry-After": "1"},
                extra={"checks": checks},
            )
        return json_response(200, orjson.dumps({"status": "ready", "checks": checks}))

    @app.get("/metrics", tags=["operations"], **openapi.METRICS_OPERATION)
    async def metrics() -> Response:
        return Response(generate_latest(services.metrics.registry), 200, media_type=CONTENT_TYPE_LATEST)


async def readiness(services: Services) -> tuple[dict[str, str], bool]:
    """The broker reachable, the topic follower up, the status read model fresh."""
    checks: dict[str, str] = {}
    ok = await services.producer.reachable()
    checks["broker"] = "reachable" if ok else "not reachable"
    error = services.follower_error()
    follower_ok = error is None and services.rules_ready()
    checks["follower"] = error or ("ready" if follower_ok else "loading payouts.rules")
    fresh, said = status_fresh(services)
    checks["status_read_model"] = said
    return checks, ok and follower_ok and fresh


def status_fresh(services: Services) -> tuple[bool, str]:
    f = services.status.freshness()
    if not f.present:
        return False, "no read model file yet (is python -m streams.status running?)"
    if f.lag_checked_at is None or f.lag is None:
        return False, "the status service has not measured its lag yet"
    age_s = (services.now() - f.lag_checked_at).total_seconds()
    settings = services.settings
    if age_s > settings.status_heartbeat_max_s:
        return False, f"the status service last looked at the topics {age_s:.0f} s ago"
    if f.lag > settings.status_lag_records_max:
        return False, f"{f.lag} records behind the topics"
    return True, f"{f.lag} records behind, checked {age_s:.1f} s ago"
