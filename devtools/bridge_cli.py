"""The bridge runner on its own, without Kafka: a journaled stand-in ledger, a file intent store, real adapters.

    python -m devtools.bridge_cli --state-dir DIR --requests REQS.jsonl [--sim-url URL]

Used by the SIGKILL recovery test of the runner (tests/integration/test_provider_adapters.py) and by hand:
settles every request, resumes intents a killed run left open, and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from contracts import models as m
from contracts.bridge_codec import payment_from_request
from devtools.bridge_stand_ins import FileIntentStore, InMemoryHoldLedger
from devtools.fx_feed import domain_quotes
from domain.bridge import CardPayment, Rejected, Result, Settled
from domain.fx import FxBook
from streams.bridge.providers import build_adapters
from streams.bridge.providers.base import ProviderSettings, make_transport
from streams.bridge.runner import BridgeRunner, PayoutParked


def load_requests(path: Path) -> list[CardPayment]:
    return [
        payment_from_request(m.BridgeRequest.model_validate_json(line))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def summary_of(
    runner: BridgeRunner, ledger: InMemoryHoldLedger, recovered: list[Result], results: list[Result]
) -> dict[str, Any]:
    every = [*recovered, *results]
    return {
        "event": "finished",
        "recovered": [r.request_id for r in recovered],
        "completed": sorted({r.request_id for r in every if isinstance(r, Settled)}),
        "failed": sorted({r.request_id for r in every if isinstance(r, Rejected)}),
        "parked": [i.bridge_tx_id for i in runner.parked],
        "pending_holds": ledger.pending_holds(),
        "balances": ledger.balances,
    }


async def settle_all(args: Any) -> dict[str, Any]:
    state = Path(args.state_dir)
    payments = load_requests(Path(args.requests))
    ledger = InMemoryHoldLedger(journal=state / "ledger.jsonl")
    for payer in sorted({p.payer_account_id for p in payments}):
        ledger.deposit(f"seed:{payer}", payer, args.seed_units)
    store = FileIntentStore(state / "intents.jsonl", fsync=not args.no_fsync)
    settings = ProviderSettings(**({"sim_url": args.sim_url} if args.sim_url else {}))
    transport = make_transport(args.transport or settings.transport, settings.max_connections, settings.ca_file)
    adapters = build_adapters(settings, transport)
    day = date.fromisoformat(args.fx_day)

    def book() -> FxBook:
        return FxBook().with_quotes(domain_quotes(day, 0, time.time_ns() // 1_000_000))

    runner = BridgeRunner(ledger=ledger, adapters=adapters, fx_book=book, store=store, max_in_flight=args.concurrency)
    print(json.dumps({"event": "started", "pid": os.getpid(), "open_intents": len(store.open_intents())}), flush=True)
    recovered = await runner.recover()
    futures = [await runner.submit(p) for p in payments]
    results: list[Result] = []
    for f in futures:
        with contextlib.suppress(PayoutParked):
            results.append(await f)
    await store.aclose()
    await transport.aclose()
    summary = summary_of(runner, ledger, recovered, results)
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bridge_cli", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--requests", required=True, help="JSON lines of bridge.requests messages")
    parser.add_argument("--sim-url", default="")
    parser.add_argument(
        "--transport",
        default="",
        choices=["", "lean", "httpx", "aiohttp"],
        help="default: NEXUS_PROVIDER_TRANSPORT (lean)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed-units", type=int, default=1_000_000 * 1_000_000)
    parser.add_argument("--fx-day", default="2026-10-30")
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(settle_all(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
