"""domain.keys: versions, rotation at day 90 exactly, the backup schedule, states, what is published, shares."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta

import pytest

from contracts import models as m
from domain import keys as k

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = k.KeyPolicy()
PEM = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"


def ring_at(at: datetime) -> k.KeyRing:
    ring = k.KeyRing()
    ring, _ = k.with_new_version(ring, k.Purpose.MASTER, at, check_value="abcdef")
    ring, _ = k.with_new_version(ring, k.Purpose.SIGNING, at, public_key_pem=PEM)
    ring, _ = k.with_new_version(ring, k.Purpose.ENCRYPTION, at)
    return ring


def test_labels_round_trip_and_refuse_others() -> None:
    assert k.label(k.Purpose.SIGNING, 3) == "nexus-signing-v3"
    assert k.parse_label("nexus-encryption-v12") == (k.Purpose.ENCRYPTION, 12)
    for bad in ("nexus-signing-v0", "nexus-signing-3", "other-signing-v1", "nexus-signing-v1 ", "nexus-audit-v1"):
        with pytest.raises(ValueError):
            k.parse_label(bad)
    with pytest.raises(ValueError):
        k.label(k.Purpose.MASTER, 0)


@pytest.mark.parametrize(
    ("age", "is_due"),
    [
        (timedelta(days=89, hours=23, minutes=59), False),
        (timedelta(days=90) - timedelta(microseconds=1), False),
        (timedelta(days=90), True),
        (timedelta(days=120), True),
    ],
)
def test_rotation_due_at_day_90_exactly(age: timedelta, is_due: bool) -> None:
    key = k.KeyVersion(k.Purpose.SIGNING, 1, T0, public_key_pem=PEM)
    assert key.expires_at(POLICY) == T0 + timedelta(days=90)
    assert k.rotation_due(key, T0 + age, POLICY) is is_due
    assert (k.Purpose.SIGNING in k.due(ring_at(T0), T0 + age, POLICY)) is is_due


def test_rotation_period_is_configurable_and_only_active_versions_rotate() -> None:
    weekly = k.KeyPolicy(rotation_period=timedelta(days=7))
    key = k.KeyVersion(k.Purpose.ENCRYPTION, 1, T0)
    assert not k.rotation_due(key, T0 + timedelta(days=6, hours=23), weekly)
    assert k.rotation_due(key, T0 + timedelta(days=7), weekly)
    retired = k.KeyVersion(k.Purpose.ENCRYPTION, 1, T0, k.State.RETIRED)
    assert not k.rotation_due(retired, T0 + timedelta(days=365), weekly)
    with pytest.raises(ValueError):
        k.KeyPolicy(rotation_period=timedelta(0))


def test_empty_ring_needs_every_purpose_and_a_fresh_one_none() -> None:
    assert k.due(k.KeyRing(), T0, POLICY) == [k.Purpose.MASTER, k.Purpose.SIGNING, k.Purpose.ENCRYPTION]
    assert k.due(ring_at(T0), T0 + timedelta(days=1), POLICY) == []


@pytest.mark.parametrize(
    ("since", "is_due"),
    [(timedelta(hours=1, minutes=59, seconds=59), False), (timedelta(hours=2), True), (timedelta(days=1), True)],
)
def test_backup_schedule(since: timedelta, is_due: bool) -> None:
    assert k.backup_due(None, T0, POLICY)
    assert k.backup_due(T0, T0 + since, POLICY) is is_due
    assert k.backup_due(T0, T0 + timedelta(minutes=10), k.KeyPolicy(backup_interval=timedelta(minutes=10)))


def test_rotation_retires_the_old_version_and_activates_the_next() -> None:
    ring = ring_at(T0)
    later = T0 + timedelta(days=90)
    ring, new = k.with_new_version(ring, k.Purpose.SIGNING, later, public_key_pem=PEM)
    assert (new.key_id, new.state, new.created_at) == ("nexus-signing-v2", k.State.ACTIVE, later)
    old = ring.get("nexus-signing-v1")
    assert old is not None and (old.state, old.retired_at) == (k.State.RETIRED, later)
    assert ring.active(k.Purpose.SIGNING) == new
    master = ring.active(k.Purpose.MASTER)
    assert master is not None and master.version == 1
    assert [v.version for v in ring.of(k.Purpose.SIGNING)] == [1, 2]


def test_new_versions_carry_exactly_their_purpose_material() -> None:
    with pytest.raises(ValueError):
        k.with_new_version(k.KeyRing(), k.Purpose.SIGNING, T0)
    with pytest.raises(ValueError):
        k.with_new_version(k.KeyRing(), k.Purpose.ENCRYPTION, T0, public_key_pem=PEM)
    with pytest.raises(ValueError):
        k.with_new_version(k.KeyRing(), k.Purpose.MASTER, T0)
    with pytest.raises(ValueError):
        k.with_new_version(k.KeyRing(), k.Purpose.ENCRYPTION, T0.replace(tzinfo=None))


def test_destroy_only_retired_versions_and_idempotent() -> None:
    ring, _ = k.with_new_version(ring_at(T0), k.Purpose.ENCRYPTION, T0 + timedelta(days=1))
    with pytest.raises(k.KeyRefused, match="ACTIVE"):
        k.with_destroyed(ring, "nexus-encryption-v2", T0)
    with pytest.raises(k.KeyRefused, match="unknown"):
        k.with_destroyed(ring, "nexus-encryption-v9", T0)
    gone = k.with_destroyed(ring, "nexus-encryption-v1", T0 + timedelta(days=2))
    key = gone.get("nexus-encryption-v1")
    assert key is not None and (key.state, key.destroyed_at) == (k.State.DESTROYED, T0 + timedelta(days=2))
    assert k.with_destroyed(gone, "nexus-encryption-v1", T0 + timedelta(days=3)) == gone
    assert "nexus-encryption-v1" not in {v.key_id for v in gone.live()}
    # a destroyed version's number is never reused
    assert gone.next_version(k.Purpose.ENCRYPTION) == 3


def test_published_metadata_validates_against_the_contract() -> None:
    ring, _ = k.with_new_version(ring_at(T0), k.Purpose.SIGNING, T0 + timedelta(days=90), public_key_pem=PEM)
    observed = T0 + timedelta(days=91)
    records = {v.key_id: m.KeyMetadata(**k.published(v, POLICY, observed)) for v in ring.versions}
    v1, v2 = records["nexus-signing-v1"], records["nexus-signing-v2"]
    assert (v1.state, v1.version, v1.purpose) == (m.KeyState.RETIRED, 1, m.KeyPurpose.SIGNING)
    assert v1.public_key_pem == PEM and v1.algorithm == "ECDSA-P256"
    assert (v2.state, v2.expires_at) == (m.KeyState.ACTIVE, T0 + timedelta(days=180))
    master = records["nexus-master-v1"]
    assert (master.algorithm, master.public_key_pem, master.label) == ("AES-256", None, "nexus-master-v1")


def test_registry_json_round_trip_and_refuses_two_active() -> None:
    ring = k.with_ceremony(ring_at(T0), "GOV:r1", "nexus-signing-v1")
    ring = k.KeyRing(ring.versions, T0 + timedelta(hours=2), ring.ceremonies)
    assert k.ring_from_json(k.ring_to_json(ring)) == ring
    data = k.ring_to_json(ring)
    data["versions"].append({**data["versions"][0], "version": 2})
    with pytest.raises(ValueError, match="two ACTIVE"):
        k.ring_from_json(data)


def test_any_threshold_of_shares_rebuilds_the_secret_and_fewer_do_not() -> None:
    secret = os.urandom(32)
    shares = k.split_secret(secret, 3, 5, os.urandom)
    assert [x for x, _ in shares] == [1, 2, 3, 4, 5]
    for chosen in itertools.combinations(shares, 3):
        assert k.combine_shares(chosen) == secret
    assert k.combine_shares(shares) == secret
    assert all(k.combine_shares(pair) != secret for pair in itertools.combinations(shares, 2))
    with pytest.raises(ValueError):
        k.split_secret(secret, 1, 5, os.urandom)
    with pytest.raises(ValueError):
        k.combine_shares([shares[0]])


def test_shares_are_deterministic_given_the_randomness() -> None:
    """A hand-checkable case: threshold 2, coefficient 0x01 -> share(x) = secret XOR x."""
    shares = k.split_secret(b"\x10\x20", 2, 3, lambda n: b"\x01" * n)
    assert shares == [(1, b"\x11\x21"), (2, b"\x12\x22"), (3, b"\x13\x23")]
    assert k.combine_shares(shares[1:]) == b"\x10\x20"
