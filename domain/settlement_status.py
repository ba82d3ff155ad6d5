"""The state of one card payment or holder payout as the status read model keeps it, and the rules that move it.

Inputs arrive from several topics with no order between them (a result may be read before its request), at
least once, and replayed after a restart or a rebuild. So a status is a fold that gives the same row whatever
the order of its observations:

- **Forward only.** PENDING and WAITING are open; COMPLETED and FAILED are final. An open observation never
  replaces a final state. The first final state stays: a second, different one is a conflict the caller counts
  and logs.
- **Details fill in.** Fields an observation knows and the row lacks are added whatever its state (the request
  read after its result still gives the payer and the owner); a final observation's figures replace the
  estimates of open ones (a payout's requested amount is an estimate at the quoted rate).
- **Open states are ordered by how far along they are, then by event time.** A payout waits, then is requested
  (both at the start: the later one wins); the bridge's journaled payout intent is further along than any request,
  so a duplicate request read after it does not take its phase away.
- **Times are the records' own.** ``created_at`` is the request's time when a request was seen, else the earliest
  event time seen; ``state_at`` the event time of the observation that set the state (the last update a reader
  sees). A rebuild from the topics gives the same times.

The insertion sequence (``seq``) orders the history: it is given by the store when an id is first seen, and the
cursor of a history page is the last sequence it showed (:func:`encode_cursor`), tied to the store's generation
so a cursor from before a rebuild is refused instead of silently pointing elsewhere.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class State(StrEnum):
    PENDING = "PENDING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def final(self) -> bool:
        return self in (State.COMPLETED, State.FAILED)


class Kind(StrEnum):
    BRIDGE = "BRIDGE"  # a card payment: K-AUS from the payer, fiat to the merchant
    PAYOUT = "PAYOUT"  # a holder's auto-payout (executed through the bridge under the same id)


# How far along an open observation is: a journaled payout intent is past any request or wait, whatever the times.
STEP_REQUESTED = 0
STEP_IN_FLIGHT = 1


@dataclass(frozen=True, slots=True)
class Details:
    """What an observation may know about a settlement besides its state; None: not known from it."""

    owner_id: str | None = None
    payer_account_id: str | None = None
    currency: str | None = None
    amount_minor: int | None = None
    kaus_units: int | None = None
    rail: str | None = None
    provider_reference: str | None = None
    bridge_tx_id: str | None = None


DETAIL_FIELDS = tuple(Details.__slots__)


@dataclass(frozen=True, slots=True)
class Observation:
    """One input record's view of one settlement: its state at ``at`` (the record's own event time)."""

    id: str
    kind: Kind
    state: State
    at: datetime
    details: Details = Details()
    phase: str | None = None
    reason_code: str | None = None
    reason: str | None = None
    requested_at: datetime | None = None  # set by a request record: the settlement's creation time
    step: int = STEP_REQUESTED

    def __post_init__(self) -> None:
        assert self.at.tzinfo is not None, "naive event time"
        assert self.requested_at is None or self.requested_at.tzinfo is not None, "naive request time"


@dataclass(frozen=True, slots=True)
class Status:
    """The folded state of one settlement (the store adds its insertion sequence)."""

    id: str
    kind: Kind
    state: State
    phase: str | None
    reason_code: str | None
    reason: str | None
    details: Details
    created_at: datetime
    created_from_request: bool
    state_at: datetime  # the event time of the observation that set the state: when it was last updated
    state_step: int


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of :func:`apply`: the new status (None: nothing changed) and whether it was a conflict."""

    status: Status | None
    conflict: bool = False


def start(obs: Observation) -> Status:
    return Status(
        id=obs.id,
        kind=obs.kind,
        state=obs.state,
        phase=obs.phase,
        reason_code=obs.reason_code,
        reason=obs.reason,
        details=obs.details,
        created_at=obs.requested_at or obs.at,
        created_from_request=obs.requested_at is not None,
        state_at=obs.at,
        state_step=obs.step,
    )


def apply(current: Status | None, obs: Observation) -> Applied:
    """The status after ``obs`` (see the module doc); ``Applied(None)`` when it changes nothing."""
    if current is None:
        return Applied(start(obs))
    assert current.id == obs.id, (current.id, obs.id)
    conflict = current.state.final and obs.state.final and obs.state is not current.state
    new = _timed(current, obs)
    if _moves_state(current, obs):
        details = _overlay(current.details, obs.details) if obs.state.final else _fill(current.details, obs.details)
        new = replace(
            new,
            state=obs.state,
            phase=obs.phase,
            reason_code=obs.reason_code,
            reason=obs.reason,
            details=details,
            state_at=obs.at,
            state_step=obs.step,
        )
    else:
        new = replace(new, details=_fill(current.details, obs.details))
    return Applied(None if new == current else new, conflict)


def _moves_state(current: Status, obs: Observation) -> bool:
    if current.state.final:
        return False
    if obs.state.final:
        return True
    return (obs.step, obs.at) >= (current.state_step, current.state_at)


def _timed(current: Status, obs: Observation) -> Status:
    """created_at: the request's time once one is seen, else the earliest event."""
    if obs.requested_at is not None:
        created = obs.requested_at if not current.created_from_request else min(current.created_at, obs.requested_at)
        from_request = True
    else:
        created = current.created_at if current.created_from_request else min(current.created_at, obs.at)
        from_request = current.created_from_request
    return replace(current, created_at=created, created_from_request=from_request)


def _fill(known: Details, new: Details) -> Details:
    """Fields ``known`` lacks, taken from ``new``."""
    changes = {f: getattr(new, f) for f in DETAIL_FIELDS if getattr(known, f) is None and getattr(new, f) is not None}
    return replace(known, **changes) if changes else known


def _overlay(known: Details, new: Details) -> Details:
    """``new``'s fields over ``known`` (a final observation's figures replace the open ones' estimates)."""
    changes = {f: getattr(new, f) for f in DETAIL_FIELDS if getattr(new, f) is not None}
    return replace(known, **changes) if changes else known


# --------------------------------------------------------------------------- history cursors


class InvalidCursor(ValueError):
    """A cursor this store did not issue, or issued before it was rebuilt: start again from the first page."""


CURSOR_VERSION = "c1"


def encode_cursor(generation: str, seq: int) -> str:
    """An opaque token for "the page after sequence ``seq``" in the store generation ``generation``."""
    assert seq >= 0 and generation and ":" not in generation, (generation, seq)
    text = f"{CURSOR_VERSION}:{generation}:{seq}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, generation: str) -> int:
    """The sequence a cursor stands for; InvalidCursor if it is malformed or of another store generation."""
    if not cursor or len(cursor) > 200:
        raise InvalidCursor("cursor is empty or too long")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("cursor is not one this API issued") from exc
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != CURSOR_VERSION or not parts[2].isdigit():
        raise InvalidCursor("cursor is not one this API issued")
    if parts[1] != generation:
        raise InvalidCursor("cursor is from before the status store was rebuilt; start from the first page")
    return int(parts[2])
