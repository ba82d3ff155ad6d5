"""The High-Speed Bridge stage of `make run`: card payments settling through the bridge agent.

Starts the payout-provider simulator (infra/provider_sim) with the spec's rail latencies and makes
STRIPE_INSTANT fail three times, so its circuit breaker opens and US payments fail over. Then it plays
the upstream systems: an FX feed (three sources, every second) on `fx.rates`, deposits for the demo
payers on `ledger.commands`, and card payments on `bridge.requests`. The worker's bridge agent settles
them against the platform ledger (holds and captures on `ledger.commands`) and publishes to
`bridge.settlements.completed` / `.failed`, which this stage, the dashboard and the alerting agent read.
A few seconds in, it sends the first payments again (same request ids, as a retrying upstream would): each gets
its original result back, from the bridge's result index, and the provider sees no second payout.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from rich.table import Table

from contracts import models as m
from contracts.topics import (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    FX_RATES,
    LEDGER_COMMANDS,
    TOPICS,
)
from domain.rails import RAILS, Rail
from streams.bridge.result_index import summary
from streams.kafka.clients import consumer_config, producer_config
from streams.settings import Settings

PAYMENTS = 400
PAYMENTS_PER_S = 20
DUPLICATES = 10  # the first payments, sent again once DUPLICATES_AFTER have been requested
DUPLICATES_AFTER = 60
FAILING_RAIL = Rail.STRIPE_INSTANT
REQUEST_PREFIX = "demo-card"
FX_DAY = date(2026, 10, 30)  # the ECB day the feed replays (devtools.card_flow quotes from it too)


@dataclass
class BridgeDemo:
    settings: Settings
    sim_port: int
    results: Counter[str] = field(default_factory=Counter)
    by_rail: Counter[str] = field(default_factory=Counter)
    latest: list[str] = field(default_factory=list)
    first_answers: dict[str, m.BridgeSettlementCompleted | m.BridgeSettlementFailed] = field(default_factory=dict)
    substitutions: Counter[str] = field(default_factory=Counter)  # "<primary>→<rail>: <reason>"
    payouts: int = 0
    index: str = ""
    error: str = ""
    stopping: threading.Event = field(default_factory=threading.Event)
    feed_stopped: threading.Event = field(default_factory=threading.Event)  # no more payments; answers still read
    _sim: Any = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> float:
        from devtools.provider_sim.launcher import ProviderSimProcess

        self._sim = ProviderSimProcess(port=self.sim_port, state_dir=self.settings.data_dir / "provider_sim")
        ready_s = float(self._sim.start())
        # Spec §2.2 rail latencies; the failing rail answers 503 three times, then recovers.
        self._sim.configure({rail.value: {"latency_ms": spec.expected_latency_ms} for rail, spec in RAILS.items()})
        self._sim.configure(
            {FAILING_RAIL.value: {"latency_ms": RAILS[FAILING_RAIL].expected_latency_ms, "fail_next": 3}}
        )
        for target in (self._feed, self._watch):
            thread = threading.Thread(
                target=self._guarded, args=(target,), name=f"bridge-{target.__name__}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return ready_s

    def _guarded(self, target: Any) -> None:
        try:
            target()
        except Exception as exc:  # shown in the panel; the rest of the demo goes on
            self.error = f"{type(exc).__name__}: {exc}"

    def _feed(self) -> None:
        """Upstream: FX quotes every second, deposits once, then card payments at PAYMENTS_PER_S."""
        from contracts.bridge_codec import request_from_payment
        from devtools.card_flow import card_payments
        from devtools.fx_feed import fx_quotes

        producer = Producer(producer_config(self.settings.bootstrap_servers))
        now_ms = time.time_ns() // 1_000_000
        payments = card_payments(PAYMENTS, seed=now_ms % 10_000, now_ms=now_ms, payers=50, prefix=REQUEST_PREFIX)
        at = datetime.now(UTC)
        for payer in sorted({p.payer_account_id for p in payments}):
            deposit = m.Deposit(
                command_id=f"demo-card-funds:{payer}",
                account_id=payer,
                amount_kaus_units=1_000_000 * 1_000_000,
                occurred_at=at,
            )
            producer.produce(
                LEDGER_COMMANDS.name, key=LEDGER_COMMANDS.key_of(deposit), value=LEDGER_COMMANDS.encode(deposit)
            )
        next_fx = 0.0
        for payment in payments:
            if self.stopping.is_set() or self.feed_stopped.is_set():
                break
            if time.monotonic() >= next_fx:
                for quote in fx_quotes(FX_DAY, 0, datetime.now(UTC)):
                    producer.produce(FX_RATES.name, key=FX_RATES.key_of(quote), value=FX_RATES.encode(quote))
                next_fx = time.monotonic() + 1.0
            request = request_from_payment(payment)
            producer.produce(
                BRIDGE_REQUESTS.name, key=BRIDGE_REQUESTS.key_of(request), value=BRIDGE_REQUESTS.encode(request)
            )
            self.results["requested"] += 1
            if self.results["requested"] == DUPLICATES_AFTER:  # a retrying upstream: the same request ids again
                for again in payments[:DUPLICATES]:
                    retry = request_from_payment(again)
                    producer.produce(
                        BRIDGE_REQUESTS.name, key=BRIDGE_REQUESTS.key_of(retry), value=BRIDGE_REQUESTS.encode(retry)
                    )
                    self.results["duplicates sent"] += 1
            producer.poll(0)
            self.feed_stopped.wait(1 / PAYMENTS_PER_S)
        producer.flush(10)

    def _watch(self) -> None:
        consumer = Consumer(consumer_config(self.settings.bootstrap_servers, f"demo-bridge-{os.getpid()}"))
        parts = []
        for topic in (BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED):
            meta = consumer.list_topics(topic.name, timeout=10).topics[topic.name]
            parts += [TopicPartition(topic.name, p, OFFSET_END) for p in meta.partitions]
        consumer.assign(parts)
        next_look = 0.0
        while not self.stopping.is_set():
            for msg in consumer.consume(500, timeout=0.2):
                raw = msg.value()
                if msg.error() or raw is None:
                    continue
                record = TOPICS[str(msg.topic())].decode(raw)
                if not record.request_id.startswith(REQUEST_PREFIX):
                    continue  # the alerting stage's scripted incident
                first = self.first_answers.get(record.request_id)
                if first is not None:  # a duplicate (or a re-delivered request) answered again
                    same = first == record.model_copy(update={"repeat": False})
                    marked = "marked repeat" if record.repeat else "unmarked (re-delivered)"
                    self.results[f"duplicates answered, {marked}" if same else "answers differing"] += 1
                    continue
                self.first_answers[record.request_id] = record
                self._show(record)
            if time.monotonic() >= next_look:  # what the provider and the bridge's result index say
                next_look = time.monotonic() + 2.0
                # the simulator busy or stopping (SimError is a RuntimeError): the figure stays as it was
                with contextlib.suppress(OSError, ValueError, RuntimeError):
                    self.payouts = len(self._sim.payouts()) if self._sim is not None else 0
                found = summary(self.settings.bridge_result_index_path)
                if found is not None:
                    count, checkpoints = found
                    marks = ", ".join(f"p{p}@{o}" for p, o in checkpoints.items())
                    self.index = f"{count} results on disk, journal checkpoints {marks or '—'}"
        consumer.close()

    def _show(self, record: m.BridgeSettlementCompleted | m.BridgeSettlementFailed) -> None:
        if isinstance(record, m.BridgeSettlementCompleted):
            self.results["settled"] += 1
            self.by_rail[f"{record.region}→{record.rail}"] += 1
            if record.rail_substitution_reason is not None:
                self.substitutions[f"{record.primary_rail}→{record.rail}: {record.rail_substitution_reason}"] += 1
            phases = " ".join(f"{p.value.split('_')[0].lower()} {ms}" for p, ms in record.phase_durations_ms.items())
            line = (
                f"{record.request_id} {record.amount_minor} {record.currency} via {record.rail}: "
                f"{record.total_duration_ms} ms ({phases})"
            )
        else:
            self.results["failed"] += 1
            line = f"{record.request_id} failed in {record.failed_phase}: {record.reason_code}"
        self.latest = [*self.latest[-3:], line]

    def render(self) -> Table:
        table = Table(
            title=f"High-Speed Bridge: card payments over the provider simulator "
            f"({FAILING_RAIL} fails 3× → breaker opens → failover)"
        )
        table.add_column("")
        table.add_column("")
        if self.error:
            table.add_row("error", self.error[:140])
        table.add_row("results", ", ".join(f"{k} {v}" for k, v in sorted(self.results.items())) or "starting…")
        us = {k: v for k, v in self.by_rail.items() if k.startswith("US")}
        table.add_row("US rails used", ", ".join(f"{k} {v}" for k, v in sorted(us.items())) or "—")
        subs = ", ".join(f"{k} ×{v}" for k, v in sorted(self.substitutions.items()))
        table.add_row("rail substitutions", subs or "—")
        table.add_row("provider payouts", f"{self.payouts} (the simulator's count, every 2 s; duplicates add none)")
        table.add_row("result index", self.index or "—")
        for line in self.latest:
            table.add_row("latest", line)
        return table

    @property
    def sim(self) -> Any:
        """The running ProviderSimProcess (its report APIs and statement files), None before start."""
        return self._sim

    def stop_feed(self) -> None:
        """No more card payments; the answers to those sent are still read."""
        self.feed_stopped.set()
        if self._threads:
            self._threads[0].join(timeout=10)

    def stop(self) -> None:
        self.stopping.set()
        self.feed_stopped.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self._sim is not None:
            self._sim.stop()
