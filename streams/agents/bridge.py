"""Bridge agent: bridge.requests -> four-phase settlement -> bridge.settlements.completed / .failed.

Only decodes, hands the request to `streams.bridge_service.BridgeService` and acks. Acks are manual:
a request's offset becomes committable only after its result is journaled and emitted, while other
requests keep flowing (a slow rail holds one runner slot, not the stream). Faust commits the highest
contiguous acked offset per partition, so a crash re-delivers exactly the unfinished requests, which
the journal and the ledger's idempotent commands turn into no-ops or recoveries.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from contracts.topics import BRIDGE_REQUESTS
from domain.bridge import BridgeConfig
from domain.rails import RAILS
from streams import ingress
from streams.app import app, decode, faust_topic, send_dead_letter, settings
from streams.bridge_service import (
    BridgeService,
    FxRatesListener,
    KafkaHoldLedger,
    KafkaJournal,
    LedgerOutcomes,
)
from streams.kafka_clients import AsyncProducer
from streams.providers import build_adapters
from streams.providers.base import ProviderSettings, make_transport
from streams.providers.runner import BridgeRunner

log = logging.getLogger("nexus.agents.bridge")
_service: BridgeService | None = None


async def build_service() -> BridgeService:
    bootstrap = settings.bootstrap_servers
    producer = AsyncProducer(bootstrap)
    outcomes = LedgerOutcomes(bootstrap)
    fx = FxRatesListener(bootstrap)
    await asyncio.to_thread(outcomes.start)  # before the first command: no answer can slip past
    await asyncio.to_thread(fx.start)
    provider_settings = ProviderSettings()
    transport = make_transport(provider_settings.transport, provider_settings.max_connections)
    adapters = build_adapters(provider_settings, transport)
    cfg = BridgeConfig(enabled_rails=frozenset(r for r, spec in RAILS.items() if spec.provider in adapters))
    ledger = KafkaHoldLedger(
        producer,
        outcomes,
        {cfg.rewards_account_id: "bridge:rewards", cfg.ecosystem_account_id: "bridge:ecosystem"},
    )
    journal = KafkaJournal(bootstrap, producer, ledger)
    runner = BridgeRunner(
        ledger=ledger,
        adapters=adapters,
        fx_book=lambda: fx.book,
        store=journal,
        cfg=cfg,
        max_in_flight=settings.bridge_max_in_flight,
        max_queued=settings.bridge_max_queued,
    )
    log.info("bridge ready: %d adapters, %d in flight at most", len(adapters), settings.bridge_max_in_flight)
    return BridgeService(runner, journal, producer, listeners=(outcomes, fx), transport=transport)


@app.agent(faust_topic(BRIDGE_REQUESTS), name="nexus.bridge.requests")
async def bridge(stream: faust.StreamT[bytes]) -> None:
    global _service
    if _service is None:
        _service = await build_service()
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
