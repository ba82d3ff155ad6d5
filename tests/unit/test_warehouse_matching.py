"""The vectorised engines (Polars, DuckDB SQL) classify exactly like the pure rules."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import polars as pl
import pytest

from contracts import topics as t
from devtools.recon_data import GeneratorConfig, generate_period
from domain.rails import RAILS
from domain.variance_rules import (
    MATCHING_BREAKS,
    BreakClass,
    InternalSettlement,
    PriorMatches,
    ProviderLine,
    Tolerances,
)
from warehouse.matching import (
    lines_frame,
    match_duckdb,
    match_polars,
    normalise,
    prior_frame,
    reference_results,
    settlements_frame,
)
from warehouse.provider_statements import assign_line_ids

DAY = datetime(2026, 11, 1, tzinfo=UTC)
END = DAY + timedelta(days=1)


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    return c


def _assert_same(
    settlements: pl.DataFrame,
    lines: pl.DataFrame,
    tol: Tolerances,
    end: datetime,
    prior: pl.DataFrame | None,
    con: duckdb.DuckDBPyConnection,
) -> pl.DataFrame:
    ref = normalise(reference_results(settlements, lines, tol, end, prior))
    pol = normalise(match_polars(settlements, lines, tol, end, prior))
    ddb = normalise(match_duckdb(con, settlements, lines, tol, end, prior))
    assert pol.equals(ref), _diff(ref, pol)
    assert ddb.equals(ref), _diff(ref, ddb)
    return ref


def _diff(a: pl.DataFrame, b: pl.DataFrame) -> str:
    both = pl.concat([a.with_columns(src=pl.lit("pure")), b.with_columns(src=pl.lit("engine"))])
    return str(both.unique(subset=a.columns, keep="none").sort("settlement_id", "line_id").head(20))


def _frames_from_period(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    period = generate_period(seed, DAY.date(), 1, GeneratorConfig(settlements_per_day=600, breaks_per_class=12))
    events = period.events[DAY.date()]
    items = []
    for e in events[t.BRIDGE_SETTLEMENTS_COMPLETED.name]:  # card payments and holders' payouts (payout_id set)
        items.append(
            InternalSettlement(
                e.request_id,
                RAILS[e.rail].provider.value,
                e.provider_reference or None,
                e.merchant_id if e.payout_id is None else e.payer_account_id,  # a payout's counterparty: the holder
                e.currency.value,
                e.amount_minor,
                e.provider_fee_minor,
                e.rate,
                e.completed_at,
            )
        )
    lines = []
    for day in (DAY.date(),):
        for provider, stmt in period.statements[day].items():
            stmt = sorted(stmt, key=lambda x: x.created_at)
            for line, lid in zip(stmt, assign_line_ids(provider, day, stmt), strict=True):
                lines.append(
                    ProviderLine(
                        lid,
                        provider.value,
                        line.provider_reference,
                        line.our_reference,
                        line.counterparty,
                        line.currency.value,
                        line.amount_minor,
                        line.fee_minor,
                        line.fx_rate,
                        line.created_at,
                    )
                )
    return settlements_frame(items), lines_frame(lines)


def test_engines_match_pure_rules_on_seeded_day(con: duckdb.DuckDBPyConnection) -> None:
    settlements, lines = _frames_from_period(3)
    ref = _assert_same(settlements, lines, Tolerances(), END, None, con)
    tiers = set(ref["tier"].to_list())
    assert {"reference", "tolerance", "many_to_one", "none"} <= tiers
    classes = set(ref["break_class"].drop_nulls().to_list())
    assert {c.value for c in MATCHING_BREAKS} - {BreakClass.TIMING.value} <= classes  # every class a day can show


def _adversarial(seed: int) -> tuple[list[InternalSettlement], list[ProviderLine], PriorMatches]:
    """Few ids, amounts and minutes so references collide, ties happen and batches half-tie."""
    rng = random.Random(seed)
    providers, ccys = ["STRIPE", "WISE"], ["USD", "EUR"]
    settlements, lines = [], []
    for i in range(rng.randint(5, 40)):
        at = END - timedelta(minutes=rng.choice([5, 20, 40, 60 * 20, 60 * 23 + 50]), seconds=rng.randint(0, 59))
        rate = rng.choice([None, Decimal("0.1500000000"), Decimal("203.4567891234")])
        settlements.append(
            InternalSettlement(
                f"S{i}",
                rng.choice(providers),
                rng.choice([None, f"r{rng.randint(0, 12)}"]),
                rng.choice([None, "C1", "C2"]),
                rng.choice(ccys),
                rng.choice([100, 101, 102, 5_000, 5_001]),
                rng.choice([1, 2, 5]),
                rate,
                at,
            )
        )
    for j in range(rng.randint(5, 40)):
        base = rng.choice(settlements) if settlements and rng.random() < 0.8 else None
        at = (base.settled_at if base else END - timedelta(hours=3)) + timedelta(
            minutes=rng.choice([-3, 0, 1, 2, 14, 16, 35, 70]), seconds=rng.randint(0, 59)
        )
        rate = None
        if base and base.fx_rate is not None and rng.random() < 0.7:
            rate = base.fx_rate * rng.choice([Decimal(1), Decimal("1.00004"), Decimal("1.00006"), Decimal("1.01")])
            rate = rate.quantize(Decimal("0.0000000001"))
        lines.append(
            ProviderLine(
                f"L{j}",
                base.provider if base and rng.random() < 0.9 else rng.choice(providers),
                (
                    base.provider_reference
                    if base and base.provider_reference and rng.random() < 0.6
                    else f"r{rng.randint(0, 12)}"
                ),
                rng.choice([None, base.settlement_id if base else None, f"S{rng.randint(0, 50)}"]),
                rng.choice([None, "C1", "C2"]),
                base.currency if base and rng.random() < 0.9 else rng.choice(ccys),
                (base.amount_minor if base else 100) + rng.choice([0, 0, 1, 2, 300, 205, 301]),
                (base.fee_minor if base else 1) + rng.choice([0, 1, 2, 3]),
                rate,
                at,
            )
        )
    prior = PriorMatches(frozenset({("STRIPE", "r11"), ("WISE", "r12")}), frozenset({"S49", "S48"}))
    return settlements, lines, prior


@pytest.mark.parametrize("seed", range(40))
def test_engines_match_pure_rules_on_adversarial_samples(seed: int, con: duckdb.DuckDBPyConnection) -> None:
    settlements, lines, prior = _adversarial(seed)
    tol = Tolerances(
        amount_minor=1,
        fee_minor=1,
        fx_rate_ppm=50,
        match_window=timedelta(minutes=15),
        cutoff_grace=timedelta(minutes=30),
    )
    _assert_same(settlements_frame(settlements), lines_frame(lines), tol, END, prior_frame(prior), con)


def test_empty_inputs(con: duckdb.DuckDBPyConnection) -> None:
    out = _assert_same(settlements_frame([]), lines_frame([]), Tolerances(), END, None, con)
    assert out.is_empty()


def test_amount_bound_is_enforced() -> None:
    big = InternalSettlement("S", "STRIPE", "r", None, "USD", 10**13, 0, None, DAY)
    with pytest.raises(ValueError, match="overflow"):
        match_polars(settlements_frame([big]), lines_frame([]), Tolerances(), END)


def test_dates_are_utc_not_local() -> None:
    # 23:50 UTC is already the next day in Seoul; the cut-off is the UTC midnight
    assert date(2026, 11, 1) == (END - timedelta(minutes=10)).astimezone(UTC).date()
