"""Ingress validation gives each kind of bad input its own code and an actionable reason."""

from __future__ import annotations

import json

import pytest

from contracts.topics import ENERGY_ORDERS, FX_RATES
from streams.kafka.ingress import Origin, Rejected, dead_letter, original_value, validate

KEY = b"2026-11-24T10:00Z/KR-SEOUL"
GOOD = {
    "type": "SUBMIT",
    "order_id": "o-1",
    "market_id": KEY.decode(),
    "account_id": "acct-1",
    "side": "BUY",
    "order_type": "LIMIT",
    "price_units_per_kwh": 150_000,
    "quantity_wh": 1_000,
    "submitted_at": "2026-11-24T09:00:00Z",
}


def raw(**over: object) -> bytes:
    return json.dumps({**GOOD, **over}).encode()


# (label, key, value, expected code, a fragment the reason must contain)
BAD_INPUTS = [
    ("malformed json", KEY, b'{"type": "SUBMIT", ', "MALFORMED_JSON", "not valid JSON"),
    ("not utf-8", KEY, b"\xff\xfe\x00", "MALFORMED_JSON", "not valid JSON"),
    ("wrong type", KEY, raw(quantity_wh="1000"), "WRONG_TYPE", "quantity_wh"),
    ("float amount", KEY, raw(price_units_per_kwh=1.5), "WRONG_TYPE", "price_units_per_kwh"),
    (
        "missing field",
        KEY,
        json.dumps({k: v for k, v in GOOD.items() if k != "side"}).encode(),
        "MISSING_FIELD",
        "side",
    ),
    ("unknown enum", KEY, raw(side="HOLD"), "UNKNOWN_ENUM_VALUE", "'BUY' or 'SELL'"),
    ("unknown command", KEY, raw(type="REPLACE"), "UNKNOWN_MESSAGE_TYPE", "REPLACE"),
    ("negative amount", KEY, raw(quantity_wh=-5), "NEGATIVE_AMOUNT", "quantity_wh"),
    ("NaN amount", KEY, raw(price_units_per_kwh=float("nan")), "NOT_FINITE", "price_units_per_kwh"),
    ("40-digit amount", KEY, raw(quantity_wh=10**39), "AMOUNT_TOO_LARGE", "quantity_wh"),
    ("naive timestamp", KEY, raw(submitted_at="2026-11-24T09:00:00"), "NAIVE_TIMESTAMP", "timezone"),
    ("oversized payload", KEY, raw(account_id="a" * 100, pad="x" * 70_000), "OVERSIZED", "limit"),
    ("empty key", b"", raw(), "EMPTY_KEY", "market_id"),
    ("no key", None, raw(), "EMPTY_KEY", "market_id"),
    ("key mismatch", b"other-market", raw(), "KEY_MISMATCH", "partition"),
    ("empty value", KEY, b"", "EMPTY_VALUE", "no value"),
    ("unknown field", KEY, raw(colour="red"), "UNKNOWN_FIELD", "colour"),
]


@pytest.mark.parametrize(("label", "key", "value", "code", "fragment"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_rejected_with_specific_reason(
    label: str, key: bytes | None, value: bytes, code: str, fragment: str
) -> None:
    result = validate(ENERGY_ORDERS, key, value)
    assert isinstance(result, Rejected), label
    assert result.code == code, result.reason
    assert fragment in result.reason


def test_valid_message_decodes() -> None:
    result = validate(ENERGY_ORDERS, KEY, raw())
    assert not isinstance(result, Rejected)
    assert result.order_id == "o-1"


def test_fx_rate_as_json_number_is_rejected() -> None:
    value = json.dumps(
        {"quote_id": "q", "source": "BLOOMBERG", "quote": "USD", "rate": 0.15, "as_of": "2026-11-23T00:00:00Z"}
    ).encode()
    result = validate(FX_RATES, b"USD", value)
    assert isinstance(result, Rejected)
    assert "decimal string" in result.reason


def test_dead_letter_keeps_original_bytes_and_origin() -> None:
    value = b'{"broken": '
    rejected = validate(ENERGY_ORDERS, KEY, value)
    assert isinstance(rejected, Rejected)
    letter = dead_letter(Origin("energy.orders", 3, 42), KEY, value, rejected)
    assert original_value(letter) == value
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("energy.orders", 3, 42)
    assert letter.reason_code == "MALFORMED_JSON"
