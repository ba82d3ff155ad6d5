"""Issue 21: both runtimes give every bad input the same outcome. One small corpus of bad records (each reason code
the ingress can give, non-UTF-8 bytes, 10,000 levels of nesting, a duplicate JSON key, a wrong key, an empty value,
a command that makes the ledger raise), interleaved with valid orders and deposits in the same partitions, goes
through the real broker to the Faust worker and to the plain loop. Per (topic, partition, offset): exactly one dead
letter with the reason code the ingress gives it, and the valid records around them processed.

(A gzip-compressed oversized record is tests/integration/test_oversized_records.py's.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.topics import (
    ENERGY_ORDER_EVENTS,
    ENERGY_ORDERS,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    PLATFORM_DEADLETTERS,
    Topic,
)
from streams.kafka import ingress
from tests.support.kafka_io import KafkaIO, Record

pytestmark = pytest.mark.slow

AT = "2026-11-24T09:00:00Z"


def corpus(run_id: str) -> list[tuple[Topic, bytes | None, bytes | None]]:
    market = f"2026-11-24T10:00Z/T{run_id.upper()}"
    key = market.encode()

    def order(order_id: str, direction: str, **changes: Any) -> bytes:
        value = {
            "type": "SUBMIT",
            "order_id": f"{order_id}-{run_id}",
            "market_id": market,
            "account_id": f"acct-{direction.lower()}-{run_id}",
            "side": direction,
            "order_type": "LIMIT",
            "price_units_per_kwh": 150_000,
            "quantity_wh": 1_000,
            "submitted_at": AT,
        }
        return json.dumps({**value, **changes}).encode()

    def deposit(command_id: str, **changes: Any) -> tuple[Topic, bytes, bytes]:
        value = {
            "type": "DEPOSIT",
            "command_id": f"{command_id}-{run_id}",
            "account_id": f"acct-buy-{run_id}",
            "amount_kaus_units": 10**12,
            "occurred_at": AT,
        }
        value.update(changes)
        return LEDGER_COMMANDS, str(value["command_id"]).encode(), json.dumps(value).encode()

    good = order("buy", "BUY")
    return [
        deposit("dep-1"),
        (ENERGY_ORDERS, key, good),
        (ENERGY_ORDERS, key, good[:20]),  # MALFORMED_JSON
        (ENERGY_ORDERS, key, b"\xff\xfe\x00"),  # not UTF-8
        (ENERGY_ORDERS, key, b"[" * 10_000 + b"]" * 10_000),  # deep nesting
        (ENERGY_ORDERS, key, b""),  # EMPTY_VALUE
        (ENERGY_ORDERS, b"", good),  # EMPTY_KEY
        (ENERGY_ORDERS, b"other-market", good),  # KEY_MISMATCH
        (ENERGY_ORDERS, key, order("dup", "BUY")[:-1] + b', "side": "HOLD"}'),  # a duplicate key: the last one counts
        (ENERGY_ORDERS, key, order("x", "BUY", colour="red")),  # UNKNOWN_FIELD
        (ENERGY_ORDERS, key, order("x", "BUY", quantity_wh="1000")),  # WRONG_TYPE
        (ENERGY_ORDERS, key, order("x", "BUY", quantity_wh=-5)),  # NEGATIVE_AMOUNT
        (ENERGY_ORDERS, key, order("x", "BUY", quantity_wh=2**64)),  # AMOUNT_TOO_LARGE
        (ENERGY_ORDERS, key, order("x", "BUY").replace(b"150000", b"NaN")),  # NOT_FINITE
        (ENERGY_ORDERS, key, order("x", "BUY", submitted_at="2026-11-24T09:00:00")),  # NAIVE_TIMESTAMP
        (ENERGY_ORDERS, key, order("x", "BUY", submitted_at="0001-01-01T00:00:00+14:00")),  # INVALID_TIMESTAMP
        (ENERGY_ORDERS, key, order("x", "BUY", type="REPLACE")),  # UNKNOWN_MESSAGE_TYPE
        (ENERGY_ORDERS, key, order("x", "BUY", side="HOLD")),  # UNKNOWN_ENUM_VALUE
        (ENERGY_ORDERS, key, order("x", "BUY", price_units_per_kwh=None)),  # INVALID_VALUE
        (ENERGY_ORDERS, key, order("x y", "BUY")),  # INVALID_FORMAT
        (ENERGY_ORDERS, key, order("sell", "SELL")),
        deposit("dep-bad", amount_kaus_units=-1),  # NEGATIVE_AMOUNT
        deposit("dep-old", occurred_at="1969-01-01T00:00:00Z"),  # INVALID_TIMESTAMP (before the epoch)
        deposit("dep-2"),
    ]


def expected_code(topic: Topic, key: bytes | None, value: bytes | None) -> str | None:
    decoded = ingress.validate(topic, key, value)
    if isinstance(decoded, ingress.Rejected):
        return decoded.code
    return None


@pytest.mark.parametrize("module", ["streams.worker", "streams.p2p"], ids=["faust", "plain"])
def test_every_bad_input_gets_the_same_one_outcome_in_both_runtimes(
    kafka: KafkaIO, worker_factory: Any, run_id: str, module: str
) -> None:
    worker_factory(module=module, agents="matching,settlement")
    expected: dict[tuple[str, int, int], str] = {}
    valid = 0
    for topic, key, value in corpus(run_id):
        partition, offset = kafka.produce_acked(topic, key, value)
        code = expected_code(topic, key, value)
        if code is None:
            valid += 1
        else:
            expected[(topic.name, partition, offset)] = code
    assert len(set(expected.values())) >= 15 and valid == 4

    def ours(records: list[Record]) -> list[Any]:
        letters = (PLATFORM_DEADLETTERS.decode(r.value) for r in records if r.value)
        return [d for d in letters if (d.source_topic, d.source_partition, d.source_offset) in expected]

    letters = ours(kafka.wait_for(PLATFORM_DEADLETTERS, lambda rs: len(ours(rs)) >= len(expected), timeout_s=90))
    got = {(d.source_topic, d.source_partition, d.source_offset): d.reason_code for d in letters}
    assert len(letters) == len(expected), "each bad record is dead-lettered exactly once"
    assert got == expected

    def statuses(records: list[Record]) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        for e in (ENERGY_ORDER_EVENTS.decode(r.value) for r in records if r.value):
            if e.order_id.endswith(run_id):
                seen.setdefault(e.order_id, []).append(str(e.status))
        return seen

    events = statuses(
        kafka.wait_for(ENERGY_ORDER_EVENTS, lambda rs: len(statuses(rs)) >= 2, timeout_s=60)  # buy and sell
    )
    assert set(events) == {f"buy-{run_id}", f"sell-{run_id}"}, events
    deposits = {f"dep-1-{run_id}", f"dep-2-{run_id}"}

    def applied(records: list[Record]) -> set[str]:
        return {t.transfer_id for t in (LEDGER_TRANSFERS.decode(r.value) for r in records if r.value)} & (
            deposits | {f"dep-old-{run_id}", f"dep-bad-{run_id}"}
        )

    assert applied(kafka.wait_for(LEDGER_TRANSFERS, lambda rs: deposits <= applied(rs), timeout_s=60)) == deposits
