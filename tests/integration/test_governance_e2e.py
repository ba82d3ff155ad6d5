"""Multi-sig governance end to end (issue 18 item 4): ``python -m streams.security.governance`` and the platform's
ledger (``streams.p2p`` settlement) as real processes on the session broker; requests and signatures go through the
signers' CLI (``streams.security.signer_cli``) with five dev signers (``devtools.signers``).

Timelocks are scaled for the test (NEXUS_SECURITY_GOVERNANCE_TIMELOCK_SCALE = 0.0001: 24 h -> 8.64 s); the
quorums are the spec's. Checked:

(a) a treasury transfer of 1,000 K-AUS: PENDING with the hash the signer computed; a non-signer's signature refused
    (NOT_A_SIGNER) and not counted; 3/5 -> APPROVED with its timelock; nothing reaches the ledger before the
    timelock ends (the GovernedTransfer's time and the EXECUTED record's are both at or after it); then exactly one
    GOV:<request_id> transfer applied by the real ledger (treasury debited, ops credited, exactly), EXECUTED, and
    the audit trail of the request, each signature, the refusal, the quorum and the execution;
(b) an emergency pause with 2/5: governance.pause paused=true at once; an unpause with two signatures does nothing,
    the third (its quorum, 3/5) sets paused=false.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console

from contracts import models as m
from contracts.topics import (
    AUDIT_RECORDS,
    GOVERNANCE_APPROVALS,
    GOVERNANCE_MULTISIG,
    GOVERNANCE_PAUSE,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    Topic,
)
from devtools.signers import generate, key_path
from streams.security import governance as svc
from streams.security import signer_cli
from streams.security.settings import get_security_settings
from tests.integration.provider_fixtures import free_port
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

K = 1_000_000
SCALE = "0.0001"


def values(kafka: KafkaIO, topic: Topic) -> list[dict[str, Any]]:
    return kafka.values(topic)  # other tests' deliberately bad records on the shared broker are skipped


@dataclass
class Gov:
    kafka: KafkaIO
    keys: Path
    token: str
    deployment: str
    ledger: WorkerProcess
    service: WorkerProcess

    def cli(self, *argv: str) -> None:
        args = ["--bootstrap", self.kafka.bootstrap, "--deployment-id", self.deployment, *argv]
        assert signer_cli.main(args, Console(file=open("/dev/null", "w"))) == 0, argv  # noqa: SIM115

    def request(self, rid: str, operation: str, amount: str = "0", *params: str) -> None:
        self.cli("request", "--operation", operation, "--amount", amount, "--request-id", rid,
                 "--requested-by", "treasurer", *[a for p in params for a in ("--param", p)])  # fmt: skip

    def sign(self, rid: str, signer: str) -> None:
        self.cli("sign", rid, "--key", str(key_path(self.keys, signer)), "--signer", signer, "--submit")

    def states(self, rid: str) -> list[dict[str, Any]]:
        return [v for v in values(self.kafka, GOVERNANCE_MULTISIG) if v["request_id"] == rid]

    def wait_state(self, rid: str, what: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        def seen(records: list[Any]) -> bool:
            return any(check(v) for v in self._mine(records, rid))

        records = self.kafka.wait_for(GOVERNANCE_MULTISIG, seen, timeout_s=60, poll_s=0.2)
        found = [v for v in self._mine(records, rid) if check(v)]
        assert found, f"{rid}: never {what}"
        return found[0]

    @staticmethod
    def _mine(records: list[Any], rid: str) -> list[dict[str, Any]]:
        return [v for v in (json.loads(r.value) for r in records if r.value) if v["request_id"] == rid]


@pytest.fixture(scope="module")
def gov(kafka: KafkaIO, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gov]:
    token = f"{time.time_ns() % 10**10:010d}"
    data = tmp_path_factory.mktemp("governance-e2e")
    keys = data / "keys"
    signers_file = generate(keys)
    deployment = f"e2e-{token}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEXUS_SECURITY_SIGNERS_FILE", str(signers_file))  # the CLI checks keys against the set
        get_security_settings.cache_clear()

        def worker(name: str, module: str, env: dict[str, str]) -> WorkerProcess:
            return WorkerProcess(kafka.bootstrap, f"nexus-gov-e2e-{name}-{token}", data / name, free_port(),
                                 free_port(), env, module=module)  # fmt: skip

        ledger = worker("ledger", "streams.p2p", {"NEXUS_AGENTS": "settlement"})
        service = worker("governance", "streams.security.governance", {
            "NEXUS_SECURITY_SIGNERS_FILE": str(signers_file),
            "NEXUS_SECURITY_GOVERNANCE_DEPLOYMENT_ID": deployment,
            "NEXUS_SECURITY_GOVERNANCE_TIMELOCK_SCALE": SCALE,
            "NEXUS_SECURITY_GOVERNANCE_TICK_EVERY_S": "0.2",
        })  # fmt: skip
        try:
            for w in (ledger, service):
                w.start(wait=False)
            for w in (ledger, service):
                w.wait_ready(120)
            yield Gov(kafka, keys, token, deployment, ledger, service)
        finally:
            _unpause_if_left_paused(kafka, token)
            for w in (service, ledger):
                w.stop()
            get_security_settings.cache_clear()


def _unpause_if_left_paused(kafka: KafkaIO, token: str) -> None:
    """A failed run must not leave the session broker's platform paused for the tests after it."""
    states = values(kafka, GOVERNANCE_PAUSE)
    if states and states[-1]["paused"] and token in states[-1]["request_id"]:
        kafka.produce_messages(GOVERNANCE_PAUSE, [m.PauseState(scope="PLATFORM", paused=False,
                               request_id=f"cleanup-{token}", updated_at=datetime.now(UTC))])  # fmt: skip


def test_a_treasury_transfer_waits_out_its_timelock_then_the_ledger_applies_it_once(gov: Gov) -> None:
    treasury, ops, rid = f"treasury-{gov.token}", f"ops-{gov.token}", f"gov-transfer-{gov.token}"
    gov.kafka.produce_messages(LEDGER_COMMANDS, [m.Deposit(command_id=f"fund-{gov.token}", account_id=treasury,
                               amount_kaus_units=5_000 * K, occurred_at=datetime.now(UTC))])  # fmt: skip
    gov.request(rid, "TREASURY_TRANSFER", "1000", f"from_account={treasury}", f"to_account={ops}", "reason=ops float")
    pending = gov.wait_state(rid, "PENDING", lambda v: v["state"] == "PENDING")
    assert (pending["required_signers"], pending["signatures"], pending["amount_kaus_units"]) == (3, 0, 1_000 * K)
    computed = signer_cli.Cli(_args(gov), Console(file=open("/dev/null", "w"))).show(rid)  # noqa: SIM115
    assert pending["request_hash"] == computed

    # A stranger's signature over the right hash: refused, not counted.
    stranger = ec.generate_private_key(ec.SECP256R1())
    bad = m.GovernanceApproval(request_id=rid, signer_id="mallory", request_hash=computed,
                               signature=svc.sign_hash(stranger, computed), signed_at=datetime.now(UTC))  # fmt: skip
    gov.kafka.produce_messages(GOVERNANCE_APPROVALS, [bad])
    refused = gov.wait_state(rid, "NOT_A_SIGNER", lambda v: v["reason_code"] == "NOT_A_SIGNER")
    assert refused["signatures"] == 0 and refused["state"] == "PENDING"

    for signer in ("signer-1", "signer-2", "signer-3"):
        gov.sign(rid, signer)
    approved = gov.wait_state(rid, "APPROVED", lambda v: v["state"] == "APPROVED")
    until = datetime.fromisoformat(approved["timelock_until"])
    assert approved["signatures"] == 3
    assert 8.5 <= (until - datetime.fromisoformat(approved["updated_at"])).total_seconds() <= 8.7  # 24 h x 0.0001
    if datetime.now(UTC) < until:  # still in its timelock: nothing may have reached the ledger
        assert [c for c in values(gov.kafka, LEDGER_COMMANDS) if c["command_id"] == f"GOV:{rid}"] == []

    executed = gov.wait_state(rid, "EXECUTED", lambda v: v["state"] == "EXECUTED")
    assert datetime.fromisoformat(executed["updated_at"]) >= until
    (command,) = [c for c in values(gov.kafka, LEDGER_COMMANDS) if c["command_id"] == f"GOV:{rid}"]
    assert datetime.fromisoformat(command["occurred_at"]) >= until  # executed after the timelock, never before
    assert (command["type"], command["debit_account_id"], command["credit_account_id"]) == (
        "GOVERNED_TRANSFER", treasury, ops)  # fmt: skip
    moves = [t for t in values(gov.kafka, LEDGER_TRANSFERS) if (t.get("reference") or {}).get("id") == rid]
    assert [(t["debit_account_id"], t["credit_account_id"], t["amount_units"], t["reference"]["kind"]) for t in moves] \
        == [(treasury, ops, 1_000 * K, "GOVERNANCE")]  # fmt: skip

    audits = {a["auditId"]: a["action"] for a in values(gov.kafka, AUDIT_RECORDS) if a.get("transactionId") == rid}
    assert {
        f"AUDIT-GOV:{rid}:requested": "GOVERNANCE_REQUESTED",
        f"AUDIT-GOV:{rid}:signed:signer-1": "GOVERNANCE_APPROVED",
        f"AUDIT-GOV:{rid}:signed:signer-3": "GOVERNANCE_APPROVED",
        f"AUDIT-GOV:{rid}:quorum": "GOVERNANCE_QUORUM_REACHED",
        f"AUDIT-GOV:{rid}:executed": "GOVERNANCE_EXECUTED",
    }.items() <= audits.items()
    assert "GOVERNANCE_REFUSED_NOT_A_SIGNER" in audits.values()


def test_an_emergency_pause_with_two_signers_and_the_unpause_with_its_quorum(gov: Gov) -> None:
    pause, unpause = f"gov-pause-{gov.token}", f"gov-unpause-{gov.token}"
    gov.request(pause, "PAUSE", "0", "reason=suspected provider breach")
    gov.wait_state(pause, "PENDING", lambda v: v["state"] == "PENDING" and v["required_signers"] == 2)
    gov.sign(pause, "signer-4")
    gov.sign(pause, "signer-5")
    gov.wait_state(pause, "EXECUTED", lambda v: v["state"] == "EXECUTED")
    paused = gov.kafka.wait_for(GOVERNANCE_PAUSE, lambda rs: _last_pause(rs)["request_id"] == pause, timeout_s=30)
    assert _last_pause(paused)["paused"] is True and _last_pause(paused)["reason"] == "suspected provider breach"

    gov.request(unpause, "UNPAUSE")
    gov.sign(unpause, "signer-1")
    gov.sign(unpause, "signer-2")
    two = gov.wait_state(unpause, "two signatures", lambda v: v["signatures"] == 2)
    assert (two["state"], two["required_signers"]) == ("PENDING", 3)
    assert _last_pause(gov.kafka.read_all(GOVERNANCE_PAUSE))["paused"] is True
    gov.sign(unpause, "signer-3")
    gov.wait_state(unpause, "EXECUTED", lambda v: v["state"] == "EXECUTED")
    resumed = gov.kafka.wait_for(GOVERNANCE_PAUSE, lambda rs: _last_pause(rs)["request_id"] == unpause, timeout_s=30)
    assert _last_pause(resumed)["paused"] is False
    audits = [a["action"] for a in values(gov.kafka, AUDIT_RECORDS) if a.get("transactionId") in (pause, unpause)]
    assert audits.count("GOVERNANCE_PAUSED") == 1 and audits.count("GOVERNANCE_UNPAUSED") == 1


def _last_pause(records: list[Any]) -> dict[str, Any]:
    found = [json.loads(r.value) for r in records if r.value]
    return found[-1] if found else {"request_id": None, "paused": None}


def _args(gov: Gov) -> Any:
    return signer_cli.parser().parse_args(["--bootstrap", gov.kafka.bootstrap, "--deployment-id", gov.deployment,
                                           "pending"])  # fmt: skip
