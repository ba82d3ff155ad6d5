"""Auto-payout rules (spec §2.3): validation, the rule book, the three triggers, the KYC gate, payout ids.

Pure: no clock reads (callers pass ``now_ms``), integer K-AUS base units only. This module decides *which*
payout to make and for how much; holding, converting and paying it is the bridge's machinery (the shell).

**Validation** (:func:`validate_rule`): a rule that cannot work is refused with a :class:`RuleCode` and a
sentence, never kept: SCHEDULE without a type or time, a day outside its type's range (WEEKLY 0-6 with
0 = Sunday as in the spec's TypeScript ``Date.getUTCDay()``, MONTHLY 1-31, DAILY none), THRESHOLD without a
threshold, keep-minimum above the threshold (the rule would fire and have nothing to pay), DIVIDEND without a
source, a provider the spec does not offer for payouts (§2.3: PayPal, Stripe, Wise, Toss), a currency no rail
of that provider pays (``domain.rails.RAILS``), ``maxPayoutPerTx`` <= 0, and fields of another trigger type
(a THRESHOLD rule with a schedule time would be silently ignored, so it is refused).

**Rule book**: one entry per rule id, each stored with the version it came with (the compacted topic's
offset): a newer version replaces the older, an equal or older one is ignored (a replay), ``is_active=False``
keeps the entry but stops it, a tombstone deletes it. A newer version that is invalid *also* stops the older
one: the holder's latest intent is unknown, and not paying is the safe side of money out.

**Triggers** (evaluated per account by :meth:`AutoPayouts.evaluate`):

* THRESHOLD: available balance (``Ledger.available``: holds excluded; staked K-AUS lives in its own ledger
  account and is never counted) **strictly above** ``threshold`` pays ``available - keep_minimum``; exactly
  at the threshold pays nothing. Level-triggered: re-checked on every balance change, including the one
  that completes a payout.
* SCHEDULE: DAILY / WEEKLY / MONTHLY at ``HH:MM`` UTC; MONTHLY days 29-31 fall on the last day of a shorter
  month (leap years by the calendar). Each occurrence belongs to a *period* (the UTC day, the Sunday-started
  week, the month) whose id is part of the payout id, and the rule remembers the last period it consumed, so
  a period pays at most once however often (or after however many restarts) it is evaluated. Only the
  latest occurrence at or before ``now`` is ever considered: a worker down for several periods pays once
  when it comes back. Occurrences before the rule became active do not pay (a rule created at 12:00 with
  a 09:00 schedule first pays tomorrow). Calendar periods, not occurrence dates: editing the time of a
  rule that already paid today does not pay it twice today.
* DIVIDEND: each ``DividendDeclared`` for the rule's source (or ALL) at or above ``dividend_min`` queues
  the dividend; the payout is ``min(queued dividends, available - keep_minimum)``: the rule pays out what
  it received, not the whole balance.

**maxPayoutPerTx** caps each payout; the rest waits for the rule's next trigger (SCHEDULE: the next period;
DIVIDEND: nothing more from this rule; THRESHOLD: the next evaluation, which happens as soon as the capped
payout completes, so a threshold rule drains the excess one capped transaction at a time). We cap rather
than split into several simultaneous transactions because the limit bounds *exposure per transaction*
(a wrong payout account, a provider incident, a compromised rule risks at most one cap at a time) and
each transaction pays the provider's fixed fee; "exactly one payout per period" stays true for schedules.

**Rules of one account**: at most one payout in flight per account (amounts are computed from the
available balance; two concurrent decisions on one balance could breach keep-minimum). When several rules
are due at once, they are taken in this order: DIVIDEND (a dividend is a specific sum), SCHEDULE, THRESHOLD,
then by rule id; the first that pays goes in flight, the others are evaluated again once its result
arrives. A rule deactivated or deleted while its payout is in flight does not stop that payout (its K-AUS
is held and the provider may already have it); it stops every later one.

**KYC gate**: a holder's status comes from the provider's webhook feed (VERIFIED / PENDING / REJECTED /
EXPIRED, newest by version wins; none yet counts as pending). Only VERIFIED pays. Otherwise a due trigger
produces a WAIT decision with the reason, once per payout id, and is not consumed: when the status turns
VERIFIED the account is evaluated again and pays (a schedule that waited across several periods pays once).

**Emergency pause** (governance): while money out is paused (:meth:`AutoPayouts.set_paused`), a due payout that
would pay WAITs with PAUSED instead, once per payout id, its trigger not consumed; the unpause evaluates every account
with rules again, so each pays under the same payout id while its trigger stands (a schedule's period, a threshold's
``T{n}``, the latest queued dividend), with the balance of that moment.

**Approval gate** (governance, spec §4.2): a payout of more K-AUS than the auto-approval limit (the governed
parameter ``payouts.auto_approval_limit_kaus_units``, :meth:`AutoPayouts.set_approval_limit`; exactly the limit pays
automatically) is not paid at once: the decision is APPROVE (the shell asks the signers for a PAYOUT_APPROVAL under
:func:`approval_request_id` and reports it waiting, APPROVAL_PENDING), its trigger is consumed and the account holds
it like a payout in flight (nothing else of the account pays meanwhile). Gates in order: KYC, then the pause, then the
approval (the signers are asked only for a payout that could go out). :meth:`AutoPayouts.on_approval` with the
request's outcome: executed → the payout pays exactly the approved amount under the same payout id, once the holder
is VERIFIED and money out is not paused (else it WAITs, KYC or PAUSED, and pays when that clears), and only if the
available balance still covers it above keep-minimum — if not, it FAILs (INSUFFICIENT_FUNDS: paying less than the
signers approved is not what they approved, paying it all would breach keep-minimum or be refused by the ledger);
rejected or expired → it FAILs (APPROVAL_REFUSED), nothing held. Either failure backs the account off like a failed
payout (a refusal for ``retry_after_refusal_ms``, default a day: the signers are not asked again in a loop), and what
comes next is the trigger's: a SCHEDULE pays at its next period, a DIVIDEND rule's queued dividends are consumed (the
K-AUS stay in the balance), a THRESHOLD rule moves to its next payout id and, still above the threshold after the
back-off, asks again (a new request). An outcome read before its payout was gated (a replay after a lost state) is
remembered and applies when it is.

**Payout ids** are ``{rule_id}:{trigger_id}``: the period id (``D2026-03-05``, ``W2026-03-01``,
``M2026-02``), ``T{n}`` for the n-th threshold payout of the rule (n moves on when a result arrives), or
``V{dividend_id}`` (hashed past 100 characters). Re-evaluating the same state gives the same id, so a
decision lost in a crash comes back under the id whose intent the shell may already have persisted.

**Failures**: a FAILED result (after the gateway's own failover) consumes its trigger — the schedule's
period, the queued dividends — and holds the account for ``retry_after_failure_ms`` (default one hour)
before anything else pays, so a provider that declines an account is not retried in a loop; the K-AUS
stays in the balance for the next trigger. A failure of the platform's own moment (the ledger did not answer,
the rate went stale or moved: :data:`TRANSIENT_FAILURES`) says nothing about the account and holds it only
``retry_after_transient_ms`` (a minute); a refusal because money out was paused holds it not at all.
"""

from __future__ import annotations

import calendar
import hashlib
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from domain import parameters
from domain.money import Currency
from domain.rails import RAILS, Provider

MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
MAX_RULE_ID_LENGTH = 64  # payout ids ({rule_id}:{trigger}) stay within the ledger's 128-character ids
MAX_PAYOUT_ID_LENGTH = 100
MAX_UNITS = 10**18  # contracts.types.MAX_UNITS
SNAPSHOT_FORMAT = "nexus-x.auto-payouts/1"

# Spec §2.3: `payoutProvider: 'PAYPAL' | 'STRIPE' | 'WISE' | 'TOSS'`.
PAYOUT_PROVIDERS = frozenset({Provider.PAYPAL, Provider.STRIPE, Provider.WISE, Provider.TOSS})


def provider_currencies(provider: Provider) -> frozenset[Currency]:
    """Every currency some rail of ``provider`` pays (the rail table is the one source)."""
    return frozenset(c for spec in RAILS.values() if spec.provider is provider for c in spec.currencies)


class Trigger(StrEnum):
    THRESHOLD = "THRESHOLD"
    SCHEDULE = "SCHEDULE"
    DIVIDEND = "DIVIDEND"


class ScheduleType(StrEnum):
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


class RuleDividendSource(StrEnum):
    ENERGY_NODE = "ENERGY_NODE"
    STAKING = "STAKING"
    ALL = "ALL"


class KycStatus(StrEnum):
    VERIFIED = "VERIFIED"
    PENDING = "PENDING"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class RuleCode(StrEnum):
    INVALID_ID = "INVALID_ID"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    MAX_PER_TX_NOT_POSITIVE = "MAX_PER_TX_NOT_POSITIVE"
    PAYOUT_ACCOUNT_MISSING = "PAYOUT_ACCOUNT_MISSING"
    PROVIDER_NOT_OFFERED = "PROVIDER_NOT_OFFERED"
    CURRENCY_NOT_PAID = "CURRENCY_NOT_PAID"
    THRESHOLD_MISSING = "THRESHOLD_MISSING"
    KEEP_MINIMUM_ABOVE_THRESHOLD = "KEEP_MINIMUM_ABOVE_THRESHOLD"
    SCHEDULE_TYPE_MISSING = "SCHEDULE_TYPE_MISSING"
    SCHEDULE_TIME_MISSING = "SCHEDULE_TIME_MISSING"
    SCHEDULE_TIME_INVALID = "SCHEDULE_TIME_INVALID"
    SCHEDULE_DAY_MISSING = "SCHEDULE_DAY_MISSING"
    SCHEDULE_DAY_OUT_OF_RANGE = "SCHEDULE_DAY_OUT_OF_RANGE"
    DIVIDEND_SOURCE_MISSING = "DIVIDEND_SOURCE_MISSING"
    FIELD_NOT_FOR_TRIGGER = "FIELD_NOT_FOR_TRIGGER"
    TOO_MANY_RULES = "TOO_MANY_RULES"


class WaitCode(StrEnum):
    KYC_UNKNOWN = "KYC_UNKNOWN"  # no status received yet
    KYC_PENDING = "KYC_PENDING"
    KYC_REJECTED = "KYC_REJECTED"
    KYC_EXPIRED = "KYC_EXPIRED"
    PAUSED = "PAUSED"  # money out is paused by governance: paid once unpaused
    APPROVAL_PENDING = "APPROVAL_PENDING"  # above the auto-approval limit: paid once the signers approve it


class PayoutFailCode(StrEnum):
    """Why a payout failed before it reached the bridge (the bridge's own codes cover the rest)."""

    APPROVAL_REFUSED = "APPROVAL_REFUSED"  # its PAYOUT_APPROVAL was rejected or expired: nothing is paid
    # Approved, but the available balance no longer covers the approved amount above keep-minimum: nothing is paid
    # (the bridge's code of the same meaning; the contract's payouts.results codes are the bridge's and these).
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"


class SkipCode(StrEnum):
    NOTHING_ABOVE_KEEP_MINIMUM = "NOTHING_ABOVE_KEEP_MINIMUM"


class Action(StrEnum):
    PAY = "PAY"  # request this payout now (hold, convert, pay)
    WAIT = "WAIT"  # due, but the holder is not KYC-verified or money out is paused: kept, paid once that clears
    SKIP = "SKIP"  # due, nothing to pay: the trigger is consumed
    APPROVE = "APPROVE"  # above the auto-approval limit: ask the signers (PAYOUT_APPROVAL); paid once they approve
    FAIL = "FAIL"  # a payout that was waiting for approval ends without a payment (refused, or no longer covered)


class RuleStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"  # dead-letter it with the code
    STALE = "STALE"  # an equal or older version: ignored
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Rule:
    """Spec §2.3 ``AutoPayoutRule`` in exact units; field names as in ``contracts.models.AutoPayoutRule``."""

    rule_id: str
    account_id: str
    trigger_type: Trigger
    payout_provider: Provider
    payout_currency: Currency
    payout_account: str
    max_payout_per_tx_kaus_units: int
    keep_minimum_kaus_units: int = 0
    threshold_kaus_units: int | None = None
    schedule_type: ScheduleType | None = None
    schedule_day: int | None = None
    schedule_time_utc: str | None = None  # "HH:MM"
    dividend_source: RuleDividendSource | None = None
    dividend_min_kaus_units: int | None = None
    is_active: bool = True


class RuleProblem(NamedTuple):
    code: RuleCode
    reason: str


class RuleOutcome(NamedTuple):
    rule_id: str
    status: RuleStatus
    code: RuleCode | None
    reason: str


class Decision(NamedTuple):
    action: Action
    payout_id: str
    rule_id: str
    account_id: str
    trigger: Trigger
    trigger_id: str  # the period id, T{n}, or the dividend id(s)' latest
    amount_units: int  # PAY: the payout; WAIT: what it would pay now; SKIP: 0
    provider: Provider
    currency: Currency
    payout_account: str
    code: WaitCode | SkipCode | PayoutFailCode | None
    reason: str
    at_ms: int
    approved: bool = False  # PAY: the signers approved it (a payout above the auto-approval limit)


@dataclass(frozen=True, slots=True)
class PayoutConfig:
    retry_after_failure_ms: int = 3_600_000
    max_rules_per_account: int = 20
    retry_after_refusal_ms: int = 86_400_000  # back-off after the signers refused (or let expire) an approval
    approval_outcomes_max: int = 10_000  # outcomes read before their payout was gated (a replay), remembered
    retry_after_transient_ms: int = 60_000  # back-off after a failure of the platform's moment (TRANSIENT_FAILURES)

    def __post_init__(self) -> None:
        assert self.retry_after_failure_ms >= 0 and self.max_rules_per_account >= 1
        assert self.retry_after_refusal_ms >= 0 and self.approval_outcomes_max >= 1
        assert self.retry_after_transient_ms >= 0

    def back_off_ms(self, failure_code: str) -> int:
        """How long a FAILED payout with the bridge's ``failure_code`` holds the holder's account."""
        if failure_code == "PAUSED":
            return 0
        if failure_code in TRANSIENT_FAILURES:
            return min(self.retry_after_transient_ms, self.retry_after_failure_ms)  # never longer than a decline's
        return self.retry_after_failure_ms


# Bridge failures that judge neither the holder's account nor its provider: the ledger refused or did not answer
# the hold in time (a restart), the balance moved under the decision, the rate was stale or moved past its limits.
# Declines, a failed provider call, no rail, an amount out of limits, and any code not listed back off fully.
TRANSIENT_FAILURES = frozenset(  # domain.bridge.ReasonCode values (it imports this module, so named as text)
    {"HOLD_REJECTED", "INSUFFICIENT_FUNDS", "STALE_RATE", "SLIPPAGE", "RATE_LOCK_EXPIRED", "HOLD_INSUFFICIENT"}
)


def approval_request_id(payout_id: str) -> str:
    """The PAYOUT_APPROVAL governance request of a payout (payout ids have at most 100 characters: within an Id)."""
    return f"PAYOUT:{payout_id}"


def payout_of_approval(request_id: str) -> str | None:
    """The payout a PAYOUT_APPROVAL request id names, or None for another request."""
    return request_id.removeprefix("PAYOUT:") if request_id.startswith("PAYOUT:") else None


# --------------------------------------------------------------------------- validation


def _is_units(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_UNITS


def parse_time_of_day(text: str) -> int | None:
    """Minutes after 00:00 UTC for ``HH:MM`` (00:00-23:59), else None."""
    if len(text) != 5 or text[2] != ":" or not (text[:2].isdigit() and text[3:].isdigit()):
        return None
    hours, minutes = int(text[:2]), int(text[3:])
    return hours * 60 + minutes if hours < 24 and minutes < 60 else None


_TRIGGER_FIELDS: dict[Trigger, tuple[str, ...]] = {
    Trigger.THRESHOLD: ("threshold_kaus_units",),
    Trigger.SCHEDULE: ("schedule_type", "schedule_day", "schedule_time_utc"),
    Trigger.DIVIDEND: ("dividend_source", "dividend_min_kaus_units"),
}


def validate_rule(rule: Rule) -> RuleProblem | None:
    """Why ``rule`` cannot work, or None. Checks in a fixed order; the first problem is reported."""
    if not (0 < len(rule.rule_id) <= MAX_RULE_ID_LENGTH) or not (0 < len(rule.account_id) <= 128):
        return RuleProblem(RuleCode.INVALID_ID, f"rule id must be 1..{MAX_RULE_ID_LENGTH} characters, account 1..128")
    amounts = (rule.max_payout_per_tx_kaus_units, rule.keep_minimum_kaus_units)
    optional = (rule.threshold_kaus_units, rule.dividend_min_kaus_units)
    if not all(_is_units(a) for a in amounts) or not all(a is None or _is_units(a) for a in optional):
        return RuleProblem(RuleCode.INVALID_AMOUNT, f"amounts are integer K-AUS base units in 0..{MAX_UNITS}")
    if rule.max_payout_per_tx_kaus_units <= 0:
        return RuleProblem(RuleCode.MAX_PER_TX_NOT_POSITIVE, "max_payout_per_tx must be positive")
    if not rule.payout_account.strip():
        return RuleProblem(RuleCode.PAYOUT_ACCOUNT_MISSING, "no payout account")
    if rule.payout_provider not in PAYOUT_PROVIDERS:
        offered = ", ".join(sorted(PAYOUT_PROVIDERS))
        return RuleProblem(RuleCode.PROVIDER_NOT_OFFERED, f"{rule.payout_provider} pays no payouts (only {offered})")
    if rule.payout_currency not in provider_currencies(rule.payout_provider):
        return RuleProblem(
            RuleCode.CURRENCY_NOT_PAID, f"{rule.payout_provider} does not pay out {rule.payout_currency}"
        )
    for trigger, names in _TRIGGER_FIELDS.items():
        if trigger is not rule.trigger_type:
            given = [n for n in names if getattr(rule, n) is not None]
            if given:
                return RuleProblem(
                    RuleCode.FIELD_NOT_FOR_TRIGGER, f"{', '.join(given)} not used by {rule.trigger_type} rules"
                )
    if rule.trigger_type is Trigger.THRESHOLD:
        return _threshold_problem(rule)
    if rule.trigger_type is Trigger.SCHEDULE:
        return _schedule_problem(rule)
    if rule.dividend_source is None:
        return RuleProblem(RuleCode.DIVIDEND_SOURCE_MISSING, "DIVIDEND rules need dividend_source")
    return None


def _threshold_problem(rule: Rule) -> RuleProblem | None:
    if rule.threshold_kaus_units is None:
        return RuleProblem(RuleCode.THRESHOLD_MISSING, "THRESHOLD rules need threshold_kaus_units")
    if rule.keep_minimum_kaus_units > rule.threshold_kaus_units:
        return RuleProblem(
            RuleCode.KEEP_MINIMUM_ABOVE_THRESHOLD,
            f"keep_minimum {rule.keep_minimum_kaus_units} is above threshold {rule.threshold_kaus_units}",
        )
    return None


def _schedule_problem(rule: Rule) -> RuleProblem | None:
    if rule.schedule_type is None:
        return RuleProblem(RuleCode.SCHEDULE_TYPE_MISSING, "SCHEDULE rules need schedule_type")
    if rule.schedule_time_utc is None:
        return RuleProblem(RuleCode.SCHEDULE_TIME_MISSING, "SCHEDULE rules need schedule_time_utc (HH:MM UTC)")
    if parse_time_of_day(rule.schedule_time_utc) is None:
        return RuleProblem(RuleCode.SCHEDULE_TIME_INVALID, f"{rule.schedule_time_utc!r} is not HH:MM (00:00-23:59)")
    day = rule.schedule_day
    if rule.schedule_type is ScheduleType.DAILY:
        if day is not None:
            return RuleProblem(RuleCode.FIELD_NOT_FOR_TRIGGER, "schedule_day is not used by DAILY schedules")
        return None
    if day is None:
        return RuleProblem(RuleCode.SCHEDULE_DAY_MISSING, f"{rule.schedule_type} schedules need schedule_day")
    low, high = (0, 6) if rule.schedule_type is ScheduleType.WEEKLY else (1, 31)
    if type(day) is not int or not low <= day <= high:
        return RuleProblem(
            RuleCode.SCHEDULE_DAY_OUT_OF_RANGE, f"{rule.schedule_type} schedule_day must be {low}-{high}, got {day}"
        )
    return None


# --------------------------------------------------------------------------- schedules


class Schedule(NamedTuple):
    type: ScheduleType
    day: int | None  # WEEKLY 0-6 (0 = Sunday), MONTHLY 1-31, DAILY None
    minute_of_day: int


def schedule_of(rule: Rule) -> Schedule:
    """The schedule of a valid SCHEDULE rule."""
    assert rule.schedule_type is not None and rule.schedule_time_utc is not None
    minute = parse_time_of_day(rule.schedule_time_utc)
    assert minute is not None
    return Schedule(rule.schedule_type, rule.schedule_day, minute)


def _date_ms(d: date) -> int:
    return (d.toordinal() - _EPOCH_ORDINAL) * MS_PER_DAY


def _date_of(ms: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + ms // MS_PER_DAY)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def sunday_weekday(d: date) -> int:
    """0 = Sunday ... 6 = Saturday (the spec's ``scheduleDay`` convention)."""
    return (d.weekday() + 1) % 7


def _monthly_occurrence(year: int, month: int, schedule: Schedule) -> int:
    assert schedule.day is not None
    day = min(schedule.day, calendar.monthrange(year, month)[1])
    return _date_ms(date(year, month, day)) + schedule.minute_of_day * MS_PER_MINUTE


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year, month - 1) if month > 1 else (year - 1, 12)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year, month + 1) if month < 12 else (year + 1, 1)


def latest_occurrence(schedule: Schedule, now_ms: int) -> int:
    """The last scheduled instant at or before ``now_ms`` (epoch ms, UTC)."""
    today = _date_of(now_ms)
    offset = schedule.minute_of_day * MS_PER_MINUTE
    if schedule.type is ScheduleType.DAILY:
        at = _date_ms(today) + offset
        return at if at <= now_ms else at - MS_PER_DAY
    if schedule.type is ScheduleType.WEEKLY:
        assert schedule.day is not None
        back = (sunday_weekday(today) - schedule.day) % 7
        at = _date_ms(today) - back * MS_PER_DAY + offset
        return at if at <= now_ms else at - 7 * MS_PER_DAY
    at = _monthly_occurrence(today.year, today.month, schedule)
    return at if at <= now_ms else _monthly_occurrence(*_previous_month(today.year, today.month), schedule)


def next_occurrence(schedule: Schedule, after_ms: int) -> int:
    """The first scheduled instant strictly after ``after_ms``."""
    last = latest_occurrence(schedule, after_ms)
    if schedule.type is ScheduleType.DAILY:
        return last + MS_PER_DAY
    if schedule.type is ScheduleType.WEEKLY:
        return last + 7 * MS_PER_DAY
    d = _date_of(last)
    return _monthly_occurrence(*_next_month(d.year, d.month), schedule)


def period_id(schedule: Schedule, occurrence_ms: int) -> str:
    """The calendar period an occurrence falls in: its UTC day, its Sunday-started week, or its month."""
    d = _date_of(occurrence_ms)
    if schedule.type is ScheduleType.DAILY:
        return f"D{d.isoformat()}"
    if schedule.type is ScheduleType.WEEKLY:
        return f"W{(d - timedelta(days=sunday_weekday(d))).isoformat()}"
    return f"M{d.year:04d}-{d.month:02d}"


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


# --------------------------------------------------------------------------- amounts and ids


def payable(available_units: int, rule: Rule) -> int:
    """What the rule may pay from ``available_units``: above keep-minimum, at most one cap."""
    return max(0, min(available_units - rule.keep_minimum_kaus_units, rule.max_payout_per_tx_kaus_units))


def threshold_amount(available_units: int, rule: Rule) -> int:
    """A THRESHOLD rule's payout for this available balance: 0 unless strictly above the threshold."""
    assert rule.threshold_kaus_units is not None
    return payable(available_units, rule) if available_units > rule.threshold_kaus_units else 0


def payout_id(rule_id: str, trigger_id: str) -> str:
    raw = f"{rule_id}:{trigger_id}"
    if len(raw) <= MAX_PAYOUT_ID_LENGTH:
        return raw
    return f"{rule_id}:h{hashlib.sha256(trigger_id.encode()).hexdigest()[:24]}"


def dividend_matches(rule: Rule, source: str, amount_units: int) -> bool:
    """A dividend of ``source`` triggers the rule: same source (or ALL) and at or above its minimum."""
    wanted = rule.dividend_source
    return (
        wanted is not None
        and (wanted is RuleDividendSource.ALL or wanted.value == source)
        and amount_units >= (rule.dividend_min_kaus_units or 0)
    )


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Entry:
    rule: Rule
    version: int
    active_since_ms: int  # when it last became active: earlier schedule occurrences do not pay
    schedule: Schedule | None


@dataclass(slots=True)
class _Gated:
    """A payout above the auto-approval limit, waiting for the signers (then for KYC, the pause, the balance)."""

    decision: Decision  # as it will pay (PAY, the amount decided when it was gated)
    keep_minimum_units: int  # its rule's, when gated: the balance must still cover the amount above it
    approved: bool = False


@dataclass(slots=True)
class _Account:
    rules: dict[str, _Entry] = field(default_factory=dict)
    kyc: KycStatus | None = None
    kyc_version: int = -1
    in_flight: Decision | None = None
    not_before_ms: int = 0
    dividends: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # rule -> [(dividend id, units)]
    recent_dividends: list[str] = field(default_factory=list)  # ids queued lately, oldest first
    waits_reported: set[str] = field(default_factory=set)
    wake_ms: int | None = None  # the schedule wake-up queued for this account
    gated: _Gated | None = None  # a payout waiting for its approval (holds the account like one in flight)


class _Candidate(NamedTuple):
    entry: _Entry
    trigger_id: str
    amount_units: int


_ORDER = {Trigger.DIVIDEND: 0, Trigger.SCHEDULE: 1, Trigger.THRESHOLD: 2}
_WAIT_OF = {
    None: WaitCode.KYC_UNKNOWN,
    KycStatus.PENDING: WaitCode.KYC_PENDING,
    KycStatus.REJECTED: WaitCode.KYC_REJECTED,
    KycStatus.EXPIRED: WaitCode.KYC_EXPIRED,
}


class AutoPayouts:
    """The rule book, the KYC statuses and each account's payout in flight; decides payouts.

    Every entry point takes the account's *available* K-AUS (``Ledger.available``: balance less holds) and
    ``now_ms`` from the caller and returns the decisions it made. Persist ``to_dict()`` after acting on them;
    a restored book decides the same payout ids again.
    """

    __slots__ = (
        "_accounts",
        "_approval_limit",
        "_approval_outcomes",
        "_config",
        "_gated",
        "_in_flight",
        "_paused",
        "_periods",
        "_rule_account",
        "_threshold_seq",
        "_versions",
        "_wakes",
    )

    RECENT_DIVIDENDS = 64  # per account: a re-delivered dividend that was already queued or paid is ignored

    def __init__(self, config: PayoutConfig | None = None) -> None:
        self._config = config or PayoutConfig()
        self._accounts: dict[str, _Account] = {}
        self._rule_account: dict[str, str] = {}
        self._versions: dict[str, int] = {}  # every rule id seen, deleted and refused ones included
        self._periods: dict[str, str] = {}  # rule id -> last schedule period consumed (survives edits, deletes)
        self._threshold_seq: dict[str, int] = {}  # rule id -> threshold payouts finished
        self._in_flight: dict[str, str] = {}  # payout id -> account
        self._wakes: list[tuple[int, str]] = []  # (when, account): schedule checks and ends of back-off
        self._paused = False  # money out paused by governance (not in the snapshot: the shell re-reads it at start)
        # The governed limit in force (not in the snapshot either: the shell follows governance.parameters).
        self._approval_limit = parameters.PARAMETERS[parameters.AUTO_APPROVAL_LIMIT].default
        self._gated: dict[str, str] = {}  # payout id -> account, payouts waiting for their approval
        self._approval_outcomes: dict[str, bool] = {}  # payout id -> executed, read before the payout was gated

    # -- lookups --

    def rule(self, rule_id: str) -> Rule | None:
        account_id = self._rule_account.get(rule_id)
        return None if account_id is None else self._accounts[account_id].rules[rule_id].rule

    def rules(self, account_id: str) -> list[Rule]:
        acc = self._accounts.get(account_id)
        return [] if acc is None else [e.rule for _, e in sorted(acc.rules.items())]

    def in_flight(self, account_id: str) -> Decision | None:
        acc = self._accounts.get(account_id)
        return None if acc is None else acc.in_flight

    def kyc(self, account_id: str) -> KycStatus | None:
        acc = self._accounts.get(account_id)
        return None if acc is None else acc.kyc

    def last_period(self, rule_id: str) -> str | None:
        return self._periods.get(rule_id)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def approval_limit(self) -> int:
        return self._approval_limit

    def gated(self, payout_id: str) -> Decision | None:
        """The payout waiting for (or approved by) its PAYOUT_APPROVAL, as it will pay; None if none is."""
        account_id = self._gated.get(payout_id)
        gate = None if account_id is None else self._accounts[account_id].gated
        return None if gate is None else gate.decision

    # -- the emergency pause --

    def set_paused(self, paused: bool) -> list[str]:
        """Money out paused (or not) by governance. While paused a due payout WAITs (PAUSED, once per payout id)
        instead of paying, its trigger kept. Returns the accounts to evaluate now: on an unpause, every account
        with rules (the waiting payouts pay, under the same ids while their triggers stand); else none."""
        was, self._paused = self._paused, paused
        if paused or not was:
            return []
        return sorted(a for a, acc in self._accounts.items() if acc.rules)

    # -- the approval gate --

    def set_approval_limit(self, units: int) -> None:
        """The governed auto-approval limit in force: payouts of more K-AUS than this decided from now on wait for a
        PAYOUT_APPROVAL (those already gated keep waiting; those already paying go on)."""
        assert isinstance(units, int) and units >= 0, units
        self._approval_limit = units

    def on_approval(
        self, payout_id: str, executed: bool, available_of: Callable[[str], int], now_ms: int
    ) -> list[Decision]:
        """The final outcome of a payout's PAYOUT_APPROVAL: executed (the signers approved it), or rejected / expired.
        An outcome for a payout not gated here is remembered (bounded) for when it is (a replay); repeats do nothing."""
        account_id = self._gated.get(payout_id)
        if account_id is None:
            self._approval_outcomes[payout_id] = executed
            while len(self._approval_outcomes) > self._config.approval_outcomes_max:
                del self._approval_outcomes[next(iter(self._approval_outcomes))]
            return []
        acc = self._accounts[account_id]
        gate = acc.gated
        assert gate is not None and gate.decision.payout_id == payout_id
        if gate.approved:
            return []
        if not executed:
            reason = "the signers did not approve it (PAYOUT_APPROVAL rejected or expired): nothing was paid"
            refused = self._end_gate(account_id, acc, PayoutFailCode.APPROVAL_REFUSED, reason, now_ms)
            return [refused, *self.evaluate(account_id, available_of(account_id), now_ms)]
        gate.approved = True
        return self.evaluate(account_id, available_of(account_id), now_ms)

    def _gate(
        self, account_id: str, acc: _Account, pay: Decision, keep_minimum: int, available: int, now_ms: int
    ) -> list[Decision]:
        """Hold ``pay`` for the signers: APPROVE (the shell asks them); an outcome already read applies at once."""
        acc.gated = _Gated(pay, keep_minimum)
        self._gated[pay.payout_id] = account_id
        acc.waits_reported.clear()
        limit = self._approval_limit
        reason = f"above the auto-approval limit of {limit} K-AUS units: paid once the signers approve it"
        out = [pay._replace(action=Action.APPROVE, code=WaitCode.APPROVAL_PENDING, reason=reason)]
        known = self._approval_outcomes.pop(pay.payout_id, None)
        if known is False:
            reason = "the signers did not approve it (PAYOUT_APPROVAL rejected or expired): nothing was paid"
            out.append(self._end_gate(account_id, acc, PayoutFailCode.APPROVAL_REFUSED, reason, now_ms))
        elif known is True:
            acc.gated.approved = True
            out += self._gated_step(account_id, acc, available, now_ms)
        return out

    def _gated_step(self, account_id: str, acc: _Account, available: int, now_ms: int) -> list[Decision]:
        """The account's gated payout: nothing until approved; then the KYC and pause gates, the balance, PAY."""
        gate = acc.gated
        assert gate is not None
        pay = gate.decision
        if not gate.approved:
            return []
        if acc.kyc is not KycStatus.VERIFIED or self._paused:
            if pay.payout_id in acc.waits_reported:
                return []
            acc.waits_reported.add(pay.payout_id)
            if acc.kyc is not KycStatus.VERIFIED:
                code, reason = _WAIT_OF[acc.kyc], f"approved; holder KYC {acc.kyc or 'unknown'}: paid once verified"
            else:
                code, reason = WaitCode.PAUSED, "approved; money out is paused by governance: paid once unpaused"
            return [pay._replace(action=Action.WAIT, code=code, reason=reason, at_ms=now_ms)]
        if available - gate.keep_minimum_units < pay.amount_units:
            reason = (
                f"approved for {pay.amount_units} K-AUS units, but {available} are available above keep-minimum "
                f"{gate.keep_minimum_units}: nothing was paid"
            )
            return [self._end_gate(account_id, acc, PayoutFailCode.INSUFFICIENT_FUNDS, reason, now_ms)]
        del self._gated[pay.payout_id]
        acc.gated = None
        paying = pay._replace(at_ms=now_ms, approved=True)
        acc.in_flight = paying
        acc.waits_reported.clear()
        self._in_flight[pay.payout_id] = account_id
        return [paying]

    def _end_gate(self, account_id: str, acc: _Account, code: PayoutFailCode, reason: str, now_ms: int) -> Decision:
        """The gated payout ends unpaid: FAIL; the account backs off (longer after a refusal); a threshold rule's
        next payout has the next id (its trigger was consumed when it was gated)."""
        gate = acc.gated
        assert gate is not None
        pay = gate.decision
        del self._gated[pay.payout_id]
        acc.gated = None
        if pay.trigger is Trigger.THRESHOLD:
            self._threshold_seq[pay.rule_id] = self._threshold_seq.get(pay.rule_id, 0) + 1
        refused = code is PayoutFailCode.APPROVAL_REFUSED
        wait_ms = self._config.retry_after_refusal_ms if refused else self._config.retry_after_failure_ms
        acc.not_before_ms = now_ms + wait_ms
        self._queue(account_id, acc, acc.not_before_ms)
        return pay._replace(action=Action.FAIL, code=code, reason=reason, at_ms=now_ms)

    # -- the rule feed --

    def put_rule(self, rule: Rule, version: int, now_ms: int) -> RuleOutcome:
        """A rule record (version: its offset on the compacted topic). Refused rules stop any older version."""
        prior = self._versions.get(rule.rule_id)
        if prior is not None and version <= prior:
            return RuleOutcome(rule.rule_id, RuleStatus.STALE, None, f"version {version} <= {prior}: ignored")
        self._versions[rule.rule_id] = version
        old = self._entry(rule.rule_id)
        problem = validate_rule(rule)
        acc = self._account(rule.account_id)
        if problem is None and rule.rule_id not in acc.rules and len(acc.rules) >= self._config.max_rules_per_account:
            limit = self._config.max_rules_per_account
            problem = RuleProblem(RuleCode.TOO_MANY_RULES, f"account already has {limit} rules")
        if problem is not None:
            self._remove(rule.rule_id)
            stopped = " (the previous version is stopped)" if old is not None else ""
            return RuleOutcome(rule.rule_id, RuleStatus.REJECTED, problem.code, problem.reason + stopped)
        if old is not None and old.rule.account_id != rule.account_id:
            self._remove(rule.rule_id)
        stays_active = old is not None and old.rule.is_active and rule.is_active
        since = old.active_since_ms if stays_active and old is not None else now_ms
        schedule = schedule_of(rule) if rule.trigger_type is Trigger.SCHEDULE else None
        acc.rules[rule.rule_id] = _Entry(rule, version, since, schedule)
        self._rule_account[rule.rule_id] = rule.account_id
        if not rule.is_active or rule.trigger_type is not Trigger.DIVIDEND:
            acc.dividends.pop(rule.rule_id, None)
        if schedule is not None:
            self._queue(rule.account_id, acc, now_ms)
        state = "active" if rule.is_active else "inactive"
        return RuleOutcome(rule.rule_id, RuleStatus.ACCEPTED, None, f"version {version} {state}")

    def delete_rule(self, rule_id: str, version: int) -> RuleOutcome:
        """A tombstone: the rule stops for good (its period and threshold counters are kept for its ids)."""
        prior = self._versions.get(rule_id)
        if prior is not None and version <= prior:
            return RuleOutcome(rule_id, RuleStatus.STALE, None, f"version {version} <= {prior}: ignored")
        self._versions[rule_id] = version
        self._remove(rule_id)
        return RuleOutcome(rule_id, RuleStatus.DELETED, None, f"deleted at version {version}")

    def _entry(self, rule_id: str) -> _Entry | None:
        account_id = self._rule_account.get(rule_id)
        return None if account_id is None else self._accounts[account_id].rules.get(rule_id)

    def _remove(self, rule_id: str) -> None:
        account_id = self._rule_account.pop(rule_id, None)
        if account_id is not None:
            acc = self._accounts[account_id]
            acc.rules.pop(rule_id, None)
            acc.dividends.pop(rule_id, None)

    def _account(self, account_id: str) -> _Account:
        acc = self._accounts.get(account_id)
        if acc is None:
            acc = self._accounts[account_id] = _Account()
        return acc

    # -- events --

    def set_kyc(self, account_id: str, status: KycStatus, version: int, available: int, now_ms: int) -> list[Decision]:
        """A KYC status from the provider's feed (version: its event time or offset); newest wins."""
        acc = self._account(account_id)
        if version <= acc.kyc_version:
            return []
        acc.kyc, acc.kyc_version = status, version
        acc.waits_reported.clear()  # a changed status is reported again
        return self.evaluate(account_id, available, now_ms)

    def on_dividend(
        self, dividend_id: str, account_id: str, source: str, amount_units: int, available: int, now_ms: int
    ) -> list[Decision]:
        """A ``DividendDeclared`` credited to ``account_id`` (already in ``available``)."""
        acc = self._accounts.get(account_id)
        if acc is None or dividend_id in acc.recent_dividends:
            return []
        acc.recent_dividends.append(dividend_id)
        del acc.recent_dividends[: -self.RECENT_DIVIDENDS]
        for rule_id, entry in acc.rules.items():
            rule = entry.rule
            if (
                rule.is_active
                and rule.trigger_type is Trigger.DIVIDEND
                and dividend_matches(rule, source, amount_units)
            ):
                acc.dividends.setdefault(rule_id, []).append((dividend_id, amount_units))
        return self.evaluate(account_id, available, now_ms)

    def on_result(
        self, payout_id: str, paid: bool, available: int, now_ms: int, failure_code: str = ""
    ) -> list[Decision]:
        """The payout's final result (after the gateway's failover); unknown or repeated ids change nothing.
        A failure holds the account for :meth:`PayoutConfig.back_off_ms` of the bridge's ``failure_code``."""
        account_id = self._in_flight.pop(payout_id, None)
        if account_id is None:
            return []
        acc = self._accounts[account_id]
        decision = acc.in_flight
        assert decision is not None and decision.payout_id == payout_id
        acc.in_flight = None
        if decision.trigger is Trigger.THRESHOLD:
            self._threshold_seq[decision.rule_id] = self._threshold_seq.get(decision.rule_id, 0) + 1
        wait_ms = 0 if paid else self._config.back_off_ms(failure_code)
        if wait_ms:
            acc.not_before_ms = now_ms + wait_ms
            self._queue(account_id, acc, acc.not_before_ms)
        return self.evaluate(account_id, available, now_ms)

    def tick(self, now_ms: int, available_of: Callable[[str], int]) -> list[Decision]:
        """Evaluate every account with a schedule occurrence (or an end of back-off) at or before ``now_ms``."""
        due: set[str] = set()
        wakes = self._wakes
        while wakes and wakes[0][0] <= now_ms:
            at, account_id = heapq.heappop(wakes)
            acc = self._accounts.get(account_id)
            if acc is not None and acc.wake_ms == at:
                acc.wake_ms = None
                due.add(account_id)
        decisions: list[Decision] = []
        for account_id in sorted(due):
            decisions += self.evaluate(account_id, available_of(account_id), now_ms)
        return decisions

    def evaluate(self, account_id: str, available: int, now_ms: int) -> list[Decision]:
        """Every due trigger of the account against its available balance (call on each balance change)."""
        acc = self._accounts.get(account_id)
        if acc is None:
            return []
        decisions = self._drain(account_id, acc, available, now_ms)
        if acc.wake_ms is None:
            nexts = [next_occurrence(e.schedule, now_ms) for e in acc.rules.values() if e.schedule and e.rule.is_active]
            if nexts:
                self._queue(account_id, acc, min(nexts))
        return decisions

    def _queue(self, account_id: str, acc: _Account, at_ms: int) -> None:
        if acc.wake_ms is None or at_ms < acc.wake_ms:
            acc.wake_ms = at_ms
            heapq.heappush(self._wakes, (at_ms, account_id))

    # -- deciding --

    def _drain(self, account_id: str, acc: _Account, available: int, now_ms: int) -> list[Decision]:
        """Due triggers in order; the first that pays goes in flight, WAIT and SKIP decisions around it."""
        if acc.in_flight is not None or now_ms < acc.not_before_ms:
            return []
        if acc.gated is not None:
            return self._gated_step(account_id, acc, available, now_ms)
        out: list[Decision] = []
        for cand in self._candidates(acc, available, now_ms):
            rule = cand.entry.rule
            pid = payout_id(rule.rule_id, cand.trigger_id)
            if cand.amount_units == 0:
                reason = f"nothing available above keep-minimum {rule.keep_minimum_kaus_units}"
                out.append(_decision(Action.SKIP, pid, rule, cand, SkipCode.NOTHING_ABOVE_KEEP_MINIMUM, reason, now_ms))
                self._consume(acc, cand)
            elif acc.kyc is not KycStatus.VERIFIED:
                if pid not in acc.waits_reported:
                    acc.waits_reported.add(pid)
                    code = _WAIT_OF[acc.kyc]
                    reason = f"holder KYC {acc.kyc or 'unknown'}: paid once verified"
                    out.append(_decision(Action.WAIT, pid, rule, cand, code, reason, now_ms))
            elif self._paused:
                if pid not in acc.waits_reported:
                    acc.waits_reported.add(pid)
                    reason = "money out is paused by governance: paid once unpaused"
                    out.append(_decision(Action.WAIT, pid, rule, cand, WaitCode.PAUSED, reason, now_ms))
            elif cand.amount_units > self._approval_limit:
                self._consume(acc, cand)
                pay = _decision(Action.PAY, pid, rule, cand, None, "", now_ms)
                out += self._gate(account_id, acc, pay, rule.keep_minimum_kaus_units, available, now_ms)
                break
            else:
                decision = _decision(Action.PAY, pid, rule, cand, None, "", now_ms)
                self._consume(acc, cand)
                acc.in_flight = decision
                acc.waits_reported.clear()
                self._in_flight[pid] = account_id
                out.append(decision)
                break
        return out

    def _candidates(self, acc: _Account, available: int, now_ms: int) -> list[_Candidate]:
        found: list[_Candidate] = []
        for rule_id, entry in acc.rules.items():
            rule = entry.rule
            if not rule.is_active:
                continue
            trigger = rule.trigger_type
            if trigger is Trigger.THRESHOLD:
                amount = threshold_amount(available, rule)
                if amount:
                    found.append(_Candidate(entry, f"T{self._threshold_seq.get(rule_id, 0)}", amount))
            elif trigger is Trigger.SCHEDULE:
                assert entry.schedule is not None
                at = latest_occurrence(entry.schedule, now_ms)
                period = period_id(entry.schedule, at)
                if at >= entry.active_since_ms and self._periods.get(rule_id) != period:
                    found.append(_Candidate(entry, period, payable(available, rule)))
            else:
                queued = acc.dividends.get(rule_id)
                if queued:
                    amount = min(sum(units for _, units in queued), payable(available, rule))
                    found.append(_Candidate(entry, f"V{queued[-1][0]}", amount))
        if len(found) > 1:
            found.sort(key=lambda c: (_ORDER[c.entry.rule.trigger_type], c.entry.rule.rule_id))
        return found

    def _consume(self, acc: _Account, cand: _Candidate) -> None:
        rule = cand.entry.rule
        if rule.trigger_type is Trigger.SCHEDULE:
            self._periods[rule.rule_id] = cand.trigger_id
        elif rule.trigger_type is Trigger.DIVIDEND:
            acc.dividends.pop(rule.rule_id, None)

    # -- snapshot --

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "config": {
                "retry_after_failure_ms": self._config.retry_after_failure_ms,
                "max_rules_per_account": self._config.max_rules_per_account,
                "retry_after_refusal_ms": self._config.retry_after_refusal_ms,
                "approval_outcomes_max": self._config.approval_outcomes_max,
                "retry_after_transient_ms": self._config.retry_after_transient_ms,
            },
            "versions": dict(sorted(self._versions.items())),
            "periods": dict(sorted(self._periods.items())),
            "threshold_seq": dict(sorted(self._threshold_seq.items())),
            "accounts": {account_id: _account_to_dict(acc) for account_id, acc in sorted(self._accounts.items())},
            "approval_outcomes": dict(self._approval_outcomes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoPayouts:
        """Restore; every account is checked at the first tick (a period due while down pays once)."""
        assert data["format"] == SNAPSHOT_FORMAT
        book = cls(PayoutConfig(**data["config"]))
        book._versions = dict(data["versions"])
        book._periods = dict(data["periods"])
        book._threshold_seq = dict(data["threshold_seq"])
        for account_id, row in data["accounts"].items():
            acc = book._accounts[account_id] = _account_from_dict(row)
            for rule_id in acc.rules:
                book._rule_account[rule_id] = account_id
            if acc.in_flight is not None:
                book._in_flight[acc.in_flight.payout_id] = account_id
            if acc.gated is not None:
                book._gated[acc.gated.decision.payout_id] = account_id
            book._queue(account_id, acc, 0)
        book._approval_outcomes = dict(data.get("approval_outcomes", {}))
        return book


def _decision(
    action: Action,
    pid: str,
    rule: Rule,
    cand: _Candidate,
    code: WaitCode | SkipCode | None,
    reason: str,
    now_ms: int,
) -> Decision:
    amount = 0 if action is Action.SKIP else cand.amount_units
    return Decision(
        action,
        pid,
        rule.rule_id,
        rule.account_id,
        rule.trigger_type,
        cand.trigger_id,
        amount,
        rule.payout_provider,
        rule.payout_currency,
        rule.payout_account,
        code,
        reason,
        now_ms,
    )


_RULE_ENUMS: dict[str, Callable[[Any], Any]] = {
    "trigger_type": Trigger,
    "payout_provider": Provider,
    "payout_currency": Currency,
    "schedule_type": ScheduleType,
    "dividend_source": RuleDividendSource,
}


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in Rule.__dataclass_fields__}


def rule_from_dict(row: dict[str, Any]) -> Rule:
    fields = {k: (_RULE_ENUMS[k](v) if k in _RULE_ENUMS and v is not None else v) for k, v in row.items()}
    return Rule(**fields)


def _decision_to_row(d: Decision) -> list[Any]:
    """A PAY decision (the only kind kept in flight) as plain data."""
    assert d.code is None
    return [
        d.action.value,
        d.payout_id,
        d.rule_id,
        d.account_id,
        d.trigger.value,
        d.trigger_id,
        d.amount_units,
        d.provider.value,
        d.currency.value,
        d.payout_account,
        None,
        d.reason,
        d.at_ms,
        d.approved,
    ]


def _decision_from_row(row: list[Any]) -> Decision:
    action, pid, rule_id, account_id, trigger, trigger_id, amount, provider, currency, account, _, reason, at = row[:13]
    return Decision(
        Action(action),
        pid,
        rule_id,
        account_id,
        Trigger(trigger),
        trigger_id,
        amount,
        Provider(provider),
        Currency(currency),
        account,
        None,
        reason,
        at,
        bool(row[13]) if len(row) > 13 else False,  # older states: no approvals
    )


def _account_to_dict(acc: _Account) -> dict[str, Any]:
    return {
        "rules": [
            {"rule": rule_to_dict(e.rule), "version": e.version, "active_since_ms": e.active_since_ms}
            for _, e in sorted(acc.rules.items())
        ],
        "kyc": None if acc.kyc is None else acc.kyc.value,
        "kyc_version": acc.kyc_version,
        "in_flight": None if acc.in_flight is None else _decision_to_row(acc.in_flight),
        "not_before_ms": acc.not_before_ms,
        "dividends": {rule_id: [list(d) for d in queued] for rule_id, queued in sorted(acc.dividends.items())},
        "recent_dividends": list(acc.recent_dividends),
        "gated": None
        if acc.gated is None
        else {
            "decision": _decision_to_row(acc.gated.decision),
            "keep_minimum_units": acc.gated.keep_minimum_units,
            "approved": acc.gated.approved,
        },
    }


def _account_from_dict(row: dict[str, Any]) -> _Account:
    acc = _Account()
    for item in row["rules"]:
        rule = rule_from_dict(item["rule"])
        schedule = schedule_of(rule) if rule.trigger_type is Trigger.SCHEDULE else None
        acc.rules[rule.rule_id] = _Entry(rule, item["version"], item["active_since_ms"], schedule)
    acc.kyc = None if row["kyc"] is None else KycStatus(row["kyc"])
    acc.kyc_version = row["kyc_version"]
    acc.in_flight = None if row["in_flight"] is None else _decision_from_row(row["in_flight"])
    acc.not_before_ms = row["not_before_ms"]
    acc.dividends = {rule_id: [(d, units) for d, units in queued] for rule_id, queued in row["dividends"].items()}
    acc.recent_dividends = list(row["recent_dividends"])
    gated = row.get("gated")
    if gated is not None:
        acc.gated = _Gated(_decision_from_row(gated["decision"]), gated["keep_minimum_units"], gated["approved"])
    return acc


def evaluate_thresholds(rules: Iterable[Rule], available_of: Callable[[str], int]) -> list[tuple[Rule, int]]:
    """Stateless sweep: each active THRESHOLD rule with what it would pay now (the benchmark's inner loop)."""
    out = []
    for rule in rules:
        if rule.is_active and rule.trigger_type is Trigger.THRESHOLD:
            amount = threshold_amount(available_of(rule.account_id), rule)
            if amount:
                out.append((rule, amount))
    return out
