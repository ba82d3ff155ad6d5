"""Ledger agent: ledger.commands (deposits, trades to settle, dividends) -> transfers, settlements, audit."""

from __future__ import annotations

from contracts.topics import LEDGER_COMMANDS
from streams.ledger_service import LedgerPartition
from streams.replay import replaying_agent

ledger = replaying_agent(LEDGER_COMMANDS, LedgerPartition)
