"""Benchmark: the nightly snapshot of 1,000,000 real settlement events from Kafka into DuckDB.

    python bench/bench_snapshot_kafka.py [--events 1000000] [--variance-engines polars[,duckdb] | none]

1. A fresh local broker with the registry's topics (retention off: the day benched is in the past).
2. The events are the platform's own output, built by its own code and produced on the topics the warehouse
   snapshots: P2P trades as the services make them (seeded orders through ``MatchingPartition``, its
   ``SettleTrade`` commands through ``LedgerPartition``: ``energy.trades``, ``energy.settlements``, a
   ``ledger.transfers`` record per leg, ``audit.records``), and card payments' results as the bridge writes
   them (``contracts.bridge_codec.result_json`` of ``domain.bridge.Settled`` / ``Rejected``: one after every
   five P2P records, 1 % failed). Each record is stamped with its business time, as a service's producer would.
3. In a process of its own (so its peak RSS is the snapshot's), the recon day's Kafka window is read into a
   fresh DuckDB file (``warehouse.snapshot_loader.load_kafka_window``: read, validate against the contracts,
   land idempotently), then the SQL models are built; records/s, p50/p95/p99 of the landing batches (20,000
   records each: validate + land) and peak RSS (VmHWM).
4. Side by side, the 10-million-row variance analysis (``bench/bench_reconciliation.py``; its Parquet data is
   generated once under .local/bench/recon), each engine in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from measure import pct, peak_rss_mb

from contracts import models as m
from contracts import topics as t
from contracts.bridge_codec import result_json
from contracts.construct import dump_json
from devtools.order_flow import demo_accounts, demo_markets, generate_orders
from domain.bridge import Phase, ReasonCode, Rejected, Result, Settled, bridge_tx_id_for
from domain.order_book import SubmitOrder
from domain.rails import PRIMARY_RAIL, RAILS, REGION_CURRENCY, fee_minor
from infra.kafka.broker import LocalKafka, find_free_ports
from streams.kafka import ingress
from streams.kafka.clients import produce_bounded, producer_config
from streams.kafka.faust_app import Outbox
from streams.kafka.topic_admin import ensure_topics
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message
from streams.settings import Settings
from warehouse.snapshot_loader import SNAPSHOT_TOPICS

REPO = Path(__file__).resolve().parents[1]
DAY = date(2026, 11, 24)  # demo_markets' first delivery hour is 10:00 that day; orders start six hours before
SNAPSHOT = {topic.name for topic in SNAPSHOT_TOPICS}
BRIDGE_EVERY = 5  # a card payment's result after every five P2P records
REGIONS = list(PRIMARY_RAIL)


# --------------------------------------------------------------------------- the events


def _card_result(i: int, at_ms: int) -> Result:
    """The i-th card payment's result, as the bridge reaches it (every region's primary rail; 1 % failed)."""
    region = REGIONS[i % len(REGIONS)]
    rail, currency = PRIMARY_RAIL[region], REGION_CURRENCY[region]
    request_id = f"bench-card-{i:08d}"
    amount = 500 + (i * 7919) % 200_000
    durations = tuple((phase, 1_000 + (i + k) % 700) for k, phase in enumerate(Phase))
    if i % 100 == 99:
        return Rejected(
            request_id=request_id,
            bridge_tx_id=bridge_tx_id_for(request_id),
            payer_account_id=f"payer-{i % 5000:05d}",
            region=region,
            currency=currency,
            amount_minor=amount,
            failed_phase=Phase.MERCHANT_CREDIT,
            reason_code=ReasonCode.PROVIDER_DECLINED,
            reason="the provider declined the payout",
            rail=rail,
            phase_durations_us=durations,
            failed_at_ms=at_ms,
            fingerprint=request_id,
            hold_voided=True,
        )
    provider = RAILS[rail].provider
    return Settled(
        request_id=request_id,
        bridge_tx_id=bridge_tx_id_for(request_id),
        payer_account_id=f"payer-{i % 5000:05d}",
        merchant_id=f"merchant-{i % 300:03d}",
        region=region,
        currency=currency,
        amount_minor=amount,
        kaus_debited_units=amount * 6_000,
        rate=Decimal("0.15"),
        rail=rail,
        primary_rail=rail,
        rail_substitution=None,
        provider=provider,
        provider_reference=f"ref-{i:010d}",
        provider_fee_minor=fee_minor(provider, amount, currency),
        cashback_kaus_units=amount * 60,
        ecosystem_bonus_kaus_units=0,
        phase_durations_us=durations,
        total_duration_us=sum(us for _, us in durations),
        completed_at_ms=at_ms,
        fingerprint=request_id,
    )


def platform_records(events: int) -> Iterator[tuple[str, bytes, bytes, int]]:
    """(topic, key, value, timestamp ms) of ``events`` snapshot-topic records, in time order."""
    markets, accounts = demo_markets(12), demo_accounts(400)
    start_ms = int(datetime.combine(DAY, dtime(4), UTC).timestamp() * 1000)
    matching, ledger = MatchingPartition(0), LedgerPartition()
    commands = t.LEDGER_COMMANDS
    validate, encode_all = ingress.validate, Outbox.encode_all
    funded_at = datetime.combine(DAY, dtime(3), UTC)
    for offset, account in enumerate(accounts):  # every trade can settle
        deposit = m.Deposit(
            command_id=f"dep-{account}", account_id=account, amount_kaus_units=10**16, occurred_at=funded_at
        )
        ledger.apply(offset, validate(commands, commands.key_of(deposit), commands.encode(deposit)))
    ledger_offset, p2p, produced = len(accounts), 0, 0
    orders = generate_orders(42, 50_000_000, markets, accounts, start_ms=start_ms)
    for i, command in enumerate(orders):
        now_ms = command.submitted_at_ms if isinstance(command, SubmitOrder) else command.requested_at_ms
        order = to_message(command)
        out = encode_all(
            matching.apply(i, validate(t.ENERGY_ORDERS, t.ENERGY_ORDERS.key_of(order), t.ENERGY_ORDERS.encode(order)))
        )
        for name, key, value in list(out):
            if name == commands.name:  # the trade's SettleTrade, settled by the ledger as its worker would
                out += encode_all(ledger.apply(ledger_offset, validate(commands, key, value)))
                ledger_offset += 1
        for name, key, value in out:
            if name not in SNAPSHOT:
                continue
            yield name, key, value, now_ms
            p2p += 1
            produced += 1
            if p2p % BRIDGE_EVERY == 0:
                result = _card_result(p2p // BRIDGE_EVERY, now_ms)
                topic = t.BRIDGE_SETTLEMENTS_COMPLETED if isinstance(result, Settled) else t.BRIDGE_SETTLEMENTS_FAILED
                yield topic.name, result.request_id.encode(), dump_json(result_json(result)), now_ms
                produced += 1
            if produced >= events:
                return


def produce_events(bootstrap: str, events: int) -> tuple[Counter[str], float, tuple[int, int]]:
    producer = Producer(producer_config(bootstrap, linger_ms=20, queue_buffering_max_messages=500_000))
    counts: Counter[str] = Counter()
    first_ms = last_ms = 0
    started = time.perf_counter()
    for name, key, value, ts_ms in platform_records(events):
        produce_bounded(producer, name, value, key, timestamp=ts_ms)
        counts[name] += 1
        first_ms, last_ms = first_ms or ts_ms, ts_ms
        if sum(counts.values()) % 50_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "records not delivered"
    return counts, time.perf_counter() - started, (first_ms, last_ms)


def keep_forever(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entries = [
        ConfigEntry(name, "-1", incremental_operation=AlterConfigOpType.SET)
        for name in ("retention.ms", "retention.bytes")
    ]
    resources = [
        ConfigResource(ResourceType.TOPIC, topic.name, incremental_configs=entries) for topic in SNAPSHOT_TOPICS
    ]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


# --------------------------------------------------------------------------- the snapshot, in its own process


def snapshot_only(bootstrap: str, db: Path) -> dict[str, Any]:
    from warehouse.db import warehouse
    from warehouse.settings import ReconSettings
    from warehouse.snapshot_loader import load_kafka_window
    from warehouse.sqlrunner import build_models

    start, end = ReconSettings().snapshot_window(DAY)
    with warehouse(db) as con:
        t0 = time.perf_counter()
        stats = load_kafka_window(
            con, start, end, bootstrap_servers=bootstrap, group_id="bench-snapshot", late_minutes=30
        )
        t1 = time.perf_counter()
        build_models(con)
        t2 = time.perf_counter()
        raw = con.execute("SELECT count(*) FROM raw_events").fetchall()[0][0]
    return {
        "read": sum(stats.read.values()),
        "landed": sum(stats.landed.values()),
        "rejected": sum(stats.rejected.values()),
        "duplicates": sum(stats.duplicates.values()),
        "raw_events": raw,
        "load_s": t1 - t0,
        "models_s": t2 - t1,
        "batches": len(stats.batch_seconds),
        "batch_p50_ms": pct(stats.batch_seconds, 0.50) * 1000,
        "batch_p95_ms": pct(stats.batch_seconds, 0.95) * 1000,
        "batch_p99_ms": pct(stats.batch_seconds, 0.99) * 1000,
        "peak_rss_mb": peak_rss_mb(os.getpid()),  # this process's own (VmHWM), not its parent's
        "db_mb": db.stat().st_size / 2**20,
    }


# --------------------------------------------------------------------------- the 10-million-row variance


def variance(engines: list[str]) -> list[dict[str, Any]]:
    """bench_reconciliation.py's figures, its data generated first in a process of its own (a child would
    otherwise report its parent's peak RSS as its own: Linux carries ru_maxrss across fork and exec)."""
    if not engines:
        return []
    script = str(REPO / "bench" / "bench_reconciliation.py")
    subprocess.run([sys.executable, script, "--phase", "generate"], check=True)
    out = []
    for engine in engines:
        proc = subprocess.run(
            [sys.executable, script, "--phase", "run", "--engine", engine], capture_output=True, text=True, check=True
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--variance-engines", default="polars", help="comma-separated, or 'none'")
    ap.add_argument("--snapshot-only", nargs=2, metavar=("BOOTSTRAP", "DB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.snapshot_only:
        print(json.dumps(snapshot_only(args.snapshot_only[0], Path(args.snapshot_only[1]))))
        return 0
    engines = [] if args.variance_engines == "none" else args.variance_engines.split(",")
    data = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    port, controller = find_free_ports(2)
    broker = LocalKafka(port=port, controller_port=controller, data_dir=data / "kafka", heap_mb=1024)
    try:
        broker.start(timeout_s=90)
        ensure_topics(Settings(kafka_bootstrap_servers=broker.bootstrap))
        keep_forever(broker.bootstrap)
        counts, produce_s, (first_ms, last_ms) = produce_events(broker.bootstrap, args.events)
        total = sum(counts.values())
        print(
            f"produced {total:,} records in {produce_s:.1f} s ({total / produce_s:,.0f}/s), business time "
            f"{datetime.fromtimestamp(first_ms / 1000, UTC):%Y-%m-%d %H:%M:%S} .. "
            f"{datetime.fromtimestamp(last_ms / 1000, UTC):%H:%M:%S}",
            flush=True,
        )
        for name, n in sorted(counts.items()):
            print(f"  {name:32s} {n:>9,}")
        proc = subprocess.run(
            [sys.executable, __file__, "--snapshot-only", broker.bootstrap, str(data / "warehouse.duckdb")],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr[-5000:], file=sys.stderr)
            return 1
        snap = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        broker.stop()
        shutil.rmtree(data, ignore_errors=True)  # the broker's log and the DuckDB file: about 850 MB
    assert snap["read"] == total and snap["rejected"] == 0 and snap["landed"] + snap["duplicates"] == total, snap
    rows = [
        (
            f"snapshot {snap['read']:,} records, Kafka -> DuckDB",
            f"{snap['load_s']:.1f} s ({snap['read'] / snap['load_s']:,.0f} records/s); models {snap['models_s']:.1f} s",
            f"{snap['peak_rss_mb']:,.0f} MB",
            f"batches of 20,000: p50 {snap['batch_p50_ms']:.0f} / p95 {snap['batch_p95_ms']:.0f} / "
            f"p99 {snap['batch_p99_ms']:.0f} ms ({snap['batches']} batches); DuckDB file {snap['db_mb']:,.0f} MB",
        )
    ]
    for v in variance(engines):
        rows.append(
            (
                f"variance {v['rows']:,} settlements ({v['engine']})",
                f"{v['total_s']:.1f} s ({v['rows'] / v['total_s']:,.0f} rows/s); "
                f"match+classify {v['match_classify_s']} s",
                f"{v['peak_rss_mb']:,.0f} MB",
                f"match rate {v['metrics']['automatic_match_rate']}, "
                f"class mismatches {v['class_mismatches'] or 'none'}",
            )
        )
    print()
    for label, speed, rss, more in rows:
        print(f"{label:52s} {speed:60s} peak RSS {rss:>9s}  {more}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
