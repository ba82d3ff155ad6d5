"""The key manager on a real SoftHSM2 token (a fresh one per test, under tmp_path) over PKCS#11: init, sign and
verify, rotation (the new version signs, the old one still verifies and decrypts), backup then restore into an
EMPTY token on a "new machine" (a signature made before verifies with the restored key), destroy, ceremonies
applied once, the metadata on governance.keys (contract-valid; it feeds the HSM-key-expiry alert), no PIN in logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contracts import models as m
from contracts.topics import GOVERNANCE_KEYS
from domain import keys as dk
from domain.alert_rules import AlertEngine, load_rules
from streams.alerting.agent import observations
from streams.security import keys
from streams.security.hsm import HsmError, KeyNotFound
from streams.security.keys import KeyManager, KeyPublisher
from streams.security.settings import SecuritySettings
from tests.support.kafka_io import KafkaIO
from tests.support.schema_check import RecordChecker

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
MESSAGE = b"nexus-x audit log v1\ntest\n42\n" + bytes(32).hex().encode()


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def settings_in(directory: Path) -> SecuritySettings:
    return SecuritySettings(hsm_dir=directory / "hsm", token_label=f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def manager_factory(tmp_path: Path) -> Iterator[Callable[..., KeyManager]]:
    opened: list[KeyManager] = []

    def open_manager(settings: SecuritySettings | None = None, at: datetime = T0) -> KeyManager:
        settings = settings or settings_in(tmp_path)
        km = KeyManager(keys.open_hsm(settings), settings, clock=Clock(at))
        opened.append(km)
        return km

    yield open_manager
    for km in opened:
        km.hsm.close()


def verify_pem(pem: str, message: bytes, signature: bytes) -> bool:
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    try:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def test_init_creates_the_token_and_keys_once_with_private_pins(
    manager_factory: Callable[..., KeyManager], tmp_path: Path
) -> None:
    km = manager_factory()
    created = km.rotate_due()
    assert [k.key_id for k in created] == ["nexus-master-v1", "nexus-signing-v1", "nexus-encryption-v1"]
    assert km.hsm.key_labels() == {k.key_id for k in created}
    hsm_dir = km.settings.hsm_path
    for name in ("user.pin", "so.pin", "keys.json", "softhsm2.conf"):
        assert (hsm_dir / name).stat().st_mode & 0o077 == 0, name
    shares = sorted((km.settings.custodian_path / "nexus-master-v1").glob("*.json"))
    assert len(shares) == 5 and all(p.stat().st_mode & 0o077 == 0 for p in shares)
    (backup,) = (hsm_dir / "backups").glob("backup-*.json")  # a first backup at once
    assert backup.stat().st_mode & 0o077 == 0
    km.hsm.close()
    again = manager_factory(km.settings, T0 + timedelta(days=1))
    assert again.rotate_due() == []  # idempotent: existing keys kept
    assert again.signer().public_key_pem() == created[1].public_key_pem
    pins = [(hsm_dir / "user.pin").read_text(), (hsm_dir / "so.pin").read_text()]
    for path in (hsm_dir / "keys.json", backup, hsm_dir / "softhsm2.conf", *shares):
        assert not any(pin in path.read_text() for pin in pins), path


def test_sign_verify_and_rotation_at_day_90(manager_factory: Callable[..., KeyManager]) -> None:
    km = manager_factory()
    km.rotate_due()
    v1 = km.signer()
    signature = v1.sign(MESSAGE)
    assert v1.key_id == "nexus-signing-v1"
    assert verify_pem(v1.public_key_pem(), MESSAGE, signature)
    assert km.verify("nexus-signing-v1", MESSAGE, signature)
    assert not km.verify("nexus-signing-v1", MESSAGE + b"x", signature)
    sealed_key_id, sealed = km.encrypt(b"data key 0123456789abcdef", aad=b"holder-1")

    assert isinstance(km.clock, Clock)
    km.clock.at = T0 + timedelta(days=90) - timedelta(microseconds=1)
    assert km.rotate_due() == []
    km.clock.at = T0 + timedelta(days=90)
    assert {k.key_id for k in km.rotate_due()} == {"nexus-master-v2", "nexus-signing-v2", "nexus-encryption-v2"}

    v2 = km.signer()
    assert v2.key_id == "nexus-signing-v2" and v2.public_key_pem() != v1.public_key_pem()
    new_signature = v2.sign(MESSAGE)
    assert km.verify("nexus-signing-v2", MESSAGE, new_signature)
    assert not km.verify("nexus-signing-v1", MESSAGE, new_signature)
    assert km.verify("nexus-signing-v1", MESSAGE, signature)  # RETIRED: still verifies
    assert v1.sign(MESSAGE)  # the HSM still holds it; the manager hands out only the ACTIVE one
    ring = km.ring()
    assert [(k.key_id, k.state) for k in ring.of(dk.Purpose.SIGNING)] == [
        ("nexus-signing-v1", dk.State.RETIRED),
        ("nexus-signing-v2", dk.State.ACTIVE),
    ]
    # decryption with the retired version; new encryptions use the new one
    assert sealed_key_id == "nexus-encryption-v1"
    assert km.decrypt(sealed_key_id, sealed, aad=b"holder-1") == b"data key 0123456789abcdef"
    with pytest.raises(HsmError):
        km.decrypt(sealed_key_id, sealed, aad=b"holder-2")
    assert km.encrypt(b"x")[0] == "nexus-encryption-v2"


def test_backup_then_restore_into_an_empty_token(manager_factory: Callable[..., KeyManager], tmp_path: Path) -> None:
    km = manager_factory()
    km.rotate_due()
    old = km.signer()
    old_signature = old.sign(MESSAGE)
    _, sealed = km.encrypt(b"card holder's data key")
    km.rotate_now(dk.Purpose.SIGNING)
    km.rotate_now(dk.Purpose.MASTER)  # the backup is wrapped under master v2, and carries master v1
    assert isinstance(km.clock, Clock)
    km.clock.at = T0 + timedelta(hours=5)
    backup = km.backup()
    assert km.backup_if_due(T0 + timedelta(hours=7) - timedelta(seconds=1)) is None
    assert km.backup_if_due(T0 + timedelta(hours=7)) is not None
    document = json.loads(backup.read_text())
    assert document["wrapping_key_id"] == "nexus-master-v2"
    assert {k["key_id"] for k in document["keys"]} == {
        "nexus-master-v1",
        "nexus-signing-v1",
        "nexus-signing-v2",
        "nexus-encryption-v1",
    }

    in_token, versions = km.hsm.key_labels(), km.ring().versions
    km.hsm.close()

    # a new machine: an empty token; the custodians bring three of their five shares
    fresh = manager_factory(settings_in(tmp_path / "new-machine"), T0 + timedelta(days=1))
    shares = sorted((km.settings.custodian_path / "nexus-master-v2").glob("*.json"))
    with pytest.raises(dk.KeyRefused, match="2 distinct shares, 3 needed"):
        fresh.restore(backup, shares[:2])
    with pytest.raises(dk.KeyRefused, match="not a share of nexus-master-v2"):
        fresh.restore(backup, sorted((km.settings.custodian_path / "nexus-master-v1").glob("*.json")))
    assert fresh.hsm.key_labels() == set()
    fresh.restore(backup, [shares[4], shares[0], shares[2]])

    assert fresh.hsm.key_labels() == in_token
    assert fresh.verify("nexus-signing-v1", MESSAGE, old_signature)  # signed before, verified by the restored key
    assert fresh.signer().key_id == "nexus-signing-v2"
    restored_v1 = keys.HsmSigner(fresh.hsm, "nexus-signing-v1")
    assert verify_pem(old.public_key_pem(), MESSAGE, restored_v1.sign(MESSAGE))  # the same private key
    assert fresh.decrypt("nexus-encryption-v1", sealed) == b"card holder's data key"
    assert fresh.ring().versions == versions
    with pytest.raises(dk.KeyRefused, match="not empty"):
        fresh.restore(backup, shares[:3])
    fresh.rotate_now(dk.Purpose.ENCRYPTION)  # the restored master wraps the next backup
    assert fresh.backup().exists()


def test_restore_refuses_shares_that_rebuild_another_key(
    manager_factory: Callable[..., KeyManager], tmp_path: Path
) -> None:
    km = manager_factory()
    km.rotate_due()
    backup = km.backup()
    shares = sorted((km.settings.custodian_path / "nexus-master-v1").glob("*.json"))
    forged = tmp_path / "forged.json"
    share = json.loads(shares[0].read_text())
    share["share"] = bytes(b ^ 1 for b in bytes.fromhex(share["share"])).hex()
    forged.write_text(json.dumps(share))
    fresh = manager_factory(settings_in(tmp_path / "other"))
    with pytest.raises(HsmError, match="closed"):
        km.hsm.key_labels()  # a session the switch of token directory ended is not reused
    with pytest.raises(dk.KeyRefused, match="check value mismatch"):
        fresh.restore(backup, [forged, shares[1], shares[2]])
    assert fresh.hsm.key_labels() == set()


def test_destroy_removes_a_retired_version_and_ceremonies_apply_once(
    manager_factory: Callable[..., KeyManager],
) -> None:
    km = manager_factory()
    km.rotate_due()
    _, sealed = km.encrypt(b"k")
    first = km.rotate_now("ENCRYPTION", ceremony_id="GOV:req-1")
    assert km.rotate_now("ENCRYPTION", ceremony_id="GOV:req-1") == first  # executed twice, rotated once
    assert first.key_id == "nexus-encryption-v2" and km.ring().next_version(dk.Purpose.ENCRYPTION) == 3
    with pytest.raises(dk.KeyRefused, match="ACTIVE"):
        km.destroy("nexus-encryption-v2")
    gone = km.destroy("nexus-encryption-v1", ceremony_id="GOV:req-2")
    assert gone.state is dk.State.DESTROYED
    assert "nexus-encryption-v1" not in km.hsm.key_labels()
    with pytest.raises(KeyNotFound):
        km.hsm.decrypt("nexus-encryption-v1", sealed)
    with pytest.raises(dk.KeyRefused, match="DESTROYED"):
        km.decrypt("nexus-encryption-v1", sealed)
    assert km.destroy("nexus-encryption-v1", ceremony_id="GOV:req-2").state is dk.State.DESTROYED
    # a destroyed signing version keeps its public key in the metadata (auditors verify old checkpoints)
    signature = km.signer().sign(MESSAGE)
    km.rotate_now("SIGNING")
    km.destroy("nexus-signing-v1")
    (v1,) = [r for r in km.metadata() if r.key_id == "nexus-signing-v1"]
    assert v1.state is m.KeyState.DESTROYED and v1.public_key_pem is not None
    assert verify_pem(v1.public_key_pem, MESSAGE, signature)
    assert "nexus-signing-v1" not in km.hsm.key_labels()


@pytest.mark.slow
def test_metadata_on_governance_keys_feeds_the_expiry_alert(
    manager_factory: Callable[..., KeyManager], kafka: KafkaIO, kafka_bootstrap: str
) -> None:
    at = T0 + timedelta(microseconds=uuid.uuid4().int % 1_000_000)  # this test's records: their observed_at
    km = manager_factory(at=at)
    km.rotate_due()
    km.rotate_now(dk.Purpose.SIGNING)
    KeyPublisher(kafka_bootstrap)(km.metadata())

    def mine(records: list) -> list[m.KeyMetadata]:  # type: ignore[type-arg]
        decoded = [GOVERNANCE_KEYS.decode(r.value) for r in records if r.value is not None]
        return [d for d in decoded if d.observed_at == at]

    raw = kafka.wait_for(GOVERNANCE_KEYS, lambda rs: len(mine(rs)) >= 4)
    records = mine(raw)
    checker = RecordChecker.for_topic(GOVERNANCE_KEYS)  # the committed JSON Schema, closed, with a standard validator
    ours = [r for r in raw if r.value is not None and GOVERNANCE_KEYS.decode(r.value).observed_at == at]
    assert [checker.check(r.key, r.value) for r in ours] == [None] * 4
    by_id = {r.key_id: r for r in records}
    assert set(by_id) == {"nexus-master-v1", "nexus-signing-v1", "nexus-signing-v2", "nexus-encryption-v1"}
    assert (by_id["nexus-signing-v1"].state, by_id["nexus-signing-v2"].state) == (
        m.KeyState.RETIRED,
        m.KeyState.ACTIVE,
    )
    assert by_id["nexus-signing-v2"].public_key_pem == km.signer().public_key_pem()
    assert by_id["nexus-encryption-v1"].expires_at == at + timedelta(days=90)

    # the monitoring agent's own translation and the shipped rules: HsmKeyExpiry fires 7 days before expiry
    engine = AlertEngine(load_rules((ROOT / "streams" / "alerting" / "rules.toml").read_text()))
    active = by_id["nexus-encryption-v1"]
    engine.observe_all(observations(active))
    assert engine.evaluate(active.expires_at - timedelta(days=7)).changes == []
    fired = engine.evaluate(active.expires_at - timedelta(days=7) + timedelta(milliseconds=1)).changes
    assert [(n.rule, n.labels["key_id"]) for n in fired] == [("HsmKeyExpiry", "nexus-encryption-v1")]


@pytest.mark.slow
def test_the_service_publishes_and_never_logs_a_pin(kafka: KafkaIO, kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NEXUS_DATA_DIR": str(tmp_path / "data"),
        "NEXUS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "NEXUS_SECURITY_TOKEN_LABEL": f"svc-{uuid.uuid4().hex[:8]}",
        "NEXUS_SECURITY_TICK_EVERY_S": "0.5",
    }
    env.pop("SOFTHSM2_CONF", None)
    log_path = tmp_path / "keys.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.security.keys", "run"], cwd=ROOT, env=env, stdout=log_file, stderr=log_file
        )
    try:
        registry = tmp_path / "data" / "hsm" / "keys.json"

        def versions() -> list[dict[str, Any]]:  # the registry is rewritten as each key is made: wait for the three
            return list(json.loads(registry.read_text())["versions"]) if registry.exists() else []

        kafka.wait_for(GOVERNANCE_KEYS, lambda _rs: len(versions()) >= 3, timeout_s=60)
        (signing,) = [v for v in versions() if v["purpose"] == "SIGNING"]
        pem = signing["public_key_pem"]
        kafka.wait_for(
            GOVERNANCE_KEYS,
            lambda rs: any(r.value is not None and GOVERNANCE_KEYS.decode(r.value).public_key_pem == pem for r in rs),
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    text = log_path.read_text()
    assert "key manager running" in text and "nexus-signing-v1 created" in text
    hsm_dir = tmp_path / "data" / "hsm"
    for pin_file in ("user.pin", "so.pin"):
        assert (hsm_dir / pin_file).read_text() not in text
    shutil.rmtree(hsm_dir / "tokens")


def test_ceremony_functions_publish_every_version(tmp_path: Path) -> None:
    """What the governance service calls after a KEY_CEREMONY quorum: each publishes every version's metadata."""
    settings = settings_in(tmp_path)
    sent: list[list[m.KeyMetadata]] = []
    with pytest.raises(HsmError, match="no keys yet"):
        keys.rotate_now("SIGNING", "GOV:r0", settings=settings, publish=sent.append)
    with keys.key_manager(settings) as km:
        km.rotate_due()
    records = keys.rotate_now("SIGNING", "GOV:r1", settings=settings, publish=sent.append)
    assert keys.rotate_now("SIGNING", "GOV:r1", settings=settings, publish=sent.append) == sent[-1]
    assert len(sent) == 2 and records == sent[0]
    assert [(r.key_id, r.state) for r in sent[-1] if r.purpose is m.KeyPurpose.SIGNING] == [
        ("nexus-signing-v1", m.KeyState.RETIRED),
        ("nexus-signing-v2", m.KeyState.ACTIVE),
    ]
    keys.destroy("nexus-signing-v1", "GOV:r2", settings=settings, publish=sent.append)
    assert {r.key_id: r.state for r in sent[-1]}["nexus-signing-v1"] is m.KeyState.DESTROYED
    (backup,) = sorted((settings.hsm_path / "backups").glob("backup-*.json"))[-1:]
    fresh = settings_in(tmp_path / "dr-site")
    restored = keys.restore(
        backup,
        None,
        "GOV:r3",
        settings=fresh.model_copy(update={"custodian_dir": settings.custodian_path}),
        publish=sent.append,
    )
    assert {r.key_id: r.state for r in restored} == {r.key_id: r.state for r in sent[-2]}


def test_a_process_opens_the_token_twice_and_each_session_keeps_working(
    manager_factory: Callable[..., KeyManager],
) -> None:
    """PKCS#11 logs in per process: a second session (a process that seals and signs) shares the first's login."""
    first = manager_factory()
    first.rotate_due()
    second = manager_factory(first.settings)
    key_id, sealed = first.encrypt(b"acct_1Nv0FGQ9RKHgCVdK", b"payout")
    assert second.decrypt(key_id, sealed, b"payout") == b"acct_1Nv0FGQ9RKHgCVdK"
    second.hsm.close()
    assert first.decrypt(key_id, sealed, b"payout") == b"acct_1Nv0FGQ9RKHgCVdK"
    signature = first.signer().sign(MESSAGE)
    assert first.verify(first.signer().key_id, MESSAGE, signature)
    third = manager_factory(first.settings)
    first.hsm.close()  # the session that logged in goes first
    assert third.decrypt(key_id, sealed, b"payout") == b"acct_1Nv0FGQ9RKHgCVdK"
