"""Figures the Kafka benchmarks share: percentiles, peak RSS and CPU time of a process (from /proc), and
the observer thread that stamps when each result reaches its topic."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.kafka.clients import consume_now, consumer_config


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def peak_rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a process has used: contention-proof cost accounting."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ArrivalObserver(threading.Thread):
    """Reads topics from their first offset (a fresh consumer group) and hands each JSON value to ``arrived``
    with its arrival time (``time.perf_counter()``). ``assigned`` is set once every partition is assigned:
    the topics may still be empty when a bench begins."""

    def __init__(self, bootstrap: str, topic_names: Sequence[str]) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(consumer_config(bootstrap, f"bench-{uuid.uuid4().hex}"))
        self.topic_names = tuple(topic_names)
        self.stop = threading.Event()
        self.assigned = threading.Event()

    def run(self) -> None:
        parts = []
        for name in self.topic_names:
            meta = self.consumer.list_topics(name, timeout=30).topics[name]
            parts += [TopicPartition(name, p, 0) for p in meta.partitions]
        self.consumer.assign(parts)
        self.assigned.set()
        while not self.stop.is_set():
            for msg in consume_now(self.consumer, 0.05, 2000):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                now = time.perf_counter()
                self.arrived(msg.topic(), json.loads(value), now)
        self.consumer.close()

    def arrived(self, topic: str | None, value: dict[str, Any], now: float) -> None:
        """One value of ``topic`` that arrived at ``now``."""
        raise NotImplementedError
