"""The notifier's decisions, plain Python (unit-tested directly): which failures are worth another attempt, how long
to wait, how a destination is written in logs (``mask``: one definition, ``streams.security.envelope``), which ids
are done.

The sending itself (SMTP, HTTP) is in ``streams.notifications.channels``; the Kafka loop in ``.loop``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from streams.security.envelope import mask

# HTTP statuses that say "not now" rather than "never": a timeout and rate limiting. Every other 4xx means the
# request itself is wrong (an unknown number, a revoked push token, a bad payload): sending it again cannot help.
TRANSIENT_4XX = frozenset({408, 429})
REASON_CHARS_MAX = 1000


class DeliveryFailed(Exception):
    """One attempt failed. `permanent`: no later attempt can succeed (do not retry); `retry_after_s`: the
    receiver said when to come back (HTTP Retry-After)."""

    def __init__(self, reason: str, *, permanent: bool = False, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after_s = retry_after_s


def http_status_permanent(status: int) -> bool:
    """A non-2xx answer that no retry can fix: a 4xx other than 408 / 429. 5xx and the rest are transient."""
    return 400 <= status < 500 and status not in TRANSIENT_4XX


def smtp_code_permanent(code: int) -> bool:
    """SMTP: 5yz is a permanent negative completion (RFC 5321 §4.2.1), 4yz a transient one."""
    return 500 <= code < 600


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most `attempts` sends; before send n+1 wait initial * 2**(n-1), capped at `backoff_max_s`."""

    attempts: int = 5
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 10.0

    def __post_init__(self) -> None:
        assert self.attempts >= 1 and self.backoff_initial_s >= 0 and self.backoff_max_s >= 0, self

    def backoff_s(self, failed_attempts: int, retry_after_s: float | None = None) -> float:
        """The wait after `failed_attempts` failures; a receiver's Retry-After is honoured up to the cap."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.backoff_max_s)
        return min(self.backoff_initial_s * 2 ** (failed_attempts - 1), self.backoff_max_s)


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    attempts: int
    reason: str | None = None  # the last error, when not delivered


async def deliver(
    send: Callable[[], Awaitable[None]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Outcome:
    """Call `send` until it returns, a failure is permanent, or the attempts are spent.

    Only `DeliveryFailed` is retried: anything else is a bug and propagates (the record is replayed after the
    restart, not reported as a holder's failed delivery).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            await send()
        except DeliveryFailed as failure:
            if failure.permanent or attempt == policy.attempts:
                kind = "permanent failure" if failure.permanent else f"gave up after {attempt} attempts"
                return Outcome(False, attempt, clip(f"{kind}: {failure.reason}"))
            await sleep(policy.backoff_s(attempt, failure.retry_after_s))
        else:
            return Outcome(True, attempt)
    raise AssertionError("unreachable: the last attempt returns")


# ----------------------------------------------------------------------------- personal data in logs and reasons


def scrub(text: str, destination: str) -> str:
    """`text` (an error message, which may quote the recipient) with the destination masked, clipped."""
    if destination:
        text = re.sub(re.escape(destination), mask(destination), text, flags=re.IGNORECASE)
    return clip(text)


def clip(text: str, chars_max: int = REASON_CHARS_MAX) -> str:
    return text if len(text) <= chars_max else text[: chars_max - 1] + "\u2026"


# ----------------------------------------------------------------------------- identities


def message_id(notification_id: str, domain: str) -> str:
    """The e-mail's Message-ID, the same for every send of one notification (mail clients collapse a re-send).

    A hash: a notification id holds ':' (``{payout_id}:{event}:{channel}``), which RFC 5322's id-left forbids.
    """
    digest = hashlib.sha256(notification_id.encode()).hexdigest()[:40]
    return f"<notify.{digest}@{domain}>"


class DoneIds:
    """Notification ids already delivered or given up (their notifications.deliveries record exists).

    Bounded: beyond `max_ids` the oldest are forgotten (a forgotten id seen again would be sent again; the
    e-mail's Message-ID and the gateways' Idempotency-Key make that re-send harmless where the receiver keeps them).
    """

    def __init__(self, max_ids: int) -> None:
        assert max_ids >= 1
        self.max_ids = max_ids
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.forgotten = 0

    def add(self, notification_id: str) -> None:
        self._ids[notification_id] = None
        self._ids.move_to_end(notification_id)
        while len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)
            self.forgotten += 1

    def __contains__(self, notification_id: object) -> bool:
        return notification_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
