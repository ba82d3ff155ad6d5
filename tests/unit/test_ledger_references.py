"""Every `ledger.transfers` record names its business transaction: the ledger service writes the references.

A trade's legs, a deposit and a dividend declaration are referenced by the ledger itself; a hold by the
PlaceHold's reference, which the ledger keeps (state and snapshot) until the hold's capture, void or expiry
carries it; a reward by its own.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import models as m
from contracts.topics import LEDGER_COMMANDS, LEDGER_TRANSFERS, Topic
from domain.ledger import Leg, SettlementKind
from streams.kafka import ingress
from streams.p2p.ledger import LedgerPartition
from streams.p2p.snapshots import LedgerSnapshots
from tests.unit.test_ledger_snapshots import without_ids

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
PAYER = "acct-payer"
CARD = SettlementKind.CARD_PAYMENT
Ref = tuple[str, str, str] | None


class Driver:
    """Commands as the ledger worker gets them: encoded, then validated from the bytes."""

    def __init__(self, state: LedgerPartition | None = None) -> None:
        self.ledger = state or LedgerPartition()

    def send(self, message: Any) -> list[m.LedgerTransfer]:
        wire = LEDGER_COMMANDS.encode(message)
        command = ingress.validate(LEDGER_COMMANDS, LEDGER_COMMANDS.key_of(message), wire)
        assert not isinstance(command, ingress.Rejected), command
        out: list[tuple[Topic, Any]] = self.ledger.apply(self.ledger.next_offset, command)
        return [LEDGER_TRANSFERS.decode(LEDGER_TRANSFERS.encode(r)) for t, r in out if t is LEDGER_TRANSFERS]


def refs(records: list[m.LedgerTransfer]) -> list[tuple[str, Ref]]:
    return [
        (r.transfer_id, None if r.reference is None else (r.reference.kind, r.reference.id, r.reference.leg))
        for r in records
    ]


def card(tx: str, leg: Leg = Leg.HOLD) -> m.LedgerReference:
    return m.LedgerReference(kind=CARD, id=tx, leg=leg)


def hold(tx: str, units: int, *, ttl_s: int = 60, at: datetime = T0, leg: Leg = Leg.HOLD) -> m.PlaceHold:
    return m.PlaceHold(
        command_id=f"{tx}:hold",
        debit_account_id=PAYER,
        credit_account_id="bridge:settlement",
        amount_kaus_units=units,
        expires_at=at + timedelta(seconds=ttl_s),
        reason="bridge.hold",
        reference=card(tx, leg),
        occurred_at=at,
    )


def capture(tx: str, units: int, *rewards: tuple[Leg, int], at: datetime = T0) -> m.PostHold:
    grants = [
        m.RewardGrant(
            transfer_id=f"{tx}:{leg.lower()}",
            from_account_id=m.RewardAccount.REWARDS if leg is Leg.CASHBACK else m.RewardAccount.ECOSYSTEM,
            account_id=PAYER,
            amount_kaus_units=amount,
            reason="bridge.reward",
            reference=card(tx, leg),
        )
        for leg, amount in rewards
    ]
    return m.PostHold(
        command_id=f"{tx}:post", hold_id=f"{tx}:hold", amount_kaus_units=units, rewards=grants, occurred_at=at
    )


def funded(units: int = 100_000) -> Driver:
    d = Driver()
    d.send(m.Deposit(command_id="dep-1", account_id=PAYER, amount_kaus_units=units, occurred_at=T0))
    return d


def test_a_hold_its_capture_and_its_rewards_name_the_card_payment() -> None:
    d = funded()
    assert refs(d.send(hold("BRIDGE-c1", 5_000))) == [("BRIDGE-c1:hold", (CARD, "BRIDGE-c1", Leg.HOLD))]
    assert d.ledger.hold_references == {"BRIDGE-c1:hold": (CARD, "BRIDGE-c1")}
    captured = d.send(capture("BRIDGE-c1", 4_000, (Leg.CASHBACK, 120), (Leg.BONUS, 12)))
    assert refs(captured) == [
        ("BRIDGE-c1:post", (CARD, "BRIDGE-c1", Leg.CAPTURE)),
        ("BRIDGE-c1:cashback", (CARD, "BRIDGE-c1", Leg.CASHBACK)),
        ("BRIDGE-c1:bonus", (CARD, "BRIDGE-c1", Leg.BONUS)),
    ]
    assert d.ledger.hold_references == {}  # resolved: nothing more to carry
    assert d.send(capture("BRIDGE-c1", 4_000, (Leg.CASHBACK, 120), (Leg.BONUS, 12))) == []  # re-sent: applied once


def test_a_void_and_an_expiry_release_under_the_holds_reference() -> None:
    d = funded()
    d.send(hold("BRIDGE-v", 5_000))
    d.send(hold("BRIDGE-x", 6_000, ttl_s=5))
    voided = d.send(m.VoidHold(command_id="BRIDGE-v:void", hold_id="BRIDGE-v:hold", occurred_at=T0))
    assert refs(voided) == [("BRIDGE-v:void", (CARD, "BRIDGE-v", Leg.RELEASE))]
    later = d.send(hold("BRIDGE-y", 1_000, at=T0 + timedelta(seconds=10)))  # BRIDGE-x expired before it
    assert refs(later) == [
        ("BRIDGE-x:hold:expired", (CARD, "BRIDGE-x", Leg.RELEASE)),
        ("BRIDGE-y:hold", (CARD, "BRIDGE-y", Leg.HOLD)),
    ]
    assert d.ledger.hold_references == {"BRIDGE-y:hold": (CARD, "BRIDGE-y")}


def test_the_hold_record_is_the_hold_leg_and_a_hold_without_a_reference_stays_without() -> None:
    d = funded()
    assert refs(d.send(hold("BRIDGE-a", 1_000, leg=Leg.CAPTURE))) == [("BRIDGE-a:hold", (CARD, "BRIDGE-a", Leg.HOLD))]
    bare = hold("BRIDGE-b", 1_000).model_copy(update={"reference": None})
    assert refs(d.send(bare)) == [("BRIDGE-b:hold", None)]
    assert refs(d.send(capture("BRIDGE-b", 1_000))) == [("BRIDGE-b:post", None)]
    assert d.ledger.hold_references == {"BRIDGE-a:hold": (CARD, "BRIDGE-a")}


def test_a_trade_a_deposit_and_a_dividend_are_referenced_by_the_ledger() -> None:
    d = funded(10**12)
    d.ledger.settler.register_seller_source("seller", m.EnergySource.SOLAR)
    trade = m.Trade(
        trade_id="TR-9",
        market_id="2026-11-24T10:00Z/KR-SEOUL",
        sequence=1,
        executed_at=T0,
        buy_order_id="b1",
        sell_order_id="s1",
        buyer_account_id=PAYER,
        seller_account_id="seller",
        price_units_per_kwh=150_000,
        quantity_wh=2_000,
        notional_kaus_units=300_000,
        aggressor_side=m.Side.BUY,
    )
    legs = d.send(m.SettleTrade(command_id="TR-9", trade=trade))
    assert refs(legs) == [
        (f"TR-9/{suffix}", (SettlementKind.TRADE, "TR-9", leg))
        for suffix, leg in (
            ("pay", Leg.PAYMENT),
            ("fee", Leg.FEE),
            ("dividend", Leg.DIVIDEND_POOL),
            ("carbon", Leg.CARBON),
        )
    ]
    d.send(
        m.RegisterDividendHolder(
            command_id="reg", account_id="holder", source=m.DividendSource.STAKING, weight=1, occurred_at=T0
        )
    )
    paid = d.send(m.DeclareDividends(command_id="epoch-7", occurred_at=T0))
    assert refs(paid) == [("epoch-7/0", (SettlementKind.DIVIDEND, "epoch-7", Leg.DIVIDEND))]
    dep = d.send(m.Deposit(command_id="dep-2", account_id="other", amount_kaus_units=5, occurred_at=T0))
    assert refs(dep) == [("dep-2", (SettlementKind.DEPOSIT, "dep-2", Leg.DEPOSIT))]


def test_a_restored_ledger_carries_an_open_holds_reference_onto_its_capture(tmp_path: Path) -> None:
    d = funded()
    d.send(hold("BRIDGE-open", 5_000))
    d.send(hold("BRIDGE-done", 1_000))
    d.send(capture("BRIDGE-done", 1_000))
    store = LedgerSnapshots(tmp_path, "topic-1")
    store.write(d.ledger)
    restored = store.load(0, until_offset=d.ledger.next_offset)
    assert restored is not None and without_ids(restored.settler.to_dict()) == without_ids(d.ledger.settler.to_dict())
    assert restored.hold_references == {"BRIDGE-open:hold": (CARD, "BRIDGE-open")}
    after = Driver(restored).send(capture("BRIDGE-open", 4_000))
    assert refs(after) == refs(d.send(capture("BRIDGE-open", 4_000)))
    assert refs(after) == [("BRIDGE-open:post", (CARD, "BRIDGE-open", Leg.CAPTURE))]


@pytest.mark.parametrize("defect", ["format 1", "reference of a resolved hold"])
def test_a_snapshot_without_the_references_or_with_a_stale_one_is_not_used(tmp_path: Path, defect: str) -> None:
    """A ledger restored without its open holds' references would write captures without one: replay instead."""
    d = funded()
    d.send(hold("BRIDGE-open", 5_000))
    d.send(hold("BRIDGE-done", 1_000))
    d.send(capture("BRIDGE-done", 1_000))
    store = LedgerSnapshots(tmp_path, "topic-1")
    path = store.write(d.ledger)
    data = orjson.loads(zlib.decompress(path.read_bytes()))
    if defect == "format 1":
        data["format"] = "nexus-x.ledger-partition-snapshot/1"
        del data["hold_references"]
    else:
        data["hold_references"]["BRIDGE-done:hold"] = ["CARD_PAYMENT", "BRIDGE-done"]
    path.write_bytes(zlib.compress(orjson.dumps(data)))
    assert store.load(0, until_offset=d.ledger.next_offset) is None
