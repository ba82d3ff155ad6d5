"""The bridge names each card payment on the ledger commands it sends, and the ledger writes it on every movement.

A real bridge flow: the runner and its Kafka ledger client (`KafkaHoldLedger`), whose commands go, as bytes, to a
real ledger partition (`LedgerPartition`) whose outcomes answer them; a provider that pays. ``BridgeDay`` is reused
by the warehouse's tie-out tests.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from contracts import models as m
from contracts.bridge_codec import quote_of_rate, result_json
from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED, LEDGER_COMMANDS, LEDGER_OUTCOMES
from devtools.fx_feed import fx_quotes
from domain.bridge import (
    BridgeConfig,
    CardPayment,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
    Rejected,
    Result,
    Settled,
    payment_reference,
)
from domain.cashback import PayerTier
from domain.fx import FxBook
from domain.ledger import Leg, Reference, SettlementKind
from domain.money import Currency
from domain.rails import Provider, Rail, Region
from streams.bridge.ledger_client import KafkaHoldLedger
from streams.bridge.runner import BridgeRunner
from streams.kafka import ingress
from streams.kafka.faust_app import Outbox
from streams.p2p.ledger import LedgerPartition

REWARD_ACCOUNTS = {"bridge:rewards": m.RewardAccount.REWARDS, "bridge:ecosystem": m.RewardAccount.ECOSYSTEM}
Record = tuple[str, bytes, bytes]  # topic, key, value


@dataclass
class LedgerWire:
    """The producer and outcome reader of ``KafkaHoldLedger`` over a real ledger partition: a command is applied
    as the ledger worker would apply its record, and its outcome answers the waiting call."""

    ledger: LedgerPartition
    records: list[Record] = field(default_factory=list)  # every record the ledger wrote
    commands: list[Any] = field(default_factory=list)
    waiting: dict[str, asyncio.Future[m.LedgerOutcome]] = field(default_factory=dict)

    def send_unacked(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        assert topic == LEDGER_COMMANDS.name
        command = ingress.validate(LEDGER_COMMANDS, key, value)
        assert not isinstance(command, ingress.Rejected), command
        self.commands.append(command)
        self.apply(command)

    def apply(self, command: Any) -> None:
        ledger = self.ledger
        for name, key, value in Outbox.encode_all(ledger.apply(ledger.next_offset, command)):
            self.records.append((name, key, value))
            if name == LEDGER_OUTCOMES.name:
                future = self.waiting.pop(key.decode(), None)
                if future is not None and not future.done():
                    future.set_result(LEDGER_OUTCOMES.decode(value))

    def expect(self, command_id: str) -> asyncio.Future[m.LedgerOutcome]:
        future: asyncio.Future[m.LedgerOutcome] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        return future

    def forget(self, command_id: str) -> None:
        self.waiting.pop(command_id, None)


class Stripe:
    """Pays every payout at once."""

    provider = Provider.STRIPE

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"po_{intent.idempotency_key}")

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"po_{intent.idempotency_key}", replayed=True)


@dataclass
class BridgeDay:
    """Card payments settled by the real bridge on a real ledger; ``records`` is what both wrote."""

    ledger: LedgerPartition
    wire: LedgerWire
    results: list[Result]
    records: list[Record]
    kafka_ledger: KafkaHoldLedger


def payments(payers: list[str], rate: Decimal, n: int) -> list[CardPayment]:
    """USD payments over every payer tier, half with an ecosystem merchant (a bonus too), and one quoted so far
    off the market that it fails on slippage after its hold was placed (the hold is released)."""
    now_ms = time.time_ns() // 1_000_000
    tiers = list(PayerTier)
    out = [
        CardPayment(
            request_id=f"card-{i}",
            payer_account_id=payers[i % len(payers)],
            merchant_id=f"merchant-{i % 5}",
            merchant_program="AURA_SYDNEY" if i % 2 else None,
            amount_minor=1_500 + 37 * i,
            currency=Currency.USD,
            region=Region.US,
            payer_tier=tiers[i % len(tiers)],
            quoted_rate=rate,
            requested_at_ms=now_ms,
        )
        for i in range(n)
    ]
    off = (rate * Decimal("1.01")).quantize(Decimal("0.000001"))
    return [*out, CardPayment("card-slipped", payers[0], "merchant-0", None, 2_000, Currency.USD, Region.US,
                              PayerTier.BRONZE, off, now_ms)]  # fmt: skip


def run_bridge_day(ledger: LedgerPartition, payers: list[str], n: int = 12) -> BridgeDay:
    """Settle ``n`` card payments (and one that fails) through the bridge on ``ledger`` (the payers funded)."""
    wire = LedgerWire(ledger)
    now = datetime.now(UTC)
    book = FxBook().with_quotes([quote_of_rate(q) for q in fx_quotes(now.date(), 0, now)])
    rate = book.combined_rate(Currency.USD, time.time_ns() // 1_000_000).rate
    kafka_ledger = KafkaHoldLedger(wire, wire, REWARD_ACCOUNTS, timeout_s=5)  # type: ignore[arg-type]

    async def settle_all() -> list[Result]:
        runner = BridgeRunner(
            ledger=kafka_ledger,
            adapters={Provider.STRIPE: Stripe()},  # type: ignore[dict-item]
            fx_book=lambda: book,
            cfg=BridgeConfig(enabled_rails=frozenset({Rail.STRIPE_INSTANT})),
        )
        return [await runner.settle(p) for p in payments(payers, rate, n)]

    results = asyncio.run(settle_all())
    records = list(wire.records)
    for result in results:
        topic = BRIDGE_SETTLEMENTS_COMPLETED if isinstance(result, Settled) else BRIDGE_SETTLEMENTS_FAILED
        records.append((topic.name, result.request_id.encode(), orjson.dumps(result_json(result))))
    return BridgeDay(ledger, wire, results, records, kafka_ledger)


def funded_ledger(payers: list[str], units: int = 10**12) -> LedgerPartition:
    ledger = LedgerPartition()
    at = datetime.now(UTC)
    for payer in payers:
        ledger.apply(ledger.next_offset, m.Deposit(command_id=f"dep-{payer}", account_id=payer,
                                                   amount_kaus_units=units, occurred_at=at))  # fmt: skip
    return ledger


def test_the_hold_and_each_reward_name_the_payment_on_the_commands() -> None:
    day = run_bridge_day(funded_ledger(["payer-1", "payer-2"]), ["payer-1", "payer-2"], n=4)
    holds = [c for c in day.wire.commands if isinstance(c, m.PlaceHold)]
    posts = [c for c in day.wire.commands if isinstance(c, m.PostHold)]
    settled = [r for r in day.results if isinstance(r, Settled)]
    assert len(holds) == 5 and len(posts) == len(settled) == 4
    for h in holds:
        tx = h.command_id.removesuffix(":hold")
        assert h.reference == m.LedgerReference(kind=SettlementKind.CARD_PAYMENT, id=tx, leg=Leg.HOLD)
    for post, result in zip(posts, settled, strict=True):
        assert post.hold_id == f"{result.bridge_tx_id}:hold"
        legs = {g.transfer_id: (g.reference.kind, g.reference.id, g.reference.leg) for g in post.rewards if g.reference}
        assert len(legs) == len(post.rewards) >= 1
        expected = {f"{result.bridge_tx_id}:cashback": Leg.CASHBACK, f"{result.bridge_tx_id}:bonus": Leg.BONUS}
        assert legs == {t: (SettlementKind.CARD_PAYMENT, result.bridge_tx_id, expected[t]) for t in legs}


def test_every_movement_of_a_card_payment_names_it_on_ledger_transfers() -> None:
    day = run_bridge_day(funded_ledger(["payer-1", "payer-2"]), ["payer-1", "payer-2"], n=6)
    transfers = [
        m.LedgerTransfer.model_validate_json(v)
        for name, _, v in day.records
        if name == "ledger.transfers" and not v.startswith(b'{"transfer_id":"dep-')
    ]
    by_payment: dict[str, dict[Leg, int]] = {}
    for t in transfers:
        assert t.reference is not None and t.reference.kind is SettlementKind.CARD_PAYMENT, t
        by_payment.setdefault(t.reference.id, {})[t.reference.leg] = t.amount_units
    for result in day.results:
        legs = by_payment[result.bridge_tx_id or ""]
        if isinstance(result, Settled):
            expected = {Leg.HOLD, Leg.CAPTURE, Leg.CASHBACK} | (
                {Leg.BONUS} if result.ecosystem_bonus_kaus_units else set()
            )
            assert set(legs) == expected
            assert legs[Leg.CAPTURE] == result.kaus_debited_units and legs[Leg.CASHBACK] == result.cashback_kaus_units
            assert legs.get(Leg.BONUS, 0) == result.ecosystem_bonus_kaus_units
        else:
            assert isinstance(result, Rejected) and set(legs) == {Leg.HOLD, Leg.RELEASE}
            assert legs[Leg.RELEASE] == legs[Leg.HOLD]


def test_a_card_payment_is_filed_under_its_bridge_transaction() -> None:
    [card] = payments(["payer-1"], Decimal("0.15"), 1)[:1]
    assert payment_reference(card, Leg.HOLD) == Reference(SettlementKind.CARD_PAYMENT, "BRIDGE-card-0", Leg.HOLD)
