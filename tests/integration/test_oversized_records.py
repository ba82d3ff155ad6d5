"""Issue 21, first acceptance point: a gzip-compressed producer puts a record of several MB on an upstream topic (the
broker checks only the compressed batch). On both runtimes it gets one OVERSIZED dead letter that fits its topic, the
whole bytes are fetchable from platform.deadletters.payloads (SHA-256 checked), the records behind it in the same
partition are processed, and the group's committed offset moves past it; a SIGKILL and restart change nothing.

Kafka delivers at least once (README): a kill between a dead letter's produce and its offset's commit may emit it
again, as any output. What must hold is one dead letter per (topic, partition, offset) after dedupe, every copy
the same but for `received_at`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from contracts.topics import (
    BRIDGE_REQUESTS,
    ENERGY_ORDER_EVENTS,
    ENERGY_ORDERS,
    PLATFORM_DEADLETTER_PAYLOADS,
    PLATFORM_DEADLETTERS,
    Topic,
)
from streams.cli import find_dead_letter, original_bytes
from streams.kafka.ingress import DEAD_LETTER_BYTES_MAX
from tests.integration.provider_fixtures import provider_sim, sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_bridge_kafka import (  # noqa: F401  (fixtures)
    FUNDS_UNITS,
    deposit,
    fx_feed,
    request,
    results_for,
    start_bridge,
)
from tests.support.kafka_io import KafkaIO
from tests.support.topic_tail import committed_offset
from tests.unit.test_ingress import GOOD

pytestmark = pytest.mark.slow

BIG_BYTES_MIN = 5_000_000


def big_json(one: dict[str, Any]) -> bytes:
    item = json.dumps(one).encode()
    value = b"[" + b",".join([item] * (BIG_BYTES_MIN // len(item) + 1)) + b"]"
    assert len(value) > BIG_BYTES_MIN
    return value


def produce_gzip(bootstrap: str, topic: Topic, records: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """As an upstream producer that compresses its batches: returns each record's (partition, offset)."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "compression.type": "gzip", "message.max.bytes": 16 * 1024 * 1024}
    )
    placed: list[tuple[int, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        placed.append((msg.partition(), msg.offset()))

    for key, value in records:
        producer.produce(topic.name, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0 and len(placed) == len(records)
    return sorted(placed, key=lambda p: p[1])


def assert_one_dead_letter(kafka: KafkaIO, topic: Topic, where: tuple[int, int], big: bytes, group: str) -> None:
    partition, offset = where
    copies: list[Any] = []

    def found(records: list[Any]) -> bool:
        copies[:] = [
            d
            for d in (PLATFORM_DEADLETTERS.decode(r.value) for r in records if r.value)
            if (d.source_topic, d.source_partition, d.source_offset) == (topic.name, partition, offset)
        ]
        return bool(copies)

    raw = kafka.wait_for(PLATFORM_DEADLETTERS, found, timeout_s=60)
    assert all(len(r.value) <= DEAD_LETTER_BYTES_MAX for r in raw if r.value), "every dead letter fits its topic"
    # at most one per (topic, partition, offset) after dedupe: repeats only as identical copies
    assert len({c.model_copy(update={"received_at": None}).model_dump_json() for c in copies}) == 1
    letter = copies[0]
    assert letter.reason_code == "OVERSIZED" and letter.value_truncated and letter.value_size_bytes == len(big)
    assert letter.value_sha256 == hashlib.sha256(big).hexdigest()
    assert letter.value_ref is not None
    # the operator's fetch: the whole bytes from platform.deadletters.payloads, checked against the SHA-256
    fetched = find_dead_letter(kafka.bootstrap, topic.name, partition, offset, 10)
    assert original_bytes(kafka.bootstrap, fetched, "value", 10) == big
    assert any(r.key == letter.value_ref.encode() for r in kafka.read_all(PLATFORM_DEADLETTER_PAYLOADS))
    deadline = time.monotonic() + 30
    while committed_offset(kafka.bootstrap, group, topic, partition) <= offset:
        assert time.monotonic() < deadline, f"{group} never committed past {topic.name}[{partition}]@{offset}"
        time.sleep(0.5)


def order(run_id: str, market: str, n: int) -> dict[str, Any]:
    return {**GOOD, "order_id": f"big-{run_id}-{n}", "market_id": market, "account_id": f"acct-{run_id}"}


@pytest.mark.parametrize("module", ["streams.worker", "streams.p2p"])
def test_an_oversized_compressed_order_is_dead_lettered_once_and_the_partition_moves_on(
    kafka: KafkaIO, worker_factory: Any, run_id: str, module: str
) -> None:
    market = f"2026-11-24T10:00Z/B{run_id.upper()}"
    big = big_json(order(run_id, market, 0))
    worker = worker_factory(agents="matching", module=module)
    behind = [(market.encode(), json.dumps(order(run_id, market, n)).encode()) for n in range(1, 6)]
    placed = produce_gzip(kafka.bootstrap, ENERGY_ORDERS, [(market.encode(), big), *behind])
    assert len({p for p, _ in placed}) == 1, "one partition: the records behind wait for the big one"
    time.sleep(1.0)
    worker.kill()  # in the middle: maybe before, maybe after the dead letter and its commit
    worker.start()
    more = [(market.encode(), json.dumps(order(run_id, market, n)).encode()) for n in range(6, 9)]
    produce_gzip(kafka.bootstrap, ENERGY_ORDERS, more)
    wanted = {f"big-{run_id}-{n}" for n in range(1, 9)}

    def accepted(records: list[Any]) -> bool:
        events = (ENERGY_ORDER_EVENTS.decode(r.value) for r in records)
        return wanted <= {e.order_id for e in events if e.order_id in wanted and e.status == "ACCEPTED"}

    kafka.wait_for(ENERGY_ORDER_EVENTS, accepted, timeout_s=90)
    group = worker.app_id if module == "streams.worker" else f"{worker.app_id}-plain"
    assert_one_dead_letter(kafka, ENERGY_ORDERS, placed[0], big, group)


def test_an_oversized_compressed_card_payment_is_dead_lettered_once_and_the_partition_moves_on(
    kafka: KafkaIO, run_id: str, fx_feed: None, start_bridge: Callable[..., Any]
) -> None:
    payer = f"acct-big-{run_id}"
    deposit(kafka, payer, FUNDS_UNITS)
    worker = start_bridge()
    big = big_json(request(f"card-big-{run_id}-0", payer).model_dump(mode="json"))
    behind = [request(f"card-big-{run_id}-{n}", payer) for n in range(1, 3)]
    records = [(payer.encode(), big), *((payer.encode(), BRIDGE_REQUESTS.encode(r)) for r in behind)]
    placed = produce_gzip(kafka.bootstrap, BRIDGE_REQUESTS, records)
    assert len({p for p, _ in placed}) == 1
    time.sleep(1.0)
    worker.kill()
    worker.start()
    more = [request(f"card-big-{run_id}-3", payer)]
    produce_gzip(kafka.bootstrap, BRIDGE_REQUESTS, [(payer.encode(), BRIDGE_REQUESTS.encode(r)) for r in more])
    results = results_for(kafka, {r.request_id for r in behind + more}, timeout_s=90)
    for request_id, answers in results.items():  # a request answered again after the kill gets the same answer
        assert all(a == answers[0] for a in answers), request_id
    group = f"{worker.app_id}-bridge" if worker.module == "streams.bridge.loop" else worker.app_id
    assert_one_dead_letter(kafka, BRIDGE_REQUESTS, placed[0], big, group)
