"""The OpenAPI 3.1 document: each operation's parameters, bodies, answers and scopes, and the schemas they name.

Bodies and answers that are messages are the contracts' own JSON Schemas (``contracts.models``, the same that
``contracts/schemas/`` publishes); the API's own shapes are ``streams.api.schemas``. The document is committed as
``streams/api/openapi.json`` (``python -m streams.api openapi`` writes it; ``tests/unit/test_api_openapi.py`` fails
when it drifts from the code).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, cast
from urllib.parse import parse_qs, unquote

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from contracts.models import AutoPayoutRule, BridgeRequest, BridgeSettlementCompleted, BridgeSettlementFailed
from contracts.types import Id
from streams.api import schemas
from streams.api.auth import SCOPES
from streams.api.problems import COMMON_STATUSES, FieldError, Problem, problem_responses

API_VERSION = "1.0.0"
ID_PATTERN: str = TypeAdapter(Id).json_schema()["pattern"]
ID_RE = re.compile(ID_PATTERN)
REF = "#/components/schemas/{model}"

DESCRIPTION = """The NEXUS-X settlement API (spec §10.B): settle card payments over the High-Speed Bridge, manage
auto-payout rules, read settlement statuses and history, and trigger the daily reconciliation.

**Auth**: OAuth2 client credentials. `POST /oauth/token` trades a client's id and secret for a bearer token (a JWT,
HS256, 15 minutes by default) whose scopes come from the client's roles: merchant (`settlements:write`,
`settlements:read`: its own card payments only), producer (`rules:write`, `rules:read`), analyst
(`settlements:read_all`), operations (`reconcile:write`, `reconcile:read`).

**Idempotency**: every POST needs an `Idempotency-Key` header. The same key with the same request replays the stored
answer (`Idempotent-Replayed: true`); with another request it is refused (422 `IDEMPOTENCY_KEY_REUSED`); while the
first is still running, 409 `IDEMPOTENCY_KEY_IN_USE`. Keys are kept 24 hours. A card payment's `request_id`
defaults to the key, an auto-payout rule's `rule_id` too.

**Errors**: RFC 9457 problem details (`application/problem+json`) with a `code`: the dead letters' reason codes for a
message the contract refuses (MISSING_FIELD, WRONG_TYPE, ...), the payouts service's for a rule that cannot work,
and the API's own (UNAUTHENTICATED, RATE_LIMITED, ...). Each client has a rate limit (429 with `Retry-After`);
bodies are bounded (413 `OVERSIZED`).
"""

IDEMPOTENCY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "unique per request (a UUID will do); the same key repeats the request's answer for 24 hours",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID_PATTERN},
}
LOCATION_HEADER = {"Location": {"description": "where to read the state", "schema": {"type": "string"}}}
REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "true: the stored answer of an earlier request with this key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _json(model: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _operation(
    scopes: list[str] | None,
    answers: dict[int | str, dict[str, Any]],
    problems: tuple[int, ...],
    body: str | None = None,
    idempotent: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """FastAPI route arguments: the answers, problems, body, Idempotency-Key and security of one operation."""
    openapi_extra: dict[str, Any] = {"security": [{"oauth2": scopes}] if scopes is not None else []}
    if body is not None:
        openapi_extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=body)}}},
        }
    if idempotent:
        openapi_extra["parameters"] = [IDEMPOTENCY_PARAMETER]
    return {
        "responses": {**answers, **problem_responses(*sorted({*problems, *COMMON_STATUSES}))},
        "openapi_extra": openapi_extra,
        **extra,
    }


SETTLED = _json(
    "Settlement", "the bridge answered in time: COMPLETED, or FAILED with its phase and reason", REPLAYED_HEADER
)
STILL_OPEN = _json(
    "Settlement",
    "sent; no answer within the wait (NEXUS_API_BRIDGE_WAIT_S): PENDING, read it at Location",
    {**LOCATION_HEADER, **REPLAYED_HEADER},
)
TOKEN_OPERATION: dict[str, Any] = {
    "responses": {
        200: _json("TokenResponse", "a bearer token"),
        **problem_responses(400, 401, 413, *COMMON_STATUSES),
    },
    "openapi_extra": {
        "security": [],
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": {"$ref": REF.format(model="TokenRequest")}},
                "application/json": {"schema": {"$ref": REF.format(model="TokenRequest")}},
            },
        },
    },
}
BRIDGE_OPERATION = _operation(
    ["settlements:write"],
    {200: SETTLED, 202: STILL_OPEN},
    (400, 401, 403, 409, 413, 422, 503),
    "BridgeRequestBody",
    idempotent=True,
    summary="Settle a card payment",
    description="Validates the body with the `bridge.requests` contract (`BridgeRequest`; `request_id` defaults to "
    "the Idempotency-Key and `requested_at` to the API's clock), sends it (acks=all, keyed by payer_account_id) and "
    "waits up to NEXUS_API_BRIDGE_WAIT_S (2 s) for the bridge's answer. The bridge settles each request_id once: "
    "repeating a request never pays twice. `merchant_id` must be the token's merchant.",
)
STATUS_OPERATION = _operation(
    ["settlements:read"],
    {200: _json("Settlement", "the settlement's state")},
    (401, 403, 404, 422),
    summary="A settlement's state",
    description="A card payment (request_id) or, for analysts, a holder payout (payout_id). A merchant sees only "
    "its own card payments: another's id answers 404, as an unknown one does.",
)
HISTORY_OPERATION = _operation(
    ["settlements:read"],
    {200: _json("HistoryPage", "one page, newest first")},
    (401, 403, 422),
    summary="Settlements, filtered, by pages",
    description="A merchant's own card payments (analysts: everyone's, and payouts), newest first by the order the "
    "read model first saw them. Pages are stable: settlements arriving meanwhile never shift a later page.",
)
RULE_POST_OPERATION = _operation(
    ["rules:write"],
    {200: _json("AutoPayoutRule", "the rule as written to payouts.rules", LOCATION_HEADER)},
    (400, 401, 403, 409, 413, 422, 503),
    "AutoPayoutRuleBody",
    idempotent=True,
    summary="Create or replace an auto-payout rule",
    description="Validates with the `payouts.rules` contract (`AutoPayoutRule`; `rule_id` defaults to the "
    "Idempotency-Key) and with the payouts service's own checks (a rule it would dead-letter is refused with its "
    "code), then writes it to the compacted topic: a rule with the same rule_id is replaced.",
)
RULE_GET_OPERATION = _operation(
    ["rules:read"],
    {200: _json("AutoPayoutRule", "the rule")},
    (401, 403, 404, 422, 503),
    summary="An auto-payout rule",
)
RULE_DELETE_OPERATION = _operation(
    ["rules:write"],
    {204: {"description": "deleted (a tombstone on payouts.rules)"}},
    (401, 403, 404, 413, 422, 503),
    status_code=204,
    summary="Delete an auto-payout rule",
)
RECONCILE_POST_OPERATION = _operation(
    ["reconcile:write"],
    {202: _json("ReconcileRun", "the DAG run Airflow created", LOCATION_HEADER)},
    (400, 401, 403, 409, 413, 422, 502, 503),
    "ReconcileRequest",
    idempotent=True,
    status_code=202,
    summary="Reconcile a day",
    description="Triggers the `daily_reconciliation` DAG for `day` through Airflow's REST API.",
)
RECONCILE_GET_OPERATION = _operation(
    ["reconcile:read"],
    {200: _json("ReconcileRun", "the run's state in Airflow")},
    (401, 403, 404, 422, 502, 503),
    summary="A reconciliation run",
)
HEALTH_OPERATION = _operation(
    None,
    {200: _json("Health", "ready")},
    (503,),
    summary="Readiness",
    description="Ready when the broker answers, the API's topic follower has read payouts.rules, and the status "
    "read model is fresh. No credential needed; it tells nothing about settlements.",
)
METRICS_OPERATION = _operation(
    None,
    {200: {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    (),
    summary="Prometheus metrics",
    description="No credential needed; loopback unless NEXUS_API_HOST says otherwise.",
)


class TokenRequest(BaseModel):
    """RFC 6749 §4.4.2; the client may authenticate with HTTP Basic instead of client_id / client_secret."""

    grant_type: str = "client_credentials"
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None


def token_form(body: bytes, content_type: str) -> dict[str, str]:
    """The token request's fields (a form, or JSON), each its first value."""
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items()}


def client_credentials(form: dict[str, str], authorization: str | None) -> tuple[str, str]:
    """(client id, secret) from HTTP Basic (RFC 6749 §2.3.1: each form-url-encoded) or the form."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            user, _, secret = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
            return unquote(user), unquote(secret)
        except (ValueError, UnicodeDecodeError):
            return "", ""
    return form.get("client_id", ""), form.get("client_secret", "")


def _components() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [
        (schemas.Settlement, "serialization"),
        (schemas.HistoryPage, "serialization"),
        (schemas.TokenResponse, "serialization"),
        (schemas.ReconcileRequest, "validation"),
        (schemas.ReconcileRun, "serialization"),
        (schemas.Health, "serialization"),
        (TokenRequest, "validation"),
        (Problem, "serialization"),
        (FieldError, "serialization"),
        (BridgeRequest, "validation"),
        (AutoPayoutRule, "validation"),
        (BridgeSettlementCompleted, "serialization"),
        (BridgeSettlementFailed, "serialization"),
    ]
    mapping, top = models_json_schema(models, ref_template=REF)
    found: dict[str, Any] = dict(top.get("$defs", {}))
    bodies = {
        "BridgeRequestBody": (
            BridgeRequest,
            ("request_id", "requested_at"),
            "A `BridgeRequest` (bridge.requests); "
            "`request_id` defaults to the Idempotency-Key, `requested_at` to the API's clock.",
        ),
        "AutoPayoutRuleBody": (
            AutoPayoutRule,
            ("rule_id",),
            "An `AutoPayoutRule` (payouts.rules); `rule_id` defaults to the Idempotency-Key.",
        ),
    }
    for name, (model, optional, description) in bodies.items():
        ref = mapping[(cast(Any, model), "validation")]["$ref"].rsplit("/", 1)[-1]
        body = json.loads(json.dumps(found[ref]))
        body["required"] = [f for f in body.get("required", []) if f not in optional]
        body["title"], body["description"] = name, description
        found[name] = body
    return found


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (cached on the app)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(_components())
    components["securitySchemes"] = {
        "oauth2": {
            "type": "oauth2",
            "description": "client credentials; the token is a JWT sent as `Authorization: Bearer <token>`",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": SCOPES}},
        }
    }
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation.get("responses", {}).pop("default", None)
    app.openapi_schema = doc
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
