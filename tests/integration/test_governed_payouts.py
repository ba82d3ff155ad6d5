"""Governed operations take effect (issue 18): PARAMETER_CHANGE and PAYOUT_APPROVAL end to end.

On the session broker, as real processes: the ledger (``streams.p2p``), the bridge's plain runtime
(``streams.bridge.loop``) against the provider simulator, an FX feed, the auto-payout service (``python -m
streams.payouts``) and the governance service (``python -m streams.security.governance``) with five dev signers
(``devtools.signers``) who sign through the signers' CLI (``streams.security.signer_cli``). Timelocks are scaled
(NEXUS_SECURITY_GOVERNANCE_TIMELOCK_SCALE = 0.00005: 24 h -> 4.3 s, 48 h -> 8.6 s) and the payouts service asks for
approvals that expire after 0.0003 days (26 s) so that an expiry is seen within the test. Checked:

(a) a PARAMETER_CHANGE of GOLD's cashback (300 -> 450 bps) signed by 3 of 5: after its timelock it is published on
    governance.parameters; the card payment settled before it earned 300 bps, the next one 450 bps (and the ledger
    credited exactly that); the default is restored afterwards (the topic is compacted and the broker shared);
(b) a threshold payout of one unit more than the auto-approval limit (50,000 K-AUS) waits with APPROVAL_PENDING (one
    governance request PAYOUT:<payout_id>, one wait, one audit record), nothing goes to the bridge; 4 signers approve
    (ELEVATED) and after its timelock it is paid exactly once, for exactly the approved amount, under the same payout
    id, its result naming the approval request;
(c) a payout nobody approves: its request expires, the payout is FAILED with APPROVAL_REFUSED, nothing was held or
    paid and it is not asked again.

Each step waits on what the processes wrote, never on a time alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from contracts import models as m
from contracts.topics import (
    AUDIT_RECORDS,
    BRIDGE_REQUESTS,
    FX_RATES,
    GOVERNANCE_MULTISIG,
    GOVERNANCE_PARAMETERS,
    GOVERNANCE_REQUESTS,
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
from devtools.signers import generate, key_path
from domain import parameters
from domain.cashback import PayerTier
from streams.security import signer_cli
from streams.security.settings import get_security_settings
from tests.integration.provider_fixtures import free_port, provider_sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.test_bridge_kafka import FX_DAY, request, results_for
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

K = 1_000_000
SCALE = "0.00005"
WINDOW_DAYS = "0.0003"
LIMIT = parameters.PARAMETERS[parameters.AUTO_APPROVAL_LIMIT].default
GOLD = parameters.cashback_name(PayerTier.GOLD)


def values(kafka: KafkaIO, topic: Topic) -> list[dict[str, Any]]:
    return kafka.values(topic)  # other tests' deliberately bad records on the shared broker are skipped


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


@dataclass
class Platform:
    kafka: KafkaIO
    sim: ProviderSimProcess
    keys: Path
    token: str
    deployment: str
    bridge: WorkerProcess
    payouts: WorkerProcess

    def cli(self, *argv: str) -> None:
        args = ["--bootstrap", self.kafka.bootstrap, "--deployment-id", self.deployment, *argv]
        assert signer_cli.main(args, Console(file=open("/dev/null", "w"))) == 0, argv  # noqa: SIM115

    def sign(self, rid: str, *signers: str) -> None:
        for signer in signers:
            self.cli("sign", rid, "--key", str(key_path(self.keys, signer)), "--signer", signer, "--submit")

    def state(self, rid: str, what: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen(records: list[Any]) -> bool:
            found[:] = [v for v in (json.loads(r.value) for r in records if r.value) if v["request_id"] == rid]
            return any(check(v) for v in found)

        self.kafka.wait_for(GOVERNANCE_MULTISIG, seen, timeout_s=90, poll_s=0.2)
        return next(v for v in found if check(v))

    def deposit(self, account: str, units: int, tag: str = "") -> None:
        self.kafka.produce_messages(LEDGER_COMMANDS, [m.Deposit(command_id=f"dep-{account}{tag}", account_id=account,
                                    amount_kaus_units=units, occurred_at=datetime.now(UTC))])  # fmt: skip

    def holder(self, name: str) -> tuple[str, str]:
        """A VERIFIED holder with a THRESHOLD rule (threshold 100, keep-minimum 10, no cap below the limit); ``name``
        alphanumeric (a Stripe account id is acct_ and letters and digits)."""
        holder, rule_id = f"holder-{name}-{self.token}", f"r-{name}-{self.token}"
        self.kafka.produce_messages(KYC_STATUS, [m.KycStatusChanged(
            account_id=holder, status="VERIFIED", provider="SUMSUB", applicant_id=f"app-{holder}",
            event_id=f"evt-{holder}", occurred_at=datetime.now(UTC))])  # fmt: skip
        rule = m.AutoPayoutRule.model_validate(
            {"rule_id": rule_id, "account_id": holder, "trigger_type": "THRESHOLD", "threshold_kaus_units": 100 * K,
             "keep_minimum_kaus_units": 10 * K, "payout_provider": "STRIPE", "payout_currency": "USD",
             "payout_account": f"acct_{name}{self.token}", "max_payout_per_tx_kaus_units": 10 * LIMIT}
        )  # fmt: skip
        self.kafka.produce_messages(PAYOUT_RULES, [rule])
        return holder, rule_id

    def mine(self, topic: Topic, key: str, value: str) -> list[dict[str, Any]]:
        return [v for v in values(self.kafka, topic) if v.get(key) == value]

    def at_provider(self, request_id: str) -> list[dict[str, Any]]:
        return [p for p in self.sim.payouts() if f"BRIDGE-{request_id}" in json.dumps(p)]


@pytest.fixture(scope="module")
def platform(
    kafka: KafkaIO, provider_sim: ProviderSimProcess, sim_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    provider_sim.reset()
    token = f"{time.time_ns() % 10**10:010d}"
    data = tmp_path_factory.mktemp("governed")
    keys = data / "keys"
    signers_file = generate(keys)
    deployment = f"e2e-governed-{token}"
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            kafka.produce_messages(FX_RATES, fx_quotes(FX_DAY, 0, datetime.now(UTC)))
            stop.wait(0.5)

    fx = threading.Thread(target=feed, daemon=True)
    fx.start()
    provider = {"NEXUS_PROVIDER_SIM_URL": provider_sim.url, "NEXUS_PROVIDER_KEYS_DIR": str(sim_keys_dir),
                "NEXUS_PROVIDER_TRANSPORT": "aiohttp", "NEXUS_BRIDGE_LEDGER_TIMEOUT_S": "30"}  # fmt: skip
    governance = {"NEXUS_SECURITY_SIGNERS_FILE": str(signers_file),
                  "NEXUS_SECURITY_GOVERNANCE_DEPLOYMENT_ID": deployment,
                  "NEXUS_SECURITY_GOVERNANCE_TIMELOCK_SCALE": SCALE,
                  "NEXUS_SECURITY_GOVERNANCE_TICK_EVERY_S": "0.2"}  # fmt: skip

    def worker(name: str, module: str, env: dict[str, str]) -> WorkerProcess:
        return WorkerProcess(kafka.bootstrap, f"nexus-governed-{name}-{token}", data / name, free_port(),
                             free_port(), env, module=module)  # fmt: skip

    workers = [
        worker("ledger", "streams.p2p", {"NEXUS_AGENTS": "settlement"}),
        worker("bridge", "streams.bridge.loop", provider),
        worker("payouts", "streams.payouts", {"NEXUS_PAYOUTS_APPROVAL_WINDOW_DAYS": WINDOW_DAYS}),
        worker("governance", "streams.security.governance", governance),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEXUS_SECURITY_SIGNERS_FILE", str(signers_file))  # the CLI checks keys against the set
        get_security_settings.cache_clear()
        try:
            for w in workers:
                w.start(wait=False)
            for w in workers:
                w.wait_ready(120)
            yield Platform(kafka, provider_sim, keys, token, deployment, workers[1], workers[2])
        finally:
            stop.set()
            fx.join(5)
            for w in workers:
                w.stop()
            get_security_settings.cache_clear()


def cashback_of(answer: dict[str, Any]) -> tuple[int, int]:
    return answer["cashback_kaus_units"], answer["kaus_debited_units"]


def test_a_parameter_change_signed_by_the_signers_sets_the_cashback_of_the_next_payment(platform: Platform) -> None:
    kafka, t = platform.kafka, platform.token
    payer = f"acct-governed-payer-{t}"
    platform.deposit(payer, 10_000 * K)
    before, after, rid = f"card-before-{t}", f"card-after-{t}", f"gov-cashback-{t}"
    kafka.produce_messages(BRIDGE_REQUESTS, [request(before, payer)])
    [settled] = results_for(kafka, {before})[before]
    cashback, debit = cashback_of(settled)
    assert settled["topic"] == "bridge.settlements.completed" and cashback == debit * 300 // 10_000

    seen = platform.bridge.log_text().count(f"parameter {GOLD} = 450")
    try:
        platform.cli("request", "--operation", "PARAMETER_CHANGE", "--amount", "0", "--request-id", rid,
                     "--requested-by", "cfo", "--param", f"name={GOLD}", "--param", "value=450")  # fmt: skip
        platform.state(rid, "PENDING", lambda v: v["state"] == "PENDING")
        platform.sign(rid, "signer-1", "signer-2", "signer-3")
        platform.state(rid, "EXECUTED", lambda v: v["state"] == "EXECUTED")
        [setting] = [s for s in values(kafka, GOVERNANCE_PARAMETERS) if s["request_id"] == rid]
        assert (setting["name"], setting["value"]) == (GOLD, "450")
        wait_until("the bridge applies it", lambda: platform.bridge.log_text().count(f"parameter {GOLD} = 450") > seen)

        kafka.produce_messages(BRIDGE_REQUESTS, [request(after, payer)])
        [settled_after] = results_for(kafka, {after})[after]
        cashback_after, debit_after = cashback_of(settled_after)
        assert cashback_after == debit_after * 450 // 10_000 > 0
        credited = [x["amount_units"] for x in values(kafka, LEDGER_TRANSFERS)
                    if x["transfer_id"] == f"BRIDGE-{after}:cashback"]  # fmt: skip
        assert credited == [cashback_after]  # the ledger paid exactly the new rate
    finally:  # the topic is compacted and the broker shared: the default back for the tests after this one
        kafka.produce_messages(GOVERNANCE_PARAMETERS, [m.ParameterSetting(
            name=GOLD, value=str(parameters.PARAMETERS[GOLD].default), request_id=f"cleanup-{t}",
            updated_at=datetime.now(UTC))])  # fmt: skip


def test_a_payout_above_the_limit_waits_for_the_signers_then_is_paid_once_for_the_approved_amount(
    platform: Platform,
) -> None:
    kafka = platform.kafka
    holder, rule_id = platform.holder("big")
    payout_id, rid = f"{rule_id}:T0", f"PAYOUT:{rule_id}:T0"
    platform.deposit(holder, LIMIT + 1 + 10 * K)  # pays available - keep-minimum: the limit plus one unit

    pending = platform.state(rid, "PENDING", lambda v: v["state"] == "PENDING")
    assert (pending["amount_kaus_units"], pending["required_signers"], pending["operation"]) == (
        LIMIT + 1, 4, "PAYOUT_APPROVAL"
    )  # fmt: skip
    [wait] = platform.mine(PAYOUT_WAITING, "payout_id", payout_id)
    assert (wait["reason_code"], wait["amount_kaus_units"]) == ("APPROVAL_PENDING", LIMIT + 1)
    assert len(platform.mine(GOVERNANCE_REQUESTS, "request_id", rid)) == 1
    assert [a["action"] for a in values(kafka, AUDIT_RECORDS) if a.get("transactionId") == payout_id] == [
        "PAYOUT_APPROVAL_REQUESTED"
    ]
    assert platform.mine(BRIDGE_REQUESTS, "payer_account_id", holder) == []  # nothing goes out before approval

    platform.sign(rid, "signer-1", "signer-2", "signer-3", "signer-4")
    platform.state(rid, "EXECUTED", lambda v: v["state"] == "EXECUTED")
    kafka.wait_for(PAYOUT_RESULTS, lambda _: bool(platform.mine(PAYOUT_RESULTS, "payout_id", payout_id)), 90)
    [result] = platform.mine(PAYOUT_RESULTS, "payout_id", payout_id)
    paid = (result["status"], result["kaus_debited_units"], result["approval_request_id"])
    assert paid == ("PAID", LIMIT + 1, rid), (result.get("reason_code"), result.get("reason"))
    [bridge] = platform.mine(BRIDGE_REQUESTS, "payer_account_id", holder)
    assert (bridge["request_id"], bridge["payout"]["amount_kaus_units"]) == (payout_id, LIMIT + 1)
    assert len(platform.at_provider(payout_id)) == 1
    time.sleep(2)  # a second payout would have been decided by now (the balance is back at keep-minimum)
    assert len(platform.mine(PAYOUT_RESULTS, "payout_id", payout_id)) == 1
    assert len(platform.mine(GOVERNANCE_REQUESTS, "request_id", rid)) == 1


def test_a_payout_nobody_approves_expires_and_fails_without_holding_or_paying(platform: Platform) -> None:
    kafka = platform.kafka
    holder, rule_id = platform.holder("refused")
    payout_id, rid = f"{rule_id}:T0", f"PAYOUT:{rule_id}:T0"
    platform.deposit(holder, 2 * LIMIT)
    platform.state(rid, "PENDING", lambda v: v["state"] == "PENDING")
    platform.sign(rid, "signer-5")  # one of the four needed: never approved
    expired = platform.state(rid, "EXPIRED", lambda v: v["state"] == "EXPIRED")
    assert expired["reason_code"] == "EXPIRED"
    kafka.wait_for(PAYOUT_RESULTS, lambda _: bool(platform.mine(PAYOUT_RESULTS, "payout_id", payout_id)), 60)
    [result] = platform.mine(PAYOUT_RESULTS, "payout_id", payout_id)
    assert (result["status"], result["reason_code"], result["approval_request_id"]) == (
        "FAILED", "APPROVAL_REFUSED", rid
    )  # fmt: skip
    assert platform.mine(BRIDGE_REQUESTS, "payer_account_id", holder) == []
    assert platform.at_provider(payout_id) == []
    held = [x for x in values(kafka, LEDGER_TRANSFERS) if holder in (x["debit_account_id"], x["credit_account_id"])]
    assert [x["kind"] for x in held] == ["POSTED"]  # the deposit only: no hold, no payout
    time.sleep(2)
    assert [r["request_id"] for r in values(kafka, GOVERNANCE_REQUESTS) if holder in json.dumps(r)] == [rid]
