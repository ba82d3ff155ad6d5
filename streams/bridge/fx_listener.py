"""The FX book every settlement converts with, kept current from ``fx.rates``."""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from contracts.bridge_codec import quote_of_rate
from contracts.topics import FX_RATES
from domain.fx import FxBook
from streams.kafka.clients import consumer_config

log = logging.getLogger("nexus.bridge")


class FxRatesListener:
    """Keeps the latest quote per source and currency from ``fx.rates`` (every partition, from the start).

    Every bridge worker needs every currency, so this reads without a consumer group. The book is
    immutable; a new one replaces it per batch, so a settlement reads one consistent book.
    """

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(consumer_config(bootstrap, f"nexus-bridge-fx-{uuid.uuid4().hex}"))
        self.book = FxBook()
        self.quotes_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fx-rates", daemon=True)

    def start(self) -> None:
        name = FX_RATES.name
        meta = self._consumer.list_topics(name, timeout=30).topics[name]
        self._consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            quotes = []
            for msg in self._consumer.consume(1000, timeout=0.1):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                try:
                    quotes.append(quote_of_rate(FX_RATES.decode(value)))
                except ValueError:
                    log.warning("fx.rates: skipped an invalid quote at offset %s", msg.offset())
            if quotes:
                self.book = self.book.with_quotes(quotes)
                self.quotes_seen += len(quotes)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
