"""The audit log service on the session broker (issue 18 item 3): audit.records in, audit.log entries and signed
checkpoints out; SIGKILLed while records flow and restarted, every record is a leaf exactly once; the auditors'
verifier passes on the export.

Each test appends to a log of its own (NEXUS_AUDIT_LOG_LOG_ID): other tests' audit records on the shared broker
become leaves of it too, which changes nothing checked here (only this test's auditIds are counted).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from contracts.models import AuditCheckpoint, AuditLogEntry
from contracts.topics import AUDIT_CHECKPOINTS, AUDIT_LOG, AUDIT_RECORDS, PLATFORM_DEADLETTERS
from domain.merkle import tree_root
from streams.security import verify
from streams.security.audit_log import read_to_end
from streams.security.signing import SoftwareSigner, checkpoint_signed_by, load_public_key
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

MODULE = "streams.security.audit_log"
StartWorker = Callable[..., WorkerProcess]  # the worker_factory fixture


def audit_record(run_id: str, i: int) -> tuple[bytes, bytes]:
    tx = f"tx-{run_id}-{i:05d}"
    value = {
        "auditId": f"AUDIT:{tx}:completed",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "transactionId": tx,
        "action": "BRIDGE_SETTLEMENT_COMPLETED",
        "actor": {"userId": f"user-{i % 5}", "userAgent": "NEXUS-X/2.0"},
        "details": {"kausAmount": f"{i}.000001", "fiatAmount": "12.34", "currency": "USD"},
        "signature": None,
        "blockchainRef": None,
    }
    return tx.encode(), json.dumps(value, separators=(",", ":")).encode()


def log_of(bootstrap: str, log_id: str) -> tuple[list[AuditLogEntry], list[AuditCheckpoint]]:
    entries = [
        AUDIT_LOG.decode(m.value() or b"") for m in read_to_end(bootstrap, AUDIT_LOG) if m.key() == log_id.encode()
    ]
    checkpoints = [
        AUDIT_CHECKPOINTS.decode(m.value() or b"")
        for m in read_to_end(bootstrap, AUDIT_CHECKPOINTS)
        if m.key() == log_id.encode()
    ]
    return entries, checkpoints


def wait_logged(bootstrap: str, log_id: str, audit_ids: set[str], timeout_s: float = 90.0) -> list[AuditLogEntry]:
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        entries, _ = log_of(bootstrap, log_id)
        seen = {e.record.audit_id for e in entries}
        if audit_ids <= seen:
            return entries
        time.sleep(0.5)
    raise AssertionError(f"{len(audit_ids - seen)} of {len(audit_ids)} records not in the log after {timeout_s}s")


def start(worker_factory: StartWorker, log_id: str, key_path: Path, **env: str) -> WorkerProcess:
    return worker_factory(
        module=MODULE,
        audit_log_log_id=log_id,
        audit_log_signer="software",
        audit_log_software_key_path=str(key_path),
        audit_log_software_key_id="test-software-signing-v1",
        **env,
    )


def check_export(bootstrap: str, log_id: str, key_path: Path, out: Path) -> str:
    verify.export(bootstrap, out, log_id)
    pem = out / "signing.pem"
    pem.write_text(SoftwareSigner.load_or_create(key_path, "x").public_key_pem())
    report = verify.check_log(verify.CheckRequest(out, [load_public_key(pem.read_bytes())], [], log_id), log_id)
    assert report.ok, verify.render(report)
    return verify.render(report)


def assert_whole_log(entries: list[AuditLogEntry], checkpoints: list[AuditCheckpoint], key_path: Path) -> None:
    """Leaves 0..n-1 once each, no auditId twice, every leaf covered by a signed checkpoint naming it."""
    assert [e.leaf_index for e in entries] == list(range(len(entries)))
    repeated = [a for a, n in Counter(e.record.audit_id for e in entries).items() if n > 1]
    assert not repeated, f"appended twice: {repeated[:5]}"
    key = load_public_key(SoftwareSigner.load_or_create(key_path, "x").public_key_pem())
    by_size = {c.tree_size: c for c in checkpoints}
    assert all(checkpoint_signed_by(c, key) for c in checkpoints)
    assert max(by_size) == len(entries)
    leaves = [base64.b64decode(e.leaf_b64) for e in entries]
    for size, c in by_size.items():
        assert tree_root(leaves[:size]).hex() == c.root_hash
    for e in entries:
        c = by_size[e.checkpoint_tree_size]
        assert e.leaf_index < c.tree_size and e.record.signature == c.signature
        assert e.record.blockchain_ref == f"{e.log_id}/{c.tree_size}/{e.leaf_index}"


def test_records_become_leaves_under_a_signed_checkpoint(
    kafka: KafkaIO, worker_factory: StartWorker, run_id: str, tmp_path: Path
) -> None:
    log_id = f"audit-{run_id}"
    key_path = tmp_path / "dev-key.pem"
    records = [audit_record(run_id, i) for i in range(30)]
    for key, value in records:
        kafka.produce(AUDIT_RECORDS, key, value)
    kafka.produce(AUDIT_RECORDS, *records[4])  # written again after a producer's crash: the same auditId
    bad_key = f"bad-{run_id}".encode()
    kafka.produce(AUDIT_RECORDS, bad_key, b'{"auditId": "no-rest"}', bad_input=True)
    kafka.flush()
    worker = start(worker_factory, log_id, key_path, audit_log_checkpoint_every_s="0.3")
    mine = {json.loads(v)["auditId"] for _, v in records}
    wait_logged(kafka.bootstrap, log_id, mine)
    entries, checkpoints = log_of(kafka.bootstrap, log_id)
    assert_whole_log(entries, checkpoints, key_path)
    by_id = {e.record.audit_id: e for e in entries}
    for _key, value in records:  # each leaf is the record's exact bytes
        assert base64.b64decode(by_id[json.loads(value)["auditId"]].leaf_b64) == value
    assert all(c.key_id == "test-software-signing-v1" for c in checkpoints)
    letters = [PLATFORM_DEADLETTERS.decode(r.value or b"") for r in kafka.read_all(PLATFORM_DEADLETTERS)]
    mine_dead = [
        d for d in letters if d.source_topic == AUDIT_RECORDS.name and d.key_b64 == base64.b64encode(bad_key).decode()
    ]
    assert mine_dead and mine_dead[0].reason_code == "MISSING_FIELD"
    worker.stop()
    assert "Traceback" not in worker.log_text(since_start=False)
    report = check_export(kafka.bootstrap, log_id, key_path, tmp_path / "export")
    assert f"log {log_id}: {len(entries)} leaves" in report


def test_sigkill_while_records_flow_appends_each_record_once(
    kafka: KafkaIO, worker_factory: StartWorker, run_id: str, tmp_path: Path
) -> None:
    log_id = f"audit-kill-{run_id}"
    key_path = tmp_path / "dev-key.pem"
    records = [audit_record(run_id, i) for i in range(600)]
    rng = random.Random(18)
    worker = start(
        worker_factory, log_id, key_path, audit_log_checkpoint_every_s="0.05", audit_log_checkpoint_every_records="7"
    )
    sent = threading.Event()

    def produce() -> None:
        for i, (key, value) in enumerate(records):
            kafka.produce(AUDIT_RECORDS, key, value)
            if i % 10 == 0:
                kafka.flush()
                time.sleep(0.02)
            if i % 97 == 0 and i:  # a producer re-sends some records after its own crash
                kafka.produce(AUDIT_RECORDS, *records[rng.randrange(i)])
        kafka.flush()
        sent.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    kills = 0
    while not sent.is_set() or kills < 3:
        time.sleep(rng.uniform(0.3, 1.2))
        worker.kill()  # no shutdown, no flush: a transaction may be open
        kills += 1
        worker.start()
    producer.join(60)
    mine = {json.loads(v)["auditId"] for _, v in records}
    wait_logged(kafka.bootstrap, log_id, mine)
    for key, value in records[:50]:  # re-sent after the restarts: the rebuilt log knows them
        kafka.produce(AUDIT_RECORDS, key, value)
    kafka.flush()
    time.sleep(2)
    worker.stop()
    entries, checkpoints = log_of(kafka.bootstrap, log_id)
    assert_whole_log(entries, checkpoints, key_path)
    assert mine <= {e.record.audit_id for e in entries}
    assert kills >= 3 and worker.starts == kills + 1
    check_export(kafka.bootstrap, log_id, key_path, tmp_path / "export")


def test_checkpoints_signed_in_the_hsm_verify_with_its_public_key(
    kafka: KafkaIO, worker_factory: StartWorker, run_id: str, tmp_path: Path
) -> None:
    """The production path: NEXUS_AUDIT_LOG_SIGNER=hsm, the ACTIVE signing version of a SoftHSM2 token over PKCS#11."""
    from streams.security.keys import KeyManager, open_hsm
    from streams.security.settings import SecuritySettings

    security = SecuritySettings(hsm_dir=tmp_path / "hsm", token_label=f"audit-{run_id}")
    with open_hsm(security) as hsm:
        manager = KeyManager(hsm, security)
        manager.rotate_due()  # creates the keys: signing v1 ACTIVE
        signer = manager.signer()
        key_id, pem = signer.key_id, signer.public_key_pem()
    log_id = f"audit-hsm-{run_id}"
    records = [audit_record(run_id, i) for i in range(12)]
    for key, value in records:
        kafka.produce(AUDIT_RECORDS, key, value)
    kafka.flush()
    worker = worker_factory(
        module=MODULE,
        audit_log_log_id=log_id,
        audit_log_checkpoint_every_s="0.3",
        security_hsm_dir=str(security.hsm_path),
        security_token_label=security.token_label,
    )
    wait_logged(kafka.bootstrap, log_id, {json.loads(v)["auditId"] for _, v in records})
    worker.stop()
    entries, checkpoints = log_of(kafka.bootstrap, log_id)
    assert len(entries) >= len(records) and checkpoints and all(c.key_id == key_id for c in checkpoints)
    out = tmp_path / "export"
    verify.export(kafka.bootstrap, out, log_id)
    (out / "signing.pem").write_text(pem)
    assert verify.main(["check", "--dir", str(out), "--public-key", str(out / "signing.pem")]) == 0
    other = SoftwareSigner.generate()
    (out / "other.pem").write_text(other.public_key_pem())
    assert verify.main(["check", "--dir", str(out), "--public-key", str(out / "other.pem")]) == 1
    assert security.user_pin_path.read_text().strip() not in worker.log_text(since_start=False)
