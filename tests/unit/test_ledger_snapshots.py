"""Ledger snapshots: a restored ledger is the same ledger, and only a usable snapshot is ever used."""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import models as m
from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS
from devtools.order_flow import generate_orders
from streams.kafka import ingress
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message
from streams.p2p.snapshots import KEEP, LedgerSnapshots
from tests.unit.test_services import ACCOUNTS, MARKETS

AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def ledger_commands(n_orders: int = 1_500) -> list[Any]:
    """Deposits, the trades a seeded order flow settles, and card holds (placed, captured with rewards, voided)."""
    commands: list[Any] = [
        m.Deposit(command_id=f"dep-{a}", account_id=a, amount_kaus_units=10**13, occurred_at=AT) for a in ACCOUNTS
    ]
    matching = MatchingPartition(0)
    for offset, order in enumerate(generate_orders(7, n_orders, MARKETS, ACCOUNTS)):
        wire = ENERGY_ORDERS.encode(to_message(order))
        decoded = ingress.validate(ENERGY_ORDERS, order.market_id.encode(), wire)
        assert not isinstance(decoded, ingress.Rejected)
        for topic, message in matching.apply(offset, decoded):
            if topic is LEDGER_COMMANDS:  # as the ledger receives it: the bytes, decoded
                wire = topic.encode(message)
                command = ingress.validate(LEDGER_COMMANDS, LEDGER_COMMANDS.key_of(message), wire)
                assert not isinstance(command, ingress.Rejected)
                commands.append(command)
    for i in range(20):
        hold_id, payer = f"card-{i}:hold", ACCOUNTS[i % len(ACCOUNTS)]
        commands.append(
            m.PlaceHold(
                command_id=hold_id, debit_account_id=payer, credit_account_id="bridge:settlement",
                amount_kaus_units=1_000 + i, expires_at=AT + timedelta(minutes=10), occurred_at=AT,
            )
        )  # fmt: skip
        if i % 3 == 0:
            commands.append(m.VoidHold(command_id=f"card-{i}:void", hold_id=hold_id, occurred_at=AT))
        elif i % 3 == 1:
            grant = m.RewardGrant(
                transfer_id=f"card-{i}:cashback", from_account_id=m.RewardAccount.REWARDS, account_id=payer,
                amount_kaus_units=30, reason="bridge.reward",
            )  # fmt: skip
            commands.append(
                m.PostHold(
                    command_id=f"card-{i}:post", hold_id=hold_id, amount_kaus_units=1_000, rewards=[grant],
                    occurred_at=AT,
                )
            )  # fmt: skip
    return commands  # the rest of the holds stay open across the snapshot


def applied(
    commands: list[Any], state: LedgerPartition | None = None, start: int = 0
) -> tuple[LedgerPartition, list[dict[str, Any]]]:
    """Apply commands[start:]; the outputs as JSON, less the measured phase durations (wall clock)."""
    state = state or LedgerPartition()
    out = []
    for offset, command in enumerate(commands[start:], start):
        for topic, message in state.apply(offset, command):
            record = orjson.loads(topic.encode(message))
            record.pop("phase_durations_us", None)
            out.append({"topic": topic.name, **record})
    return state, out


def without_ids(settler: dict[str, Any]) -> dict[str, Any]:
    """A settler's snapshot less its memory stores' entries (a restored ledger keeps them in its stores on disk)."""
    ledger = {k: v for k, v in settler["ledger"].items() if k not in ("transfers", "resolutions")}
    return {**{k: v for k, v in settler.items() if k != "settled"}, "ledger": ledger}


def test_a_restored_ledger_goes_on_exactly_as_the_one_that_never_stopped(tmp_path: Path) -> None:
    commands = ledger_commands()
    cut = len(commands) * 2 // 3
    assert sum(isinstance(c, m.SettleTrade) for c in commands[:cut]) > 100 and len(commands) - cut > 100
    store = LedgerSnapshots(tmp_path, "topic-1")
    before, _ = applied(commands[:cut])
    store.write(before)

    restored = store.load(0, until_offset=cut)
    assert restored is not None and restored.next_offset == cut
    assert without_ids(restored.settler.to_dict()) == without_ids(before.settler.to_dict())
    assert restored.ledger.ids.durable and restored.ledger.id_seq == before.ledger.id_seq
    _, outputs_after_restore = applied(commands, restored, start=cut)
    _, outputs_without_stop = applied(commands, before, start=cut)
    assert len(outputs_after_restore) > 300
    assert outputs_after_restore == outputs_without_stop  # transfers, outcomes, settlements, audit: the same
    assert restored.balances() == before.balances()


def test_the_newest_snapshot_at_or_below_the_restart_offset_is_used(tmp_path: Path) -> None:
    commands = ledger_commands(300)
    store = LedgerSnapshots(tmp_path, "topic-1")
    state = LedgerPartition()
    written = []
    for cut in (40, 80, 120):
        state, _ = applied(commands[:cut], state, start=state.next_offset)
        written.append(store.write(state))
    assert [f.next_offset for f in store.files(0)] == [120, 80][:KEEP]  # older ones pruned
    assert not written[0].exists()
    restored = store.load(0, until_offset=100)  # the newest (120) is past the restart: its commit was lost
    assert restored is not None and restored.next_offset == 80
    assert store.load(0, until_offset=79) is None  # nothing usable: replay from the beginning
    assert store.load(1, until_offset=500) is None  # another partition has none


def test_a_corrupt_or_foreign_snapshot_is_skipped(tmp_path: Path) -> None:
    commands = ledger_commands(200)
    store = LedgerSnapshots(tmp_path, "topic-1")
    state, _ = applied(commands[:50])
    store.write(state)
    state, _ = applied(commands[:90], state, start=50)
    newest = store.write(state)
    newest.write_bytes(newest.read_bytes()[:-20])  # truncated
    restored = store.load(0, until_offset=100)
    assert restored is not None and restored.next_offset == 50
    other_topic = LedgerSnapshots(tmp_path, "topic-2")  # ledger.commands was recreated: none applies
    assert other_topic.load(0, until_offset=100) is None


def test_a_snapshot_that_breaks_an_invariant_is_not_used(tmp_path: Path) -> None:
    store = LedgerSnapshots(tmp_path, "topic-1")
    state, _ = applied(ledger_commands(100)[:30])
    path = store.write(state)
    data = orjson.loads(zlib.decompress(path.read_bytes()))
    data["settler"]["ledger"]["accounts"][-1]["balance"] += 1  # K-AUS from nowhere: balances no longer sum to 0
    path.write_bytes(zlib.compress(orjson.dumps(data)))
    assert store.load(0, until_offset=30) is None


def test_a_snapshot_is_written_by_a_forked_child_while_the_parent_goes_on(tmp_path: Path) -> None:
    commands = ledger_commands(300)
    store = LedgerSnapshots(tmp_path, "topic-1")
    state, _ = applied(commands[:100])
    assert store.write_in_background(state)
    assert not store.write_in_background(state) or not store.busy()  # one child at a time
    state, _ = applied(commands[:150], state, start=100)  # the parent's state moves on meanwhile
    deadline = time.monotonic() + 30
    while store.busy():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    restored = store.load(0, until_offset=150)
    assert restored is not None and restored.next_offset == 100  # the state as it was at the fork


@pytest.mark.parametrize("junk", ["ledger-0-notanumber.snapshot", "ledger-0-00000000000000000010.tmp"])
def test_leftovers_are_ignored_or_removed(tmp_path: Path, junk: str) -> None:
    (tmp_path / junk).write_bytes(b"half a file")
    store = LedgerSnapshots(tmp_path, "topic-1")
    assert store.load(0, until_offset=10**9) is None
    assert not (tmp_path / "ledger-0-00000000000000000010.tmp").exists()
