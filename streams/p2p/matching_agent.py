"""Matching agent: energy.orders -> order events, trades, prices, and a settlement command per trade."""

from __future__ import annotations

from contracts.topics import ENERGY_ORDERS
from streams.kafka.faust_driver import replaying_agent
from streams.p2p.matching import MatchingPartition

matching = replaying_agent(ENERGY_ORDERS, MatchingPartition)
