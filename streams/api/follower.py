"""The topics the API reads itself, with one confluent-kafka consumer in a background thread.

- ``bridge.settlements.completed`` / ``.failed`` from their ends at start: a POST /bridge registers a waiter under
  its request_id *before* producing, so its answer is seen whichever partition it lands on. Only answers someone
  waits for are decoded. (The status read model answers everything else.)
- ``payouts.rules`` from its beginning (compacted: the latest record per rule id is the rule): the view GET
  /auto-payout reads, at most ``rules_max`` rules, kept as the record's bytes. A rule this API wrote is in the view
  at once (read your own writes): until the follower reads that very record, older records of the rule are ignored.

Nothing is committed: the API keeps no position; every start reads the rules again and waits only for new answers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED, PAYOUT_RULES
from streams.kafka.clients import consume_now, consumer_config, describe, must_exit, watermarks

log = logging.getLogger("nexus.api")

ANSWERS = (BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED)
METADATA_TIMEOUT_S = 10.0
POLL_S = 0.1
BATCH_MAX = 2000
TOPICS_WAIT_S = 1.0  # a fresh cluster may not have the topics yet: look again this often

Answer = tuple[str, bytes]  # (topic name, the record's value)
TOMBSTONE = b""


class Waiters:
    """request_id -> the futures waiting for its answer, at most ``max_waiting`` ids at once."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._by_id: dict[str, list[asyncio.Future[Answer]]] = {}

    def add(self, request_id: str) -> asyncio.Future[Answer] | None:
        """A future for the answer; None when too many are waiting (the caller answers 202 at once)."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        with self._lock:
            if request_id not in self._by_id and len(self._by_id) >= self.max_waiting:
                return None
            self._by_id.setdefault(request_id, []).append(future)
        return future

    def discard(self, request_id: str, future: asyncio.Future[Answer]) -> None:
        with self._lock:
            futures = self._by_id.get(request_id)
            if futures is not None and future in futures:
                futures.remove(future)
                if not futures:
                    del self._by_id[request_id]

    def waiting(self, request_id: str) -> bool:
        return request_id in self._by_id  # a dict read: atomic under the GIL

    def resolve(self, request_id: str, answer: Answer) -> None:
        with self._lock:
            futures = self._by_id.pop(request_id, [])
        for future in futures:
            loop = future.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, future, answer)

    def __len__(self) -> int:
        return len(self._by_id)


def _settle(future: asyncio.Future[Answer], answer: Answer) -> None:
    if not future.done():
        future.set_result(answer)


class RulesView:
    """rule_id -> the latest record's bytes of payouts.rules (see the module doc)."""

    def __init__(self, rules_max: int) -> None:
        self.rules_max = rules_max
        self.dropped = 0  # rules not kept: the view was full
        self._lock = threading.Lock()
        self._rules: dict[str, bytes] = {}
        self._own: dict[str, bytes] = {}  # rule id -> what this API wrote and the follower has not read back yet

    def get(self, rule_id: str) -> bytes | None:
        with self._lock:
            return self._rules.get(rule_id)

    def wrote(self, rule_id: str, value: bytes | None) -> None:
        """This API's own write, acknowledged by the broker (None: a tombstone)."""
        with self._lock:
            self._own[rule_id] = value if value is not None else TOMBSTONE
            self._put(rule_id, value)

    def read(self, rule_id: str, value: bytes | None) -> None:
        """A record of the topic, in its partition's order."""
        with self._lock:
            own = self._own.get(rule_id)
            if own is not None:
                if own != (value if value is not None else TOMBSTONE):
                    return  # older than our own write, which is the latest we know
                del self._own[rule_id]
            self._put(rule_id, value)

    def _put(self, rule_id: str, value: bytes | None) -> None:
        if value is None:
            self._rules.pop(rule_id, None)
        elif rule_id in self._rules or len(self._rules) < self.rules_max:
            self._rules[rule_id] = value
        else:
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._rules)


class Follower:
    """The consumer thread (see the module doc). ``ready`` once assigned and the rules present at start are read."""

    def __init__(self, bootstrap: str, waiters: Waiters, rules: RulesView) -> None:
        self.bootstrap = bootstrap
        self.waiters = waiters
        self.rules = rules
        self.ready = threading.Event()
        self.error: str | None = None  # a fatal consumer error: the API is not ready any more
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-follower", daemon=True)
        self._consumer = Consumer(
            consumer_config(bootstrap, f"nexus-api-{uuid.uuid4().hex[:12]}", enable_partition_eof=False)
        )

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _assign(self) -> dict[tuple[str, int], int] | None:
        """Assign every partition (answers at their ends, rules from their beginnings); the rules' ends to reach.
        None while a topic is missing."""
        wanted: list[TopicPartition] = []
        rule_ends: dict[tuple[str, int], int] = {}
        for topic in (*ANSWERS, PAYOUT_RULES):
            meta = self._consumer.list_topics(topic.name, timeout=METADATA_TIMEOUT_S).topics[topic.name]
            if meta.error is not None or not meta.partitions:
                log.info("waiting for topic %s: %s", topic.name, meta.error)
                return None
            for partition in meta.partitions:
                low, high = watermarks(self._consumer, topic.name, partition, METADATA_TIMEOUT_S)
                if topic is PAYOUT_RULES:
                    wanted.append(TopicPartition(topic.name, partition, low))
                    if high > low:
                        rule_ends[(topic.name, partition)] = high
                else:  # explicit offsets: an answer written after this call is read, whatever happens before
                    wanted.append(TopicPartition(topic.name, partition, high))
        self._consumer.assign(wanted)
        return rule_ends

    def _run(self) -> None:
        try:
            pending = None
            while pending is None:
                try:
                    pending = self._assign()
                except KafkaException as exc:  # no broker yet: the API serves (not ready) and tries again
                    log.warning("cannot assign the followed topics yet: %s", exc)
                if pending is None and self._stop.wait(TOPICS_WAIT_S):
                    return
            if not pending:
                self.ready.set()
            while not self._stop.is_set():
                for msg in consume_now(self._consumer, POLL_S, BATCH_MAX):
                    self._take(msg, pending)
                if not pending and not self.ready.is_set():
                    log.info("ready: %d rules in view", len(self.rules))
                    self.ready.set()
        except Exception as exc:
            log.exception("the API's topic follower failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.clear()
        finally:
            self._consumer.close()

    def _take(self, msg: Any, pending: dict[tuple[str, int], int]) -> None:
        err = msg.error()
        if err is not None:
            if must_exit(err):
                raise RuntimeError(describe(err))
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error, librdkafka retries it: %s", describe(err))
            return
        topic, key = msg.topic(), msg.key()
        if key is None:
            return
        if topic == PAYOUT_RULES.name:
            self.rules.read(key.decode(errors="replace"), msg.value())
            end = pending.get((topic, msg.partition()))
            if end is not None and msg.offset() >= end - 1:
                del pending[(topic, msg.partition())]
            return
        request_id = key.decode(errors="replace")
        if self.waiters.waiting(request_id) and msg.value():
            self.waiters.resolve(request_id, (topic, msg.value()))
