"""Reconciliation rules: how an internal settlement and a provider statement line are matched and classified.

Pure Python (no DuckDB, Polars or Airflow). This module is the *definition*; the vectorised matchers in
``warehouse/`` must produce exactly the results of :func:`reconcile` (tests compare them row by row).

Vocabulary
    internal settlement  one money movement we executed through a provider (bridge completion, paid payout)
    provider line        one row of that provider's settlement statement
    recon day            the UTC calendar day being reconciled; ``window_end`` is the following midnight

Matching, in tiers (each tier only sees what earlier tiers left):
    1. reference   the line's provider reference equals the settlement's provider reference; a line with no
                   such settlement falls back to its ``our_reference`` (our settlement id). Every settlement a
                   line points at is a *candidate*. Pairs that are each other's first candidate match; any
                   other item that had a candidate is a DUPLICATE.
    2. tolerance   items without any reference candidate: same provider and currency, amounts within
                   ``amount_minor`` and timestamps within ``match_window``. Mutual nearest pairs match
                   (nearest = smallest time gap, then amount gap, then id).
    3. many-to-one a line with a counterparty whose amount (and fee) equal the sum of *all* remaining
                   settlements of that provider, currency, counterparty and UTC day (at least two), within
                   n x tolerance. A batch that does not tie is left whole for a person to look at.

A matched pair is then classified (first rule that fires):
    currency differs                                         -> AMOUNT_VARIANCE
    both sides carry an FX rate differing by > fx_rate_ppm   -> FX_VARIANCE
    |amount gap| beyond tolerance (see amount_within)        -> AMOUNT_VARIANCE
    |fee gap| > fee_minor                                    -> FEE_VARIANCE
    booked on another UTC day than settled, gap > cutoff     -> TIMING
    otherwise                                                -> matched, no exception

Unmatched items timestamped within ``cutoff_grace`` of the cut-off (``window_end``) are PENDING: the other
side is expected in the next statement, so no exception yet; otherwise MISSING_AT_PROVIDER (a settlement) or
MISSING_INTERNALLY (a line). A line that points at a settlement already matched on an earlier day is a
DUPLICATE.

One class comes from the platform's own ledger, not from matching (``LEDGER_BREAKS``): CAPTURE_REFUSED, a card
payment the provider paid out whose K-AUS capture the ledger refused (the bridge records it with an audit
record): the merchant was paid, the payer was not debited and owes the K-AUS. Its exception has its own key
(``K:<settlement>``), so the settlement's provider match neither hides nor resolves it; finance must act.

Money is integer minor units; rates are Decimal; time is timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum


class BreakClass(StrEnum):
    MISSING_AT_PROVIDER = "missing_at_provider"
    MISSING_INTERNALLY = "missing_internally"
    AMOUNT_VARIANCE = "amount_variance"
    FEE_VARIANCE = "fee_variance"
    FX_VARIANCE = "fx_variance"
    DUPLICATE = "duplicate"
    TIMING = "timing"
    CAPTURE_REFUSED = "capture_refused"  # ledger side: paid out, the payer's capture refused (he owes the K-AUS)


# Classes found by comparing the ledger with the settlements, not by matching provider lines.
LEDGER_BREAKS: frozenset[BreakClass] = frozenset({BreakClass.CAPTURE_REFUSED})
# Classes the matching of settlements with provider lines (``reconcile``) can raise.
MATCHING_BREAKS: tuple[BreakClass, ...] = tuple(c for c in BreakClass if c not in LEDGER_BREAKS)


class MatchTier(StrEnum):
    REFERENCE = "reference"
    TOLERANCE = "tolerance"
    MANY_TO_ONE = "many_to_one"
    NONE = "none"


class Outcome(StrEnum):
    MATCHED = "matched"  # paired, no exception
    BREAK = "break"  # an exception for a person
    PENDING = "pending"  # inside the cut-off grace: re-checked on the next run


@dataclass(frozen=True, slots=True)
class Tolerances:
    """What counts as the same money. Every field is configuration (``NEXUS_RECON_*``)."""

    amount_minor: int = 1  # rounding of a converted amount, per settlement
    fee_minor: int = 1  # fee rounding (half-up vs half-even), per settlement
    fx_rate_ppm: int = 50  # relative rate difference allowed (50 ppm = 0.5 bp; spec slippage cap is 0.3%)
    match_window: timedelta = timedelta(minutes=15)  # tier 2: max time gap between the two sides
    cutoff_grace: timedelta = timedelta(minutes=30)  # booking across the day cut-off within this is fine

    def __post_init__(self) -> None:
        if self.amount_minor < 0 or self.fee_minor < 0 or self.fx_rate_ppm < 0:
            raise ValueError("tolerances must be >= 0")
        if self.match_window <= timedelta(0) or self.cutoff_grace < timedelta(0):
            raise ValueError("match_window must be > 0 and cutoff_grace >= 0")


@dataclass(frozen=True, slots=True)
class InternalSettlement:
    settlement_id: str  # bridge request_id / payout_id
    provider: str
    provider_reference: str | None
    counterparty: str | None  # merchant or payout account
    currency: str
    amount_minor: int
    fee_minor: int
    fx_rate: Decimal | None
    settled_at: datetime


@dataclass(frozen=True, slots=True)
class ProviderLine:
    line_id: str  # unique per statement line
    provider: str
    provider_reference: str
    our_reference: str | None
    counterparty: str | None
    currency: str
    amount_minor: int
    fee_minor: int
    fx_rate: Decimal | None
    booked_at: datetime


@dataclass(frozen=True, slots=True)
class ReconResult:
    """One row per settlement, plus one per provider line that is not part of a pair.

    A many-to-one line appears once per settlement it pays.
    """

    settlement_id: str | None
    line_id: str | None
    tier: MatchTier
    outcome: Outcome
    break_class: BreakClass | None = None
    amount_delta_minor: int = 0  # provider - internal
    fee_delta_minor: int = 0
    related_id: str | None = None  # DUPLICATE: the item it duplicates

    @property
    def key(self) -> tuple[str, str]:
        return (self.settlement_id or "", self.line_id or "")


@dataclass(frozen=True, slots=True)
class PriorMatches:
    """References already matched on earlier days (a line pointing at one of them is a duplicate)."""

    provider_references: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (provider, reference)
    settlement_ids: frozenset[str] = field(default_factory=frozenset)


# --------------------------------------------------------------------------- single-item rules


def fx_within(internal_rate: Decimal | None, provider_rate: Decimal | None, tol: Tolerances) -> bool:
    """True unless both rates are present and differ by more than ``fx_rate_ppm`` of ours."""
    if internal_rate is None or provider_rate is None:
        return True
    return abs(provider_rate - internal_rate) * 1_000_000 <= tol.fx_rate_ppm * internal_rate


def amount_within(
    internal_amount: int,
    provider_amount: int,
    internal_rate: Decimal | None,
    provider_rate: Decimal | None,
    tol: Tolerances,
) -> bool:
    """|gap| <= amount_minor + the part of the gap the (in-tolerance) rate difference explains.

    Written without division so the vectorised engines evaluate the same inequality in integers:
    ``|gap| * r_int <= amount_minor * r_int + amount * |r_prov - r_int|``.
    """
    gap = abs(provider_amount - internal_amount)
    if internal_rate is None or provider_rate is None:
        return gap <= tol.amount_minor
    explained = internal_amount * abs(provider_rate - internal_rate)
    return gap * internal_rate <= tol.amount_minor * internal_rate + explained


def crosses_cutoff(settled_at: datetime, booked_at: datetime, tol: Tolerances) -> bool:
    """Booked on another UTC day than settled, further apart than the cut-off grace."""
    return _utc_date(settled_at) != _utc_date(booked_at) and abs(booked_at - settled_at) > tol.cutoff_grace


def classify_pair(internal: InternalSettlement, line: ProviderLine, tol: Tolerances) -> BreakClass | None:
    """The break a matched pair shows, or None when it reconciles."""
    if internal.currency != line.currency:
        return BreakClass.AMOUNT_VARIANCE
    if not fx_within(internal.fx_rate, line.fx_rate, tol):
        return BreakClass.FX_VARIANCE
    if not amount_within(internal.amount_minor, line.amount_minor, internal.fx_rate, line.fx_rate, tol):
        return BreakClass.AMOUNT_VARIANCE
    if abs(line.fee_minor - internal.fee_minor) > tol.fee_minor:
        return BreakClass.FEE_VARIANCE
    if crosses_cutoff(internal.settled_at, line.booked_at, tol):
        return BreakClass.TIMING
    return None


def in_cutoff_grace(ts: datetime, window_end: datetime, tol: Tolerances) -> bool:
    """Timestamped so close to the cut-off that the other side may only be in the next statement."""
    return window_end - tol.cutoff_grace <= ts < window_end


def classify_unmatched_settlement(s: InternalSettlement, window_end: datetime, tol: Tolerances) -> Outcome:
    return Outcome.PENDING if in_cutoff_grace(s.settled_at, window_end, tol) else Outcome.BREAK


def classify_unmatched_line(line: ProviderLine, window_end: datetime, tol: Tolerances) -> Outcome:
    return Outcome.PENDING if in_cutoff_grace(line.booked_at, window_end, tol) else Outcome.BREAK


# --------------------------------------------------------------------------- the reference algorithm


def reconcile(
    settlements: Sequence[InternalSettlement],
    lines: Sequence[ProviderLine],
    tol: Tolerances,
    window_end: datetime,
    prior: PriorMatches | None = None,
) -> list[ReconResult]:
    """Match and classify; the specification the vectorised engines are tested against."""
    prior = prior or PriorMatches()
    by_id = {s.settlement_id: s for s in settlements}
    if len(by_id) != len(settlements):
        raise ValueError("settlement ids must be unique (load deduplicates on the event id)")
    line_by_id = {ln.line_id: ln for ln in lines}
    if len(line_by_id) != len(lines):
        raise ValueError("line ids must be unique")

    done_s: set[str] = set()
    done_l: set[str] = set()
    results = _reference_tier(settlements, lines, by_id, line_by_id, tol, done_s, done_l)

    # ---- tier 2: amount / currency / time within tolerance, mutual nearest
    rest_s = [s for s in settlements if s.settlement_id not in done_s]
    rest_l = [ln for ln in lines if ln.line_id not in done_l]
    for s, ln in _tier2_pairs(rest_s, rest_l, tol):
        results.append(_pair(s, ln, MatchTier.TOLERANCE, tol))
        done_s.add(s.settlement_id)
        done_l.add(ln.line_id)

    # ---- tier 3: many settlements paid by one line
    rest_s = [s for s in settlements if s.settlement_id not in done_s]
    rest_l = [ln for ln in lines if ln.line_id not in done_l]
    for members, ln in _tier3_batches(rest_s, rest_l, tol):
        for s in members:
            results.append(ReconResult(s.settlement_id, ln.line_id, MatchTier.MANY_TO_ONE, Outcome.MATCHED))
            done_s.add(s.settlement_id)
        done_l.add(ln.line_id)

    results.extend(_leftovers(settlements, lines, done_s, done_l, tol, window_end, prior))
    return results


def _reference_tier(
    settlements: Sequence[InternalSettlement],
    lines: Sequence[ProviderLine],
    by_id: Mapping[str, InternalSettlement],
    line_by_id: Mapping[str, ProviderLine],
    tol: Tolerances,
    done_s: set[str],
    done_l: set[str],
) -> list[ReconResult]:
    """Tier 1: pairs that are each other's first reference candidate; other candidates are DUPLICATEs."""
    results: list[ReconResult] = []
    line_cands = _reference_candidates(settlements, lines, by_id)
    settle_cands: dict[str, list[ProviderLine]] = defaultdict(list)
    for line_id, cands in line_cands.items():
        for s in cands:
            settle_cands[s.settlement_id].append(line_by_id[line_id])
    best_line = {sid: min(ls, key=lambda ln: (ln.booked_at, ln.line_id)) for sid, ls in settle_cands.items()}
    for line_id, cands in line_cands.items():
        s = cands[0]
        if best_line[s.settlement_id].line_id == line_id:
            results.append(_pair(s, line_by_id[line_id], MatchTier.REFERENCE, tol))
            done_s.add(s.settlement_id)
            done_l.add(line_id)
    for line_id, cands in line_cands.items():
        if line_id not in done_l:
            results.append(_duplicate_line(line_by_id[line_id], cands[0].settlement_id))
            done_l.add(line_id)
    for sid in settle_cands:
        if sid not in done_s:
            s = by_id[sid]
            results.append(
                ReconResult(
                    sid,
                    None,
                    MatchTier.REFERENCE,
                    Outcome.BREAK,
                    BreakClass.DUPLICATE,
                    amount_delta_minor=-s.amount_minor,
                    fee_delta_minor=-s.fee_minor,
                    related_id=best_line[sid].line_id,
                )
            )
            done_s.add(sid)
    return results


def _reference_candidates(
    settlements: Sequence[InternalSettlement], lines: Sequence[ProviderLine], by_id: Mapping[str, InternalSettlement]
) -> dict[str, list[InternalSettlement]]:
    """line id -> the settlements it references (provider reference, else our reference), earliest first."""
    by_pref: dict[tuple[str, str], list[InternalSettlement]] = defaultdict(list)
    for s in settlements:
        if s.provider_reference:
            by_pref[(s.provider, s.provider_reference)].append(s)
    line_cands: dict[str, list[InternalSettlement]] = {}
    for ln in lines:
        cands = by_pref.get((ln.provider, ln.provider_reference), [])
        if not cands and ln.our_reference and ln.our_reference in by_id:
            cands = [by_id[ln.our_reference]]
        if cands:
            line_cands[ln.line_id] = sorted(cands, key=lambda s: (s.settled_at, s.settlement_id))
    return line_cands


def _leftovers(
    settlements: Sequence[InternalSettlement],
    lines: Sequence[ProviderLine],
    done_s: set[str],
    done_l: set[str],
    tol: Tolerances,
    window_end: datetime,
    prior: PriorMatches,
) -> list[ReconResult]:
    """Items no tier paired: PENDING near the cut-off, DUPLICATE of an earlier day's match, else MISSING."""
    results: list[ReconResult] = []
    for s in settlements:
        if s.settlement_id in done_s:
            continue
        outcome = classify_unmatched_settlement(s, window_end, tol)
        results.append(
            ReconResult(
                s.settlement_id,
                None,
                MatchTier.NONE,
                outcome,
                BreakClass.MISSING_AT_PROVIDER if outcome is Outcome.BREAK else None,
                amount_delta_minor=-s.amount_minor,
                fee_delta_minor=-s.fee_minor,
            )
        )
    for ln in lines:
        if ln.line_id in done_l:
            continue
        if (ln.provider, ln.provider_reference) in prior.provider_references or (
            ln.our_reference is not None and ln.our_reference in prior.settlement_ids
        ):
            related = ln.our_reference if ln.our_reference in prior.settlement_ids else ln.provider_reference
            results.append(_duplicate_line(ln, related))
            continue
        outcome = classify_unmatched_line(ln, window_end, tol)
        results.append(
            ReconResult(
                None,
                ln.line_id,
                MatchTier.NONE,
                outcome,
                BreakClass.MISSING_INTERNALLY if outcome is Outcome.BREAK else None,
                amount_delta_minor=ln.amount_minor,
                fee_delta_minor=ln.fee_minor,
            )
        )
    return results


def _duplicate_line(ln: ProviderLine, related_id: str | None) -> ReconResult:
    return ReconResult(
        None,
        ln.line_id,
        MatchTier.REFERENCE,
        Outcome.BREAK,
        BreakClass.DUPLICATE,
        amount_delta_minor=ln.amount_minor,
        fee_delta_minor=ln.fee_minor,
        related_id=related_id,
    )


def _pair(s: InternalSettlement, ln: ProviderLine, tier: MatchTier, tol: Tolerances) -> ReconResult:
    brk = classify_pair(s, ln, tol)
    return ReconResult(
        s.settlement_id,
        ln.line_id,
        tier,
        Outcome.BREAK if brk else Outcome.MATCHED,
        brk,
        amount_delta_minor=ln.amount_minor - s.amount_minor,
        fee_delta_minor=ln.fee_minor - s.fee_minor,
    )


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _tier2_pairs(
    settlements: Iterable[InternalSettlement], lines: Iterable[ProviderLine], tol: Tolerances
) -> list[tuple[InternalSettlement, ProviderLine]]:
    window = _micros(tol.match_window)
    by_key: dict[tuple[str, str], list[InternalSettlement]] = defaultdict(list)
    for s in settlements:
        by_key[(s.provider, s.currency)].append(s)
    best_for_line: dict[str, tuple[tuple[int, int, str], InternalSettlement]] = {}
    best_for_settlement: dict[str, tuple[tuple[int, int, str], ProviderLine]] = {}
    for ln in lines:
        for s in by_key.get((ln.provider, ln.currency), ()):
            dt = abs(_micros(ln.booked_at - s.settled_at))
            da = abs(ln.amount_minor - s.amount_minor)
            if dt > window or da > tol.amount_minor:
                continue
            k_line = (dt, da, s.settlement_id)
            if ln.line_id not in best_for_line or k_line < best_for_line[ln.line_id][0]:
                best_for_line[ln.line_id] = (k_line, s)
            k_s = (dt, da, ln.line_id)
            if s.settlement_id not in best_for_settlement or k_s < best_for_settlement[s.settlement_id][0]:
                best_for_settlement[s.settlement_id] = (k_s, ln)
    pairs = []
    for line_id, (_, s) in best_for_line.items():
        ln = best_for_settlement[s.settlement_id][1]
        if ln.line_id == line_id:
            pairs.append((s, ln))
    return pairs


def _tier3_batches(
    settlements: Iterable[InternalSettlement], lines: Iterable[ProviderLine], tol: Tolerances
) -> list[tuple[list[InternalSettlement], ProviderLine]]:
    groups: dict[tuple[str, str, str, date], list[InternalSettlement]] = defaultdict(list)
    for s in settlements:
        if s.counterparty is not None:
            groups[(s.provider, s.currency, s.counterparty, _utc_date(s.settled_at))].append(s)
    chosen: dict[tuple[str, str, str, date], ProviderLine] = {}
    for ln in sorted(lines, key=lambda x: x.line_id):
        if ln.counterparty is None:
            continue
        key = (ln.provider, ln.currency, ln.counterparty, _utc_date(ln.booked_at))
        members = groups.get(key)
        if not members or len(members) < 2 or key in chosen:
            continue
        n = len(members)
        if (
            abs(sum(s.amount_minor for s in members) - ln.amount_minor) <= n * tol.amount_minor
            and abs(sum(s.fee_minor for s in members) - ln.fee_minor) <= n * tol.fee_minor
        ):
            chosen[key] = ln
    return [(groups[key], ln) for key, ln in chosen.items()]


def _utc_date(ts: datetime) -> date:
    return ts.astimezone(UTC).date()


# --------------------------------------------------------------------------- §6.2 metrics


@dataclass(frozen=True, slots=True)
class ReconMetrics:
    settlements: int
    auto_matched: int
    exceptions: int
    pending: int
    automatic_match_rate: Decimal  # auto-matched settlements / settlements decided today
    exception_rate: Decimal  # exceptions / all items decided today
    audit_trail_coverage: Decimal  # settlements with an audit record / settlements
    breaks_by_class: Mapping[BreakClass, int]


def _ratio(num: int, den: int) -> Decimal:
    return (Decimal(num) / Decimal(den)).quantize(Decimal("0.000001")) if den else Decimal(1)


def compute_metrics(results: Iterable[ReconResult], audited_settlements: int, total_settlements: int) -> ReconMetrics:
    """A settlement counts as matched automatically when it is paired without a break and has no other break
    (e.g. its provider line ties but its ledger capture was refused)."""
    rows = list(results)
    decided_settlements = {r.settlement_id for r in rows if r.settlement_id and r.outcome is not Outcome.PENDING}
    breaks = [r for r in rows if r.outcome is Outcome.BREAK]
    broken = {r.settlement_id for r in breaks if r.settlement_id}
    matched = {r.settlement_id for r in rows if r.settlement_id and r.outcome is Outcome.MATCHED} - broken
    items = len({r.key for r in rows if r.outcome is not Outcome.PENDING})
    by_class: dict[BreakClass, int] = dict.fromkeys(BreakClass, 0)
    for r in breaks:
        assert r.break_class is not None
        by_class[r.break_class] += 1
    return ReconMetrics(
        settlements=len(decided_settlements),
        auto_matched=len(matched),
        exceptions=len(breaks),
        pending=sum(1 for r in rows if r.outcome is Outcome.PENDING),
        automatic_match_rate=_ratio(len(matched), len(decided_settlements)),
        exception_rate=_ratio(len(breaks), items),
        audit_trail_coverage=_ratio(audited_settlements, total_settlements),
        breaks_by_class=by_class,
    )


# --------------------------------------------------------------------------- exception lifecycle


class ExceptionState(StrEnum):
    OPEN = "open"
    CORRECTION_REQUESTED = "correction_requested"  # a ledger break's LEDGER_CORRECTION waits for the signers
    APPROVED = "approved"
    CORRECTED = "corrected"
    WRITTEN_OFF = "written_off"


TRANSITIONS: Mapping[ExceptionState, frozenset[ExceptionState]] = {
    ExceptionState.OPEN: frozenset(
        {
            ExceptionState.APPROVED,
            ExceptionState.CORRECTED,
            ExceptionState.WRITTEN_OFF,
            ExceptionState.CORRECTION_REQUESTED,
        }
    ),
    # Only governance's outcome moves it on: EXECUTED -> corrected; REJECTED / EXPIRED -> open again. A person
    # cannot approve or write off meanwhile: the signers could still move the K-AUS.
    ExceptionState.CORRECTION_REQUESTED: frozenset({ExceptionState.CORRECTED, ExceptionState.OPEN}),
    ExceptionState.APPROVED: frozenset(),
    ExceptionState.CORRECTED: frozenset(),
    ExceptionState.WRITTEN_OFF: frozenset(),
}


class InvalidTransition(ValueError):
    pass


def transition(
    current: ExceptionState, target: ExceptionState, reason: str, break_class: BreakClass | str | None = None
) -> ExceptionState:
    """open -> approved / corrected / written_off, each with a reason a reviewer can read later. A ledger break
    (``LEDGER_BREAKS``: K-AUS the payer owes) is corrected only by moving K-AUS, which takes the signers: open ->
    correction_requested -> corrected (request EXECUTED) or back to open (REJECTED, EXPIRED); no other class
    goes through correction_requested."""
    if not reason or not reason.strip():
        raise InvalidTransition("a reason is required for every exception action")
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (already resolved)"
        raise InvalidTransition(f"cannot move an exception from {current} to {target}; allowed: {allowed}")
    ledger_break = break_class is not None and BreakClass(break_class) in LEDGER_BREAKS
    if ledger_break and current is ExceptionState.OPEN and target is ExceptionState.CORRECTED:
        raise InvalidTransition(
            f"a {break_class} break is corrected by moving K-AUS in the ledger, which needs the signers: "
            "request a LEDGER_CORRECTION (exceptions correct asks for it)"
        )
    if target is ExceptionState.CORRECTION_REQUESTED and not ledger_break:
        raise InvalidTransition(f"only a ledger break is corrected through governance, not {break_class}")
    return target


# A correction request's governance state (contracts.models.MultisigState) -> what it does to its exception.
CORRECTION_OUTCOMES: Mapping[str, ExceptionState] = {
    "EXECUTED": ExceptionState.CORRECTED,
    "REJECTED": ExceptionState.OPEN,  # refused on arrival, or EXECUTION_FAILED (the ledger refused the transfer)
    "EXPIRED": ExceptionState.OPEN,
}
CORRECTION_REQUEST_PREFIX = "RECON-CORR:"
_REQUEST_ID_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
REQUEST_ID_LENGTH_MAX = 124  # a transfer's ledger command id is GOV:<request_id>, at most 128 characters
NONCE_MAX = 2**63 - 1


def correction_outcome(multisig_state: str) -> ExceptionState | None:
    """What a request's state means for its exception: corrected, open again, or None (still waiting)."""
    return CORRECTION_OUTCOMES.get(multisig_state)


def correction_request_id(exception_id: str, attempt: int) -> str:
    """The LEDGER_CORRECTION request of an exception's ``attempt``-th correction (1, 2, ... after a rejection):
    the same inputs always give the same id, so a request sent again after a crash is the same request."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    readable = f"{CORRECTION_REQUEST_PREFIX}{exception_id}:{attempt}"
    if len(readable) <= REQUEST_ID_LENGTH_MAX and _REQUEST_ID_SAFE.match(readable):
        return readable
    digest = hashlib.sha256(exception_id.encode()).hexdigest()[:40]
    return f"{CORRECTION_REQUEST_PREFIX}{digest}:{attempt}"


def correction_nonce(request_id: str) -> int:
    """A request's nonce from its id's SHA-256 (the first 63 bits): deterministic, and as unlikely to meet another
    request's random 63-bit nonce as two random ones."""
    digest = hashlib.sha256(b"nexus-x recon correction nonce\x00" + request_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") & NONCE_MAX


def age_days(opened_on: date, as_of: date) -> int:
    return max(0, (as_of - opened_on).days)


def exception_key(result: ReconResult) -> str:
    """Stable identity of the item an exception is about: a ledger break's settlement (``K:``), else the
    settlement (``S:``), else the line (``L:``)."""
    if result.break_class in LEDGER_BREAKS:
        return f"K:{result.settlement_id}"
    return f"S:{result.settlement_id}" if result.settlement_id else f"L:{result.line_id}"
