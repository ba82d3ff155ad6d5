"""Sumsub's webhook and applicant API, as the KYC receiver reads them: plain Python (no I/O, no framework).

**Signature.** Sumsub signs each webhook with the webhook's secret key: ``X-Payload-Digest`` is the hex HMAC of the
raw body, ``X-Payload-Digest-Alg`` names the hash (``HMAC_SHA256_HEX``; ``HMAC_SHA512_HEX`` is accepted too;
``HMAC_SHA1_HEX`` and anything else are refused, as is a missing header). Compared in constant time.

**Status mapping** (``map_status``; docs/notifications.md has the table):

* ``applicantReviewed`` with ``reviewResult.reviewAnswer`` GREEN -> VERIFIED, RED -> REJECTED (a RETRY rejection
  too: the holder is not verified until a new review says GREEN);
* ``applicantPending``, ``applicantOnHold``, ``applicantReset``, ``applicantCreated`` -> PENDING (under review, or
  back to the start: not verified now);
* the types configured as expiry (``NEXUS_KYC_EXPIRED_TYPES``, default ``applicantExpired``) -> EXPIRED. Sumsub has
  no expiry webhook of its own: a deployment names the event its provider or its re-verification job sends when a
  verification lapses (the simulator sends ``applicantExpired``);
* any other type (``applicantPersonalInfoChanged``, ``applicantTagsChanged`` ...) changes no status: ignored.

**Requests to the applicant API** carry ``X-App-Token``, ``X-App-Access-Ts`` (unix seconds) and
``X-App-Access-Sig``: the hex HMAC-SHA256, with the app's secret key, of ts + method + path (with its query) + body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain.payouts import KycStatus

DIGEST_ALGS = {"HMAC_SHA256_HEX": hashlib.sha256, "HMAC_SHA512_HEX": hashlib.sha512}
DIGEST_HEADER = "X-Payload-Digest"
DIGEST_ALG_HEADER = "X-Payload-Digest-Alg"
DEFAULT_ALG = "HMAC_SHA256_HEX"

PENDING_TYPES = frozenset({"applicantPending", "applicantOnHold", "applicantReset", "applicantCreated"})
DEFAULT_EXPIRED_TYPES = ("applicantExpired",)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")  # contracts.types.Id
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def sign(secret: bytes, body: bytes, alg: str = DEFAULT_ALG) -> str:
    """The hex digest Sumsub sends for `body` (the simulator signs with it; tests too)."""
    return hmac.new(secret, body, DIGEST_ALGS[alg]).hexdigest()


def digest_ok(secret: bytes, body: bytes, digest: str | None, alg: str | None) -> bool:
    """True only for a digest of exactly these bytes, by an accepted algorithm, with this secret."""
    if not secret or digest is None or alg not in DIGEST_ALGS:
        return False
    expected = sign(secret, body, alg)
    given = digest.strip().lower()
    if not given.isascii():
        return False  # compare_digest takes ASCII text only
    return hmac.compare_digest(expected, given)


class BadWebhook(ValueError):
    """A signed webhook the receiver cannot use (answered 400; the provider keeps it in its webhook log)."""


@dataclass(frozen=True, slots=True)
class Webhook:
    type: str
    applicant_id: str
    account_id: str  # externalUserId
    event_id: str
    occurred_at: datetime
    review_answer: str | None


def parse_webhook(body: bytes) -> Webhook:
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise BadWebhook(f"not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadWebhook("not a JSON object")
    kind, applicant, account = (payload.get(f) for f in ("type", "applicantId", "externalUserId"))
    for name, value in (("type", kind), ("applicantId", applicant), ("externalUserId", account)):
        if not isinstance(value, str) or not _ID.match(value):
            raise BadWebhook(f"{name} missing or not an id: {str(value)[:60]!r}")
    assert isinstance(kind, str) and isinstance(applicant, str) and isinstance(account, str)
    review = payload.get("reviewResult")
    answer = review.get("reviewAnswer") if isinstance(review, dict) else None
    return Webhook(
        type=kind,
        applicant_id=applicant,
        account_id=account,
        event_id=event_id(payload, body),
        occurred_at=created_at(payload.get("createdAtMs") or payload.get("createdAt")),
        review_answer=answer if isinstance(answer, str) else None,
    )


def event_id(payload: dict[str, Any], body: bytes) -> str:
    """The webhook's id, the same on every re-delivery: ``<correlationId>:<type>`` (one request of the provider
    can cause webhooks of several types), or a hash of the body when there is no usable correlationId."""
    correlation, kind = payload.get("correlationId"), payload.get("type")
    candidate = f"{correlation}:{kind}"
    if isinstance(correlation, str) and _ID.match(candidate):
        return candidate
    return "sumsub:" + hashlib.sha256(body).hexdigest()[:40]


def created_at(value: object) -> datetime:
    """Sumsub's ``createdAtMs``: ``2024-05-01 09:30:00.123`` (UTC, no zone); an ISO 8601 text with a zone works."""
    if not isinstance(value, str):
        raise BadWebhook("createdAtMs missing")
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise BadWebhook(f"createdAtMs not a time: {value[:40]!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def map_status(webhook: Webhook, expired_types: Iterable[str] = DEFAULT_EXPIRED_TYPES) -> KycStatus | None:
    """The platform's KYC status this webhook sets, or None for a webhook that sets none (ignored)."""
    if webhook.type == "applicantReviewed":
        if webhook.review_answer == "GREEN":
            return KycStatus.VERIFIED
        if webhook.review_answer == "RED":
            return KycStatus.REJECTED
        raise BadWebhook(f"applicantReviewed with reviewAnswer {webhook.review_answer!r} (GREEN or RED expected)")
    if webhook.type in PENDING_TYPES:
        return KycStatus.PENDING
    if webhook.type in set(expired_types):
        return KycStatus.EXPIRED
    return None


# ----------------------------------------------------------------------------- the applicant API


def request_signature(secret: bytes, ts: int, method: str, path: str, body: bytes = b"") -> str:
    return hmac.new(
        secret, str(ts).encode() + method.upper().encode() + path.encode() + body, hashlib.sha256
    ).hexdigest()


def applicant_path(applicant_id: str) -> str:
    return f"/resources/applicants/{applicant_id}/one"


@dataclass(frozen=True, slots=True)
class Contacts:
    email: str | None
    phone: str | None
    push_token: str | None


def contacts(applicant: dict[str, Any]) -> Contacts:
    """The holder's contacts from an applicant object (``email``, ``phone``; the push token from the
    applicant's ``metadata`` key ``pushToken``). A value the contract would refuse is left out."""
    email = applicant.get("email")
    phone = applicant.get("phone")
    if isinstance(phone, str):
        phone = re.sub(r"[\s().-]", "", phone)
    token = next(
        (
            item.get("value")
            for item in applicant.get("metadata") or []
            if isinstance(item, dict) and item.get("key") == "pushToken"
        ),
        None,
    )
    return Contacts(
        email=email if isinstance(email, str) and len(email) <= 254 and _EMAIL.match(email) else None,
        phone=phone if isinstance(phone, str) and _E164.match(phone) else None,
        push_token=token if isinstance(token, str) and 0 < len(token) <= 256 else None,
    )
