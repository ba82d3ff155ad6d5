"""The FX book every settlement converts with, kept current from ``fx.rates``."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from contracts.bridge_codec import quote_of_rate
from contracts.topics import FX_RATES
from domain.fx import FxBook
from domain.money import Currency
from streams.kafka.clients import consumer_config, watermarks

log = logging.getLogger("nexus.bridge")

READY_POLL_S = 0.05


def stale_currencies(book: FxBook, currencies: Iterable[Currency], now_ms: int) -> list[Currency]:
    """The currencies ``book`` cannot convert at ``now_ms`` (fewer fresh sources than its policy needs)."""
    need = book.policy.min_fresh_sources
    return [c for c in currencies if len(book.fresh_quotes(c, now_ms)) < need]


class FxRatesListener:
    """Keeps the latest quote per source and currency from ``fx.rates`` (every partition, from the start).

    Every bridge worker needs every currency, so this reads without a consumer group. The book is
    immutable; a new one replaces it per batch, so a settlement reads one consistent book. :meth:`wait_ready`
    tells a starting worker when the book is usable.
    """

    def __init__(self, bootstrap: str, consumer: Consumer | None = None) -> None:
        self._consumer = consumer or Consumer(consumer_config(bootstrap, f"nexus-bridge-fx-{uuid.uuid4().hex}"))
        self.book = FxBook()
        self.quotes_seen = 0
        self._ends: dict[int, int] = {}  # partition -> its end offset at start, until read up to it
        self.caught_up = threading.Event()  # every quote that was in the log at start is in the book
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fx-rates", daemon=True)

    def start(self) -> None:
        name = FX_RATES.name
        meta = self._consumer.list_topics(name, timeout=30).topics[name]
        partitions = sorted(meta.partitions)
        for p in partitions:
            low, high = watermarks(self._consumer, name, p, 30)
            if high > low:
                self._ends[p] = high
        if not self._ends:
            self.caught_up.set()
        self._consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            quotes = []
            reached: dict[int, int] = {}
            for msg in self._consumer.consume(1000, timeout=0.1):
                value, partition, offset = msg.value(), msg.partition(), msg.offset()
                if partition is not None and offset is not None:
                    reached[partition] = offset + 1
                if msg.error() or value is None:
                    continue
                try:
                    quotes.append(quote_of_rate(FX_RATES.decode(value)))
                except ValueError:
                    log.warning("fx.rates: skipped an invalid quote at offset %s", offset)
            if quotes:
                self.book = self.book.with_quotes(quotes)
                self.quotes_seen += len(quotes)
            self._note_reached(reached)  # after the book: caught up means the book holds those quotes
        self._consumer.close()

    def _note_reached(self, reached: dict[int, int]) -> None:
        for p, next_offset in reached.items():
            if p in self._ends and next_offset >= self._ends[p]:
                del self._ends[p]
                if not self._ends:
                    self.caught_up.set()

    def wait_ready(
        self, currencies: Iterable[Currency], timeout_s: float, now_ms: Callable[[], int] | None = None
    ) -> list[Currency]:
        """Blocking, bounded by ``timeout_s``: read ``fx.rates`` up to its end offsets at start, then wait until
        every one of ``currencies`` has fresh quotes. Returns the currencies still without them (empty: ready)."""
        clock = now_ms or (lambda: time.time_ns() // 1_000_000)
        wanted = sorted(set(currencies))
        deadline = time.monotonic() + timeout_s
        self.caught_up.wait(max(0.0, deadline - time.monotonic()))
        while True:
            stale = stale_currencies(self.book, wanted, clock())
            if not stale or time.monotonic() >= deadline:
                return stale
            time.sleep(READY_POLL_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
