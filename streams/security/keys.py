"""The key manager (spec §4.1): the platform's keys in the HSM, their versions, rotation, backups, restore, and
their metadata on ``governance.keys``. ``python -m streams.security.keys`` runs it (docs/security.md).

* At start it creates what is missing — the SoftHSM2 dev token when configured (``streams.security.hsm``) and a
  first version of each key (master, signing, encryption) — then publishes every version's KeyMetadata.
* Every ``tick_every_s`` it rotates the keys whose ACTIVE version reached its rotation time (``domain.keys``: the
  new version signs / encrypts; the old one stays RETIRED to verify and decrypt) and backs up when a backup is due
  (every 2 h, and at once after any new version): every key but the ACTIVE master wrapped under the ACTIVE master,
  with the registry, in one owner-only file under ``<hsm_dir>/backups`` written atomically.
* The master key itself never leaves the token: its value was split into custodian shares (3 of 5) before it was
  imported. A restore into an empty token rebuilds it from ``threshold`` shares, checks it against its check value,
  and unwraps the rest — after which signatures made before verify again.
* Key ceremonies — :func:`rotate_now`, :func:`destroy`, :func:`restore` — are what the governance service calls once
  a KEY_CEREMONY request has its 3-of-5 quorum. Each takes the request's id as ``ceremony_id``: executed twice, it
  changes the keys once. This CLI offers no rotate or destroy of its own (they need the quorum); ``restore`` needs
  ``threshold`` custodians' shares, a quorum of its own.

The registry (``<hsm_dir>/keys.json``: versions, states, creation times, public keys, the last backup; no secret)
is read and written under a file lock, so the service and a ceremony in another process never interleave.

Every key operation is audited: a spec §7.2 record on ``audit.records`` (``KEY_*``, ``domain.keys.KeyAction``;
docs/audit-log.md), ``transactionId`` the ceremony's governance request id or the key version, no key material.
The fact is queued in the registry in the same write as the operation (an outbox) and leaves it once the broker
acknowledged the record: the service sends the queue at start and every tick, a ceremony right after it ran, the
``publish`` command at once. A crash in between sends it again under the same ``auditId`` (the audit log keeps it
once); ``init`` and ``backup`` (no Kafka) leave theirs for the service.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pkcs11 import ObjectClass

from contracts import models as m
from contracts.topics import AUDIT_RECORDS, GOVERNANCE_KEYS, Topic
from domain import keys as dk
from infra.files import private_dir, write_private
from streams.kafka.clients import produce_bounded, producer_config
from streams.security.hsm import Hsm, HsmError, HsmSigner, open_hsm
from streams.security.settings import SecuritySettings, get_security_settings
from streams.settings import get_settings

log = logging.getLogger("nexus.keys")

BACKUP_FORMAT = "nexus-x-hsm-backup/1"
SHARE_FORMAT = "nexus-x-custodian-share/1"
PUBLISH_TIMEOUT_S = 30.0

AUDIT_PREFIX = "AUDIT-KEY:"
AUDIT_ACTOR = "nexus-keys"
AUDIT_USER_AGENT = "NEXUS-X/keys"
ID_CHARS_MAX = 128

Publish = Callable[[list[m.KeyMetadata]], None]
AuditSend = Callable[[list[m.AuditRecord]], None]


def audit_record(fact: dk.KeyAudit) -> m.AuditRecord:
    """The §7.2 record of one key operation: ids, action and time only (no key material, no PIN)."""
    text = AUDIT_PREFIX + fact.audit_key
    audit_id = text if len(text) <= ID_CHARS_MAX else AUDIT_PREFIX + hashlib.sha256(fact.audit_key.encode()).hexdigest()
    return m.AuditRecord(
        audit_id=audit_id,
        timestamp=fact.at,
        transaction_id=fact.transaction_id,
        action=fact.action.value,
        actor=m.AuditActor(user_id=AUDIT_ACTOR, user_agent=AUDIT_USER_AGENT),
        details=m.AuditDetails(),
    )


def check_value(value: bytes) -> str:
    """KCV: the first 3 bytes of AES-ECB(key, 16 zero bytes), hex (what HSM vendors print at a key ceremony)."""
    encryptor = Cipher(algorithms.AES(value), modes.ECB()).encryptor()
    return (encryptor.update(bytes(16)) + encryptor.finalize())[:3].hex()


class KeyManager:
    def __init__(
        self,
        hsm: Hsm,
        settings: SecuritySettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.hsm = hsm
        self.settings = settings
        self.policy = settings.policy
        self.clock = clock
        self.random_bytes = random_bytes
        self.dir = private_dir(settings.hsm_path)
        self.registry_path = self.dir / "keys.json"
        self.backup_dir = self.dir / "backups"
        self._ring_read: tuple[tuple[int, int, int], dk.KeyRing] | None = None  # (the file's identity, its ring)

    # -- the registry

    def ring(self) -> dk.KeyRing:
        """The registry as on disk. Parsed again only when the file changed (it is replaced by rename, so a new
        inode): every sealed value opened asks for it, and parsing it each time was half an open's cost."""
        try:
            stat = self.registry_path.stat()
        except FileNotFoundError:
            return dk.KeyRing()
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._ring_read is None or self._ring_read[0] != identity:
            ring = dk.ring_from_json(json.loads(self.registry_path.read_text(encoding="utf-8")))
            self._ring_read = (identity, ring)
        return self._ring_read[1]

    def _save(self, ring: dk.KeyRing) -> None:
        write_private(self.registry_path, json.dumps(dk.ring_to_json(ring), indent=1).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / "keys.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- versions

    def _create(self, ring: dk.KeyRing, purpose: dk.Purpose, now: datetime) -> tuple[dk.KeyRing, dk.KeyVersion]:
        label = dk.label(purpose, ring.next_version(purpose))
        if self.hsm.destroy(label):  # made by a run that stopped before the registry knew it: never used
            log.warning("removed %s from the token: the registry did not know it", label)
        if purpose is dk.Purpose.SIGNING:
            return dk.with_new_version(ring, purpose, now, public_key_pem=self.hsm.generate_signing(label))
        if purpose is dk.Purpose.ENCRYPTION:
            self.hsm.generate_aes(label)
            return dk.with_new_version(ring, purpose, now)
        value = self.random_bytes(32)
        kcv = check_value(value)
        self._write_shares(label, value, kcv)  # before the import: a master nobody can rebuild must not exist
        self.hsm.import_master(label, value)
        return dk.with_new_version(ring, purpose, now, check_value=kcv)

    def _write_shares(self, label: str, value: bytes, kcv: str) -> None:
        n, k = self.settings.custodian_shares, self.settings.custodian_threshold
        private_dir(self.settings.custodian_path)
        for x, share in dk.split_secret(value, k, n, self.random_bytes):
            document = {
                "format": SHARE_FORMAT,
                "key_id": label,
                "check_value": kcv,
                "threshold": k,
                "shares": n,
                "x": x,
                "share": share.hex(),
            }
            write_private(
                self.settings.custodian_path / label / f"share-{x}-of-{n}.json", json.dumps(document).encode()
            )
        log.info("%s: %d custodian shares (any %d rebuild it) under %s", label, n, k, self.settings.custodian_path)

    def rotate_due(self, now: datetime | None = None) -> list[dk.KeyVersion]:
        """Create every version that is due (all three on an empty token); back up at once if any was."""
        now = now or self.clock()
        created = []
        with self._locked():
            ring = self.ring()
            for purpose in dk.due(ring, now, self.policy):
                had_active = ring.active(purpose) is not None
                ring, new = self._create(ring, purpose, now)
                ring = dk.with_audit(ring, dk.created_audit(new, had_active, early=False))
                self._save(ring)
                created.append(new)
                log.info("%s created (%s ACTIVE)", new.key_id, purpose.value)
            if created:
                self._backup(ring, now)
        return created

    def rotate_now(self, purpose: dk.Purpose | str, ceremony_id: str | None = None) -> dk.KeyVersion:
        """Key ceremony: a new ACTIVE version of ``purpose`` now, whatever its age. Repeated with the same
        ``ceremony_id``, it returns the version the first call made."""
        purpose = dk.Purpose(purpose)
        now = self.clock()
        with self._locked():
            ring = self.ring()
            if ring.active(dk.Purpose.MASTER) is None:
                raise HsmError("no keys yet: start the key manager first (python -m streams.security.keys)")
            done = ring.ceremonies.get(ceremony_id) if ceremony_id else None
            if done is not None:
                key = ring.get(done)
                assert key is not None
                return key
            ring, new = self._create(ring, purpose, now)
            ring = dk.with_ceremony(ring, ceremony_id, new.key_id)
            ring = dk.with_audit(ring, dk.created_audit(new, True, early=True, ceremony_id=ceremony_id))
            self._save(ring)
            log.info("%s created by key ceremony %s", new.key_id, ceremony_id)
            self._backup(ring, now)
            return new

    def destroy(self, key_id: str, ceremony_id: str | None = None) -> dk.KeyVersion:
        """Key ceremony: remove a RETIRED version from the token (refused for the ACTIVE one: dk.KeyRefused).
        A SIGNING version's public key stays published: old checkpoints still verify outside the HSM."""
        now = self.clock()
        with self._locked():
            before = self.ring()
            ring = dk.with_destroyed(before, key_id, now)
            removed = self.hsm.destroy(key_id)
            ring = dk.with_ceremony(ring, ceremony_id, key_id)
            if ring.versions != before.versions:  # destroyed now, not by an earlier call
                ring = dk.with_audit(ring, dk.destroyed_audit(key_id, now, ceremony_id))
            self._save(ring)
            log.info("%s destroyed (%d objects) by key ceremony %s", key_id, removed, ceremony_id)
            self._backup(ring, now)
            key = ring.get(key_id)
            assert key is not None
            return key

    # -- use

    def _active(self, purpose: dk.Purpose) -> dk.KeyVersion:
        key = self.ring().active(purpose)
        if key is None:
            raise HsmError(f"no ACTIVE {purpose.value} key: start the key manager (python -m streams.security.keys)")
        return key

    def _live(self, key_id: str) -> dk.KeyVersion:
        key = self.ring().get(key_id)
        if key is None or key.state is dk.State.DESTROYED:
            raise dk.KeyRefused(f"{key_id} is {'unknown' if key is None else 'DESTROYED'}")
        return key

    def signer(self) -> HsmSigner:
        """The ACTIVE signing version's signer (ask again after a rotation)."""
        return HsmSigner(self.hsm, self._active(dk.Purpose.SIGNING).key_id)

    def verify(self, key_id: str, message: bytes, signature: bytes) -> bool:
        return self.hsm.verify(self._live(key_id).key_id, message, signature)

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> tuple[str, bytes]:
        """Envelope encryption's outer layer: (key id, sealed) with the ACTIVE encryption version."""
        key_id = self._active(dk.Purpose.ENCRYPTION).key_id
        return key_id, self.hsm.encrypt(key_id, plaintext, aad)

    def decrypt(self, key_id: str, sealed: bytes, aad: bytes = b"") -> bytes:
        return self.hsm.decrypt(self._live(key_id).key_id, sealed, aad)

    def missing(self) -> list[str]:
        """Live versions the registry knows and the token does not hold (a lost token: restore a backup)."""
        return sorted({k.key_id for k in self.ring().live()} - self.hsm.key_labels())

    def metadata(self, now: datetime | None = None) -> list[m.KeyMetadata]:
        observed = now or self.clock()
        return [m.KeyMetadata(**dk.published(k, self.policy, observed)) for k in self.ring().versions]

    # -- the audit outbox

    def note_published(self) -> None:
        """Every version's metadata was acknowledged on governance.keys: queue a KEY_PUBLISHED per new state."""
        with self._locked():
            ring = self.ring()
            after = dk.published_audits(ring, self.clock())
            if after != ring:
                self._save(after)

    def send_audit(self, send: AuditSend) -> int:
        """Send the queued audit records (acknowledged when ``send`` returns) and unqueue them; how many. The lock
        is not held while sending: a ceremony meanwhile queues its own, and a fact sent twice keeps its auditId."""
        queued = self.ring().audit_outbox
        if not queued:
            return 0
        send([audit_record(f) for f in queued])
        with self._locked():
            self._save(dk.without_audit(self.ring(), [f.audit_key for f in queued]))
        return len(queued)

    def send_audit_or_keep(self, send: AuditSend) -> int:
        """``send_audit``, but a broker that does not acknowledge leaves the records queued (logged), not raised:
        the keys changed already; the service sends them on its next tick."""
        try:
            return self.send_audit(send)
        except RuntimeError as exc:
            log.warning("key audit records stay queued (%d): %s", len(self.ring().audit_outbox), exc)
            return 0

    # -- backups

    def backup_if_due(self, now: datetime | None = None) -> Path | None:
        now = now or self.clock()
        with self._locked():
            ring = self.ring()
            if not ring.versions or not dk.backup_due(ring.last_backup_at, now, self.policy):
                return None
            return self._backup(ring, now)

    def backup(self) -> Path:
        with self._locked():
            return self._backup(self.ring(), self.clock())

    def _backup(self, ring: dk.KeyRing, now: datetime) -> Path:
        master = ring.active(dk.Purpose.MASTER)
        if master is None:
            raise HsmError("no ACTIVE master key to wrap a backup with")
        keys = [self._wrapped(master.key_id, k) for k in ring.live() if k.key_id != master.key_id]
        ring = replace(ring, last_backup_at=now)
        document = {
            "format": BACKUP_FORMAT,
            "created_at": now.isoformat(),
            "token_label": self.hsm.token_label,
            "wrapping_key_id": master.key_id,
            "wrapping_check_value": master.check_value,
            "mechanism": "CKM_AES_KEY_WRAP_PAD",
            "registry": dk.ring_to_json(ring),
            "keys": keys,
        }
        path = self.backup_dir / f"backup-{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
        write_private(path, json.dumps(document, indent=1).encode())
        self._save(dk.with_audit(ring, dk.backup_audit(path.stem, master.key_id, now)))
        for old in sorted(self.backup_dir.glob("backup-*.json"))[: -self.settings.backups_kept]:
            old.unlink()
        log.info("backup %s: %d keys wrapped under %s", path.name, len(keys), master.key_id)
        return path

    def _wrapped(self, wrapping: str, key: dk.KeyVersion) -> dict[str, Any]:
        b64 = base64.b64encode
        if key.purpose is dk.Purpose.SIGNING:
            point, params = self.hsm.public_parts(key.key_id)
            wrapped = self.hsm.wrap(wrapping, key.key_id, ObjectClass.PRIVATE_KEY)
            return {
                "key_id": key.key_id,
                "wrapped": b64(wrapped).decode(),
                "ec_point": b64(point).decode(),
                "ec_params": b64(params).decode(),
            }
        wrapped = self.hsm.wrap(wrapping, key.key_id, ObjectClass.SECRET_KEY)
        return {"key_id": key.key_id, "wrapped": b64(wrapped).decode()}

    # -- restore

    def restore(
        self, backup_path: Path, share_paths: Sequence[Path] | None = None, ceremony_id: str | None = None
    ) -> list[dk.KeyVersion]:
        """Key ceremony: the backup's keys into an EMPTY token (refused if it holds any platform key)."""
        document = json.loads(Path(backup_path).read_text(encoding="utf-8"))
        if document.get("format") != BACKUP_FORMAT:
            raise dk.KeyRefused(f"{backup_path} is not a key backup ({document.get('format')!r})")
        with self._locked():
            ring = self.ring()
            if ceremony_id is not None and ceremony_id in ring.ceremonies:
                return list(ring.versions)
            present = self.hsm.key_labels()
            if present:
                raise dk.KeyRefused(f"token {self.hsm.token_label!r} is not empty: {sorted(present)}")
            wrapping = str(document["wrapping_key_id"])
            value = self._rebuild_master(wrapping, str(document["wrapping_check_value"]), share_paths)
            self.hsm.import_master(wrapping, value)
            self._unwrap_all(wrapping, document["keys"])
            restored = dk.with_ceremony(dk.ring_from_json(document["registry"]), ceremony_id, Path(backup_path).name)
            missing = {k.key_id for k in restored.live()} - self.hsm.key_labels()
            if missing:
                raise HsmError(f"restore incomplete: {sorted(missing)} not in the token")
            # this site's unsent facts are kept beside the backup's own
            fact = dk.restored_audit(Path(backup_path).stem, self.clock(), ceremony_id)
            self._save(dk.with_audit(restored, *ring.audit_outbox, fact))
            log.info("restored %d keys from %s (ceremony %s)", len(restored.live()), backup_path, ceremony_id)
            return list(restored.versions)

    def _rebuild_master(self, key_id: str, kcv: str, share_paths: Sequence[Path] | None) -> bytes:
        paths = list(share_paths) if share_paths else sorted((self.settings.custodian_path / key_id).glob("*.json"))
        shares, threshold = [], 0
        for path in paths:
            share = json.loads(path.read_text(encoding="utf-8"))
            if share.get("format") != SHARE_FORMAT or share.get("key_id") != key_id:
                raise dk.KeyRefused(f"{path} is not a share of {key_id}")
            shares.append((int(share["x"]), bytes.fromhex(share["share"])))
            threshold = int(share["threshold"])
        if len(dict(shares)) < max(threshold, 2):
            raise dk.KeyRefused(f"{key_id}: {len(dict(shares))} distinct shares, {threshold} needed")
        value = dk.combine_shares(shares)
        if check_value(value) != kcv:
            raise dk.KeyRefused(f"the shares do not rebuild {key_id} (check value mismatch)")
        return value

    def _unwrap_all(self, wrapping: str, keys: list[dict[str, Any]]) -> None:
        for item in keys:
            key_id = str(item["key_id"])
            purpose, _ = dk.parse_label(key_id)
            wrapped = base64.b64decode(item["wrapped"])
            if purpose is dk.Purpose.SIGNING:
                self.hsm.unwrap_signing(wrapping, key_id, wrapped)
                self.hsm.import_public(key_id, base64.b64decode(item["ec_point"]), base64.b64decode(item["ec_params"]))
            else:
                self.hsm.unwrap_secret(wrapping, key_id, wrapped, master=purpose is dk.Purpose.MASTER)


# -- publishing on governance.keys


class KeyPublisher:
    """Each version's KeyMetadata on governance.keys (compacted by key id), and the key operations' audit records
    on audit.records (``audit``), acknowledged before they return (RuntimeError otherwise)."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = Producer(producer_config(bootstrap, message_timeout_ms=int(PUBLISH_TIMEOUT_S * 1000)))

    def __call__(self, records: list[m.KeyMetadata]) -> None:
        self._send(GOVERNANCE_KEYS, records)

    def audit(self, records: list[m.AuditRecord]) -> None:
        self._send(AUDIT_RECORDS, records)

    def _send(self, topic: Topic, records: Sequence[Any]) -> None:
        failed: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(f"{msg.key()!r}: {err}")

        for record in records:
            produce_bounded(
                self._producer, topic.name, topic.encode(record), topic.key_of(record), on_delivery=delivered
            )
        left = self._producer.flush(PUBLISH_TIMEOUT_S)
        if left or failed:
            self._producer.purge()
            raise RuntimeError(f"{topic.name}: {left} records unacknowledged, failed: {failed}")


def default_publisher() -> KeyPublisher:
    return KeyPublisher(get_settings().bootstrap_servers)


# -- key ceremonies (the governance service calls these after a KEY_CEREMONY request's quorum)


@contextlib.contextmanager
def key_manager(settings: SecuritySettings | None = None) -> Iterator[KeyManager]:
    settings = settings or get_security_settings()
    with open_hsm(settings) as hsm:
        yield KeyManager(hsm, settings)


def _ceremony(
    settings: SecuritySettings | None,
    publish: Publish | None,
    action: Callable[[KeyManager], object],
    audit: AuditSend | None = None,
) -> list[m.KeyMetadata]:
    """Run one ceremony, then publish every version's metadata (acknowledged) and return it, and send the audit
    records. By default both go to the platform's Kafka; a caller that passes its own ``publish`` and no ``audit``
    leaves the records queued for the key manager service."""
    if publish is None:
        default = default_publisher()
        publish, audit = default, audit or default.audit
    with key_manager(settings) as manager:
        action(manager)
        records = manager.metadata()
        publish(records)
        manager.note_published()
        if audit is not None:
            manager.send_audit_or_keep(audit)
    return records


def rotate_now(
    purpose: dk.Purpose | str,
    ceremony_id: str | None = None,
    *,
    settings: SecuritySettings | None = None,
    publish: Publish | None = None,
    audit: AuditSend | None = None,
) -> list[m.KeyMetadata]:
    """Rotate ``purpose`` (MASTER / SIGNING / ENCRYPTION) now; publish and return every version's metadata."""
    return _ceremony(settings, publish, lambda manager: manager.rotate_now(purpose, ceremony_id), audit)


def destroy(
    key_id: str,
    ceremony_id: str | None = None,
    *,
    settings: SecuritySettings | None = None,
    publish: Publish | None = None,
    audit: AuditSend | None = None,
) -> list[m.KeyMetadata]:
    """Destroy a RETIRED version (``nexus-signing-v1``); publish and return every version's metadata."""
    return _ceremony(settings, publish, lambda manager: manager.destroy(key_id, ceremony_id), audit)


def restore(
    backup_path: Path | str,
    share_paths: Sequence[Path] | None = None,
    ceremony_id: str | None = None,
    *,
    settings: SecuritySettings | None = None,
    publish: Publish | None = None,
    audit: AuditSend | None = None,
) -> list[m.KeyMetadata]:
    """Restore a backup into the (empty) configured token with the custodians' shares (default: the dev shares
    under the custodian directory); publish and return every version's metadata."""
    restore_it = lambda manager: manager.restore(Path(backup_path), share_paths, ceremony_id)  # noqa: E731
    return _ceremony(settings, publish, restore_it, audit)


# -- the service and the CLI


def serve(manager: KeyManager, publish: Publish, stop: Callable[[], bool], audit: AuditSend | None = None) -> None:
    """Create what is missing, publish every version, then rotate and back up on time until ``stop()``; every
    tick, send the audit records queued (``audit``; none: they stay queued)."""
    missing = manager.missing()
    if missing:
        raise HsmError(f"the token lacks {missing}: restore a backup (python -m streams.security.keys restore)")
    manager.rotate_due()
    publish(manager.metadata())
    manager.note_published()
    log.info("key manager running on token %r", manager.hsm.token_label)
    while not stop():
        if manager.rotate_due():
            publish(manager.metadata())
            manager.note_published()
        manager.backup_if_due()
        if audit is not None:
            manager.send_audit_or_keep(audit)
        deadline = time.monotonic() + manager.settings.tick_every_s
        while not stop() and time.monotonic() < deadline:
            time.sleep(min(0.5, manager.settings.tick_every_s))


def _status(manager: KeyManager) -> None:
    ring = manager.ring()
    for key in ring.versions:
        expires = key.expires_at(manager.policy).isoformat(timespec="seconds")
        print(
            f"{key.key_id:24} {key.state.value:9} created {key.created_at.isoformat(timespec='seconds')}  "
            f"rotates {expires}" + (f"  kcv {key.check_value}" if key.check_value else "")
        )
    print(f"last backup: {ring.last_backup_at.isoformat() if ring.last_backup_at else 'none'}")
    if ring.audit_outbox:
        print(f"audit records queued: {len(ring.audit_outbox)} (the service or `publish` sends them)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streams.security.keys", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="the service (default): create missing keys, rotate, back up, publish")
    commands.add_parser("init", help="create the dev token and the keys if missing, back up; no Kafka")
    commands.add_parser("status", help="every key version and the last backup")
    commands.add_parser("backup", help="write a backup now")
    commands.add_parser(
        "publish", help="publish every version's metadata on governance.keys, send queued audit records"
    )
    rest = commands.add_parser("restore", help="a backup into an EMPTY token, with the custodians' shares")
    rest.add_argument("backup", type=Path)
    rest.add_argument("--share", type=Path, action="append", help="a custodian's share file (repeat)")
    rest.add_argument("--no-publish", action="store_true")
    return parser


def _publish(manager: KeyManager) -> None:
    """Every version's metadata, then the audit records queued (both acknowledged, or RuntimeError)."""
    publisher = default_publisher()
    publisher(manager.metadata())
    manager.note_published()
    print(f"published; {manager.send_audit(publisher.audit)} audit records sent")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        with key_manager() as manager:
            if command == "run":
                stopping: list[int] = []
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda signum, _frame: stopping.append(signum))
                publisher = default_publisher()
                serve(manager, publisher, lambda: bool(stopping), publisher.audit)
            elif command == "init":
                manager.rotate_due()
                _status(manager)
            elif command == "status":
                _status(manager)
            elif command == "backup":
                print(manager.backup())
            elif command == "publish":
                _publish(manager)
            elif command == "restore":
                manager.restore(args.backup, args.share)
                if not args.no_publish:
                    _publish(manager)
                _status(manager)
    except (HsmError, dk.KeyRefused, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
