"""Runs a coroutine on the event loop a setting names (``NEXUS_EVENT_LOOP``): uvloop, or asyncio's own.

uvloop spends less CPU per socket event, which counts for the bridge's many small messages
(figures in docs/performance.md); our code uses only the public asyncio API, so either loop runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

import uvloop

T = TypeVar("T")

LoopKind = Literal["uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], kind: LoopKind) -> T:
    """``asyncio.run(main)`` on the loop ``kind`` (callers pass ``Settings.event_loop``)."""
    if kind == "uvloop":
        return uvloop.run(main)
    assert kind == "asyncio", f"unknown event loop {kind!r}"
    return asyncio.run(main)


def running_kind() -> LoopKind:
    """Which loop runs the calling coroutine (for logs and tests)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
