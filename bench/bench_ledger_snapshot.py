"""Ledger snapshots (streams/p2p/snapshots.py): what a restart saves, and what a snapshot costs.

    python bench/bench_ledger_snapshot.py [--orders 200000] [--accounts 2000]

Builds the ledger a seeded P2P order flow settles (deposits, then every trade matching emits), in process.
Prints: the replay a restart does without a snapshot (applying every command, decoded; reading them from
Kafka comes on top), and with one (both with the cycle collector paused, as ``rebuild_state`` does, and
running): loading it (decompress, parse, rebuild, check every invariant); the
snapshot's size; the time a background snapshot stops the ledger (the fork) and the child's time to write it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import peak_rss_mb

from contracts import models as m
from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS
from devtools.order_flow import generate_orders
from streams.kafka import ingress
from streams.kafka.gc_policy import collection_paused
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message
from streams.p2p.snapshots import LedgerSnapshots

console = Console()
AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def ledger_commands(n_orders: int, n_accounts: int) -> list[Any]:
    accounts = [f"acct-{i}" for i in range(n_accounts)]
    markets = [f"2026-11-24T{h:02d}:00Z/KR-SEOUL" for h in range(8, 20)]
    commands: list[Any] = [
        m.Deposit(command_id=f"dep-{a}", account_id=a, amount_kaus_units=10**13, occurred_at=AT) for a in accounts
    ]
    matching = MatchingPartition(0)
    orders = generate_orders(11, n_orders, markets, accounts)
    for offset, order in enumerate(track(orders, description="matching the order flow…", console=console)):
        decoded = ingress.validate(ENERGY_ORDERS, order.market_id.encode(), ENERGY_ORDERS.encode(to_message(order)))
        assert not isinstance(decoded, ingress.Rejected)
        for topic, message in matching.apply(offset, decoded):
            if topic is LEDGER_COMMANDS:
                wire = topic.encode(message)
                command = ingress.validate(LEDGER_COMMANDS, LEDGER_COMMANDS.key_of(message), wire)
                assert not isinstance(command, ingress.Rejected)
                commands.append(command)
    return commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=2_000)
    args = parser.parse_args()
    commands = ledger_commands(args.orders, args.accounts)

    def replay() -> tuple[LedgerPartition, float]:
        t0 = time.perf_counter()
        state = LedgerPartition()
        for offset, command in enumerate(commands):
            state.apply(offset, command)
        return state, time.perf_counter() - t0

    _, replay_collecting_s = replay()
    wires = [(LEDGER_COMMANDS.key_of(c), LEDGER_COMMANDS.encode(c)) for c in commands]
    with collection_paused():
        t0 = time.perf_counter()
        for key, wire in wires:
            ingress.validate(LEDGER_COMMANDS, key, wire)
        decode_s = time.perf_counter() - t0
    with collection_paused():  # as streams.kafka.partition_log.rebuild_state replays
        state, replay_s = replay()
    transfers = len(state.ledger.to_dict()["transfers"])

    with tempfile.TemporaryDirectory(prefix="bench-ledger-snapshot-") as tmp:
        store = LedgerSnapshots(Path(tmp), "bench")
        t0 = time.perf_counter()
        path = store.write(state)
        write_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        t0 = time.perf_counter()
        restored = store.load(0, until_offset=len(commands))
        load_collecting_s = time.perf_counter() - t0
        with collection_paused():
            t0 = time.perf_counter()
            restored = store.load(0, until_offset=len(commands))
            load_s = time.perf_counter() - t0
        assert restored is not None and restored.balances() == state.balances()

        path.unlink()
        t0 = time.perf_counter()
        assert store.write_in_background(state)
        fork_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        store.wait()
        child_s = time.perf_counter() - t0
        assert store.files(0), "the child wrote no snapshot"

    title = f"ledger after {len(commands):,} commands ({transfers:,} transfers, {args.accounts:,} accounts)"
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    replay_text = f"{replay_s:.2f} s ({len(commands) / replay_s:,.0f}/s)"
    table.add_row("restart without a snapshot: replay (apply only)", replay_text)
    table.add_row("  + decoding every record as read from Kafka (ingress.validate)", f"{decode_s:.2f} s")
    table.add_row("restart with a snapshot: load (parse, rebuild, check)", f"{load_s:.2f} s")
    collecting = f"{replay_collecting_s:.2f} s / {load_collecting_s:.2f} s"
    table.add_row("  the same two with the cycle collector running", collecting)
    table.add_row("snapshot file (JSON, zlib level 1)", f"{size_mb:.1f} MB")
    table.add_row("snapshot written in the foreground", f"{write_s:.2f} s")
    table.add_row("background snapshot: the ledger stops for the fork", f"{fork_ms:.1f} ms")
    table.add_row("background snapshot: the child writes for", f"{child_s:.2f} s")
    table.add_row("peak RSS of this process", f"{peak_rss_mb(os.getpid()):.0f} MB")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
