"""The emergency pause end to end (issue 18 item 4): money out halts at once and resumes after the unpause.

On the session broker: the ledger (``streams.p2p``), the bridge's plain runtime (``streams.bridge.loop``) against the
provider simulator, an FX feed and the auto-payout service (``python -m streams.payouts``), as real processes. The
governance service's output is stood in for by :class:`contracts.models.PauseState` records produced straight to
``governance.pause`` (the test leaves it unpaused: the topic is compacted and the broker shared). Checked:

(a) the bridge: a card payment already at its provider when the pause lands (slow rail latency on the simulator) is
    finished normally; the same payer's next payment, queued behind it, and a holder's payout requested during the
    pause are FAILED with PAUSED before any hold; a payment whose hold was being placed when the pause landed (the
    ledger stopped for that moment) is stopped before its provider call, FAILED with PAUSED and its hold released;
    the simulator received nothing for any of them; after the unpause a payment settles again;
(b) the payouts service: a due THRESHOLD payout waits with PAUSED (one ``payouts.waiting`` record), no bridge request
    goes out, and after the unpause it is paid under the same payout id.

Each step waits on what the processes wrote (their logs, topics, the simulator), never on a time.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    BRIDGE_REQUESTS,
    FX_RATES,
    GOVERNANCE_PAUSE,
    KYC_STATUS,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
    Topic,
)
from devtools.fx_feed import fx_quotes
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.money import Currency
from domain.rails import Provider
from tests.integration.provider_fixtures import free_port, provider_sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_bridge_kafka import FX_DAY, request, results_for
from tests.integration.test_bridge_payouts import payout_legs, payout_request
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

K = 1_000_000
FUNDS = 10_000 * K
SLOW_RAIL_MS = 8_000  # the in-flight payment's provider call: long enough for the pause to land during it
PAUSED_LOG = "money out PAUSED"
UNPAUSED_LOG = "money out not paused"


def values(kafka: KafkaIO, topic: Topic) -> list[dict[str, Any]]:
    return kafka.values(topic)  # other tests' deliberately bad records on the shared broker are skipped


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)


def logged(worker: WorkerProcess, mark: str, before: int) -> Callable[[], bool]:
    """``worker`` has logged ``mark`` more than ``before`` times."""
    return lambda: worker.log_text().count(mark) > before


@dataclass
class Platform:
    kafka: KafkaIO
    sim: ProviderSimProcess
    ledger: WorkerProcess
    bridge: WorkerProcess
    payouts: WorkerProcess
    token: str

    def set_pause(self, paused: bool) -> None:
        """A governance PAUSE / UNPAUSE executed (as the governance service writes it), then seen by both services."""
        workers = (self.bridge, self.payouts)
        mark = PAUSED_LOG if paused else UNPAUSED_LOG
        seen = [w.log_text().count(mark) for w in workers]
        state = m.PauseState(
            scope="PLATFORM", paused=paused, request_id=f"gov-{'pause' if paused else 'unpause'}-{time.time_ns()}",
            reason="e2e test", updated_at=datetime.now(UTC),
        )  # fmt: skip
        self.kafka.produce_messages(GOVERNANCE_PAUSE, [state])
        for w, before in zip(workers, seen, strict=True):
            wait_until(f"{w.app_id} logs {mark!r}", logged(w, mark, before))

    def deposit(self, account: str, units: int) -> None:
        self.kafka.produce_messages(
            LEDGER_COMMANDS,
            [m.Deposit(command_id=f"dep-{account}", account_id=account, amount_kaus_units=units,
                       occurred_at=datetime.now(UTC))],
        )  # fmt: skip

    def at_provider(self, request_id: str) -> list[dict[str, Any]]:
        return [p for p in self.sim.payouts() if f"BRIDGE-{request_id}" in json.dumps(p)]

    def transfers(self, account: str) -> list[dict[str, Any]]:
        return [
            t
            for t in values(self.kafka, LEDGER_TRANSFERS)
            if account in (t["debit_account_id"], t["credit_account_id"])
        ]

    def stop_ledger(self) -> None:
        assert self.ledger.proc is not None
        os.killpg(self.ledger.proc.pid, signal.SIGSTOP)

    def resume_ledger(self) -> None:
        assert self.ledger.proc is not None
        os.killpg(self.ledger.proc.pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def platform(
    kafka: KafkaIO, provider_sim: ProviderSimProcess, sim_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    provider_sim.reset()
    token = f"{time.time_ns() % 10**10:010d}"
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            kafka.produce_messages(FX_RATES, fx_quotes(FX_DAY, 0, datetime.now(UTC)))
            stop.wait(0.5)

    fx = threading.Thread(target=feed, daemon=True)
    fx.start()
    data = tmp_path_factory.mktemp("pause-e2e")
    provider = {"NEXUS_PROVIDER_SIM_URL": provider_sim.url, "NEXUS_PROVIDER_KEYS_DIR": str(sim_keys_dir),
                "NEXUS_PROVIDER_TRANSPORT": "aiohttp", "NEXUS_PROVIDER_TIMEOUT_MS": "30000",
                "NEXUS_BRIDGE_LEDGER_TIMEOUT_S": "30"}  # fmt: skip

    def worker(name: str, module: str, env: dict[str, str]) -> WorkerProcess:
        return WorkerProcess(kafka.bootstrap, f"nexus-pause-e2e-{name}-{token}", data / name, free_port(),
                             free_port(), env, module=module)  # fmt: skip

    workers = [
        worker("ledger", "streams.p2p", {"NEXUS_AGENTS": "settlement"}),
        worker("bridge", "streams.bridge.loop", provider),
        worker("payouts", "streams.payouts", {}),
    ]
    platform = Platform(kafka, provider_sim, workers[0], workers[1], workers[2], token)
    try:
        for w in workers:
            w.start(wait=False)
        for w in workers:
            w.wait_ready(120)
        yield platform
    finally:
        try:  # the topic is compacted and the broker shared: never leave money out paused for other tests
            kafka.produce_messages(
                GOVERNANCE_PAUSE,
                [m.PauseState(scope="PLATFORM", paused=False, request_id=f"gov-cleanup-{token}",
                              updated_at=datetime.now(UTC))],
            )  # fmt: skip
        finally:
            platform.resume_ledger()
            stop.set()
            fx.join(5)
            for w in workers:
                w.stop()


def hold_commanded(kafka: KafkaIO, request_id: str) -> bool:
    """The bridge has sent this payment's hold to the ledger (it is on ledger.commands)."""
    hold = f"BRIDGE-{request_id}:hold".encode()
    return any(r.value and hold in r.value for r in kafka.read_all(LEDGER_COMMANDS))


def test_the_bridge_refuses_payments_during_the_pause_and_stops_one_in_flight_before_its_provider_call(
    platform: Platform,
) -> None:
    kafka, sim, t = platform.kafka, platform.sim, platform.token
    payer, other, holder = f"acct-pause-a-{t}", f"acct-pause-b-{t}", f"acct-pause-h-{t}"
    for account in (payer, other, holder):
        platform.deposit(account, FUNDS)
    sent, queued, held, payout, after = (f"{name}-{t}" for name in ("sent", "queued", "held", "po", "after"))
    sim.configure({"STRIPE_INSTANT": {"latency_ms": SLOW_RAIL_MS}})
    try:
        kafka.produce_messages(BRIDGE_REQUESTS, [request(sent, payer)])
        wait_until("the provider is paying the first payment", lambda: sim.stats().get("STRIPE.calls", 0) >= 1)
        kafka.produce_messages(BRIDGE_REQUESTS, [request(queued, payer)])  # behind the first: the same payer
        platform.stop_ledger()  # the next hold is asked for but not answered until the pause has landed
        try:
            kafka.produce_messages(BRIDGE_REQUESTS, [request(held, other)])
            wait_until("the hold is commanded", lambda: hold_commanded(kafka, held))
            platform.set_pause(True)
            assert platform.at_provider(sent) == []  # the pause landed while the provider was still paying
        finally:
            platform.resume_ledger()
        kafka.produce_messages(BRIDGE_REQUESTS, [payout_request(payout, holder, Provider.PAYPAL, "h@example.com")])
        answers = results_for(kafka, {sent, queued, held, payout}, timeout_s=90)
    finally:
        sim.configure({"STRIPE_INSTANT": {"latency_ms": 0}})
    [first] = answers[sent]
    assert first["topic"] == "bridge.settlements.completed"  # already at the provider: finished normally
    assert len(platform.at_provider(sent)) == 1
    for request_id in (queued, payout):  # refused before any hold
        [answer] = answers[request_id]
        assert answer["topic"] == "bridge.settlements.failed", answer
        assert (answer["reason_code"], answer["failed_phase"], answer["rail"]) == ("PAUSED", "BALANCE_LOCK", None)
    [stopped] = answers[held]  # held, then stopped before its provider call
    assert (stopped["topic"], stopped["reason_code"], stopped["rail"]) == ("bridge.settlements.failed", "PAUSED", None)
    assert stopped["failed_phase"] in ("FX_CONVERSION", "MERCHANT_CREDIT")
    for request_id in (queued, held, payout):
        assert platform.at_provider(request_id) == []  # the simulator received nothing for them
    kinds = [x["kind"] for x in platform.transfers(other)]
    assert kinds.count("PENDING") == 1 and kinds.count("VOID_PENDING") == 1 and "POST_PENDING" not in kinds
    assert payout_legs(platform.transfers(holder), payout) == {}  # nothing held for the refused payout
    assert not any(x["transfer_id"].startswith(f"BRIDGE-{queued}:") for x in platform.transfers(payer))

    platform.set_pause(False)
    kafka.produce_messages(BRIDGE_REQUESTS, [request(after, payer)])
    [settled] = results_for(kafka, {after})[after]
    assert settled["topic"] == "bridge.settlements.completed" and len(platform.at_provider(after)) == 1


def test_a_due_payout_waits_during_the_pause_and_is_paid_after_the_unpause(platform: Platform) -> None:
    kafka, t = platform.kafka, platform.token
    holder, rule_id = f"holder-pause-{t}", f"r-pause-{t}"
    kafka.produce_messages(
        KYC_STATUS,
        [m.KycStatusChanged(account_id=holder, status="VERIFIED", provider="SUMSUB", applicant_id=f"app-{holder}",
                            event_id=f"evt-{holder}", occurred_at=datetime.now(UTC))],
    )  # fmt: skip
    rule = m.AutoPayoutRule.model_validate(
        {"rule_id": rule_id, "account_id": holder, "trigger_type": "THRESHOLD", "threshold_kaus_units": 100 * K,
         "keep_minimum_kaus_units": 10 * K, "payout_provider": "STRIPE", "payout_currency": "USD",
         "payout_account": f"acct_{t}", "max_payout_per_tx_kaus_units": 100_000 * K}
    )  # fmt: skip
    kafka.produce_messages(PAYOUT_RULES, [rule])
    platform.set_pause(True)
    platform.deposit(holder, 250 * K)

    def waits(records: list[Any]) -> list[dict[str, Any]]:
        return [v for v in (json.loads(r.value) for r in records if r.value) if v["account_id"] == holder]

    [wait] = waits(kafka.wait_for(PAYOUT_WAITING, lambda rs: bool(waits(rs)), timeout_s=90))
    payout_id = f"{rule_id}:T0"
    assert (wait["payout_id"], wait["reason_code"], wait["amount_kaus_units"]) == (payout_id, "PAUSED", 240 * K)
    assert [v for v in values(kafka, BRIDGE_REQUESTS) if v["payer_account_id"] == holder] == []

    platform.set_pause(False)

    def mine(records: list[Any]) -> list[dict[str, Any]]:
        return [v for v in (json.loads(r.value) for r in records if r.value) if v["payout_id"] == payout_id]

    [result] = mine(kafka.wait_for(PAYOUT_RESULTS, lambda rs: bool(mine(rs)), timeout_s=90))
    assert (result["status"], result["kaus_debited_units"], result["account_id"]) == ("PAID", 240 * K, holder)
    assert len(platform.at_provider(payout_id)) == 1
    assert [v["request_id"] for v in values(kafka, BRIDGE_REQUESTS) if v["payer_account_id"] == holder] == [payout_id]
    assert len(waits(kafka.read_all(PAYOUT_WAITING))) == 1  # waited once
    assert Currency(result["currency"]) is Currency.USD
