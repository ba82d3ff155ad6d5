"""High-Speed Bridge core (spec §2.2): the four phases of a card settlement as a pure state machine.

No I/O and no clock reads. The shell (``streams/bridge/runner.py``, later the Faust agent) calls one
transition per event, passing an :class:`Instant` (wall-clock ms for expiries and FX staleness, a
monotonic µs reading for phase durations), executes the returned *effects* in order, and feeds their
outcome to the next transition::

    begin(payment, available_units, at, cfg)      -> PlaceHold | Done(Rejected)           phase 1
    on_hold(tx, accepted, reason, at)             -> (nothing)  | Done(Rejected)
    convert(tx, book, at, cfg)                    -> (nothing)  | VoidHold + Done           phase 2
    route(tx, breakers, at, cfg)                  -> PayoutIntent | VoidHold + Done         phase 3
    on_payout(tx, outcome, breakers, at, cfg)     -> RailOutcome + (PostHold | PayoutIntent
                                                     | ResolvePayout | VoidHold + Done)
    on_resolved(tx, outcome, breakers, at, cfg)   -> like on_payout, or ParkForRecovery
    on_posted(tx, ok, reason, at, cfg)            -> Done(Settled)                           phase 4
                                                     | VoidHold + FlagForReconciliation + Done(Settled)
    on_capture_unanswered(tx, reason, at, cfg)    -> PostHold (same transfer id) | ParkForRecovery
    recover(intents, at)                          -> ResolvePayout per open intent
    on_paused(tx, at)                             -> VoidHold + Done(Rejected PAUSED) | None (finish normally)

The capture (:class:`PostHold`) carries the payment's rewards (cashback, ecosystem bonus): the ledger
applies them right after the capture and only if it applies, each once by its own transfer id, so a
captured payment is rewarded exactly once and an uncaptured one never.

Guarantees the transitions keep (and the tests prove):

* **No K-AUS stays locked.** Every rejection after the hold was placed carries a :class:`VoidHold`, and
  the result names the failed phase and a reason code. The one exception is an *unknown* payout outcome
  (the provider cannot be reached even to ask): voiding then could leave the merchant paid and the payer
  not debited, so the intent is parked (:class:`ParkForRecovery`) with its hold, and ``recover`` finishes
  it; the hold's expiry (``hold_ttl_ms``, 10 minutes) bounds how long that can last.
* **The merchant is paid at most once.** The shell persists each :class:`PayoutIntent` *before* calling
  the provider; its ``idempotency_key`` is the bridge transaction id, and no provider is tried twice for
  one payment (failover moves to a rail of another provider), so each provider holds at most one payout
  per key. After a crash, ``recover`` re-queries each intent that has no result under the same key, and
  re-sends it under the same key if the provider never received it.
* **The hold covers the debit.** The hold is sized for the worst rate the slippage check can accept
  (:func:`domain.fx.max_kaus_units_within_slippage`); the posted amount is the exact conversion at the
  locked rate, never more than the hold.
* **Duplicates.** :func:`admit` returns the original result for a request id already finished;
  :func:`is_repeat` tells a repeated request (another record with the same request id: its answer is a
  re-publication) from the record that began the settlement read again (its answer may be the first one out).
* **Paid means never failed.** Once the provider has paid, the payment's only outcome is :class:`Settled`.
  An unanswered capture (the ledger's answer did not come in time) is sent again under the same transfer id
  (the ledger applies it once and answers a re-send with its original outcome), up to ``max_capture_sends``
  times, then parked for ``recover`` like an unknown payout: nothing is reported until the ledger answers.
  A capture the ledger *refuses* after the payout (e.g. the hold expired) cannot be undone at the provider:
  the merchant was paid, so the result is still :class:`Settled` (with no rewards, which rode on the capture),
  and a :class:`FlagForReconciliation` records the K-AUS the payer still owes for the exception queue.

**Payout mode** (``CardPayment.payout`` set: a holder's auto-payout, spec §2.3; the same phases, journal, recovery
and breakers). The payer is the holder and the request id the payout id. Differences:

* the hold is exactly ``payout.amount_kaus_units`` (the rule decided it; no slippage margin), and so is the debit;
* the slippage check and the lock are the card payment's, but the fiat paid is the K-AUS's conversion at the
  locked rate rounded **down** (:func:`kaus_to_minor_floor`: never more than they are worth); one that pays
  nothing fails in FX_CONVERSION with AMOUNT_TOO_SMALL (the hold voided);
* only rails of ``payout.provider`` pay it (the payout account is that provider's); breakers apply (an open one
  fails the payout, NO_RAIL, hold voided), and as for card payments a provider is tried at most once, so a
  provider failure fails the payout (PAYOUT_FAILED) instead of failing over. Its ``primary_rail`` is its
  provider's best rail in its region;
* no cashback or bonus; its ledger movements are filed under ``PAYOUT`` / the payout id (:func:`payment_reference`),
  its results carry ``payout_id`` and its audit records their own actions.

**Emergency pause** (governance, ``governance.pause``): while money out is paused, a new request is refused in
BALANCE_LOCK with PAUSED before any hold (``begin(..., paused=True)``), and a payment under way is refused with PAUSED,
its hold voided, before its conversion, its routing or the execution of its payout intent (:func:`on_paused`) — as
long as no provider can hold a payout of it. A payment already sent (an intent whose outcome was unknown, or one
recovered after a crash) is finished normally, lookups and captures included: it may have been paid. Card payments and
holders' payouts alike.

**Governed parameters**: the cashback rates, the ecosystem bonus and the slippage limit are the configuration's
(``BridgeConfig.rewards``, ``BridgeConfig.fx.slippage_limit_bps``; :func:`configured` applies the values the signers
set on ``governance.parameters``). The transitions of one payment must be given the same configuration (the runner
keeps the one each payment began with), so its hold, its slippage check and its rewards agree.

Timeout policy: a provider timeout is ambiguous, so it is never followed by a failover directly. The
intent is resolved on the same provider (``ResolvePayout``): found → paid; not found → re-sent under the
same key (a late original is then deduplicated by the provider) while the rail's breaker admits calls,
else failover; still unreachable after ``max_lookups`` → parked. A rate lock covers the decision to pay:
an intent made inside the 5 s window is a commitment honoured by re-sends and recovery, but a failover
(a new intent on another provider) needs a valid lock, otherwise the payment fails in FX_CONVERSION
with RATE_LOCK_EXPIRED and the hold is voided.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple, Protocol

from domain import parameters
from domain.cashback import DEFAULT_RATES, PayerTier, RewardRates, Rewards, compute_rewards
from domain.fx import (
    FxBook,
    FxPolicy,
    RateLock,
    StaleRate,
    check_slippage,
    format_rate,
    lock_rate,
    max_kaus_units_within_slippage,
    minor_to_kaus_units,
)
from domain.ledger import MAX_TRANSFER_UNITS, Leg, Reference, SettlementKind
from domain.money import KAUS_DECIMALS, MINOR_UNIT_EXPONENT, Currency
from domain.payouts import PAYOUT_PROVIDERS
from domain.rails import (
    DEFAULT_BREAKER,
    PRIMARY_RAIL,
    RAILS,
    Breakers,
    NoRail,
    Provider,
    Rail,
    RailChoice,
    RailSpec,
    RailSubstitution,
    Region,
    eligible_rails,
    fee_minor,
    select_rail,
    unavailable,
)


class Phase(StrEnum):
    BALANCE_LOCK = "BALANCE_LOCK"
    FX_CONVERSION = "FX_CONVERSION"
    MERCHANT_CREDIT = "MERCHANT_CREDIT"
    CONFIRMATION = "CONFIRMATION"


PHASES: tuple[Phase, ...] = tuple(Phase)


class ReasonCode(StrEnum):
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    HOLD_REJECTED = "HOLD_REJECTED"
    STALE_RATE = "STALE_RATE"
    SLIPPAGE = "SLIPPAGE"
    RATE_LOCK_EXPIRED = "RATE_LOCK_EXPIRED"
    HOLD_INSUFFICIENT = "HOLD_INSUFFICIENT"
    NO_RAIL = "NO_RAIL"
    PROVIDER_DECLINED = "PROVIDER_DECLINED"
    PAYOUT_FAILED = "PAYOUT_FAILED"
    HOLD_POST_FAILED = "HOLD_POST_FAILED"
    AMOUNT_TOO_LARGE = "AMOUNT_TOO_LARGE"
    AMOUNT_TOO_SMALL = "AMOUNT_TOO_SMALL"  # a payout's K-AUS are worth less than one minor unit at the locked rate
    PAUSED = "PAUSED"  # money out is paused by governance: refused before the provider call, hold voided


# --------------------------------------------------------------------------- the ledger the bridge needs


LEDGER_TIMEOUT = "LEDGER_TIMEOUT"  # LedgerRejected's code when no answer came in time: nothing is known


class LedgerRejected(Exception):
    """The ledger refused an operation (insufficient funds, unknown or expired hold, ...), or did not answer in
    time (code :data:`LEDGER_TIMEOUT`: the operation may still apply)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class HoldLedger(Protocol):
    """What the bridge needs from the K-AUS ledger (``domain/ledger.py`` plugs in here).

    Every operation is keyed by ``transfer_id`` and applied at most once: repeating an applied id is a
    no-op (this is what makes replay after a crash safe). Refusals raise :class:`LedgerRejected`.
    ``post_hold`` moves at most the held amount and releases the rest; ``post_hold``/``void_hold``
    resolve a hold exactly once. ``post_hold``'s ``rewards`` are posted movements from issuance accounts
    (rewards, ecosystem pool; they may run negative), applied right after the capture and only if it
    applies, each at most once by its own transfer id: a repeated capture applies those not applied yet.

    Each movement names its payment for finance (``domain.ledger.Reference``): a reward carries its own
    (``Reward.reference``); a hold the one the core put on its :class:`PlaceHold` (:func:`payment_reference`: the
    card payment, or the holder's payout), and the ledger carries it onto the capture and the release.
    """

    def available_units(self, account_id: str) -> int: ...

    def place_hold(
        self,
        *,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_units: int,
        expires_at_ms: int,
        reference: Reference,
    ) -> None: ...

    def post_hold(
        self, *, transfer_id: str, hold_id: str, amount_units: int, rewards: Sequence[Reward] = ()
    ) -> None: ...

    def void_hold(self, *, transfer_id: str, hold_id: str) -> None: ...


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment as the shell saw it: wall-clock epoch ms (expiries, FX age) and a monotonic µs reading."""

    wall_ms: int
    mono_us: int


@dataclass(frozen=True, slots=True)
class HolderPayout:
    """What makes a bridge request a holder's auto-payout (contracts.models.HolderPayout): the holder is paid through
    ``provider`` at ``payout_account``, and exactly ``amount_kaus_units`` are debited (payout mode, module doc)."""

    rule_id: str | None
    provider: Provider
    payout_account: str
    amount_kaus_units: int
    # The account sealed (streams/security/envelope.py), opened by the adapter just before the provider request; then
    # `payout_account` is masked. Not in the fingerprint: sealing the same account twice gives different text.
    payout_account_sealed: str | None = None

    def __post_init__(self) -> None:
        assert self.provider in PAYOUT_PROVIDERS, self.provider
        assert self.payout_account, "a payout needs the holder's account at the provider"
        assert isinstance(self.amount_kaus_units, int) and self.amount_kaus_units > 0, self.amount_kaus_units


@dataclass(frozen=True, slots=True)
class CardPayment:
    """A bridge request (contracts.models.BridgeRequest) in domain types.

    ``origin`` says which input record carried it (the shell's position of the record, opaque here; None when
    unknown): the same record read again has the same origin, a repeated request id another one. ``payout`` set: a
    holder's auto-payout (``request_id`` is the payout id, ``amount_minor`` only an estimate at ``quoted_rate``).
    """

    request_id: str
    payer_account_id: str
    merchant_id: str
    merchant_program: str | None
    amount_minor: int
    currency: Currency
    region: Region
    payer_tier: PayerTier
    quoted_rate: Decimal
    requested_at_ms: int
    origin: str | None = None
    payout: HolderPayout | None = None

    _fingerprint: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        assert isinstance(self.amount_minor, int) and self.amount_minor > 0, self.amount_minor
        assert self.quoted_rate > 0
        assert self.request_id and self.payer_account_id and self.merchant_id
        object.__setattr__(self, "_fingerprint", self._digest())

    def fingerprint(self) -> str:
        """Identity of the payload (a re-sent request id with a different payload is flagged)."""
        return self._fingerprint

    def _digest(self) -> str:
        text = "|".join(
            (
                self.request_id,
                self.payer_account_id,
                self.merchant_id,
                self.merchant_program or "",
                str(self.amount_minor),
                self.currency.value,
                self.region.value,
                self.payer_tier.value,
                format_rate(self.quoted_rate),  # canonical text: a journal keeps the rate normalized
            )
        )
        if self.payout is not None:  # only then: a card payment's fingerprint is what older journals stored
            o = self.payout
            # The free-text account last: no other field can be confused with part of it.
            text += f"|payout|{o.rule_id or ''}|{o.provider.value}|{o.amount_kaus_units}|{o.payout_account}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def payout_id(self) -> str | None:
        """The payout's id (its request id) when this is a holder's payout; None for a card payment."""
        return self.request_id if self.payout is not None else None


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    fx: FxPolicy = field(default_factory=FxPolicy)
    hold_ttl_ms: int = 600_000
    max_providers_per_payment: int = 3  # failover bound
    max_sends_per_provider: int = 2  # the first send plus one re-send after a NOT_FOUND
    max_lookups: int = 2  # ResolvePayout attempts before parking an unknown outcome
    max_capture_sends: int = 4  # sends of an unanswered capture (same transfer id) before parking it
    settlement_account_id: str = "bridge:settlement"
    rewards_account_id: str = "bridge:rewards"
    ecosystem_account_id: str = "bridge:ecosystem"
    enabled_rails: frozenset[Rail] | None = None  # rails with an adapter; None = all
    rewards: RewardRates = DEFAULT_RATES  # cashback per tier and the ecosystem bonus (governed parameters)

    def __post_init__(self) -> None:
        assert self.hold_ttl_ms > self.fx.lock_ms
        assert self.max_providers_per_payment >= 1 and self.max_sends_per_provider >= 1 and self.max_lookups >= 1
        assert self.max_capture_sends >= 1


def configured(cfg: BridgeConfig, values: Mapping[str, int]) -> BridgeConfig:
    """``cfg`` with the governed parameters in force (``domain.parameters``: name -> checked value; a name absent
    keeps its default): the cashback rates, the ecosystem bonus and the FX slippage limit."""
    slippage = parameters.value_of(values, parameters.SLIPPAGE_LIMIT)
    return replace(cfg, fx=replace(cfg.fx, slippage_limit_bps=slippage), rewards=parameters.reward_rates(values))


class PayoutStatus(StrEnum):
    PAID = "PAID"  # the provider accepted the payout (a payout object exists under our key)
    DECLINED = "DECLINED"  # the provider refused this payment (4xx about it): nothing was paid
    UNAVAILABLE = "UNAVAILABLE"  # definitely not processed (connection refused, 5xx/429 before execution)
    TIMEOUT = "TIMEOUT"  # no answer in time: the payout may or may not exist
    NOT_FOUND = "NOT_FOUND"  # (lookups only) the provider has no payout under our key


@dataclass(frozen=True, slots=True)
class PayoutOutcome:
    status: PayoutStatus
    provider_reference: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    replayed: bool = False  # the provider answered from its idempotency store

    def describe(self) -> str:
        parts = [self.status.value]
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.error_code:
            parts.append(self.error_code)
        if self.error_message:
            parts.append(self.error_message)
        return " ".join(parts)


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class PlaceHold:
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount_units: int
    expires_at_ms: int
    reference: Reference  # the payment's, leg HOLD (:func:`payment_reference`); the ledger carries it onward


@dataclass(frozen=True, slots=True)
class Reward:
    """A reward paid with the capture: a posted transfer from an issuance account to the payer."""

    transfer_id: str
    debit_account_id: str  # the issuance account (may run negative)
    credit_account_id: str  # the payer
    amount_units: int
    memo: str
    reference: Reference  # the payment, leg CASHBACK or BONUS


@dataclass(frozen=True, slots=True)
class PostHold:
    """Capture the hold; the ledger then applies ``rewards`` (only if the capture applies, each once)."""

    transfer_id: str
    hold_id: str
    amount_units: int
    rewards: tuple[Reward, ...] = ()
    send_no: int = 1  # a re-send (after no answer) keeps the transfer id: the ledger applies it once


@dataclass(frozen=True, slots=True)
class VoidHold:
    transfer_id: str
    hold_id: str
    phase: Phase
    reason_code: ReasonCode


@dataclass(frozen=True, slots=True)
class PayoutIntent:
    """Persist this, then call the provider. Self-contained: recovery rebuilds the transaction from it."""

    bridge_tx_id: str
    idempotency_key: str
    provider_attempt: int  # 1 = first provider, 2 = first failover, ...
    send_no: int  # sends of this intent on this provider (re-sends keep the key)
    rail: Rail
    provider: Provider
    amount_minor: int
    currency: Currency
    fee_minor: int
    kaus_units: int
    rate: Decimal
    lock_id: str
    locked_at_ms: int
    lock_expires_at_ms: int
    hold_id: str
    hold_units: int
    tried_providers: tuple[Provider, ...]
    payment: CardPayment
    created_at_ms: int
    substitution: RailSubstitution | None = None  # why ``rail`` is not the region's primary rail (None: it is)


@dataclass(frozen=True, slots=True)
class ResolvePayout:
    """Ask the provider what became of ``intent`` (same idempotency key)."""

    intent: PayoutIntent
    lookup_no: int


@dataclass(frozen=True, slots=True)
class RailOutcome:
    """Breaker bookkeeping for the shell: ``ok`` False counts as a consecutive failure of ``rail``."""

    rail: Rail
    ok: bool
    at_ms: int


@dataclass(frozen=True, slots=True)
class ParkForRecovery:
    intent: PayoutIntent
    reason: str


@dataclass(frozen=True, slots=True)
class FlagForReconciliation:
    """The merchant was paid but the ledger refused the capture: the payer still owes ``kaus_units``.

    An accounting exception, not a failed payment: the shell records it durably (an audit record for the
    reconciliation's exception queue) before the payment's result is acknowledged.
    """

    bridge_tx_id: str
    request_id: str
    payer_account_id: str
    hold_id: str
    kaus_units: int
    amount_minor: int
    currency: Currency
    rate: Decimal
    rail: Rail
    provider_reference: str
    reason: str


@dataclass(frozen=True, slots=True)
class Settled:
    request_id: str
    bridge_tx_id: str
    payer_account_id: str
    merchant_id: str
    region: Region
    currency: Currency
    amount_minor: int
    kaus_debited_units: int
    rate: Decimal
    rail: Rail
    primary_rail: Rail  # the region's primary rail
    rail_substitution: RailSubstitution | None  # why ``rail`` is not ``primary_rail`` (None: it is)
    provider: Provider
    provider_reference: str
    provider_fee_minor: int
    cashback_kaus_units: int
    ecosystem_bonus_kaus_units: int
    phase_durations_us: tuple[tuple[Phase, int], ...]
    total_duration_us: int
    completed_at_ms: int
    fingerprint: str
    origin: str | None = None  # the payment's origin: which record began the settlement
    payout_id: str | None = None  # set when this paid a holder's auto-payout (CardPayment.payout_id)


@dataclass(frozen=True, slots=True)
class Rejected:
    request_id: str
    bridge_tx_id: str | None
    payer_account_id: str
    region: Region
    currency: Currency
    amount_minor: int
    failed_phase: Phase
    reason_code: ReasonCode
    reason: str
    rail: Rail | None
    phase_durations_us: tuple[tuple[Phase, int], ...]
    failed_at_ms: int
    fingerprint: str
    hold_voided: bool
    needs_reconciliation: bool = False  # older journals only: a refused capture after payout is Settled now
    origin: str | None = None  # the payment's origin: which record began the settlement
    payout_id: str | None = None  # set when this was a holder's auto-payout (CardPayment.payout_id)
    merchant_id: str | None = None  # the payment's merchant (None in results journaled before 1.3.0)


Result = Settled | Rejected


@dataclass(frozen=True, slots=True)
class Done:
    result: Result


Effect = (
    PlaceHold
    | PostHold
    | VoidHold
    | PayoutIntent
    | ResolvePayout
    | RailOutcome
    | ParkForRecovery
    | FlagForReconciliation
    | Done
)


# --------------------------------------------------------------------------- state


class Stage(StrEnum):
    HOLD_REQUESTED = "HOLD_REQUESTED"
    HOLD_PLACED = "HOLD_PLACED"
    RATE_LOCKED = "RATE_LOCKED"
    PAYING = "PAYING"  # an intent is out
    RESOLVING = "RESOLVING"  # asking the provider about an intent
    PARKED = "PARKED"  # outcome unknown; waiting for recover()
    POSTING = "POSTING"  # paid; capturing the hold (until the ledger answers: never failed from here)
    DONE = "DONE"


class BridgeTx(NamedTuple):
    """The state of one settlement (immutable; a NamedTuple because transitions copy it often)."""

    payment: CardPayment
    bridge_tx_id: str
    stage: Stage
    started_mono_us: int
    phase: Phase
    phase_started_mono_us: int
    durations_us: tuple[int, int, int, int]
    hold_id: str
    hold_units: int = 0
    lock: RateLock | None = None
    kaus_units: int = 0
    intent: PayoutIntent | None = None
    tried_providers: tuple[Provider, ...] = ()
    lookups: int = 0
    provider_reference: str | None = None
    result: Result | None = None
    capture_sends: int = 0
    fiat_minor: int = 0  # fiat paid, fixed at conversion (a card payment's amount; a payout's K-AUS at the lock)
    # A provider may hold a payout of this payment (a send's outcome was unknown, or it was recovered after a
    # crash): a pause no longer stops it, it is finished normally (:func:`on_paused`).
    maybe_sent: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    tx: BridgeTx
    effects: tuple[Effect, ...]


def bridge_tx_id_for(request_id: str) -> str:
    """Deterministic (replay gives the same id) and short enough for suffixed transfer ids (≤ 100 chars)."""
    if len(request_id) <= 93:
        return f"BRIDGE-{request_id}"
    return "BRIDGE-" + hashlib.sha256(request_id.encode()).hexdigest()[:40]


_HOLD_SUFFIX = ":hold"
_PAUSED_TEXT = "money out is paused by governance (emergency pause)"


def payment_reference(payment: CardPayment, leg: Leg) -> Reference:
    """The business transaction the ledger files ``payment``'s movement ``leg`` under: a card payment is
    ``CARD_PAYMENT`` / its bridge tx id, a holder's payout ``PAYOUT`` / its payout id (the request id)."""
    if payment.payout is not None:
        return Reference(SettlementKind.PAYOUT, payment.request_id, leg)
    return Reference(SettlementKind.CARD_PAYMENT, bridge_tx_id_for(payment.request_id), leg)


# --------------------------------------------------------------------------- idempotency


@dataclass(frozen=True, slots=True)
class New:
    pass


@dataclass(frozen=True, slots=True)
class Duplicate:
    result: Result
    same_payload: bool  # False: the id was reused for a different payment; the original result still stands


@dataclass(frozen=True, slots=True)
class InFlight:
    bridge_tx_id: str


def admit(
    payment: CardPayment, finished: Mapping[str, Result], in_flight: Container[str]
) -> New | Duplicate | InFlight:
    original = finished.get(payment.request_id)
    if original is not None:
        return Duplicate(original, original.fingerprint == payment.fingerprint())
    if payment.request_id in in_flight:
        return InFlight(bridge_tx_id_for(payment.request_id))
    return New()


def is_repeat(payment: CardPayment, result: Result) -> bool:
    """Whether answering ``payment`` with ``result`` answers a repeated request: another record than the one that
    began the settlement. That record itself, read again (its offset was not committed: a crash, a rebalance),
    is not a repeat: the earlier publication of its answer is not known to have happened. Unknown origins (older
    journals) are not repeats either: a first answer is never marked repeat, at the cost of an unmarked one."""
    return payment.origin is not None and result.origin is not None and payment.origin != result.origin


# --------------------------------------------------------------------------- helpers


def _close_phase(tx: BridgeTx, at: Instant, next_phase: Phase | None) -> BridgeTx:
    spent = max(0, at.mono_us - tx.phase_started_mono_us)
    durations = list(tx.durations_us)
    durations[PHASES.index(tx.phase)] += spent
    return tx._replace(
        durations_us=(durations[0], durations[1], durations[2], durations[3]),
        phase=next_phase or tx.phase,
        phase_started_mono_us=at.mono_us,
    )


def _durations(tx: BridgeTx) -> tuple[tuple[Phase, int], ...]:
    return tuple(zip(PHASES, tx.durations_us, strict=True))


def _reject(
    tx: BridgeTx,
    at: Instant,
    phase: Phase,
    code: ReasonCode,
    reason: str,
    *,
    void: bool,
    needs_reconciliation: bool = False,
) -> Step:
    tx = _close_phase(tx, at, None)
    p = tx.payment
    result = Rejected(
        request_id=p.request_id,
        bridge_tx_id=tx.bridge_tx_id,
        payer_account_id=p.payer_account_id,
        region=p.region,
        currency=p.currency,
        amount_minor=tx.fiat_minor or p.amount_minor,  # before conversion: the request's (a payout's estimate)
        failed_phase=phase,
        reason_code=code,
        reason=reason,
        rail=tx.intent.rail if tx.intent else None,
        phase_durations_us=_durations(tx),
        failed_at_ms=at.wall_ms,
        fingerprint=p.fingerprint(),
        hold_voided=void,
        needs_reconciliation=needs_reconciliation,
        origin=p.origin,
        payout_id=p.payout_id,
        merchant_id=p.merchant_id,
    )
    effects: list[Effect] = []
    if void:
        effects.append(VoidHold(f"{tx.bridge_tx_id}:void", tx.hold_id, phase, code))
    effects.append(Done(result))
    return Step(tx._replace(stage=Stage.DONE, result=result), tuple(effects))


def _expect(tx: BridgeTx, *stages: Stage) -> None:
    assert tx.stage in stages, f"{tx.bridge_tx_id}: transition not allowed in stage {tx.stage} (expected {stages})"


# --------------------------------------------------------------------------- phase 1: balance check & lock


def _hold_units(payment: CardPayment, cfg: BridgeConfig) -> int:
    """A card payment holds enough for the worst rate the slippage check accepts; a payout exactly its K-AUS (the
    holder's rule decided that amount, keep-minimum respected to the unit: no margin on top)."""
    if payment.payout is not None:
        return payment.payout.amount_kaus_units
    return max_kaus_units_within_slippage(
        payment.amount_minor, payment.quoted_rate, payment.currency, cfg.fx.slippage_limit_bps
    )


def _needed_for(payment: CardPayment, cfg: BridgeConfig) -> str:
    """What the hold covers, in words (for a refusal's reason)."""
    if payment.payout is not None:
        return f"are paid out to {payment.payout.provider} (payout {payment.request_id})"
    return (
        f"are needed to cover {payment.amount_minor} {payment.currency} minor units at up to "
        f"{cfg.fx.slippage_limit_bps} bps below the quoted rate {payment.quoted_rate}"
    )


def begin(
    payment: CardPayment, available_units: int | None, at: Instant, cfg: BridgeConfig, paused: bool = False
) -> Step:
    """Phase 1: check the payer can cover the hold (:func:`_hold_units`), and ask for it.

    ``available_units`` None: the balance is not known here (the ledger is remote); the hold decides. ``paused``:
    money out is paused by governance; the request is refused (PAUSED) before any hold.
    """
    bridge_tx_id = bridge_tx_id_for(payment.request_id)
    hold_units = _hold_units(payment, cfg)
    tx = BridgeTx(
        payment=payment,
        bridge_tx_id=bridge_tx_id,
        stage=Stage.HOLD_REQUESTED,
        started_mono_us=at.mono_us,
        phase=Phase.BALANCE_LOCK,
        phase_started_mono_us=at.mono_us,
        durations_us=(0, 0, 0, 0),
        hold_id=f"{bridge_tx_id}{_HOLD_SUFFIX}",
        hold_units=hold_units,
    )
    if paused:
        return _reject(tx, at, Phase.BALANCE_LOCK, ReasonCode.PAUSED, f"{_PAUSED_TEXT}; nothing held", void=False)
    if hold_units > MAX_TRANSFER_UNITS:
        return _reject(
            tx,
            at,
            Phase.BALANCE_LOCK,
            ReasonCode.AMOUNT_TOO_LARGE,
            f"a hold of {hold_units} K-AUS units is needed ({payment.amount_minor} {payment.currency} minor units at "
            f"the quoted rate {payment.quoted_rate}), above the ledger's {MAX_TRANSFER_UNITS} per transfer",
            void=False,
        )
    if available_units is not None and available_units < hold_units:
        return _reject(
            tx,
            at,
            Phase.BALANCE_LOCK,
            ReasonCode.INSUFFICIENT_FUNDS,
            f"payer {payment.payer_account_id} has {available_units} K-AUS units available; "
            f"{hold_units} {_needed_for(payment, cfg)}",
            void=False,
        )
    hold = PlaceHold(
        tx.hold_id,
        payment.payer_account_id,
        cfg.settlement_account_id,
        hold_units,
        at.wall_ms + cfg.hold_ttl_ms,
        payment_reference(payment, Leg.HOLD),
    )
    return Step(tx, (hold,))


def on_hold(tx: BridgeTx, accepted: bool, reason: str, at: Instant, ledger_code: str = "") -> Step:
    _expect(tx, Stage.HOLD_REQUESTED)
    if not accepted:
        # The ledger refused the hold, so there is nothing to void.
        code = ReasonCode.INSUFFICIENT_FUNDS if ledger_code == "INSUFFICIENT_FUNDS" else ReasonCode.HOLD_REJECTED
        return _reject(tx, at, Phase.BALANCE_LOCK, code, f"ledger refused the hold: {reason}", void=False)
    return Step(_close_phase(tx._replace(stage=Stage.HOLD_PLACED), at, Phase.FX_CONVERSION), ())


# --------------------------------------------------------------------------- phase 2: FX


def kaus_to_minor_floor(kaus_units: int, rate: Decimal, currency: Currency) -> int:
    """K-AUS base units → fiat minor units at ``rate``, rounded DOWN: what a payout pays, never more than its K-AUS
    are worth (``domain.fx.kaus_to_minor`` rounds half-even, which could pay half a minor unit too much)."""
    assert isinstance(kaus_units, int) and kaus_units >= 0
    num, den = rate.as_integer_ratio()
    assert num > 0 and den > 0, rate
    return (kaus_units * num * 10 ** MINOR_UNIT_EXPONENT[currency]) // (den * 10**KAUS_DECIMALS)


def _amounts(p: CardPayment, rate: Decimal) -> tuple[int, int]:
    """(K-AUS debited, fiat minor units paid) at the locked ``rate``: a card payment pays its amount and debits its
    conversion rounded up; a payout debits exactly its K-AUS and pays their conversion rounded down."""
    if p.payout is not None:
        units = p.payout.amount_kaus_units
        return units, kaus_to_minor_floor(units, rate, p.currency)
    return minor_to_kaus_units(p.amount_minor, rate, p.currency), p.amount_minor


def convert(tx: BridgeTx, book: FxBook, at: Instant, cfg: BridgeConfig) -> Step:
    """Phase 2: combined live rate → slippage check → lock for 5 s → exact amounts (:func:`_amounts`)."""
    _expect(tx, Stage.HOLD_PLACED)
    p = tx.payment
    try:
        live = book.combined_rate(p.currency, at.wall_ms, policy=cfg.fx)
    except StaleRate as exc:
        return _reject(
            tx,
            at,
            Phase.FX_CONVERSION,
            ReasonCode.STALE_RATE,
            f"no fresh KAUS/{p.currency} rate: {exc.reason}",
            void=True,
        )
    slip = check_slippage(p.quoted_rate, live.rate, cfg.fx.slippage_limit_bps)
    if not slip.ok:
        return _reject(tx, at, Phase.FX_CONVERSION, ReasonCode.SLIPPAGE, slip.reason, void=True)
    lock = lock_rate(f"{tx.bridge_tx_id}:fx", live, at.wall_ms, cfg.fx)
    kaus_units, fiat_minor = _amounts(p, lock.rate)
    if fiat_minor == 0:  # only a payout can get here: a card payment's amount is positive
        return _reject(
            tx,
            at,
            Phase.FX_CONVERSION,
            ReasonCode.AMOUNT_TOO_SMALL,
            f"{kaus_units} K-AUS units are worth less than one {p.currency} minor unit at the locked rate {lock.rate}",
            void=True,
        )
    if kaus_units > tx.hold_units:  # unreachable by construction of the hold; guarded all the same
        return _reject(
            tx,
            at,
            Phase.FX_CONVERSION,
            ReasonCode.HOLD_INSUFFICIENT,
            f"{kaus_units} K-AUS units needed but only {tx.hold_units} held",
            void=True,
        )
    tx = tx._replace(stage=Stage.RATE_LOCKED, lock=lock, kaus_units=kaus_units, fiat_minor=fiat_minor)
    return Step(_close_phase(tx, at, Phase.MERCHANT_CREDIT), ())


# --------------------------------------------------------------------------- phase 3: merchant credit


def _excluded_rails(tried: tuple[Provider, ...]) -> set[Rail]:
    return {r for r, s in RAILS.items() if s.provider in tried}


def _payout_rails(p: CardPayment) -> list[RailSpec]:
    """The rails that may pay a holder's payout: its provider's rails for its region and currency (the payout
    account belongs to that provider: a PayPal e-mail cannot receive a Wise transfer), best first."""
    assert p.payout is not None
    provider = p.payout.provider
    return sorted(
        (s for s in eligible_rails(p.region, p.currency) if s.provider is provider),
        key=lambda s: (s.expected_latency_ms, s.rail.value),
    )


def primary_rail(p: CardPayment) -> Rail:
    """The rail ``p`` should go out on: its region's for a card payment; for a payout its provider's best rail there
    (other providers never pay it, so another region's rail is no substitute)."""
    if p.payout is not None:
        rails = _payout_rails(p)
        if rails:
            return rails[0].rail
    return PRIMARY_RAIL[p.region]


def _select_payout_rail(
    p: CardPayment, amount_minor: int, breakers: Breakers, now_ms: int, tried: tuple[Provider, ...], cfg: BridgeConfig
) -> RailChoice | NoRail:
    """Like :func:`domain.rails.select_rail`, among the payout's provider's rails only: no failover to another
    provider. A provider is tried once per payment (one payout per idempotency key at each provider)."""
    assert p.payout is not None
    ranked = _payout_rails(p)
    provider = p.payout.provider
    if not ranked:
        return NoRail(f"{provider} has no rail paying {p.currency} in region {p.region}", ())
    substitution: RailSubstitution | None = None
    skipped: list[tuple[Rail, str]] = []
    for spec in ranked:
        why = unavailable(spec.rail, breakers, now_ms, _excluded_rails(tried), cfg.enabled_rails)
        if why is None:
            fee = fee_minor(provider, amount_minor, p.currency)
            return RailChoice(spec, fee, spec.region is None, tuple(skipped), substitution)
        if spec is ranked[0]:
            substitution = why[0]
        skipped.append((spec.rail, why[1]))
    detail = "; ".join(f"{r.value}: {text}" for r, text in skipped)
    why_not = f"no available {provider} rail for {p.currency} in {p.region} ({detail})"
    return NoRail(f"{why_not}; a payout is paid by its rule's provider only", tuple(skipped))


def _choose_rail(tx: BridgeTx, breakers: Breakers, at: Instant, cfg: BridgeConfig) -> RailChoice | NoRail:
    p = tx.payment
    if p.payout is not None:
        return _select_payout_rail(p, tx.fiat_minor, breakers, at.wall_ms, tx.tried_providers, cfg)
    return select_rail(
        p.region,
        p.currency,
        tx.fiat_minor,
        breakers,
        at.wall_ms,
        exclude=_excluded_rails(tx.tried_providers),
        enabled=cfg.enabled_rails,
    )


def _new_intent(tx: BridgeTx, breakers: Breakers, at: Instant, cfg: BridgeConfig, last_error: str) -> Step:
    p = tx.payment
    lock = tx.lock
    assert lock is not None
    if not lock.is_valid(at.wall_ms):
        return _reject(
            tx,
            at,
            Phase.FX_CONVERSION,
            ReasonCode.RATE_LOCK_EXPIRED,
            f"rate lock {lock.rate} expired at {lock.expires_at_ms} (now {at.wall_ms}) before a payout could be "
            f"initiated{'; last payout error: ' + last_error if last_error else ''}",
            void=True,
        )
    if len(tx.tried_providers) >= cfg.max_providers_per_payment:
        return _reject(
            tx,
            at,
            Phase.MERCHANT_CREDIT,
            ReasonCode.PAYOUT_FAILED,
            f"payout failed on {len(tx.tried_providers)} provider(s) "
            f"({', '.join(tx.tried_providers)}); last error: {last_error}",
            void=True,
        )
    choice = _choose_rail(tx, breakers, at, cfg)
    if isinstance(choice, NoRail):
        code = ReasonCode.PAYOUT_FAILED if tx.tried_providers else ReasonCode.NO_RAIL
        why = choice.reason + (f"; last payout error: {last_error}" if last_error else "")
        return _reject(tx, at, Phase.MERCHANT_CREDIT, code, why, void=True)
    tried = (*tx.tried_providers, choice.provider)
    intent = PayoutIntent(
        bridge_tx_id=tx.bridge_tx_id,
        idempotency_key=tx.bridge_tx_id,
        provider_attempt=len(tried),
        send_no=1,
        rail=choice.rail,
        provider=choice.provider,
        amount_minor=tx.fiat_minor,
        currency=p.currency,
        fee_minor=choice.fee_minor,
        kaus_units=tx.kaus_units,
        rate=lock.rate,
        lock_id=lock.lock_id,
        locked_at_ms=lock.locked_at_ms,
        lock_expires_at_ms=lock.expires_at_ms,
        hold_id=tx.hold_id,
        hold_units=tx.hold_units,
        tried_providers=tried,
        payment=p,
        created_at_ms=at.wall_ms,
        substitution=choice.substitution,
    )
    return Step(tx._replace(stage=Stage.PAYING, intent=intent, tried_providers=tried, lookups=0), (intent,))


def route(tx: BridgeTx, breakers: Breakers, at: Instant, cfg: BridgeConfig) -> Step:
    """Phase 3 start: choose the rail and emit the payout intent (the shell persists it, then calls out)."""
    _expect(tx, Stage.RATE_LOCKED)
    return _new_intent(tx, breakers, at, cfg, "")


_NO_REWARDS = Rewards(0, 0, 0, 0)


def _reward_amounts(tx: BridgeTx, cfg: BridgeConfig) -> Rewards:
    """Cashback and ecosystem bonus on the K-AUS actually debited (``domain.cashback``, at ``cfg.rewards``: the rates
    in force); none for a payout (money leaving the platform earns nothing)."""
    p = tx.payment
    if p.payout is not None:
        return _NO_REWARDS
    return compute_rewards(tx.kaus_units, p.payer_tier, p.merchant_program, cfg.rewards)


def _rewards(tx: BridgeTx, cfg: BridgeConfig) -> tuple[Reward, ...]:
    """The payment's rewards as transfers; zero amounts are left out."""
    p = tx.payment
    rewards = _reward_amounts(tx, cfg)
    out: tuple[Reward, ...] = ()
    if rewards.cashback_kaus_units:
        out = (
            Reward(
                f"{tx.bridge_tx_id}:cashback",
                cfg.rewards_account_id,
                p.payer_account_id,
                rewards.cashback_kaus_units,
                f"cashback {p.payer_tier} {rewards.cashback_bps} bps",
                payment_reference(p, Leg.CASHBACK),
            ),
        )
    if rewards.ecosystem_bonus_kaus_units:
        out += (
            Reward(
                f"{tx.bridge_tx_id}:bonus",
                cfg.ecosystem_account_id,
                p.payer_account_id,
                rewards.ecosystem_bonus_kaus_units,
                f"ecosystem bonus {p.merchant_program}",
                payment_reference(p, Leg.BONUS),
            ),
        )
    return out


def _paid(tx: BridgeTx, outcome: PayoutOutcome, at: Instant, pre: tuple[Effect, ...], cfg: BridgeConfig) -> Step:
    assert tx.intent is not None
    reference = outcome.provider_reference or ""
    tx = tx._replace(stage=Stage.POSTING, provider_reference=reference, capture_sends=1)
    tx = _close_phase(tx, at, Phase.CONFIRMATION)
    post = PostHold(f"{tx.bridge_tx_id}:post", tx.hold_id, tx.kaus_units, _rewards(tx, cfg))
    assert tx.kaus_units <= tx.hold_units
    return Step(tx, (*pre, post))


def _resend(tx: BridgeTx, at: Instant) -> Step:
    assert tx.intent is not None
    intent = replace(tx.intent, send_no=tx.intent.send_no + 1, created_at_ms=at.wall_ms)
    return Step(tx._replace(stage=Stage.PAYING, intent=intent), (intent,))


def on_payout(tx: BridgeTx, outcome: PayoutOutcome, breakers: Breakers, at: Instant, cfg: BridgeConfig) -> Step:
    """The provider's answer to a payout intent."""
    _expect(tx, Stage.PAYING)
    intent = tx.intent
    assert intent is not None
    s = outcome.status
    if s is PayoutStatus.PAID:
        return _paid(tx, outcome, at, (RailOutcome(intent.rail, True, at.wall_ms),), cfg)
    if s is PayoutStatus.DECLINED:
        # The rail answered; the refusal is about this payment, so it is not a rail failure.
        step = _declined(tx, intent, outcome, at)
        return Step(step.tx, (RailOutcome(intent.rail, True, at.wall_ms), *step.effects))
    failed = RailOutcome(intent.rail, False, at.wall_ms)
    if s is PayoutStatus.TIMEOUT:
        resolve = ResolvePayout(intent, 1)
        return Step(tx._replace(stage=Stage.RESOLVING, lookups=1, maybe_sent=True), (failed, resolve))
    # UNAVAILABLE (or NOT_FOUND, which a payout call should not return): definitely not paid → failover.
    step = _new_intent(tx, breakers, at, cfg, f"{intent.rail}: {outcome.describe()}")
    return Step(step.tx, (failed, *step.effects))


def _declined(tx: BridgeTx, intent: PayoutIntent, outcome: PayoutOutcome, at: Instant) -> Step:
    """The provider refused this payment (live or when asked afterwards): nothing was paid, the hold is voided."""
    return _reject(
        tx,
        at,
        Phase.MERCHANT_CREDIT,
        ReasonCode.PROVIDER_DECLINED,
        f"{intent.provider} declined the payout on {intent.rail}: {outcome.describe()}",
        void=True,
    )


def on_resolved(tx: BridgeTx, outcome: PayoutOutcome, breakers: Breakers, at: Instant, cfg: BridgeConfig) -> Step:
    """The provider's answer to ``ResolvePayout`` (live after a timeout, or during recovery)."""
    _expect(tx, Stage.RESOLVING)
    intent = tx.intent
    assert intent is not None
    s = outcome.status
    if s is PayoutStatus.PAID:
        return _paid(tx, outcome, at, (), cfg)
    if s is PayoutStatus.DECLINED:
        return _declined(tx, intent, outcome, at)
    if s is PayoutStatus.NOT_FOUND:
        # Never received: re-sending under the same key is safe (a late original is deduplicated).
        if intent.send_no < cfg.max_sends_per_provider and breakers_allow(breakers, intent.rail, at.wall_ms):
            return _resend(tx, at)
        return _new_intent(tx, breakers, at, cfg, f"{intent.rail}: payout not found after {intent.send_no} send(s)")
    # Still unknown (TIMEOUT / UNAVAILABLE while asking).
    if tx.lookups < cfg.max_lookups:
        return Step(tx._replace(lookups=tx.lookups + 1), (ResolvePayout(intent, tx.lookups + 1),))
    reason = f"payout outcome unknown on {intent.rail} after {tx.lookups} lookup(s): {outcome.describe()}"
    return Step(tx._replace(stage=Stage.PARKED), (ParkForRecovery(intent, reason),))


def breakers_allow(breakers: Breakers, rail: Rail, now_ms: int) -> bool:
    return breakers.get(rail, DEFAULT_BREAKER).allows(now_ms)


# --------------------------------------------------------------------------- emergency pause (governance)

_STOPPABLE = (Stage.HOLD_PLACED, Stage.RATE_LOCKED, Stage.PAYING)


def pause_stops(tx: BridgeTx) -> bool:
    """Whether a pause still stops ``tx``: its hold is placed and no provider can hold a payout of it yet.

    In PAYING the shell asks *before* executing ``tx.intent`` (persisting it, then calling the provider). A payment
    that may already be at a provider (a send timed out, or it was recovered after a crash) is finished normally:
    voiding its hold then could leave the merchant paid and the payer not debited.
    """
    return tx.stage in _STOPPABLE and not tx.maybe_sent


def on_paused(tx: BridgeTx, at: Instant) -> Step | None:
    """Money out is paused: refuse ``tx`` with PAUSED and void its hold, if the pause still stops it
    (:func:`pause_stops`); None: go on as if not paused. Call it before ``convert``, before ``route`` and right
    before executing a :class:`PayoutIntent`; a new request is refused in :func:`begin` instead (nothing held)."""
    if not pause_stops(tx):
        return None
    intent = tx.intent
    where = "" if intent is None else f" before calling {intent.provider} on {intent.rail}"
    # The intent was not executed: the result names no rail (a failed earlier provider is in the journal).
    tx = tx._replace(intent=None)
    return _reject(tx, at, tx.phase, ReasonCode.PAUSED, f"{_PAUSED_TEXT}: stopped{where}; hold voided", void=True)


# --------------------------------------------------------------------------- phase 4: confirmation & cashback


def on_posted(tx: BridgeTx, ok: bool, reason: str, at: Instant, cfg: BridgeConfig) -> Step:
    """Phase 4: the ledger's answer to the capture (with its rewards, or neither) → the settlement confirmation.

    The merchant has been paid either way, so the result is :class:`Settled` either way. A refused capture
    releases the hold (nothing stays locked; the ledger has no debit to show for it) and flags the K-AUS the
    payer owes for reconciliation; its rewards were not applied, so none are reported.
    """
    _expect(tx, Stage.POSTING)
    intent = tx.intent
    assert intent is not None and tx.lock is not None
    if ok:
        # The same amounts the capture's rewards carried (_rewards): recomputed from tx and the payment's config
        # (the shell gives a payment the config it began with: streams.bridge.runner).
        rewards = _reward_amounts(tx, cfg)
        return _settled(tx, at, rewards.cashback_kaus_units, rewards.ecosystem_bonus_kaus_units, ())
    flag = FlagForReconciliation(
        bridge_tx_id=tx.bridge_tx_id,
        request_id=tx.payment.request_id,
        payer_account_id=tx.payment.payer_account_id,
        hold_id=tx.hold_id,
        kaus_units=tx.kaus_units,
        amount_minor=tx.fiat_minor,
        currency=tx.payment.currency,
        rate=tx.lock.rate,
        rail=intent.rail,
        provider_reference=tx.provider_reference or "",
        reason=f"the ledger refused capturing {tx.kaus_units} K-AUS units ({reason}) after the merchant was paid "
        f"on {intent.rail} (ref {tx.provider_reference})",
    )
    void = VoidHold(f"{tx.bridge_tx_id}:void", tx.hold_id, Phase.CONFIRMATION, ReasonCode.HOLD_POST_FAILED)
    return _settled(tx, at, 0, 0, (void, flag))


def on_capture_unanswered(tx: BridgeTx, reason: str, at: Instant, cfg: BridgeConfig) -> Step:
    """The ledger did not answer the capture in time: it may or may not have applied it, and the merchant is
    paid, so nothing is decided. Re-send it under the same transfer id (a re-send is answered with the
    original outcome), or after ``max_capture_sends`` park the payment: ``recover`` asks the provider again
    (PAID) and captures once more, until the ledger answers."""
    _expect(tx, Stage.POSTING)
    intent = tx.intent
    assert intent is not None
    if tx.capture_sends < cfg.max_capture_sends:
        sends = tx.capture_sends + 1
        post = PostHold(f"{tx.bridge_tx_id}:post", tx.hold_id, tx.kaus_units, _rewards(tx, cfg), send_no=sends)
        return Step(tx._replace(capture_sends=sends), (post,))
    why = f"capture of {tx.hold_id} unanswered after {tx.capture_sends} send(s) ({reason}); merchant paid"
    return Step(tx._replace(stage=Stage.PARKED), (ParkForRecovery(intent, why),))


def _settled(tx: BridgeTx, at: Instant, cashback_units: int, bonus_units: int, pre: tuple[Effect, ...]) -> Step:
    tx = _close_phase(tx, at, None)
    intent, p = tx.intent, tx.payment
    assert intent is not None and tx.lock is not None
    result = Settled(
        request_id=p.request_id,
        bridge_tx_id=tx.bridge_tx_id,
        payer_account_id=p.payer_account_id,
        merchant_id=p.merchant_id,
        region=p.region,
        currency=p.currency,
        amount_minor=tx.fiat_minor,
        kaus_debited_units=tx.kaus_units,
        rate=tx.lock.rate,
        rail=intent.rail,
        primary_rail=primary_rail(p),
        rail_substitution=intent.substitution,
        provider=intent.provider,
        provider_reference=tx.provider_reference or "",
        provider_fee_minor=intent.fee_minor,
        cashback_kaus_units=cashback_units,
        ecosystem_bonus_kaus_units=bonus_units,
        phase_durations_us=_durations(tx),
        total_duration_us=max(0, at.mono_us - tx.started_mono_us),
        completed_at_ms=at.wall_ms,
        fingerprint=p.fingerprint(),
        origin=p.origin,
        payout_id=p.payout_id,
    )
    return Step(tx._replace(stage=Stage.DONE, result=result), (*pre, Done(result)))


# --------------------------------------------------------------------------- recovery


def resume(intent: PayoutIntent, at: Instant) -> BridgeTx:
    """Rebuild the transaction of a persisted intent (phase timings before the crash are not known: 0)."""
    lock = RateLock(
        intent.lock_id, "KAUS", intent.currency, intent.rate, intent.locked_at_ms, intent.lock_expires_at_ms
    )
    return BridgeTx(
        payment=intent.payment,
        bridge_tx_id=intent.bridge_tx_id,
        stage=Stage.RESOLVING,
        started_mono_us=at.mono_us,
        phase=Phase.MERCHANT_CREDIT,
        phase_started_mono_us=at.mono_us,
        durations_us=(0, 0, 0, 0),
        hold_id=intent.hold_id,
        hold_units=intent.hold_units,
        lock=lock,
        kaus_units=intent.kaus_units,
        intent=intent,
        tried_providers=intent.tried_providers,
        lookups=1,
        fiat_minor=intent.amount_minor,
        maybe_sent=True,  # persisted, so perhaps sent: a pause does not stop its recovery
    )


def recover(intents_without_result: Iterable[PayoutIntent], at: Instant) -> list[Step]:
    """After a restart: for each intent persisted without a result, ask its provider under the same key.

    Only the latest intent of a bridge transaction matters (a later failover intent supersedes earlier
    ones, which had a definite outcome); the shell passes one per bridge_tx_id.
    """
    steps = []
    seen: set[str] = set()
    for intent in intents_without_result:
        assert intent.bridge_tx_id not in seen, f"two open intents for {intent.bridge_tx_id}"
        seen.add(intent.bridge_tx_id)
        tx = resume(intent, at)
        steps.append(Step(tx, (ResolvePayout(intent, 1),)))
    return steps


# --------------------------------------------------------------------------- audit trail (spec §7.2)


class BridgeAuditAction(StrEnum):
    """The bridge's actions on ``audit.records`` (P2P's are ``domain.trade_settlement.AuditAction``)."""

    SETTLEMENT_COMPLETED = "BRIDGE_SETTLEMENT_COMPLETED"
    SETTLEMENT_FAILED = "BRIDGE_SETTLEMENT_FAILED"
    CAPTURE_REFUSED_AFTER_PAYOUT = "BRIDGE_CAPTURE_REFUSED_AFTER_PAYOUT"  # a FlagForReconciliation
    PAYOUT_COMPLETED = "PAYOUT_COMPLETED"  # a holder's auto-payout paid (the result's payout_id set)
    PAYOUT_FAILED = "PAYOUT_FAILED"


class BridgeAudit(NamedTuple):
    """What a payment's audit record states (the shell writes it in the spec §7.2 form): one per result.

    ``audit_id`` is the record's identity and its readers' dedup key, ``AUDIT:<bridge_tx_id>:completed`` or
    ``:failed``: a function of the request id alone (``bridge_tx_id_for``), so a record written again after a
    crash is the same record, never a second one. A holder's payout has its own actions (``PAYOUT_COMPLETED`` /
    ``PAYOUT_FAILED``); its actor is the holder, its fiat what the holder received.
    """

    audit_id: str
    action: BridgeAuditAction
    transaction_id: str  # the settlement's bridge_tx_id (its request id if it has none): what the warehouse joins on
    actor_account_id: str  # the payer, on whose behalf the bridge acted
    kaus_units: int | None  # debited from the payer; None when failed (nothing is debited)
    amount_minor: int  # fiat for the merchant
    currency: Currency
    rate: Decimal | None  # the locked rate; None when failed
    rail: Rail | None  # the rail that paid, or the last one tried
    duration_us: int
    at_ms: int  # when the result was reached


def audit_of(result: Result) -> BridgeAudit:
    """The audit record of a payment's result."""
    transaction_id = result.bridge_tx_id or result.request_id
    audit_key = f"AUDIT:{bridge_tx_id_for(result.request_id)}"
    payout = result.payout_id is not None
    if isinstance(result, Settled):
        return BridgeAudit(
            f"{audit_key}:completed",
            BridgeAuditAction.PAYOUT_COMPLETED if payout else BridgeAuditAction.SETTLEMENT_COMPLETED,
            transaction_id,
            result.payer_account_id,
            result.kaus_debited_units,
            result.amount_minor,
            result.currency,
            result.rate,
            result.rail,
            result.total_duration_us,
            result.completed_at_ms,
        )
    return BridgeAudit(
        f"{audit_key}:failed",
        BridgeAuditAction.PAYOUT_FAILED if payout else BridgeAuditAction.SETTLEMENT_FAILED,
        transaction_id,
        result.payer_account_id,
        None,
        result.amount_minor,
        result.currency,
        None,
        result.rail,
        sum(us for _phase, us in result.phase_durations_us),
        result.failed_at_ms,
    )
