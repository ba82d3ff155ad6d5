"""Every error the API answers, in one shape: RFC 9457 problem details (``application/problem+json``).

``code`` is machine-readable: a body refused by the contract carries the reason code its dead letter would carry
(``contracts.reason_codes.REASON_CODES``: MISSING_FIELD, WRONG_TYPE, ...), a rule that cannot work the payouts
service's code (PROVIDER_NOT_OFFERED, ...), and the API's own refusals the codes of ``API_CODES`` below.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from contracts.reason_codes import REASON_CODES

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://schemas.nexus-x.io/api/problems/"

# The API's own codes (docs/api.md lists them with their statuses).
API_CODES: dict[str, str] = {
    "UNAUTHENTICATED": "no bearer token, or one that is not ours (bad signature, issuer, audience, malformed)",
    "TOKEN_EXPIRED": "the bearer token has expired: ask /oauth/token for a new one",
    "INVALID_CLIENT": "unknown client id or wrong secret (POST /oauth/token)",
    "INVALID_GRANT_TYPE": "only grant_type=client_credentials is offered (POST /oauth/token)",
    "INVALID_SCOPE": "a scope the client's roles do not grant was asked for (POST /oauth/token)",
    "INSUFFICIENT_SCOPE": "the token lacks the scope this operation needs",
    "NOT_YOUR_MERCHANT": "a merchant may settle only for its own merchant_id (the token's subject)",
    "NOT_FOUND": "no such resource, or not one of yours",
    "METHOD_NOT_ALLOWED": "the resource does not answer this method",
    "IDEMPOTENCY_KEY_MISSING": "every POST needs an Idempotency-Key header",
    "IDEMPOTENCY_KEY_REUSED": "this Idempotency-Key was used with another request (method, path or body)",
    "IDEMPOTENCY_KEY_IN_USE": "a request with this Idempotency-Key is still being processed: retry later",
    "RATE_LIMITED": "too many requests from this client: wait Retry-After seconds",
    "INVALID_CURSOR": "the history cursor is not one this API gave (or is from before the read model was rebuilt)",
    "BROKER_UNAVAILABLE": "Kafka did not acknowledge the message in time: retry with the same key",
    "AIRFLOW_UNAVAILABLE": "Airflow's REST API is not configured or did not answer",
    "AIRFLOW_REFUSED": "Airflow refused the request (its words are in `detail`)",
    "NOT_READY": "the API cannot serve yet (the broker or the read model is not there)",
}
# OVERSIZED (413), MALFORMED_JSON and the field codes (422), PROCESSING_ERROR (500) are the dead letters' own.
assert not set(API_CODES) & set(REASON_CODES)

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class FieldError(BaseModel):
    model_config = ConfigDict(extra="allow")

    field: str = Field(description="dotted path of the field, e.g. `payout.amount_kaus_units`")
    code: str = Field(description="the reason code of this field's error")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, with the reason code in ``code``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a URI naming the kind of problem (ends with the code)")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="what went wrong and what to do, for a person")
    code: str = Field(description="machine-readable reason code (the dead letters' codes, or the API's own)")
    instance: str | None = Field(default=None, description="the request path")
    errors: list[FieldError] | None = Field(default=None, description="one entry per failing field")


class ApiProblem(Exception):
    """Raised anywhere in a request: answered as a problem (see `problem_response`)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}


def problem_body(problem: ApiProblem, instance: str | None) -> bytes:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + problem.code,
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    if instance is not None:
        body["instance"] = instance
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extra)
    return orjson.dumps(body)


def problem_response(problem: ApiProblem, instance: str | None = None) -> Response:
    return Response(problem_body(problem, instance), problem.status, problem.headers, media_type=PROBLEM_JSON)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of these statuses: each a problem (components.schemas.Problem)."""
    ref = {"$ref": "#/components/schemas/Problem"}
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": TITLES[status], "content": {PROBLEM_JSON: {"schema": ref}}}
        if status == 429:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}}
        out[status] = entry
    return out


# Every operation can answer these (the middleware's and the handlers' refusals).
COMMON_STATUSES = (429, 500)
