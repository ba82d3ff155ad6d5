"""produce_bounded: a full local queue makes the producer serve acks and retry, never drop or grow."""

from __future__ import annotations

from typing import Any

from streams.kafka_clients import produce_bounded


class FullTwice:
    def __init__(self) -> None:
        self.refusals = 2
        self.polls = 0
        self.produced: list[tuple[Any, ...]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> None:
        if self.refusals:
            self.refusals -= 1
            raise BufferError("queue full")
        self.produced.append((topic, value, key, kwargs))

    def poll(self, timeout_s: float) -> int:
        self.polls += 1
        return 0


def test_a_full_queue_is_waited_out_and_the_record_sent_once() -> None:
    producer = FullTwice()
    produce_bounded(producer, "energy.orders", b"v", b"k", partition=3)
    assert producer.polls == 2
    assert producer.produced == [("energy.orders", b"v", b"k", {"partition": 3})]
