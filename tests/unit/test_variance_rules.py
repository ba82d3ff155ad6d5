"""The pure reconciliation rules (domain/variance_rules.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from domain.variance_rules import (
    BreakClass,
    ExceptionState,
    InternalSettlement,
    InvalidTransition,
    MatchTier,
    Outcome,
    PriorMatches,
    ProviderLine,
    ReconResult,
    Tolerances,
    age_days,
    amount_within,
    classify_pair,
    compute_metrics,
    exception_key,
    fx_within,
    reconcile,
    transition,
)

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
END = datetime(2026, 11, 2, tzinfo=UTC)
TOL = Tolerances()


def s(
    sid: str = "BR-1",
    amount: int = 10_000,
    fee: int = 50,
    rate: str | None = "0.1500000000",
    ref: str | None = "po_1",
    at: datetime = T0,
    provider: str = "STRIPE",
    ccy: str = "USD",
    cp: str | None = "MERCHANT-1",
) -> InternalSettlement:
    return InternalSettlement(sid, provider, ref, cp, ccy, amount, fee, Decimal(rate) if rate else None, at)


def ln(
    lid: str = "L1",
    amount: int = 10_000,
    fee: int = 50,
    rate: str | None = None,
    ref: str = "po_1",
    ours: str | None = "BR-1",
    at: datetime = T0 + timedelta(seconds=5),
    provider: str = "STRIPE",
    ccy: str = "USD",
    cp: str | None = None,
) -> ProviderLine:
    return ProviderLine(lid, provider, ref, ours, cp, ccy, amount, fee, Decimal(rate) if rate else None, at)


def by_key(results: list[ReconResult]) -> dict[tuple[str | None, str | None], ReconResult]:
    return {(r.settlement_id, r.line_id): r for r in results}


# --------------------------------------------------------------------------- single pair rules


def test_exact_pair_reconciles() -> None:
    assert classify_pair(s(), ln(), TOL) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (ln(ccy="EUR"), BreakClass.AMOUNT_VARIANCE),
        (ln(amount=10_002), BreakClass.AMOUNT_VARIANCE),
        (ln(amount=10_001), None),  # one minor unit of rounding is fine
        (ln(fee=52), BreakClass.FEE_VARIANCE),
        (ln(fee=49), None),
        (ln(rate="0.1510000000"), BreakClass.FX_VARIANCE),  # 0.67% off
        (ln(rate="0.150007"), None),  # 46.7 ppm: provider rounding within 50 ppm
        (ln(at=END + timedelta(hours=2)), BreakClass.TIMING),
    ],
)
def test_pair_classes(line: ProviderLine, expected: BreakClass | None) -> None:
    assert classify_pair(s(), line, TOL) is expected


def test_fx_checked_before_amount_so_the_cause_is_named() -> None:
    line = ln(rate="0.1530000000", amount=10_200)
    assert classify_pair(s(), line, TOL) is BreakClass.FX_VARIANCE


def test_fx_boundary_is_inclusive() -> None:
    ours = Decimal("0.2000000000")
    assert fx_within(ours, ours * (1 + Decimal(50) / 1_000_000), TOL)
    assert not fx_within(ours, ours * (1 + Decimal(51) / 1_000_000), TOL)
    assert fx_within(None, Decimal(9), TOL) and fx_within(ours, None, TOL)


def test_amount_tolerance_grows_with_the_rounding_the_rate_explains() -> None:
    # KRW: a provider rate published with 2 decimals moves a large amount by tens of won
    ours, theirs = Decimal("203.4567891234"), Decimal("203.46")  # 16 ppm: in tolerance
    amount = 2_000_000
    converted = int((Decimal(amount) * theirs / ours).to_integral_value())
    assert converted - amount >= 30  # 2,000,000 won moves by ~32 won: rounding, not a variance
    assert amount_within(amount, converted, ours, theirs, TOL)
    assert not amount_within(amount, converted + 3, ours, theirs, TOL)
    assert not amount_within(amount, amount + 2, None, None, TOL)


def test_cutoff_within_grace_is_not_timing() -> None:
    late = s(at=END - timedelta(minutes=5))
    assert classify_pair(late, ln(at=END + timedelta(minutes=10)), TOL) is None
    assert classify_pair(late, ln(at=END + timedelta(minutes=26)), TOL) is BreakClass.TIMING


def test_tolerances_are_configuration() -> None:
    loose = Tolerances(amount_minor=5, fee_minor=3, fx_rate_ppm=10_000, cutoff_grace=timedelta(hours=3))
    assert classify_pair(s(), ln(amount=10_004, fee=53, rate="0.1510000000"), loose) is None
    with pytest.raises(ValueError):
        Tolerances(amount_minor=-1)
    with pytest.raises(ValueError):
        Tolerances(match_window=timedelta(0))


# --------------------------------------------------------------------------- tiers


def test_reference_tier_and_fallback_to_our_reference() -> None:
    results = by_key(reconcile([s(), s("BR-2", ref=None)], [ln(), ln("L2", ref="po_zz", ours="BR-2")], TOL, END))
    assert results[("BR-1", "L1")].tier is MatchTier.REFERENCE
    assert results[("BR-2", "L2")].outcome is Outcome.MATCHED


def test_duplicate_line_paid_twice_and_reported_twice() -> None:
    lines = [ln(), ln("L1#2", at=T0 + timedelta(minutes=9)), ln("L3", ref="po_new", at=T0 + timedelta(minutes=3))]
    results = by_key(reconcile([s()], lines, TOL, END))
    assert results[("BR-1", "L1")].outcome is Outcome.MATCHED
    for lid in ("L1#2", "L3"):
        r = results[(None, lid)]
        assert r.break_class is BreakClass.DUPLICATE and r.related_id == "BR-1"


def test_duplicate_internal_record_of_one_provider_payment() -> None:
    results = by_key(reconcile([s(), s("BR-9", at=T0 + timedelta(seconds=1))], [ln()], TOL, END))
    assert results[("BR-1", "L1")].outcome is Outcome.MATCHED
    assert results[("BR-9", None)].break_class is BreakClass.DUPLICATE
    assert results[("BR-9", None)].related_id == "L1"


def test_tolerance_tier_is_mutual_nearest() -> None:
    settlements = [s("A", ref=None, at=T0), s("B", ref=None, at=T0 + timedelta(minutes=4))]
    lines = [
        ln("X", ref="x", ours=None, at=T0 + timedelta(minutes=3), amount=10_001),
        ln("Y", ref="y", ours=None, at=T0 + timedelta(minutes=20)),
    ]
    results = by_key(reconcile(settlements, lines, TOL, END))
    assert results[("B", "X")].tier is MatchTier.TOLERANCE  # X is nearer to B (1 min) than to A (3 min)
    assert results[("A", None)].break_class is BreakClass.MISSING_AT_PROVIDER  # Y is 20 min away: outside window
    assert results[(None, "Y")].break_class is BreakClass.MISSING_INTERNALLY


def test_many_to_one_ties_only_the_whole_batch() -> None:
    members = [s(f"P{i}", amount=1_000 + i, fee=10, ref=None, cp="ACCT-9", provider="PAYPAL") for i in range(3)]
    batch = ln("B", amount=3_003, fee=30, ref="batch", ours=None, cp="ACCT-9", provider="PAYPAL")
    results = reconcile(members, [batch], TOL, END)
    assert {r.tier for r in results} == {MatchTier.MANY_TO_ONE}
    assert all(r.outcome is Outcome.MATCHED and r.line_id == "B" for r in results)
    off = reconcile(members, [replace(batch, amount_minor=3_100)], TOL, END)
    assert {r.break_class for r in off} == {BreakClass.MISSING_AT_PROVIDER, BreakClass.MISSING_INTERNALLY}


def test_unmatched_near_cutoff_is_pending_not_an_exception() -> None:
    results = by_key(
        reconcile(
            [s(at=END - timedelta(minutes=10))],
            [ln("G", ref="g", ours=None, at=END - timedelta(minutes=1), amount=5)],
            TOL,
            END,
        )
    )
    assert results[("BR-1", None)].outcome is Outcome.PENDING and results[("BR-1", None)].break_class is None
    assert results[(None, "G")].outcome is Outcome.PENDING


def test_line_for_a_settlement_matched_on_an_earlier_day_is_a_duplicate() -> None:
    prior = PriorMatches(frozenset({("STRIPE", "po_1")}), frozenset({"BR-1"}))
    results = reconcile([], [ln("L9")], TOL, END, prior)
    assert results[0].break_class is BreakClass.DUPLICATE and results[0].related_id == "BR-1"


def test_every_settlement_appears_exactly_once() -> None:
    settlements = [s(f"S{i}", ref=f"r{i}") for i in range(20)]
    lines = [ln(f"L{i}", ref=f"r{i}", ours=f"S{i}") for i in range(0, 20, 2)]
    results = reconcile(settlements, lines, TOL, END)
    assert sorted(r.settlement_id for r in results if r.settlement_id) == sorted(x.settlement_id for x in settlements)
    with pytest.raises(ValueError, match="unique"):
        reconcile([s(), s()], [], TOL, END)


# --------------------------------------------------------------------------- metrics and lifecycle


def test_metrics_follow_spec_definitions() -> None:
    results = reconcile(
        [s(), s("BR-2", ref="po_2"), s("BR-3", ref="po_3", at=END - timedelta(minutes=1))],
        [ln(), ln("L2", ref="po_2", ours="BR-2", fee=60)],
        TOL,
        END,
    )
    m = compute_metrics(results, audited_settlements=2, total_settlements=3)
    assert (m.settlements, m.auto_matched, m.exceptions, m.pending) == (2, 1, 1, 1)
    assert m.automatic_match_rate == Decimal("0.500000")
    assert m.audit_trail_coverage == Decimal("0.666667")
    assert m.breaks_by_class[BreakClass.FEE_VARIANCE] == 1


def test_exception_transitions_need_a_reason_and_are_final() -> None:
    assert transition(ExceptionState.OPEN, ExceptionState.APPROVED, "ok per provider") is ExceptionState.APPROVED
    with pytest.raises(InvalidTransition, match="reason"):
        transition(ExceptionState.OPEN, ExceptionState.CORRECTED, "  ")
    with pytest.raises(InvalidTransition, match="already resolved"):
        transition(ExceptionState.WRITTEN_OFF, ExceptionState.APPROVED, "again")


def test_age_and_keys() -> None:
    assert age_days(date(2026, 11, 1), date(2026, 11, 4)) == 3
    assert age_days(date(2026, 11, 4), date(2026, 11, 1)) == 0
    assert exception_key(ReconResult("BR-1", "L", MatchTier.REFERENCE, Outcome.BREAK)) == "S:BR-1"
    assert exception_key(ReconResult(None, "L", MatchTier.NONE, Outcome.BREAK)) == "L:L"
