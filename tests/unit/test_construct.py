"""contracts.construct builds the same instance as pydantic's model_construct."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import models as m
from contracts.construct import constructor

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
            "amount_kaus_units": 5,
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
