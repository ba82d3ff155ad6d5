"""contracts.construct builds the same instance as pydantic's model_construct."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import models as m
from contracts.construct import constructor, utc_text_ms

AT = datetime(2026, 11, 24, 10, 0, 0, 123000, tzinfo=UTC)
CASES: list[tuple[type[BaseModel], dict[str, Any]]] = [
    (
        m.OrderEvent,
        {
            "order_id": "o-1",
            "market_id": "mk",
            "account_id": "a",
            "sequence": 3,
            "occurred_at": AT,
            "status": m.OrderStatus.ACCEPTED,
        },
    ),
    (
        m.TradeSettled,
        {
            "trade_id": "t-1",
            "market_id": "mk",
            "buyer_account_id": "b",
            "seller_account_id": "s",
            "notional_kaus_units": 10,
            "fee_kaus_units": 1,
            "seller_net_kaus_units": 9,
            "delivered_wh": 100,
            "settled_at": AT,
        },
    ),
    (
        m.LedgerTransfer,
        {
            "transfer_id": "x",
            "debit_account_id": "a",
            "credit_account_id": "b",
            "asset": m.LedgerAsset.KAUS,  # construct() does not validate: the enum itself, as the ledger writes
            "amount_units": 5,
            "reason": "r",
            "occurred_at": AT,
        },
    ),
    (m.AuditActor, {"user_id": "u", "ip": None}),
    (m.AuditDetails, {"kaus_amount": "1.000000"}),
]


@pytest.mark.parametrize(("model", "values"), CASES, ids=[c[0].__name__ for c in CASES])
def test_same_instance_as_model_construct(model: type[BaseModel], values: dict[str, Any]) -> None:
    fast = constructor(model)(**values)
    slow = model.model_construct(**values)
    assert type(fast) is model
    assert list(fast.__dict__.items()) == list(slow.__dict__.items())  # same values, same order
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ is slow.__pydantic_extra__ is None
    assert fast.__pydantic_private__ is slow.__pydantic_private__ is None
    assert fast.model_dump_json(by_alias=True) == slow.model_dump_json(by_alias=True)
    assert fast == slow


def test_default_factory_gives_a_fresh_value_each_time() -> None:
    make = constructor(m.TradeSettled)
    values = dict(CASES[1][1])
    first, second = make(**values), make(**values)
    assert first.phase_durations_us == {} and first.phase_durations_us is not second.phase_durations_us


def test_unknown_or_missing_fields_are_errors() -> None:
    make = constructor(m.AuditActor)
    with pytest.raises(TypeError, match="unknown"):
        make(user_id="u", nickname="x")
    with pytest.raises(TypeError, match="missing"):
        make(ip=None)


# --------------------------------------------------------------------------- records encoded without a model


def test_utc_text_is_how_pydantic_writes_the_instant() -> None:
    import random

    from contracts.construct import utc_text
    from domain.timeconv import from_ms

    rng = random.Random(3)
    edges = [0, 1, 999, 1_000, 1_001, -1, -999, -1_000, -1_001, 1_764_000_000_000, 1_764_000_000_041]
    edges += [-62_135_596_800_000, 253_402_300_799_999]  # 0001-01-01 and 9999-12-31T23:59:59.999
    make, accepted = constructor(m.OrderEvent), m.OrderStatus.ACCEPTED
    for ms in edges + [rng.randrange(-62_135_596_800_000, 253_402_300_800_000) for _ in range(3_000)]:
        event = make(order_id="o", market_id="m", account_id="a", sequence=1, occurred_at=from_ms(ms), status=accepted)
        assert f'"occurred_at":"{utc_text(ms)}"'.encode() in event.model_dump_json().encode(), ms


def test_dump_json_writes_what_pydantic_writes() -> None:
    from pydantic_core import to_json

    from contracts.construct import dump_json

    text = 'ctl\x00\x01\x1f\x7f\n\t\r\b\f ünïcödé 한국 😀 \u2028\u2029 q"uo\\te/sl'
    value = {"s": text, "n": None, "t": True, "i": -5, "e": m.OrderStatus.FILLED, "d": {"k": 2**63 - 1}}
    assert dump_json(value) == to_json(value)
    beyond_orjson = {"big": 2**70, "neg": -(2**65), "s": text}  # orjson refuses ints beyond 64 bits
    assert dump_json(beyond_orjson) == to_json(beyond_orjson)
    assert dump_json("id:1/x") == b'"id:1/x"'


def test_an_encoded_record_is_its_bytes_and_reads_as_its_validated_model() -> None:
    from pydantic import ValidationError

    from contracts.construct import Encoded
    from contracts.topics import ENERGY_ORDER_EVENTS
    from streams.kafka.faust_app import Outbox

    event = constructor(m.OrderEvent)(
        order_id="o-1", market_id="mk", account_id="a", sequence=3, occurred_at=AT, status=m.OrderStatus.ACCEPTED
    )
    value = ENERGY_ORDER_EVENTS.encode(event)
    record = Encoded(b"mk", value, ENERGY_ORDER_EVENTS.decode)
    assert ENERGY_ORDER_EVENTS.encode(record) is value and ENERGY_ORDER_EVENTS.key_of(record) == b"mk"
    assert Outbox.encode_all([(ENERGY_ORDER_EVENTS, record)]) == [("energy.orders.events", b"mk", value)]
    assert record.model == event and record.order_id == "o-1" and record.status is m.OrderStatus.ACCEPTED
    assert record.model is record.model  # decoded once
    broken = Encoded(b"mk", value.replace(b'"sequence":3', b'"sequence":-3'), ENERGY_ORDER_EVENTS.decode)
    with pytest.raises(ValidationError):
        _ = broken.sequence  # reading it validates it
    with pytest.raises(AttributeError):
        _ = record.__deepcopy_hook__
    with pytest.raises(TypeError):
        hash(record)


@pytest.mark.parametrize(
    "ms",
    [0, 999, 1_000, 1_796_413_481_041, 1_796_413_481_000, 1_796_413_481_999, 253_402_300_799_999, 951_782_400_500],
)
def test_utc_text_ms_is_isoformat_with_milliseconds(ms: int) -> None:
    assert utc_text_ms(ms) == exact_iso_ms(ms)


def exact_iso_ms(ms: int) -> str:
    # Integer arithmetic: fromtimestamp(ms / 1000) goes through a float and is off by 1 ms near year 9999.
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_utc_text_ms_over_random_instants() -> None:
    rng = random.Random(7)
    for _ in range(5_000):
        ms = rng.randrange(1_700_000_000_000, 1_900_000_000_000)
        assert utc_text_ms(ms) == exact_iso_ms(ms), ms
