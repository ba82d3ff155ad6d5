"""Matching agent: energy.orders -> order events, trades, prices, and a settlement command per trade."""

from __future__ import annotations

from contracts.topics import ENERGY_ORDERS
from streams.matching_service import MatchingPartition
from streams.replay import replaying_agent

matching = replaying_agent(ENERGY_ORDERS, MatchingPartition)
