"""Key operations audited (domain.keys audit facts, streams.security.keys.audit_record): one fact per operation with
an id fixed when it happens, kept in the registry's outbox until acknowledged, and no key material in a record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain import keys as dk
from streams.security.keys import audit_record

T0 = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
PEM = "-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"


def ring_with_all() -> tuple[dk.KeyRing, list[dk.KeyVersion]]:
    ring, created = dk.KeyRing(), []
    for purpose, extra in (
        (dk.Purpose.MASTER, {"check_value": "abc123"}),
        (dk.Purpose.SIGNING, {"public_key_pem": PEM}),
        (dk.Purpose.ENCRYPTION, {}),
    ):
        ring, new = dk.with_new_version(ring, purpose, T0, **extra)  # type: ignore[arg-type]
        created.append(new)
    return ring, created


def test_each_operation_has_its_action_and_a_fixed_id() -> None:
    ring, (master, signing, _enc) = ring_with_all()
    first = dk.created_audit(signing, had_active=False, early=False)
    assert (first.audit_key, first.action, first.transaction_id, first.at) == (
        "nexus-signing-v1:generated", dk.KeyAction.GENERATED, "nexus-signing-v1", T0)  # fmt: skip
    ring2, v2 = dk.with_new_version(ring, dk.Purpose.SIGNING, T0 + timedelta(days=90), public_key_pem=PEM)
    assert dk.created_audit(v2, had_active=True, early=False).action is dk.KeyAction.ROTATED
    early = dk.created_audit(v2, had_active=True, early=True, ceremony_id="gov-rotate-1")
    assert (early.audit_key, early.action, early.transaction_id) == (
        "gov-rotate-1:rotated-early:nexus-signing-v2", dk.KeyAction.ROTATED_EARLY, "gov-rotate-1")  # fmt: skip
    gone = dk.destroyed_audit("nexus-signing-v1", T0, "gov-destroy-1")
    assert (gone.audit_key, gone.transaction_id) == ("gov-destroy-1:destroyed:nexus-signing-v1", "gov-destroy-1")
    assert dk.destroyed_audit("nexus-signing-v1", T0).transaction_id == "nexus-signing-v1"
    backup = dk.backup_audit("backup-20310301T090000000000Z", master.key_id, T0)
    assert (backup.action, backup.transaction_id) == (dk.KeyAction.BACKUP_EXPORTED, "nexus-master-v1")
    by_ceremony = dk.restored_audit("backup-x", T0, "gov-restore-1")
    assert (by_ceremony.audit_key, by_ceremony.transaction_id) == ("gov-restore-1:restored:backup-x", "gov-restore-1")
    # without a ceremony, two restores of one backup (two sites, two moments) are two operations
    assert (
        dk.restored_audit("backup-x", T0).audit_key != dk.restored_audit("backup-x", T0 + timedelta(hours=1)).audit_key
    )
    assert len(ring2.versions) == 4


def test_the_outbox_keeps_a_fact_once_until_acknowledged_and_survives_the_registry() -> None:
    ring, created = ring_with_all()
    facts = [dk.created_audit(k, had_active=False, early=False) for k in created]
    ring = dk.with_audit(ring, *facts)
    ring = dk.with_audit(ring, facts[0])  # an operation repeated after a crash queues nothing new
    assert [f.audit_key for f in ring.audit_outbox] == [f.audit_key for f in facts]
    again = dk.ring_from_json(dk.ring_to_json(ring))
    assert again.audit_outbox == ring.audit_outbox
    sent = dk.without_audit(again, [facts[0].audit_key])
    assert [f.audit_key for f in sent.audit_outbox] == [f.audit_key for f in facts[1:]]
    legacy = dk.ring_to_json(ring)
    del legacy["audit_outbox"], legacy["published"]
    assert dk.ring_from_json(legacy).audit_outbox == ()  # a registry from before the outbox still loads


def test_a_full_outbox_refuses_the_next_operation_loudly() -> None:
    ring = dk.KeyRing(audit_outbox=tuple(dk.backup_audit(f"b{i}", "nexus-master-v1", T0) for i in range(10_000)))
    with pytest.raises(dk.KeyRefused, match=r"not on audit\.records yet"):
        dk.with_audit(ring, dk.backup_audit("one-more", "nexus-master-v1", T0))


def test_published_is_audited_once_per_state() -> None:
    ring, _ = ring_with_all()
    ring = dk.published_audits(ring, T0)
    assert sorted(f.audit_key for f in ring.audit_outbox) == [
        "nexus-encryption-v1:published:ACTIVE",
        "nexus-master-v1:published:ACTIVE",
        "nexus-signing-v1:published:ACTIVE",
    ]
    assert dk.published_audits(ring, T0 + timedelta(hours=1)) == ring  # published again: nothing new
    rotated, _ = dk.with_new_version(ring, dk.Purpose.SIGNING, T0 + timedelta(days=1), public_key_pem=PEM)
    after = dk.published_audits(rotated, T0 + timedelta(days=1))
    new = [f.audit_key for f in after.audit_outbox[len(ring.audit_outbox) :]]
    assert sorted(new) == ["nexus-signing-v1:published:RETIRED", "nexus-signing-v2:published:ACTIVE"]


def test_the_record_is_a_contract_audit_record_without_key_material() -> None:
    fact = dk.destroyed_audit("nexus-signing-v1", T0, "gov-destroy-1")
    record = audit_record(fact)
    assert record.audit_id == "AUDIT-KEY:gov-destroy-1:destroyed:nexus-signing-v1"
    assert (record.transaction_id, record.action, record.actor.user_id) == (
        "gov-destroy-1", "KEY_DESTROYED", "nexus-keys")  # fmt: skip
    assert record == audit_record(fact)  # sent again: the same record, the same auditId
    text = record.model_dump_json(by_alias=True)
    assert "BEGIN" not in text and "abc123" not in text and record.signature is None
    long_id = "x" * 128
    hashed = audit_record(dk.destroyed_audit("nexus-signing-v1", T0, long_id))
    assert len(hashed.audit_id) <= 128 and hashed.audit_id.startswith("AUDIT-KEY:")
    assert hashed.audit_id == audit_record(dk.destroyed_audit("nexus-signing-v1", T0, long_id)).audit_id
