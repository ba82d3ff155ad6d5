"""Matching agent: energy.orders -> order events, trades, prices (and a settlement command per trade).

State: one `MatchingPartition` per input partition, in memory. On the first event of a
partition (after start, crash or rebalance) the state is rebuilt by replaying that
partition from the log up to the event's offset, silently. Outputs of a batch are
acknowledged by Kafka before the batch's input offsets are committed, so a crash can
only repeat outputs (same ids, deterministic), never lose them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust

from contracts.topics import ENERGY_ORDERS
from streams import ingress
from streams.app import app, decode, emit, send_dead_letter, settings
from streams.matching_service import MatchingPartition
from streams.partition_log import read_partition

log = logging.getLogger("nexus.matching")
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.005

states: dict[int, MatchingPartition] = {}


def rebuild(partition: int, until_offset: int) -> MatchingPartition:
    started = time.perf_counter()
    state = MatchingPartition(partition)
    for offset, key, value in read_partition(settings.bootstrap_servers, ENERGY_ORDERS.name, partition, until_offset):
        decoded = ingress.validate(ENERGY_ORDERS, key, value, settings.max_ingress_message_bytes)
        state.next_offset = offset
        state.apply(offset, None if isinstance(decoded, ingress.Rejected) else decoded)
    state.next_offset = until_offset
    log.info(
        "rebuilt %s[%d] from %d records in %.2fs", ENERGY_ORDERS.name, partition, until_offset,
        time.perf_counter() - started,
    )
    return state


@app.on_partitions_revoked.connect
async def _forget_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
    # Another worker may process these partitions now; our copy would go stale.
    for tp in revoked:
        if tp.topic == ENERGY_ORDERS.name:
            states.pop(tp.partition, None)


@app.agent(app.topic(ENERGY_ORDERS.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw"))
async def match_orders(stream: faust.StreamT[bytes]) -> None:
    async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
        deliveries = []
        for event in events:
            message = event.message
            state = states.get(message.partition)
            if state is None or message.offset > state.next_offset:
                state = states[message.partition] = await asyncio.to_thread(
                    rebuild, message.partition, message.offset
                )
            if message.offset < state.next_offset:
                continue  # redelivered after a rebalance: already applied and emitted
            decoded = decode(ENERGY_ORDERS, event)
            if isinstance(decoded, ingress.Rejected):
                state.apply(message.offset, None)
                deliveries.append(await send_dead_letter(event, decoded))
                continue
            started_ns = time.perf_counter_ns()
            outputs = state.apply(message.offset, decoded)
            matching_us = (time.perf_counter_ns() - started_ns) // 1000
            for topic, output in outputs:
                if topic.name == "energy.trades":
                    output = output.model_copy(update={"matching_duration_us": matching_us})
                deliveries.append(await emit(topic, output))
        if deliveries:
            await asyncio.gather(*deliveries)
