"""Ledger agent: ledger.commands (deposits, trades to settle, dividends) -> transfers, settlements, audit."""

from __future__ import annotations

from contracts.topics import LEDGER_COMMANDS
from streams.kafka.faust_driver import replaying_agent
from streams.p2p.ledger import LedgerPartition

ledger = replaying_agent(LEDGER_COMMANDS, LedgerPartition)
