"""The drills' order producer: a steady pace, every acknowledgement noted, and a redirect to another region.

A producer whose region died re-sends what the new region lacks, in order, before anything new. It does not
re-send blindly: the order book rejects a known order id (``DUPLICATE_ORDER_ID``), but the rejection takes a book
sequence number, so a repeated order would shift every later trade id, and an amend applies again; so the
producer confirms its recent sends against the new region (``missing_on``) first. The window it checks is the
replay window back from its last acknowledgement: what it sent before was mirrored long ago.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence

from confluent_kafka import Producer

from contracts import models as m
from contracts.topics import ENERGY_ORDERS
from devtools.drills.io import read_topic

FLUSH_POLL_S = 0.25


def missing_on(bootstrap: str, values: Sequence[bytes], sent: Sequence[int], since_ms: int) -> list[int]:
    """Of the sent indices (in send order), those whose record is not on ``bootstrap``'s energy.orders among the
    records from ``since_ms`` on. Mirroring copies a prefix of each partition, so what is missing is each market's
    last records, and re-sending them in order rebuilds the primary's order exactly."""
    there = Counter(r.value for r in read_topic(bootstrap, ENERGY_ORDERS, since_ms) if r.value is not None)
    return unmatched(values, sent, there)


def unmatched(values: Sequence[bytes], sent: Sequence[int], there: Counter[bytes]) -> list[int]:
    """The sent indices whose record is not among ``there``, each record found counted once (two sends of the
    same bytes need two copies there)."""
    left, missing = Counter(there), []
    for i in sent:
        if left[values[i]]:
            left[values[i]] -= 1
        else:
            missing.append(i)
    return missing


class Traffic(threading.Thread):
    """Sends the commands in batches at a steady pace; notes when each was first sent and acknowledged."""

    def __init__(
        self, bootstrap: str, commands: Sequence[m.OrderCommand], batch: int, every_s: float, window_s: float = 60.0
    ) -> None:
        super().__init__(name="dr-traffic", daemon=True)
        self.commands, self.batch, self.every_s, self.window_s = commands, batch, every_s, window_s
        self.values = [ENERGY_ORDERS.encode(c) for c in commands]
        self.sent_s = [0.0] * len(commands)
        self.acked_s = [0.0] * len(commands)
        self.started = self.finished = 0.0
        self.error: BaseException | None = None
        self.missing_at_redirect: list[int] = []
        self.lost_acked_s: dict[int, float] = {}  # index -> when the dead region acknowledged it
        self.redirected = threading.Event()
        self._producer = self._connect(bootstrap)
        self._redirect_to: str | None = None
        self._redirect_asked = threading.Event()

    @property
    def sent_at(self) -> dict[tuple[str, str], float]:
        """When each order was first sent (wall clock), by (market, order id)."""
        found: dict[tuple[str, str], float] = {}
        for c, at in zip(self.commands, self.sent_s, strict=True):
            if at:
                found.setdefault((c.market_id, c.order_id), at)
        return found

    def redirect(self, bootstrap: str) -> None:
        """Move to another region: re-send what it lacks, then go on (done by the traffic's own thread)."""
        self._redirect_to = bootstrap
        self._redirect_asked.set()

    def _connect(self, bootstrap: str) -> Producer:
        return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "log_level": 0})

    def _send(self, i: int) -> None:
        def acked(err: object, _msg: object) -> None:
            if err is None and not self.acked_s[i]:
                self.acked_s[i] = time.time()

        c = self.commands[i]
        self.sent_s[i] = self.sent_s[i] or time.time()
        self._producer.produce(ENERGY_ORDERS.name, self.values[i], ENERGY_ORDERS.key_of(c), on_delivery=acked)

    def run(self) -> None:
        self.started = time.time()
        try:
            for first in range(0, len(self.commands), self.batch):
                due = self.started + (first // self.batch) * self.every_s
                time.sleep(max(0.0, due - time.time()))
                chunk = range(first, min(first + self.batch, len(self.commands)))
                for i in chunk:
                    self._send(i)
                self._await_acks(chunk)
        except BaseException as exc:  # reported by the drill
            self.error = exc
        self.finished = time.time()

    def _await_acks(self, chunk: range) -> None:
        """Flush until the chunk is acknowledged; a redirect meanwhile re-sends what the new region lacks."""
        deadline = time.monotonic() + 600.0  # bounded: a region that never comes back ends the drill
        while any(not self.acked_s[i] for i in chunk):
            if time.monotonic() > deadline:
                raise TimeoutError(f"orders {chunk.start}..{chunk.stop - 1} not acknowledged in 600 s")
            if self._redirect_asked.is_set():
                self._move(chunk.stop)
            self._producer.flush(FLUSH_POLL_S)

    def _move(self, sent_until: int) -> None:
        assert self._redirect_to is not None
        self._redirect_asked.clear()
        self._producer.purge()  # what the dead region never took is re-sent below if the new one lacks it
        self._producer.flush(0)
        self._producer = self._connect(self._redirect_to)
        last_ack = max(self.acked_s[:sent_until], default=0.0) or self.started
        since_ms = int((last_ack - self.window_s) * 1000)
        recent = [i for i in range(sent_until) if self.sent_s[i] * 1000 >= since_ms]
        self.missing_at_redirect = missing_on(self._redirect_to, self.values, recent, since_ms)
        for i in self.missing_at_redirect:
            if self.acked_s[i]:  # acknowledged by the dead region, never mirrored: the RPO
                self.lost_acked_s[i] = self.acked_s[i]
            self.acked_s[i] = 0.0
        for i in self.missing_at_redirect:
            self._send(i)
        self._producer.flush(60)
        self.redirected.set()
