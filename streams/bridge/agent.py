"""The bridge on Faust: bridge.requests -> four-phase settlement -> bridge.settlements.completed / .failed.

A thin driver: it hands each raw record to :meth:`streams.bridge.service.BridgeService.handle` with a callback
that acks the event once it and every earlier record of its partition are finished (``OrderedAcks``: Faust's own
gap check lets an out-of-order ack commit past a record in flight). A record is finished once its result is
journaled and emitted (or its dead letter acknowledged), so a crash re-delivers exactly the unfinished requests,
which the journal and the ledger's idempotent commands turn into answers or recoveries.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from contracts.topics import BRIDGE_REQUESTS
from streams.bridge.offsets import OrderedAcks
from streams.bridge.service import BridgeService, build_service, watch_metrics
from streams.kafka.faust_app import faust_topic
from streams.settings import Settings

log = logging.getLogger("nexus.agents.bridge")


def register(app: faust.App, settings: Settings) -> None:
    """Add the bridge agent and its partitions-revoked handler to ``app``; the service is built when the agent
    starts."""
    running: list[BridgeService] = []  # the agent's service while it runs (one agent instance)
    acks = OrderedAcks()
    watch_metrics(lambda: tuple(running))  # its breakers and settlements in flight on the worker's /metrics

    async def bridge(stream: faust.StreamT[bytes]) -> None:
        service = await build_service(settings)
        running.append(service)
        try:
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                message = event.message
                done = acks.started(message.partition, message.offset, event.ack)
                await service.handle(message.key, message.value, message.partition, message.offset, done)
        finally:  # worker stopping: unfinished requests stay unacked and are recovered on restart
            running.remove(service)
            await service.aclose()

    async def forget_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        lost = [tp.partition for tp in revoked if tp.topic == BRIDGE_REQUESTS.name]
        acks.forget(lost)
        for service in running:
            service.forget(lost)

    app.agent(faust_topic(app, BRIDGE_REQUESTS, settings), name="nexus.bridge.requests")(bridge)
    app.on_partitions_revoked.connect(forget_revoked)  # type: ignore[arg-type]


__all__ = ["register"]
