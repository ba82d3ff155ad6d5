"""What Kafka alone costs on this machine for the P2P flow's shape: a floor under bench_p2p_kafka.

    python bench/bench_kafka_floor.py [--rate 1000] [--latency-s 10] [--orders 60000] [--warm-s 90]

The P2P path has three Kafka hops: order -> matching worker -> ledger command -> ledger worker ->
settlement -> consumer. Per order it moves ~5.4 records of ~275 bytes (measured from the services:
1.03 order events, 0.25 price updates, 0.34 trades and ledger commands, 1.03 transfers and audit
records, 0.34 settlements). This bench runs that exact shape with two *relay* processes that do no
domain work at all: they copy bytes. Same broker, client settings and delivery rule as the platform
(outputs are acknowledged before input offsets are committed; here every 50 ms instead of every
batch). Whatever the relays cannot reach, no implementation of the services can reach on this
machine either; the gap between this floor and bench_p2p_kafka is the cost of our own code.

Prints: latency order produced -> settlement consumed at --rate (p50/p95/p99), burst throughput
(orders/s), and CPU % of the broker, each relay and the load generator.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infra.kafka.broker import LocalKafka, find_free_ports
from streams.kafka.clients import consume_now, consumer_config, produce_bounded, producer_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_s, pct

console = Console()
RECORD = 275  # bytes: the services' average output record
TOPICS = {"f.orders": 4, "f.commands": 1, "f.events": 4, "f.settled": 4}
TRADE_EVERY = 3  # about a third of orders trade (0.34 trades per order)
COMMIT_EVERY_S = 0.05
READY = "relay ready"


def relay(bootstrap: str, role: str) -> int:
    """Copy bytes along the flow's shape; flush outputs, then commit, every COMMIT_EVERY_S."""
    source = "f.orders" if role == "matching" else "f.commands"
    consumer = Consumer(consumer_config(bootstrap, f"floor-{role}"))
    producer = Producer(producer_config(bootstrap, queue_buffering_max_messages=1_000_000))
    consumer.subscribe([source])
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    filler = b"x" * RECORD
    last_commit = time.monotonic()
    positions: dict[int, int] = {}  # partition -> next offset, of records handled (as streams.kafka.plain_driver)
    print(READY, flush=True)
    while not stopping:
        for msg in consume_now(consumer, 0.05, 2000):
            if msg.error():
                continue
            positions[msg.partition() or 0] = (msg.offset() or 0) + 1
            key, value = msg.key(), msg.value() or b""
            if role == "matching":
                producer.produce("f.events", filler, key)  # the order's event
                seq = int(value[:12])
                if seq % 4 == 0:
                    producer.produce("f.events", filler, key)  # a price update
                if seq % TRADE_EVERY == 0:
                    producer.produce("f.events", filler, key)  # the trade
                    producer.produce("f.commands", value, key)  # its ledger command (carries the stamp)
            else:
                for _ in range(3):  # transfers (fee, payment, credits) and their audit records
                    producer.produce("f.events", filler, key)
                    producer.produce("f.events", filler, key)
                producer.produce("f.settled", value, key)
        producer.poll(0)
        if time.monotonic() - last_commit >= COMMIT_EVERY_S:
            producer.flush(30)  # outputs acknowledged before the offsets that produced them are committed
            # Explicit offsets: a bare commit() carries the consumer's stored offsets, which run ahead of the
            # records handled (the plain loop's lost-trades bug, docs/state-and-recovery.md).
            if positions:
                consumer.commit(offsets=[TopicPartition(source, p, o) for p, o in positions.items()], asynchronous=True)
            last_commit = time.monotonic()
    producer.flush(10)
    consumer.close()
    return 0


def start_relay(bootstrap: str, role: str, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "relay", role, bootstrap],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while READY not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"relay {role} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    return proc


class Observer(threading.Thread):
    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(consumer_config(bootstrap, "floor-observer"))
        self.consumer.assign([TopicPartition("f.settled", p, 0) for p in range(TOPICS["f.settled"])])
        self.arrived: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for msg in consume_now(self.consumer, 0.05, 2000):
                if not msg.error():
                    self.arrived.setdefault(int((msg.value() or b"0")[:12]), time.perf_counter())
        self.consumer.close()


def produce(producer: Producer, first: int, n: int, rate: float | None, sent: dict[int, float]) -> None:
    start = time.perf_counter()
    pad = b"o" * (RECORD - 12)
    for i in range(n):
        seq = first + i
        if rate:
            target = start + i / rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(target - now, 0.001))
        if seq % TRADE_EVERY == 0:
            sent[seq] = time.perf_counter()
        produce_bounded(producer, "f.orders", b"%012d" % seq + pad, b"market-%d" % (seq % 12))
        producer.poll(0)
    producer.flush(60)


def wait_for(observer: Observer, seqs: list[int], timeout_s: float) -> bool:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if all(s in observer.arrived for s in seqs[-50:]) and all(s in observer.arrived for s in seqs):
            return True
        time.sleep(0.05)
    return False


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "relay":
        return relay(sys.argv[3], sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--latency-s", type=float, default=10)
    parser.add_argument("--orders", type=int, default=60_000)
    parser.add_argument("--warm-s", type=float, default=90, help="traffic at 2x --rate first: the broker's JIT warms")
    args = parser.parse_args()

    port, controller = find_free_ports(2)
    data = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    broker = LocalKafka(port=port, controller_port=controller, data_dir=data / "kafka")
    broker.start(timeout_s=60)
    relays: list[subprocess.Popen[bytes]] = []
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic(t, p, 1) for t, p in TOPICS.items()]).values():
            future.result()
        relays = [start_relay(broker.bootstrap, role, data / f"{role}.log") for role in ("matching", "ledger")]
        observer = Observer(broker.bootstrap)
        observer.start()
        producer = Producer(producer_config(broker.bootstrap, queue_buffering_max_messages=1_000_000))
        seq = 0
        pids = {"broker": broker.pid, "matching relay": relays[0].pid, "ledger relay": relays[1].pid}
        pids["load + observer"] = os.getpid()

        warm_n = int(args.warm_s * args.rate * 2)
        console.print(f"warm-up: {warm_n:,} orders over {args.warm_s:.0f} s")
        sent: dict[int, float] = {}
        produce(producer, seq, warm_n, args.rate * 2, sent)
        wait_for(observer, sorted(sent), 120)
        seq += warm_n

        def phase(n: int, rate: float | None) -> tuple[dict[int, float], float, dict[str, float]]:
            nonlocal seq
            sent: dict[int, float] = {}
            cpu0 = {k: cpu_s(p) for k, p in pids.items()}
            started = time.perf_counter()
            produce(producer, seq, n, rate, sent)
            ok = wait_for(observer, sorted(sent), 300)
            elapsed = max(observer.arrived.get(s, started) for s in sent) - started
            cpu = {k: 100 * (cpu_s(p) - cpu0[k]) / elapsed for k, p in pids.items()}
            seq += n
            if not ok:
                console.print(f"[red]{len(set(sent) - observer.arrived.keys())} orders never settled[/red]")
            return sent, elapsed, cpu

        sent, _elapsed, cpu_latency = phase(int(args.rate * args.latency_s), args.rate)
        latencies_ms = [(observer.arrived[s] - t) * 1000 for s, t in sent.items() if s in observer.arrived]
        _burst_sent, burst_s, cpu_burst = phase(args.orders, None)
        observer.stop.set()

        table = Table(title="Kafka floor for the P2P flow (relays copy bytes; 2 cores, broker included)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_row(f"latency @ {args.rate:,.0f} orders/s p50 / p95 / p99 ms", " / ".join(
            f"{pct(latencies_ms, q):.1f}" for q in (0.5, 0.95, 0.99)))  # fmt: skip
        table.add_row("burst orders/s", f"{args.orders / burst_s:,.0f}")
        table.add_row("burst records/s through the broker", f"{args.orders * 5.4 / burst_s:,.0f}")
        for name in pids:
            table.add_row(f"CPU % {name} (latency / burst)", f"{cpu_latency[name]:.0f} / {cpu_burst[name]:.0f}")
        console.print(table)
        return 0
    finally:
        for proc in relays:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in relays:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        broker.wipe()


if __name__ == "__main__":
    sys.exit(main())
