"""The High-Speed Bridge on real Kafka, with the platform ledger and the provider simulator, in both runtimes
(Faust agents, or the plain confluent-kafka loops: ``streams.p2p`` ledger + ``streams.bridge.loop``).

Requests go to ``bridge.requests``; holds, captures, voids and rewards go through ``ledger.commands`` to the
ledger agent (the single writer); payout intents go to the compacted ``bridge.payouts.journal`` before the
provider is called. Checked here: a settlement moves K-AUS exactly (hold → capture → cashback), a failure
voids the hold in the platform ledger, a duplicate request gets the original result marked ``repeat`` without a
second payout, and a worker SIGKILLed between the provider's payout and its result pays exactly once after restart
(the recovered result is published once with repeat false). Every settlement on ``bridge.settlements.completed`` /
``.failed`` has exactly one audit record on ``audit.records`` (one audit id, written with each first answer, none
with a repeat), stating the settlement's figures. After each kill and restart, the reconciliation of the affected
window ties out (spec §9.2 step 4): each payment's capture and cashback equal its settlement, counted once.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    AUDIT_RECORDS,
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    FX_RATES,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    PLATFORM_DEADLETTERS,
)
from devtools.fx_feed import domain_quotes, fx_quotes
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.fx import FxBook
from domain.money import MINOR_UNIT_EXPONENT, Currency
from tests.integration.provider_fixtures import provider_sim, sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.support.kafka_io import KafkaIO, Record
from tests.support.recon_check import TieOut, reconcile_window

pytestmark = pytest.mark.slow

FX_DAY = date(2026, 10, 30)
FUNDS_UNITS = 10_000 * 1_000_000  # 10,000 K-AUS


@pytest.fixture
def fx_feed(kafka: KafkaIO) -> Iterator[None]:
    """Fresh quotes from the three sources every 0.5 s (the bridge rejects quotes older than 10 s)."""
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            kafka.produce_messages(FX_RATES, fx_quotes(FX_DAY, 0, datetime.now(UTC)))
            stop.wait(0.5)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


def quoted_rate(ccy: Currency) -> Decimal:
    now = time.time_ns() // 1_000_000
    return FxBook().with_quotes(domain_quotes(FX_DAY, 0, now)).combined_rate(ccy, now).rate


def request(request_id: str, payer: str, amount_minor: int = 15_000, quoted: Decimal | None = None) -> m.BridgeRequest:
    return m.BridgeRequest(
        request_id=request_id,
        payer_account_id=payer,
        merchant_id="merchant-cafe-9",
        amount_minor=amount_minor,
        currency=Currency.USD,
        region=m.Region.US,
        payer_tier=m.PayerTier.GOLD,
        quoted_rate=quoted if quoted is not None else quoted_rate(Currency.USD),
        requested_at=datetime.now(UTC),
    )


def deposit(kafka: KafkaIO, account: str, units: int) -> None:
    kafka.produce_messages(
        LEDGER_COMMANDS,
        [
            m.Deposit(
                command_id=f"dep-{account}", account_id=account, amount_kaus_units=units, occurred_at=datetime.now(UTC)
            )
        ],
    )


def values(records: list[Record]) -> list[dict[str, Any]]:
    """Records as JSON objects; the session broker is shared, and other tests put deliberately bad records (not
    JSON, or missing fields) on these topics: unreadable ones are skipped, fields are read with .get."""
    out = []
    for r in records:
        try:
            value = json.loads(r.value) if r.value else None
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def results_for(kafka: KafkaIO, request_ids: set[str], timeout_s: float = 60) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}

    def seen(_: list[Record]) -> bool:
        found.clear()
        for topic in (BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED):
            for v in values(kafka.read_all(topic)):
                if v.get("request_id") in request_ids:
                    found.setdefault(v["request_id"], []).append({"topic": topic.name, **v})
        return request_ids <= found.keys()

    kafka.wait_for(BRIDGE_SETTLEMENTS_COMPLETED, seen, timeout_s=timeout_s)
    return found


def assert_audited_once(kafka: KafkaIO, request_ids: set[str], timeout_s: float = 30) -> None:
    """Each request's settlement has exactly one audit record (one auditId; a record is written with each first
    answer, none with a repeat), whose figures are the settlement's."""
    answers: dict[str, list[dict[str, Any]]] = {}
    for topic in (BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED):
        for v in values(kafka.read_all(topic)):
            if v.get("request_id") in request_ids:
                answers.setdefault(v["request_id"], []).append({"topic": topic.name, **v})
    assert answers.keys() == request_ids, request_ids - answers.keys()
    tx_ids = {rs[0]["bridge_tx_id"]: request_id for request_id, rs in answers.items()}
    actions = ("BRIDGE_SETTLEMENT_COMPLETED", "BRIDGE_SETTLEMENT_FAILED")

    def of_settlements(records: list[Record]) -> list[dict[str, Any]]:
        return [a for a in values(records) if a.get("transactionId") in tx_ids and a.get("action") in actions]

    audits = of_settlements(
        kafka.wait_for(
            AUDIT_RECORDS, lambda rs: {a["transactionId"] for a in of_settlements(rs)} == tx_ids.keys(), timeout_s
        )
    )
    for tx_id, request_id in tx_ids.items():
        first = [a for a in answers[request_id] if not a["repeat"]]
        mine = [a for a in audits if a["transactionId"] == tx_id]
        assert len(mine) == len(first) >= 1, (request_id, mine, answers[request_id])
        [audit_id] = {a["auditId"] for a in mine}
        answer = first[0]
        completed = answer["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name
        assert audit_id == f"AUDIT:{tx_id}:{'completed' if completed else 'failed'}"
        a = mine[0]
        assert a["action"] == actions[not completed] and a["actor"]["userId"] == answer["payer_account_id"]
        d = a["details"]
        exponent = MINOR_UNIT_EXPONENT[Currency(answer["currency"])]
        assert (
            Decimal(d["fiatAmount"]).scaleb(exponent) == answer["amount_minor"] and d["currency"] == answer["currency"]
        )
        assert d["settlementRail"] == answer["rail"]
        at = datetime.fromisoformat(a["timestamp"])
        if completed:
            assert Decimal(d["kausAmount"]).scaleb(6) == answer["kaus_debited_units"]
            assert (
                Decimal(d["exchangeRate"]) == Decimal(answer["rate"]) and d["duration"] == answer["total_duration_ms"]
            )
            assert at == datetime.fromisoformat(answer["completed_at"])
        else:
            assert d["kausAmount"] is None and d["exchangeRate"] is None
            assert at == datetime.fromisoformat(answer["failed_at"])


def transfers_of(kafka: KafkaIO, account: str) -> list[dict[str, Any]]:
    return [
        v
        for v in values(kafka.read_all(LEDGER_TRANSFERS))
        if account in (v["debit_account_id"], v["credit_account_id"])
    ]


def balance(transfers: list[dict[str, Any]], account: str) -> int:
    """Posted K-AUS movements only: holds reserve, they do not move."""
    total = 0
    for t in transfers:
        if t["kind"] in ("POSTED", "POST_PENDING") and t["asset"] == "KAUS":
            total += t["amount_units"] * ((t["credit_account_id"] == account) - (t["debit_account_id"] == account))
    return total


def but_repeat(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer's figures: everything but the repeat marker (and the test's topic label)."""
    return {k: v for k, v in answer.items() if k not in ("repeat", "topic")}


def reconcile_since(kafka: KafkaIO, start: datetime, db_path: Path, payer: str, requests: set[str]) -> TieOut:
    """The reconciliation of the window since ``start`` for ``payer``'s card payments ties out exactly; each
    request's settlement counted once, however many answers (first, repeat) are on the topic."""
    tie = reconcile_window(kafka.bootstrap, start, datetime.now(UTC) + timedelta(minutes=1), db_path, accounts={payer})
    tie.assert_exact()
    answers = [v for v in values(kafka.read_all(BRIDGE_SETTLEMENTS_COMPLETED)) if v.get("request_id") in requests]
    first = {v["request_id"]: v for v in answers if not v["repeat"]}
    assert first.keys() == requests
    assert tie.settlements == len(requests) == tie.landed[BRIDGE_SETTLEMENTS_COMPLETED.name]
    assert tie.copies_dropped.get(BRIDGE_SETTLEMENTS_COMPLETED.name, 0) == len(answers) - len(requests)
    settled = sum(
        v["kaus_debited_units"] + v["cashback_kaus_units"] + v["ecosystem_bonus_kaus_units"] for v in first.values()
    )
    assert tie.settled_kaus_units == settled and tie.open_holds == 0
    return tie


def open_holds(transfers: list[dict[str, Any]]) -> set[str]:
    placed = {t["transfer_id"] for t in transfers if t["kind"] == "PENDING"}
    resolved = {t["pending_id"] for t in transfers if t["kind"] in ("POST_PENDING", "VOID_PENDING")}
    return placed - resolved


@pytest.fixture(params=["faust", "plain"])
def start_bridge(
    request: pytest.FixtureRequest, worker_factory: Any, sim: ProviderSimProcess, sim_keys_dir: Path
) -> Callable[..., Any]:
    """Starts the ledger and the bridge against the simulator, in each runtime. faust: both agents in one Faust
    worker; plain: the ledger in streams.p2p and the bridge in streams.bridge.loop, two processes (the
    bridge's is the one returned, the one a test kills)."""
    provider = {"provider_sim_url": sim.url, "provider_keys_dir": str(sim_keys_dir), "provider_transport": "aiohttp"}

    def start(**env: str) -> Any:
        if request.param == "faust":
            return worker_factory(agents="settlement,bridge", **provider, **env)
        worker_factory(module="streams.p2p", agents="settlement")
        return worker_factory(module="streams.bridge.loop", **provider, **env)

    return start


def test_settles_through_the_platform_ledger_fails_cleanly_and_answers_duplicates(
    kafka: KafkaIO, sim: ProviderSimProcess, run_id: str, fx_feed: None, start_bridge: Callable[..., Any]
) -> None:
    rich, poor = f"acct-rich-{run_id}", f"acct-poor-{run_id}"
    deposit(kafka, rich, FUNDS_UNITS)
    deposit(kafka, poor, 1_000_000)  # 1 K-AUS: far too little for 150 USD
    start_bridge()
    ok, broke, slipped = f"card-ok-{run_id}", f"card-broke-{run_id}", f"card-slip-{run_id}"
    # bad input first: a float amount is dead-lettered with its reason, and the agent keeps settling the rest
    bad = request(f"card-bad-{run_id}", rich).model_dump(mode="json") | {"amount_minor": 150.0}
    kafka.produce(BRIDGE_REQUESTS, rich.encode(), json.dumps(bad).encode())
    kafka.produce_messages(
        BRIDGE_REQUESTS,
        [
            request(ok, rich),
            request(broke, poor),
            # the payer saw a rate 1% better than the market's: slippage ≥ 0.3% after the hold → the hold is voided
            request(slipped, rich, quoted=(quoted_rate(Currency.USD) * Decimal("1.01")).quantize(Decimal("0.000001"))),
        ],
    )
    first = results_for(kafka, {ok, broke, slipped})
    kafka.produce_messages(BRIDGE_REQUESTS, [request(ok, rich)])  # a duplicate (same request id)
    kafka.wait_for(BRIDGE_SETTLEMENTS_COMPLETED, lambda rs: sum(v["request_id"] == ok for v in values(rs)) == 2)

    [settled] = first[ok]
    assert settled["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name and settled["rail"] == "STRIPE_INSTANT"
    assert (settled["primary_rail"], settled["rail_substitution_reason"]) == ("STRIPE_INSTANT", None)
    assert all(r["repeat"] is False for rs in first.values() for r in rs)  # first answers
    [failed] = first[broke]
    assert (failed["failed_phase"], failed["reason_code"]) == ("BALANCE_LOCK", "INSUFFICIENT_FUNDS")
    [slip] = first[slipped]
    assert (slip["failed_phase"], slip["reason_code"]) == ("FX_CONVERSION", "SLIPPAGE")

    [letter] = [
        d
        for d in (PLATFORM_DEADLETTERS.decode(r.value) for r in kafka.read_all(PLATFORM_DEADLETTERS) if r.value)
        if d.source_topic == BRIDGE_REQUESTS.name and f"card-bad-{run_id}".encode() in base64.b64decode(d.value_b64)
    ]
    assert letter.reason_code == "WRONG_TYPE" and "amount_minor" in letter.reason

    # the duplicate got the original result, marked as a repeat, and the merchant was paid once
    answers = [v for v in values(kafka.read_all(BRIDGE_SETTLEMENTS_COMPLETED)) if v["request_id"] == ok]
    assert len(answers) == 2 and but_repeat(answers[0]) == but_repeat(answers[1])
    assert [a["repeat"] for a in answers] == [False, True]
    assert len(sim.payouts()) == 1

    # the platform ledger: the payer paid exactly the settled K-AUS and got 3% (GOLD) back; nothing stays held
    transfers = transfers_of(kafka, rich)
    debited = settled["kaus_debited_units"]
    assert settled["cashback_kaus_units"] == debited * 300 // 10_000
    assert balance(transfers, rich) == FUNDS_UNITS - debited + settled["cashback_kaus_units"]
    assert open_holds(transfers) == set()
    slip_holds = [t for t in transfers if t["transfer_id"].startswith(f"BRIDGE-{slipped}")]
    assert sorted(t["kind"] for t in slip_holds) == ["PENDING", "VOID_PENDING"]  # the failed phase voided its hold
    assert balance(transfers_of(kafka, poor), poor) == 1_000_000  # the refused hold moved nothing
    assert_audited_once(kafka, {ok, broke, slipped})  # the duplicate's answer wrote none


def test_sigkill_between_payout_and_result_pays_once_after_restart(
    kafka: KafkaIO,
    sim: ProviderSimProcess,
    run_id: str,
    fx_feed: None,
    start_bridge: Callable[..., Any],
    tmp_path: Path,
) -> None:
    window_start = datetime.now(UTC) - timedelta(minutes=1)
    payer = f"acct-kill-{run_id}"
    deposit(kafka, payer, FUNDS_UNITS)
    # The provider executes the payout but its answer never comes back (the worker waits up to 120 s).
    sim.configure({"STRIPE_INSTANT": {"timeout_next": 1, "hang_ms": 60_000}})
    worker = start_bridge(provider_timeout_ms="120000")
    request_id = f"card-kill-{run_id}"
    kafka.produce_messages(BRIDGE_REQUESTS, [request(request_id, payer)])
    deadline = time.monotonic() + 60
    while sim.stats().get("STRIPE.payouts", 0) < 1:
        assert time.monotonic() < deadline, "the provider never saw the payout"
        time.sleep(0.1)
    journal = [v for v in values(kafka.read_all(BRIDGE_PAYOUTS_JOURNAL)) if v["request_id"] == request_id]
    assert [bool(v["intent"]) for v in journal] == [True]  # the intent was journaled before the call, no result
    worker.kill()
    assert len(sim.payouts()) == 1

    worker.extra_env["NEXUS_PROVIDER_TIMEOUT_MS"] = "2000"
    worker.start()  # same group: the unacked request is delivered again; the journal says a payout is out
    results = results_for(kafka, {request_id})[request_id]
    # Recovery emits the result (the first answer); the re-delivered request then gets it again, as a repeat.
    result = results[0]
    assert result["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name
    assert all(but_repeat(r) == but_repeat(result) for r in results) and len(results) <= 2
    assert [r["repeat"] for r in results] == [False, True][: len(results)]
    assert len(sim.payouts()) == 1  # resolved with the provider under the same key, not paid again
    journal = [v for v in values(kafka.read_all(BRIDGE_PAYOUTS_JOURNAL)) if v["request_id"] == request_id]
    assert journal[-1]["completed"] is not None
    transfers = transfers_of(kafka, payer)
    assert open_holds(transfers) == set()
    assert sum(t["kind"] == "POST_PENDING" for t in transfers) == 1
    assert balance(transfers, payer) == FUNDS_UNITS - result["kaus_debited_units"] + result["cashback_kaus_units"]
    assert_audited_once(kafka, {request_id})  # the recovered result's, none with the repeat
    reconcile_since(kafka, window_start, tmp_path / "recon.duckdb", payer, {request_id})


def test_a_slow_rail_does_not_stall_other_payments(
    kafka: KafkaIO, sim: ProviderSimProcess, run_id: str, fx_feed: None, start_bridge: Callable[..., Any]
) -> None:
    payer, others = f"acct-slow-{run_id}", [f"acct-fast-{run_id}-{i}" for i in range(5)]
    for account in (payer, *others):
        deposit(kafka, account, FUNDS_UNITS)
    sim.configure({"STRIPE_INSTANT": {"latency_ms": 4_000}})  # US card payments take 4 s at the provider
    start_bridge(provider_timeout_ms="10000")
    slow = f"card-slow-{run_id}"
    kafka.produce_messages(BRIDGE_REQUESTS, [request(slow, payer)])
    time.sleep(0.5)  # the slow one is in flight first
    fast = [f"card-fast-{run_id}-{i}" for i in range(5)]
    eur = quoted_rate(Currency.EUR)
    kafka.produce_messages(
        BRIDGE_REQUESTS,
        [
            request(rid, acct, amount_minor=5_000, quoted=eur).model_copy(
                update={"currency": Currency.EUR, "region": m.Region.EU}
            )
            for rid, acct in zip(fast, others, strict=True)
        ],
    )
    results = {r: v[0] for r, v in results_for(kafka, {slow, *fast}).items()}
    assert all(v["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name for v in results.values())
    assert results[slow]["total_duration_ms"] >= 4_000
    # the payments that arrived after the slow one completed before it: nothing waited behind it
    completed = {r: datetime.fromisoformat(v["completed_at"]) for r, v in results.items()}
    assert all(completed[r] < completed[slow] for r in fast), completed
    assert_audited_once(kafka, {slow, *fast})


def test_a_restart_reads_the_journal_from_its_checkpoint_and_still_answers_old_duplicates(
    kafka: KafkaIO,
    sim: ProviderSimProcess,
    run_id: str,
    fx_feed: None,
    start_bridge: Callable[..., Any],
    tmp_path: Path,
) -> None:
    window_start = datetime.now(UTC) - timedelta(minutes=1)
    payer = f"acct-index-{run_id}"
    deposit(kafka, payer, FUNDS_UNITS)
    worker = start_bridge()
    first = [f"card-index-{run_id}-{i}" for i in range(6)]
    kafka.produce_messages(BRIDGE_REQUESTS, [request(r, payer) for r in first])
    originals = {r: v[0] for r, v in results_for(kafka, set(first)).items()}
    assert all(v["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name for v in originals.values())
    payouts = len(sim.payouts())
    time.sleep(3)  # the periodic checkpoint (every 1 s) writes the acknowledged results to the index file
    worker.kill()  # SIGKILL: no final checkpoint, no memory carried over

    worker.start()
    new = f"card-index-{run_id}-new"
    kafka.produce_messages(BRIDGE_REQUESTS, [request(first[0], payer), request(new, payer)])
    answers = results_for(kafka, {new})
    kafka.wait_for(BRIDGE_SETTLEMENTS_COMPLETED, lambda rs: sum(v["request_id"] == first[0] for v in values(rs)) == 2)
    [duplicate] = [v for v in values(kafka.read_all(BRIDGE_SETTLEMENTS_COMPLETED)) if v["request_id"] == first[0]][1:]
    assert but_repeat(duplicate) == but_repeat(originals[first[0]])  # from the file: same result
    assert (originals[first[0]]["repeat"], duplicate["repeat"]) == (False, True)  # the file kept its origin too
    assert answers[new][0]["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name
    assert len(sim.payouts()) == payouts + 1  # the duplicate paid nothing
    # The restart read the journal from the checkpoint: nothing (without the index it reads every entry
    # of the partition, at least the 12 this test wrote).
    reads = re.findall(r"journal partition (\d+) read from offset (\d+): (\d+) entries", worker.log_text())
    assert reads, worker.log_text()[-3000:]
    assert [int(n) for _p, _o, n in reads] == [0] * len(reads)
    assert_audited_once(kafka, {*first, new})  # the duplicate answered from the file wrote none
    reconcile_since(kafka, window_start, tmp_path / "recon.duckdb", payer, {*first, new})


def test_a_deposit_stamped_years_ahead_does_not_expire_the_holds_that_follow(
    kafka: KafkaIO, sim: ProviderSimProcess, run_id: str, fx_feed: None, start_bridge: Callable[..., Any]
) -> None:
    """An upstream system with a clock ten years ahead: the ledger bounds that deposit's time by the broker's
    append time (ledger.commands has LogAppendTime), so card holds placed after it are not born expired."""
    payer = f"acct-skew-{run_id}"
    ahead = m.Deposit(
        command_id=f"dep-{payer}",
        account_id=payer,
        amount_kaus_units=FUNDS_UNITS,
        occurred_at=datetime.now(UTC) + timedelta(days=3650),
    )
    kafka.produce_messages(LEDGER_COMMANDS, [ahead])
    start_bridge()
    paid = f"card-skew-{run_id}"
    kafka.produce_messages(BRIDGE_REQUESTS, [request(paid, payer)])
    [result] = results_for(kafka, {paid})[paid]
    assert result["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name, result  # not failed: PENDING_EXPIRED
    transfers = transfers_of(kafka, payer)
    assert open_holds(transfers) == set()
    assert balance(transfers, payer) == FUNDS_UNITS - result["kaus_debited_units"] + result["cashback_kaus_units"]
