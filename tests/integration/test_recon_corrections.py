"""A ledger break corrected through governance, end to end (issue 18): the reconciliation CLI, the governance service,
the platform's ledger and the audit log as real processes on the session broker; five dev signers sign with the
signers' CLI (timelocks scaled: 24 h -> 8.64 s).

A CAPTURE_REFUSED exception (``K:<settlement>``, the payer owes K-AUS) is corrected: ONE LEDGER_CORRECTION request
on governance.requests, PENDING with the exact units; the exception waits in correction_requested and a check
before the signatures closes nothing; three signers sign; the ledger moves exactly the amount, once, from the payer
to the account the capture should have credited; the check closes the exception as corrected, and a second check
changes nothing. Every review action's audit record is on audit.records (published once acknowledged) and becomes
a leaf of the audit log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from contracts import models as m
from contracts.topics import AUDIT_RECORDS, GOVERNANCE_MULTISIG, LEDGER_COMMANDS, LEDGER_TRANSFERS
from devtools.signers import generate, key_path
from domain.variance_rules import correction_request_id
from streams.security import signer_cli
from streams.security.settings import get_security_settings
from tests.integration.provider_fixtures import free_port
from tests.integration.test_audit_log import start as start_audit_log
from tests.integration.test_audit_log import wait_logged
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess
from warehouse import cli
from warehouse.db import query, warehouse
from warehouse.settings import get_recon_settings

pytestmark = pytest.mark.slow

AMOUNT_UNITS = 12_345_678  # 12.345678 K-AUS, exactly


def multisig_state(kafka: KafkaIO, rid: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def mine(records: list[Any]) -> list[dict[str, Any]]:
        return [v for v in (json.loads(r.value) for r in records if r.value) if v["request_id"] == rid]

    records = kafka.wait_for(GOVERNANCE_MULTISIG, lambda rs: any(check(v) for v in mine(rs)), timeout_s=90, poll_s=0.3)
    return [v for v in mine(records) if check(v)][-1]


def test_a_capture_refused_exception_is_corrected_by_the_signers(
    kafka: KafkaIO, worker_factory: Callable[..., WorkerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"{time.time_ns() % 10**10:010d}"
    payer, settle, exc_id = f"payer-{token}", f"settle-{token}", f"K:card-{token}"
    keys = tmp_path / "signers"
    signers_file = generate(keys)
    deployment = f"recon-{token}"
    monkeypatch.setenv("NEXUS_SECURITY_SIGNERS_FILE", str(signers_file))
    monkeypatch.setenv("NEXUS_RECON_HOME", str(tmp_path / "recon"))
    monkeypatch.setenv("NEXUS_RECON_KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap)
    monkeypatch.setenv("NEXUS_RECON_PLATFORM_KAFKA", "true")
    get_security_settings.cache_clear()
    get_recon_settings.cache_clear()

    def worker(name: str, module: str, env: dict[str, str]) -> WorkerProcess:
        return WorkerProcess(kafka.bootstrap, f"nexus-recon-corr-{name}-{token}", tmp_path / name, free_port(),
                             free_port(), env, module=module)  # fmt: skip

    ledger = worker("ledger", "streams.p2p", {"NEXUS_AGENTS": "settlement"})
    governance = worker("governance", "streams.security.governance", {
        "NEXUS_SECURITY_SIGNERS_FILE": str(signers_file),
        "NEXUS_SECURITY_GOVERNANCE_DEPLOYMENT_ID": deployment,
        "NEXUS_SECURITY_GOVERNANCE_TIMELOCK_SCALE": "0.0001",
        "NEXUS_SECURITY_GOVERNANCE_TICK_EVERY_S": "0.2",
    })  # fmt: skip
    log_id = f"audit-recon-{token}"
    try:
        for w in (ledger, governance):
            w.start(wait=False)
        for w in (ledger, governance):
            w.wait_ready(120)
        start_audit_log(worker_factory, log_id, tmp_path / "audit-key.pem", audit_log_checkpoint_every_s="0.3")
        kafka.produce_messages(LEDGER_COMMANDS, [m.Deposit(command_id=f"fund-{token}", account_id=payer,
                               amount_kaus_units=100_000_000, occurred_at=datetime.now(UTC))])  # fmt: skip
        _an_open_capture_refused_exception(exc_id)

        argv = ["exceptions", "correct", exc_id, "--reason", "payer agreed to settle", "--actor", "ana",
                "--from-account", payer, "--to-account", settle, "--amount", "12.345678"]  # fmt: skip
        assert cli.main(argv) == 0
        assert cli.main(argv) == 1  # ONE request: asked again while it waits, refused
        rid = correction_request_id(exc_id, 1)
        pending = multisig_state(kafka, rid, lambda v: v["state"] == "PENDING")
        assert (pending["amount_kaus_units"], pending["required_signers"], pending["operation"]) == (
            AMOUNT_UNITS, 3, "LEDGER_CORRECTION")  # fmt: skip
        assert cli.main(["exceptions", "check-corrections"]) == 0
        assert _state(exc_id) == "correction_requested"  # nothing closes before the signers

        for signer in ("signer-1", "signer-2", "signer-3"):
            args = ["--bootstrap", kafka.bootstrap, "--deployment-id", deployment, "sign", rid,
                    "--key", str(key_path(keys, signer)), "--signer", signer, "--submit"]  # fmt: skip
            assert signer_cli.main(args, Console(file=open("/dev/null", "w"))) == 0  # noqa: SIM115
        multisig_state(kafka, rid, lambda v: v["state"] == "EXECUTED")

        moves = [t for t in kafka.values(LEDGER_TRANSFERS) if (t.get("reference") or {}).get("id") == rid]
        assert [(t["debit_account_id"], t["credit_account_id"], t["amount_units"]) for t in moves] == [
            (payer, settle, AMOUNT_UNITS)]  # fmt: skip
        assert cli.main(["exceptions", "check-corrections"]) == 0
        assert _state(exc_id) == "corrected"
        assert cli.main(["exceptions", "check-corrections"]) == 0  # again: nothing changes
        with warehouse(get_recon_settings().warehouse_path) as con:
            acts = query(con, "SELECT action, published_at FROM recon_exception_actions WHERE exception_id = $e"
                         " ORDER BY acted_at", {"e": exc_id}).rows()  # fmt: skip
            sent = query(con, "SELECT sent_at, state FROM recon_corrections WHERE request_id = $r", {"r": rid}).rows()
        assert [a[0] for a in acts] == ["correction_requested", "correction_executed"]
        assert all(a[1] is not None for a in acts) and sent[0][0] is not None and sent[0][1] == "EXECUTED"

        audits = [a for a in kafka.values(AUDIT_RECORDS) if a.get("transactionId") == exc_id]
        assert sorted(a["action"] for a in audits) == [
            "RECON_EXCEPTION_CORRECTION_EXECUTED", "RECON_EXCEPTION_CORRECTION_REQUESTED"]  # fmt: skip
        assert {a["details"]["kausAmount"] for a in audits} == {"12.345678"}
        wait_logged(kafka.bootstrap, log_id, {a["auditId"] for a in audits})  # leaves of the signed audit log
    finally:
        for w in (governance, ledger):
            w.stop()
        get_security_settings.cache_clear()
        get_recon_settings.cache_clear()


def _an_open_capture_refused_exception(exc_id: str) -> None:
    """The exception as the nightly review opens it for a capture refused after payout."""
    with warehouse(get_recon_settings().warehouse_path) as con:
        con.execute(
            "INSERT INTO recon_exceptions VALUES ($e, 'capture_refused', 'open', 'STRIPE', 'USD', $s, NULL, $tx,"
            " -1234, 0, current_date, now(), current_date, 0, NULL, NULL, NULL)",
            {"e": exc_id, "s": exc_id[2:], "tx": f"BRIDGE-{exc_id[2:]}"},
        )


def _state(exc_id: str) -> str:
    with warehouse(get_recon_settings().warehouse_path) as con:
        return str(
            con.execute("SELECT state FROM recon_exceptions WHERE exception_id = $e", {"e": exc_id}).fetchall()[0][0]
        )
