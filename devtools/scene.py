"""What the demo's scripted scenes share: waiting on the platform's answers while the demo may stop them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from contracts import models as m

WAIT_S = 60.0  # the longest one step waits for the platform's answer


class Stopped(Exception):
    """The demo stops while the scene waits."""


def wait_until(stop: threading.Event, done: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``done`` until it holds; TimeoutError naming ``what`` after ``timeout_s``, Stopped once ``stop`` is set."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen after {timeout_s:.0f} s")
        if stop.wait(0.25):
            raise Stopped


class GovernanceScene:
    """A scene that sends governance requests and follows their states on governance.multisig (``requests``)."""

    stop_event: threading.Event
    requests: dict[str, m.MultisigRequest]

    def _sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Stopped

    def _wait(self, done: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
        wait_until(self.stop_event, done, what, timeout_s)

    def _state(self, rid: str) -> str | None:
        found = self.requests.get(rid)
        return None if found is None else str(found.state)
