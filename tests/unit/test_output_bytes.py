"""The P2P services' records are byte for byte what the pydantic path produced (replay recovery depends on it).

A seeded 20,000-order flow runs through the worker path (decode -> `apply` -> `Outbox.encode_all`), the ledger
fed the encoded `ledger.commands` records as Kafka would hand them. The flow covers every P2P output: order events
of every kind, trades, prices, settle commands, transfers, settlements (settled, and rejected for funds), carbon
credits, audit records, dividends, and the bridge's holds and rewards. The measured durations
(`matching_duration_us`, `phase_durations_us`) come from a fake clock, so the whole stream is deterministic.

Two checks:
- the digest of every (topic, key, value), per topic, equals the one captured from the pydantic-model path before
  the services built their bytes directly (`EXPECTED`): a field, a value or a format that drifts fails it;
- every record is exactly what `Topic.encode` of the validated model gives through pydantic's own serializer
  (decode the value, serialize it again), under the key `Topic.key_of` gives that model: this one says which
  record and which topic drifted.
"""

from __future__ import annotations

import hashlib
import types
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import models as m
from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS, TOPICS
from devtools.order_flow import generate_orders
from domain.ledger import Leg, SettlementKind
from streams.kafka import ingress
from streams.kafka.faust_app import Outbox
from streams.p2p import ledger as ledger_service
from streams.p2p import matching as matching_service
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message

ORDERS = 20_000
MARKETS = [f"2026-11-24T{h:02d}:00Z/KR-SEOUL" for h in (10, 11, 12)] + ["2026-11-24T10:00Z/AU-NSW"]
ACCOUNTS = [f"acct-{i:02d}" for i in range(16)]
START = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
Record = tuple[str, bytes, bytes]


class FakeClock:
    """`perf_counter_ns` that advances 1,234,567 ns per call: every measured phase lasts 1,234 us."""

    def __init__(self) -> None:
        self.now = 10**12

    def perf_counter_ns(self) -> int:
        self.now += 1_234_567
        return self.now


def deposit(account: str, units: int) -> m.Deposit:
    return m.Deposit(command_id=f"dep-{account}", account_id=account, amount_kaus_units=units, occurred_at=START)


def orders() -> Iterator[m.SubmitOrder | m.CancelOrder | m.AmendOrder]:
    """The seeded flow; a third of the sellers deliver solar (carbon credits), a third say GRID_MIX."""
    sources = [m.EnergySource.SOLAR, m.EnergySource.GRID_MIX, None]
    for cmd in generate_orders(7, ORDERS, MARKETS, ACCOUNTS):
        message = to_message(cmd)
        if isinstance(message, m.SubmitOrder) and message.side is m.Side.SELL:
            source = sources[ACCOUNTS.index(message.account_id) % 3]
            if source is not None:
                message = message.model_copy(update={"energy_source": source})
        yield message


def card(tx: str, leg: Leg = Leg.HOLD) -> m.LedgerReference:
    return m.LedgerReference(kind=SettlementKind.CARD_PAYMENT, id=tx, leg=leg)


def ledger_tail(at: datetime) -> list[BaseModel]:
    """After the orders: dividends, then the bridge's holds and rewards (one hold expires; their captures and
    releases carry the holds' references)."""
    payer, merchant = ACCOUNTS[0], "bridge:settlement"
    hold = {"debit_account_id": payer, "credit_account_id": merchant, "occurred_at": at}
    return [
        m.RegisterDividendHolder(
            command_id="reg-1", account_id=ACCOUNTS[1], source=m.DividendSource.STAKING, weight=3, occurred_at=at
        ),
        m.RegisterDividendHolder(
            command_id="reg-2", account_id=ACCOUNTS[2], source=m.DividendSource.ENERGY_NODE, weight=5, occurred_at=at
        ),
        m.DeclareDividends(command_id="epoch-1", occurred_at=at),
        m.DeclareDividends(command_id="epoch-1", occurred_at=at),  # re-sent: nothing again
        m.PlaceHold(
            command_id="h1",
            amount_kaus_units=5_000,
            expires_at=at + timedelta(seconds=60),
            reference=card("c1"),
            **hold,
        ),
        m.PlaceHold(
            command_id="h1",
            amount_kaus_units=5_000,
            expires_at=at + timedelta(seconds=90),
            reference=card("c1"),
            **hold,
        ),
        m.PostHold(command_id="p1", hold_id="h1", amount_kaus_units=4_000, occurred_at=at),
        m.PlaceHold(
            command_id="h2",
            amount_kaus_units=7_000,
            expires_at=at + timedelta(seconds=60),
            reference=card("c2"),
            **hold,
        ),
        m.VoidHold(command_id="v2", hold_id="h2", occurred_at=at),
        m.VoidHold(command_id="v2b", hold_id="h2", occurred_at=at),  # rejected: voided already
        m.PlaceHold(
            command_id="h3", amount_kaus_units=9_000, expires_at=at + timedelta(seconds=5), reference=card("c3"), **hold
        ),
        m.GrantReward(
            command_id="r1",
            from_account_id=m.RewardAccount.REWARDS,
            account_id=payer,
            amount_kaus_units=321,
            reason="cashback",
            reference=card("c1", Leg.CASHBACK),
            occurred_at=at + timedelta(seconds=10),  # h3 expires first
        ),
        m.PlaceHold(command_id="h4", amount_kaus_units=10**18, expires_at=at + timedelta(seconds=60), **hold),
    ]


def seeded_records(monkeypatch: pytest.MonkeyPatch) -> list[Record]:
    clock = types.SimpleNamespace(perf_counter_ns=FakeClock().perf_counter_ns)
    monkeypatch.setattr(matching_service, "time", clock)
    monkeypatch.setattr(ledger_service, "time", clock)
    matching, ledger = MatchingPartition(0), LedgerPartition()
    records: list[Record] = []
    ledger_offset = 0

    def settle(key: bytes, value: bytes) -> None:
        nonlocal ledger_offset
        command = ingress.validate(LEDGER_COMMANDS, key, value)
        assert not isinstance(command, ingress.Rejected), command
        records.extend(Outbox.encode_all(ledger.apply(ledger_offset, command)))
        ledger_offset += 1

    # Two accounts can hardly pay (their trades are rejected), one never deposits at all.
    message: BaseModel
    for i, account in enumerate(ACCOUNTS[:-1]):
        message = deposit(account, 10**13 if i < 13 else 200_000)
        settle(LEDGER_COMMANDS.key_of(message), LEDGER_COMMANDS.encode(message))
    last: Any = None
    for offset, message in enumerate(orders()):
        decoded = ingress.validate(ENERGY_ORDERS, ENERGY_ORDERS.key_of(message), ENERGY_ORDERS.encode(message))
        assert not isinstance(decoded, ingress.Rejected), decoded
        last = decoded
        for name, key, value in Outbox.encode_all(matching.apply(offset, decoded)):
            records.append((name, key, value))
            if name == LEDGER_COMMANDS.name:
                settle(key, value)
                settle(key, value)  # re-emitted after a matching restart: settled once, nothing new
    at = last.submitted_at if isinstance(last, m.SubmitOrder) else last.requested_at
    for message in ledger_tail(at + timedelta(seconds=1)):
        settle(LEDGER_COMMANDS.key_of(message), LEDGER_COMMANDS.encode(message))
    ledger.ledger.check_invariants()
    return records


def digests(records: list[Record]) -> dict[str, tuple[int, str]]:
    hashes: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    for name, key, value in records:
        counts[name] += 1
        hashes.setdefault(name, hashlib.sha256()).update(b"%d:%s|%d:%s\n" % (len(key), key, len(value), value))
    return {name: (counts[name], hashes[name].hexdigest()[:32]) for name in sorted(hashes)}


@pytest.fixture(scope="module")
def records() -> Iterator[list[Record]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield seeded_records(monkeypatch)


# Captured from the pydantic-model path (contracts.construct instances through Topic.encode), before the
# services built their records' bytes directly.
EXPECTED: dict[str, tuple[int, str]] = {
    "audit.records": (26175, "9f66ad9fc1fe30622a7217a82c6eb9ef"),
    "carbon.credits.minted": (2185, "7b4a59b63ff38f48525e9634326a1a36"),
    "dividends.declared": (2, "da4372728aef3895690ec0d1cf505516"),
    "energy.orders.events": (36645, "11ea07e75b9b13c7889be702ae417997"),
    "energy.prices": (6230, "bd9ed2d651e4745a78407baf5521bd5b"),
    "energy.settlements": (8124, "724d2ad026eb9b4affc28faec6177964"),
    "energy.trades": (8028, "eeec71b30a62f42545f929bf144f4210"),
    "ledger.commands": (8028, "20c0e14adf8d1d2e559ad9c3543e2a93"),
    "ledger.outcomes": (9, "0ac708dda2ff1d415960339884bb7615"),
    "ledger.transfers": (26005, "ae03d54fdd8cf3e144b6f236357f1293"),
}


def test_records_are_the_captured_ones(records: list[Record]) -> None:
    assert digests(records) == EXPECTED


def test_every_record_is_the_pydantic_encoding_of_its_validated_model(records: list[Record]) -> None:
    for index, (name, key, value) in enumerate(records):
        topic = TOPICS[name]
        model = topic.decode(value)
        assert value == model.__pydantic_serializer__.to_json(model, by_alias=True), (index, name, value)
        assert topic.encode(model) == value, (index, name)
        assert key == topic.key_of(model), (index, name, key)


def test_the_flow_covers_every_p2p_output(records: list[Record]) -> None:
    seen = {name for name, _, _ in records}
    assert seen >= {
        "energy.orders.events",
        "energy.trades",
        "energy.prices",
        "ledger.commands",
        "ledger.transfers",
        "ledger.outcomes",
        "energy.settlements",
        "carbon.credits.minted",
        "audit.records",
        "dividends.declared",
    }
    values = b"\n".join(value for _, _, value in records)
    for fragment in (b'"status":"REJECTED"', b"INSUFFICIENT_FUNDS", b'"kind":"VOID_PENDING"', b'"EXPIRED"'):
        assert fragment in values, fragment
    statuses = Counter(m.OrderEvent.model_validate_json(v).status for n, _, v in records if n == "energy.orders.events")
    assert set(statuses) == set(m.OrderStatus), statuses


def test_every_movement_names_its_transaction(records: list[Record]) -> None:
    """Trade legs, deposits, dividends, holds and what resolves them (capture, void, expiry), rewards."""
    references: Counter[tuple[SettlementKind, Leg]] = Counter()
    for name, _, value in records:
        if name == "ledger.transfers":
            transfer = m.LedgerTransfer.model_validate_json(value)
            assert transfer.reference is not None, transfer
            references[(transfer.reference.kind, transfer.reference.leg)] += 1
    card = SettlementKind.CARD_PAYMENT
    assert {leg for kind, leg in references if kind is card} == {Leg.HOLD, Leg.CAPTURE, Leg.RELEASE, Leg.CASHBACK}
    assert references[(card, Leg.RELEASE)] == 2  # h2 voided, h3 expired
    trade_legs = {leg for kind, leg in references if kind is SettlementKind.TRADE}
    assert trade_legs == {Leg.PAYMENT, Leg.FEE, Leg.DIVIDEND_POOL, Leg.CARBON}
    assert references[(SettlementKind.DEPOSIT, Leg.DEPOSIT)] == len(ACCOUNTS) - 1
    assert references[(SettlementKind.DIVIDEND, Leg.DIVIDEND)] == 2


def test_a_capture_with_rewards_writes_the_pydantic_encoding_of_each_record() -> None:
    """Kept out of the seeded flow (its digests predate rewards riding on the capture)."""
    at = START + timedelta(days=1)
    payer = ACCOUNTS[0]
    hold = {"debit_account_id": payer, "credit_account_id": "bridge:settlement", "occurred_at": at}
    rewards = [
        m.RewardGrant(
            transfer_id="p1:cashback",
            from_account_id=m.RewardAccount.REWARDS,
            account_id=payer,
            amount_kaus_units=120,
            reason="bridge.reward",
            reference=card("c1", Leg.CASHBACK),
        ),
        m.RewardGrant(
            transfer_id="p1:bonus",
            from_account_id=m.RewardAccount.ECOSYSTEM,
            account_id=payer,
            amount_kaus_units=12,
            reference=card("c1", Leg.BONUS),
        ),
    ]
    commands = [
        deposit(payer, 10**9),
        m.PlaceHold(
            command_id="h1",
            amount_kaus_units=5_000,
            expires_at=at + timedelta(seconds=60),
            reference=card("c1"),
            **hold,
        ),
        m.PostHold(command_id="p1", hold_id="h1", amount_kaus_units=4_000, rewards=rewards, occurred_at=at),
        m.PostHold(command_id="p1", hold_id="h1", amount_kaus_units=4_000, rewards=rewards, occurred_at=at),
    ]
    ledger = LedgerPartition()
    records: list[Record] = []
    for offset, message in enumerate(commands):
        command = ingress.validate(LEDGER_COMMANDS, LEDGER_COMMANDS.key_of(message), LEDGER_COMMANDS.encode(message))
        assert not isinstance(command, ingress.Rejected), command
        records.extend(Outbox.encode_all(ledger.apply(offset, command)))
    kinds = [(n, TOPICS[n].decode(v).transfer_id if n == "ledger.transfers" else None) for n, _, v in records]
    assert [t for n, t in kinds if n == "ledger.transfers"] == ["dep-acct-00", "h1", "p1", "p1:cashback", "p1:bonus"]
    legs = [TOPICS[n].decode(v).reference.leg for n, _, v in records if n == "ledger.transfers"]
    assert legs == [Leg.DEPOSIT, Leg.HOLD, Leg.CAPTURE, Leg.CASHBACK, Leg.BONUS]
    assert sum(1 for n, _ in kinds if n == "ledger.outcomes") == 3
    for name, key, value in records:
        topic = TOPICS[name]
        model = topic.decode(value)
        assert value == model.__pydantic_serializer__.to_json(model, by_alias=True), (name, value)
        assert key == topic.key_of(model), (name, key)
