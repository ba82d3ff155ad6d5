"""librdkafka (confluent-kafka) client settings shared by every producer and consumer we create.

Why a module: librdkafka leaves Nagle's algorithm on by default. On a request/response path such as
ours (produce -> ack, fetch -> records) Nagle holds small segments back until the previous one is
acknowledged, and with delayed ACKs that costs up to ~40 ms per hop. Every client built from here
disables it; aiokafka (Faust's client) already sets TCP_NODELAY through asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streams.settings import get_settings

log = logging.getLogger("nexus.kafka")

LOW_LATENCY: dict[str, Any] = {"socket.nagle.disable": True}


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all producer that sends at once.

    No linger by default: our agents already hand the producer a whole batch of outputs at a time, and
    records queued while a request is in flight still travel together; a linger is paid on every hop and
    every per-batch flush (docs/performance.md).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # Where money moves, a record is acknowledged only once min.insync.replicas brokers have it, and a retry
        # after a leader change is never written twice. Idempotence already implies acks=all; said out loud.
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": get_settings().kafka_linger_ms,
        "batch.size": 512 * 1024,
        **LOW_LATENCY,
    }
    config.update({key.replace("_", "."): value for key, value in overrides.items()})
    return config


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Manual-commit consumer: callers commit only after their outputs are acknowledged."""
    settings = get_settings()
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.min.bytes": settings.kafka_fetch_min_bytes,
        "fetch.wait.max.ms": settings.kafka_fetch_wait_max_ms,
        **LOW_LATENCY,
    }
    config.update({key.replace("_", "."): value for key, value in overrides.items()})
    return config


class AsyncProducer:
    """A librdkafka producer whose sends return asyncio futures resolved on the broker's ack.

    A daemon thread serves delivery callbacks. They only note the result (and the record's offset, which
    the future resolves to: the bridge's result index checkpoints journal offsets); after each poll the thread
    hands everything it noted to each event loop in one call: one self-pipe write and one GIL hand-over
    per poll instead of per acknowledged record. The local queue is bounded (``max_queued``): a full queue
    waits for acks.

    :meth:`send_unacked` produces with no delivery callback at all, for records whose answer comes another
    way (a ledger command's outcome): no per-record Python callback or future. A failed delivery of one
    is not reported per record; client-level errors (brokers down, a fatal idempotence error) are logged
    by the producer's ``error_cb``.
    """

    def __init__(self, bootstrap: str, *, max_queued: int = 100_000, **overrides: Any) -> None:
        config = producer_config(bootstrap, queue_buffering_max_messages=max_queued, **overrides)
        config["error_cb"] = _log_error
        self._producer = Producer(config)
        self._delivered: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[int], Any, int]] = deque()
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, name="async-producer-poller", daemon=True)
        self._poller.start()

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        """Settle the noted deliveries: one call per event loop (deque pops are thread-safe)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], Any, int]]] = {}
        delivered = self._delivered
        while delivered:
            loop, future, err, offset = delivered.popleft()
            by_loop.setdefault(loop, []).append((future, err, offset))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits for these any more
                loop.call_soon_threadsafe(_settle_all, settled)

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> asyncio.Future[int]:
        """Produce; the future resolves to the record's offset once the broker has acknowledged it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        note = self._delivered.append

        def on_delivery(err: Any, msg: Any) -> None:
            note((loop, future, err, -1 if err is not None else msg.offset()))

        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        produce_bounded(self._producer, topic, value, key, **kwargs)
        return future

    def send_unacked(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Produce without a delivery report (see the class doc): the caller learns of a loss another way."""
        if partition is None:
            produce_bounded(self._producer, topic, value, key)
        else:
            produce_bounded(self._producer, topic, value, key, partition=partition)

    def flush(self, timeout_s: float) -> int:
        """Wait for every queued record's ack; returns how many are still unacknowledged."""
        remaining = int(self._producer.flush(timeout_s))
        self._hand_over()  # flush serves callbacks in this thread
        return remaining

    def close(self, timeout_s: float = 10.0) -> int:
        remaining = self.flush(timeout_s)
        self._closed.set()
        return remaining


def _log_error(error: KafkaError) -> None:
    """The producer's error_cb: client-level errors, which librdkafka retries unless they are fatal."""
    if must_exit(error):
        log.error("producer error, the producer cannot go on: %s", describe(error))
    else:
        log.warning("producer error, librdkafka retries it: %s", describe(error))


def _settle_all(settled: list[tuple[asyncio.Future[int], Any, int]]) -> None:
    for future, err, offset in settled:
        if future.done():
            continue
        if err is None:
            future.set_result(offset)
        else:
            future.set_exception(RuntimeError(f"Kafka delivery failed: {err}"))


def produce_bounded(producer: Any, topic: str, value: bytes | None, key: bytes | None = None, **kwargs: Any) -> None:
    """``producer.produce``, but while the bounded local queue is full, serve acks and retry: a slow
    broker slows the producer down instead of growing its queue without limit."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(0.01)


WATERMARK_ATTEMPTS_MAX = 30  # x WATERMARK_RETRY_S: a fresh broker elects its partition leaders within seconds
WATERMARK_RETRY_S = 0.5
# librdkafka raises these (from get_watermark_offsets, admin futures) with retriable() False, yet each passes once
# a leader is elected or a broker answers again, so they are retried by code rather than by the flag.
TRANSIENT_CODES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,  # a new leader whose high watermark has not caught up yet
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._DESTROY_BROKER,  # a broker handle dropped: its broker restarts, or a bootstrap handle retired
    }
)


def is_transient(error: KafkaError) -> bool:
    """Whether asking again shortly can succeed: the flag, or a code librdkafka leaves unflagged."""
    return bool(error.retriable()) or error.code() in TRANSIENT_CODES


def raised_transient(exc: BaseException | None) -> bool:
    """``is_transient`` of a raised KafkaException's error; False for any other exception."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and is_transient(error)


def watermarks(consumer: Any, topic: str, partition: int, timeout_s: float) -> tuple[int, int]:
    """(low, high) offsets of a partition; retried while the partition has no leader yet (a broker just started,
    a leader moving): a listener that starts with its broker must not die of it."""
    for attempt in range(WATERMARK_ATTEMPTS_MAX):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if not is_transient(error) or attempt == WATERMARK_ATTEMPTS_MAX - 1:
                raise
            log.info("%s[%d]: %s; retrying", topic, partition, error.str())
            time.sleep(WATERMARK_RETRY_S)
    raise AssertionError("unreachable")


def consume_now(consumer: Any, timeout_s: float, max_records: int = 1000) -> list[Any]:
    """Records as soon as there is one, plus whatever else is already fetched (up to ``max_records``).

    ``Consumer.consume(n, timeout)`` waits until it has *n* records or the timeout passes, so a batch
    size above 1 turns the timeout into latency; waiting for one and then draining without waiting does not.
    """
    first = consumer.consume(1, timeout=timeout_s)
    if not first:
        return []
    return [*first, *consumer.consume(max_records - 1, timeout=0)]


# Errors after which this worker cannot go on. librdkafka marks some fatal itself (a static member fenced by
# another with the same group.instance.id); the others it would retry for ever, but only an operator fixes
# them (credentials, ACLs). Everything else is logged and skipped: librdkafka retries it (reconnects,
# re-joins the group) and no record is lost by skipping an error event. The code is checked, not only the flag:
# librdkafka hands error_cb a fenced static member as _FATAL with fatal() False (seen with two workers
# sharing NEXUS_WORKER_INSTANCE_ID: the first exited 3 two seconds after the second joined).
EXIT_ON = frozenset(
    {
        KafkaError._FATAL,
        KafkaError._FENCED,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)


def must_exit(error: KafkaError) -> bool:
    """True for a consumer/producer error that leaves the client unusable; False for one to log and skip."""
    return bool(error.fatal()) or error.code() in EXIT_ON


def describe(error: KafkaError) -> str:
    return f"{error.name()} (code {error.code()}, fatal={error.fatal()}, retriable={error.retriable()}): {error.str()}"
