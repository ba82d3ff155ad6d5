"""The monitoring agent gives every record one outcome too: a record whose observation raises is dead-lettered as
PROCESSING_ERROR (with its payload records, if any) and the next record is observed; monitoring keeps running."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from contracts import models as m
from contracts.examples import build
from contracts.topics import FX_RATES, PLATFORM_DEADLETTERS, Topic
from domain.alert_rules import load_rules
from streams.alerting import agent
from streams.alerting.agent import Monitor
from streams.kafka.faust_app import Outbox
from streams.settings import Settings


class RecordingOutbox(Outbox):
    def __init__(self) -> None:
        super().__init__("unused:9092")
        self.sent: list[tuple[Topic, Any]] = []

    async def emit(self, topic: Topic, message: Any) -> asyncio.Future[int]:
        self.sent.append((topic, message))
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(len(self.sent))
        return done


def event(topic: Topic, message: Any, offset: int) -> Any:
    record = SimpleNamespace(
        topic=topic.name, partition=0, offset=offset, key=topic.key_of(message), value=topic.encode(message)
    )
    return SimpleNamespace(message=record)


def test_a_record_whose_observation_raises_is_dead_lettered_and_the_next_is_observed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings()
    outbox = RecordingOutbox()
    monitor = Monitor(load_rules(settings.alerting_rules_file.read_text()), settings, outbox)
    real = agent.observations
    poison = build(m.FxRate, quote_id="fx-poison")

    def observations(message: Any) -> Any:
        if getattr(message, "quote_id", None) == "fx-poison":
            raise ZeroDivisionError("a value nobody foresaw")
        return real(message)

    monkeypatch.setattr(agent, "observations", observations)

    async def scenario() -> None:
        await monitor.receive(event(FX_RATES, poison, 0))
        await monitor.receive(event(FX_RATES, build(m.FxRate, quote_id="fx-fine"), 1))

    asyncio.run(scenario())
    assert [t for t, _ in outbox.sent] == [PLATFORM_DEADLETTERS]
    letter = outbox.sent[0][1]
    assert letter.reason_code == "PROCESSING_ERROR" and "ZeroDivisionError" in letter.reason
    assert (letter.source_topic, letter.source_offset) == (FX_RATES.name, 0)
    assert monitor.received[FX_RATES.name] == 1, "the record behind it is observed; the poisoned one is not counted"
    assert monitor.rejected[FX_RATES.name] == 1
