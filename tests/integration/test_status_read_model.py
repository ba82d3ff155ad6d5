"""The status read model (``python -m streams.status``) on the session broker, fed by a real bridge worker (the plain
ledger and bridge loops against the provider simulator).

Checked here: card payments are PENDING from their request (owned by their merchant), then COMPLETED with the
settlement's figures or FAILED with the phase and reason; a repeated answer changes nothing; a holder's payout
waits, is requested and is paid (kind PAYOUT, owned by the holder). A status service SIGKILLed while card payments
settle resumes from its file's positions: every record of every input partition applied exactly once, every
status right. Its file deleted, it rebuilds the same statuses from the topics, under a new generation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.examples import build
from contracts.topics import (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    PAYOUT_REQUESTS,
    PAYOUT_WAITING,
)
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.rails import Provider
from streams.status.store import StatusRecord, StatusStore
from tests.integration.provider_fixtures import provider_sim, sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_bridge_kafka import FUNDS_UNITS, deposit, fx_feed, request, values  # noqa: F401  (fixture)
from tests.integration.test_bridge_payouts import UNITS, payout_request
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

MERCHANT = "merchant-cafe-9"  # test_bridge_kafka.request's
APPEND_ONLY = (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    PAYOUT_REQUESTS,
    PAYOUT_WAITING,
)


def start_status(worker_factory: Any, db_path: Path) -> WorkerProcess:
    proc: WorkerProcess = worker_factory(
        module="streams.status", status_db_path=str(db_path), status_batch_wait_ms="50", status_lag_every_s="0.5"
    )
    return proc


def start_bridge(worker_factory: Any, sim: ProviderSimProcess, keys: Path) -> None:
    worker_factory(module="streams.p2p", agents="settlement")
    worker_factory(
        module="streams.bridge.loop",
        provider_sim_url=sim.url,
        provider_keys_dir=str(keys),
        provider_transport="aiohttp",
    )


def wait_until(
    store: StatusStore, ids: set[str], done: Callable[[dict[str, StatusRecord]], bool], timeout_s: float = 90
) -> dict[str, StatusRecord]:
    deadline = time.monotonic() + timeout_s
    found: dict[str, StatusRecord] = {}
    while time.monotonic() < deadline:
        found = {i: r for i in ids if (r := store.get(i)) is not None}
        if found.keys() == ids and done(found):
            return found
        time.sleep(0.2)
    states = {i: r.state for i, r in found.items()}
    raise AssertionError(f"timed out; {len(found)}/{len(ids)} rows: {dict(list(states.items())[:10])}")


def caught_up(store: StatusStore, timeout_s: float = 60) -> None:
    """The service has applied everything on its inputs (lag 0, measured after now)."""
    since = datetime.now(UTC)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = store.freshness()
        if fresh.lag == 0 and fresh.lag_checked_at is not None and fresh.lag_checked_at > since:
            return
        time.sleep(0.2)
    raise AssertionError(f"not caught up: {store.freshness()}")


def final(rows: dict[str, StatusRecord]) -> bool:
    return all(r.state in ("COMPLETED", "FAILED") for r in rows.values())


def test_card_payments_and_payouts_move_forward_in_the_store(
    kafka: KafkaIO,
    sim: ProviderSimProcess,
    sim_keys_dir: Path,
    run_id: str,
    fx_feed: None,
    worker_factory: Any,
    tmp_path: Path,
) -> None:
    rich, poor = f"acct-st-rich-{run_id}", f"acct-st-poor-{run_id}"
    deposit(kafka, rich, FUNDS_UNITS)
    deposit(kafka, poor, 1_000_000)
    db_path = tmp_path / "status.sqlite3"
    start_status(worker_factory, db_path)
    store = StatusStore(db_path, readonly=True)
    ok = [f"card-st-ok-{run_id}-{i}" for i in range(3)]
    broke = f"card-st-broke-{run_id}"
    kafka.produce_messages(BRIDGE_REQUESTS, [*(request(r, rich, amount_minor=500) for r in ok), request(broke, poor)])
    # no bridge yet: requested, pending, owned by the merchant
    pending = wait_until(store, {*ok, broke}, lambda rows: True)
    assert {(r.state, r.kind, r.owner_id, r.currency) for r in pending.values()} == {
        ("PENDING", "BRIDGE", MERCHANT, "USD")
    }
    assert pending[ok[0]].amount_minor == 500 and pending[ok[0]].payer_account_id == rich

    start_bridge(worker_factory, sim, sim_keys_dir)
    rows = wait_until(store, {*ok, broke}, final)
    for r in ok:
        assert (rows[r].state, rows[r].rail, rows[r].owner_id) == ("COMPLETED", "STRIPE_INSTANT", MERCHANT)
        assert rows[r].kaus_units and rows[r].provider_reference and rows[r].bridge_tx_id
        assert rows[r].seq == pending[r].seq and rows[r].created_at == pending[r].created_at
    failed = rows[broke]
    assert (failed.state, failed.phase, failed.reason_code) == ("FAILED", "BALANCE_LOCK", "INSUFFICIENT_FUNDS")
    assert failed.owner_id == MERCHANT and failed.reason  # the owner from the request: a failure names none

    # a duplicate request: the bridge answers again with repeat true; the status does not move
    kafka.produce_messages(BRIDGE_REQUESTS, [request(ok[0], rich, amount_minor=500)])
    kafka.wait_for(
        BRIDGE_SETTLEMENTS_COMPLETED,
        lambda rs: sum(v.get("request_id") == ok[0] for v in values(rs)) == 2,
    )
    caught_up(store)
    assert store.get(ok[0]) == rows[ok[0]]

    # a holder's payout as the auto-payout service sends it (it waits for KYC, then goes out through the bridge)
    payout_id = f"rule-st-{run_id}:t1"
    kafka.produce_messages(
        PAYOUT_WAITING,
        [build(m.PayoutWaiting, payout_id=payout_id, account_id=rich, rule_id=None, waiting_since=datetime.now(UTC))],
    )
    [waiting] = wait_until(store, {payout_id}, lambda rows: True).values()
    assert (waiting.kind, waiting.state, waiting.owner_id, waiting.reason_code) == (
        "PAYOUT",
        "WAITING",
        rich,
        "KYC_PENDING",
    )
    sent = payout_request(payout_id, rich, Provider.PAYPAL, f"{rich}@example.com")
    payout = build(
        m.PayoutRequest,
        payout_id=payout_id,
        account_id=rich,
        rule_id=None,
        provider="PAYPAL",
        amount_kaus_units=UNITS,
        requested_at=sent.requested_at,
    )
    kafka.produce_messages(PAYOUT_REQUESTS, [payout])
    kafka.produce_messages(BRIDGE_REQUESTS, [sent])
    [paid] = wait_until(store, {payout_id}, final).values()
    assert (paid.kind, paid.state, paid.seq, paid.created_at) == ("PAYOUT", "COMPLETED", waiting.seq, sent.requested_at)
    assert (paid.owner_id, paid.rail, paid.kaus_units, paid.reason_code) == (rich, "PAYPAL", UNITS, None)
    page, _ = store.history(rich, kind="PAYOUT")
    assert [r.id for r in page] == [payout_id]
    merchant_page, _ = store.history(
        MERCHANT, kind="BRIDGE", limit=500, created_from=pending[ok[0]].created_at - timedelta(minutes=5)
    )
    assert {r.id for r in merchant_page} >= {*ok, broke} and payout_id not in {r.id for r in merchant_page}
    store.close()


def without_seq(record: StatusRecord) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(record).items() if k != "seq"}


def test_sigkill_resumes_exactly_and_a_lost_file_is_rebuilt_the_same(
    kafka: KafkaIO,
    sim: ProviderSimProcess,
    sim_keys_dir: Path,
    run_id: str,
    fx_feed: None,
    worker_factory: Any,
    tmp_path: Path,
) -> None:
    payer = f"acct-st-kill-{run_id}"
    deposit(kafka, payer, FUNDS_UNITS)
    db_path = tmp_path / "status.sqlite3"
    service = start_status(worker_factory, db_path)
    store = StatusStore(db_path, readonly=True)
    start_bridge(worker_factory, sim, sim_keys_dir)
    ids = [f"card-st-kill-{run_id}-{i:03d}" for i in range(300)]
    kafka.produce_messages(BRIDGE_REQUESTS, [request(r, payer, amount_minor=100) for r in ids])
    # mid-stream: some settled in the store, not all
    wait_until(store, set(ids), lambda rows: True, timeout_s=60)
    deadline = time.monotonic() + 60
    while sum(r.state == "COMPLETED" for i in ids if (r := store.get(i))) < 30:
        assert time.monotonic() < deadline, "nothing settles"
        time.sleep(0.05)
    service.kill()
    settled_at_kill = sum(r.state == "COMPLETED" for i in ids if (r := store.get(i)))
    service.start()

    rows = wait_until(store, set(ids), final)
    caught_up(store)
    assert all(r.state == "COMPLETED" and r.owner_id == MERCHANT for r in rows.values())
    assert len({r.seq for r in rows.values()}) == len(ids)
    # exactly once: every record of an append-only input counted once, however often it was delivered
    read = store.records_read()
    for topic in APPEND_ONLY:
        for (name, partition), (next_offset, records) in read.items():
            if name == topic.name:
                assert records == next_offset, (name, partition, next_offset, records)
    assert settled_at_kill < len(ids), "killed after the last settlement: not mid-stream"

    before = {r.id: without_seq(r) for r in _all(store)}
    generation = store.freshness().generation
    service.stop()
    for leftover in tmp_path.glob("status.sqlite3*"):
        leftover.unlink()
    service.start()
    caught_up(store)
    rebuilt = {r.id: without_seq(r) for r in _all(store)}
    assert rebuilt == before
    assert store.freshness().generation != generation
    store.close()


def _all(store: StatusStore) -> list[StatusRecord]:
    records, cursor = [], None
    while True:
        page, cursor = store.history(None, cursor=cursor, limit=500)
        records += page
        if cursor is None:
            return records
