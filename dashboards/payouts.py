"""Payout panels' figures (issue 17): holders' auto-payouts and their notifications, from registry messages.

Pure, no I/O, time passed in. Like the settlement figures they are folded into one-minute buckets, so a summary
costs the same whatever the volume; what is remembered per id (its latest outcome, to deduplicate and to move a
payout from WAITING to PAID) is dropped with its minute once older than the retention.

Definitions (last 24 h, by the time of each payout's latest outcome):
  paid / failed       payouts.results PAID / FAILED, once per payout id (a result reported again counts once);
                      failures by reason code
  waiting             payouts.waiting not followed by a result: held back, by reason (KYC_PENDING ...); a payout
                      that waited and was then paid counts once, as paid (whichever topic is read first)
  fiat paid out       Σ amount_minor of PAID results per currency, exact, in the currency's own decimals
  K-AUS paid out      Σ kaus_debited_units of PAID results, exact (6 decimals)
  notifications       notifications.deliveries per channel: DELIVERED / UNDELIVERED, once per notification id
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from contracts import models as m
from domain.money import Currency, kaus_text
from domain.money import minor_text as amount_text

BUCKET = timedelta(minutes=1)
RETAIN = timedelta(hours=25)
WINDOW = timedelta(hours=24)

PAID, FAILED, WAITING = "PAID", "FAILED", "WAITING"
DELIVERED, UNDELIVERED = m.DeliveryStatus.DELIVERED.value, m.DeliveryStatus.UNDELIVERED.value
# A later outcome of higher rank replaces the earlier one: a result ends a wait, and money that left stays left.
RANK = {WAITING: 1, FAILED: 2, PAID: 3, UNDELIVERED: 1, DELIVERED: 2}
CHANNELS = [c.value for c in m.NotificationChannel]


@dataclass(slots=True, frozen=True)
class Outcome:
    """What one payout or notification contributes to the bucket of its minute."""

    kind: str  # PAID / FAILED / WAITING, or DELIVERED / UNDELIVERED
    at: datetime
    label: str = ""  # FAILED / WAITING: the reason code; a notification: its channel
    currency: Currency | None = None
    amount_minor: int = 0
    kaus_units: int = 0


@dataclass
class PayoutBucket:
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, label) -> count
    fiat_minor: Counter[Currency] = field(default_factory=Counter)
    kaus_units: int = 0

    def apply(self, o: Outcome, sign: int) -> None:
        self.outcomes[(o.kind, o.label)] += sign
        if o.kind == PAID and o.currency is not None:
            self.fiat_minor[o.currency] += sign * o.amount_minor
            self.kaus_units += sign * o.kaus_units


def outcome_of(message: Any) -> tuple[str, Outcome] | None:
    """The id and outcome a payout topic's message stands for; None for any other message."""
    if isinstance(message, m.PayoutResult):
        if message.status is m.PayoutStatus.PAID:
            paid = Outcome(
                PAID, message.completed_at, "", message.currency, message.amount_minor, message.kaus_debited_units or 0
            )
            return f"payout:{message.payout_id}", paid
        return f"payout:{message.payout_id}", Outcome(FAILED, message.completed_at, message.reason_code or "UNKNOWN")
    if isinstance(message, m.PayoutWaiting):
        return f"payout:{message.payout_id}", Outcome(WAITING, message.waiting_since, message.reason_code)
    if isinstance(message, m.NotificationDelivery):
        delivery = Outcome(message.status.value, message.delivered_at, message.channel.value)
        return f"notification:{message.notification_id}", delivery
    return None


def replaces(new: Outcome, old: Outcome) -> bool:
    """Whether ``new`` supersedes ``old`` for the same id: a higher rank, or a later wait (its reason changed).
    An equal result is a repeat and changes nothing."""
    if RANK[new.kind] != RANK[old.kind]:
        return RANK[new.kind] > RANK[old.kind]
    return new.kind == WAITING and new.at > old.at


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class PayoutFigures:
    """Accumulates payouts.results, payouts.waiting and notifications.deliveries; ``summary(now)`` for the page."""

    def __init__(self) -> None:
        self.buckets: dict[datetime, PayoutBucket] = {}
        self.latest: dict[str, Outcome] = {}
        self._ids_by_minute: dict[datetime, list[str]] = {}

    def add(self, message: Any) -> bool:
        """Fold a message in; False if it is not one of the payout topics'."""
        found = outcome_of(message)
        if found is None:
            return False
        key, new = found
        old = self.latest.get(key)
        if old is not None:
            if not replaces(new, old):
                return True
            self.buckets[_minute(old.at)].apply(old, -1)
        minute = _minute(new.at)
        self.latest[key] = new
        self._ids_by_minute.setdefault(minute, []).append(key)
        self.buckets.setdefault(minute, PayoutBucket()).apply(new, +1)
        return True

    def prune(self, now: datetime) -> None:
        for minute in [k for k in self.buckets if k < now - RETAIN]:
            del self.buckets[minute]
            for key in self._ids_by_minute.pop(minute, []):
                kept = self.latest.get(key)
                if kept is not None and _minute(kept.at) == minute:  # else it moved on to a later minute
                    del self.latest[key]

    def summary(self, now: datetime) -> dict[str, Any]:
        self.prune(now)
        outcomes: Counter[tuple[str, str]] = Counter()
        fiat: Counter[Currency] = Counter()
        kaus_units = 0
        for k, b in self.buckets.items():
            if now - WINDOW < k + BUCKET and k <= now:
                outcomes.update(b.outcomes)
                fiat.update(b.fiat_minor)
                kaus_units += b.kaus_units
        failed = _by_label(outcomes, FAILED)
        waiting = _by_label(outcomes, WAITING)
        paid_n = outcomes[(PAID, "")]
        fiat_paid = {c.value: n for c, n in sorted(fiat.items()) if n}  # by code: minor units do not compare
        notifications = {
            channel: {"delivered": outcomes[(DELIVERED, channel)], "undelivered": outcomes[(UNDELIVERED, channel)]}
            for channel in CHANNELS
        }
        return {
            "paid": paid_n,
            "failed": sum(failed.values()),
            "waiting": sum(waiting.values()),
            "failed_by_reason": failed,
            "waiting_by_reason": waiting,
            "fiat_paid_minor": fiat_paid,
            "kaus_paid_units": kaus_units,
            "notifications": notifications,
            "display": {
                "paid": f"{paid_n:,}",
                "failed": f"{sum(failed.values()):,}",
                "waiting": f"{sum(waiting.values()):,}",
                "fiat_paid": {c: amount_text(n, Currency(c)) for c, n in fiat_paid.items()},
                "kaus_paid": f"{kaus_text(kaus_units)} K-AUS",
                "notifications": {ch: {k: f"{v:,}" for k, v in counts.items()} for ch, counts in notifications.items()},
            },
        }


def _by_label(outcomes: Counter[tuple[str, str]], kind: str) -> dict[str, int]:
    """Counts of one kind by label, largest first (ties by label), zeros left out."""
    found = [(label, n) for (k, label), n in outcomes.items() if k == kind and n]
    return dict(sorted(found, key=lambda x: (-x[1], x[0])))


__all__ = ["PayoutFigures", "amount_text", "kaus_text", "outcome_of", "replaces"]
