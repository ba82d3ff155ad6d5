"""The committed OpenAPI document is the one the code generates (like contracts/schemas/ for the topics), and it
names the contracts' own schemas for the message bodies."""

from __future__ import annotations

import json

from contracts.models import AutoPayoutRule, BridgeRequest
from streams.api.main import OPENAPI_PATH, openapi_document


def test_the_committed_openapi_document_is_up_to_date() -> None:
    assert OPENAPI_PATH.read_text() == openapi_document(), "run: python -m streams.api openapi"


def test_message_bodies_are_the_contracts_schemas() -> None:
    doc = json.loads(openapi_document())
    schemas = doc["components"]["schemas"]
    bridge = BridgeRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["BridgeRequestBody"]["properties"] == bridge["properties"]
    assert set(bridge["required"]) - set(schemas["BridgeRequestBody"]["required"]) == {"request_id", "requested_at"}
    rule = AutoPayoutRule.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["AutoPayoutRuleBody"]["properties"] == rule["properties"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if method == "post" and path != "/oauth/token":
                assert any(p["name"] == "Idempotency-Key" and p["required"] for p in operation["parameters"]), path
            problems = [r for s, r in operation["responses"].items() if int(s) >= 400]
            assert problems and all("application/problem+json" in r["content"] for r in problems), (path, method)
