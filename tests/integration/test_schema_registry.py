"""A producer using a schema registry (Confluent's wire format) is accepted at ingress: the local Apicurio Registry
(infra/schema_registry) holds the committed schemas for the producer's serializer; the matching worker strips the
header and validates the JSON after it against the topic's contract, never asking the registry."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.topics import ENERGY_ORDER_EVENTS, ENERGY_ORDERS, PLATFORM_DEADLETTERS
from infra.kafka.broker import find_free_ports
from infra.schema_registry.registry import (
    SCHEMA_DIR,
    LocalSchemaRegistry,
    SchemaRegistryError,
    find_java,
    register_schemas,
)
from streams.kafka.wire_format import frame
from tests.unit.test_ingress import GOOD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    """The registry's Confluent-compatible URL and the ids of the committed schemas (subject -> id)."""
    try:
        find_java()
    except SchemaRegistryError as exc:
        pytest.skip(str(exc))
    port, management_port = find_free_ports(2)
    local = LocalSchemaRegistry(port=port, management_port=management_port, data_dir=tmp_path_factory.mktemp("sr"))
    local.start(timeout_s=180)  # the first run fetches the distribution (~160 MB) from Maven Central
    try:
        yield local.url, register_schemas(local.url)
    finally:
        local.stop()


def _order(run_id: str, suffix: str) -> dict[str, Any]:
    market = f"2026-11-24T10:00Z/T{run_id.upper()}"
    return {**GOOD, "order_id": f"{suffix}-{run_id}", "market_id": market, "account_id": f"acct-{run_id}"}


def _statuses(records: list[Any], order_ids: set[str]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for record in records:
        event = ENERGY_ORDER_EVENTS.decode(record.value)
        if event.order_id in order_ids:
            seen.setdefault(event.order_id, []).append(event.status)
    return seen


def test_registration_is_idempotent_and_covers_every_committed_schema(registry: tuple[str, dict[str, int]]) -> None:
    url, ids = registry
    committed = {p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert set(ids) == {f"{topic}-value" for topic in committed}
    assert register_schemas(url) == ids, "registering the same texts again keeps their ids"
    with urllib.request.urlopen(f"{url}/subjects/energy.orders-value/versions/latest") as resp:
        latest = json.loads(resp.read())
    assert latest["id"] == ids["energy.orders-value"] and latest["schemaType"] == "JSON"
    assert json.loads(latest["schema"]) == json.loads((SCHEMA_DIR / "energy.orders.schema.json").read_text())


def test_framed_orders_are_validated_by_their_json_whatever_their_schema_id(  # type: ignore[no-untyped-def]
    registry, kafka, worker_factory, run_id
) -> None:
    _url, ids = registry
    worker_factory(agents="matching")  # no registry setting: ingress never asks one
    framed, plain = _order(run_id, "framed"), _order(run_id, "plain")
    # The schema id is information only. Ingress validation must be a pure function of the record's bytes: a worker
    # that restarts replays its partitions through it to rebuild its state, and a verdict that depended on what a
    # registry answered (or whether it answered) could differ between live and replay. So an id no registry ever
    # issued, or the id of another topic's subject, is accepted when the JSON after it satisfies the topic's contract.
    unknown, foreign = _order(run_id, "unknown"), _order(run_id, "foreign")
    key = framed["market_id"].encode()
    kafka.produce_acked(ENERGY_ORDERS, key, frame(ids["energy.orders-value"], json.dumps(framed).encode()))
    kafka.produce_acked(ENERGY_ORDERS, key, json.dumps(plain).encode())
    kafka.produce_acked(ENERGY_ORDERS, key, frame(999_999, json.dumps(unknown).encode()))
    kafka.produce_acked(ENERGY_ORDERS, key, frame(ids["energy.prices-value"], json.dumps(foreign).encode()))
    # A framed order that breaks the contract gets the dead letter of its plain twin.
    bad, bad_twin = {**_order(run_id, "bad"), "side": "HOLD"}, {**_order(run_id, "bad-twin"), "side": "HOLD"}
    refused = {
        kafka.produce_acked(ENERGY_ORDERS, key, frame(ids["energy.orders-value"], json.dumps(bad).encode())),
        kafka.produce_acked(ENERGY_ORDERS, key, json.dumps(bad_twin).encode()),
    }
    wanted = {o["order_id"] for o in (framed, plain, unknown, foreign)}
    kafka.wait_for(ENERGY_ORDER_EVENTS, lambda rs: len(_statuses(rs, wanted)) == len(wanted), timeout_s=60)

    def ours(records: list[Any]) -> list[Any]:
        letters = (PLATFORM_DEADLETTERS.decode(r.value) for r in records)
        return [
            d for d in letters if d.source_topic == "energy.orders" and (d.source_partition, d.source_offset) in refused
        ]

    letters = ours(kafka.wait_for(PLATFORM_DEADLETTERS, lambda rs: len(ours(rs)) == 2, timeout_s=60))
    assert [d.reason_code for d in letters] == ["UNKNOWN_ENUM_VALUE", "UNKNOWN_ENUM_VALUE"]
    assert len({d.reason for d in letters}) == 1, "the same reason, framed or not"
    statuses = _statuses(kafka.read_all(ENERGY_ORDER_EVENTS), wanted | {bad["order_id"], bad_twin["order_id"]})
    assert statuses == {order_id: ["ACCEPTED"] for order_id in wanted}


def test_confluents_json_schema_serializer_is_accepted(  # type: ignore[no-untyped-def]
    registry, kafka, worker_factory, run_id
) -> None:
    # Needs authlib, joserfc and cachetools (requirements/platform.lock): imported here so the other tests run without.
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    url, ids = registry
    worker_factory(agents="matching")
    # A producer that only has the published schema: it serializes with the version we registered.
    schema = (SCHEMA_DIR / "energy.orders.schema.json").read_text()
    conf = {"auto.register.schemas": False, "use.latest.version": True}
    serializer = JSONSerializer(schema, SchemaRegistryClient({"url": url}), conf=conf)
    order = _order(run_id, "serde")
    value = serializer(order, SerializationContext(ENERGY_ORDERS.name, MessageField.VALUE))
    assert value[:5] == frame(ids["energy.orders-value"], b""), "magic byte and our id for energy.orders-value"
    kafka.produce_acked(ENERGY_ORDERS, order["market_id"].encode(), value)
    wanted = {order["order_id"]}
    kafka.wait_for(ENERGY_ORDER_EVENTS, lambda rs: _statuses(rs, wanted) == {order["order_id"]: ["ACCEPTED"]})
