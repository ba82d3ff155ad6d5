"""streams.ops: the common series every worker exposes, read from live state when scraped, and /metrics + /healthz."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import ENERGY_ORDERS, LEDGER_COMMANDS, PLATFORM_DEADLETTERS
from domain.rails import CircuitBreaker, Rail
from streams.kafka import ingress
from streams.kafka.service_loop import BeatingConsumer
from streams.ops import health, metrics


def sample(name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    metrics.clear_refreshers()
    health.stop()


def test_record_meter_counts_by_topic_and_outcome_and_times_records() -> None:
    meter = metrics.RecordMeter()
    ok = {"topic": "test.meter", "outcome": "ok"}
    before = sample("nexus_records_processed_total", ok) or 0
    meter.observe("test.meter", "ok", 0.0002)
    meter.observe("test.meter", "ok", 0.0002)
    meter.observe("test.meter", "dead_letter", 0.003)
    assert sample("nexus_records_processed_total", ok) == before + 2
    assert sample("nexus_records_processed_total", {"topic": "test.meter", "outcome": "dead_letter"}) == 1
    assert sample("nexus_record_processing_seconds_bucket", {"topic": "test.meter", "le": "0.00025"}) == 2
    assert sample("nexus_record_processing_seconds_count", {"topic": "test.meter"}) == 3


def test_every_dead_letter_written_is_counted_by_source_topic_and_reason() -> None:
    labels = {"source_topic": "energy.orders", "reason_code": "MALFORMED_JSON"}
    before = sample("nexus_deadletters_written_total", labels) or 0
    rejected = ingress.Rejected("MALFORMED_JSON", "not JSON", [])
    outputs = ingress.dead_letter_outputs(ingress.Origin("energy.orders", 0, 7), b"k", b"{", rejected)
    assert outputs[-1][0] is PLATFORM_DEADLETTERS
    assert sample("nexus_deadletters_written_total", labels) == before + 1


def test_breaker_state_is_read_from_the_live_breakers_when_scraped() -> None:
    now_ms = int(time.time() * 1000)
    breakers = {Rail.STRIPE_INSTANT: CircuitBreaker(), Rail.WISE: CircuitBreaker()}
    metrics.add_refresher(metrics.breaker_refresher(lambda: breakers))
    assert sample("nexus_rail_breaker_state", {"rail": "STRIPE_INSTANT"}) == 0
    opened = CircuitBreaker()
    for _ in range(3):  # spec §9.2: three consecutive failures open it
        opened = opened.on_failure(now_ms)
    breakers[Rail.STRIPE_INSTANT] = opened
    assert sample("nexus_rail_breaker_state", {"rail": "STRIPE_INSTANT"}) == 2
    breakers[Rail.STRIPE_INSTANT] = CircuitBreaker(opened_at_ms=now_ms - 60_000)  # cool-down over: half-open
    assert sample("nexus_rail_breaker_state", {"rail": "STRIPE_INSTANT"}) == 1
    assert sample("nexus_rail_breaker_state", {"rail": "WISE"}) == 0


def test_a_failing_refresher_does_not_break_the_exposition() -> None:
    def broken() -> None:
        raise RuntimeError("state gone")

    metrics.add_refresher(broken)
    assert b"nexus_consumer_lag_messages" in metrics.render()


class FakeSnapshots:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def files(self, partition: int) -> list[Any]:
        found = sorted(self.directory.glob(f"ledger-{partition}-*.snapshot"), reverse=True)
        return [SimpleNamespace(path=p) for p in found]


def test_snapshot_age_per_owned_partition_and_since_start_without_one(tmp_path: Path) -> None:
    written = tmp_path / "ledger-0-00000042.snapshot"
    written.write_bytes(b"x")
    os.utime(written, (time.time() - 120, time.time() - 120))
    processor = SimpleNamespace(
        topic=LEDGER_COMMANDS, snapshots=FakeSnapshots(tmp_path), snapshot_every_s=600.0, states={0: None, 1: None}
    )
    no_snapshots = SimpleNamespace(topic=LEDGER_COMMANDS, snapshots=None, snapshot_every_s=0.0, states={5: None})
    metrics.add_refresher(metrics.snapshot_age_refresher([processor, no_snapshots], started_at=time.time() - 30))
    age_0 = sample("nexus_ledger_snapshot_age_seconds", {"topic": LEDGER_COMMANDS.name, "partition": "0"})
    age_1 = sample("nexus_ledger_snapshot_age_seconds", {"topic": LEDGER_COMMANDS.name, "partition": "1"})
    assert age_0 is not None and 119 <= age_0 < 130
    assert age_1 is not None and 29 <= age_1 < 40  # none written yet: it ages from the worker's start
    assert sample("nexus_ledger_snapshot_age_seconds", {"partition": "5"}) is None


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def test_endpoint_serves_metrics_and_health_and_says_why_it_fails() -> None:
    port = free_port()
    settings = SimpleNamespace(metrics_port=port, metrics_host="127.0.0.1")
    ops = health.start(settings, "unit")
    assert health.start(settings, "other") is ops  # one endpoint per process
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert b"# TYPE nexus_records_processed_total counter" in body
    assert b'nexus_worker_heartbeat_age_seconds{component="unit"}' in body
    assert b"process_cpu_seconds_total" in body

    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"

    ops.last_beat = time.monotonic() - health.STALE_AFTER_S - 1  # the loop stopped going round
    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 503 and "loop" in json.loads(body)["problems"]
    ops.beat()
    ops.add_check("consumer", lambda: "closed")
    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 503 and json.loads(body)["problems"] == {"consumer": "closed"}
    assert get(f"http://127.0.0.1:{port}/nothing")[0] == 404


def test_a_process_that_does_not_beat_is_judged_by_its_checks_only() -> None:
    ops = health.start(SimpleNamespace(metrics_port=0, metrics_host="127.0.0.1"), "notifier", beats=False)
    assert ops.server is None  # port 0: nothing served
    ops.last_beat = time.monotonic() - 3600
    assert ops.health()[0]


def test_port_taken_is_logged_not_fatal() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ops = health.Ops("unit")
        assert not health.serve(ops, taken.getsockname()[1])


def test_service_loops_beat_on_every_poll_of_their_consumer() -> None:
    ops = health.Ops("service", last_beat=0.0)
    consumer = BeatingConsumer(SimpleNamespace(consume=lambda n, t: ["msg"], assignment=lambda: ["tp"]), ops)
    assert consumer.consume(10, 0.1) == ["msg"]
    assert ops.last_beat > 0
    assert consumer.assignment() == ["tp"]  # everything else goes to the real consumer


def test_holds_open_per_owned_ledger_partition_and_none_for_other_states() -> None:
    ledger = SimpleNamespace(open_hold_count=lambda: 3)
    processor = SimpleNamespace(topic=LEDGER_COMMANDS, states={0: SimpleNamespace(ledger=ledger)})
    matching = SimpleNamespace(topic=ENERGY_ORDERS, states={2: SimpleNamespace(book=None)})
    metrics.add_refresher(metrics.holds_open_refresher([processor, matching]))
    assert sample("nexus_ledger_holds_open", {"topic": LEDGER_COMMANDS.name, "partition": "0"}) == 3
    ledger.open_hold_count = lambda: 0  # captured or voided: the next scrape says so
    assert sample("nexus_ledger_holds_open", {"topic": LEDGER_COMMANDS.name, "partition": "0"}) == 0
    assert sample("nexus_ledger_holds_open", {"topic": ENERGY_ORDERS.name}) is None
