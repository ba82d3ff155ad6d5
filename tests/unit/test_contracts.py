"""Contracts: the registry is complete and consistent, schemas don't drift, money stays exact."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts import models as m
from contracts.examples import build
from contracts.topics import ENERGY_ORDERS, FX_RATES, TOPICS, schema_documents

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
NAME_RULE = r"^[a-z]+(\.[a-z_]+)+$"


def test_generated_schemas_match_committed_files() -> None:
    committed = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.schema.json")}
    generated = schema_documents()
    assert set(committed) == set(generated), "run `make schemas` and commit contracts/schemas/"
    drifted = [name for name, text in generated.items() if committed[name] != text]
    assert not drifted, f"schemas drifted from the models, run `make schemas`: {drifted}"


@pytest.mark.parametrize("topic", list(TOPICS.values()), ids=list(TOPICS))
def test_every_topic_is_well_formed(topic) -> None:  # type: ignore[no-untyped-def]
    import re

    assert re.match(NAME_RULE, topic.name), topic.name
    schema = topic.json_schema()
    assert schema["x-topic"]["key"] == topic.key_field
    # The key field exists on the value model (on every member of a union).
    text = json.dumps(schema)
    assert f'"{topic.key_field}"' in text or topic.key_field in {"transaction_id"}
    assert topic.partitions >= 1


def test_no_float_anywhere_in_money_schemas() -> None:
    """A producer reading the schema must never be told a money field is a JSON float."""
    for name, text in schema_documents().items():
        schema = json.loads(text)
        stack = [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                assert node.get("type") != "number", f"{name}: a field is typed as JSON number (float)"
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


def _submit(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "SUBMIT",
        "order_id": "o-1",
        "market_id": "2026-11-24T10:00Z/KR-SEOUL",
        "account_id": "acct-1",
        "side": "SELL",
        "order_type": "LIMIT",
        "price_units_per_kwh": 150_000,
        "quantity_wh": 1_000,
        "submitted_at": "2026-11-24T09:00:00+09:00",
    }
    base.update(over)
    return base


def test_timestamps_are_normalised_to_utc() -> None:
    order = ENERGY_ORDERS.decode(json.dumps(_submit()))
    assert order.submitted_at == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    assert order.submitted_at.utcoffset() == timedelta(0)


def test_round_trip_is_lossless() -> None:
    order = ENERGY_ORDERS.decode(json.dumps(_submit()))
    assert ENERGY_ORDERS.decode(ENERGY_ORDERS.encode(order)) == order


@pytest.mark.parametrize(
    "change",
    [
        {"price_units_per_kwh": 1.5},
        {"price_units_per_kwh": "150000"},
        {"price_units_per_kwh": None},  # LIMIT needs a price
        {"quantity_wh": -1},
        {"quantity_wh": 10**40},
        {"submitted_at": "2026-11-24T09:00:00"},
        {"side": "HOLD"},
        {"order_id": ""},
        {"order_id": "has space"},
        {"unexpected": 1},
    ],
)
def test_invalid_orders_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ENERGY_ORDERS.decode(json.dumps(_submit(**change)))


def test_market_order_must_not_carry_price() -> None:
    with pytest.raises(ValidationError, match="MARKET order must not carry"):
        ENERGY_ORDERS.decode(json.dumps(_submit(order_type="MARKET")))


def test_rates_are_exact_decimal_strings() -> None:
    quote = {"quote_id": "q1", "source": "REUTERS", "quote": "USD", "rate": "0.1500", "as_of": "2026-11-23T00:00:00Z"}
    decoded = FX_RATES.decode(json.dumps(quote))
    assert decoded.rate == Decimal("0.1500")
    assert json.loads(FX_RATES.encode(decoded))["rate"] == "0.1500"
    for bad in (0.15, "NaN", "-0.1", "0", "1e-3", "0.12345678901"):
        with pytest.raises(ValidationError):
            FX_RATES.decode(json.dumps({**quote, "rate": bad}))


def test_audit_record_has_spec_shape() -> None:
    record = build(  # the example's details: 1000 K-AUS settled at 0.1500
        m.AuditRecord,
        timestamp=datetime(2026, 1, 23, 10, 30, 45, 123000, tzinfo=timezone(timedelta(hours=9))),
        actor=m.AuditActor(user_id="USER-1", ip="203.0.113.7"),
    )
    wire = json.loads(record.model_dump_json(by_alias=True))
    assert set(wire) >= {"auditId", "timestamp", "transactionId", "action", "actor", "details", "signature"}
    assert set(wire["actor"]) == {"userId", "ip", "userAgent"}
    assert wire["details"]["kausAmount"] == "1000.000000"
    assert wire["details"]["exchangeRate"] == "0.1500"
    assert wire["timestamp"].startswith("2026-01-23T01:30:45.123")


def test_contracts_readme_is_generated_from_the_registry() -> None:
    from contracts.docs import render_readme

    readme = (SCHEMA_DIR.parent / "README.md").read_text()
    assert readme == render_readme(), "contracts/README.md is stale: run `make schemas`"


def test_every_topic_has_a_valid_example_that_round_trips() -> None:
    from contracts.examples import EXAMPLES

    assert set(EXAMPLES) == set(TOPICS)
    for name, example in EXAMPLES.items():
        topic = TOPICS[name]
        wire = topic.encode(example)
        assert topic.decode(wire) == example, name
        assert topic.key_of(example), name


def test_every_ingress_code_is_documented() -> None:
    from contracts.reason_codes import REASON_CODES
    from streams.kafka import ingress

    used = set(ingress._ERROR_CODES.values()) | {
        "NEGATIVE_AMOUNT",
        "AMOUNT_TOO_LARGE",
        "NOT_FINITE",
        "EMPTY_KEY",
        "EMPTY_VALUE",
        "OVERSIZED",
        "KEY_MISMATCH",
    }
    assert used <= set(REASON_CODES), used - set(REASON_CODES)
