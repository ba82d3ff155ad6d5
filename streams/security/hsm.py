"""The HSM over PKCS#11 (python-pkcs11): SoftHSM2 in development and tests, CloudHSM / Luna / ... in production —
the code speaks only PKCS#11, so a real HSM is a module path, a token label and a PIN (streams.security.settings).

:class:`Hsm` is one logged-in read/write session on the token and the few operations the platform needs, each on a
key found by its label (``nexus-signing-v3``; ``domain.keys``):

* generate a signing version (ECDSA P-256 key pair) or an encryption version (AES-256) inside the token; import a
  master version (AES-256) whose value the key manager split into custodian shares first;
* sign (CKM_ECDSA over a SHA-256 digest computed here; the raw r||s the token returns is DER-encoded, what
  ``cryptography`` and every X.509 tool verify) and verify;
* AES-GCM encrypt / decrypt with an encryption version (envelope encryption: it wraps data keys);
* wrap / unwrap keys with a master version (CKM_AES_KEY_WRAP_PAD, RFC 5649: SoftHSM2 supports it for secret keys
  and, as PKCS#8, for EC private keys) — the backups — and import a public key.

Every key is created SENSITIVE (its value never leaves the token in clear) and, except where noted, EXTRACTABLE
only so that a master version can wrap it into a backup. Masters can wrap and unwrap, nothing else; encryption
versions encrypt and decrypt, and cannot wrap (so they cannot export a key either).

One session is not safe for concurrent use: every call holds the instance's lock. Opening a token the process
created (the dev token) re-initialises the PKCS#11 library, which closes the process's other sessions on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pkcs11
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.exceptions import MultipleObjectsReturned, NoSuchKey, NoSuchToken, PKCS11Error, UserAlreadyLoggedIn
from pkcs11.mechanisms import GCMParams
from pkcs11.util.ec import (
    decode_ecdsa_signature,
    encode_ec_public_key,
    encode_ecdsa_signature,
    encode_named_curve_parameters,
)

from domain.keys import LABEL_PREFIX
from infra.hsm import softhsm
from streams.security.settings import SecuritySettings

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

log = logging.getLogger("nexus.hsm")

GCM_NONCE_BYTES = 12
GCM_TAG_BITS = 128
WRAP_MECHANISM = Mechanism.AES_KEY_WRAP_PAD
P256 = "secp256r1"

_CAPABILITIES = (
    Attribute.ENCRYPT,
    Attribute.DECRYPT,
    Attribute.WRAP,
    Attribute.UNWRAP,
    Attribute.SIGN,
    Attribute.VERIFY,
    Attribute.DERIVE,
)
_KEPT_SECRET = {Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True}


def _only(*allowed: Attribute) -> dict[Attribute, Any]:
    return {a: a in allowed for a in _CAPABILITIES}


MASTER_TEMPLATE = {**_KEPT_SECRET, **_only(Attribute.WRAP, Attribute.UNWRAP)}
ENCRYPTION_TEMPLATE = {**_KEPT_SECRET, **_only(Attribute.ENCRYPT, Attribute.DECRYPT)}
# A private key has no ENCRYPT/VERIFY/WRAP attributes at all in SoftHSM2: leave them out rather than set them.
SIGNING_PRIVATE_TEMPLATE: dict[Attribute, Any] = {
    **_KEPT_SECRET,
    **{a: DEFAULT for a in _CAPABILITIES},
    Attribute.SIGN: True,
    Attribute.DERIVE: False,
}
SIGNING_PUBLIC_TEMPLATE: dict[Attribute, Any] = {Attribute.TOKEN: True, Attribute.VERIFY: True}


class HsmError(RuntimeError):
    pass


class KeyNotFound(HsmError):
    pass


_conf_loaded: dict[str, str | None] = {}  # module path -> the SOFTHSM2_CONF it was loaded with
_sessions: weakref.WeakSet[Hsm] = weakref.WeakSet()  # open in this process
# PKCS#11 logs in per process: closing the session that logged in logs every session of the token out. Such a
# session closed while others of its token are open is kept here, and closed with the token's last one.
_logins: dict[str, list[pkcs11.Session]] = {}


def _reinitialize(lib: Library) -> None:
    """C_Finalize + C_Initialize: every session of this process ends. Mark ours closed, so a stale one fails
    instead of reaching whatever session later gets its handle number."""
    for hsm in list(_sessions):
        hsm.invalidate()
    _logins.clear()  # C_Finalize ends them
    lib.reinitialize()


def load_library(module: str, softhsm_conf: Path | None) -> Library:
    """The PKCS#11 library (one per process). SoftHSM2 reads ``SOFTHSM2_CONF`` when it is initialised: a process
    serves one token directory at a time (another one re-initialises the library)."""
    switch = False
    if softhsm_conf is not None:
        wanted = str(softhsm_conf.resolve())
        switch = _conf_loaded.get(module, wanted) != wanted
        os.environ["SOFTHSM2_CONF"] = wanted
        _conf_loaded[module] = wanted
    try:
        lib = pkcs11.lib(module)
        if switch:  # another token directory (tests): SoftHSM2 reads its configuration again when initialised
            log.warning("re-initialising %s for %s: this process's other sessions on it are closed", module, wanted)
            _reinitialize(lib)
        return lib
    except PKCS11Error as exc:
        raise HsmError(f"cannot load the PKCS#11 module {module}: {exc!r}") from exc


def _find_token(lib: Library, label: str) -> pkcs11.Token | None:
    try:
        return lib.get_token(token_label=label)
    except NoSuchToken:
        return None


def _pin(settings: SecuritySettings) -> str:
    if settings.pin is not None:
        return settings.pin.get_secret_value()
    path = settings.user_pin_path
    if not path.exists():
        raise HsmError(f"no PIN: set NEXUS_SECURITY_PIN or NEXUS_SECURITY_PIN_FILE (no file at {path})")
    return path.read_text(encoding="utf-8").strip()


def open_hsm(settings: SecuritySettings) -> Hsm:
    """A session on the configured token; the SoftHSM2 dev token is created first when configured and missing."""
    conf = None
    if settings.softhsm and settings.softhsm_dev_token:
        conf, so_pin, user_pin = softhsm.ensure_dev_token_files(settings.hsm_path, settings.user_pin_path)
        if settings.pin is not None:
            user_pin = settings.pin.get_secret_value()
    lib = load_library(settings.pkcs11_module, conf)
    token = _find_token(lib, settings.token_label)
    if token is None and conf is not None:
        softhsm.init_token(conf, settings.token_label, so_pin, user_pin)
        _reinitialize(lib)  # SoftHSM2 lists a token created by another process only after this
        token = _find_token(lib, settings.token_label)
    if token is None:
        raise HsmError(f"no token labelled {settings.token_label!r} behind {settings.pkcs11_module}")
    try:
        session, logged_in = token.open(user_pin=_pin(settings), rw=True), True
    except UserAlreadyLoggedIn:
        # Another session of this process logged in (a process that seals and signs opens the token twice): a new
        # session shares that login.
        session, logged_in = token.open(rw=True), False
    except PKCS11Error as exc:  # the message names the failure (e.g. PinIncorrect), never the PIN
        raise HsmError(f"cannot log in to token {settings.token_label!r}: {type(exc).__name__}") from exc
    return Hsm(session, settings.token_label, logged_in=logged_in)


class Hsm:
    def __init__(self, session: pkcs11.Session, token_label: str, *, logged_in: bool = True) -> None:
        self._session: pkcs11.Session | None = session
        self.token_label = token_label
        self._logged_in = logged_in  # this session did the process's login (see _logins)
        self._lock = threading.RLock()
        self._handles: dict[tuple[str, ObjectClass], Any] = {}
        _sessions.add(self)

    def invalidate(self) -> None:
        with self._lock:
            self._session = None

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is None:
            return
        others = [h for h in _sessions if h is not self and h.token_label == self.token_label and h._session]
        if others and self._logged_in:
            _logins.setdefault(self.token_label, []).append(session)  # the others still need the login
            return
        session.close()
        if not others:
            for kept in _logins.pop(self.token_label, []):
                kept.close()

    def __enter__(self) -> Hsm:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _op(self, what: str) -> Iterator[pkcs11.Session]:
        with self._lock:
            if self._session is None:
                raise HsmError(f"{what}: the session on token {self.token_label!r} is closed")
            try:
                yield self._session
            except (NoSuchKey, KeyNotFound) as exc:
                raise KeyNotFound(f"{what}: no such key in token {self.token_label!r}") from exc
            except PKCS11Error as exc:
                raise HsmError(f"{what}: {type(exc).__name__} {exc}") from exc

    def _key(self, session: pkcs11.Session, label: str, object_class: ObjectClass) -> Any:
        """The key object, looked up once per session (a C_FindObjects costs more than the signature)."""
        cached = self._handles.get((label, object_class))
        if cached is not None:
            return cached
        try:
            key = session.get_key(object_class=object_class, label=label)
            self._handles[(label, object_class)] = key
            return key
        except NoSuchKey as exc:
            raise KeyNotFound(f"{label} ({object_class.name})") from exc
        except MultipleObjectsReturned as exc:
            raise HsmError(f"two {object_class.name} objects labelled {label}") from exc

    # -- inventory

    def key_labels(self) -> set[str]:
        """Labels of the platform's key objects in the token (``nexus-...``)."""
        with self._op("list keys") as session:
            found = set()
            for cls in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for obj in session.get_objects({Attribute.CLASS: cls}):
                    name = obj[Attribute.LABEL]
                    if isinstance(name, str) and name.startswith(f"{LABEL_PREFIX}-"):
                        found.add(name)
            return found

    def destroy(self, label: str) -> int:
        """Remove every object labelled ``label``; the number removed (0 when already gone)."""
        with self._op(f"destroy {label}") as session:
            for cls in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                self._handles.pop((label, cls), None)
            objects = list(session.get_objects({Attribute.LABEL: label}))
            for obj in objects:
                obj.destroy()
            return len(objects)

    # -- creation

    def generate_signing(self, label: str) -> str:
        """A new ECDSA P-256 key pair; its public key as SubjectPublicKeyInfo PEM."""
        with self._op(f"generate {label}") as session:
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(P256)}, local=True
            )
            public, _ = params.generate_keypair(
                store=True,
                label=label,
                id=label.encode(),
                public_template=SIGNING_PUBLIC_TEMPLATE,
                private_template=SIGNING_PRIVATE_TEMPLATE,
            )
            return _pem(encode_ec_public_key(public))

    def generate_aes(self, label: str) -> None:
        """A new AES-256 encryption version, generated inside the token."""
        with self._op(f"generate {label}") as session:
            session.generate_key(
                KeyType.AES,
                256,
                label=label,
                id=label.encode(),
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template=ENCRYPTION_TEMPLATE,
            )

    def import_master(self, label: str, value: bytes) -> None:
        if len(value) != 32:
            raise ValueError("a master key is AES-256: 32 bytes")
        with self._op(f"import {label}") as session:
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: KeyType.AES,
                    Attribute.VALUE: value,
                    Attribute.LABEL: label,
                    Attribute.ID: label.encode(),
                    **MASTER_TEMPLATE,
                }
            )

    # -- signing

    def sign(self, label: str, message: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(message), DER-encoded."""
        digest = hashlib.sha256(message).digest()
        with self._op(f"sign with {label}") as session:
            raw = self._key(session, label, ObjectClass.PRIVATE_KEY).sign(digest, mechanism=Mechanism.ECDSA)
        return bytes(encode_ecdsa_signature(raw))

    def verify(self, label: str, message: bytes, signature: bytes) -> bool:
        digest = hashlib.sha256(message).digest()
        try:
            raw = decode_ecdsa_signature(signature)
        except ValueError:
            return False
        with self._op(f"verify with {label}") as session:
            public = self._key(session, label, ObjectClass.PUBLIC_KEY)
            return bool(public.verify(digest, raw, mechanism=Mechanism.ECDSA))

    def public_key_pem(self, label: str) -> str:
        with self._op(f"public key of {label}") as session:
            return _pem(encode_ec_public_key(self._key(session, label, ObjectClass.PUBLIC_KEY)))

    def public_parts(self, label: str) -> tuple[bytes, bytes]:
        """(CKA_EC_POINT, CKA_EC_PARAMS) of a signing version's public key: what a backup needs to import it."""
        with self._op(f"public key of {label}") as session:
            public = self._key(session, label, ObjectClass.PUBLIC_KEY)
            return bytes(public[Attribute.EC_POINT]), bytes(public[Attribute.EC_PARAMS])

    def import_public(self, label: str, ec_point: bytes, ec_params: bytes) -> None:
        with self._op(f"import public key {label}") as session:
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                    Attribute.KEY_TYPE: KeyType.EC,
                    Attribute.EC_POINT: ec_point,
                    Attribute.EC_PARAMS: ec_params,
                    Attribute.LABEL: label,
                    Attribute.ID: label.encode(),
                    **SIGNING_PUBLIC_TEMPLATE,
                }
            )

    # -- encryption (envelope: the payload is a data key)

    def encrypt(self, label: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AES-256-GCM: nonce (12 bytes) || ciphertext || tag (16 bytes). A random nonce per call: the key
        rotates long before 2^32 encryptions make a repeat likely."""
        nonce = os.urandom(GCM_NONCE_BYTES)
        with self._op(f"encrypt with {label}") as session:
            key = self._key(session, label, ObjectClass.SECRET_KEY)
            sealed = key.encrypt(plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad))
        return nonce + bytes(sealed)

    def decrypt(self, label: str, blob: bytes, aad: bytes = b"") -> bytes:
        """Raises HsmError when the blob or its associated data was altered (the tag does not verify)."""
        nonce, sealed = blob[:GCM_NONCE_BYTES], blob[GCM_NONCE_BYTES:]
        with self._op(f"decrypt with {label}") as session:
            key = self._key(session, label, ObjectClass.SECRET_KEY)
            return bytes(key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)))

    # -- wrapping (backups)

    def wrap(self, wrapping_label: str, label: str, object_class: ObjectClass) -> bytes:
        with self._op(f"wrap {label} with {wrapping_label}") as session:
            wrapping = self._key(session, wrapping_label, ObjectClass.SECRET_KEY)
            key = self._key(session, label, object_class)
            return bytes(wrapping.wrap_key(key, mechanism=WRAP_MECHANISM))

    def unwrap_secret(self, wrapping_label: str, label: str, wrapped: bytes, *, master: bool) -> None:
        template = MASTER_TEMPLATE if master else ENCRYPTION_TEMPLATE
        with self._op(f"unwrap {label} with {wrapping_label}") as session:
            wrapping = self._key(session, wrapping_label, ObjectClass.SECRET_KEY)
            wrapping.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.AES,
                wrapped,
                label=label,
                id=label.encode(),
                mechanism=WRAP_MECHANISM,
                store=True,
                template=template,
            )

    def unwrap_signing(self, wrapping_label: str, label: str, wrapped: bytes) -> None:
        with self._op(f"unwrap {label} with {wrapping_label}") as session:
            wrapping = self._key(session, wrapping_label, ObjectClass.SECRET_KEY)
            wrapping.unwrap_key(
                ObjectClass.PRIVATE_KEY,
                KeyType.EC,
                wrapped,
                label=label,
                id=label.encode(),
                mechanism=WRAP_MECHANISM,
                store=True,
                template=SIGNING_PRIVATE_TEMPLATE,
            )


def _pem(der: bytes) -> str:
    key = serialization.load_der_public_key(der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class HsmSigner:
    """streams.security.signing.CheckpointSigner over PKCS#11, bound to one signing version.

    Bound, not following the ACTIVE version: a checkpoint names its key id and is signed by that key, so the pair
    must not change in between. After a rotation ask the key manager for the signer again
    (``streams.security.keys.KeyManager.signer``: the ACTIVE version's)."""

    def __init__(self, hsm: Hsm, key_id: str) -> None:
        self._hsm = hsm
        self._key_id = key_id
        self._public_key_pem = hsm.public_key_pem(key_id)  # also proves the version is in the token

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._hsm.sign(self._key_id, message)

    def public_key_pem(self) -> str:
        return self._public_key_pem
