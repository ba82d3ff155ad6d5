"""The published schemas and the platform agree: every example validates with a standard JSON Schema validator, and
the messages the schema refuses the platform's decoder refuses too (and the other way round, for rates)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from contracts.examples import EXAMPLES, MORE_EXAMPLES
from contracts.topics import BRIDGE_REQUESTS, ENERGY_ORDERS, FX_RATES, LEDGER_COMMANDS, TOPICS, PayloadTopic, Topic
from contracts.types import RATE_PATTERN
from streams.kafka import ingress
from tests.support.schema_check import format_checker

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
JSON_TOPICS = [t for t in TOPICS.values() if not isinstance(t, PayloadTopic)]


def validator(topic: Topic) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{topic.name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=format_checker())


def all_examples() -> list[tuple[str, Any]]:
    return [(t.name, e) for t in JSON_TOPICS for e in (EXAMPLES[t.name], *MORE_EXAMPLES.get(t.name, ()))]


@pytest.mark.parametrize(
    ("topic_name", "example"), all_examples(), ids=[f"{n}-{i}" for i, (n, _) in enumerate(all_examples())]
)
def test_every_example_validates_against_its_published_schema(topic_name: str, example: Any) -> None:
    topic = TOPICS[topic_name]
    wire = topic.encode(example)  # as the platform encodes it
    errors = [e.message for e in validator(topic).iter_errors(json.loads(wire))]
    assert errors == []
    assert topic.decode(wire) == example


def test_the_examples_show_the_new_facts() -> None:
    """A FILLED event, a partial fill with what remains, sizes on prices, an asset, a repeat, a substituted rail."""
    events = [EXAMPLES["energy.orders.events"], *MORE_EXAMPLES["energy.orders.events"]]
    statuses = {str(e.status) for e in events}
    assert {"FILLED", "PARTIALLY_FILLED", "REJECTED", "ACCEPTED"} <= statuses
    assert "TICK_SIZE" in {e.reason_code for e in events}
    assert EXAMPLES["energy.prices"].best_bid_quantity_wh and EXAMPLES["energy.prices"].best_ask_quantity_wh
    assert {str(t.asset) for t in (EXAMPLES["ledger.transfers"], *MORE_EXAMPLES["ledger.transfers"])} == {
        "KAUS",
        "CARBON_MILLICREDIT",
    }
    completed = [EXAMPLES["bridge.settlements.completed"], *MORE_EXAMPLES["bridge.settlements.completed"]]
    assert any(c.repeat for c in completed)
    assert any(c.rail_substitution_reason is not None and c.rail != c.primary_rail for c in completed)


# ----------------------------------------------------------------------------- refused by both


def _submit(**over: object) -> dict[str, object]:
    return {**json.loads(ENERGY_ORDERS.encode(EXAMPLES["energy.orders"])), **over}


def _without(document: dict[str, object], field: str) -> dict[str, object]:
    return {k: v for k, v in document.items() if k != field}


def _card(**over: object) -> dict[str, object]:
    return {**json.loads(BRIDGE_REQUESTS.encode(EXAMPLES["bridge.requests"])), **over}


def _quote(**over: object) -> dict[str, object]:
    return {**json.loads(FX_RATES.encode(EXAMPLES["fx.rates"])), **over}


def _deposit(**over: object) -> dict[str, object]:
    return {**json.loads(LEDGER_COMMANDS.encode(EXAMPLES["ledger.commands"])), **over}


INVALID: list[tuple[str, Topic, Callable[[], dict[str, object]], str]] = [
    ("negative amount_minor", BRIDGE_REQUESTS, lambda: _card(amount_minor=-5), "NEGATIVE_AMOUNT"),
    ("zero amount_minor", BRIDGE_REQUESTS, lambda: _card(amount_minor=0), "OUT_OF_RANGE"),
    ("rate 0", FX_RATES, lambda: _quote(rate="0"), "OUT_OF_RANGE"),
    ("rate 0.000", FX_RATES, lambda: _quote(rate="0.000"), "OUT_OF_RANGE"),
    ("rate as a JSON number", FX_RATES, lambda: _quote(rate=0.15), "WRONG_TYPE"),
    ("rate with a leading zero", FX_RATES, lambda: _quote(rate="00.15"), "INVALID_FORMAT"),
    ("order without type", ENERGY_ORDERS, lambda: _without(_submit(), "type"), "MISSING_FIELD"),
    ("ledger command without type", LEDGER_COMMANDS, lambda: _without(_deposit(), "type"), "MISSING_FIELD"),
    ("integer Unix timestamp", ENERGY_ORDERS, lambda: _submit(submitted_at=1_795_510_800), "WRONG_TYPE"),
    ("millisecond timestamp", FX_RATES, lambda: _quote(as_of=1_795_510_800_000), "WRONG_TYPE"),
    ("Unix time as text", FX_RATES, lambda: _quote(as_of="1795510800"), "INVALID_TIMESTAMP"),
    (
        "timestamp without seconds",
        BRIDGE_REQUESTS,
        lambda: _card(requested_at="2026-11-24T09:00Z"),
        "INVALID_TIMESTAMP",
    ),
    ("naive timestamp", BRIDGE_REQUESTS, lambda: _card(requested_at="2026-11-24T09:00:00"), "NAIVE_TIMESTAMP"),
    ("unknown field", FX_RATES, lambda: _quote(rates="0.15"), "UNKNOWN_FIELD"),
]


@pytest.mark.parametrize(("topic", "document", "code"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_messages_are_refused_by_the_schema_and_by_the_platform(
    topic: Topic, document: Callable[[], dict[str, object]], code: str
) -> None:
    value = document()
    schema_errors = list(validator(topic).iter_errors(value))
    assert schema_errors, "the published schema accepts it"
    key = str(value.get(topic.key_field, "k")).encode()
    rejected = ingress.validate(topic, key, json.dumps(value).encode())
    assert isinstance(rejected, ingress.Rejected), "the platform accepts it"
    assert rejected.code == code, rejected.reason


def test_the_negative_amount_error_names_the_real_bound() -> None:
    rejected = ingress.validate(BRIDGE_REQUESTS, b"acct-consumer-12", json.dumps(_card(amount_minor=-5)).encode())
    assert isinstance(rejected, ingress.Rejected)
    assert "greater than 0" in rejected.reason, rejected.reason


def test_a_positive_amount_has_one_lower_bound_in_the_schema() -> None:
    node = json.loads((SCHEMA_DIR / "bridge.requests.schema.json").read_text())["properties"]["amount_minor"]
    assert node["exclusiveMinimum"] == 0 and "minimum" not in node


# ----------------------------------------------------------------------------- rates: the same rule on both sides

RATE_CASES = [
    "0.15", "1354.2100", "1", "10", "0.1", "0.0000000001", "99999999999999", "99999999999999.9999999999",
    "0", "0.0", "0.0000000000", "00.15", "01", ".5", "5.", "1e3", "-0.1", "+1", "0x10", " 1", "1 ", "1,5",
    "0.00000000001", "999999999999999", "1.12345678901", "NaN", "Infinity", "", "١٢",
]  # fmt: skip


def _schema_accepts_rate(text: str) -> bool:
    return validator(FX_RATES).is_valid(_quote(rate=text))


def _platform_accepts_rate(text: str) -> bool:
    return not isinstance(ingress.validate(FX_RATES, b"USD", json.dumps(_quote(rate=text)).encode()), ingress.Rejected)


@pytest.mark.parametrize("text", RATE_CASES)
def test_schema_and_platform_agree_on_rates(text: str) -> None:
    assert _schema_accepts_rate(text) == _platform_accepts_rate(text)


def test_the_rate_pattern_admits_exactly_the_positive_decimals() -> None:
    accepted = [t for t in RATE_CASES if re.fullmatch(RATE_PATTERN, t)]
    assert accepted == ["0.15", "1354.2100", "1", "10", "0.1", "0.0000000001", "99999999999999", RATE_CASES[7]]


@given(st.from_regex(r"\A[0-9]{1,15}(\.[0-9]{0,11})?\Z") | st.text(alphabet="0123456789.-e", max_size=12))
def test_schema_and_platform_agree_on_any_rate_text(text: str) -> None:
    assert _schema_accepts_rate(text) == _platform_accepts_rate(text)


def test_timestamps_in_any_offset_pass_both() -> None:
    for stamp in ("2026-11-24T09:00:00Z", "2026-11-24T18:00:00.250+09:00", "2026-11-24t09:00:00z"):
        assert validator(FX_RATES).is_valid(_quote(as_of=stamp)), stamp
        assert not isinstance(
            ingress.validate(FX_RATES, b"USD", json.dumps(_quote(as_of=stamp)).encode()), ingress.Rejected
        )


# ----------------------------------------------------------------------------- timestamps: the same rule on both sides

TIMESTAMP_LIKE = (
    r"\A(19[7-9][1-9]|2[0-9]{3})-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2})?([.,][0-9]{1,9})?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2}|[+-][0-9]{2})?\Z"
)


def _platform_accepts_timestamp(text: str) -> bool:
    decoded = ingress.validate(FX_RATES, b"USD", json.dumps(_quote(as_of=text)).encode())
    return not isinstance(decoded, ingress.Rejected)


@given(st.from_regex(TIMESTAMP_LIKE) | st.text(alphabet="0123456789-:T.Z+", min_size=15, max_size=30))
def test_schema_and_platform_agree_on_timestamps(text: str) -> None:
    """Years 1971 on: the 1970 bound is `formatMinimum`, which draft 2020-12 validators do not read."""
    assert validator(FX_RATES).is_valid(_quote(as_of=text)) == _platform_accepts_timestamp(text), text


# ----------------------------------------------------------------------------- codes the contract answers first


@pytest.mark.parametrize(
    ("code", "order"),
    [
        ("INVALID_ORDER_ID", lambda: _submit(order_id="")),
        ("INVALID_ORDER_ID", lambda: _submit(order_id="o" * 129)),
        ("INVALID_ACCOUNT", lambda: _submit(account_id="")),
        ("INVALID_ACCOUNT", lambda: _submit(account_id="a" * 129)),
        ("MARKET_ORDER_WITH_PRICE", lambda: _submit(order_type="MARKET", price_units_per_kwh=150_000)),
    ],
)
def test_orders_the_book_would_refuse_by_these_codes_are_dead_lettered_first(
    code: str, order: Callable[[], dict[str, object]]
) -> None:
    """Why the energy.orders.events table leaves them out: no such order reaches a book."""
    from contracts import reason_codes

    assert code in reason_codes.REFUSED_AT_INGRESS and code not in reason_codes.ORDER_EVENT_CODES
    value = order()
    rejected = ingress.validate(ENERGY_ORDERS, str(value["market_id"]).encode(), json.dumps(value).encode())
    assert isinstance(rejected, ingress.Rejected), code


def test_the_engine_routes_every_command_to_its_own_market_so_wrong_market_never_answers() -> None:
    from domain import order_book as ob

    engine = ob.OrderBookEngine()
    markets = ["2026-11-24T10:00Z/KR-SEOUL", "2026-11-24T11:00Z/KR-BUSAN"]
    events = []
    for i in range(40):
        market = markets[i % 2]
        side = ob.Side.BUY if i % 3 else ob.Side.SELL
        events += engine.handle(
            ob.SubmitOrder(f"o{i}", market, f"a{i % 5}", side, ob.OrderType.LIMIT, 150_000, 1_000, 1_795_500_000_000)
        )
        events += engine.handle(ob.CancelOrder(f"o{i - 1}", market, f"a{(i - 1) % 5}", 1_795_500_000_001))
    assert events and all(getattr(e, "code", None) != ob.RejectCode.WRONG_MARKET for e in events)
    assert {e.market_id for e in events} == set(markets)
