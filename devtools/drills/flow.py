"""The drills' seeded order flow and its clean in-process run."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import models as m
from contracts.topics import ENERGY_TRADES, LEDGER_COMMANDS
from devtools.order_flow import generate_orders
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message

DEPOSIT_UNITS = 10**15
ACCOUNTS = 24
Commands = list[m.SubmitOrder | m.CancelOrder | m.AmendOrder]


def seeded_flow(run_id: str, orders: int, tag: str = "D") -> tuple[list[m.Deposit], Commands]:
    """Deposits for 24 funded accounts and ``orders`` commands over 6 markets, all named after ``run_id``."""
    markets = [f"2026-11-24T{hour:02d}:00Z/{tag}{run_id.upper()}" for hour in range(10, 16)]
    accounts = [f"acct-dr-{run_id}-{i:02d}" for i in range(ACCOUNTS)]
    start = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    deposits = [
        m.Deposit(command_id=f"dep-{a}", account_id=a, amount_kaus_units=DEPOSIT_UNITS, occurred_at=start)
        for a in accounts
    ]
    start_ms = int(start.timestamp() * 1000) + 60_000
    commands = [to_message(c) for c in generate_orders(20261124, orders, markets, accounts, start_ms=start_ms)]
    return deposits, commands


def reference_run(deposits: list[m.Deposit], commands: Commands) -> tuple[dict[str, m.Trade], dict[str, int]]:
    """The trades and K-AUS balances of the same services driven in-process: one book state per market is all
    that matters (partitioning only groups markets), and funded accounts make the ledger's end state independent
    of how markets interleave."""
    state = MatchingPartition(0)
    ledger = LedgerPartition()
    offset = 0
    for deposit in deposits:
        ledger.apply(offset, deposit)
        offset += 1
    trades: dict[str, m.Trade] = {}
    for i, command in enumerate(commands):
        for topic, output in state.apply(i, command):
            if topic is ENERGY_TRADES:
                trades[output.trade_id] = output
            elif topic is LEDGER_COMMANDS:
                ledger.apply(offset, output)
                offset += 1
    ledger.ledger.check_invariants()
    return trades, ledger.balances()
