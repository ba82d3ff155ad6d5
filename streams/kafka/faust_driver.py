"""The Faust driver of a `RecordProcessor`: consume a batch, hand its records over, send the outputs, ack.

A batch's offsets become committable only after its outputs are acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import faust

from contracts.topics import PLATFORM_DEADLETTERS
from streams.kafka.commits import EXIT_FATAL
from streams.kafka.faust_app import Outbox, faust_topic
from streams.kafka.processor import Output, RecordProcessor
from streams.ops import metrics
from streams.settings import Settings

log = logging.getLogger("nexus.faust_driver")
METER = metrics.RecordMeter()  # the same series as the plain driver's: throughput and time per record


class FaustDriver:
    def __init__(self, processor: RecordProcessor, outbox: Outbox) -> None:
        self.processor = processor
        self.outbox = outbox

    async def outputs_of(self, events: list[faust.EventT]) -> list[Output]:
        """Apply a batch; return its outputs in order (nothing is sent yet). Rebuilds run in a thread."""
        processor, outputs = self.processor, []
        for event in events:
            message = event.message
            if processor.needs_rebuild(message.partition, message.offset):
                await asyncio.to_thread(processor.rebuild, message.partition, message.offset)
            stamped_s = getattr(message, "timestamp", None)  # Faust: seconds, the broker's on ledger.commands
            record_ms = int(stamped_s * 1000) if stamped_s else None
            started = time.perf_counter()
            produced = processor.process(message.partition, message.offset, message.key, message.value, record_ms)
            outcome = "dead_letter" if any(topic is PLATFORM_DEADLETTERS for topic, _ in produced) else "ok"
            METER.observe(processor.topic.name, outcome, time.perf_counter() - started)
            outputs += produced
        return outputs

    async def flush_and_ack(self, stream: faust.StreamT[bytes], events: list[faust.EventT], sent: bool) -> None:
        if sent:
            await self.outbox.flush()
        for event in events:  # only now may the batch's offsets be committed
            await stream.ack(event)

    async def consume(self, stream: faust.StreamT[bytes], batch_max: int, within_s: float) -> None:
        # Batch N+1 is applied and encoded while batch N's outputs are being acknowledged; its outputs are sent
        # only once N's are acknowledged, so what reaches Kafka, in which order, is as without the overlap.
        pending: asyncio.Task[None] | None = None
        async for events in stream.noack_take(batch_max, within=within_s):  # type: ignore[attr-defined]
            batch: list[faust.EventT] = list(events)
            records = self.outbox.encode_all(await self.outputs_of(batch))
            if pending is not None:
                try:
                    await pending  # raises if the previous batch's outputs failed: nothing more is sent
                except Exception as failure:
                    # An infrastructure fault (a record's content cannot cause one: every record has an outcome).
                    # The whole worker stops, as the plain driver does, instead of leaving a dead agent inside a
                    # running worker; nothing past the batch was committed, and a restart replays from there.
                    log.critical(
                        "outputs of %s not acknowledged, exiting so a restart replays them: %s",
                        self.processor.topic.name,
                        failure,
                    )
                    logging.shutdown()
                    os._exit(EXIT_FATAL)
            self.outbox.send(records)
            self.processor.maybe_snapshot(time.monotonic())
            pending = asyncio.ensure_future(self.flush_and_ack(stream, batch, bool(records)))
            pending.add_done_callback(_report_failure)


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("outputs of a batch were not acknowledged: %s", task.exception())


def register(
    app: faust.App, settings: Settings, processor: RecordProcessor, *, batch_max: int = 1000, within_s: float = 0.005
) -> FaustDriver:
    """Add the agent that drives `processor` over its topic to `app`."""
    # Its own producer: `flush` then waits for this agent's outputs only, not for another agent's.
    driver = FaustDriver(processor, Outbox(settings.bootstrap_servers))
    topic = processor.topic
    metrics.add_refresher(metrics.snapshot_age_refresher([processor]))
    metrics.add_refresher(metrics.holds_open_refresher([processor]))

    async def consume(stream: faust.StreamT[bytes]) -> None:
        try:
            await driver.consume(stream, batch_max, within_s)
        finally:
            processor.close()

    consume.__name__ = consume.__qualname__ = f"process_{topic.name.replace('.', '_')}"
    app.agent(faust_topic(app, topic, settings), name=f"nexus.{topic.name}")(consume)
    return driver


__all__ = ["FaustDriver", "register"]
