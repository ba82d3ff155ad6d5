"""Property-based fuzzing of the settlement API's OpenAPI contract (schemathesis) against the running API: the
session broker, the status read model and ``python -m streams.api`` as processes.

For every operation of the committed document, cases generated from its schema (valid ones, then invalid ones:
wrong types, missing fields, values outside their ranges) are sent over HTTP with a token holding every scope. No
answer may be a 5xx, and every answer must be documented: its status, content type, headers and body schema.
Bounded: ``EXAMPLES`` cases per operation and mode (the fuzzing takes about a minute here, after the stack's start
and Airflow's, shared with tests/integration/test_api_airflow.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from streams.api.auth import Clients
from streams.api.main import OPENAPI_PATH
from tests.conftest import free_port
from tests.integration.test_api_airflow import Airflow, airflow_api, airflow_settings  # noqa: F401  (fixture)
from tests.integration.test_api_e2e import start_api, wait_ready
from tests.support.kafka_io import KafkaIO

pytestmark = pytest.mark.slow

EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_url(kafka: KafkaIO, worker_factory: Any, tmp_path: Path, airflow_api: Airflow) -> Iterator[tuple[str, str]]:
    """The API (no bridge: a card payment answers 202 at once; a real Airflow) and a token with every scope."""
    status_db = tmp_path / "status.sqlite3"
    worker_factory(module="streams.status", status_db_path=str(status_db), status_lag_every_s="0.5")
    secret = Clients(tmp_path / "worker" / "api").add(
        "fuzzer", ("merchant", "producer", "analyst", "operations"), "merchant-fuzz"
    )
    port = free_port()
    start_api(worker_factory, status_db, port, api_bridge_wait_s="0", api_rate_per_s="10000", api_rate_burst="10000",
              **airflow_settings(airflow_api, tmp_path))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=30) as http:
        wait_ready(http, url)
        response = http.post(f"{url}/oauth/token", data={"grant_type": "client_credentials"}, auth=("fuzzer", secret))
        assert response.status_code == 200, response.text
        yield url, response.json()["access_token"]


def test_every_answer_to_generated_requests_is_documented_and_none_is_a_5xx(api_url: tuple[str, str]) -> None:
    url, token = api_url
    served = httpx.get(f"{url}/openapi.json").json()
    assert served == json.loads(OPENAPI_PATH.read_text())  # the running API serves the committed document
    schema = schemathesis.openapi.from_dict(served)
    auth = {"Authorization": f"Bearer {token}"}
    tried: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid operation raises here
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, url, auth, tried)
    inputs = {  # an operation with no input (GET /healthz) is one case, however often it is generated
        f"{method.upper()} {path}": bool(op.get("parameters") or op.get("requestBody"))
        for path, methods in served["paths"].items()
        for method, op in methods.items()
    }
    assert tried.keys() == inputs.keys()
    assert all(count >= EXAMPLES for label, count in tried.items() if inputs[label]), tried


def fuzz(operation: Any, mode: GenerationMode, url: str, auth: dict[str, str], tried: dict[str, int]) -> None:
    """``EXAMPLES`` cases of one operation in one mode, each sent and its answer checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call(case: Any) -> None:
        case.call_and_validate(base_url=url, headers=auth, checks=CHECKS)
        tried[operation.label] = tried.get(operation.label, 0) + 1

    try:
        call()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, operation.label  # an operation with no input has no invalid one
