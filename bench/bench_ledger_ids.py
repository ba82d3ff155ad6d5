"""The ledger's history in memory (before) and on disk (after), side by side.

    python bench/bench_ledger_ids.py [--transfers 1000000 3000000] [--accounts 2000] [--stores memory ids disk]

Three placements of what grows with history: ``memory`` (the ledger's applied ids and the settler's settled
trades in memory and in every snapshot: before both changes), ``ids`` (the ids on disk, ``streams/p2p/id_store.py``,
the settled trades still in memory) and ``disk`` (both on disk: ``streams/p2p/settled_store.py`` too).
For each size and each placement, a fresh process applies that many transfers (settled trades: three legs each,
payment, fee and dividend pool, plus the deposits), then measures: its RSS, the CPU per trade settled over the
last 50,000 trades (at that history), the snapshot it writes (size, time), and, in another fresh process, the
restart: loading that snapshot until the ledger is ready (imports excluded), over the same placement, and its RSS
then. All run the same code path (LedgerPartition, LedgerSnapshots); only where the history lives differs. Trades
are built with ``model_construct`` (no pydantic validation): the figures are the ledger's, not the decoder's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

console = Console()
AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
LEGS_PER_TRADE = 3  # payment, fee, dividend pool (no carbon: grid-mix sellers)
CPU_WINDOW_TRADES = 50_000  # at most: a smaller run measures its last half
STORES = ("memory", "ids", "disk")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def trades(n: int, accounts: int) -> Any:
    from contracts import models as m

    for i in range(n):
        buyer, seller = f"acct-{i % accounts}", f"acct-{(i * 7 + 1) % accounts}"
        if buyer == seller:
            seller = f"acct-{(i + 1) % accounts}"
        trade = m.Trade.model_construct(
            trade_id=f"KR-SEOUL:{i}", market_id="2026-11-24T10:00Z/KR-SEOUL", sequence=i, buy_order_id=f"b{i}",
            sell_order_id=f"s{i}", buyer_account_id=buyer, seller_account_id=seller, aggressor_side=m.Side.BUY,
            price_units_per_kwh=150_000, quantity_wh=1_000, notional_kaus_units=150_000, executed_at=AT,
            matching_duration_us=None,
        )  # fmt: skip
        yield m.SettleTrade.model_construct(
            type="SETTLE_TRADE", command_id=trade.trade_id, trade=trade, seller_energy_source=None
        )


def child_build(store: str, n_transfers: int, accounts: int, directory: Path) -> dict[str, Any]:
    from contracts import models as m
    from streams.kafka.gc_policy import collection_paused
    from streams.p2p.ledger import LedgerPartition
    from streams.p2p.snapshots import LedgerSnapshots

    snapshots = LedgerSnapshots(directory, "bench")
    if store == "disk":
        state = snapshots.on_disk(LedgerPartition)(0)
    else:
        state = LedgerPartition(ids=snapshots.id_store(0)) if store == "ids" else LedgerPartition()
    offset = 0
    for a in range(accounts):
        deposit = m.Deposit(command_id=f"dep-{a}", account_id=f"acct-{a}", amount_kaus_units=10**15, occurred_at=AT)
        state.apply(offset, deposit)
        offset += 1
    n_trades = (n_transfers - accounts) // LEGS_PER_TRADE
    window = min(CPU_WINDOW_TRADES, n_trades // 2)
    cpu_from = n_trades - window
    cpu_start = 0.0
    with collection_paused():  # as a replay runs; the live loop collects, both stores alike
        for i, command in enumerate(trades(n_trades, accounts)):
            if i == cpu_from:
                cpu_start = time.process_time()
            state.apply(offset, command)
            offset += 1
    cpu_us = (time.process_time() - cpu_start) / window * 1e6
    transfers = state.ledger.transfer_count()
    rss_after = rss_mb()
    t0 = time.perf_counter()
    path = snapshots.write(state)
    write_s = time.perf_counter() - t0
    ids_mb = sum(p.stat().st_size for p in directory.glob("ids-0.sqlite3*")) / 2**20
    settled_mb = sum(p.stat().st_size for p in directory.glob("settled-0.sqlite3*")) / 2**20
    return {
        "transfers": transfers,
        "trades": n_trades,
        "cpu_us_per_trade": cpu_us,
        "rss_mb": rss_after,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "snapshot_mb": path.stat().st_size / 2**20,
        "snapshot_write_s": write_s,
        "id_file_mb": ids_mb,
        "settled_file_mb": settled_mb,
        "next_offset": state.next_offset,
    }


def child_restart(store: str, directory: Path, next_offset: int) -> dict[str, Any]:
    import zlib

    from streams.kafka.gc_policy import collection_paused
    from streams.p2p.snapshots import LedgerSnapshots, restore

    rss_before = rss_mb()
    t0 = time.perf_counter()
    with collection_paused():  # as rebuild_state restores
        snapshots = LedgerSnapshots(directory, "bench")
        if store == "disk":
            state = snapshots.load(0, until_offset=next_offset)
        else:  # what was in memory is restored into memory (not rewritten into a file store)
            raw = zlib.decompress(snapshots.files(0)[0].path.read_bytes())
            state = restore(raw, "bench", 0, ids=snapshots.id_store(0) if store == "ids" else None)
    load_s = time.perf_counter() - t0
    assert state is not None and state.next_offset == next_offset
    return {"restart_s": load_s, "restart_rss_mb": rss_mb(), "restart_rss_growth_mb": rss_mb() - rss_before}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--accounts", type=int, default=2_000)
    parser.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    parser.add_argument("--child", nargs=3, metavar=("STORE", "TRANSFERS", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--restart", nargs=3, metavar=("STORE", "DIR", "OFFSET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        store, n, directory = args.child
        print(json.dumps(child_build(store, int(n), args.accounts, Path(directory))))
        return 0
    if args.restart:
        store, directory, offset = args.restart
        print(json.dumps(child_restart(store, Path(directory), int(offset))))
        return 0

    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for n in args.transfers:
        for store in args.stores:
            with tempfile.TemporaryDirectory(prefix="bench-ledger-ids-") as tmp:
                console.print(f"{store}: applying {n:,} transfers…")
                t0 = time.perf_counter()
                built = run_child("--child", store, str(n), tmp, "--accounts", str(args.accounts))
                built |= run_child("--restart", store, tmp, str(built["next_offset"]))
                rows[(store, n)] = built
                console.print(f"{store}: {json.dumps(built)} ({time.perf_counter() - t0:.0f} s)")
    print_table(rows, args.transfers, args.stores, args.accounts)
    if len(args.transfers) >= 2:
        extrapolate(rows, args.transfers, args.stores, 10_000_000)
    return 0


def print_table(
    rows: dict[tuple[str, int], dict[str, Any]], sizes: list[int], stores: list[str], accounts: int
) -> None:
    table = Table(title=f"the ledger's history in memory and on disk ({', '.join(stores)}); {accounts:,} accounts")
    table.add_column("figure")
    for n in sizes:
        for store in stores:
            table.add_column(f"{n:,} {store}", justify="right")
    figures = [
        ("transfers applied", "transfers", "{:,}"),
        ("RSS after applying (MB)", "rss_mb", "{:.0f}"),
        ("peak RSS, snapshot written (MB)", "peak_rss_mb", "{:.0f}"),
        ("snapshot file (MB, zlib)", "snapshot_mb", "{:.1f}"),
        ("id store file (MB)", "id_file_mb", "{:.0f}"),
        ("settled store file (MB)", "settled_file_mb", "{:.0f}"),
        ("restart: load snapshot until ready (s)", "restart_s", "{:.2f}"),
        ("RSS after the restart (MB)", "restart_rss_mb", "{:.0f}"),
        ("snapshot written in the foreground (s)", "snapshot_write_s", "{:.2f}"),
        (f"CPU per trade settled, last {CPU_WINDOW_TRADES:,} (µs)", "cpu_us_per_trade", "{:.1f}"),
    ]
    for label, key, fmt in figures:
        table.add_row(label, *(fmt.format(rows[(s, n)][key]) for n in sizes for s in stores))
    console.print(table)


def extrapolate(rows: dict[tuple[str, int], dict[str, Any]], sizes: list[int], stores: list[str], target: int) -> None:
    """Linear in the number of transfers, through the two largest sizes measured: value(target) = b + slope * n."""
    a, b = sorted(sizes)[-2:]
    console.print(f"extrapolated to {target:,} transfers (linear through {a:,} and {b:,}):")
    for store in stores:
        for key in ("rss_mb", "snapshot_mb", "restart_s", "restart_rss_mb", "cpu_us_per_trade"):
            va, vb = rows[(store, a)][key], rows[(store, b)][key]
            slope = (vb - va) / (rows[(store, b)]["transfers"] - rows[(store, a)]["transfers"])
            value = vb + slope * (target - rows[(store, b)]["transfers"])
            per_million = slope * 1e6
            console.print(f"  {store:6} {key:18} {va:10.2f} -> {vb:10.2f}: {per_million:+9.3f} per 1M = {value:10.2f}")


if __name__ == "__main__":
    sys.exit(main())
