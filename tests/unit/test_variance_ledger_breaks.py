"""Ledger breaks among the reconciliation's results: their own exception key, and a settlement with one is not
counted as matched automatically even though its provider line matched."""

from __future__ import annotations

import polars as pl

from domain.variance_rules import (
    LEDGER_BREAKS,
    MATCHING_BREAKS,
    BreakClass,
    MatchTier,
    Outcome,
    ReconResult,
    compute_metrics,
    exception_key,
)
from warehouse.exceptions import exception_ids
from warehouse.matching import RESULT_SCHEMA

RESULTS = [
    ReconResult("BR-1", "L1", MatchTier.REFERENCE, Outcome.MATCHED),
    ReconResult("BR-2", "L2", MatchTier.REFERENCE, Outcome.MATCHED),
    ReconResult("BR-2", None, MatchTier.NONE, Outcome.BREAK, BreakClass.CAPTURE_REFUSED, -1500, 0, "BRIDGE-BR-2"),
    ReconResult("BR-3", None, MatchTier.NONE, Outcome.BREAK, BreakClass.MISSING_AT_PROVIDER, -900, -25),
    ReconResult(None, "L4", MatchTier.NONE, Outcome.BREAK, BreakClass.MISSING_INTERNALLY, 700, 20),
]


def test_the_classes_split_into_matching_and_ledger_breaks() -> None:
    assert set(MATCHING_BREAKS) | LEDGER_BREAKS == set(BreakClass) and not set(MATCHING_BREAKS) & LEDGER_BREAKS
    assert {BreakClass.CAPTURE_REFUSED} == LEDGER_BREAKS


def test_a_ledger_break_is_its_own_exception() -> None:
    keys = [exception_key(r) for r in RESULTS if r.outcome is Outcome.BREAK]
    assert keys == ["K:BR-2", "S:BR-3", "L:L4"]
    frame = pl.DataFrame(
        [(r.settlement_id, r.line_id, r.tier.value, r.outcome.value, r.break_class and r.break_class.value,
          r.amount_delta_minor, r.fee_delta_minor, r.related_id) for r in RESULTS],
        schema=RESULT_SCHEMA,
        orient="row",
    )  # fmt: skip
    warehouse_keys = frame.filter(pl.col("outcome") == "break").select(k=exception_ids())["k"].to_list()
    assert warehouse_keys == keys  # the exception queue keys them as the rules do


def test_a_settlement_with_a_ledger_break_is_not_matched_automatically() -> None:
    m = compute_metrics(RESULTS, audited_settlements=3, total_settlements=3)
    assert (m.settlements, m.auto_matched, m.exceptions) == (3, 1, 3)
    assert m.breaks_by_class[BreakClass.CAPTURE_REFUSED] == 1
    assert str(m.automatic_match_rate) == "0.333333"
