"""Personal data sealed at rest (issue 18 item 2): envelope encryption with the HSM's encryption key, and masking.

A sealed value is the contract's ``Sealed`` text::

    enc:v1:<encryption key id>:<wrapped data key b64>:<nonce b64>:<ciphertext b64>

* :meth:`HsmSealer.seal`: a fresh AES-256-GCM data key per value encrypts it (``cryptography``); the data key is
  then encrypted (wrapped) in the HSM by the ACTIVE encryption version (``streams.security.keys.KeyManager.encrypt``,
  AES-GCM through PKCS#11). The data key never exists outside this process's memory in clear.
* :meth:`HsmSealer.open`: the HSM unwraps the data key with the version the envelope names — a RETIRED version
  still opens (only a DESTROYED one does not) — and the value is decrypted. The header (format, key id, wrapped
  key) is the associated data of the value's encryption: a changed byte anywhere fails with :class:`SealError`.
* :class:`LocalSealer`: one AES-256 key from the environment (``NEXUS_SEAL_LOCAL_KEY``), for development and unit
  tests without an HSM only; its key id is ``local-dev``.

Which one the platform uses (:func:`platform_sealer`, ``NEXUS_SEAL_MODE``): ``auto`` (default) seals with the HSM
when the key manager has created its keys (its registry exists) and is off otherwise; ``hsm`` requires the HSM;
``local`` the dev key; ``off`` never seals (plain fields, as before). The choice is logged at start.

Masking (:func:`mask_email`, :func:`mask_phone`, :func:`mask_account`, :func:`mask`) is what logs, messages and
analysts see instead: enough to tell two values apart, not enough to contact or pay anyone. Standard library only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from streams.security.settings import SecuritySettings

log = logging.getLogger("nexus.envelope")

PREFIX = "enc:v1:"
NONCE_BYTES = 12
DATA_KEY_BYTES = 32
LOCAL_KEY_ID = "local-dev"
# The wrapped data key's associated data: a data key wrapped for something else does not unwrap as one of ours.
WRAP_AAD = b"nexus-x sealed data key v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class SealError(ValueError):
    """A sealed value that cannot be opened: not an envelope, altered, or sealed by a key not available here."""


class Sealer(Protocol):
    def seal(self, plaintext: bytes) -> str: ...

    def open(self, sealed: str) -> bytes: ...


class KeyWrapper(Protocol):
    """What the HSM sealer needs of the key manager (``streams.security.keys.KeyManager``)."""

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> tuple[str, bytes]: ...

    def decrypt(self, key_id: str, sealed: bytes, aad: bytes = b"") -> bytes: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SealError("not base64") from exc


def _header(key_id: str, wrapped_b64: str) -> bytes:
    return f"{PREFIX}{key_id}:{wrapped_b64}".encode()


def parse(sealed: str) -> tuple[str, str, bytes, bytes]:
    """(key id, wrapped data key b64, nonce, ciphertext) of an envelope; SealError if it is not one."""
    if not sealed.startswith(PREFIX):
        raise SealError("not a sealed value (enc:v1:...)")
    parts = sealed[len(PREFIX) :].split(":")
    if len(parts) != 4 or not _KEY_ID.match(parts[0]):
        raise SealError("not a sealed value: enc:v1:<key id>:<wrapped key>:<nonce>:<ciphertext>")
    key_id, wrapped_b64, nonce_b64, ciphertext_b64 = parts
    nonce = _unb64(nonce_b64)
    if len(nonce) != NONCE_BYTES:
        raise SealError("the nonce is not 12 bytes")
    return key_id, wrapped_b64, nonce, _unb64(ciphertext_b64)


def _seal_with(data_key: bytes, key_id: str, wrapped: bytes, plaintext: bytes) -> str:
    wrapped_b64 = _b64(wrapped)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _header(key_id, wrapped_b64))
    return f"{PREFIX}{key_id}:{wrapped_b64}:{_b64(nonce)}:{_b64(ciphertext)}"


def _open_with(data_key: bytes, key_id: str, wrapped_b64: str, nonce: bytes, ciphertext: bytes) -> bytes:
    try:
        return AESGCM(data_key).decrypt(nonce, ciphertext, _header(key_id, wrapped_b64))
    except (InvalidTag, ValueError) as exc:
        raise SealError("the sealed value was altered (authentication failed)") from exc


class HsmSealer:
    """Envelope encryption with the HSM's encryption key (through the key manager, which names the ACTIVE version
    and refuses a DESTROYED one)."""

    def __init__(self, keys: KeyWrapper) -> None:
        self._keys = keys

    def seal(self, plaintext: bytes) -> str:
        data_key = AESGCM.generate_key(bit_length=256)
        key_id, wrapped = self._keys.encrypt(data_key, WRAP_AAD)
        return _seal_with(data_key, key_id, wrapped, plaintext)

    def open(self, sealed: str) -> bytes:
        key_id, wrapped_b64, nonce, ciphertext = parse(sealed)
        try:
            data_key = self._keys.decrypt(key_id, _unb64(wrapped_b64), WRAP_AAD)
        except SealError:
            raise
        except Exception as exc:  # HsmError (tag refused, no such key), KeyRefused (DESTROYED or unknown version)
            raise SealError(f"the data key does not open with {key_id}: {type(exc).__name__}") from exc
        if len(data_key) != DATA_KEY_BYTES:
            raise SealError("the wrapped data key is not an AES-256 key")
        return _open_with(data_key, key_id, wrapped_b64, nonce, ciphertext)


class LocalSealer:
    """Development and unit tests only: the data keys are wrapped by one AES-256 key held in this process (from
    ``NEXUS_SEAL_LOCAL_KEY``), not by an HSM. Same envelope; its key id is ``local-dev``."""

    def __init__(self, key: bytes, key_id: str = LOCAL_KEY_ID) -> None:
        if len(key) != DATA_KEY_BYTES:
            raise ValueError("the local sealing key is AES-256: 32 bytes")
        self._wrapper = AESGCM(key)
        self.key_id = key_id

    def seal(self, plaintext: bytes) -> str:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self._wrapper.encrypt(nonce, data_key, WRAP_AAD)
        return _seal_with(data_key, self.key_id, wrapped, plaintext)

    def open(self, sealed: str) -> bytes:
        key_id, wrapped_b64, nonce, ciphertext = parse(sealed)
        if key_id != self.key_id:
            raise SealError(f"sealed with {key_id}, not with this process's {self.key_id}")
        wrapped = _unb64(wrapped_b64)
        try:
            data_key = self._wrapper.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], WRAP_AAD)
        except (InvalidTag, ValueError) as exc:
            raise SealError("the wrapped data key was altered (authentication failed)") from exc
        return _open_with(data_key, key_id, wrapped_b64, nonce, ciphertext)


# ----------------------------------------------------------------------------- text and JSON helpers


def seal_text(sealer: Sealer, text: str) -> str:
    return sealer.seal(text.encode())


def open_text(sealer: Sealer | None, sealed: str) -> str:
    """The value of a sealed text; SealError when there is no sealer here or it does not open."""
    if sealer is None:
        raise SealError("a sealed value, and sealing is off in this process (NEXUS_SEAL_MODE)")
    try:
        return sealer.open(sealed).decode()
    except UnicodeDecodeError as exc:
        raise SealError("the sealed value is not text") from exc


def seal_json(sealer: Sealer, value: Mapping[str, str | None]) -> str:
    return sealer.seal(json.dumps(dict(value), sort_keys=True, separators=(",", ":")).encode())


def open_json(sealer: Sealer | None, sealed: str) -> dict[str, str | None]:
    data = json.loads(open_text(sealer, sealed))
    if not isinstance(data, dict) or not all(v is None or isinstance(v, str) for v in data.values()):
        raise SealError("the sealed value is not a JSON object of strings")
    return data


# ----------------------------------------------------------------------------- masking


def mask_email(email: str) -> str:
    """``sam@example.com`` -> ``s***@example.com``."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str) -> str:
    """``+821012345678`` -> ``+82******5678`` (E.164: country code and last four kept)."""
    plus = "+" if phone.startswith("+") else ""
    digits = phone[1:] if plus else phone
    if len(digits) < 8:
        return plus + "*" * len(digits)
    return f"{plus}{digits[:2]}{'*' * (len(digits) - 6)}{digits[-4:]}"


def mask_account(account: str) -> str:
    """A payout account (Stripe ``acct_...``, Wise recipient, PayPal e-mail, Toss sub-mall): ``****`` and its last
    four characters when it has more than eight, else ``****`` alone."""
    value = account.strip()
    return f"****{value[-4:]}" if len(value) > 8 else "****"


def mask(destination: str) -> str:
    """A notification destination as logs may show it: an e-mail or phone number masked as above; anything else (a
    push token) keeps its first 4 characters."""
    if "@" in destination:
        return mask_email(destination)
    digits = destination[1:] if destination.startswith("+") else destination
    if digits.isdigit():
        return mask_phone(destination)
    return f"{destination[:4]}***" if len(destination) > 8 else "***"


# ----------------------------------------------------------------------------- the platform's choice


class SealSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NEXUS_SEAL_", env_file=".env", extra="ignore")

    # auto: the HSM when the key manager has created the keys (its registry exists), else off; hsm: the HSM or
    # refuse to start; local: the dev key below (development only); off: personal data stays plain.
    mode: Literal["auto", "hsm", "local", "off"] = "auto"
    local_key: SecretStr | None = None  # base64 of 32 random bytes; development and tests only


def _hsm_sealer(security: SecuritySettings) -> HsmSealer:
    from streams.security.hsm import open_hsm  # PKCS#11 is loaded only by processes that seal
    from streams.security.keys import KeyManager

    return HsmSealer(KeyManager(open_hsm(security), security))


def platform_sealer(settings: SealSettings | None = None, security: SecuritySettings | None = None) -> Sealer | None:
    """The process's sealer per ``NEXUS_SEAL_MODE`` (module doc), or None when sealing is off; says which."""
    settings = settings or SealSettings()
    if settings.mode == "off":
        log.warning("sealing is off (NEXUS_SEAL_MODE=off): personal data is written plain")
        return None
    if settings.mode == "local":
        if settings.local_key is None:
            raise ValueError("NEXUS_SEAL_MODE=local needs NEXUS_SEAL_LOCAL_KEY (base64 of 32 bytes)")
        log.warning("sealing with the LOCAL development key (NEXUS_SEAL_MODE=local): not for production")
        return LocalSealer(base64.b64decode(settings.local_key.get_secret_value()))
    if security is None:
        from streams.security.settings import get_security_settings

        security = get_security_settings()
    registry = security.hsm_path / "keys.json"
    if settings.mode == "auto" and security.softhsm and not registry.exists():
        log.warning("sealing is off: no HSM keys (%s missing); personal data is written plain", registry)
        return None
    sealer = _hsm_sealer(security)
    log.info("sealing personal data with the HSM's encryption key (token %s)", security.token_label)
    return sealer


@lru_cache(maxsize=1)
def shared_sealer() -> Sealer | None:
    """One sealer per process, made on first use (the bridge opens payout accounts only when one arrives sealed)."""
    return platform_sealer()


__all__ = [
    "HsmSealer",
    "LocalSealer",
    "SealError",
    "SealSettings",
    "Sealer",
    "mask",
    "mask_account",
    "mask_email",
    "mask_phone",
    "open_json",
    "open_text",
    "platform_sealer",
    "seal_json",
    "seal_text",
    "shared_sealer",
]
