"""The platform's HSM keys (spec §4.1) — the functional core: versions, rotation, backup schedule, states, what is
published, and the master key's custodian shares.

Pure: no clock reads, no I/O, no randomness of its own (the caller passes ``random_bytes``). The shell is
``streams.security.keys`` (key manager) over ``streams.security.hsm`` (PKCS#11). See docs/security.md.

* Three purposes: MASTER (AES-256, wraps the others for backup), SIGNING (ECDSA P-256, signs the audit log's
  checkpoints), ENCRYPTION (AES-256, wraps the data keys of personal data at rest).
* Each purpose has versions ``nexus-<purpose>-v<n>``; exactly one ACTIVE at a time. A version created at ``t`` is due
  for rotation at ``t + rotation_period`` exactly, which is also its ``expires_at``. Rotation makes ``n + 1`` ACTIVE
  and ``n`` RETIRED (it still verifies and decrypts); a key ceremony may destroy a RETIRED version (never the
  ACTIVE one). States only move forward: ACTIVE -> RETIRED -> DESTROYED.
* Backups are due ``backup_interval`` after the last one (and at once when there is none).
* The master key's value is split into ``n`` Shamir shares over GF(2^8), any ``k`` of which rebuild it: that is how
  a restore into an empty token gets the key that unwraps the backup (the token never exports the master itself).
* Every key operation is audited (``KeyAudit``, one per operation, ``KeyAction`` names it): the fact is added to the
  ring's ``audit_outbox`` in the same registry write as the operation, and leaves it once audit.records acknowledged
  it. Its ``audit_key`` is fixed when the operation happens, so a record sent again after a crash is the same record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

LABEL_PREFIX = "nexus"
_LABEL = re.compile(r"^nexus-(master|signing|encryption)-v([1-9][0-9]{0,8})$")


class Purpose(StrEnum):
    MASTER = "MASTER"
    SIGNING = "SIGNING"
    ENCRYPTION = "ENCRYPTION"


class State(StrEnum):
    ACTIVE = "ACTIVE"
    RETIRED = "RETIRED"
    DESTROYED = "DESTROYED"


ALGORITHM: Mapping[Purpose, str] = {
    Purpose.MASTER: "AES-256",
    Purpose.SIGNING: "ECDSA-P256",
    Purpose.ENCRYPTION: "AES-256",
}


class KeyRefused(ValueError):
    """A key operation that must not happen (destroying the ACTIVE version, an unknown key id, ...)."""


@dataclass(frozen=True)
class KeyPolicy:
    rotation_period: timedelta = timedelta(days=90)
    backup_interval: timedelta = timedelta(hours=2)

    def __post_init__(self) -> None:
        if self.rotation_period <= timedelta(0) or self.backup_interval <= timedelta(0):
            raise ValueError("rotation period and backup interval must be positive")


def label(purpose: Purpose, version: int) -> str:
    if version < 1:
        raise ValueError(f"key versions start at 1, not {version}")
    return f"{LABEL_PREFIX}-{purpose.value.lower()}-v{version}"


def parse_label(text: str) -> tuple[Purpose, int]:
    """``nexus-signing-v3`` -> (SIGNING, 3); ValueError for anything else."""
    match = _LABEL.match(text)
    if match is None:
        raise ValueError(f"not a key label: {text!r}")
    return Purpose(match.group(1).upper()), int(match.group(2))


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("timestamps must be UTC-aware")
    return at.astimezone(UTC)


@dataclass(frozen=True)
class KeyVersion:
    purpose: Purpose
    version: int
    created_at: datetime
    state: State = State.ACTIVE
    retired_at: datetime | None = None
    destroyed_at: datetime | None = None
    # SIGNING: the public key (SubjectPublicKeyInfo PEM); kept after the private key is destroyed, for auditors.
    public_key_pem: str | None = None
    # MASTER: key check value (first 3 bytes of AES-ECB(key, 0^16), hex): proves shares rebuilt the right key.
    check_value: str | None = None

    @property
    def key_id(self) -> str:
        return label(self.purpose, self.version)

    def expires_at(self, policy: KeyPolicy) -> datetime:
        return self.created_at + policy.rotation_period


def rotation_due(key: KeyVersion, now: datetime, policy: KeyPolicy) -> bool:
    """An ACTIVE version is due at ``created_at + rotation_period`` exactly (not a microsecond earlier)."""
    return key.state is State.ACTIVE and _utc(now) >= key.expires_at(policy)


def backup_due(last_backup_at: datetime | None, now: datetime, policy: KeyPolicy) -> bool:
    return last_backup_at is None or _utc(now) >= last_backup_at + policy.backup_interval


class KeyAction(StrEnum):
    """The audit record's action of each key operation (docs/audit-log.md)."""

    GENERATED = "KEY_GENERATED"  # the first version of a purpose (init)
    ROTATED = "KEY_ROTATED"  # scheduled: the ACTIVE version reached its rotation time
    ROTATED_EARLY = "KEY_ROTATED_EARLY"  # a ROTATE key ceremony (or an operator's rotate_now)
    DESTROYED = "KEY_DESTROYED"  # a DESTROY key ceremony
    RESTORED = "KEY_RESTORED"  # a RESTORE key ceremony (or the restore command)
    BACKUP_EXPORTED = "KEY_BACKUP_EXPORTED"  # a backup file written (keys wrapped under the ACTIVE master)
    PUBLISHED = "KEY_PUBLISHED"  # a version's metadata in a new state acknowledged on governance.keys


@dataclass(frozen=True)
class KeyAudit:
    """One key operation to audit. ``audit_key`` is unique per operation (the record's auditId is built from it);
    ``transaction_id``: the ceremony (governance request) id, else the key version (a backup: its wrapping key)."""

    audit_key: str
    action: KeyAction
    transaction_id: str
    at: datetime


AUDIT_OUTBOX_MAX = 10_000  # unsent facts; beyond it key operations are refused until audit.records is reachable


@dataclass(frozen=True)
class KeyRing:
    """Every version of every purpose, plus the ceremonies already applied (id -> the key id they produced or
    touched), so a ceremony executed twice (governance executes at least once) changes the ring once; the audit
    facts not yet acknowledged on audit.records, and the state each version was last published in."""

    versions: tuple[KeyVersion, ...] = ()
    last_backup_at: datetime | None = None
    ceremonies: Mapping[str, str] = field(default_factory=dict)
    audit_outbox: tuple[KeyAudit, ...] = ()
    published: Mapping[str, str] = field(default_factory=dict)

    def of(self, purpose: Purpose) -> list[KeyVersion]:
        return sorted((k for k in self.versions if k.purpose is purpose), key=lambda k: k.version)

    def active(self, purpose: Purpose) -> KeyVersion | None:
        return next((k for k in self.versions if k.purpose is purpose and k.state is State.ACTIVE), None)

    def get(self, key_id: str) -> KeyVersion | None:
        return next((k for k in self.versions if k.key_id == key_id), None)

    def next_version(self, purpose: Purpose) -> int:
        return max((k.version for k in self.of(purpose)), default=0) + 1

    def live(self) -> list[KeyVersion]:
        """Versions whose key material is in the token (not destroyed)."""
        return [k for k in self.versions if k.state is not State.DESTROYED]


def due(ring: KeyRing, now: datetime, policy: KeyPolicy) -> list[Purpose]:
    """Purposes that need a new version now: none ACTIVE yet, or the ACTIVE one reached its rotation time."""
    out = []
    for purpose in Purpose:
        current = ring.active(purpose)
        if current is None or rotation_due(current, now, policy):
            out.append(purpose)
    return out


def with_new_version(
    ring: KeyRing,
    purpose: Purpose,
    now: datetime,
    *,
    public_key_pem: str | None = None,
    check_value: str | None = None,
) -> tuple[KeyRing, KeyVersion]:
    """The ring after a rotation of ``purpose``: version n+1 ACTIVE, the previous ACTIVE one RETIRED at ``now``."""
    now = _utc(now)
    if (purpose is Purpose.SIGNING) != (public_key_pem is not None):
        raise ValueError("a SIGNING version carries its public key, and only it")
    if (purpose is Purpose.MASTER) != (check_value is not None):
        raise ValueError("a MASTER version carries its check value, and only it")
    new = KeyVersion(purpose, ring.next_version(purpose), now, public_key_pem=public_key_pem, check_value=check_value)
    versions = tuple(
        replace(k, state=State.RETIRED, retired_at=now) if k.purpose is purpose and k.state is State.ACTIVE else k
        for k in ring.versions
    )
    return replace(ring, versions=(*versions, new)), new


def with_destroyed(ring: KeyRing, key_id: str, now: datetime) -> KeyRing:
    """The ring after a destroy ceremony. Destroying an already destroyed version changes nothing (idempotent)."""
    key = ring.get(key_id)
    if key is None:
        raise KeyRefused(f"unknown key {key_id}")
    if key.state is State.ACTIVE:
        raise KeyRefused(f"{key_id} is ACTIVE: rotate it first, then destroy the RETIRED version")
    if key.state is State.DESTROYED:
        return ring
    gone = replace(key, state=State.DESTROYED, destroyed_at=_utc(now))
    return replace(ring, versions=tuple(gone if k.key_id == key_id else k for k in ring.versions))


def with_ceremony(ring: KeyRing, ceremony_id: str | None, result: str) -> KeyRing:
    if ceremony_id is None:
        return ring
    return replace(ring, ceremonies={**ring.ceremonies, ceremony_id: result})


# -- audit facts (pure: the shell adds them in the same registry write as the operation)


def with_audit(ring: KeyRing, *facts: KeyAudit) -> KeyRing:
    """The ring with ``facts`` queued (a fact already queued is not queued twice)."""
    queued = {f.audit_key for f in ring.audit_outbox}
    new = tuple(f for f in facts if f.audit_key not in queued)
    if len(ring.audit_outbox) + len(new) > AUDIT_OUTBOX_MAX:
        raise KeyRefused(
            f"{len(ring.audit_outbox)} key audit records are not on audit.records yet: start the key manager service "
            "(python -m streams.security.keys) with Kafka reachable before any other key operation"
        )
    return replace(ring, audit_outbox=(*ring.audit_outbox, *new))


def without_audit(ring: KeyRing, audit_keys: Iterable[str]) -> KeyRing:
    """The ring once these facts were acknowledged on audit.records."""
    sent = set(audit_keys)
    return replace(ring, audit_outbox=tuple(f for f in ring.audit_outbox if f.audit_key not in sent))


def created_audit(new: KeyVersion, had_active: bool, early: bool, ceremony_id: str | None = None) -> KeyAudit:
    """A new version: the first of its purpose, a scheduled rotation, or an early one (a ceremony)."""
    if early:
        tx = ceremony_id or new.key_id
        return KeyAudit(f"{tx}:rotated-early:{new.key_id}", KeyAction.ROTATED_EARLY, tx, new.created_at)
    if not had_active:
        return KeyAudit(f"{new.key_id}:generated", KeyAction.GENERATED, new.key_id, new.created_at)
    return KeyAudit(f"{new.key_id}:rotated", KeyAction.ROTATED, new.key_id, new.created_at)


def destroyed_audit(key_id: str, at: datetime, ceremony_id: str | None = None) -> KeyAudit:
    tx = ceremony_id or key_id
    return KeyAudit(f"{tx}:destroyed:{key_id}", KeyAction.DESTROYED, tx, _utc(at))


def restored_audit(backup_name: str, at: datetime, ceremony_id: str | None = None) -> KeyAudit:
    """A restore: by its ceremony, else by the backup and the moment (two sites restoring one backup are two)."""
    at = _utc(at)
    if ceremony_id is not None:
        return KeyAudit(f"{ceremony_id}:restored:{backup_name}", KeyAction.RESTORED, ceremony_id, at)
    return KeyAudit(f"{backup_name}:restored:{_stamp(at)}", KeyAction.RESTORED, backup_name, at)


def backup_audit(backup_name: str, wrapping_key_id: str, at: datetime) -> KeyAudit:
    return KeyAudit(f"backup:{backup_name}", KeyAction.BACKUP_EXPORTED, wrapping_key_id, _utc(at))


def published_audits(ring: KeyRing, at: datetime) -> KeyRing:
    """After every version's metadata was acknowledged on governance.keys: one fact per version whose state was
    not published before (a first publication, RETIRED after a rotation, DESTROYED), queued."""
    changed = [k for k in ring.versions if ring.published.get(k.key_id) != k.state.value]
    facts = [
        KeyAudit(f"{k.key_id}:published:{k.state.value}", KeyAction.PUBLISHED, k.key_id, _utc(at)) for k in changed
    ]
    published = {**ring.published, **{k.key_id: k.state.value for k in changed}}
    return replace(with_audit(ring, *facts), published=published)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%S%fZ")


def published(key: KeyVersion, policy: KeyPolicy, observed_at: datetime) -> dict[str, Any]:
    """The fields of the ``governance.keys`` record (contracts.models.KeyMetadata) for one version.

    ``expires_at`` is when the version stops being the one in use (its rotation time); RETIRED and DESTROYED
    versions are published with their state so consumers can tell them from the ACTIVE one. The public key is
    published for SIGNING versions in every state: auditors verify old checkpoints with it.
    """
    return {
        "key_id": key.key_id,
        "label": key.key_id,
        "algorithm": ALGORITHM[key.purpose],
        "created_at": key.created_at,
        "expires_at": key.expires_at(policy),
        "observed_at": _utc(observed_at),
        "purpose": key.purpose.value,
        "version": key.version,
        "state": key.state.value,
        "public_key_pem": key.public_key_pem,
    }


# -- the registry's JSON form (the shell stores it atomically; the backup file carries it too)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else _utc(datetime.fromisoformat(text))


def ring_to_json(ring: KeyRing) -> dict[str, Any]:
    return {
        "versions": [
            {
                "purpose": k.purpose.value,
                "version": k.version,
                "created_at": _iso(k.created_at),
                "state": k.state.value,
                "retired_at": _iso(k.retired_at),
                "destroyed_at": _iso(k.destroyed_at),
                "public_key_pem": k.public_key_pem,
                "check_value": k.check_value,
            }
            for k in ring.versions
        ],
        "last_backup_at": _iso(ring.last_backup_at),
        "ceremonies": dict(ring.ceremonies),
        "audit_outbox": [
            {"audit_key": f.audit_key, "action": f.action.value, "transaction_id": f.transaction_id, "at": _iso(f.at)}
            for f in ring.audit_outbox
        ],
        "published": dict(ring.published),
    }


def ring_from_json(data: Mapping[str, Any]) -> KeyRing:
    versions = []
    for item in data.get("versions", []):
        created = _time(item["created_at"])
        assert created is not None
        versions.append(
            KeyVersion(
                Purpose(item["purpose"]),
                int(item["version"]),
                created,
                State(item["state"]),
                _time(item.get("retired_at")),
                _time(item.get("destroyed_at")),
                item.get("public_key_pem"),
                item.get("check_value"),
            )
        )
    outbox = tuple(
        KeyAudit(
            str(f["audit_key"]), KeyAction(f["action"]), str(f["transaction_id"]), _utc(datetime.fromisoformat(f["at"]))
        )
        for f in data.get("audit_outbox", [])
    )
    ring = KeyRing(
        tuple(versions),
        _time(data.get("last_backup_at")),
        dict(data.get("ceremonies", {})),
        outbox,
        dict(data.get("published", {})),
    )
    for purpose in Purpose:
        if sum(1 for k in ring.of(purpose) if k.state is State.ACTIVE) > 1:
            raise ValueError(f"two ACTIVE {purpose.value} versions in the registry")
    return ring


# -- Shamir secret sharing over GF(2^8) (AES's field, polynomial x^8 + x^4 + x^3 + x + 1), byte by byte


def _gf_mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = ((a << 1) ^ 0x11B) if a & 0x80 else (a << 1)
        b >>= 1
    return out


def _gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    result, power, exponent = 1, a, 254  # a^254 = a^-1 (the multiplicative group has order 255)
    while exponent:
        if exponent & 1:
            result = _gf_mul(result, power)
        power = _gf_mul(power, power)
        exponent >>= 1
    return result


def split_secret(
    secret: bytes, threshold: int, shares: int, random_bytes: Callable[[int], bytes]
) -> list[tuple[int, bytes]]:
    """``shares`` shares (x = 1..shares) of which any ``threshold`` rebuild ``secret``; fewer tell nothing about it."""
    if not 2 <= threshold <= shares <= 255:
        raise ValueError(f"need 2 <= threshold ({threshold}) <= shares ({shares}) <= 255")
    coefficients = [random_bytes(len(secret)) for _ in range(threshold - 1)]
    out = []
    for x in range(1, shares + 1):
        share = bytearray()
        for i, byte in enumerate(secret):
            y, x_power = byte, 1
            for coefficient in coefficients:
                x_power = _gf_mul(x_power, x)
                y ^= _gf_mul(coefficient[i], x_power)
            share.append(y)
        out.append((x, bytes(share)))
    return out


def combine_shares(shares: Iterable[tuple[int, bytes]]) -> bytes:
    """Lagrange interpolation at x = 0. With fewer shares than the threshold the result is a wrong key: the
    caller checks it against the key's check value."""
    points = dict(shares)
    if len(points) < 2 or 0 in points or len({len(v) for v in points.values()}) != 1:
        raise ValueError("need at least two distinct shares (x >= 1) of the same length")
    secret = bytearray(len(next(iter(points.values()))))
    for xi, yi in points.items():
        weight = 1
        for xj in points:
            if xj != xi:
                weight = _gf_mul(weight, _gf_mul(xj, _gf_inv(xj ^ xi)))
        for i, byte in enumerate(yi):
            secret[i] ^= _gf_mul(byte, weight)
    return bytes(secret)
