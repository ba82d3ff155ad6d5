"""Idempotency keys as Stripe keeps them, in SQLite so a restarted API still knows them.

A key belongs to one client (two clients may use the same text). Its first request is *pending* while it runs and
*done* once its response is stored; then:

- the same key with the same request (method, path, body) replays the stored response;
- the same key with another request is refused (422 IDEMPOTENCY_KEY_REUSED): the client has a bug, and answering
  either request's response would be wrong for the other;
- the same key while the first request still runs is refused (409 IDEMPOTENCY_KEY_IN_USE): only one proceeds.
  A pending key whose API died mid-request is taken over after ``lock_s`` (the bridge deduplicates by request_id,
  so sending its request again pays nothing twice).

Only responses of requests that ran are stored (2xx, and a settlement's own failure, which is a 200): a refusal
before anything was sent (validation, auth, rate limit, a broker that did not acknowledge) releases the key, so the
corrected or retried request may use it. Keys are forgotten ``ttl_s`` after their first use.

WAL with ``synchronous=NORMAL``: a committed key survives the process's crash, not necessarily a power cut; the
money's guard is the bridge's request_id deduplication, this store only makes the answers repeatable.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from streams.api.problems import ApiProblem

PURGE_BATCH_MAX = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    headers TEXT,
    body BLOB,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    locked_until REAL NOT NULL,
    PRIMARY KEY (owner, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
CREATE TABLE IF NOT EXISTS accepted (
    request_id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL,
    payer_account_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    accepted_at TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accepted_expiry ON accepted (expires_at);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored response, replayed as it was."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """A bridge request this API sent (the status answers PENDING for it until the read model has it)."""

    request_id: str
    owner_id: str
    payer_account_id: str
    currency: str
    amount_minor: int
    accepted_at: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    """The request's identity: method, path and body (JSON compared as data, so spacing and key order do not count)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


class IdempotencyStore:
    def __init__(self, path: Path, ttl_s: float, lock_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.lock_s = lock_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def begin(self, owner: str, key: str, print_: str, now: float) -> Stored | None:
        """None: this request proceeds (the key is now pending); a Stored: replay it. Refusals raise ApiProblem."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT fingerprint, done, status, headers, body, expires_at, locked_until FROM idempotency_keys "
                    "WHERE owner = ? AND key = ?",
                    (owner, key),
                ).fetchone()
                if row is not None and row[5] <= now:  # expired: forgotten
                    db.execute("DELETE FROM idempotency_keys WHERE owner = ? AND key = ?", (owner, key))
                    row = None
                if row is None:
                    db.execute(
                        "INSERT INTO idempotency_keys (owner, key, fingerprint, created_at, expires_at, locked_until) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (owner, key, print_, now, now + self.ttl_s, now + self.lock_s),
                    )
                    db.execute("COMMIT")
                    return None
                stored, locked_until = row, row[6]
                if stored[0] != print_:
                    raise ApiProblem(
                        422,
                        "IDEMPOTENCY_KEY_REUSED",
                        "this Idempotency-Key was already used with another request (method, path or body); "
                        "use a new key for a new request",
                    )
                if stored[1]:
                    db.execute("COMMIT")
                    return Stored(int(stored[2]), json.loads(stored[3]), bytes(stored[4]))
                if locked_until > now:
                    raise ApiProblem(
                        409,
                        "IDEMPOTENCY_KEY_IN_USE",
                        "a request with this Idempotency-Key is being processed; retry after it",
                        headers={"Retry-After": "1"},
                    )
                db.execute(
                    "UPDATE idempotency_keys SET locked_until = ? WHERE owner = ? AND key = ?",
                    (now + self.lock_s, owner, key),
                )
                db.execute("COMMIT")
                return None
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def finish(self, owner: str, key: str, response: Stored) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE idempotency_keys SET done = 1, status = ?, headers = ?, body = ? WHERE owner = ? AND key = ?",
                (response.status, json.dumps(response.headers), response.body, owner, key),
            )

    def release(self, owner: str, key: str) -> None:
        """Forget a pending key (its request was refused before anything was sent)."""
        with self._lock:
            self._db.execute("DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND done = 0", (owner, key))

    def accept(self, accepted: Accepted, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO accepted VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    accepted.request_id,
                    accepted.owner_id,
                    accepted.payer_account_id,
                    accepted.currency,
                    accepted.amount_minor,
                    accepted.accepted_at,
                    now + self.ttl_s,
                ),
            )

    def accepted(self, request_id: str) -> Accepted | None:
        with self._lock:
            row = self._db.execute(
                "SELECT request_id, owner_id, payer_account_id, currency, amount_minor, accepted_at FROM accepted "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        return None if row is None else Accepted(*row)

    def purge(self, now: float) -> int:
        """Forget up to PURGE_BATCH_MAX expired keys and accepted requests; how many were removed."""
        with self._lock:
            removed = self._db.execute(
                "DELETE FROM idempotency_keys WHERE (owner, key) IN (SELECT owner, key FROM idempotency_keys "
                "WHERE expires_at <= ? LIMIT ?)",
                (now, PURGE_BATCH_MAX),
            ).rowcount
            removed += self._db.execute(
                "DELETE FROM accepted WHERE request_id IN (SELECT request_id FROM accepted WHERE expires_at <= ? "
                "LIMIT ?)",
                (now, PURGE_BATCH_MAX),
            ).rowcount
        return int(removed)
