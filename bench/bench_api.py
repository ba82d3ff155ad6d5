"""The settlement API over HTTP: POST /api/settlement/bridge (zero rail latency) and GET /api/settlement/status.

    python bench/bench_api.py [--posts 3000] [--gets 10000] [--concurrency 32] [--payers 2000]

Everything runs on this machine: a fresh local Kafka broker, the provider simulator at zero rail latency, the
plain ledger and bridge loops, an FX feed every 0.5 s, the status read model (``python -m streams.status``) and
the API (``python -m streams.api``, one uvicorn process), each its own process; this process is the client
(aiohttp, ``--concurrency`` requests in flight, each POST with its own Idempotency-Key and a payer of its own
among ``--payers``, so no payment waits for the payer's previous one). A POST's time is the whole round trip: the
request validated, produced (acks=all) and its settlement awaited (200) or the wait given up (202). A warm-up of
``--warm`` POSTs first; ``--wait-s 0`` times the API's own part (every POST a 202 once produced). Prints
requests/s, p50/p95/p99, the answers by status, and the API's peak RSS and CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
from confluent_kafka import Producer

from bench.measure import cpu_s, pct, peak_rss_mb
from bench.workers import start_worker, stop_workers
from contracts import models as m
from contracts.topics import FX_RATES, LEDGER_COMMANDS
from devtools.fx_feed import domain_quotes, fx_quotes
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.fx import FxBook
from domain.money import Currency
from domain.rails import Rail
from infra.kafka.broker import LocalKafka, find_free_ports
from streams.api.auth import Clients
from streams.kafka.clients import producer_config
from streams.kafka.topic_admin import ensure_topics
from streams.settings import Settings

FX_DAY = date(2026, 10, 30)
MERCHANT = "merchant-bench"


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def quoted_rate() -> Decimal:
    now = time.time_ns() // 1_000_000
    return FxBook().with_quotes(domain_quotes(FX_DAY, 0, now)).combined_rate(Currency.USD, now).rate


async def run_requests(
    n: int, concurrency: int, make: Any, session: aiohttp.ClientSession
) -> tuple[list[float], Counter[int], float]:
    """``n`` requests, ``concurrency`` at a time; their latencies (ms), statuses and the wall time (s)."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            method, url, kwargs = make(i)
            started = time.perf_counter()
            async with session.request(method, url, **kwargs) as response:
                await response.read()
                statuses[response.status] += 1
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - began


def report(name: str, latencies: list[float], statuses: Counter[int], wall_s: float) -> None:
    print(
        f"{name:<34} {len(latencies) / wall_s:>8.0f} req/s   p50 {pct(latencies, 0.5):6.1f} ms   "
        f"p95 {pct(latencies, 0.95):6.1f} ms   p99 {pct(latencies, 0.99):6.1f} ms   statuses {dict(statuses)}"
    )


async def bench(url: str, secret: str, args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        form = {"grant_type": "client_credentials"}
        basic = "Basic " + base64.b64encode(f"bench:{secret}".encode()).decode()
        async with session.post(f"{url}/oauth/token", data=form, headers={"Authorization": basic}) as r:
            token = (await r.json())["access_token"]
        rate, tag = str(quoted_rate()), uuid.uuid4().hex[:6]
        ids: list[str] = []

        def post(prefix: str) -> Any:
            def make(i: int) -> tuple[str, str, dict[str, Any]]:
                key = f"{prefix}-{tag}-{i}"
                ids.append(key)
                body = {
                    "payer_account_id": f"acct-bench-{i % args.payers}",
                    "merchant_id": MERCHANT,
                    "amount_minor": 100 + i % 900,
                    "currency": "USD",
                    "region": "US",
                    "payer_tier": "GOLD",
                    "quoted_rate": rate,
                }
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
                return "POST", f"{url}/api/settlement/bridge", {"json": body, "headers": headers}

            return make

        await run_requests(args.warm, args.concurrency, post("warm"), session)
        ids.clear()
        report(
            f"POST /bridge (wait {args.wait_s} s)",
            *await run_requests(args.posts, args.concurrency, post("p"), session),
        )
        await asyncio.sleep(3)  # the read model catches up with the last settlements
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(7)

        def get(_: int) -> tuple[str, str, dict[str, Any]]:
            return "GET", f"{url}/api/settlement/status/{rng.choice(ids)}", {"headers": headers}

        report("GET /status", *await run_requests(args.gets, args.concurrency, get, session))


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--gets", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--payers", type=int, default=2000)
    parser.add_argument("--no-bridge", action="store_true", help="no ledger or bridge: the API and the broker alone")
    parser.add_argument("--wait-s", default="5", help="NEXUS_API_BRIDGE_WAIT_S (0: every POST answers 202 at once)")
    args = parser.parse_args()

    port, controller, sim_port, api_port = find_free_ports(4)
    data = Path(tempfile.mkdtemp(prefix="bench-api-"))
    broker = LocalKafka(port=port, controller_port=controller, data_dir=data / "kafka")
    keys = data / "keys"
    sim = ProviderSimProcess(port=sim_port, state_dir=data / "sim", env={"NEXUS_PROVIDER_KEYS_DIR": str(keys)})
    procs = []
    stop_fx = threading.Event()
    try:
        broker.start(timeout_s=90)
        sim.start()
        sim.configure({rail.value: {"latency_ms": 0} for rail in Rail})
        ensure_topics(Settings(kafka_bootstrap_servers=broker.bootstrap))
        producer = Producer(producer_config(broker.bootstrap))
        now = datetime.now(UTC)
        for i in range(args.payers):
            d = m.Deposit(command_id=f"dep-bench-{i}", account_id=f"acct-bench-{i}", amount_kaus_units=10**15,
                          occurred_at=now)  # fmt: skip
            producer.produce(LEDGER_COMMANDS.name, key=LEDGER_COMMANDS.key_of(d), value=LEDGER_COMMANDS.encode(d))
        producer.flush(30)

        def fx_feed() -> None:
            while not stop_fx.is_set():
                for q in fx_quotes(FX_DAY, 0, datetime.now(UTC)):
                    producer.produce(FX_RATES.name, key=FX_RATES.key_of(q), value=FX_RATES.encode(q))
                producer.flush(5)
                stop_fx.wait(0.5)

        threading.Thread(target=fx_feed, daemon=True).start()
        env = dict(
            os.environ, NEXUS_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, NEXUS_DATA_DIR=str(data),
            NEXUS_PROVIDER_SIM_URL=sim.url, NEXUS_PROVIDER_KEYS_DIR=str(keys), PYTHONUNBUFFERED="1",
            NEXUS_STATUS_LAG_EVERY_S="1", NEXUS_API_PORT=str(api_port), NEXUS_API_RATE_PER_S="100000",
            NEXUS_API_RATE_BURST="100000", NEXUS_API_BRIDGE_WAIT_S=args.wait_s,
        )  # fmt: skip
        roles = [] if args.no_bridge else [("ledger", "streams.p2p"), ("bridge", "streams.bridge.loop")]
        for name, module in [*roles, ("status", "streams.status")]:
            extra = {"NEXUS_AGENTS": "settlement"} if name == "ledger" else {}
            procs.append(start_worker(module, dict(env, NEXUS_APP_ID=f"bench-{name}", **extra), data / f"{name}.log"))
        secret = Clients(data / "api").add("bench", ("merchant",), MERCHANT)
        api = start_worker("streams.api", env, data / "api.log")
        procs.append(api)
        time.sleep(2)
        shared = "broker, simulator, " + ("" if args.no_bridge else "ledger, bridge, ") + "status service, API, client"
        print(f"{os.cpu_count()} CPUs shared by the {shared}")
        cpu_before = cpu_s(api.pid)
        began = time.perf_counter()
        asyncio.run(bench(f"http://127.0.0.1:{api_port}", secret, args))
        used = cpu_s(api.pid) - cpu_before
        requests = args.warm + args.posts + args.gets
        print(f"API process: peak RSS {peak_rss_mb(api.pid):.0f} MB, CPU {used:.1f} s over "
              f"{time.perf_counter() - began:.1f} s ({used / requests * 1000:.2f} ms per request)")  # fmt: skip
    finally:
        stop_fx.set()
        stop_workers(procs)
        sim.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
