"""The Faust driver's processor state survives a rebalance: records offered again after partitions were revoked
and handed back are not applied, nor their outputs emitted, a second time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import ENERGY_ORDERS, PLATFORM_DEADLETTERS
from devtools.order_flow import generate_orders
from streams.kafka.faust_app import Outbox
from streams.kafka.faust_driver import FaustDriver
from streams.ops import metrics
from streams.p2p.matching import to_message
from streams.p2p.processors import matching_processor
from streams.settings import Settings
from tests.unit.test_ingress import BAD_INPUTS

PARTITION = 5
MARKET = "2026-11-24T10:00Z/KR-SEOUL"


def _events() -> list[Any]:
    records: list[tuple[bytes | None, bytes | None]] = [(key, value) for _l, key, value, _c, _f in BAD_INPUTS[:3]]
    for cmd in generate_orders(3, 60, [MARKET], [f"acct-{i}" for i in range(6)]):
        records.append((cmd.market_id.encode(), ENERGY_ORDERS.encode(to_message(cmd))))
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                topic=ENERGY_ORDERS.name, partition=PARTITION, offset=offset, key=key, value=value, tp=None
            )
        )
        for offset, (key, value) in enumerate(records)
    ]


def test_records_offered_again_after_a_rebalance_emit_nothing_twice() -> None:
    matching = FaustDriver(matching_processor(Settings()), Outbox("127.0.0.1:1"))  # nothing is sent

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        events = _events()
        first = await matching.outputs_of(events[:40])
        # A rebalance before the batch's offsets were committed: Faust revokes, reassigns the same
        # partition, and offers the records again from the last committed offset (here: the start).
        again = await matching.outputs_of(events)
        return first, again, events

    first, again, events = asyncio.run(scenario())
    assert [t for t, _ in first].count(PLATFORM_DEADLETTERS) == 3
    assert any(t is not PLATFORM_DEADLETTERS for t, _ in first), "the seeded orders produce outputs"
    assert PLATFORM_DEADLETTERS not in [t for t, _ in again], "a bad record is dead-lettered once"
    # Only the records after the first batch produce outputs, and exactly those a single pass gives.
    matching.processor.states.pop(PARTITION)
    single = asyncio.run(matching.outputs_of(events))
    # Compared by topic and key: dead letters carry their arrival time, trades their measured duration.
    assert [(t.name, t.key_of(m)) for t, m in first + again] == [(t.name, t.key_of(m)) for t, m in single]


def test_the_faust_driver_counts_each_record_it_handles_by_outcome() -> None:
    def counted(outcome: str) -> float:
        for family in text_string_to_metric_families(metrics.render().decode()):
            for s in family.samples:
                if s.name == "nexus_records_processed_total" and s.labels == {
                    "topic": ENERGY_ORDERS.name,
                    "outcome": outcome,
                }:
                    return float(s.value)
        return 0.0

    before_ok, before_bad = counted("ok"), counted("dead_letter")
    matching = FaustDriver(matching_processor(Settings()), Outbox("127.0.0.1:1"))
    events = _events()
    asyncio.run(matching.outputs_of(events))
    assert counted("dead_letter") - before_bad == 3  # the three bad inputs
    assert counted("ok") - before_ok == len(events) - 3
