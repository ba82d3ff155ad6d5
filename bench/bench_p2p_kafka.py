"""P2P market through real Kafka: order produced -> settled trade consumed.

    python bench/bench_p2p_kafka.py [--orders 60000] [--latency-rate 1000] [--latency-s 15] [--modes faust,plain]

For each mode (the Faust worker, and a plain confluent-kafka loop running the same services) on a
fresh local broker: (1) latency at a fixed rate: for every trade, time from producing its aggressor
order to consuming its settlement; (2) throughput: a burst of --orders orders produced as fast as
possible, orders/s from first produce to the last settlement consumed. Prints p50/p95/p99, peak RSS of
the worker process, and the Faust/plain ratio. Everything runs on this machine (broker included).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts import models as m
from contracts.topics import ENERGY_ORDERS, ENERGY_SETTLEMENTS, ENERGY_TRADES, LEDGER_COMMANDS
from devtools.order_flow import generate_orders
from infra.kafka.broker import LocalKafka, find_free_ports
from streams.kafka.clients import produce_bounded, producer_config
from streams.kafka.topic_admin import ensure_topics
from streams.p2p.matching import MatchingPartition, to_message
from streams.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import ArrivalObserver, cpu_s, pct, peak_rss_mb
from workers import start_role_workers, stop_workers

console = Console()
WARMUP_ORDERS = 500


@dataclass
class Flow:
    """Pre-encoded order commands and, per trade, the command record that produced it.

    Keyed by record, not by order id: an amend that trades carries the id of an order submitted
    earlier, possibly in an earlier phase of the run, and was then counted in that phase (which then
    waited for a trade only the next phase produces).
    """

    records: list[tuple[bytes, bytes, str]]  # key, value, record id (its position in the flow)
    aggressor_of: dict[str, str] = field(default_factory=dict)  # trade id -> id of the record that made it


def build_flow(tag: str, n: int, seed: int) -> Flow:
    markets = [f"2026-11-24T{h:02d}:00Z/B{tag}" for h in range(10, 22)]
    accounts = [f"acct-{tag}-{i}" for i in range(200)]
    state = MatchingPartition(0)
    flow = Flow([])
    for i, cmd in enumerate(generate_orders(seed, n, markets, accounts)):
        message = to_message(cmd)
        flow.records.append((ENERGY_ORDERS.key_of(message), ENERGY_ORDERS.encode(message), str(i)))
        for topic, out in state.apply(i, message):
            if topic is ENERGY_TRADES:
                flow.aggressor_of[out.trade_id] = str(i)
    return flow


def deposits(tag: str) -> list[m.Deposit]:
    at = datetime(2026, 11, 24, tzinfo=UTC)
    return [
        m.Deposit(command_id=f"dep-{tag}-{i}", account_id=f"acct-{tag}-{i}", amount_kaus_units=10**16, occurred_at=at)
        for i in range(200)
    ]


class Observer(ArrivalObserver):
    """Consumes settlements and stamps their arrival time."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, (ENERGY_SETTLEMENTS.name,))
        self.settled_at: dict[str, float] = {}

    def arrived(self, topic: str | None, value: dict[str, Any], now: float) -> None:
        self.settled_at.setdefault(value["trade_id"], now)


def produce(
    producer: Producer, records: list[tuple[bytes, bytes, str]], rate_per_s: float | None, sent_at: dict[str, float]
) -> None:
    interval = 1.0 / rate_per_s if rate_per_s else 0.0
    start = time.perf_counter()
    for i, (key, value, record_id) in enumerate(records):
        if interval:
            target = start + i * interval
            while (now := time.perf_counter()) < target:
                time.sleep(min(target - now, 0.001))
        sent_at[record_id] = time.perf_counter()
        produce_bounded(producer, ENERGY_ORDERS.name, value, key)
        producer.poll(0)
    producer.flush(60)


def wait_settled(observer: Observer, trade_ids: set[str], timeout_s: float, worker: subprocess.Popen[bytes]) -> bool:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if len(trade_ids - observer.settled_at.keys()) == 0:
            return True
        if worker.poll() is not None:
            raise RuntimeError(f"the worker died with exit code {worker.returncode}")
        time.sleep(0.05)
    return False


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, float]:
    port, controller = find_free_ports(2)
    data = Path(tempfile.mkdtemp(prefix=f"bench-{mode}-"))
    broker = LocalKafka(port=port, controller_port=controller, data_dir=data / "kafka")
    broker.start(timeout_s=60)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap)
        ensure_topics(settings)
        tag = uuid.uuid4().hex[:6].upper()
        producer = Producer(producer_config(broker.bootstrap, queue_buffering_max_messages=1_000_000))
        for d in deposits(tag):
            producer.produce(LEDGER_COMMANDS.name, key=LEDGER_COMMANDS.key_of(d), value=LEDGER_COMMANDS.encode(d))
        producer.flush(30)
        env = dict(
            os.environ,
            NEXUS_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            NEXUS_DATA_DIR=str(data),
            PYTHONUNBUFFERED="1",
        )
        # "-split": matching and the ledger in two worker processes (one per core).
        module = "streams.p2p" if mode.startswith("plain") else "streams.worker"
        roles = ["matching", "settlement"] if mode.endswith("-split") else ["matching,settlement"]
        workers.extend(start_role_workers(module, env, roles, f"bench-{tag}", port + 7, data))
        worker = workers[0]
        observer = Observer(broker.bootstrap)
        observer.start()
        observer.assigned.wait(30)
        time.sleep(1)

        # (0) warm-up: group join, first rebuilds and connections happen before anything is timed, and the
        # broker's JIT compiles its hot paths (on this machine that takes ~60-90 s of traffic, during which
        # the C2 compiler alone uses half a core: a cold broker measures the JIT, not the platform).
        n_warm = max(WARMUP_ORDERS, int(args.warm_s * args.latency_rate))
        n_latency = int(args.latency_rate * args.latency_s)
        n_sustain = int(args.sustain_rate * args.sustain_s)
        flow = build_flow(tag, n_warm + n_latency + n_sustain + args.orders, seed=7)
        pids = {f"worker{i}": w.pid for i, w in enumerate(workers)} | {"broker": broker.pid}
        warm_sent: dict[str, float] = {}
        produce(producer, flow.records[:n_warm], args.latency_rate, warm_sent)
        wait_settled(observer, {t for t, o in flow.aggressor_of.items() if o in warm_sent}, 300, worker)
        flow.records = flow.records[n_warm:]
        # (1) latency at a fixed rate
        latency_part = flow.records[:n_latency]
        sent_at: dict[str, float] = {}
        produce(producer, latency_part, args.latency_rate, sent_at)
        latency_ids = {t for t, o in flow.aggressor_of.items() if o in sent_at}
        ok = wait_settled(observer, latency_ids, 60, worker)
        console.print(f"{mode}: latency phase {len(observer.settled_at)}/{len(latency_ids)} settled")
        latencies_ms = [
            (observer.settled_at[t] - sent_at[flow.aggressor_of[t]]) * 1000
            for t in latency_ids
            if t in observer.settled_at
        ]
        # (2) sustained: an open loop at --sustain-rate for --sustain-s. Sustained means every order settles and
        # the latency stays flat (no backlog that grows for as long as the rate lasts), not just a short peak.
        sustain_part = flow.records[n_latency : n_latency + n_sustain]
        sustain_sent: dict[str, float] = {}
        sustain_cpu = {k: cpu_s(pid) for k, pid in pids.items()}
        started = time.perf_counter()
        produce(producer, sustain_part, args.sustain_rate, sustain_sent)
        produced_s = time.perf_counter() - started
        sustain_ids = {t for t, o in flow.aggressor_of.items() if o in sustain_sent}
        ok_sustain = wait_settled(observer, sustain_ids, 300, worker)
        # (send time, latency) per trade; the last tenth of the run against the first: a backlog that builds
        # shows there.
        by_send = sorted(
            (sustain_sent[flow.aggressor_of[t]], (observer.settled_at[t] - sustain_sent[flow.aggressor_of[t]]) * 1000)
            for t in sustain_ids
            if t in observer.settled_at
        )
        sustain_ms = [lat for _, lat in by_send]
        tenth = max(1, len(by_send) // 10)
        sustain = {
            "sustain_ok": float(ok_sustain),
            "sustain_offered_per_s": len(sustain_part) / produced_s,
            "sustain_p50_ms": pct(sustain_ms, 0.50),
            "sustain_p95_ms": pct(sustain_ms, 0.95),
            "sustain_p99_ms": pct(sustain_ms, 0.99),
            "sustain_max_ms": max(sustain_ms, default=float("nan")),
            "sustain_first_tenth_p99_ms": pct([lat for _, lat in by_send[:tenth]], 0.99),
            "sustain_last_tenth_p99_ms": pct([lat for _, lat in by_send[-tenth:]], 0.99),
            **{
                f"sustain_{k}_cpu_us_per_order": 1e6 * (cpu_s(pid) - sustain_cpu[k]) / max(1, len(sustain_part))
                for k, pid in pids.items()
            },
        }
        console.print(f"{mode}: sustained {sustain}")
        # (3) throughput burst
        burst = flow.records[n_latency + n_sustain :]
        burst_sent: dict[str, float] = {}
        cpu_before = {k: cpu_s(pid) for k, pid in pids.items()}
        started = time.perf_counter()
        produce(producer, burst, None, burst_sent)
        produced_s = time.perf_counter() - started
        burst_ids = {t for t, o in flow.aggressor_of.items() if o in burst_sent}
        ok_burst = wait_settled(observer, burst_ids, 600, worker)
        last = max((observer.settled_at[t] for t in burst_ids if t in observer.settled_at), default=started)
        elapsed = last - started
        # CPU per order while the burst ran (contention-proof: who spends the two cores).
        cpu_us = {f"{k}_cpu_us_per_order": 1e6 * (cpu_s(pid) - cpu_before[k]) / len(burst) for k, pid in pids.items()}
        observer.stop.set()
        return {
            "latency_ok": float(ok),
            "trades_latency": len(latencies_ms),
            "p50_ms": pct(latencies_ms, 0.50),
            "p95_ms": pct(latencies_ms, 0.95),
            "p99_ms": pct(latencies_ms, 0.99),
            "max_ms": max(latencies_ms, default=float("nan")),
            "burst_ok": float(ok_burst),
            "burst_orders": len(burst),
            "burst_trades": len(burst_ids),
            "produce_s": produced_s,
            "burst_s": elapsed,
            "orders_per_s": len(burst) / elapsed,
            "worker_peak_rss_mb": sum(peak_rss_mb(p.pid) for p in workers),
            **cpu_us,
            **sustain,
        }
    finally:
        stop_workers(workers)
        broker.stop()
        broker.wipe()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=60_000)
    parser.add_argument("--latency-rate", type=float, default=1000)
    parser.add_argument("--latency-s", type=float, default=15)
    parser.add_argument("--sustain-rate", type=float, default=5000, help="orders/s of the sustained phase")
    parser.add_argument("--sustain-s", type=float, default=60)
    parser.add_argument("--modes", default="faust,plain")
    parser.add_argument("--warm-s", type=float, default=90, help="traffic at --latency-rate before timing")
    args = parser.parse_args()
    results = {}
    for mode in args.modes.split(","):
        with console.status(f"running {mode}…"):
            results[mode] = run_mode(mode, args)
        console.print(mode, results[mode])
    table = Table(title="P2P through Kafka: order produced -> settlement consumed (2 cores, broker included)")
    table.add_column("metric")
    for mode in results:
        table.add_column(mode, justify="right")
    both = "faust" in results and "plain" in results
    if both:
        table.add_column("faust / plain", justify="right")
    for key in (
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "trades_latency",
        "orders_per_s",
        "burst_orders",
        "burst_trades",
        "burst_s",
        "worker_peak_rss_mb",
        *sorted({k for r in results.values() for k in r if k.endswith("_cpu_us_per_order")}),
        *sorted({k for r in results.values() for k in r if k.startswith("sustain_") and "_cpu_" not in k}),
    ):
        row = [key] + [f"{r[key]:,.2f}" if key in r else "—" for r in results.values()]
        if both and key in results["faust"] and key in results["plain"]:
            a, b = results["faust"][key], results["plain"][key]
            row.append(f"{a / b:.2f}" if b else "—")
        elif both:
            row.append("—")
        table.add_row(*row)
    console.print(table)
    console.print(f"bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
