"""What the plain single-instance services share (the payouts service, the governance service, the audit log):
outputs produced with delivery tracking, consumer errors told apart, and a loop run until SIGTERM / SIGINT."""

from __future__ import annotations

import logging
import signal
from typing import Any, Protocol

from confluent_kafka import Message, Producer

from streams.kafka.clients import describe, must_exit, produce_bounded
from streams.kafka.processor import Output
from streams.ops.health import Ops

log = logging.getLogger("nexus.service")


class DeliveryFailed(RuntimeError):
    """An output was not acknowledged: the state is not saved past it; a restart replays from the last save."""


class Outputs:
    """Produces outputs without waiting, counts failed deliveries, and says before a save that all were acked."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.undelivered = 0

    def emit(self, outputs: list[Output]) -> None:
        for topic, value in outputs:
            produce_bounded(
                self.producer, topic.name, topic.encode(value), topic.key_of(value), on_delivery=self._delivered
            )
        self.producer.poll(0)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.undelivered += 1
            log.error("output not delivered: %s", err)

    def acknowledged(self, timeout_s: float) -> None:
        """Every output so far acknowledged (else DeliveryFailed): what a state save may rely on."""
        remaining = self.producer.flush(timeout_s)
        if remaining or self.undelivered:
            raise DeliveryFailed(f"{remaining} outputs unacknowledged, {self.undelivered} failed: state not saved")


def position_of(msg: Message) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of a record; None for a consumer error librdkafka retries; a fatal one raises."""
    err = msg.error()
    if err is not None:
        if must_exit(err):
            raise RuntimeError(f"consumer error, cannot go on; restart the service: {describe(err)}")
        log.warning("consumer error, librdkafka retries it: %s", describe(err))
        return None
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


class StoppableLoop(Protocol):
    stopping: bool

    def run(self) -> None: ...

    def close(self) -> None: ...


class BeatingConsumer:
    """The loop's consumer, beating ``ops`` each time the loop polls it: /healthz then says whether the loop turns."""

    def __init__(self, consumer: Any, ops: Ops) -> None:
        self._consumer, self._ops = consumer, ops

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        self._ops.beat()
        return self._consumer.consume(*args, **kwargs)

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        self._ops.beat()
        return self._consumer.poll(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def run_until_stopped(loop: StoppableLoop, ops: Ops | None = None) -> int:
    """Run ``loop`` until SIGTERM or SIGINT sets ``stopping``; close it in every case.

    ``ops`` (``streams.ops.health.start``): the loop's consumer beats it on every poll.
    """
    if ops is not None and hasattr(loop, "consumer"):
        loop.consumer = BeatingConsumer(loop.consumer, ops)  # type: ignore[attr-defined]

    def stop(_signum: int, _frame: Any) -> None:
        loop.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        loop.run()
    finally:
        loop.close()
    return 0
