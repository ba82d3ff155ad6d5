"""Topic.encode's orjson path gives the bytes pydantic's serializer gives (the wire format is unchanged)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel

from contracts import models as m
from contracts.construct import Encoded, constructor
from contracts.topics import (
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_REQUESTS,
    ENERGY_ORDER_EVENTS,
    ENERGY_ORDERS,
    LEDGER_COMMANDS,
    TOPICS,
    _plain_json,
)
from devtools.order_flow import generate_orders
from streams.kafka import ingress
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message


def pydantic_json(value: BaseModel | Encoded) -> bytes:
    if isinstance(value, Encoded):  # bytes a service wrote itself: pydantic's for the model they validate into
        value = value.model
    return value.__pydantic_serializer__.to_json(value, by_alias=True)


def test_every_output_of_a_flow_encodes_as_pydantic_does() -> None:
    matching, ledger = MatchingPartition(0), LedgerPartition()
    accounts = [f"acct-{i}" for i in range(8)]
    at = datetime(2026, 11, 24, tzinfo=UTC)
    commands: list[BaseModel | Encoded] = [
        m.Deposit(command_id=f"dep-{a}", account_id=a, amount_kaus_units=10**13, occurred_at=at) for a in accounts
    ]
    seen: set[str] = set()
    markets = [f"2026-11-24T{h:02d}:00Z/KR-SEOUL" for h in (10, 11)]
    for offset, cmd in enumerate(generate_orders(5, 2_000, markets, accounts)):
        message = to_message(cmd)
        assert ENERGY_ORDERS.encode(message) == pydantic_json(message)
        for topic, output in matching.apply(offset, message):
            assert topic.encode(output) == pydantic_json(output), topic.name
            seen.add(topic.name)
            if topic is LEDGER_COMMANDS:
                commands.append(output)
    for offset, command in enumerate(commands):
        data = LEDGER_COMMANDS.encode(command)
        assert data == pydantic_json(command)
        decoded = ingress.validate(LEDGER_COMMANDS, LEDGER_COMMANDS.key_of(command), data)
        assert not isinstance(decoded, ingress.Rejected), decoded
        for topic, output in ledger.apply(offset, decoded):
            assert topic.encode(output) == pydantic_json(output), topic.name
            seen.add(topic.name)
    assert {"energy.trades", "energy.orders.events", "energy.prices", "ledger.commands", "energy.settlements"} <= seen


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 24, 10, 0, 0, 5, tzinfo=UTC),
        datetime(2026, 11, 24, 10, 0, 0, 123000, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 24, 10, 0, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    ],
)
@pytest.mark.parametrize(
    "text", ["plain", 'q"uo\\te/sl', "ctl\x00\x01\x1f\x7f\n\t\r\b\f", "ünïcödé 한국 😀", "\u2028\u2029"]
)
def test_strings_and_timestamps_encode_as_pydantic_does(at: datetime, text: str) -> None:
    event = constructor(m.OrderEvent)(
        order_id="o-1",
        market_id="mk",
        account_id="a",
        sequence=1,
        occurred_at=at,
        status=m.OrderStatus.REJECTED,
        reason=text,
        reason_code="X",
    )
    assert ENERGY_ORDER_EVENTS.encode(event) == pydantic_json(event)


def test_too_large_an_int_falls_back_to_pydantic() -> None:
    event = constructor(m.OrderEvent)(
        order_id="o-1",
        market_id="mk",
        account_id="a",
        sequence=2**70,
        occurred_at=datetime(2026, 11, 24, tzinfo=UTC),
        status=m.OrderStatus.ACCEPTED,
    )
    assert ENERGY_ORDER_EVENTS.encode(event) == pydantic_json(event)


def test_models_with_aliases_decimals_or_lists_keep_pydantic() -> None:
    assert _plain_json(m.Trade) and _plain_json(m.SettleTrade) and _plain_json(m.TradeSettled)
    for model in (m.AuditRecord, m.FxRate, m.BridgeSettlementCompleted, m.DeadLetter):
        assert not _plain_json(model)


def test_the_ledger_input_is_never_deleted_by_retention() -> None:
    # The ledger's balances are a fold over ledger.commands (replayed on restart): a deleted old segment
    # would drop old deposits from every rebuild.
    config = LEDGER_COMMANDS.topic_config()
    assert LEDGER_COMMANDS.kept_forever
    assert (config["retention.ms"], config["retention.bytes"]) == ("-1", "-1")
    assert "retention.bytes" not in ENERGY_ORDERS.topic_config()  # other topics keep the broker's bounds


def test_a_partition_override_never_splits_the_ledger() -> None:
    # Each ledger.commands partition gets its own LedgerPartition: with 4, a payer's deposit and its hold land in
    # different ledgers and every hold is refused (seen: NEXUS_TOPIC_PARTITIONS_OVERRIDE=4, 0% settled).
    assert LEDGER_COMMANDS.fixed_partitions and LEDGER_COMMANDS.partitions == 1
    assert LEDGER_COMMANDS.partitions_with(8) == 1
    assert BRIDGE_REQUESTS.partitions_with(8) == 8 and BRIDGE_REQUESTS.partitions_with(None) == 4
    # and the audit log: one ordered sequence of leaves and of the checkpoints over them
    fixed = [t.name for t in TOPICS.values() if t.fixed_partitions]
    assert fixed == [LEDGER_COMMANDS.name, "audit.log", "audit.checkpoints"]
    assert all(TOPICS[name].partitions == 1 for name in fixed)


def test_the_bridge_journal_has_its_requests_partition_count() -> None:
    assert BRIDGE_PAYOUTS_JOURNAL.copartitioned_with == BRIDGE_REQUESTS.name
    for override in (None, 2, 12):  # created under any override, the pair keeps one count
        assert BRIDGE_PAYOUTS_JOURNAL.partitions_with(override) == BRIDGE_REQUESTS.partitions_with(override)
    assert BRIDGE_PAYOUTS_JOURNAL.json_schema()["x-topic"]["partitions.same.as"] == BRIDGE_REQUESTS.name
    assert LEDGER_COMMANDS.json_schema()["x-topic"]["partitions.fixed"] is True
