"""Bridge agent: bridge.requests -> four-phase settlement -> bridge.settlements.completed / .failed.

Only decodes, hands the request to `streams.bridge.service.BridgeService` and acks. Acks are manual:
a request's offset becomes committable only after its result is journaled and emitted, while other
requests keep flowing (a slow rail holds one runner slot, not the stream). Faust commits the highest
contiguous acked offset per partition, so a crash re-delivers exactly the unfinished requests, which
the journal and the ledger's idempotent commands turn into no-ops or recoveries.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from contracts.topics import BRIDGE_REQUESTS
from streams.bridge.service import BridgeService, build_service
from streams.kafka import ingress
from streams.kafka.faust_app import app, decode, faust_topic, send_dead_letter, settings

log = logging.getLogger("nexus.agents.bridge")
_service: BridgeService | None = None


@app.agent(faust_topic(BRIDGE_REQUESTS), name="nexus.bridge.requests")
async def bridge(stream: faust.StreamT[bytes]) -> None:
    global _service
    if _service is None:
        _service = await build_service(settings)
    service = _service
    try:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            decoded = decode(BRIDGE_REQUESTS, event)
            if isinstance(decoded, ingress.Rejected):
                ack = await send_dead_letter(event, decoded)
                await ack
                event.ack()
                continue
            await service.submit(decoded, event.message.partition, event.ack)
    finally:  # worker stopping: unfinished requests stay unacked and are recovered on restart
        _service = None
        await service.aclose()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
    if _service is not None:
        _service.forget(tp.partition for tp in revoked if tp.topic == BRIDGE_REQUESTS.name)
