"""Checkpoint signing: the signer interface the audit log uses, a software signer, and verification.

The audit log signs checkpoints (signed tree heads), never single records. In production the signer is the HSM's
ACTIVE signing key version over PKCS#11 (``streams.security.hsm.HsmSigner``); ``SoftwareSigner`` holds an ECDSA
P-256 key in process memory and exists for unit tests and, only when explicitly configured, for development.
Verification needs nothing but the public key (SubjectPublicKeyInfo PEM) — what an outside auditor has.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contracts.models import AuditCheckpoint
from domain.merkle import checkpoint_text
from domain.timeconv import from_ms, to_ms


@runtime_checkable
class CheckpointSigner(Protocol):
    """Signs with one key version (docs/audit-log.md: what is signed)."""

    @property
    def key_id(self) -> str:
        """The governance.keys key_id of the version that signs, e.g. ``nexus-signing-v3``."""
        ...

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(message), DER-encoded."""
        ...

    def public_key_pem(self) -> str:
        """SubjectPublicKeyInfo PEM of that version."""
        ...


class SoftwareSigner:
    """An ECDSA P-256 key in memory (tests; development only when configured: docs/audit-log.md)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, key_id: str) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError(f"checkpoint keys are ECDSA P-256, not {private_key.curve.name}")
        self._key = private_key
        self._key_id = key_id

    @classmethod
    def generate(cls, key_id: str = "software-signing-v1") -> SoftwareSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()), key_id)

    @classmethod
    def from_pem(cls, pem: bytes, key_id: str) -> SoftwareSigner:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("not an EC private key")
        return cls(key, key_id)

    @classmethod
    def load_or_create(cls, path: Path, key_id: str) -> SoftwareSigner:
        """The development key at `path` (PKCS#8 PEM, mode 0600), created there on first use."""
        if path.exists():
            return cls.from_pem(path.read_bytes(), key_id)
        signer = cls.generate(key_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(signer.private_key_pem())
        return signer

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def public_key_pem(self) -> str:
        return public_pem(self._key.public_key())

    def private_key_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def public_pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: str | bytes) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from SubjectPublicKeyInfo PEM; anything else is refused with a reason."""
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the public key is not an ECDSA P-256 key")
    return key


def verify_signature(public_key: ec.EllipticCurvePublicKey, message: bytes, signature_der: bytes) -> bool:
    try:
        public_key.verify(signature_der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------- checkpoints


def checkpoint_message(checkpoint: AuditCheckpoint) -> bytes:
    """The canonical text a checkpoint's signature covers (domain.merkle.checkpoint_text)."""
    return checkpoint_text(
        checkpoint.log_id,
        checkpoint.tree_size,
        bytes.fromhex(checkpoint.root_hash),
        to_ms(checkpoint.timestamp),
        checkpoint.key_id,
    )


def sign_checkpoint(
    signer: CheckpointSigner, log_id: str, tree_size: int, root: bytes, now: datetime
) -> AuditCheckpoint:
    """A signed tree head; its time is kept to the millisecond, as the signed text has it."""
    timestamp_ms = to_ms(now)
    key_id = signer.key_id
    signature = signer.sign(checkpoint_text(log_id, tree_size, root, timestamp_ms, key_id))
    return AuditCheckpoint(
        log_id=log_id,
        tree_size=tree_size,
        root_hash=root.hex(),
        timestamp=from_ms(timestamp_ms),
        key_id=key_id,
        signature=base64.b64encode(signature).decode(),
    )


def checkpoint_signed_by(checkpoint: AuditCheckpoint, public_key: ec.EllipticCurvePublicKey) -> bool:
    """Whether `public_key` signed exactly this checkpoint (every field is in the signed text)."""
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
    except ValueError:
        return False
    return verify_signature(public_key, checkpoint_message(checkpoint), signature)


__all__ = [
    "CheckpointSigner",
    "SoftwareSigner",
    "checkpoint_message",
    "checkpoint_signed_by",
    "load_public_key",
    "public_pem",
    "sign_checkpoint",
    "verify_signature",
]
