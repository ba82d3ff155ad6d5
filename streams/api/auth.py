"""OAuth2 client credentials: clients (id, secret, roles, subject) trade their secret for a short-lived signed JWT.

**Why HS256.** The API is the token's only issuer and only verifier: nothing else needs to check a token without
the secret, which is what an asymmetric signature (ES256) would buy. One 256-bit secret, made on first run under
``$NEXUS_DATA_DIR/api/`` (owner-only), signs and verifies; it never leaves the process's files and is never logged.
Deployments with several API instances share the file (or a secret store mounted at that path).

**Clients** live in ``clients.json`` beside it: per client id its roles, its subject (a merchant's ``merchant_id``,
else the client id) and the SHA-256 of its secret (a random 256-bit value: a fast hash is enough, no password
stretching is needed for a secret nobody chose). ``python -m streams.api clients add`` makes one and prints its
secret once. The file is re-read when it changes, so a client added while the API runs can log in at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from infra.files import write_private
from streams.api.problems import ApiProblem

ISSUER = "nexus-x-settlement-api"
AUDIENCE = "nexus-x-settlement"
ALGORITHM = "HS256"
KEY_FILE = "token-signing.key"
CLIENTS_FILE = "clients.json"

SCOPES: dict[str, str] = {
    "settlements:write": "settle card payments (POST /api/settlement/bridge) for the token's own merchant",
    "settlements:read": "the status and history of the token's own settlements",
    "settlements:read_all": "the status and history of every merchant's settlements and every holder's payouts",
    "rules:write": "create, replace and delete auto-payout rules",
    "rules:read": "read auto-payout rules",
    "reconcile:write": "trigger the daily reconciliation",
    "reconcile:read": "read a reconciliation run's state",
}
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "merchant": ("settlements:write", "settlements:read"),
    "producer": ("rules:write", "rules:read"),
    "analyst": ("settlements:read_all",),
    "operations": ("reconcile:write", "reconcile:read"),
}
assert {s for scopes in ROLE_SCOPES.values() for s in scopes} == set(SCOPES)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the client, the subject its token speaks for, and what it may do."""

    client_id: str
    subject: str
    scopes: frozenset[str]

    def require(self, *any_of: str) -> None:
        """At least one of ``any_of`` (else 403 INSUFFICIENT_SCOPE)."""
        if not self.scopes.intersection(any_of):
            raise ApiProblem(
                403,
                "INSUFFICIENT_SCOPE",
                f"this operation needs the scope {' or '.join(any_of)}; the token has {' '.join(sorted(self.scopes))}",
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{" ".join(any_of)}"'},
            )


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    roles: tuple[str, ...]
    subject: str
    secret_sha256: str

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(s for role in self.roles for s in ROLE_SCOPES[role])


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def signing_key(directory: Path) -> bytes:
    """The HS256 secret, made (256 random bits, owner-only) on first use."""
    path = directory / KEY_FILE
    if not path.exists():
        write_private(path, secrets.token_hex(32).encode())
    return bytes.fromhex(path.read_text().strip())


class Clients:
    """The client registry file, re-read when it changes."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / CLIENTS_FILE
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._clients: dict[str, Client] = {}

    def get(self, client_id: str) -> Client | None:
        with self._lock:
            mtime_ns = self.path.stat().st_mtime_ns if self.path.exists() else 0
            if mtime_ns != self._mtime_ns:
                self._clients = self._read()
                self._mtime_ns = mtime_ns
            return self._clients.get(client_id)

    def _read(self) -> dict[str, Client]:
        if not self.path.exists():
            return {}
        raw: dict[str, Any] = json.loads(self.path.read_bytes()).get("clients", {})
        return {
            cid: Client(cid, tuple(c["roles"]), c["subject"], c["secret_sha256"])
            for cid, c in raw.items()
            if isinstance(c, dict)
        }

    def add(self, client_id: str, roles: tuple[str, ...], subject: str | None = None) -> str:
        """Register (or re-key) a client; returns its new secret, which is stored only as a hash."""
        unknown = set(roles) - set(ROLE_SCOPES)
        if unknown or not roles:
            raise ValueError(f"roles must be some of {sorted(ROLE_SCOPES)}, not {sorted(unknown) or 'none'}")
        secret = secrets.token_urlsafe(32)
        with self._lock:
            data = json.loads(self.path.read_bytes()) if self.path.exists() else {"clients": {}}
            data["clients"][client_id] = {
                "roles": list(roles),
                "subject": subject or client_id,
                "secret_sha256": _sha256(secret),
            }
            write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
            self._mtime_ns = -1
        return secret

    def listing(self) -> list[dict[str, Any]]:
        self.get("")  # refresh
        with self._lock:
            return [
                {"client_id": c.client_id, "roles": list(c.roles), "subject": c.subject} for c in self._clients.values()
            ]


class TokenIssuer:
    """Issues and verifies the API's access tokens."""

    def __init__(self, directory: Path, ttl_s: int, clock: Any = time.time) -> None:
        self.clients = Clients(directory)
        self._key = signing_key(directory)
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, client_id: str, client_secret: str, scope: str | None) -> dict[str, Any]:
        """The token response of RFC 6749 §5.1, or ApiProblem INVALID_CLIENT / INVALID_SCOPE."""
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(client.secret_sha256, _sha256(client_secret)):
            raise ApiProblem(
                401,
                "INVALID_CLIENT",
                "unknown client or wrong secret",
                headers={"WWW-Authenticate": 'Basic realm="nexus-x"'},
                extra={"error": "invalid_client"},
            )
        asked = frozenset(scope.split()) if scope else client.scopes
        if not asked <= client.scopes:
            raise ApiProblem(
                400,
                "INVALID_SCOPE",
                f"scopes not granted to this client: {' '.join(sorted(asked - client.scopes))}",
                extra={"error": "invalid_scope"},
            )
        now = int(self._clock())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": client.subject,
            "client_id": client.client_id,
            "scope": " ".join(sorted(asked)),
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.ttl_s, "scope": claims["scope"]}

    def verify(self, token: str) -> Principal:
        """The token's principal, or ApiProblem 401 (UNAUTHENTICATED, TOKEN_EXPIRED)."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "scope"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiProblem(
                401,
                "TOKEN_EXPIRED",
                "the access token has expired: ask POST /oauth/token for a new one",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token", error_description="expired"'},
            ) from None
        except jwt.InvalidTokenError as exc:
            raise unauthenticated(f"the access token is not valid: {exc}") from None
        return Principal(
            str(claims.get("client_id", claims["sub"])), str(claims["sub"]), frozenset(claims["scope"].split())
        )


def unauthenticated(detail: str) -> ApiProblem:
    return ApiProblem(401, "UNAUTHENTICATED", detail, headers={"WWW-Authenticate": 'Bearer realm="nexus-x"'})


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise unauthenticated("no credential: send Authorization: Bearer <token> (POST /oauth/token issues one)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()
