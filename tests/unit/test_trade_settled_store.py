"""The settler's settled trades in a store (domain.trade_settlement.SettledStore; on disk:
streams/p2p/settled_store.py), checkpointed by the settled sequence as the ledger's ids are.

What must hold in both stores: after a restore, a re-sent trade gets its original outcome (replayed, nothing
moves), another trade under a settled id is refused, and a trade settled past the snapshot is forgotten so the
replay settles it again (kept, it would be answered "already settled" while the snapshot's balances lack it).
"""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Callable
from itertools import count
from pathlib import Path

import pytest

from contracts import models as m
from domain.ledger import Ledger, Transfer
from domain.order_book import Side, Trade
from domain.trade_settlement import (
    SYS_MINT,
    EnergySource,
    MemorySettledStore,
    SettledStore,
    SettledTrade,
    SettlementCode,
    SettlementStatus,
    TradeSettler,
)
from streams.p2p.ledger import LedgerPartition
from streams.p2p.settled_store import SqliteSettledStore, decode_settled, encode_settled
from streams.p2p.snapshots import LedgerSnapshots, serialise
from tests.unit.test_ledger_snapshots import applied, ledger_commands

M = "2026-11-24T10:00Z/KR-SEOUL"
_seq = count(1)
# A store and how a new process finds it again: a memory store dies with its process (the snapshot carries its
# entries), a file is opened anew (the old object's unwritten entries are gone with it).
Stores = tuple[SettledStore, Callable[[], SettledStore]]


def trade(qty: int = 1_000, seller: str = "seller") -> Trade:
    seq = next(_seq)
    price = 150_000
    return Trade(
        f"{M}:{seq}", M, seq, seq, f"b{seq}", f"s{seq}", "buyer", seller, price, qty, price * qty // 1000, Side.BUY
    )


def funded(settled: SettledStore) -> TradeSettler:
    s = TradeSettler(Ledger(check_every_op=True), settled=settled)
    s.ledger.open_account("buyer")
    s.ledger.apply(Transfer("deposit:buyer", SYS_MINT, "buyer", 10**12, "deposit"), 0)
    return s


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    if request.param == "memory":
        memory = MemorySettledStore()
        return memory, lambda: memory
    path = tmp_path / "settled.sqlite3"
    return SqliteSettledStore(path, "topic-1"), lambda: SqliteSettledStore(path, "topic-1")


def went_on(s: TradeSettler, trades: list[Trade], at_ms: int) -> None:
    """Settle past a snapshot; a file store writes them to disk (then the process dies)."""
    for t in trades:
        assert s.settle(t, at_ms).status is SettlementStatus.SETTLED
    if isinstance(s.settled, SqliteSettledStore):
        s.settled.flush()


def snapshot_of(s: TradeSettler) -> dict[str, object]:
    """As the snapshot writer does: a file store is flushed (fsynced) before the snapshot exists."""
    if isinstance(s.settled, SqliteSettledStore):
        s.settled.flush(durable=True)
    return copy.deepcopy(s.to_dict())


def test_a_resent_trade_gets_its_original_outcome_after_a_restore(stores: Stores) -> None:
    store, reopen = stores
    s = funded(store)
    trades = [trade(qty=q) for q in (300, 800, 1_200)]
    first = [s.settle(t, 1) for t in trades]
    snapshot = snapshot_of(s)
    assert ("settled" in snapshot) is not store.durable  # a durable store's trades are not in the snapshot

    restored = TradeSettler.from_dict(snapshot, settled=reopen())
    balances = restored.ledger.accounts()
    for t, original in zip(trades, first, strict=True):
        again = restored.settle(t, 9)
        assert again.replayed and again._replace(replayed=False) == original
    assert restored.ledger.accounts() == balances and restored.settled_seq == 3


def test_another_trade_under_a_settled_id_is_refused_after_a_restore(stores: Stores) -> None:
    store, reopen = stores
    s = funded(store)
    t = trade()
    s.settle(t, 1)
    restored = TradeSettler.from_dict(snapshot_of(s), settled=reopen())
    balances = restored.ledger.accounts()
    other = t._replace(quantity_wh=2_000, notional_units=t.notional_units * 2)
    refused = restored.settle(other, 2)
    assert refused.status is SettlementStatus.REJECTED and refused.code is SettlementCode.TRADE_ID_CONFLICT
    assert restored.ledger.accounts() == balances and restored.settled_seq == 1


def test_trades_settled_past_the_snapshot_are_forgotten_and_settle_again(stores: Stores) -> None:
    store, reopen = stores
    s = funded(store)
    early, late = [trade(qty=q) for q in (300, 800)], [trade(qty=q) for q in (500, 700, 900)]
    went_on(s, early, 1)
    snapshot = snapshot_of(s)
    went_on(s, late, 2)  # the worker went on, then died
    assert all(store.get(t.trade_id) is not None for t in late)

    found = reopen()
    restored = TradeSettler.from_dict(snapshot, settled=found)
    assert all(found.get(t.trade_id) is None for t in late) and found.last_seq() == 2
    never_stopped = funded(MemorySettledStore())
    went_on(never_stopped, early, 1)
    for t in late:
        again, expected = restored.settle(t, 2), never_stopped.settle(t, 2)
        assert not again.replayed and again == expected  # settled anew, with the same outcome
    assert restored.ledger.accounts() == never_stopped.ledger.accounts()
    assert found.last_seq() == restored.settled_seq == 5


def test_a_new_settler_has_settled_nothing_and_empties_its_store(stores: Stores) -> None:
    store, reopen = stores
    s = funded(store)
    went_on(s, [trade(), trade()], 1)
    found = reopen()
    assert found.count() == 2
    fresh = funded(found)  # a replay from the beginning
    assert found.count() == 0 and fresh.settled_seq == 0


def test_a_file_behind_its_snapshot_cannot_serve_it(tmp_path: Path) -> None:
    s = funded(SqliteSettledStore(tmp_path / "settled.sqlite3", "topic-1"))
    went_on(s, [trade(), trade()], 1)
    snapshot = snapshot_of(s)
    lost = SqliteSettledStore(tmp_path / "other.sqlite3", "topic-1")  # say, a disk restored from an old backup
    with pytest.raises(ValueError, match="settled store holds trades up to 0, the snapshot 2"):
        TradeSettler.from_dict(snapshot, settled=lost)


def test_a_format_1_snapshot_loads_and_its_trades_move_into_the_store(tmp_path: Path) -> None:
    s = funded(MemorySettledStore())
    trades = [trade(qty=q) for q in (300, 800)]
    first = [s.settle(t, 1) for t in trades]
    legacy = s.to_dict()  # as /1 wrote it: every settled trade inside, in order, no sequence
    legacy["format"] = "nexus-x.trade-settlement/1"
    del legacy["settled_seq"]
    legacy["settled"] = [{k: v for k, v in row.items() if k != "seq"} for row in legacy["settled"]]

    store = SqliteSettledStore(tmp_path / "settled.sqlite3", "topic-1")
    restored = TradeSettler.from_dict(legacy, settled=store)
    assert restored.settled_seq == 2 and store.count() == 2 and "settled" not in restored.to_dict()
    assert [restored.settle(t, 9)._replace(replayed=False) for t in trades] == first


def test_a_store_of_another_ledger_commands_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "settled.sqlite3"
    store = SqliteSettledStore(path, "topic-1")
    funded(store).settle(trade(), 1)
    store.close()
    assert SqliteSettledStore(path, "topic-1").count() == 1
    other = SqliteSettledStore(path, "topic-2")
    assert other.count() == 0 and other.last_seq() == 0


def test_a_settled_trade_reads_back_as_written() -> None:
    t = trade()._replace(buy_remaining_wh=0, sell_remaining_wh=250, aggressor_side=Side.SELL)
    for settled in (
        SettledTrade(t, 375, 187, 0, EnergySource.GRID_MIX, 5),
        SettledTrade(t, 0, 0, 3, EnergySource.SOLAR, 6),
    ):
        assert decode_settled(encode_settled(settled)) == settled


# ---------------------------------------------------------------------------- the crash at the core/shell seam


def settled_on_disk(directory: Path) -> set[str]:
    con = sqlite3.connect(directory / "settled-0.sqlite3")
    try:
        return {row[0] for row in con.execute("SELECT trade_id FROM settled")}
    finally:
        con.close()


def test_a_worker_restored_from_its_snapshot_settles_the_later_trades_again(tmp_path: Path) -> None:
    commands = ledger_commands(900)
    cut = len(commands) // 2
    snapshots = LedgerSnapshots(tmp_path, "topic-1")
    state, _ = applied(commands[:cut], snapshots.on_disk(LedgerPartition)(0))
    snapshots.write(state)
    assert b'"settled"' not in serialise(state, "topic-1")  # the trades are in the file, not in the snapshot
    state, _ = applied(commands, state, start=cut)  # the worker goes on past the snapshot...
    snapshots.settled_store(0).flush()  # ...its settled trades reach the disk, then it dies
    later = {c.trade.trade_id for c in commands[cut:] if isinstance(c, m.SettleTrade)}
    assert len(later) > 50 and later <= settled_on_disk(tmp_path)

    restored = LedgerSnapshots(tmp_path, "topic-1").load(0, until_offset=cut)
    assert restored is not None and restored.settler.settled.durable
    assert not later & settled_on_disk(tmp_path), "settled trades past the snapshot still on disk"
    _, replayed = applied(commands, restored, start=cut)
    never_stopped, expected = applied(commands, applied(commands[:cut])[0], start=cut)
    assert replayed == expected  # every later trade settled again, with the same records; none skipped
    assert restored.balances() == never_stopped.balances()
