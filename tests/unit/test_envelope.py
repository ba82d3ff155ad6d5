"""Envelope encryption of personal data (streams.security.envelope): round trips, key versions, tampering, masking.

The HSM sealer runs here over an in-memory stand-in for the key manager (AES-GCM with versioned keys, the same
rules: the ACTIVE version encrypts, a RETIRED one still decrypts, a DESTROYED one refuses); the real HSM is in
tests/integration/test_sealed_payouts.py."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import TypeAdapter

from contracts.types import Sealed
from streams.security.envelope import (
    HsmSealer,
    LocalSealer,
    SealError,
    SealSettings,
    mask,
    mask_account,
    mask_email,
    mask_phone,
    open_json,
    open_text,
    platform_sealer,
    seal_json,
    seal_text,
)

SEALED = TypeAdapter(Sealed)


class FakeKeys:
    """The key manager's encrypt/decrypt over versions kept in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.destroyed: set[str] = set()
        self.active = ""
        self.rotate()

    def rotate(self) -> None:
        self.active = f"nexus-encryption-v{len(self.keys) + 1}"
        self.keys[self.active] = AESGCM.generate_key(bit_length=256)

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> tuple[str, bytes]:
        nonce = os.urandom(12)
        return self.active, nonce + AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, aad)

    def decrypt(self, key_id: str, sealed: bytes, aad: bytes = b"") -> bytes:
        if key_id in self.destroyed or key_id not in self.keys:
            raise ValueError(f"{key_id} is DESTROYED or unknown")
        return AESGCM(self.keys[key_id]).decrypt(sealed[:12], sealed[12:], aad)


@pytest.fixture(params=["hsm", "local"])
def sealer(request: pytest.FixtureRequest) -> HsmSealer | LocalSealer:
    return HsmSealer(FakeKeys()) if request.param == "hsm" else LocalSealer(os.urandom(32))


def test_round_trip_and_the_envelope_matches_the_contract(sealer: HsmSealer | LocalSealer) -> None:
    sealed = seal_text(sealer, "acct_1MqDcVKZ41623")
    assert SEALED.validate_python(sealed) == sealed  # the contract's Sealed pattern
    assert "acct_1MqDcVKZ41623" not in sealed and "1623" not in sealed
    assert open_text(sealer, sealed) == "acct_1MqDcVKZ41623"
    assert sealed != seal_text(sealer, "acct_1MqDcVKZ41623")  # a fresh data key and nonce each time
    contacts = {"email": "sam@example.com", "phone": "+821012345678", "push_token": None}
    assert open_json(sealer, seal_json(sealer, contacts)) == contacts


def test_a_retired_key_version_still_opens_and_new_values_use_the_active_one() -> None:
    keys = FakeKeys()
    sealer = HsmSealer(keys)
    old = seal_text(sealer, "sam@example.com")
    keys.rotate()
    new = seal_text(sealer, "sam@example.com")
    assert old.split(":")[2] == "nexus-encryption-v1" and new.split(":")[2] == "nexus-encryption-v2"
    assert open_text(sealer, old) == open_text(sealer, new) == "sam@example.com"
    keys.destroyed.add("nexus-encryption-v1")
    with pytest.raises(SealError, match="nexus-encryption-v1"):
        open_text(sealer, old)


def _flip(text: str, part: int) -> str:
    """The envelope with one byte of its part ``part`` (2 key id, 3 wrapped key, 4 nonce, 5 ciphertext) changed."""
    parts = text.split(":")
    if part == 2:
        parts[2] = parts[2].replace("v1", "v2") if "v1" in parts[2] else parts[2] + "x"
    else:
        raw = bytearray(base64.b64decode(parts[part]))
        raw[len(raw) // 2] ^= 0x01
        parts[part] = base64.b64encode(bytes(raw)).decode()
    return ":".join(parts)


@pytest.mark.parametrize("part", [2, 3, 4, 5])
def test_a_tampered_envelope_does_not_open(sealer: HsmSealer | LocalSealer, part: int) -> None:
    if isinstance(sealer, HsmSealer):
        sealer._keys.rotate()  # type: ignore[attr-defined]  # v2 exists: a renamed key id must still fail
    sealed = seal_text(sealer, "+821012345678")
    with pytest.raises(SealError):
        open_text(sealer, _flip(sealed, part))


@pytest.mark.parametrize("bad", ["", "+821012345678", "enc:v1:k:AAAA", "enc:v2:k:AA==:AA==:AA==", "enc:v1:k:!!:A:B"])
def test_what_is_not_an_envelope_is_refused(sealer: HsmSealer | LocalSealer, bad: str) -> None:
    with pytest.raises(SealError):
        open_text(sealer, bad)


def test_another_local_key_or_no_sealer_does_not_open() -> None:
    sealed = seal_text(LocalSealer(os.urandom(32)), "sam@example.com")
    with pytest.raises(SealError):
        open_text(LocalSealer(os.urandom(32)), sealed)
    with pytest.raises(SealError, match="sealing is off"):
        open_text(None, sealed)


@pytest.mark.parametrize(
    ("value", "masked", "how"),
    [
        ("sam@example.com", "s***@example.com", mask_email),
        ("+821012345678", "+82******5678", mask_phone),
        ("+1234567", "+*******", mask_phone),
        ("acct_1MqDcVKZ41623", "****1623", mask_account),
        ("RCP-41623", "****1623", mask_account),
        ("12345678", "****", mask_account),  # eight or fewer: nothing shown
        ("sam@example.com", "s***@example.com", mask),
        ("+821012345678", "+82******5678", mask),
        ("push-token-abcdef123456", "push***", mask),
    ],
)
def test_masking_shows_no_whole_value(value: str, masked: str, how: object) -> None:
    assert callable(how)
    assert how(value) == masked
    assert value not in masked


def test_the_platform_choice(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from streams.security.settings import SecuritySettings

    assert platform_sealer(SealSettings(mode="off")) is None
    empty = SecuritySettings(hsm_dir=Path(str(tmp_path)) / "hsm")
    assert platform_sealer(SealSettings(mode="auto"), empty) is None  # no HSM keys: off, and it says so
    with pytest.raises(ValueError, match="NEXUS_SEAL_LOCAL_KEY"):
        platform_sealer(SealSettings(mode="local"))
    key = base64.b64encode(os.urandom(32)).decode()
    local = platform_sealer(SealSettings.model_validate({"mode": "local", "local_key": key}))
    assert isinstance(local, LocalSealer)
    assert open_text(local, seal_text(local, "x@y.z")) == "x@y.z"
