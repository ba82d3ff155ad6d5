"""The P2P market on Faust: one agent per processor (streams.worker registers them by role)."""

from __future__ import annotations

import faust

from streams.kafka import faust_driver
from streams.p2p.processors import ledger_processor, matching_processor
from streams.settings import Settings


def register_matching(app: faust.App, settings: Settings) -> faust_driver.FaustDriver:
    """energy.orders -> order events, trades, prices, and a settlement command per trade."""
    return faust_driver.register(app, settings, matching_processor(settings))


def register_settlement(app: faust.App, settings: Settings) -> faust_driver.FaustDriver:
    """ledger.commands (deposits, trades to settle, holds, dividends) -> transfers, settlements, outcomes, audit."""
    return faust_driver.register(app, settings, ledger_processor(settings))
