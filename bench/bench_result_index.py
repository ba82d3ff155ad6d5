"""The bridge's result index (streams/bridge/result_index.py): what answering duplicates costs, in memory and time.

    python bench/bench_result_index.py [--results 200000] [--kafka]

In process: N distinct settled results, as the journal entries the index stores (copies of one result the
bridge's core reaches in its unit-test harness, with fake ledger and providers: a real result's size).
(1) memory: the same N results held as a dict of ``Result`` objects (before the index) against the index's
    file; (2) per-request cost on the event loop: a lookup of a new request id (the common case, a miss) and
    of a duplicate (a hit, decoded from the file); (3) the periodic commit, in rows/s.
``--kafka``: a fresh local broker, N entries on one journal partition; a partition's load from the
beginning (no index, as before) against a load from the checkpoint after 1,000 more entries.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import pct

from contracts.bridge_codec import journal_of_result, result_of_entry
from domain.bridge import Result, Settled
from streams.bridge.result_index import ResultIndex
from tests.unit.test_bridge_core import harness, payment, result_of

console = Console()
COMMIT_BATCH = 1_300  # about one second of results at the bridge's burst capacity


def template() -> Settled:
    result = result_of(harness().run(payment("card-template", program="AURA_SYDNEY")))
    assert isinstance(result, Settled)
    return result


def entries(n: int) -> list[tuple[str, bytes, Result]]:
    base = template()
    out: list[tuple[str, bytes, Result]] = []
    for i in track(range(n), description="building results…", console=console, transient=True):
        rid = f"card-{i:09d}"
        result = dataclasses.replace(base, request_id=rid, bridge_tx_id=f"BRIDGE-{rid}")
        out.append((rid, orjson.dumps(journal_of_result(result, f"BRIDGE-{rid}")), result))
    return out


def memory_of_dict(rows: list[tuple[str, bytes, Result]]) -> float:
    """Bytes per result when every result stays in memory, decoded (what the bridge did before the index)."""
    gc.collect()
    tracemalloc.start()
    held = {rid: result_of_entry(entry) for rid, entry, _ in rows[: min(len(rows), 50_000)]}
    used, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per = used / len(held)
    del held
    return per


def in_process(n: int, dirpath: Path) -> None:
    rows = entries(n)
    per_result_b = memory_of_dict(rows)
    index = ResultIndex(dirpath / "results.sqlite3", "bench-journal", result_of_entry)

    commit_s: list[float] = []
    for start in track(range(0, n, COMMIT_BATCH), description="committing…", console=console, transient=True):
        batch = [(rid, 0, entry) for rid, entry, _ in rows[start : start + COMMIT_BATCH]]
        t0 = time.perf_counter()
        index.commit(batch, {0: start + len(batch)})
        commit_s.append(time.perf_counter() - t0)
    rows_per_s = n / sum(commit_s)
    commit_ms = [s * 1000 for s in commit_s]

    misses_us, hits_us = [], []
    for i in range(20_000):
        t0 = time.perf_counter_ns()
        assert index.get(f"new-{i}") is None
        misses_us.append((time.perf_counter_ns() - t0) / 1000)
    for i in range(0, n, max(1, n // 5_000)):
        rid = rows[i][0]
        t0 = time.perf_counter_ns()
        found = index.get(rid)
        hits_us.append((time.perf_counter_ns() - t0) / 1000)
        assert found is not None and found.request_id == rid

    gc.collect()
    tracemalloc.start()
    index2 = ResultIndex(dirpath / "results.sqlite3", "bench-journal", result_of_entry)
    for i in range(1_000):
        index2.get(rows[i * (n // 1_000)][0])
    index_mem_b, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    file_mb = sum(p.stat().st_size for p in dirpath.glob("results.sqlite3*")) / 2**20

    table = Table(title=f"result index, {n:,} results (in process)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("results in a dict (before): bytes per result", f"{per_result_b:,.0f}")
    table.add_row("  → memory for these results", f"{per_result_b * n / 2**20:,.0f} MB")
    table.add_row("index: Python memory after 1,000 lookups", f"{index_mem_b / 2**20:,.2f} MB")
    table.add_row("index: file size", f"{file_mb:,.0f} MB ({file_mb * 2**20 / n:,.0f} B per result)")
    table.add_row("lookup of a new id (miss) p50 / p99 µs", f"{pct(misses_us, 0.5):.1f} / {pct(misses_us, 0.99):.1f}")
    table.add_row(
        "lookup of a duplicate (hit, decoded) p50 / p99 µs", f"{pct(hits_us, 0.5):.0f} / {pct(hits_us, 0.99):.0f}"
    )
    table.add_row("commit: rows/s", f"{rows_per_s:,.0f}")
    table.add_row(
        f"commit of {COMMIT_BATCH:,} rows p50 / p99 ms", f"{pct(commit_ms, 0.5):.1f} / {pct(commit_ms, 0.99):.1f}"
    )
    console.print(table)
    index.close()
    index2.close()


def with_kafka(n: int, dirpath: Path) -> None:
    from confluent_kafka import Producer

    from contracts.topics import BRIDGE_PAYOUTS_JOURNAL
    from infra.kafka.broker import LocalKafka, find_free_ports
    from streams.bridge.journal import KafkaJournal
    from streams.kafka.clients import AsyncProducer, producer_config
    from streams.kafka.topic_admin import ensure_topics, topic_id
    from streams.settings import Settings

    port, controller = find_free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller, data_dir=dirpath / "kafka")
    with console.status("starting a local broker…"):
        broker.start(timeout_s=90)
    try:
        ensure_topics(Settings(kafka_bootstrap_servers=broker.bootstrap), [BRIDGE_PAYOUTS_JOURNAL])
        rows = entries(n + 1_000)
        producer = Producer(producer_config(broker.bootstrap, queue_buffering_max_messages=1_000_000))

        def produce(part: list[tuple[str, bytes, Result]]) -> None:
            for rid, entry, _ in part:
                producer.produce(BRIDGE_PAYOUTS_JOURNAL.name, entry, f"BRIDGE-{rid}".encode(), partition=0)
            producer.flush(60)

        produce(rows[:n])

        async def load_twice() -> tuple[float, int, float, int, float]:
            async_producer = AsyncProducer(broker.bootstrap)
            journal_id = topic_id(broker.bootstrap, BRIDGE_PAYOUTS_JOURNAL.name)
            plain = KafkaJournal(broker.bootstrap, async_producer)  # no index: every result into memory
            t0 = time.perf_counter()
            state = await asyncio.to_thread(plain.load, 0)
            full_s = time.perf_counter() - t0
            assert len(state.results) == n
            index = ResultIndex(dirpath / "kafka-results.sqlite3", journal_id, result_of_entry)
            indexed = KafkaJournal(broker.bootstrap, async_producer, index)
            t0 = time.perf_counter()
            first = await asyncio.to_thread(indexed.load, 0)  # first start: everything into the file
            first_s = time.perf_counter() - t0
            produce(rows[n:])  # 1,000 more while it was down
            t0 = time.perf_counter()
            again = await asyncio.to_thread(indexed.load, 0)
            again_s = time.perf_counter() - t0
            assert again.read_from == first.progress.checkpoint() and again.entries_read == 1_000
            assert index.get(rows[0][0]) is not None and index.get(rows[-1][0]) is not None
            index.close()
            async_producer.close()
            return full_s, first.entries_read, first_s, again.entries_read, again_s

        full_s, first_n, first_s, again_n, again_s = asyncio.run(load_twice())
        table = Table(title=f"loading a journal partition of {n:,} results (local broker)")
        for col in ("load", "entries read", "seconds", "entries/s"):
            table.add_column(col, justify="right" if col != "load" else "left")
        table.add_row("from the beginning, into memory (before)", f"{n:,}", f"{full_s:.2f}", f"{n / full_s:,.0f}")
        table.add_row(
            "first start with the index (into the file)", f"{first_n:,}", f"{first_s:.2f}", f"{first_n / first_s:,.0f}"
        )
        table.add_row("restart from the checkpoint (1,000 new)", f"{again_n:,}", f"{again_s:.2f}", "")
        console.print(table)
    finally:
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--kafka", action="store_true", help="also time a journal partition's load on a local broker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-result-index-") as tmp:
        in_process(args.results, Path(tmp))
        if args.kafka:
            with_kafka(args.results, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
