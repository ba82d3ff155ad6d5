"""Vectorised variance analysis: the rules of ``domain.variance_rules`` over whole days at once.

Two engines with one contract (tests check both against the pure reference, row for row):

* :func:`match_polars` — Polars lazy/eager frames.
* :func:`match_duckdb` — the SQL in ``sql/recon/match.sql`` run by DuckDB.

Inputs (both engines):

settlements  settlement_id, provider, provider_reference?, counterparty?, currency, amount_minor, fee_minor,
             fx_rate? (Decimal(38,10)), settled_at (UTC)
lines        line_id, provider, provider_reference, our_reference?, counterparty?, currency, amount_minor,
             fee_minor, fx_rate?, booked_at (UTC)
prior        provider, provider_reference, settlement_id — references matched on earlier days

Output: one row per result with the columns of :data:`RESULT_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import polars as pl

from domain import variance_rules as vr
from domain.variance_rules import BreakClass, MatchTier, Outcome, Tolerances
from warehouse.sqlrunner import render_file

RATE_SCALE = 10**10  # rates carry at most 10 fractional digits (contracts.types.Rate)
RATE_DTYPE = pl.Decimal(38, 10)
TS_DTYPE = pl.Datetime("us", "UTC")

SETTLEMENT_SCHEMA: dict[str, Any] = {
    "settlement_id": pl.String,
    "provider": pl.String,
    "provider_reference": pl.String,
    "counterparty": pl.String,
    "currency": pl.String,
    "amount_minor": pl.Int64,
    "fee_minor": pl.Int64,
    "fx_rate": RATE_DTYPE,
    "settled_at": TS_DTYPE,
}
LINE_SCHEMA: dict[str, Any] = {
    "line_id": pl.String,
    "provider": pl.String,
    "provider_reference": pl.String,
    "our_reference": pl.String,
    "counterparty": pl.String,
    "currency": pl.String,
    "amount_minor": pl.Int64,
    "fee_minor": pl.Int64,
    "fx_rate": RATE_DTYPE,
    "booked_at": TS_DTYPE,
}
PRIOR_SCHEMA: dict[str, Any] = {"provider": pl.String, "provider_reference": pl.String, "settlement_id": pl.String}
RESULT_SCHEMA: dict[str, Any] = {
    "settlement_id": pl.String,
    "line_id": pl.String,
    "tier": pl.String,
    "outcome": pl.String,
    "break_class": pl.String,
    "amount_delta_minor": pl.Int64,
    "fee_delta_minor": pl.Int64,
    "related_id": pl.String,
}
MAX_AMOUNT_MINOR = 10**13  # keeps amount x scaled rate inside int128 in the vectorised inequality


@dataclass(frozen=True)
class MatchInputs:
    settlements: pl.DataFrame
    lines: pl.DataFrame
    prior: pl.DataFrame

    @staticmethod
    def empty_prior() -> pl.DataFrame:
        return pl.DataFrame(schema=PRIOR_SCHEMA)


# --------------------------------------------------------------------------- conversions


def settlements_frame(items: Iterable[vr.InternalSettlement]) -> pl.DataFrame:
    return _records_frame(items, SETTLEMENT_SCHEMA)


def lines_frame(items: Iterable[vr.ProviderLine]) -> pl.DataFrame:
    return _records_frame(items, LINE_SCHEMA)


def _records_frame(items: Iterable[Any], schema: dict[str, Any]) -> pl.DataFrame:
    """One row per record; the schema's column names are the record's field names."""
    rows = [tuple(getattr(item, name) for name in schema) for item in items]
    return pl.DataFrame(rows, schema=schema, orient="row")


def prior_frame(prior: vr.PriorMatches) -> pl.DataFrame:
    rows: list[tuple[str | None, str | None, str | None]] = [(p, r, None) for p, r in prior.provider_references]
    rows += [(None, None, sid) for sid in prior.settlement_ids]
    return pl.DataFrame(rows, schema=PRIOR_SCHEMA, orient="row")


def settlements_from_frame(df: pl.DataFrame) -> list[vr.InternalSettlement]:
    return [vr.InternalSettlement(**row) for row in df.select(list(SETTLEMENT_SCHEMA)).iter_rows(named=True)]


def lines_from_frame(df: pl.DataFrame) -> list[vr.ProviderLine]:
    return [vr.ProviderLine(**row) for row in df.select(list(LINE_SCHEMA)).iter_rows(named=True)]


def prior_from_frame(df: pl.DataFrame) -> vr.PriorMatches:
    refs = frozenset(
        (p, r)
        for p, r in df.filter(pl.col("provider_reference").is_not_null())
        .select("provider", "provider_reference")
        .iter_rows()
    )
    sids = frozenset(df.filter(pl.col("settlement_id").is_not_null())["settlement_id"].to_list())
    return vr.PriorMatches(refs, sids)


def results_frame(results: Sequence[vr.ReconResult]) -> pl.DataFrame:
    rows = [
        (
            r.settlement_id,
            r.line_id,
            str(r.tier),
            str(r.outcome),
            r.break_class and str(r.break_class),
            r.amount_delta_minor,
            r.fee_delta_minor,
            r.related_id,
        )
        for r in results
    ]
    return pl.DataFrame(rows, schema=RESULT_SCHEMA, orient="row")


def results_from_frame(df: pl.DataFrame) -> list[vr.ReconResult]:
    out = []
    for row in df.select(list(RESULT_SCHEMA)).iter_rows(named=True):
        out.append(
            vr.ReconResult(
                settlement_id=row["settlement_id"],
                line_id=row["line_id"],
                tier=MatchTier(row["tier"]),
                outcome=Outcome(row["outcome"]),
                break_class=BreakClass(row["break_class"]) if row["break_class"] else None,
                amount_delta_minor=row["amount_delta_minor"],
                fee_delta_minor=row["fee_delta_minor"],
                related_id=row["related_id"],
            )
        )
    return out


def normalise(df: pl.DataFrame) -> pl.DataFrame:
    """Canonical row order for comparisons."""
    return df.select(list(RESULT_SCHEMA)).sort(["settlement_id", "line_id"], nulls_last=True)


# --------------------------------------------------------------------------- Polars engine
#
# Memory bounds the day size one worker can match, so: items are addressed by row index (si / li, u32) once the
# string joins on references are done, provider and currency are dictionary-encoded (one Enum shared by both
# sides), exact string tie-breaks are only computed for the few items with more than one candidate, and pairs
# are classified in chunks.

TIER_ENUM = pl.Enum([t.value for t in MatchTier])
OUTCOME_ENUM = pl.Enum([o.value for o in Outcome])
CLASS_ENUM = pl.Enum([c.value for c in BreakClass])
CHUNK = 2_000_000
_PART_SCHEMA: dict[str, Any] = {
    "si": pl.UInt32,
    "li": pl.UInt32,
    "tier": TIER_ENUM,
    "outcome": OUTCOME_ENUM,
    "break_class": CLASS_ENUM,
    "amount_delta_minor": pl.Int64,
    "fee_delta_minor": pl.Int64,
    "related_id": pl.String,
}


def _micros(td: Any) -> int:
    return int(td.total_seconds() * 1_000_000)


def _encode(s: pl.DataFrame, ln: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """provider/currency -> one shared Enum (cheap joins and compares); row indices si / li."""
    if (
        isinstance(s.schema["provider"], pl.Enum)
        and s.schema["provider"] == ln.schema["provider"]
        and s.schema["provider"] == s.schema["currency"] == ln.schema["currency"]
    ):
        enum = s.schema["provider"]
    else:
        vocab: set[str] = set()
        for frame in (s, ln):
            for col in ("provider", "currency"):
                vocab.update(v for v in frame[col].cast(pl.String).unique().to_list() if v is not None)
        enum = pl.Enum(sorted(vocab))
    s = s.with_columns(pl.col("provider").cast(enum), pl.col("currency").cast(enum)).with_row_index("si")
    ln = ln.with_columns(pl.col("provider").cast(enum), pl.col("currency").cast(enum)).with_row_index("li")
    return s, ln


def _mask(n: int, idx: pl.Series) -> pl.Series:
    mask = np.zeros(n, dtype=bool)
    if idx.len():
        mask[idx.to_numpy()] = True
    return pl.Series(mask)


def _string_join(left: pl.DataFrame, left_key: str, right: pl.DataFrame, right_key: str) -> pl.DataFrame:
    """Inner join li x si on equal strings: joined on a 64-bit hash (light), then checked on the strings (exact)."""
    lk = left.filter(pl.col(left_key).is_not_null()).select("li", left_key)
    rk = right.filter(pl.col(right_key).is_not_null()).select("si", right_key)
    j = (
        lk.select("li", h=pl.col(left_key).hash(seed=1))
        .join(rk.select("si", h=pl.col(right_key).hash(seed=1)), on="h", how="inner")
        .select("li", "si")
    )
    lv = left[left_key].gather(j["li"])  # li / si are row positions in the full frames
    rv = right[right_key].gather(j["si"])
    return j.filter(lv == rv)


def _classify_chunk(
    pairs: pl.DataFrame, s: pl.DataFrame, ln: pl.DataFrame, tier: MatchTier, tol: Tolerances
) -> pl.DataFrame:
    si, li = pairs["si"], pairs["li"]
    g = pl.DataFrame(
        {
            "si": si,
            "li": li,
            "s_ccy": s["currency"].gather(si),
            "l_ccy": ln["currency"].gather(li),
            "s_amount": s["amount_minor"].gather(si),
            "l_amount": ln["amount_minor"].gather(li),
            "s_fee": s["fee_minor"].gather(si),
            "l_fee": ln["fee_minor"].gather(li),
            "s_fx": s["fx_rate"].gather(si),
            "l_fx": ln["fx_rate"].gather(li),
            "settled_at": s["settled_at"].gather(si),
            "booked_at": ln["booked_at"].gather(li),
        }
    )
    grace = _micros(tol.cutoff_grace)
    ri, rp = pl.col("ri"), pl.col("rp")
    gap = (pl.col("l_amount") - pl.col("s_amount")).abs().cast(pl.Int128)
    both = pl.col("s_fx").is_not_null() & pl.col("l_fx").is_not_null()
    fx_bad = both & ((rp - ri).abs() * 1_000_000 > pl.lit(tol.fx_rate_ppm, pl.Int128) * ri)
    amount_bad = (
        pl.when(both)
        .then(
            gap * ri > pl.lit(tol.amount_minor, pl.Int128) * ri + pl.col("s_amount").cast(pl.Int128) * (rp - ri).abs()
        )
        .otherwise(gap > tol.amount_minor)
    )
    fee_bad = (pl.col("l_fee") - pl.col("s_fee")).abs() > tol.fee_minor
    lag = (pl.col("booked_at") - pl.col("settled_at")).dt.total_microseconds().abs()
    timing = (pl.col("settled_at").dt.date() != pl.col("booked_at").dt.date()) & (lag > grace)
    cls = (
        pl.when(pl.col("s_ccy") != pl.col("l_ccy"))
        .then(pl.lit(BreakClass.AMOUNT_VARIANCE.value))
        .when(fx_bad)
        .then(pl.lit(BreakClass.FX_VARIANCE.value))
        .when(amount_bad)
        .then(pl.lit(BreakClass.AMOUNT_VARIANCE.value))
        .when(fee_bad)
        .then(pl.lit(BreakClass.FEE_VARIANCE.value))
        .when(timing)
        .then(pl.lit(BreakClass.TIMING.value))
        .otherwise(pl.lit(None, pl.String))
        .cast(CLASS_ENUM)
    )
    return (
        g.with_columns(
            ri=(pl.col("s_fx") * pl.lit(RATE_SCALE)).cast(pl.Int128),
            rp=(pl.col("l_fx") * pl.lit(RATE_SCALE)).cast(pl.Int128),
        )
        .with_columns(break_class=cls)
        .select(
            "si",
            "li",
            pl.lit(tier.value).cast(TIER_ENUM).alias("tier"),
            pl.when(pl.col("break_class").is_null())
            .then(pl.lit(Outcome.MATCHED.value))
            .otherwise(pl.lit(Outcome.BREAK.value))
            .cast(OUTCOME_ENUM)
            .alias("outcome"),
            "break_class",
            (pl.col("l_amount") - pl.col("s_amount")).alias("amount_delta_minor"),
            (pl.col("l_fee") - pl.col("s_fee")).alias("fee_delta_minor"),
            pl.lit(None, pl.String).alias("related_id"),
        )
    )


def _classify(
    pairs: pl.DataFrame, s: pl.DataFrame, ln: pl.DataFrame, tier: MatchTier, tol: Tolerances
) -> list[pl.DataFrame]:
    return [_classify_chunk(pairs.slice(i, CHUNK), s, ln, tier, tol) for i in range(0, max(pairs.height, 1), CHUNK)]


def _part(df: pl.DataFrame, **cols: pl.Expr) -> pl.DataFrame:
    exprs = []
    for name, dtype in _PART_SCHEMA.items():
        expr = cols.get(name, pl.col(name) if name in df.columns else pl.lit(None))
        exprs.append(expr.cast(dtype).alias(name))
    return df.select(exprs)


def match_polars(
    settlements: pl.DataFrame,
    lines: pl.DataFrame,
    tol: Tolerances,
    window_end: datetime,
    prior: pl.DataFrame | None = None,
    *,
    compact: bool = False,
) -> pl.DataFrame:
    """The Polars engine. ``compact`` keeps tier/outcome/break_class as Enums (less memory on large days)."""
    s, ln = _prepare(settlements, lines)
    del settlements, lines  # the engine may own the frames now: columns dropped below are then freed
    prior = prior if prior is not None else MatchInputs.empty_prior()
    cands = _reference_candidates(s, ln)
    parts = _reference_tier(cands, s, ln, tol)
    s_rest = s.filter(~_mask(s.height, cands["si"]))
    l_rest = ln.filter(~_mask(ln.height, cands["li"]))
    del cands
    # only what classification and the output need stays at full size
    s = s.select("si", "settlement_id", "currency", "amount_minor", "fee_minor", "fx_rate", "settled_at")
    ln = ln.select("li", "line_id", "currency", "amount_minor", "fee_minor", "fx_rate", "booked_at")
    accepted2 = _tolerance_pairs(s_rest, l_rest, s, ln, tol)
    parts += _classify(accepted2, s, ln, MatchTier.TOLERANCE, tol)
    s_rest = s_rest.filter(~pl.col("si").is_in(accepted2["si"].implode()))
    l_rest = l_rest.filter(~pl.col("li").is_in(accepted2["li"].implode()))
    batch = _many_to_one_pairs(s_rest, l_rest, tol)
    parts.append(
        _part(
            batch,
            tier=pl.lit(MatchTier.MANY_TO_ONE.value),
            outcome=pl.lit(Outcome.MATCHED.value),
            amount_delta_minor=pl.lit(0),
            fee_delta_minor=pl.lit(0),
        )
    )
    s_rest = s_rest.filter(~pl.col("si").is_in(batch["si"].implode()))
    l_rest = l_rest.filter(~pl.col("li").is_in(batch["li"].implode()))
    grace_start = window_end - tol.cutoff_grace
    parts.append(_unmatched_settlements(s_rest, grace_start, window_end))
    parts.append(_unmatched_lines(l_rest, prior, grace_start, window_end))
    s_ids, l_ids = s["settlement_id"], ln["line_id"]
    del s, ln, s_rest, l_rest  # free the attribute columns before the id strings are gathered
    return _assemble(parts, s_ids, l_ids, compact)


def _prepare(settlements: pl.DataFrame, lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The engine's columns in the engine's types, encoded; rejects amounts the int128 comparison cannot hold."""
    s0 = settlements.select(list(SETTLEMENT_SCHEMA))
    l0 = lines.select(list(LINE_SCHEMA))
    s0 = s0.cast({k: v for k, v in SETTLEMENT_SCHEMA.items() if k not in ("provider", "currency")})
    l0 = l0.cast({k: v for k, v in LINE_SCHEMA.items() if k not in ("provider", "currency")})
    if s0.height and s0["amount_minor"].max() >= MAX_AMOUNT_MINOR:  # type: ignore[operator]
        raise ValueError(f"amount_minor >= {MAX_AMOUNT_MINOR} would overflow the int128 comparison")
    return _encode(s0, l0)


def _reference_candidates(s: pl.DataFrame, ln: pl.DataFrame) -> pl.DataFrame:
    """Tier 1 candidate pairs (li, si): same provider and provider reference, else our reference = settlement id.

    String joins go through a 64-bit hash then an exact check, which holds far less than a string-keyed join.
    """
    c1 = _string_join(ln, "provider_reference", s, "provider_reference")
    c1 = c1.filter(ln["provider"].gather(c1["li"]) == s["provider"].gather(c1["si"]))
    l_has_c1 = _mask(ln.height, c1["li"])
    c2 = _string_join(
        ln.with_columns(pl.when(l_has_c1).then(None).otherwise(pl.col("our_reference")).alias("our_reference")),
        "our_reference",
        s,
        "settlement_id",
    )
    return pl.concat([c1, c2])


def _reference_tier(cands: pl.DataFrame, s: pl.DataFrame, ln: pl.DataFrame, tol: Tolerances) -> list[pl.DataFrame]:
    """Tier 1 results: pairs that choose each other are classified, the other candidates are duplicates."""
    multi_flag = cands["li"].is_duplicated() | cands["si"].is_duplicated()
    single = cands.filter(~multi_flag)
    multi = cands.filter(multi_flag)
    m = multi.with_columns(
        s["settled_at"].gather(multi["si"]).alias("settled_at"),
        s["settlement_id"].gather(multi["si"]).alias("sid"),
        ln["booked_at"].gather(multi["li"]).alias("booked_at"),
        ln["line_id"].gather(multi["li"]).alias("lid"),
    )
    choice = m.sort(["li", "settled_at", "sid"]).unique("li", keep="first", maintain_order=True).select("li", "si")
    best = (
        m.sort(["si", "booked_at", "lid"])
        .unique("si", keep="first", maintain_order=True)
        .select("si", pl.col("li").alias("best_li"))
    )
    acc_multi = choice.join(best, on="si").filter(pl.col("best_li") == pl.col("li")).select("li", "si")
    parts = _classify(pl.concat([single, acc_multi]), s, ln, MatchTier.REFERENCE, tol)
    dup_lines = choice.join(acc_multi, on="li", how="anti")
    parts.append(
        _duplicate_part(dup_lines, "si").with_columns(
            amount_delta_minor=ln["amount_minor"].gather(dup_lines["li"]),
            fee_delta_minor=ln["fee_minor"].gather(dup_lines["li"]),
            related_id=s["settlement_id"].gather(dup_lines["si"]),
        )
    )
    dup_s = best.join(acc_multi, on="si", how="anti")
    parts.append(
        _duplicate_part(dup_s, "li").with_columns(
            amount_delta_minor=-s["amount_minor"].gather(dup_s["si"]),
            fee_delta_minor=-s["fee_minor"].gather(dup_s["si"]),
            related_id=ln["line_id"].gather(dup_s["best_li"]),
        )
    )
    return parts


def _duplicate_part(df: pl.DataFrame, missing_side: str) -> pl.DataFrame:
    """A tier-1 duplicate row for one side only (``missing_side`` is "si" or "li")."""
    return _part(
        df,
        **{missing_side: pl.lit(None)},
        tier=pl.lit(MatchTier.REFERENCE.value),
        outcome=pl.lit(Outcome.BREAK.value),
        break_class=pl.lit(BreakClass.DUPLICATE.value),
    )


def _tolerance_pairs(
    s_rest: pl.DataFrame, l_rest: pl.DataFrame, s: pl.DataFrame, ln: pl.DataFrame, tol: Tolerances
) -> pl.DataFrame:
    """Tier 2: mutual nearest pairs (li, si) within the amount tolerance and the match window.

    Candidates are looked up by (amount bucket, time bucket) and the neighbouring buckets, which contain every
    pair within tolerance; the filter after the join is exact.
    """
    window = _micros(tol.match_window)
    width = tol.amount_minor + 1
    s2 = s_rest.select("si", "provider", "currency", "amount_minor", "settled_at").with_columns(
        tb=pl.col("settled_at").dt.epoch("us") // window, ab=pl.col("amount_minor") // width
    )
    l2 = (
        l_rest.select("li", "provider", "currency", "amount_minor", "booked_at")
        .with_columns(
            tb=pl.concat_list([pl.col("booked_at").dt.epoch("us") // window + k for k in (-1, 0, 1)]),
            ab=pl.concat_list([pl.col("amount_minor") // width + k for k in (-1, 0, 1)]),
        )
        .explode("tb")
        .explode("ab")
    )
    pairs2 = (
        l2.join(s2, on=["provider", "currency", "tb", "ab"], suffix="_s")
        .with_columns(
            dt=(pl.col("booked_at") - pl.col("settled_at")).dt.total_microseconds().abs(),
            da=(pl.col("amount_minor") - pl.col("amount_minor_s")).abs(),
        )
        .filter((pl.col("dt") <= window) & (pl.col("da") <= tol.amount_minor))
        .select("li", "si", "dt", "da")
    )
    pairs2 = pairs2.with_columns(
        s["settlement_id"].gather(pairs2["si"]).alias("settlement_id"),
        ln["line_id"].gather(pairs2["li"]).alias("line_id"),
    )
    best_for_line = (
        pairs2.sort(["li", "dt", "da", "settlement_id"])
        .unique("li", keep="first", maintain_order=True)
        .select("li", "si")
    )
    best_for_s = (
        pairs2.sort(["si", "dt", "da", "line_id"])
        .unique("si", keep="first", maintain_order=True)
        .select("si", pl.col("li").alias("best_li"))
    )
    return best_for_line.join(best_for_s, on="si").filter(pl.col("best_li") == pl.col("li")).select("li", "si")


def _many_to_one_pairs(s_rest: pl.DataFrame, l_rest: pl.DataFrame, tol: Tolerances) -> pl.DataFrame:
    """Tier 3: one line per (provider, currency, counterparty, day) group of two or more settlements it sums."""
    key = ["provider", "currency", "counterparty", "day"]
    groups = (
        s_rest.filter(pl.col("counterparty").is_not_null())
        .with_columns(day=pl.col("settled_at").dt.date())
        .group_by(key)
        .agg(n=pl.len(), amount=pl.col("amount_minor").sum(), fee=pl.col("fee_minor").sum(), members=pl.col("si"))
        .filter(pl.col("n") >= 2)
    )
    return (
        l_rest.filter(pl.col("counterparty").is_not_null())
        .with_columns(day=pl.col("booked_at").dt.date())
        .select("li", "line_id", *key, "amount_minor", "fee_minor")
        .join(groups, on=key)
        .filter(
            ((pl.col("amount") - pl.col("amount_minor")).abs() <= pl.col("n") * tol.amount_minor)
            & ((pl.col("fee") - pl.col("fee_minor")).abs() <= pl.col("n") * tol.fee_minor)
        )
        .sort("line_id")
        .unique(key, keep="first", maintain_order=True)
        .select("li", pl.col("members").alias("si"))
        .explode("si")
    )


def _unmatched_settlements(s_rest: pl.DataFrame, grace_start: datetime, window_end: datetime) -> pl.DataFrame:
    """Settlements no tier matched: pending inside the cut-off grace, else missing at the provider."""
    in_grace_s = (pl.col("settled_at") >= grace_start) & (pl.col("settled_at") < window_end)
    return _part(
        s_rest,
        tier=pl.lit(MatchTier.NONE.value),
        outcome=pl.when(in_grace_s).then(pl.lit(Outcome.PENDING.value)).otherwise(pl.lit(Outcome.BREAK.value)),
        break_class=pl.when(in_grace_s)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit(BreakClass.MISSING_AT_PROVIDER.value)),
        amount_delta_minor=-pl.col("amount_minor"),
        fee_delta_minor=-pl.col("fee_minor"),
    )


def _unmatched_lines(
    l_rest: pl.DataFrame, prior: pl.DataFrame, grace_start: datetime, window_end: datetime
) -> pl.DataFrame:
    """Lines no tier matched: a duplicate of an earlier day's match, pending inside the grace, else missing."""
    prior_refs = (
        prior.filter(pl.col("provider_reference").is_not_null())
        .select(pl.col("provider").cast(pl.String), "provider_reference", prior_ref=pl.lit(True))
        .unique()
    )
    prior_ids = (
        prior.filter(pl.col("settlement_id").is_not_null())
        .select(pl.col("settlement_id").alias("our_reference"), prior_id=pl.lit(True))
        .unique()
    )
    lr = (
        l_rest.with_columns(provider_s=pl.col("provider").cast(pl.String))
        .join(prior_refs.rename({"provider": "provider_s"}), on=["provider_s", "provider_reference"], how="left")
        .join(prior_ids, on="our_reference", how="left")
    )
    is_dup = pl.col("prior_ref").fill_null(False) | pl.col("prior_id").fill_null(False)
    in_grace_l = (pl.col("booked_at") >= grace_start) & (pl.col("booked_at") < window_end)
    return _part(
        lr,
        tier=pl.when(is_dup).then(pl.lit(MatchTier.REFERENCE.value)).otherwise(pl.lit(MatchTier.NONE.value)),
        outcome=pl.when(is_dup)
        .then(pl.lit(Outcome.BREAK.value))
        .when(in_grace_l)
        .then(pl.lit(Outcome.PENDING.value))
        .otherwise(pl.lit(Outcome.BREAK.value)),
        break_class=pl.when(is_dup)
        .then(pl.lit(BreakClass.DUPLICATE.value))
        .when(in_grace_l)
        .then(pl.lit(None, pl.String))
        .otherwise(pl.lit(BreakClass.MISSING_INTERNALLY.value)),
        amount_delta_minor=pl.col("amount_minor"),
        fee_delta_minor=pl.col("fee_minor"),
        related_id=pl.when(pl.col("prior_id").fill_null(False))
        .then(pl.col("our_reference"))
        .when(is_dup)
        .then(pl.col("provider_reference"))
        .otherwise(pl.lit(None, pl.String)),
    )


def _assemble(parts: list[pl.DataFrame], s_ids: pl.Series, l_ids: pl.Series, compact: bool) -> pl.DataFrame:
    """All parts in one frame, row indices replaced by the settlement and line ids."""
    out = pl.concat([p.select(list(_PART_SCHEMA)) for p in parts], rechunk=False)
    parts.clear()  # the caller's list too: the parts are freed before the id strings are gathered
    out = out.select(
        s_ids.gather(out["si"]).alias("settlement_id"),
        l_ids.gather(out["li"]).alias("line_id"),
        "tier",
        "outcome",
        "break_class",
        "amount_delta_minor",
        "fee_delta_minor",
        "related_id",
    )
    if compact:
        return out
    return out.cast({"tier": pl.String, "outcome": pl.String, "break_class": pl.String})


# --------------------------------------------------------------------------- DuckDB engine


def run_match_sql(
    con: Any, settlements: Any, lines: Any, tol: Tolerances, window_end: datetime, prior: Any = None
) -> None:
    """Run ``sql/recon/match.sql``; results are left in the temp table ``m_results``.

    Inputs are frames DuckDB can scan, or SQL text (e.g. ``SELECT * FROM read_parquet('...')``).
    """
    inputs = {
        "m_settlements_in": settlements,
        "m_lines_in": lines,
        "m_prior_in": prior if prior is not None else MatchInputs.empty_prior(),
    }
    registered = []
    for name, value in inputs.items():
        if isinstance(value, str):
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {value}")
        else:
            con.register(name, value)
            registered.append(name)
    params = {
        "amount_tol": tol.amount_minor,
        "fee_tol": tol.fee_minor,
        "fx_ppm": tol.fx_rate_ppm,
        "window_us": _micros(tol.match_window),
        "grace_us": _micros(tol.cutoff_grace),
        "window_end": window_end,
    }
    try:
        for statement in render_file("recon/match.sql"):
            con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})
    finally:
        for name in registered:
            con.unregister(name)


def match_duckdb(
    con: Any, settlements: Any, lines: Any, tol: Tolerances, window_end: datetime, prior: Any = None
) -> pl.DataFrame:
    """The DuckDB engine: ``sql/recon/match.sql`` over the given frames/relations."""
    run_match_sql(con, settlements, lines, tol, window_end, prior)
    return con.sql("SELECT * FROM m_results").pl().cast(RESULT_SCHEMA)  # type: ignore[no-any-return]


def reference_results(
    settlements: pl.DataFrame,
    lines: pl.DataFrame,
    tol: Tolerances,
    window_end: datetime,
    prior: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The pure rules over the same frames (for tests and small samples)."""
    prior_m = prior_from_frame(prior) if prior is not None else None
    return results_frame(
        vr.reconcile(settlements_from_frame(settlements), lines_from_frame(lines), tol, window_end, prior_m)
    )


__all__ = [
    "LINE_SCHEMA",
    "RESULT_SCHEMA",
    "SETTLEMENT_SCHEMA",
    "Decimal",
    "match_duckdb",
    "match_polars",
    "reference_results",
]
