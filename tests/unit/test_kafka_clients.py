"""produce_bounded: a full local queue makes the producer serve acks and retry, never drop or grow; send_unacked."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streams.kafka import clients
from streams.kafka.clients import AsyncProducer, produce_bounded


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


class RecordingProducer:
    """confluent_kafka.Producer as AsyncProducer uses it: the config it was built with and what it produced."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.produced: list[tuple[Any, ...]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> None:
        self.produced.append((topic, value, key, kwargs))

    def poll(self, timeout_s: float) -> int:
        time.sleep(timeout_s)
        return 0

    def flush(self, timeout_s: float) -> int:
        return 0


def test_send_unacked_produces_without_a_delivery_callback_and_errors_are_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(clients, "Producer", RecordingProducer)
    producer = AsyncProducer("127.0.0.1:9")
    try:
        fake = producer._producer
        assert isinstance(fake, RecordingProducer)
        producer.send_unacked("ledger.commands", b"k", b"v")
        producer.send_unacked("ledger.commands", b"k2", b"v2", partition=0)
        assert fake.produced == [
            ("ledger.commands", b"v", b"k", {}),
            ("ledger.commands", b"v2", b"k2", {"partition": 0}),
        ]
        with caplog.at_level(logging.WARNING, logger="nexus.kafka"):
            fake.config["error_cb"](KafkaError(KafkaError._ALL_BROKERS_DOWN))
        assert "_ALL_BROKERS_DOWN" in caplog.text
    finally:
        producer.close(0)


def test_watermarks_wait_for_a_partition_leader_then_give_up_on_other_errors(monkeypatch: Any) -> None:
    from confluent_kafka import KafkaError, KafkaException

    from streams.kafka import clients

    monkeypatch.setattr(clients, "WATERMARK_RETRY_S", 0.0)

    class Fresh:  # a broker just started: no leader for two asks, raised as librdkafka does (not flagged retriable)
        calls = 0

        def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
            self.calls += 1
            if self.calls == 1:
                raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE, "electing"))
            if self.calls == 2:
                raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, "Not leader for partition"))
            return 0, 7

    fresh = Fresh()
    assert clients.watermarks(fresh, "fx.rates", 0, 1.0) == (0, 7) and fresh.calls == 3

    class Broken:
        def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
            raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied", retriable=False))

    with pytest.raises(KafkaException):
        clients.watermarks(Broken(), "fx.rates", 0, 1.0)
