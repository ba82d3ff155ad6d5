"""The balance mirror (domain.balances): what the ledger writes on ledger.transfers, folded into available K-AUS.

Checked against the platform ledger itself: the records ``streams.p2p.ledger.LedgerPartition`` writes for deposits,
holds, captures, voids and expiries, delivered over several partitions in any order and with duplicates, give
every account the ledger's own ``available``."""

from __future__ import annotations

import random
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import models as m
from contracts.topics import LEDGER_TRANSFERS
from domain.balances import BalanceMirror, Movement, MovementKind, Resolution
from domain.ledger import Leg, PendingState, SettlementKind
from streams.p2p.ledger import LedgerPartition

K = 1_000_000
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
SETTLEMENT = "bridge:settlement"
P, V, PP, VP = MovementKind.POSTED, MovementKind.PENDING, MovementKind.POST_PENDING, MovementKind.VOID_PENDING


def mv(tid: str, kind: MovementKind, debit: str, credit: str, units: int, **kw: Any) -> Movement:
    return Movement(tid, kind, debit, credit, kw.pop("asset", "KAUS"), units, **kw)


def test_posted_moves_and_holds_reserve_until_captured_or_released() -> None:
    b = BalanceMirror()
    assert b.apply(0, mv("dep-1", P, "sys:mint", "alice", 1_000 * K)) == ("sys:mint", "alice")
    assert (b.balance("alice"), b.available("alice")) == (1_000 * K, 1_000 * K)
    assert b.apply(1, mv("h1", V, "alice", SETTLEMENT, 300 * K)) == ("alice",)
    assert (b.balance("alice"), b.held("alice"), b.available("alice")) == (1_000 * K, 300 * K, 700 * K)
    # a capture moves at most the hold and releases all of it
    b.apply(2, mv("h1:post", PP, "alice", SETTLEMENT, 250 * K, pending_id="h1"))
    assert (b.balance("alice"), b.held("alice"), b.available("alice")) == (750 * K, 0, 750 * K)
    assert b.resolution("h1") is Resolution.CAPTURE and not b.hold_open("h1")
    b.apply(3, mv("h2", V, "alice", SETTLEMENT, 100 * K))
    b.apply(0, mv("h2:void", VP, "alice", SETTLEMENT, 100 * K, pending_id="h2"))
    assert (b.available("alice"), b.resolution("h2")) == (750 * K, Resolution.RELEASE)
    assert b.total() == 0


def test_staked_kaus_and_other_assets_are_never_available() -> None:
    b = BalanceMirror()
    b.apply(0, mv("dep", P, "sys:mint", "alice", 100 * K))
    b.apply(1, mv("stake-1", P, "alice", "staked:alice", 40 * K))
    b.apply(2, mv("carbon", P, "sys:carbon", "alice", 5_000, asset="CARBON_MILLICREDIT"))
    assert b.available("alice") == 60 * K and b.available("staked:alice") == 40 * K
    assert b.apply(3, mv("carbon-2", P, "sys:carbon", "alice", 1, asset="CARBON_MILLICREDIT")) == ()


def test_a_resolution_read_before_its_hold_and_a_duplicate_change_nothing_twice() -> None:
    b = BalanceMirror()
    b.apply(0, mv("dep", P, "sys:mint", "alice", 100 * K))
    # the capture's partition is read first: the hold, when it arrives, holds nothing
    b.apply(2, mv("h:post", PP, "alice", SETTLEMENT, 30 * K, pending_id="h", reference_id="payout-1"))
    assert b.available("alice") == 70 * K and b.resolution("payout-1") is Resolution.CAPTURE
    assert b.apply(1, mv("h", V, "alice", SETTLEMENT, 30 * K)) == ()
    assert (b.available("alice"), b.held("alice"), b.open_holds) == (70 * K, 0, 0)
    # the ledger re-emits after a restart: same ids, same partitions
    for p, again in ((0, mv("dep", P, "sys:mint", "alice", 100 * K)), (1, mv("h", V, "alice", SETTLEMENT, 30 * K))):
        assert b.apply(p, again) == ()
    assert b.apply(2, mv("h:post", PP, "alice", SETTLEMENT, 30 * K, pending_id="h")) == ()
    assert b.available("alice") == 70 * K and b.total() == 0


def test_the_duplicate_window_is_per_partition_and_bounded() -> None:
    b = BalanceMirror(window=2)
    b.apply(0, mv("a", P, "sys:mint", "alice", 1))
    for i in range(5):  # another partition's traffic does not push partition 0's ids out
        b.apply(1, mv(f"x{i}", P, "sys:mint", "bob", 1))
    assert b.seen("a") and b.apply(0, mv("a", P, "sys:mint", "alice", 1)) == ()
    b.apply(0, mv("b", P, "sys:mint", "alice", 1))
    b.apply(0, mv("c", P, "sys:mint", "alice", 1))
    assert not b.seen("a")  # beyond the window (the ledger re-emits only what it had not committed)


def test_snapshot_round_trip_keeps_balances_holds_and_what_was_seen() -> None:
    b = BalanceMirror(window=10)
    b.apply(0, mv("dep", P, "sys:mint", "alice", 100 * K))
    b.apply(1, mv("h", V, "alice", SETTLEMENT, 30 * K))
    b.apply(2, mv("g:post", PP, "alice", SETTLEMENT, 5 * K, pending_id="g"))
    c = BalanceMirror.from_dict(b.to_dict())
    assert c.to_dict() == b.to_dict()
    assert (c.available("alice"), c.held("alice"), c.hold_open("h")) == (65 * K, 30 * K, True)
    assert c.apply(0, mv("dep", P, "sys:mint", "alice", 100 * K)) == ()
    assert c.apply(3, mv("g", V, "alice", SETTLEMENT, 5 * K)) == ()  # resolved before: holds nothing


# --------------------------------------------------------------------------- against the real ledger


def ledger_records(seed: int) -> tuple[LedgerPartition, list[m.LedgerTransfer]]:
    """A day of the ledger's own hold traffic: deposits, holds captured (partly), voided and expired."""
    rng = random.Random(seed)
    ledger = LedgerPartition()
    accounts = [f"acct-{i}" for i in range(4)]
    commands: list[Any] = [
        m.Deposit(command_id=f"dep-{a}", account_id=a, amount_kaus_units=1_000 * K, occurred_at=T0) for a in accounts
    ]
    for i in range(30):
        at = T0 + timedelta(seconds=10 * i)
        payer = rng.choice(accounts)
        ref = m.LedgerReference(kind=SettlementKind.PAYOUT, id=f"payout-{i}", leg=Leg.HOLD)
        commands.append(
            m.PlaceHold(command_id=f"h{i}", debit_account_id=payer, credit_account_id=SETTLEMENT,
                        amount_kaus_units=rng.randint(1, 50) * K, expires_at=at + timedelta(seconds=25),
                        reference=ref, occurred_at=at)
        )  # fmt: skip
        fate = rng.choice(("post", "void", "expire"))
        if fate == "post":
            commands.append(m.PostHold(command_id=f"h{i}:post", hold_id=f"h{i}", amount_kaus_units=K, occurred_at=at))
        elif fate == "void":
            commands.append(m.VoidHold(command_id=f"h{i}:void", hold_id=f"h{i}", occurred_at=at))
    records: list[m.LedgerTransfer] = []
    for offset, command in enumerate(commands):
        records += [r for t, r in ledger.apply(offset, command) if t is LEDGER_TRANSFERS]
    return ledger, records


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), order=st.randoms(use_true_random=False))
def test_the_mirror_of_the_ledgers_records_in_any_partition_order_is_the_ledgers_available(
    seed: int, order: random.Random
) -> None:
    ledger, records = ledger_records(seed)
    partitions: dict[int, list[m.LedgerTransfer]] = {}
    for r in records:
        p = zlib.crc32(r.transfer_id.encode()) % 4  # keyed by transfer id
        partitions.setdefault(p, []).append(r)
        if order.random() < 0.2:  # re-emitted soon after, in the same partition
            partitions[p].append(r)
    b = BalanceMirror()
    cursors = dict.fromkeys(partitions, 0)
    while cursors:  # partitions read at different paces, each in its own order
        p = order.choice(sorted(cursors))
        r = partitions[p][cursors[p]]
        ref = None if r.reference is None else r.reference.id
        b.apply(p, Movement(r.transfer_id, MovementKind(r.kind.value), r.debit_account_id, r.credit_account_id,
                            r.asset.value, r.amount_units, r.pending_id, ref))  # fmt: skip
        cursors[p] += 1
        if cursors[p] == len(partitions[p]):
            del cursors[p]
    for account in ledger.ledger.accounts():
        assert b.available(account.account_id) == ledger.ledger.available(account.account_id), account
    views = [ledger.ledger.pending(f"h{i}") for i in range(30)]
    assert b.open_holds == sum(v is not None and v.state is PendingState.PENDING for v in views)
