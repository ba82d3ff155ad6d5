"""The status read model's SQLite store (streams/status/store.py): what the API's reads cost at size, and how fast
the service writes.

    python bench/bench_status_store.py [--rows 1000000] [--owners 2000] [--reads 20000]

(1) writes: N card payments requested, then 90% of them completed and 5% failed, in batches of the service's
    default size (one transaction with its offsets each), in records/s; (2) ``get`` of random ids; (3) ``history``
    as a merchant (first page, and a page deep in its history through the cursor), as a merchant with a status and
    currency filter, and as an analyst (no owner) with a status filter and with a created-at window; each with
    p50/p95/p99 in µs, on a read-only store as the API opens it. Peak RSS of the process and the file's size.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import pct

from domain.settlement_status import Details, Kind, Observation, State
from streams.status.store import Input, StatusStore

console = Console()
T0 = datetime(2026, 11, 1, tzinfo=UTC)
BATCH = 2_000  # StatusSettings.batch_records_max
CURRENCIES = ("USD", "EUR", "KRW", "JPY", "AUD")


def requests(n: int, owners: int) -> list[Observation]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        at = T0 + timedelta(seconds=i)  # ~11.6 days of card payments at 1/s
        out.append(
            Observation(
                f"card-{i:09d}",
                Kind.BRIDGE,
                State.PENDING,
                at,
                Details(
                    owner_id=f"merchant-{rng.randrange(owners)}",
                    payer_account_id=f"acct-{rng.randrange(n // 10 + 1)}",
                    currency=rng.choice(CURRENCIES),
                    amount_minor=rng.randrange(100, 100_000),
                ),
                requested_at=at,
            )
        )
    return out


def answers(reqs: list[Observation]) -> list[Observation]:
    rng = random.Random(2)
    out = []
    for r in reqs:
        roll = rng.random()
        if roll < 0.90:
            details = Details(
                kaus_units=rng.randrange(1, 10**12), rail="SEPA", provider_reference="po", bridge_tx_id="B"
            )
            out.append(Observation(r.id, r.kind, State.COMPLETED, r.at + timedelta(seconds=1), details))
        elif roll < 0.95:
            out.append(
                Observation(
                    r.id, r.kind, State.FAILED, r.at + timedelta(seconds=1), phase="BALANCE_LOCK", reason_code="X"
                )
            )
    return out


def write(store: StatusStore, topic: str, observations: list[Observation], start: int) -> float:
    began = time.perf_counter()
    for b in range(0, len(observations), BATCH):
        chunk = observations[b : b + BATCH]
        store.apply_batch([Input(topic, 0, start + b + k, 0, obs) for k, obs in enumerate(chunk)])
    return len(observations) / (time.perf_counter() - began)


def timed(n: int, call: Callable[[int], Any]) -> list[float]:
    samples = []
    for i in range(n):
        began = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - began) / 1000)
    return samples


def deep_cursor(store: StatusStore, owner: str, pages: int) -> str | None:
    cursor = None
    for _ in range(pages):
        _page, cursor = store.history(owner, cursor=cursor)
        if cursor is None:
            break
    return cursor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--owners", type=int, default=2_000)
    parser.add_argument("--reads", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "status.sqlite3"
        writer = StatusStore(path)
        reqs = requests(args.rows, args.owners)
        insert_rate = write(writer, "bridge.requests", reqs, 0)
        final = answers(reqs)
        update_rate = write(writer, "bridge.settlements.completed", final, 0)
        writer.close()
        del final
        size_mib = path.stat().st_size / 2**20
        console.print(f"{args.rows:,} rows; writes: requests {insert_rate:,.0f} records/s (new rows), "
                      f"answers {update_rate:,.0f} records/s (updates); file {size_mib:,.0f} MiB")  # fmt: skip

        store = StatusStore(path, readonly=True)
        rng = random.Random(3)
        ids = [reqs[rng.randrange(args.rows)].id for _ in range(args.reads)]
        owners = [f"merchant-{rng.randrange(args.owners)}" for _ in range(args.reads)]
        del reqs
        analyst_reads = max(1, args.reads // 20)
        deep = {o: deep_cursor(store, o, 10) for o in set(owners[:analyst_reads])}
        day = [T0 + timedelta(days=rng.randrange(10)) for _ in range(analyst_reads)]
        cases: list[tuple[str, int, Callable[[int], Any]]] = [
            ("get(id)", args.reads, lambda i: store.get(ids[i])),
            ("history(merchant) page 1", args.reads, lambda i: store.history(owners[i])),
            ("history(merchant) page 11", analyst_reads, lambda i: store.history(owners[i], cursor=deep[owners[i]])),
            (
                "history(merchant, FAILED, EUR)",
                args.reads,
                lambda i: store.history(owners[i], state="FAILED", currency="EUR"),
            ),
            ("history(analyst, FAILED)", analyst_reads, lambda i: store.history(None, state="FAILED")),
            (  # ~86,400 rows in a day at this rate, each page sorts them: few calls
                "history(analyst, one day)",
                min(analyst_reads, 50),
                lambda i: store.history(None, created_from=day[i], created_to=day[i] + timedelta(days=1)),
            ),
        ]
        table = Table(title=f"status store reads ({args.rows:,} rows, {args.owners:,} merchants, read-only store)")
        for column in ("read", "calls", "reads/s", "p50 µs", "p95 µs", "p99 µs"):
            table.add_column(column, justify="right")
        for name, n, call in cases:
            call(0)  # warm
            samples = timed(n, call)
            rate = n / (sum(samples) / 1e6)
            table.add_row(name, f"{n:,}", f"{rate:,.0f}", *(f"{pct(samples, q):,.0f}" for q in (0.5, 0.95, 0.99)))
        console.print(table)
        store.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS of this process: {peak_mb:,.0f} MB (the rows' observations are built in memory first)")


if __name__ == "__main__":
    main()
