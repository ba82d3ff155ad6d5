"""The ledger's applied ids in an id store (domain.ledger.IdStore; on disk: streams/p2p/id_store.py).

The crux is crash consistency: a snapshot is taken at input offset X (id sequence N), the worker goes on and
writes ids past N to disk, then dies. The restart restores the snapshot and replays from X: had the store kept
the ids past N, every replayed command would be taken for a duplicate and skipped while the snapshot's balances
lack it (money lost). So restoring forgets them; and a store that lacks ids the snapshot relies on makes the
snapshot unusable (a re-sent old command would otherwise be applied twice).
"""

from __future__ import annotations

import sqlite3
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import models as m
from contracts.topics import LEDGER_OUTCOMES, LEDGER_TRANSFERS
from domain.ledger import (
    HoldResolution,
    Ledger,
    LedgerCode,
    MemoryIdStore,
    PendingState,
    PendingTransfer,
    PostPending,
    Transfer,
    TransferStatus,
    VoidPending,
)
from streams.p2p import id_store
from streams.p2p.id_store import SqliteIdStore, decode_entry, encode_entry
from streams.p2p.ledger import LedgerPartition
from streams.p2p.snapshots import LedgerSnapshots, serialise
from tests.unit.test_ledger_snapshots import applied, ledger_commands

AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
# A format /2 partition snapshot (every id inside), as the code before the id store wrote it (orjson.loads of its
# bytes): a deposit, a hold captured in part (h1), a hold still open (h2).
LEGACY: dict[str, Any] = {
    "format": "nexus-x.ledger-partition-snapshot/2",
    "topic_id": "topic-1",
    "partition": 0,
    "next_offset": 4,
    "settler": {
        "format": "nexus-x.trade-settlement/1",
        "config": {"fee_rate_bps": 25, "dividend_share_bps": 5000, "wh_per_carbon_millicredit": 1000},
        "ledger": {
            "format": "nexus-x.ledger/1",
            "clock_ms": 1795510800000,
            "accounts": [
                {"account_id": "a", "asset": "KAUS", "allow_negative": False, "balance": 9400, "held": 2000},
                {"account_id": "bridge:ecosystem", "asset": "KAUS", "allow_negative": True, "balance": 0, "held": 0},
                {"account_id": "bridge:rewards", "asset": "KAUS", "allow_negative": True, "balance": 0, "held": 0},
                {
                    "account_id": "bridge:settlement",
                    "asset": "KAUS",
                    "allow_negative": False,
                    "balance": 600,
                    "held": 0,
                },
                {
                    "account_id": "sys:carbon",
                    "asset": "CARBON_MILLICREDIT",
                    "allow_negative": True,
                    "balance": 0,
                    "held": 0,
                },
                {"account_id": "sys:dividends", "asset": "KAUS", "allow_negative": False, "balance": 0, "held": 0},
                {"account_id": "sys:fees", "asset": "KAUS", "allow_negative": False, "balance": 0, "held": 0},
                {"account_id": "sys:mint", "asset": "KAUS", "allow_negative": True, "balance": -10000, "held": 0},
            ],
            "transfers": [
                {
                    "command": {
                        "type": "Transfer",
                        "transfer_id": "dep-a",
                        "debit_account_id": "sys:mint",
                        "credit_account_id": "a",
                        "amount_units": 10000,
                        "code": "deposit",
                    },
                    "result": {
                        "transfer_id": "dep-a",
                        "status": "POSTED",
                        "code": None,
                        "debit_account_id": "sys:mint",
                        "credit_account_id": "a",
                        "amount_units": 10000,
                        "at_ms": 1795510800000,
                        "reason": "",
                    },
                },
                {
                    "command": {
                        "type": "PendingTransfer",
                        "transfer_id": "h1",
                        "debit_account_id": "a",
                        "credit_account_id": "bridge:settlement",
                        "amount_units": 1000,
                        "code": "hold",
                        "expires_at_ms": 1795511400000,
                    },
                    "result": {
                        "transfer_id": "h1",
                        "status": "PENDING",
                        "code": None,
                        "debit_account_id": "a",
                        "credit_account_id": "bridge:settlement",
                        "amount_units": 1000,
                        "at_ms": 1795510800000,
                        "reason": "",
                    },
                },
                {
                    "command": {"type": "PostPending", "transfer_id": "p1", "pending_id": "h1", "amount_units": 600},
                    "result": {
                        "transfer_id": "p1",
                        "status": "POSTED",
                        "code": None,
                        "debit_account_id": "a",
                        "credit_account_id": "bridge:settlement",
                        "amount_units": 600,
                        "at_ms": 1795510800000,
                        "reason": "",
                    },
                },
                {
                    "command": {
                        "type": "PendingTransfer",
                        "transfer_id": "h2",
                        "debit_account_id": "a",
                        "credit_account_id": "bridge:settlement",
                        "amount_units": 2000,
                        "code": "hold",
                        "expires_at_ms": 1795511400000,
                    },
                    "result": {
                        "transfer_id": "h2",
                        "status": "PENDING",
                        "code": None,
                        "debit_account_id": "a",
                        "credit_account_id": "bridge:settlement",
                        "amount_units": 2000,
                        "at_ms": 1795510800000,
                        "reason": "",
                    },
                },
            ],
            "pendings": [
                {
                    "pending_id": "h1",
                    "state": "POSTED",
                    "posted_units": 600,
                    "resolved_by": "p1",
                    "resolved_at_ms": 1795510800000,
                },
                {"pending_id": "h2", "state": "PENDING", "posted_units": 0, "resolved_by": "", "resolved_at_ms": None},
            ],
        },
        "sources": {},
        "weights": [],
        "fee_carry": {},
        "carbon_carry_wh": {},
        "dividend_carry": 0,
        "settled": [],
        "declarations": [],
    },
    "hold_references": {},
    "staking": {
        "format": "nexus-x.staking/1",
        "config": {"lock_ms": 604800000, "unbonding_ms": 172800000},
        "positions": [],
    },
    "epochs": {"format": "nexus-x.dividend-epochs/1", "length_ms": 86400000, "offset_ms": 0, "last_declared": None},
}


def on_disk(snapshots: LedgerSnapshots) -> LedgerPartition:
    return snapshots.on_disk(LedgerPartition)(0)


def crashed(directory: Path) -> LedgerSnapshots:
    """A new process on the same directory: the old one's store object (and its unwritten entries) is gone."""
    return LedgerSnapshots(directory, "topic-1")


def rows_on_disk(directory: Path) -> set[str]:
    con = sqlite3.connect(directory / "ids-0.sqlite3")
    try:
        return {row[0] for row in con.execute("SELECT transfer_id FROM transfers")}
    finally:
        con.close()


# ---------------------------------------------------------------------------- the crash at the core/shell seam


def test_ids_written_past_the_snapshot_are_forgotten_when_it_is_restored(tmp_path: Path) -> None:
    commands = ledger_commands(900)
    cut = len(commands) // 2
    snapshots = LedgerSnapshots(tmp_path, "topic-1")
    state, _ = applied(commands[:cut], on_disk(snapshots))
    snapshots.write(state)
    state, _ = applied(commands, state, start=cut)  # the worker goes on past the snapshot...
    snapshots.id_store(0).flush()  # ...its ids reach the disk...
    later = {r.transfer_id for r in (state.ledger.result(f"{c.trade.trade_id}/pay") for c in commands[cut:]
                                     if isinstance(c, m.SettleTrade)) if r is not None}  # fmt: skip
    assert len(later) > 50 and later <= rows_on_disk(tmp_path)  # ...and then it dies (SIGKILL: nothing else runs)

    restarted = crashed(tmp_path)
    restored = restarted.load(0, until_offset=cut)
    assert restored is not None and restored.next_offset == cut
    assert not later & rows_on_disk(tmp_path), "ids past the snapshot still on disk"
    assert all(restored.ledger.result(transfer_id) is None for transfer_id in later)
    _, replayed = applied(commands, restored, start=cut)
    never_stopped, expected = applied(commands, applied(commands[:cut])[0], start=cut)
    assert len(expected) > 300
    assert replayed == expected  # every replayed command applied again, with the same records; none skipped
    assert restored.balances() == never_stopped.balances()
    restored.ledger.ids.flush()  # type: ignore[attr-defined]
    assert later <= rows_on_disk(tmp_path)  # written again, at the same sequence


def test_a_store_behind_its_snapshot_makes_the_snapshot_unusable(tmp_path: Path) -> None:
    commands = ledger_commands(300)
    snapshots = LedgerSnapshots(tmp_path, "topic-1")
    state, _ = applied(commands[:60], on_disk(snapshots))
    snapshots.write(state)
    seq_at_60 = state.ledger.id_seq
    state, _ = applied(commands[:120], state, start=60)
    snapshots.write(state)
    snapshots.close()

    store = SqliteIdStore(tmp_path / "ids-0.sqlite3", "topic-1")
    store.forget_after(seq_at_60)  # the store lost what followed (say, a disk restored from an older backup)
    store.close()
    restored = crashed(tmp_path).load(0, until_offset=200)
    assert restored is not None and restored.next_offset == 60  # the snapshot at 120 needs ids the store lacks

    (tmp_path / "ids-0.sqlite3").unlink()  # no store at all: no snapshot is usable, the replay starts at 0
    for leftover in tmp_path.glob("ids-0.sqlite3-*"):
        leftover.unlink()
    assert crashed(tmp_path).load(0, until_offset=200) is None


def test_a_replay_from_the_beginning_empties_the_store_first(tmp_path: Path) -> None:
    commands = ledger_commands(200)
    snapshots = LedgerSnapshots(tmp_path, "topic-1")
    state, _ = applied(commands[:80], on_disk(snapshots))
    snapshots.id_store(0).flush()
    assert rows_on_disk(tmp_path)
    fresh, outputs = applied(commands[:80], on_disk(crashed(tmp_path)))  # no usable snapshot: replay all
    _, expected = applied(commands[:80])
    assert outputs == expected and sum(o["topic"] == LEDGER_TRANSFERS.name for o in outputs) > 80
    assert fresh.balances() == state.balances()


# ---------------------------------------------------------------------------- the guarantee, from disk


def send(state: LedgerPartition, command: Any) -> list[tuple[str, dict[str, Any]]]:
    offset = state.next_offset
    return [(t.name, orjson.loads(t.encode(msg))) for t, msg in state.apply(offset, command)]


def hold(hold_id: str, units: int) -> m.PlaceHold:
    return m.PlaceHold(
        command_id=hold_id, debit_account_id="a", credit_account_id="bridge:settlement", amount_kaus_units=units,
        expires_at=AT + timedelta(minutes=10), occurred_at=AT,
    )  # fmt: skip


def test_a_resent_command_gets_its_original_outcome_from_disk_after_a_restart(tmp_path: Path) -> None:
    snapshots = LedgerSnapshots(tmp_path, "topic-1")
    state = on_disk(snapshots)
    deposit = m.Deposit(command_id="dep-a", account_id="a", amount_kaus_units=10_000, occurred_at=AT)
    post = m.PostHold(command_id="p1", hold_id="h1", amount_kaus_units=600, occurred_at=AT)
    for command in (deposit, hold("h1", 1_000), post, hold("h2", 2_000)):
        send(state, command)
    assert state.ledger.open_hold_count() == 1  # h1 was captured: it left memory for the store
    snapshots.write(state)

    restored = crashed(tmp_path).load(0, until_offset=state.next_offset)
    assert restored is not None
    assert restored.ledger.ids.durable and isinstance(restored.ledger.ids, SqliteIdStore)
    assert restored.ledger.ids.in_memory == 0  # everything is read from the file
    assert send(restored, deposit) == []  # applied once, for ever
    [(topic, outcome)] = send(restored, post)
    assert topic == LEDGER_OUTCOMES.name and outcome["status"] == "APPLIED" and outcome["duplicate"] is True
    assert outcome["amount_kaus_units"] == 600  # the original outcome
    [(_, again)] = send(restored, hold("h1", 1_000))
    assert again["status"] == "REJECTED" and again["reason_code"] == "PENDING_ALREADY_POSTED"
    void = send(restored, m.VoidHold(command_id="v1", hold_id="h1", occurred_at=AT))
    assert void[-1][1]["reason_code"] == "PENDING_ALREADY_POSTED" and "'p1'" in void[-1][1]["reason"]
    assert restored.balances()["a"] == 9_400 and restored.ledger.held("a") == 2_000


def test_a_format_2_snapshot_loads_and_its_ids_move_into_the_store(tmp_path: Path) -> None:
    (tmp_path / "ledger-0-00000000000000000004.snapshot").write_bytes(zlib.compress(orjson.dumps(LEGACY)))
    restored = LedgerSnapshots(tmp_path, "topic-1").load(0, until_offset=4)
    assert restored is not None and restored.next_offset == 4
    ledger = restored.ledger
    assert ledger.id_seq == 5 and ledger.open_hold_count() == 1  # 4 transfers, then h1's resolution
    assert ledger.pending("h1") is not None and ledger.pending("h1").state is PendingState.POSTED  # type: ignore[union-attr]
    deposit = m.Deposit(command_id="dep-a", account_id="a", amount_kaus_units=10_000, occurred_at=AT)
    assert send(restored, deposit) == []  # its id came across
    done = send(restored, m.PostHold(command_id="p2", hold_id="h2", occurred_at=AT))
    assert done[-1][1]["status"] == "APPLIED" and done[-1][1]["duplicate"] is False
    assert restored.balances()["a"] == 7_400
    restored.ledger.ids.flush()  # type: ignore[attr-defined]
    assert {"dep-a", "h1", "p1", "h2", "p2"} <= rows_on_disk(tmp_path)
    assert orjson.loads(serialise(restored, "topic-1"))["settler"]["ledger"].get("transfers") is None


# ---------------------------------------------------------------------------- the stores themselves

COMMANDS = [
    (Transfer("t1", "x", "y", 5, "trade.payment"), TransferStatus.POSTED, 5),
    (PendingTransfer("h1", "x", "y", 9, "hold", 1_000), TransferStatus.PENDING, 9),
    (PostPending("p1", "h1", 4), TransferStatus.POSTED, 4),
    (PostPending("p2", "h9"), TransferStatus.POSTED, 7),
    (VoidPending("v1", "h2"), TransferStatus.VOIDED, 3),
]


@pytest.mark.parametrize(("command", "status", "units"), COMMANDS)
def test_an_entry_reads_back_as_written(command: Any, status: TransferStatus, units: int) -> None:
    from domain.ledger import TransferResult

    result = TransferResult(command.transfer_id, status, None, "x", "y", units, 123, "")
    back = decode_entry(encode_entry(command, result))
    assert back == (command, result) and type(back[0]) is type(command)


def stores(tmp_path: Path) -> list[Any]:
    return [MemoryIdStore(), SqliteIdStore(tmp_path / "ids.sqlite3", "topic-1")]


def test_both_stores_forget_exactly_the_entries_past_a_sequence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from domain.ledger import TransferResult

    monkeypatch.setattr(id_store, "FLUSH_ROWS", 7)  # some entries in the file, some in memory
    seen = []
    for store in stores(tmp_path):
        seq = 0
        for i in range(30):
            seq += 1
            store.put(
                seq,
                Transfer(f"t{i}", "x", "y", i + 1, "c"),
                TransferResult(f"t{i}", TransferStatus.POSTED, None, "x", "y", i + 1, i, ""),
            )
            if i % 5 == 4:
                seq += 1
                store.put_resolution(seq, HoldResolution(f"h{i}", PendingState.VOIDED, 0, f"v{i}", i))
        assert store.last_seq() == seq == 36
        store.forget_after(20)
        assert store.last_seq() == 20
        seen.append(
            (
                [store.get(f"t{i}") is not None for i in range(30)],
                [store.resolution(f"h{i}") is not None for i in range(30)],
                store.count(),
            )
        )
        store.put(
            21,
            Transfer("t20", "x", "y", 99, "c"),
            TransferResult("t20", TransferStatus.POSTED, None, "x", "y", 99, 1, ""),
        )
        entry = store.get("t20")
        assert entry is not None and entry[0].amount_units == 99  # written again after the restore, anew
    assert seen[0] == seen[1]
    kept, resolved, count = seen[0]
    assert kept == [i < 17 for i in range(30)] and count == 17  # seq 20 is t16 (3 resolutions before it)
    assert resolved == [i in (4, 9, 14) for i in range(30)]


def test_a_store_of_another_ledger_commands_is_emptied(tmp_path: Path) -> None:
    from domain.ledger import TransferResult

    store = SqliteIdStore(tmp_path / "ids.sqlite3", "topic-1")
    store.put(
        1, Transfer("t1", "x", "y", 1, "c"), TransferResult("t1", TransferStatus.POSTED, None, "x", "y", 1, 0, "")
    )
    store.close()
    again = SqliteIdStore(tmp_path / "ids.sqlite3", "topic-1")
    assert again.get("t1") is not None and again.last_seq() == 1
    again.close()
    other = SqliteIdStore(tmp_path / "ids.sqlite3", "topic-2")
    assert other.get("t1") is None and other.last_seq() == 0


def test_the_core_restores_over_its_store_and_forgets_what_followed() -> None:
    """The same seam in the pure core: a snapshot without entries (a durable store's) over a store that ran on."""
    store = MemoryIdStore()
    ledger = Ledger(ids=store)
    ledger.open_account("mint", allow_negative=True)
    ledger.open_account("a")
    ledger.apply(Transfer("d1", "mint", "a", 100, "deposit"), 1)
    snapshot = {k: v for k, v in ledger.to_dict().items() if k not in ("transfers", "resolutions")}
    ledger.apply(Transfer("d2", "mint", "a", 50, "deposit"), 2)  # after the snapshot
    assert store.get("d2") is not None
    restored = Ledger.from_dict(snapshot, ids=store)
    assert store.get("d2") is None and store.get("d1") is not None
    assert restored.apply(Transfer("d2", "mint", "a", 50, "deposit"), 2).status is TransferStatus.POSTED
    assert restored.balance("a") == 150  # d2 applied once: not skipped, not twice
    assert restored.apply(Transfer("d1", "mint", "a", 100, "deposit"), 3).at_ms == 1  # the original result
    conflict = restored.apply(Transfer("d1", "mint", "a", 101, "deposit"), 3)
    assert conflict.code is LedgerCode.ID_CONFLICT
    with pytest.raises(ValueError, match="id store holds entries up to 0"):
        Ledger.from_dict(snapshot, ids=MemoryIdStore())  # a store without the snapshot's ids cannot serve it
