"""Auto-payouts end to end through real Kafka: a deposit pushes a holder over its threshold -> PayoutResult PAID.

    python bench/bench_payouts_e2e.py [--holders 200] [--rate 10] [--burst 200] [--warm 20] [--transport lean]

Everything runs on this machine, on a broker of its own: the ledger (``streams.p2p``), the bridge's plain runtime
(``streams.bridge.loop``) against the provider simulator, an FX feed publishing every 0.5 s, and the auto-payout
service (``python -m streams.payouts``), each a process of its own, as tests/integration/test_payouts_e2e.py runs
them. Per run, ``--holders`` holders are each KYC-verified (a KycStatusChanged straight to ``kyc.status``, what the
KYC receiver writes), given a THRESHOLD rule (1,000 K-AUS, keep-minimum 100) and funded with 600 K-AUS; once the
service's state file shows every rule, status and balance, one 500 K-AUS deposit per holder pushes each over its
threshold and the service pays out the excess, 1,000 K-AUS, through the holder's provider (Stripe USD and EUR,
PayPal USD, Wise EUR, Toss KRW in turn).

Per payout: from the deposit's produce to the arrival here of its ``payouts.results`` PAID record, and from the
``payouts.requests`` record's timestamp (the service's decision) to that arrival; throughput is payouts over
the time from the first deposit to the last result. After an unreported warm-up, the provider simulator answers
at once, then at the spec's latency of each rail (``domain.rails.RAILS`` ``expected_latency_ms``); under each, the
deposits go out paced at ``--rate``/s (the latency of a payout, nothing queued behind it: ``--holders`` holders),
then all at once (``--burst`` holders: the most payouts/s, each latency then includes its wait in the queue).
Reported: p50/p95/p99/max, payouts/s, the CPU each process spent per payout, peak RSS of the payouts service, and
whether every payout was paid exactly once (one PAID result per payout id, one provider payout per idempotency key,
the exact K-AUS, the fiat the provider paid, each holder left at keep-minimum). No assertion on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from contracts import models as m
from contracts.topics import (
    BRIDGE_SETTLEMENTS_COMPLETED,
    FX_RATES,
    KYC_STATUS,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
    Topic,
)
from devtools.fx_feed import fx_quotes
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import bridge_tx_id_for
from domain.rails import RAILS, Rail
from infra.kafka.broker import LocalKafka, find_free_ports
from streams.bridge.providers.base import uuid_for_key
from streams.kafka.clients import consume_now, consumer_config, produce_bounded, producer_config
from streams.kafka.topic_admin import ensure_topics
from streams.payouts.state import state_path
from streams.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_s, pct, peak_rss_mb
from workers import start_worker, stop_workers

console = Console(width=max(Console().width, 130))
K = 1_000_000  # K-AUS base units per K-AUS
FUNDING_UNITS = 600 * K
PUSH_UNITS = 500 * K
THRESHOLD_UNITS = 1_000 * K
KEEP_MINIMUM_UNITS = 100 * K
PAYOUT_UNITS = FUNDING_UNITS + PUSH_UNITS - KEEP_MINIMUM_UNITS  # the excess over keep-minimum, under the cap
FX_DAY = date(2026, 10, 30)
# (provider, currency, payout account format): one of each in turn; the rail each takes is in the results
DESTINATIONS = (
    ("STRIPE", "USD", "acct_{tag}{i}"),
    ("PAYPAL", "USD", "holder-{tag}-{i}@example.com"),
    ("WISE", "EUR", "{n}"),
    ("TOSS", "KRW", "s{tag}{i}"),
    ("STRIPE", "EUR", "acct_{tag}{i}"),
)
LEGEND = (
    "0 ms: the provider simulator answers at once; spec: each rail at its RAILS expected_latency_ms; @ n/s: the "
    "deposits paced; burst: all produced at once (latency includes the queue). deposit→: from the deposit's "
    "produce, request→: from the payouts.requests record's timestamp, both to the PAID result's arrival."
)
ZERO = {rail.value: {"latency_ms": 0} for rail in Rail}
SPEC = {rail.value: {"latency_ms": spec.expected_latency_ms} for rail, spec in RAILS.items()}


HOPS = (  # consecutive record timestamps of one payout (CreateTime: each writer's wall clock, one machine)
    ("deposit → ledger.transfers", "deposit", LEDGER_TRANSFERS.name),
    ("→ payouts.requests (service decides)", LEDGER_TRANSFERS.name, PAYOUT_REQUESTS.name),
    ("→ bridge result (hold, FX, provider, capture)", PAYOUT_REQUESTS.name, BRIDGE_SETTLEMENTS_COMPLETED.name),
    ("→ payouts.results (service reports)", BRIDGE_SETTLEMENTS_COMPLETED.name, PAYOUT_RESULTS.name),
    ("→ arrival here", PAYOUT_RESULTS.name, "arrival"),
)


class Observer(threading.Thread):
    """Reads the payout topics from their first offset and stamps each record's arrival (perf and wall clock);
    ``stamps`` keeps the record timestamp of each payout's first record per topic (``HOPS``)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(consumer_config(bootstrap, f"bench-{uuid.uuid4().hex}"))
        self.stop = threading.Event()
        self.results: dict[str, list[tuple[float, float, dict[str, Any]]]] = defaultdict(list)  # perf, wall ms
        self.requests: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)  # record timestamp ms
        self.waits: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.stamps: dict[tuple[str, str], float] = {}  # (topic, payout id or deposit transfer id) -> ms
        self.bridge: dict[str, dict[str, Any]] = {}  # payout id -> the bridge's first completed result

    def run(self) -> None:
        parts = []
        topics = (PAYOUT_RESULTS, PAYOUT_REQUESTS, PAYOUT_WAITING, LEDGER_TRANSFERS, BRIDGE_SETTLEMENTS_COMPLETED)
        for topic in topics:
            meta = self.consumer.list_topics(topic.name, timeout=30).topics[topic.name]
            parts += [TopicPartition(topic.name, p, 0) for p in meta.partitions]
        self.consumer.assign(parts)
        while not self.stop.is_set():
            for msg in consume_now(self.consumer, 0.05, 2000):
                raw = msg.value()
                if msg.error() or raw is None:
                    continue
                self.arrived(msg.topic(), msg.timestamp()[1], json.loads(raw))
        self.consumer.close()

    def arrived(self, topic: str, stamp_ms: int, value: dict[str, Any]) -> None:
        perf, wall_ms = time.perf_counter(), time.time() * 1000
        key = value.get("payout_id") or value.get("transfer_id")
        if not key:
            return  # a card payment's bridge result
        self.stamps.setdefault((topic, key), stamp_ms)
        if topic == PAYOUT_RESULTS.name:
            self.results[key].append((perf, wall_ms, value))
            self.stamps.setdefault(("arrival", key), wall_ms)
        elif topic == PAYOUT_REQUESTS.name:
            self.requests[key].append((stamp_ms, value))
        elif topic == PAYOUT_WAITING.name:
            self.waits[key].append(value)
        elif topic == BRIDGE_SETTLEMENTS_COMPLETED.name:
            self.bridge.setdefault(key, value)


@dataclass
class Holder:
    account: str
    rule_id: str
    provider: str
    currency: str
    payout_account: str

    @property
    def payout_id(self) -> str:
        return f"{self.rule_id}:T0"  # the account's first threshold payout

    @property
    def push_id(self) -> str:
        return f"push-{self.account}"  # the deposit over the threshold: its ledger transfer id too


@dataclass
class Run:
    name: str
    holders: list[Holder]
    sent_perf: dict[str, float] = field(default_factory=dict)  # payout id -> its deposit's produce
    sent_wall_ms: dict[str, float] = field(default_factory=dict)
    rate: float = 0.0  # deposits/s; 0: as fast as they can be produced
    started: float = 0.0
    produced_s: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load average before and after the timed part


def make_holders(tag: str, run: int, n: int) -> list[Holder]:
    out = []
    for i in range(n):
        provider, currency, form = DESTINATIONS[i % len(DESTINATIONS)]
        account = form.format(tag=tag, i=f"{run}x{i}", n=run * 1_000_000 + i + 1)
        out.append(Holder(f"holder-{tag}-{run}-{i}", f"rule-{tag}-{run}-{i}", provider, currency, account))
    return out


def produce(producer: Producer, topic: Topic, message: Any) -> None:
    produce_bounded(producer, topic.name, topic.encode(message), topic.key_of(message))
    producer.poll(0)


def deposit(account: str, units: int, command_id: str) -> m.Deposit:
    return m.Deposit(command_id=command_id, account_id=account, amount_kaus_units=units, occurred_at=datetime.now(UTC))


def set_up(producer: Producer, run: Run) -> None:
    """Each holder verified, with its THRESHOLD rule, funded below the threshold."""
    for h in run.holders:
        now = datetime.now(UTC)
        kyc = m.KycStatusChanged(account_id=h.account, status="VERIFIED", provider="SUMSUB",
                                 applicant_id=f"app-{h.account}", event_id=f"evt-{h.account}",
                                 email=f"{h.account}@example.com", occurred_at=now)  # fmt: skip
        produce(producer, KYC_STATUS, kyc)
        rule = m.AutoPayoutRule.model_validate(
            {
                "rule_id": h.rule_id,
                "account_id": h.account,
                "trigger_type": "THRESHOLD",
                "threshold_kaus_units": THRESHOLD_UNITS,
                "keep_minimum_kaus_units": KEEP_MINIMUM_UNITS,
                "max_payout_per_tx_kaus_units": 10 * PAYOUT_UNITS,
                "payout_provider": h.provider,
                "payout_currency": h.currency,
                "payout_account": h.payout_account,
            }
        )
        produce(producer, PAYOUT_RULES, rule)
        produce(producer, LEDGER_COMMANDS, deposit(h.account, FUNDING_UNITS, f"fund-{h.account}"))
    producer.flush(60)


def push(producer: Producer, run: Run, rate: float) -> None:
    """One deposit per holder that takes it over its threshold, at ``rate``/s (0: as fast as produced)."""
    interval = 1.0 / rate if rate > 0 else 0.0
    run.started = start = time.perf_counter()
    for i, h in enumerate(run.holders):
        if interval:
            target = start + i * interval
            while (now := time.perf_counter()) < target:
                time.sleep(min(target - now, 0.001))
        message = deposit(h.account, PUSH_UNITS, h.push_id)
        value = LEDGER_COMMANDS.encode(message)
        run.sent_perf[h.payout_id], run.sent_wall_ms[h.payout_id] = time.perf_counter(), time.time() * 1000
        produce_bounded(producer, LEDGER_COMMANDS.name, value, LEDGER_COMMANDS.key_of(message))
        producer.poll(0)
    producer.flush(60)
    run.produced_s = time.perf_counter() - start


def read_state(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_bytes()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_state(path: Path, what: str, check: Any, timeout_s: float, procs: list[subprocess.Popen[bytes]]) -> bool:
    """Poll the payouts service's state file (saved every 2 s) until ``check(state)`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(path)
        if state and check(state):
            return True
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a worker died while waiting for {what}")
        time.sleep(0.2)
    console.print(f"[red]the payouts service's state never showed {what} within {timeout_s:.0f} s[/red]")
    return False


def ready(holders: list[Holder]) -> Any:
    def check(state: dict[str, Any]) -> bool:
        accounts, balances = state["book"]["accounts"], state["mirror"]["balances"]
        return all(
            h.account in accounts
            and accounts[h.account]["kyc"] == "VERIFIED"
            and len(accounts[h.account]["rules"]) == 1
            and balances.get(h.account) == FUNDING_UNITS
            for h in holders
        )

    return check


def settled(holders: list[Holder]) -> Any:
    """Every holder's balance in the service's mirror back at keep-minimum and nothing in flight."""

    def check(state: dict[str, Any]) -> bool:
        accounts, balances = state["book"]["accounts"], state["mirror"]["balances"]
        return all(
            balances.get(h.account) == KEEP_MINIMUM_UNITS and accounts[h.account]["in_flight"] is None for h in holders
        )

    return check


def wait_results(observer: Observer, run: Run, timeout_s: float, procs: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(h.payout_id in observer.results for h in run.holders):
            return True
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker died during the run")
        time.sleep(0.05)
    return False


def latencies(run: Run, observer: Observer) -> dict[str, Any]:
    """Per payout: deposit -> PAID arrival, request record -> PAID arrival (ms), with its rail."""
    rows = []
    for h in run.holders:
        got = observer.results.get(h.payout_id)
        if not got or h.payout_id not in run.sent_perf:
            continue
        perf, wall_ms, value = got[0]
        requested = observer.requests.get(h.payout_id)
        from_request = wall_ms - requested[0][0] if requested else float("nan")
        rows.append((value.get("rail") or "?", (perf - run.sent_perf[h.payout_id]) * 1000, from_request))
    last = max((observer.results[h.payout_id][0][0] for h in run.holders if h.payout_id in observer.results),
               default=run.started)  # fmt: skip
    elapsed = last - run.started
    return {
        "rows": rows,
        "per_s": len(rows) / elapsed if elapsed > 0 else float("nan"),
        "offered_per_s": len(run.holders) / run.produced_s if run.produced_s else float("nan"),
    }


def hops(run: Run, observer: Observer) -> dict[str, list[float]]:
    """Per hop of ``HOPS``, the ms each paid payout spent in it."""
    out: dict[str, list[float]] = defaultdict(list)
    stamps = dict(observer.stamps)  # the observer thread adds to it
    for h in run.holders:
        at = {
            "deposit": run.sent_wall_ms.get(h.payout_id),
            LEDGER_TRANSFERS.name: stamps.get((LEDGER_TRANSFERS.name, h.push_id)),
            **{k: stamps.get((k, h.payout_id)) for _, _, k in HOPS[1:]},
        }
        for name, start, end in HOPS:
            a, b = at.get(start), at.get(end)
            if a is not None and b is not None:
                out[name].append(b - a)
    return out


def bridge_phases(run: Run, observer: Observer) -> str:
    """The bridge's own phase durations of the run's payouts (its results' phase_durations_ms), p50/p99 ms."""
    by_phase: dict[str, list[float]] = defaultdict(list)
    for h in run.holders:
        value = observer.bridge.get(h.payout_id)
        if value is not None:
            for phase, took_ms in value["phase_durations_ms"].items():
                by_phase[phase].append(took_ms)
            by_phase["bridge total"].append(value["total_duration_ms"])
    return ", ".join(f"{k} {pct(v, 0.5):.0f}/{pct(v, 0.99):.0f}" for k, v in by_phase.items())


def exactly_once(run: Run, observer: Observer, sim: ProviderSimProcess) -> dict[str, int]:
    """Counts of payouts that were paid once, with the exact amounts, against every check."""
    keys = Counter(p["idempotency_key"] for p in sim.payouts())
    by_key = {p["idempotency_key"]: p for p in sim.payouts()}
    checks: Counter[str] = Counter()
    for h in run.holders:
        results = observer.results.get(h.payout_id, [])
        statuses = [v["status"] for _, _, v in results]
        checks["one PAID result"] += statuses == ["PAID"]
        checks["one payouts.requests record"] += len(observer.requests.get(h.payout_id, [])) == 1
        checks["no wait"] += h.payout_id not in observer.waits
        tx = bridge_tx_id_for(h.payout_id)
        mine = [k for k in (tx, uuid_for_key(tx)) if k in keys]  # Wise's idempotency field is a UUID of it
        checks["one provider payout per idempotency key"] += len(mine) == 1 and keys[mine[0]] == 1
        if results and len(mine) == 1:
            value = results[0][2]
            checks["exact K-AUS debited"] += value.get("kaus_debited_units") == PAYOUT_UNITS
            checks["provider paid the result's fiat"] += by_key[mine[0]]["amount_minor"] == value["amount_minor"]
    return dict(checks)


def figures(run: Run, observer: Observer, cpu: dict[str, float], rss_mb: float) -> dict[str, Any]:
    lat = latencies(run, observer)
    deposit_ms = [r[1] for r in lat["rows"]]
    request_ms = [r[2] for r in lat["rows"]]
    return {
        "name": run.name,
        "paid": len(deposit_ms),
        "of": len(run.holders),
        "per_s": lat["per_s"],
        "offered_per_s": lat["offered_per_s"],
        "deposit_ms": [pct(deposit_ms, q) for q in (0.5, 0.95, 0.99)] + [max(deposit_ms, default=float("nan"))],
        "request_ms": [pct(request_ms, q) for q in (0.5, 0.95, 0.99)] + [max(request_ms, default=float("nan"))],
        "cpu": cpu,
        "rss_mb": rss_mb,
        "rows": lat["rows"],
        "hops": hops(run, observer),
        "phases": bridge_phases(run, observer),
        "load": run.load,
        "paced": run.rate > 0,
    }


@dataclass
class Stack:
    broker: LocalKafka
    sim: ProviderSimProcess
    data: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stop_fx: threading.Event = field(default_factory=threading.Event)

    @property
    def state_path(self) -> Path:
        return state_path(self.data / "payouts")

    def start(self, transport: str) -> None:
        with console.status("starting broker and provider simulator…"):
            self.broker.start(timeout_s=90)
            self.sim.start()
        ensure_topics(Settings(kafka_bootstrap_servers=self.broker.bootstrap))
        threading.Thread(target=self._fx_feed, daemon=True).start()
        ports = find_free_ports(6)
        base = dict(
            os.environ,
            NEXUS_KAFKA_BOOTSTRAP_SERVERS=self.broker.bootstrap,
            NEXUS_PROVIDER_SIM_URL=self.sim.url,
            NEXUS_PROVIDER_KEYS_DIR=str(self.data / "keys"),
            NEXUS_PROVIDER_TRANSPORT=transport,
            PYTHONUNBUFFERED="1",
        )
        tag = uuid.uuid4().hex[:6]
        plan = [("ledger", "streams.p2p", {"NEXUS_AGENTS": "settlement"}), ("bridge", "streams.bridge.loop", {}),
                ("payouts", "streams.payouts", {})]  # fmt: skip
        for i, (name, module, extra) in enumerate(plan):
            (self.data / name).mkdir(parents=True, exist_ok=True)
            env = dict(
                base,
                NEXUS_APP_ID=f"bpe-{tag}-{name}",
                NEXUS_DATA_DIR=str(self.data / name),
                NEXUS_WORKER_WEB_PORT=str(ports[2 * i]),
                NEXUS_METRICS_PORT=str(ports[2 * i + 1]),
                **extra,
            )
            with console.status(f"starting {module}…"):
                self.procs[name] = start_worker(module, env, self.data / name / "worker.log")

    def _fx_feed(self) -> None:
        producer = Producer(producer_config(self.broker.bootstrap))
        while not self.stop_fx.is_set():
            for q in fx_quotes(FX_DAY, 0, datetime.now(UTC)):
                producer.produce(FX_RATES.name, key=FX_RATES.key_of(q), value=FX_RATES.encode(q))
            producer.flush(5)
            self.stop_fx.wait(0.5)

    def stop(self) -> None:
        self.stop_fx.set()
        stop_workers(list(self.procs.values()))
        self.sim.stop()
        self.broker.stop()
        self.broker.wipe()


def one_run(stack: Stack, producer: Producer, observer: Observer, run: Run, args: argparse.Namespace) -> dict[str, Any]:
    procs = list(stack.procs.values())
    with console.status(f"{run.name}: {len(run.holders)} holders verified, with rules, funded…"):
        set_up(producer, run)
        if not wait_state(stack.state_path, "every holder ready", ready(run.holders), args.timeout_s, procs):
            raise RuntimeError(f"{run.name}: the holders were not ready")
    pids = {name: p.pid for name, p in stack.procs.items()} | {"simulator": stack.sim.pid, "broker": stack.broker.pid}
    cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
    load_before = os.getloadavg()[0]
    with console.status(f"{run.name}: {len(run.holders)} deposits over the threshold, waiting for the payouts…"):
        push(producer, run, run.rate)
        complete = wait_results(observer, run, args.timeout_s, procs)
    run.load = (load_before, os.getloadavg()[0])
    paid = max(1, sum(h.payout_id in observer.results for h in run.holders))
    cpu = {name: 1000 * (cpu_s(pid) - cpu_before[name]) / paid for name, pid in pids.items()}
    if not complete:
        console.print(f"[red]{run.name}: not every payout had a result within {args.timeout_s:.0f} s[/red]")
    s = figures(run, observer, cpu, peak_rss_mb(stack.procs["payouts"].pid))
    with console.status(f"{run.name}: waiting for the service to see every capture…"):
        wait_state(stack.state_path, "every holder at keep-minimum", settled(run.holders), 60, procs)
    time.sleep(1)  # a second result for a payout would be here by now (the service reports within a tick)
    s["checks"] = exactly_once(run, observer, stack.sim)
    balances = read_state(stack.state_path).get("mirror", {}).get("balances", {})
    at_keep = sum(balances.get(h.account) == KEEP_MINIMUM_UNITS for h in run.holders)
    s["checks"]["left at keep-minimum (service's mirror)"] = at_keep
    failing = [f"{k} {v}/{len(run.holders)}" for k, v in s["checks"].items() if v != len(run.holders)]
    verdict = "every payout paid exactly once" if not failing else f"[red]FAILING: {', '.join(failing)}[/red]"
    console.print(f"{run.name}: {s['paid']}/{s['of']} paid, {s['per_s']:.1f} payouts/s; {verdict}")
    return s


def ms(values: list[float]) -> list[str]:
    return [f"{v:.1f}" for v in values]


def summary_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Auto-payouts end to end through Kafka, ms ({os.cpu_count()} cores, all local)")
    table.add_column("run")
    for col in ("paid", "offered/s", "payouts/s", "deposit→ p50", "p95", "p99", "max",
                "request→ p50", "p95", "p99", "max", "load 1m"):  # fmt: skip
        table.add_column(col, justify="right")
    for s in runs:
        table.add_row(s["name"], f"{s['paid']}/{s['of']}", f"{s['offered_per_s']:,.1f}", f"{s['per_s']:,.1f}",
                      *ms(s["deposit_ms"]), *ms(s["request_ms"]), "{:.1f}→{:.1f}".format(*s["load"]))  # fmt: skip
    return table


def cost_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="CPU per payout (ms, all threads, during the timed part) and peak RSS of the payouts service")
    names = list(runs[0]["cpu"])
    table.add_column("run")
    for col in [*names, "payouts svc peak RSS"]:
        table.add_column(col, justify="right")
    for s in runs:
        table.add_row(s["name"], *(f"{s['cpu'][n]:.1f}" for n in names), f"{s['rss_mb']:.0f} MB")
    return table


def rail_table(s: dict[str, Any]) -> Table:
    by_rail: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for rail, from_deposit, from_request in s["rows"]:
        by_rail[rail].append((from_deposit, from_request))
    table = Table(title=f"{s['name']}: per rail (ms)")
    for col in ("rail", "n", "rail latency", "deposit→PAID p50", "p99", "request→PAID p50", "p99"):
        table.add_column(col, justify="right")
    for rail, rows in sorted(by_rail.items()):
        spec = RAILS[Rail(rail)].expected_latency_ms if rail in Rail.__members__ else float("nan")
        deposits, requests = [r[0] for r in rows], [r[1] for r in rows]
        table.add_row(rail, str(len(rows)), f"{spec:.0f}", *ms([pct(deposits, 0.5), pct(deposits, 0.99)]),
                      *ms([pct(requests, 0.5), pct(requests, 0.99)]))  # fmt: skip
    return table


def hops_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="Where the time goes: record timestamp to record timestamp, ms (p50 / p99), to the ms")
    table.add_column("hop")
    for s in runs:
        table.add_column(s["name"], justify="right")
    for name, _, _ in HOPS:
        table.add_row(name, *(f"{pct(s['hops'][name], 0.5):.0f} / {pct(s['hops'][name], 0.99):.0f}" for s in runs))
    return table


def checks_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="Paid exactly once (payouts passing each check)")
    table.add_column("check")
    for s in runs:
        table.add_column(s["name"], justify="right")
    for check in runs[0]["checks"]:
        table.add_row(check, *(f"{s['checks'].get(check, 0)}/{s['of']}" for s in runs))
    return table


def plan_of(args: argparse.Namespace) -> list[tuple[str, dict[str, dict[str, int]], int, float]]:
    """(name, the simulator's latencies, holders, deposits/s or 0 for all at once) of each run, in order."""
    return [
        ("warm-up", ZERO, args.warm, args.rate),
        (f"0 ms @ {args.rate:g}/s", ZERO, args.holders, args.rate),
        (f"0 ms, burst {args.burst}", ZERO, args.burst, 0.0),
        (f"spec @ {args.rate:g}/s", SPEC, args.holders, args.rate),
        (f"spec, burst {args.burst}", SPEC, args.burst, 0.0),
    ]


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # SIGTERM (e.g. timeout(1)) unwinds like Ctrl-C, so the finally below stops the workers, simulator and broker.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holders", type=int, default=200, help="holders (payouts) of each paced run")
    parser.add_argument("--rate", type=float, default=10, help="deposits/s of the paced runs")
    parser.add_argument("--burst", type=int, default=200, help="holders of each all-at-once run (0: none)")
    parser.add_argument("--warm", type=int, default=20, help="holders paid out first, zero latency, not reported")
    parser.add_argument("--timeout-s", type=float, default=180, help="per wait (holders ready, results)")
    parser.add_argument("--transport", default="lean", choices=["lean", "httpx", "aiohttp"])
    args = parser.parse_args()

    port, controller, sim_port = find_free_ports(3)
    data = Path(tempfile.mkdtemp(prefix="bench-payouts-"))
    broker = LocalKafka(port=port, controller_port=controller, data_dir=data / "kafka")
    sim = ProviderSimProcess(port=sim_port, state_dir=data / "sim", env={"NEXUS_PROVIDER_KEYS_DIR": str(data / "keys")})
    stack = Stack(broker, sim, data)
    try:
        stack.start(args.transport)
        producer = Producer(producer_config(broker.bootstrap))
        observer = Observer(broker.bootstrap)
        observer.start()
        tag = uuid.uuid4().hex[:6]
        runs = []
        for index, (name, latencies_ms, n, rate) in enumerate(plan_of(args)):
            if n <= 0:
                continue
            sim.configure(latencies_ms)
            s = one_run(stack, producer, observer, Run(name, make_holders(tag, index, n), rate=rate), args)
            if name != "warm-up":
                runs.append(s)
        observer.stop.set()
        if runs:
            console.print(summary_table(runs))
            for s in runs:
                if s["paced"]:
                    console.print(rail_table(s))
            console.print(hops_table(runs))
            for s in runs:
                console.print(f"  {s['name']}: the bridge's phases p50/p99 ms: {s['phases']}")
            console.print(cost_table(runs))
            console.print(checks_table(runs))
        console.print(LEGEND)
        console.print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, transport {args.transport}; logs in {data}")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
