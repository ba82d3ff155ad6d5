"""Key operations reach audit.records (issue 18): a real SoftHSM2 token, the key manager, the session broker.

Init, a scheduled rotation at day 90, an early rotation and a destroy by key ceremony, backups and publications:
each one record with its KEY_* action, the ceremony's id as transactionId; a crash after the broker acknowledged
but before the registry forgot them sends the same auditIds again; no PIN or key material in any record."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from contracts.topics import AUDIT_RECORDS
from domain import keys as dk
from streams.security import keys
from streams.security.keys import KeyManager, KeyPublisher
from tests.integration.test_hsm import T0, Clock, settings_in
from tests.support.kafka_io import KafkaIO

pytestmark = pytest.mark.slow


def test_key_operations_reach_audit_records(kafka: KafkaIO, kafka_bootstrap: str, tmp_path: Path) -> None:
    at = T0 + timedelta(microseconds=uuid.uuid4().int % 1_000_000)  # this test's records: their timestamps
    settings = settings_in(tmp_path)
    clock = Clock(at)
    km = KeyManager(keys.open_hsm(settings), settings, clock=clock)
    publisher = KeyPublisher(kafka_bootstrap)
    sent: list[list[str]] = []

    def audit(records: list) -> None:  # type: ignore[type-arg]
        publisher.audit(records)
        sent.append([r.audit_id for r in records])

    try:
        km.rotate_due()  # init: three versions and a first backup, queued (no Kafka needed)
        publisher(km.metadata())
        km.note_published()
        assert km.send_audit(audit) == 7 and km.ring().audit_outbox == ()  # 3 generated, 1 backup, 3 published
        clock.at = at + timedelta(days=90)
        km.rotate_due()  # scheduled rotation of all three, and a backup
        ceremony = f"gov-rotate-{uuid.uuid4().hex[:8]}"
        km.rotate_now("SIGNING", ceremony_id=ceremony)
        km.rotate_now("SIGNING", ceremony_id=ceremony)  # executed twice by governance: one operation
        km.destroy("nexus-signing-v1", ceremony_id=f"{ceremony}-destroy")
        queued = [f.audit_key for f in km.ring().audit_outbox]
        # a crash after the broker acknowledged, before the registry forgot them: sent again, the same auditIds
        publisher.audit([keys.audit_record(f) for f in km.ring().audit_outbox])
        assert km.send_audit(audit) == len(queued)
        pins = [(settings.hsm_path / "user.pin").read_text(), (settings.hsm_path / "so.pin").read_text()]
    finally:
        km.hsm.close()

    ids = {i for batch in sent for i in batch}
    raw = kafka.wait_for(
        AUDIT_RECORDS,
        lambda rs: ids <= {AUDIT_RECORDS.decode(r.value).audit_id for r in rs if r.value and b"AUDIT-KEY:" in r.value},
    )
    # the session broker is shared: other tests' deliberately bad audit records are skipped like other tests' records
    mine = [r for r in raw if r.value and b"AUDIT-KEY:" in r.value and AUDIT_RECORDS.decode(r.value).audit_id in ids]
    records = [AUDIT_RECORDS.decode(r.value) for r in mine if r.value]
    actions = {(x.action, x.transaction_id) for x in records}
    assert {
        ("KEY_GENERATED", "nexus-master-v1"),
        ("KEY_GENERATED", "nexus-signing-v1"),
        ("KEY_GENERATED", "nexus-encryption-v1"),
        ("KEY_BACKUP_EXPORTED", "nexus-master-v1"),
        ("KEY_PUBLISHED", "nexus-signing-v1"),
        ("KEY_ROTATED", "nexus-master-v2"),
        ("KEY_ROTATED", "nexus-signing-v2"),
        ("KEY_ROTATED", "nexus-encryption-v2"),
        ("KEY_BACKUP_EXPORTED", "nexus-master-v2"),
        ("KEY_ROTATED_EARLY", ceremony),
        ("KEY_DESTROYED", f"{ceremony}-destroy"),
    } <= actions
    assert [x.action for x in records].count("KEY_ROTATED_EARLY") == 2  # the crash's re-send, same auditId
    assert len({x.audit_id for x in records if x.action == "KEY_ROTATED_EARLY"}) == 1
    assert f"AUDIT-KEY:{ceremony}:rotated-early:nexus-signing-v3" in ids
    assert all(r.key == AUDIT_RECORDS.key_of(AUDIT_RECORDS.decode(r.value)) for r in mine if r.value)
    for r in mine:
        text = (r.value or b"").decode()
        assert "BEGIN" not in text and not any(pin in text for pin in pins)
    assert dk.KeyAction.PUBLISHED.value in {x.action for x in records}
