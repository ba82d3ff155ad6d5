"""`make run`: start the platform locally and stream demo traffic through it, with live progress.

    python -m devtools.demo [--duration SECONDS] [--rate ORDERS_PER_S] [--runtime faust|plain] [--stop]

Starts (unless NEXUS_KAFKA_BOOTSTRAP_SERVERS points at a cluster) the local Kafka broker, creates the
registry topics, starts the workers as child processes (``--runtime faust``: every agent in one Faust
worker; ``plain``: the P2P services and the bridge on plain confluent-kafka loops, alerting in Faust),
then produces seeded traffic — deposits, energy orders (with a few deliberately bad messages) — and shows
what comes out. Ctrl-C (or the end of --duration) stops everything it started; `--stop` cleans up after a
demo that was killed. NEXUS_LOCAL_SCHEMA_REGISTRY=true also starts a local schema registry (infra/schema_registry)
holding contracts/schemas, for producers whose Confluent JSON Schema serializers fetch or register schemas there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from contracts import models as m
from contracts.topics import (
    BRIDGE_SETTLEMENTS_COMPLETED,
    ENERGY_ORDER_EVENTS,
    ENERGY_ORDERS,
    ENERGY_PRICES,
    ENERGY_SETTLEMENTS,
    ENERGY_TRADES,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    PLATFORM_DEADLETTERS,
    TOPICS,
)
from devtools.alert_sink import summarize
from devtools.alerting_demo import MonitoringStack, incident, stop_monitoring
from devtools.api_demo import ApiDemo
from devtools.api_demo import prepare_environment as prepare_api_environment
from devtools.bridge_demo import BridgeDemo
from devtools.governed_demo import GovernedDemo
from devtools.order_flow import demo_accounts, demo_markets, generate_orders
from devtools.payouts_demo import PayoutsDemo, approval_rule_id
from devtools.payouts_demo import prepare_environment as prepare_payouts_environment
from devtools.provider_sim.launcher import ProviderSimProcess
from devtools.recon_demo import TodaysReconciliation
from devtools.security_demo import SecurityDemo
from devtools.security_demo import prepare_environment as prepare_security_environment
from devtools.standby_demo import StandbyRegion, stop_standby
from domain.money import kaus_to_decimal
from infra.http_serving import url_host
from infra.kafka.broker import LocalKafka, ensure_jars
from infra.prometheus.launcher import LocalPrometheus, PrometheusError, Target
from infra.schema_registry.registry import LocalSchemaRegistry, SchemaRegistryError, register_schemas
from streams.kafka.topic_admin import ensure_topics
from streams.p2p.matching import to_message
from streams.settings import Settings, get_settings

RUN_DIR_NAME = "run"
WATCHED = (
    ENERGY_ORDER_EVENTS,
    ENERGY_TRADES,
    ENERGY_SETTLEMENTS,
    ENERGY_PRICES,
    LEDGER_TRANSFERS,
    PLATFORM_DEADLETTERS,
)
BAD_EVERY = 500  # one deliberately bad message per this many orders, to show dead-lettering
DEPOSIT_KAUS_UNITS = 1_000_000 * 1_000_000  # 1,000,000 K-AUS per demo account


MOVES_MONEY = (m.TransferKind.POSTED, m.TransferKind.POST_PENDING)  # holds reserve; voids release


def run_dir(settings: Settings) -> Path:
    path = settings.data_dir / RUN_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------ processes


@dataclass
class Worker:
    """One worker process of the demo: a runtime module and the agents (roles) it runs."""

    settings: Settings
    name: str = "worker"
    module: str = "streams.worker"
    agents: str = ""  # NEXUS_AGENTS for it; empty = all of that runtime's roles
    ready_mark: str = "Worker ready"  # what its log says once it serves
    metrics_port: int = 0  # its /metrics and /healthz (NEXUS_METRICS_PORT; 0 = served nowhere)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return run_dir(self.settings) / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return run_dir(self.settings) / f"{self.name}.pid"

    def start(self, timeout_s: float = 90.0) -> float:
        started = time.monotonic()
        env = dict(os.environ, NEXUS_KAFKA_BOOTSTRAP_SERVERS=self.settings.bootstrap_servers, PYTHONUNBUFFERED="1")
        env["NEXUS_AGENTS"] = self.agents
        env["NEXUS_METRICS_PORT"] = str(self.metrics_port)  # each process its own (one port serves one process)
        # The bridge agent pays out through the demo's provider simulator.
        sim_host = url_host(self.settings.provider_sim_host)
        env.setdefault("NEXUS_PROVIDER_SIM_URL", f"http://{sim_host}:{self.settings.provider_sim_port}")
        env.setdefault("NEXUS_PROVIDER_TRANSPORT", "aiohttp")
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.pid_path.write_text(str(self.proc.pid))
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.name} worker exited ({self.proc.returncode}); see {self.log_path}")
            if self.ready_mark in self.log_path.read_text(errors="replace"):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"the {self.name} worker was not ready after {timeout_s:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        stop_pid_file(self.pid_path)


# Per runtime, the demo's worker processes: (name, module, NEXUS_AGENTS). faust: every agent in one Faust
# worker. plain: the P2P services (streams.p2p) and the bridge (streams.bridge.loop) on plain
# confluent-kafka loops, the alerting agent in Faust (docs/performance.md).
# Money out runs on plain loops under either runtime: the auto-payout service, the holder notifier and the KYC
# webhook receiver (one implementation each: none is a throughput path).
MONEY_OUT: tuple[tuple[str, str, str], ...] = (
    ("payouts", "streams.payouts", ""),
    ("notifier", "streams.notifications", ""),
    ("kyc", "streams.kyc", ""),
)
# The security layer (issue 18), plain loops under either runtime: the key manager first (it creates the dev HSM
# token and the keys the audit log signs with), then the audit log and the governance service.
SECURITY: tuple[tuple[str, str, str], ...] = (
    ("keys", "streams.security.keys", ""),
    ("audit", "streams.security.audit_log", ""),
    ("governance", "streams.security.governance", ""),
)
# The settlement API (issue 19) and the status read model it reads, plain processes under either runtime: the status
# service first; both inherit the demo's NEXUS_DATA_DIR and NEXUS_APP_ID, so they share the read model's file.
API: tuple[tuple[str, str, str], ...] = (
    ("status", "streams.status", ""),
    ("api", "streams.api", ""),
)
RUNTIMES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "faust": (*SECURITY, ("worker", "streams.worker", ""), *MONEY_OUT, *API),
    "plain": (
        *SECURITY,
        ("p2p", "streams.p2p", "matching,settlement"),
        ("bridge", "streams.bridge.loop", ""),
        ("worker", "streams.worker", "alerting"),
        *MONEY_OUT,
        *API,
    ),
}
READY_MARKS = {"keys": "key manager running on token"}  # the key manager is not a worker: it logs this instead
# The processes that serve /metrics and /healthz (streams/ops; the key manager, the KYC receiver and the API do not).
METRICS_SERVED = frozenset({"p2p", "bridge", "worker", "payouts", "notifier", "audit", "governance", "status"})


def metrics_ports(settings: Settings, runtime: str) -> dict[str, int]:
    """Each process serving metrics gets a port of its own: NEXUS_METRICS_PORT, then the ports after it, in the
    runtime's order (by default the audit log's on 9464, the governance service's on 9465, ...)."""
    served = [name for name, _, _ in RUNTIMES[runtime] if name in METRICS_SERVED]
    return {name: settings.metrics_port + i for i, name in enumerate(served)}


def workers_for(settings: Settings, runtime: str) -> list[Worker]:
    ports = metrics_ports(settings, runtime)
    return [
        Worker(settings, name, module, agents, READY_MARKS.get(name, "Worker ready"), ports.get(name, 0))
        for name, module, agents in RUNTIMES[runtime]
    ]


def stop_pid_file(pid_path: Path, timeout_s: float = 20.0) -> bool:
    """SIGTERM the process group recorded in pid_path, SIGKILL after timeout_s. True if one was running."""
    if not pid_path.exists():
        return False
    pid = int(pid_path.read_text().strip() or 0)
    pid_path.unlink(missing_ok=True)
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # our own child exits as a zombie, "running" until reaped
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def local_broker(settings: Settings) -> LocalKafka:
    """The local broker, its data under NEXUS_DATA_DIR (by default .local/kafka/data-<port>, as the broker's own)."""
    data_dir = settings.data_dir / "kafka" / f"data-{settings.kafka_port}"
    return LocalKafka(port=settings.kafka_port, controller_port=settings.kafka_controller_port, data_dir=data_dir)


def stop_everything(settings: Settings, console: Console) -> None:
    for name in sorted({name for workers in RUNTIMES.values() for name, _, _ in workers}):
        if stop_pid_file(run_dir(settings) / f"{name}.pid"):
            console.print(f"stopped the {name} worker")
    if LocalPrometheus(settings=settings).stop():
        console.print("stopped Prometheus")
    stop_monitoring(settings, console)
    if ProviderSimProcess(port=settings.provider_sim_port, state_dir=settings.data_dir / "provider_sim").stop():
        console.print("stopped the provider simulator")
    if LocalSchemaRegistry().stop():
        console.print("stopped the schema registry")
    if settings.local_kafka:
        for what in stop_standby(settings):
            console.print(f"stopped {what}")
        broker = local_broker(settings)
        if broker.is_running():
            broker.stop()
            console.print(f"stopped the Kafka broker on {broker.bootstrap}")


# ------------------------------------------------------------------------ traffic


def deposits(accounts: list[str], now: datetime) -> Iterator[m.Deposit]:
    for account in accounts:
        yield m.Deposit(
            command_id=f"demo-deposit:{account}",
            account_id=account,
            amount_kaus_units=DEPOSIT_KAUS_UNITS,
            occurred_at=now,
        )


BAD_MESSAGES: list[tuple[bytes, bytes]] = [
    (b"2026-11-24T10:00Z/KR-SEOUL", b'{"type": "SUBMIT", "order_id": '),  # truncated JSON
    (
        b"2026-11-24T10:00Z/KR-SEOUL",
        b'{"type": "SUBMIT", "order_id": "bad-1", "market_id": "2026-11-24T10:00Z/KR-SEOUL",'
        b' "account_id": "a", "side": "BUY", "order_type": "LIMIT", "price_units_per_kwh": 1.5e2,'
        b' "quantity_wh": 100, "submitted_at": "2026-11-24T09:00:00Z"}',
    ),  # float price
    (b"", b'{"type": "CANCEL"}'),  # empty key
]
# 3 MB of order, sent once by a producer that gzips its batches: the broker checks only the compressed size, ingress
# dead-letters it as OVERSIZED with a bounded prefix, and the whole bytes land on platform.deadletters.payloads.
OVERSIZED_ORDER = (
    b"2026-11-24T10:00Z/KR-SEOUL",
    b'{"type": "SUBMIT", "order_id": "huge-1", "market_id": "2026-11-24T10:00Z/KR-SEOUL"' + b" " * 3_000_000 + b"}",
)


def produce_compressed(settings: Settings, key: bytes, value: bytes) -> None:
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap_servers, "compression.type": "gzip", "message.max.bytes": 8_000_000}
    )
    producer.produce(ENERGY_ORDERS.name, key=key, value=value)
    producer.flush(10)


@dataclass
class Traffic:
    rate_per_s: int
    produced: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, settings: Settings) -> None:
        producer = Producer(
            {"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5, "enable.idempotence": True}
        )
        seed = int(time.time())
        now = datetime.now(UTC)
        # Delivery hours six hours ahead, so the flow's logical clock starts about now: the ledger's clock is
        # the latest command time it has seen, and bridge holds (wall-clock expiry) must not look expired.
        first_delivery = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=6)
        markets = demo_markets(8, first_delivery=first_delivery.strftime("%Y-%m-%dT%H:%M"))
        accounts = demo_accounts(40)
        for deposit in deposits(accounts, now):
            producer.produce(
                LEDGER_COMMANDS.name, key=LEDGER_COMMANDS.key_of(deposit), value=LEDGER_COMMANDS.encode(deposit)
            )
            self.produced["deposits"] += 1
        producer.flush(10)
        produce_compressed(settings, *OVERSIZED_ORDER)
        self.produced["bad messages"] += 1
        interval_s = 1.0 / max(self.rate_per_s, 1)
        next_at = time.monotonic()
        for i, command in enumerate(generate_orders(seed, 10_000_000, markets, accounts)):
            if self.stop.is_set():
                break
            message = to_message(command)
            producer.produce(ENERGY_ORDERS.name, key=ENERGY_ORDERS.key_of(message), value=ENERGY_ORDERS.encode(message))
            self.produced["orders"] += 1
            if i % BAD_EVERY == BAD_EVERY - 1:
                key, value = BAD_MESSAGES[(i // BAD_EVERY) % len(BAD_MESSAGES)]
                producer.produce(ENERGY_ORDERS.name, key=key, value=value)
                self.produced["bad messages"] += 1
            producer.poll(0)
            next_at += interval_s
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.flush(10)


# ------------------------------------------------------------------------ what comes out


@dataclass
class Observed:
    counts: Counter[str] = field(default_factory=Counter)
    order_statuses: Counter[str] = field(default_factory=Counter)  # energy.orders.events by status
    prices: dict[str, m.MarketPrice] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_letters: dict[str, m.DeadLetter] = field(default_factory=dict)  # the latest per reason code
    settle_us: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, settings: Settings) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": f"demo-{os.getpid()}",
                "enable.auto.commit": False,
            }
        )
        assignments = []
        for topic in WATCHED:
            meta = consumer.list_topics(topic.name, timeout=10).topics[topic.name]
            assignments += [TopicPartition(topic.name, p, OFFSET_END) for p in meta.partitions]
        consumer.assign(assignments)
        while not self.stop.is_set():
            for msg in consumer.consume(500, timeout=0.2):
                name, raw = msg.topic(), msg.value()
                if msg.error() or name is None or raw is None:
                    continue
                topic = TOPICS[name]
                value = topic.decode(raw)
                self.counts[topic.name] += 1
                if topic is ENERGY_PRICES:
                    self.prices[value.market_id] = value
                elif topic is ENERGY_ORDER_EVENTS:
                    self.order_statuses[value.status] += 1
                elif topic is LEDGER_TRANSFERS and value.kind in MOVES_MONEY and value.asset == "KAUS":
                    self.balances[value.debit_account_id] -= value.amount_units
                    self.balances[value.credit_account_id] += value.amount_units
                elif topic is PLATFORM_DEADLETTERS:
                    self.dead_letters.pop(value.reason_code, None)
                    self.dead_letters[value.reason_code] = value
                elif topic is ENERGY_SETTLEMENTS:
                    self.settle_us.append(sum(value.phase_durations_us.values()))
        consumer.close()

    def render(self, traffic: Traffic, elapsed_s: float, *extra: Any) -> Group:
        flow = Table(title=f"Flow after {elapsed_s:,.0f}s", show_header=True)
        flow.add_column("stream")
        flow.add_column("messages", justify="right")
        flow.add_column("per second", justify="right")
        rows = [
            ("deposits produced", traffic.produced["deposits"]),
            ("orders produced", traffic.produced["orders"]),
            ("bad messages produced", traffic.produced["bad messages"]),
            *((f"→ {t.name}", self.counts[t.name]) for t in WATCHED),
            *((f"   {status}", count) for status, count in sorted(self.order_statuses.items())),
        ]
        for name, count in rows:
            flow.add_row(name, f"{count:,}", f"{count / max(elapsed_s, 0.001):,.0f}")
        prices = Table(title="Prices (K-AUS per kWh)")
        for col in ("market", "bid kWh", "bid", "ask", "ask kWh", "last", "VWAP", "traded kWh"):
            prices.add_column(col, justify="right" if col != "market" else "left")
        for market_id in sorted(self.prices)[:8]:
            p = self.prices[market_id]
            fmt = lambda v: "—" if v is None else f"{kaus_to_decimal(v):.3f}"  # noqa: E731
            kwh = lambda wh: "—" if wh is None else f"{wh / 1000:,.1f}"  # noqa: E731
            prices.add_row(
                market_id,
                kwh(p.best_bid_quantity_wh),
                fmt(p.best_bid_units_per_kwh),
                fmt(p.best_ask_units_per_kwh),
                kwh(p.best_ask_quantity_wh),
                fmt(p.last_price_units_per_kwh),
                fmt(p.vwap_units_per_kwh),
                f"{p.traded_quantity_wh / 1000:,.1f}",
            )
        movers = Table(title="Balances moving (K-AUS, net since the demo started)")
        movers.add_column("account")
        movers.add_column("net change", justify="right")
        for account, delta in sorted(self.balances.items(), key=lambda kv: -abs(kv[1]))[:8]:
            movers.add_row(account, f"{kaus_to_decimal(delta):+,.6f}")
        letters = Table(title="Latest dead letters (the latest per reason)")
        letters.add_column("source")
        letters.add_column("code")
        letters.add_column("reason")
        for letter in list(self.dead_letters.values())[-5:]:
            letters.add_row(
                f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}",
                letter.reason_code,
                letter.reason[:90] + (f" (whole bytes: {letter.value_ref})" if letter.value_ref else ""),
            )
        return Group(flow, prices, movers, letters, *extra)


# ------------------------------------------------------------------------ Prometheus and the notifications

DEADMANSSWITCH_PATH = "/deadmansswitch"
TARGETS_CHECK_EVERY_S = 2.0


def with_deadmansswitch(settings: Settings) -> Settings:
    """The settings with the dead man's switch at the demo's sink (its port may not be the default's)."""
    sink = f"http://{url_host(settings.alert_sink_host)}:{settings.alert_sink_port}"
    return settings.model_copy(update={"alert_deadmansswitch_url": sink + DEADMANSSWITCH_PATH})


@dataclass
class Scraping:
    """The demo's Prometheus (infra/prometheus: every worker's /metrics and the platform alerts, scraped and evaluated
    every second, its alerts to the demo's Alertmanager) and what the live view shows of it."""

    prometheus: LocalPrometheus
    health: dict[str, str] = field(default_factory=dict)  # component -> "up" / "down" / "unknown"
    problem: str = ""
    checked_at: float = 0.0

    @classmethod
    def start(
        cls, settings: Settings, workers: list[Worker], alertmanager_url: str, console: Console, standby: bool
    ) -> Scraping | None:
        host = url_host(settings.metrics_host)
        targets = [Target(w.name, f"{host}:{w.metrics_port}") for w in workers if w.metrics_port]
        if standby:  # the replication delay (devtools/standby_demo.py serves it)
            targets.append(Target("replication-monitor", f"{host}:{settings.standby_monitor_port}"))
        prometheus = LocalPrometheus(targets=targets, alertmanager_url=alertmanager_url, settings=settings,
                                     interval="1s", resend_delay="1s")  # fmt: skip
        prometheus.stop()  # one left over by a killed demo
        try:
            took = prometheus.start()
        except PrometheusError as exc:
            console.print(f"[yellow]![/] no Prometheus: {exc}")
            return None
        console.print(
            f"[green]✓[/] Prometheus ready at {prometheus.url} in {took:.1f}s, scraping {len(targets)} workers"
        )
        return cls(prometheus)

    def stop(self) -> None:
        self.prometheus.stop()

    def refresh(self) -> None:
        """The targets' health from Prometheus's API (at most every ``TARGETS_CHECK_EVERY_S``)."""
        if time.monotonic() - self.checked_at < TARGETS_CHECK_EVERY_S:
            return
        self.checked_at = time.monotonic()
        try:
            url = f"{self.prometheus.url}/api/v1/targets?state=active"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                active = json.loads(response.read())["data"]["activeTargets"]
        except (OSError, ValueError, KeyError) as exc:
            self.problem = f"not answering: {exc}"
            return
        self.health = {t["labels"].get("component", "?"): t["health"] for t in active}
        self.problem = ""

    def targets_text(self) -> str:
        self.refresh()
        if self.problem:
            return f"[red]{self.problem}[/]"
        up = sorted(name for name, health in self.health.items() if health == "up")
        down = sorted(set(self.health) - set(up))
        text = f"{len(up)}/{len(self.health)} targets up"
        return text + (f"; [red]not up: {', '.join(down)}[/]" if down else f" ({', '.join(up)})")


def notifications_panel(monitoring: MonitoringStack, scraping: Scraping | None, last: int = 8) -> Table:
    """The latest notifications, the Watchdog aside (it is no alert: the dead man's switch hears it every minute
    while the alerting pipeline works), and Prometheus's targets."""
    table = Table(title=f"Notifications via Alertmanager (sink: {monitoring.sink.path.name})")
    table.add_column("received")
    table.add_column("notification")
    alerts: list[dict[str, Any]] = []
    watchdog: list[dict[str, Any]] = []
    for record in monitoring.sink.records():
        (watchdog if str(record.get("path", "")).startswith(DEADMANSSWITCH_PATH) else alerts).append(record)
    for record in alerts[-last:]:
        table.add_row(record["received_at"][11:19], summarize(record))
    if scraping is not None:
        table.add_row("Prometheus", scraping.targets_text())
        heard = "[yellow]not heard yet[/]"
        if watchdog:
            heard = f"watchdog ok ({len(watchdog)} heard, the last at {watchdog[-1]['received_at'][11:19]})"
        table.add_row("Watchdog", heard)
    return table


# ------------------------------------------------------------------------ alerting incident


def produce_alert_incident(settings: Settings) -> int:
    """The alerting demo's scripted incident, without its made-up completed settlement: today's reconciliation
    reads these topics, and a settlement no payment stands behind (no K-AUS moved, no payout) is a break there.
    Its SettlementDelay alert is inhibited while the incident's SettlementFailed pages anyway."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5})
    records = [(t, v) for t, v in incident(datetime.now(UTC)) if t is not BRIDGE_SETTLEMENTS_COMPLETED]
    for topic, message in records:
        producer.produce(topic.name, key=topic.key_of(message), value=topic.encode(message))
    remaining = producer.flush(15)
    assert remaining == 0, f"{remaining} incident records not delivered"
    return len(records)


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0 = until Ctrl-C)")
    parser.add_argument("--rate", type=int, default=500, help="orders per second to produce")
    parser.add_argument("--stop", action="store_true", help="stop what an earlier demo left running")
    parser.add_argument(
        "--runtime",
        choices=sorted(RUNTIMES),
        default=get_settings().runtime,
        help="faust: all agents in one Faust worker; plain: P2P and bridge on plain confluent-kafka loops",
    )
    return parser.parse_args(argv)


def threshold_payouts_answered(payouts: PayoutsDemo) -> Callable[[], bool]:
    """Whether each verified holder's THRESHOLD payout has its result: PayPal's, Wise's and the one above the limit
    (paid once the signers' approval is out of its timelock, which a pause meeting it would hold back). The
    KYC-pending holder's waits for its verification, long after."""
    due = {h.account_id for h in payouts.people if h.trigger == "THRESHOLD" and h.kyc == "VERIFIED"}
    return lambda: due <= {r.account_id for r in list(payouts.results.values())}


def start_kafka(settings: Settings, console: Console) -> None:
    """The local broker (unless a cluster is configured) and the registry topics."""
    if settings.local_kafka:
        with console.status("fetching Apache Kafka from Maven Central (cached after the first run)…"):
            ensure_jars()
        broker = local_broker(settings)
        with console.status(f"starting Kafka (KRaft) on {broker.bootstrap}…"):
            ready_s = broker.start(timeout_s=60, reuse=True)
        console.print(f"[green]✓[/] Kafka broker ready on {broker.bootstrap} in {ready_s:.1f}s")
    else:
        console.print(f"[green]✓[/] using the existing Kafka cluster at {settings.bootstrap_servers}")
    created = ensure_topics(settings)
    console.print(f"[green]✓[/] {len(TOPICS)} registry topics present ({len(created)} created)")


def start_standby(settings: Settings, console: Console) -> StandbyRegion | None:
    """With the local broker: a standby broker now, MirrorMaker 2 to it in the background (docs/disaster-recovery.md).
    An existing cluster has its own standby, or none: the demo does not make one."""
    if not settings.local_kafka:
        return None
    standby = StandbyRegion(settings)
    with console.status(f"starting the standby region's Kafka on {standby.broker.bootstrap}…"):
        ready_s = standby.start_broker()
    standby.start_mirror()
    console.print(
        f"[green]✓[/] standby Kafka ready on {standby.broker.bootstrap} in {ready_s:.1f}s; "
        "MirrorMaker 2 starting to mirror every topic to it"
    )
    return standby


def start_schema_registry(settings: Settings, console: Console) -> LocalSchemaRegistry | None:
    """With NEXUS_LOCAL_SCHEMA_REGISTRY=true, the local registry holding contracts/schemas, for producers' serializers
    (the workers never ask it: ingress accepts framed values without looking their schema id up)."""
    if not settings.local_schema_registry:
        return None
    registry = LocalSchemaRegistry()
    try:
        with console.status("starting the schema registry (fetched from Maven Central on the first run)…"):
            ready_s = registry.start(timeout_s=180, reuse=True)
            ids = register_schemas(registry.url)
    except SchemaRegistryError as exc:
        registry.stop()
        console.print(f"[yellow]![/] no schema registry: {exc}")
        return None
    console.print(f"[green]✓[/] schema registry ready at {registry.url} in {ready_s:.1f}s ({len(ids)} schemas)")
    return registry


def start_workers(workers: list[Worker], console: Console) -> None:
    for worker in workers:
        what = "Faust worker" if worker.module == "streams.worker" else f"{worker.name} worker ({worker.module})"
        with console.status(f"starting the {what}…"):
            ready_s = worker.start()
        console.print(f"[green]✓[/] {what} ready in {ready_s:.1f}s (log: {worker.log_path})")


class Demo:
    """Everything the demo starts, streams and stops, in that order."""

    def __init__(self, settings: Settings, console: Console, args: argparse.Namespace) -> None:
        self.settings, self.console, self.args = settings, console, args
        self.workers = workers_for(settings, args.runtime)
        self.traffic = Traffic(args.rate)
        self.observed = Observed()
        self.recon: TodaysReconciliation | None = None
        self.streamed = False
        self.monitoring: MonitoringStack | None = None
        self.bridge: BridgeDemo | None = None
        self.threads: list[threading.Thread] = []
        self.schema_registry: LocalSchemaRegistry | None = None
        self.payouts: PayoutsDemo | None = None
        self.security: SecurityDemo | None = None
        self.governed: GovernedDemo | None = None
        self.api: ApiDemo | None = None
        self.scraping: Scraping | None = None
        self.standby: StandbyRegion | None = None

    @property
    def bridge_log(self) -> Path:
        """The log of the process running the bridge (it says when it applies a governed parameter)."""
        names = {w.name: w for w in self.workers}
        return (names.get("bridge") or names["worker"]).log_path

    def start(self) -> None:
        settings, console = self.settings, self.console
        start_kafka(settings, console)
        self.standby = start_standby(settings, console)
        self.schema_registry = start_schema_registry(settings, console)
        # the workers inherit the demo's epochs and this run's dev-only KYC secrets
        prepare_payouts_environment(settings)
        prepare_security_environment(settings)
        prepare_api_environment()
        start_workers(self.workers, console)
        with console.status("starting Alertmanager, the notification sink and the dashboard…"):
            self.monitoring = MonitoringStack(with_deadmansswitch(settings), console).start()
        with console.status("starting Prometheus…"):
            self.scraping = Scraping.start(
                settings, self.workers, self.monitoring.alertmanager_url, console, standby=self.standby is not None
            )
        self.bridge = BridgeDemo(settings, settings.provider_sim_port)
        with console.status("starting the payout-provider simulator…"):
            sim_s = self.bridge.start()
        console.print(f"[green]✓[/] provider simulator ready in {sim_s:.1f}s; card payments start settling")
        self.recon = TodaysReconciliation(settings.data_dir / "recon", settings.bootstrap_servers, self.bridge.sim)
        self.payouts = PayoutsDemo(settings)
        self.payouts.start()
        console.print("[green]✓[/] holders, KYC and auto-payout rules sent; a dividend epoch closes every 2 minutes")
        self.governed = GovernedDemo(settings, self.bridge_log, approval_rule_id(self.payouts.tag), sim=self.bridge.sim)
        self.governed.start()
        console.print("[green]✓[/] governed operations started: GOLD cashback 300 -> 450 bps, a payout approval (4/5)")
        self.api = ApiDemo(settings, governed=self.governed, sim=self.bridge.sim)
        self.api.start()
        console.print(f"[green]✓[/] settlement API scene started against {self.api.url}")
        # The pause comes once the API's payments are sent and the threshold payouts (the approved one too) answered
        # (bounded): it would refuse them, PAUSED.
        pause_after = [self.api.payments_sent.is_set, threshold_payouts_answered(self.payouts)]
        self.security = SecurityDemo(settings, sim=self.bridge.sim, pause_after=pause_after)
        self.security.start()
        console.print("[green]✓[/] security scene started: a governed treasury transfer, a pause, a key rotation")
        incidents = produce_alert_incident(settings)
        console.print(f"[green]✓[/] produced a scripted incident ({incidents} events) so the alert rules fire")
        self.threads = [
            threading.Thread(target=self.observed.run, args=(settings,), daemon=True),
            threading.Thread(target=self.traffic.run, args=(settings,), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def stream(self) -> None:
        started = time.monotonic()
        self.streamed = True
        self.console.print(f"streaming ~{self.args.rate} orders/s — press Ctrl-C to stop")
        with Live(console=self.console, refresh_per_second=2) as live:
            while not self.args.duration or time.monotonic() - started < self.args.duration:
                extra = [notifications_panel(self.monitoring, self.scraping)] if self.monitoring is not None else []
                if self.bridge is not None:
                    extra.append(self.bridge.render())
                if self.payouts is not None:
                    extra.append(self.payouts.render())
                extra += self.scene_panels()
                if self.security is not None:
                    extra.append(self.security.render())
                if self.standby is not None:
                    extra.append(self.standby.render())
                if self.recon is not None:
                    extra.append(self.recon.render())
                view = self.observed.render(self.traffic, time.monotonic() - started, *extra)
                live.update(Panel(view, title="NEXUS-X demo"))
                time.sleep(0.5)

    def scene_panels(self) -> list[Table]:
        return [scene.render() for scene in (self.api, self.governed) if scene is not None]

    def show_scenes_at_end(self) -> None:
        """The API's, the governed operations' and the security scene's panels as they ended (they went on while the
        reconciliation ran)."""
        panels = [*self.scene_panels(), *([self.security.render()] if self.security is not None else [])]
        if self.streamed and panels:
            self.console.print(Panel(Group(*panels), title="NEXUS-X demo: the scenes as they ended"))

    def reconcile(self) -> None:
        """Stop the traffic, let the workers answer what was sent, then run the nightly steps for today while the
        platform still runs; the panel shows each step, then today's figures."""
        if self.recon is None:
            return
        recon = self.recon
        self.traffic.stop.set()
        if self.bridge is not None:
            self.bridge.stop_feed()
        # The auto-payout service pays on a clock (SCHEDULE rules): a payout begun after the snapshot would be in the
        # providers' reports and not in the snapshot (a false missing_internally). It stops first; what it already
        # sent is answered while the workers drain.
        for worker in self.workers:
            if worker.name == "payouts":
                worker.stop()
        self.console.print("reconciling today's traffic before stopping — Ctrl-C again to skip")
        with Live(console=self.console, refresh_per_second=2) as live:

            def show() -> None:
                live.update(Panel(recon.render(), title="NEXUS-X demo: the nightly reconciliation, run now"))

            recon.waiting = "the workers are answering the last orders and card payments…"
            show()
            quiet_after = self.drain(on_tick=show)
            recon.waiting = f"traffic answered ({quiet_after:.1f} s); starting"
            thread = threading.Thread(target=recon.run, name="reconciliation", daemon=True)
            thread.start()
            while not recon.done.wait(0.5):
                show()
            show()
        self.standby_caught_up()

    def standby_caught_up(self) -> None:
        """The standby region holds what the platform wrote (the workers still run: their offsets are synced)."""
        if self.standby is None:
            return
        with self.console.status("waiting for the standby region to catch up…"):
            self.standby.finish()
        mark = "[green]✓[/]" if self.standby.ok else "[yellow]![/]"
        self.console.print(f"{mark} standby region: {self.standby.state}")

    def _answered(self) -> tuple[int, ...]:
        """What the workers have written so far (not prices: those are published on a timer)."""
        counts = self.observed.counts
        written = tuple(
            counts[t.name] for t in (ENERGY_ORDER_EVENTS, ENERGY_TRADES, ENERGY_SETTLEMENTS, LEDGER_TRANSFERS)
        )
        return (*written, sum(self.bridge.results.values()) if self.bridge is not None else 0)

    def drain(self, quiet_s: float = 3.0, timeout_s: float = 60.0, on_tick: Any = None) -> float:
        """Wait until nothing new has come out for ``quiet_s`` (or ``timeout_s`` passed); returns the seconds waited."""
        started = time.monotonic()
        last, since = self._answered(), time.monotonic()
        while time.monotonic() - since < quiet_s and time.monotonic() - started < timeout_s:
            time.sleep(0.25)
            now = self._answered()
            if now != last:
                last, since = now, time.monotonic()
            if on_tick is not None:
                on_tick()
        return time.monotonic() - started

    def stop(self) -> None:
        self.traffic.stop.set()
        self.observed.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        with self.console.status("stopping…"):
            if self.payouts is not None:
                self.payouts.stop()
            for scene in (self.api, self.governed):
                if scene is not None:
                    scene.stop()
            if self.security is not None:
                self.security.stop()
            if self.scraping is not None:  # before the workers: their going is no NexusWorkerDown
                self.scraping.stop()
            if self.monitoring is not None:
                self.monitoring.stop()
            if self.bridge is not None:
                self.bridge.stop()
            for worker in self.workers:
                worker.stop()
            if self.schema_registry is not None:
                self.schema_registry.stop()
            if self.standby is not None:
                self.standby.stop()
            if self.settings.local_kafka:
                local_broker(self.settings).stop()
        self.console.print("[green]✓[/] stopped the worker" + (" and the broker" if self.settings.local_kafka else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    settings = get_settings()
    if args.stop:
        stop_everything(settings, console)
        return 0
    demo = Demo(settings, console, args)
    interrupted = False
    try:
        try:
            demo.start()
            demo.stream()
        except KeyboardInterrupt:
            interrupted = True
        if demo.streamed:
            demo.reconcile()
    except KeyboardInterrupt:
        console.print("[yellow]reconciliation skipped[/]")
        interrupted = True
    finally:
        demo.show_scenes_at_end()
        demo.stop()
    if demo.observed.counts[ENERGY_TRADES.name] == 0 and not interrupted:
        console.print(f"[red]no trades came out — see {', '.join(str(w.log_path) for w in demo.workers)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
