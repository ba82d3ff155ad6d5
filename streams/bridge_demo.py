"""The High-Speed Bridge stage of `make run`: card payments settling against the provider simulator.

Runs the bridge core and provider adapters (`streams.providers.runner.BridgeRunner`) against the
local simulator with the spec's rail latencies, makes STRIPE_INSTANT fail three times so its
circuit breaker opens and US payments fail over, and publishes every result to the registry's
`bridge.settlements.completed` / `.failed` topics (the dashboard and the alerting agent read them).

Not yet the production path: the runner holds K-AUS in its own in-memory hold ledger rather than the
platform ledger behind `ledger.commands` (wiring the bridge into a Faust agent is the open part of
issue 4).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from rich.table import Table

from contracts import models as m
from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED
from domain.rails import RAILS, Rail
from streams.settings import Settings

PAYMENTS = 400
PAYMENTS_PER_S = 20
FAILING_RAIL = Rail.STRIPE_INSTANT


@dataclass
class BridgeDemo:
    settings: Settings
    sim_port: int
    results: Counter[str] = field(default_factory=Counter)
    by_rail: Counter[str] = field(default_factory=Counter)
    latest: list[str] = field(default_factory=list)
    error: str = ""
    _sim: Any = None
    _thread: threading.Thread | None = None

    def start(self) -> float:
        from infra.provider_sim.launcher import ProviderSimProcess

        self._sim = ProviderSimProcess(port=self.sim_port, state_dir=self.settings.data_dir / "provider_sim")
        ready_s = float(self._sim.start())
        # Spec §2.2 rail latencies; the failing rail answers 503 three times, then recovers.
        self._sim.configure({rail.value: {"latency_ms": spec.expected_latency_ms} for rail, spec in RAILS.items()})
        self._sim.configure(
            {FAILING_RAIL.value: {"latency_ms": RAILS[FAILING_RAIL].expected_latency_ms, "fail_next": 3}}
        )
        self._thread = threading.Thread(target=self._run, name="bridge-demo", daemon=True)
        self._thread.start()
        return ready_s

    def _run(self) -> None:
        try:
            asyncio.run(self._settle_payments())
        except Exception as exc:  # shown in the panel; the rest of the demo goes on
            self.error = f"{type(exc).__name__}: {exc}"

    async def _settle_payments(self) -> None:
        from domain.fx import FxBook
        from streams.fx_feed import domain_quotes
        from streams.providers import build_adapters
        from streams.providers.base import ProviderSettings, make_transport
        from streams.providers.flow import card_payments
        from streams.providers.runner import BridgeRunner, InMemoryHoldLedger, to_contract

        provider_settings = ProviderSettings(sim_url=f"http://127.0.0.1:{self.sim_port}")
        transport = make_transport("aiohttp", provider_settings.max_connections)
        now_ms = time.time_ns() // 1_000_000
        payments = card_payments(PAYMENTS, seed=now_ms % 10_000, now_ms=now_ms, payers=50, prefix="demo-card")
        ledger = InMemoryHoldLedger(journal=Path(self.settings.data_dir) / "provider_sim" / "demo-ledger.jsonl")
        for payer in sorted({p.payer_account_id for p in payments}):
            ledger.deposit(f"seed:{payer}", payer, 1_000_000 * 1_000_000)
        runner = BridgeRunner(
            ledger=ledger,
            adapters=build_adapters(provider_settings, transport),
            fx_book=lambda: FxBook().with_quotes(domain_quotes(m_day(), 0, time.time_ns() // 1_000_000)),
        )
        producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers, "linger.ms": 5})
        futures = []
        for payment in payments:
            futures.append(await runner.submit(payment))
            await asyncio.sleep(1 / PAYMENTS_PER_S)
            self._collect(futures, producer, to_contract)
        while futures:
            await asyncio.sleep(0.2)
            self._collect(futures, producer, to_contract)
        producer.flush(10)
        await transport.aclose()

    def _collect(self, futures: list[Any], producer: Producer, to_contract: Any) -> None:
        for future in [f for f in futures if f.done()]:
            futures.remove(future)
            if future.exception() is not None:
                self.results["parked"] += 1
                continue
            record = to_contract(future.result())
            topic = (
                BRIDGE_SETTLEMENTS_COMPLETED
                if isinstance(record, m.BridgeSettlementCompleted)
                else (BRIDGE_SETTLEMENTS_FAILED)
            )
            producer.produce(topic.name, key=topic.key_of(record), value=topic.encode(record))
            if isinstance(record, m.BridgeSettlementCompleted):
                self.results["settled"] += 1
                self.by_rail[f"{record.region}→{record.rail}"] += 1
                phases = " ".join(
                    f"{p.value.split('_')[0].lower()} {ms}" for p, ms in record.phase_durations_ms.items()
                )
                line = (
                    f"{record.request_id} {record.amount_minor} {record.currency} via {record.rail}: "
                    f"{record.total_duration_ms} ms ({phases})"
                )
            else:
                self.results["failed"] += 1
                line = f"{record.request_id} failed in {record.failed_phase}: {record.reason_code}"
            self.latest = [*self.latest[-3:], line]
        producer.poll(0)

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
        for line in self.latest:
            table.add_row("latest", line)
        return table

    def stop(self) -> None:
        if self._sim is not None:
            self._sim.stop()


def m_day() -> Any:
    from datetime import date

    return date(2026, 10, 30)  # the ECB day the seeded payments were quoted on (streams.providers.flow)
