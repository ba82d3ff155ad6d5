"""The configured event loop is the one that runs the workers' coroutines."""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka import event_loop
from streams.settings import Settings


async def which() -> str:
    await asyncio.sleep(0)
    return event_loop.running_kind()


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_run_uses_the_loop_asked_for(kind: event_loop.LoopKind) -> None:
    assert event_loop.run(which(), kind) == kind


def test_uvloop_is_the_default_and_asyncio_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().event_loop == "uvloop"
    monkeypatch.setenv("NEXUS_EVENT_LOOP", "asyncio")
    assert Settings().event_loop == "asyncio"
    monkeypatch.setenv("NEXUS_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop"):
        Settings()
