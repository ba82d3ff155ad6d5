"""Runs a coroutine on the configured event loop (``NEXUS_EVENT_LOOP``): uvloop by default, asyncio on request.

Why uvloop: the bridge's work is small messages on many sockets (Kafka hand-overs, provider HTTP), so the loop's
own cost per event counts. Measured on the same VM (``bench/bench_bridge_kafka.py``): burst 1,181 → 1,344
settlements/s, bridge CPU 0.70 → 0.61 ms per settlement. Our code only uses the public asyncio API, so either
loop runs it; the unit tests of the HTTP transport run on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")

LoopKind = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], kind: LoopKind | None = None) -> T:
    """``asyncio.run(main)`` on the loop ``kind`` (default: the platform setting)."""
    if kind is None:
        from streams.settings import get_settings

        kind = get_settings().event_loop
    if kind == "uvloop":
        import uvloop

        return uvloop.run(main)
    assert kind == "asyncio", f"unknown event loop {kind!r}"
    return asyncio.run(main)


def running_kind() -> LoopKind:
    """Which loop runs the calling coroutine (for logs and tests)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
