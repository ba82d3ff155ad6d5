"""contracts/asyncapi.json: generated from the registry, committed, and a valid AsyncAPI 3.0.0 document."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from contracts import asyncapi
from contracts.compat import contract_version
from contracts.topics import TOPICS, Component, PayloadTopic

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
# The official schema (npm @asyncapi/specs, schemas/3.0.0.json), vendored with its licence for offline runs.
OFFICIAL_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "asyncapi" / "3.0.0.json"


@pytest.fixture(scope="module")
def official() -> Draft7Validator:
    schema = json.loads(OFFICIAL_SCHEMA.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads((CONTRACTS / asyncapi.FILE_NAME).read_text())  # type: ignore[no-any-return]


def test_the_committed_document_is_generated_from_the_registry() -> None:
    committed = (CONTRACTS / asyncapi.FILE_NAME).read_text()
    assert committed == asyncapi.render(), "contracts/asyncapi.json is stale: run `python -m contracts`"


def test_it_is_a_valid_asyncapi_3_document(official: Draft7Validator, document: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in official.iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d.update(asyncapi="2.6.0"),
        lambda d: d["channels"]["energy.orders"]["bindings"]["kafka"].update(partitions=0),
        lambda d: d["operations"]["matching.receive.energy.orders"].update(action="consume"),
        lambda d: d["info"].pop("version"),
    ],
    ids=["version", "partitions", "action", "info"],
)
def test_the_official_schema_catches_a_spoiled_document(official, document, spoil) -> None:  # type: ignore[no-untyped-def]
    spoiled = copy.deepcopy(document)
    spoil(spoiled)
    assert not official.is_valid(spoiled)


def test_channels_are_the_topics(document: dict[str, Any]) -> None:
    assert document["info"]["version"] == contract_version()
    assert set(document["channels"]) == set(TOPICS)
    for t in TOPICS.values():
        ch = document["channels"][t.name]
        kafka = ch["bindings"]["kafka"]
        assert ch["address"] == t.name and kafka["topic"] == t.name
        assert kafka["partitions"] == t.partitions and ch["x-key"] == t.key_field
        config = kafka["topicConfiguration"]
        assert {k: str(v[0]) if k == "cleanup.policy" else str(v) for k, v in config.items()} == t.topic_config()
        assert ch["x-max-value-bytes"] == t.max_message_bytes
        payload = document["components"]["messages"][t.name]["payload"]
        if isinstance(t, PayloadTopic):
            assert document["components"]["messages"][t.name]["contentType"] == "application/gzip"
        else:
            assert payload["schemaFormat"] == asyncapi.SCHEMA_FORMAT
            assert (CONTRACTS / payload["schema"]["$ref"]).is_file()  # the committed schema file


def test_operations_say_who_sends_and_who_receives(document: dict[str, Any]) -> None:
    sent: dict[str, set[str]] = {}
    received: dict[str, set[str]] = {}
    for op in document["operations"].values():
        topic = op["channel"]["$ref"].rsplit("/", 1)[-1]
        (sent if op["action"] == "send" else received).setdefault(topic, set()).update(t["name"] for t in op["tags"])
        assert op["messages"] == [{"$ref": f"#/channels/{topic}/messages/{topic}"}]
    for t in TOPICS.values():
        assert sent.get(t.name, set()) == {str(c) for c in t.producers}, t.name
        assert received.get(t.name, set()) == {str(c) for c in t.consumers}, t.name
    assert sent["energy.orders"] == {str(Component.UPSTREAM)} and received["energy.orders.events"] == {"upstream"}
