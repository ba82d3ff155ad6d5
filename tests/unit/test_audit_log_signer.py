"""The audit log asks for the signing key again as soon as a key manager's record says it changed: the checkpoint
covering a rotation's own record is signed by the new key, not up to ``signer_refresh_s`` later (by then no new leaf
may come to be signed, and the newest checkpoint would stay under the old key)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from streams.security.audit_log import AuditLog, AuditLogLoop, AuditLogSettings
from streams.security.signing import SoftwareSigner


class Signers:
    """Hands out a new software key each time it is asked (a rotation between two asks)."""

    def __init__(self) -> None:
        self.handed: list[SoftwareSigner] = []

    def __call__(self) -> SoftwareSigner:
        signer = SoftwareSigner.generate(key_id=f"nexus-signing-v{len(self.handed) + 1}")
        self.handed.append(signer)
        return signer


def loop(signers: Signers) -> Any:
    """The loop's record handling and signer choice, without Kafka (its clients are not touched here)."""
    audit_loop: Any = AuditLogLoop.__new__(AuditLogLoop)
    audit_loop.audit_settings = AuditLogSettings(signer_refresh_s=3600)
    audit_loop.signer_factory, audit_loop.signer = signers, signers()
    audit_loop.signer_at = 0.0
    audit_loop.audit = AuditLog("test-log")
    audit_loop.positions, audit_loop.dead_letters = {}, []
    audit_loop.first_pending_at, audit_loop.unsaved = None, False
    return audit_loop


def record(i: int, action: str) -> Any:
    value = {
        "auditId": f"AUDIT:k-{i}",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "transactionId": f"k-{i}",
        "action": action,
        "actor": {"userId": "key-manager", "userAgent": "NEXUS-X/keys"},
        "details": {},
        "signature": None,
        "blockchainRef": None,
    }
    raw = json.dumps(value).encode()
    return SimpleNamespace(
        error=lambda: None, topic=lambda: "audit.records", partition=lambda: 0, offset=lambda: i,
        key=lambda: f"k-{i}".encode(), value=lambda: raw,
    )  # fmt: skip


def test_a_rotation_record_makes_its_checkpoint_signed_by_the_new_key() -> None:
    signers = Signers()
    audit_loop = loop(signers)
    audit_loop.signer_at = time.monotonic()  # just asked: the next ask is an hour away
    audit_loop.handle(record(0, "BRIDGE_SETTLEMENT_COMPLETED"))
    assert audit_loop._signer() is signers.handed[0]  # nothing says the key changed: the same signer
    audit_loop.handle(record(1, "KEY_ROTATED_EARLY"))
    batch = audit_loop.audit.batch(audit_loop._signer(), datetime.now(UTC))
    assert len(signers.handed) == 2 and batch.checkpoint is not None
    assert batch.checkpoint.key_id == "nexus-signing-v2"


def test_other_key_records_do_not_ask_again() -> None:
    signers = Signers()
    audit_loop = loop(signers)
    audit_loop.signer_at = time.monotonic()
    for i, action in enumerate(("KEY_PUBLISHED", "KEY_BACKUP_EXPORTED", "KEY_GENERATED")):
        audit_loop.handle(record(i, action))
    assert audit_loop._signer() is signers.handed[0] and len(signers.handed) == 1
