"""Benchmark: full variance analysis of N settlements against their provider statements.

    nice python bench/bench_reconciliation.py                 # 10,000,000 settlements, both engines
    python bench/bench_reconciliation.py --rows 200000        # quick

Phases (each engine runs in its own process so its peak RSS is its own):

1. generate (not timed): seeded settlements and statement lines as Parquet under .local/bench/, with injected
   breaks of every class (0.05% each), tier-2 lines without references (1%), batched payouts (many-to-one)
   and cut-off pending items;
2. variance analysis (timed): read Parquet -> match in tiers -> classify -> §6.2 metrics -> write results;
   the match+classify step is timed on its own too, for DuckDB and Polars side by side;
3. check: the injected breaks are found with the right class (the run fails otherwise).

Targets: full analysis <= 60 s and peak RSS <= 4 GB on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from domain.variance_rules import MATCHING_BREAKS, Tolerances  # noqa: E402
from warehouse.matching import RATE_DTYPE, match_polars, run_match_sql  # noqa: E402

DAY = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW_END = DAY + timedelta(days=1)
PROVIDERS = ["STRIPE", "TOSS", "WISE", "PAYPAL", "ALIPAY"]
CURRENCIES = {
    "STRIPE": ["USD", "EUR", "SGD", "AUD", "HKD"],
    "TOSS": ["KRW"],
    "WISE": ["EUR", "GBP", "USD"],
    "PAYPAL": ["USD", "EUR", "GBP", "AUD"],
    "ALIPAY": ["HKD", "USD"],
}
BASE_RATE_E10 = {
    "USD": 1_500_000_000,
    "EUR": 1_380_000_000,
    "GBP": 1_180_000_000,
    "SGD": 2_010_000_000,
    "AUD": 2_290_000_000,
    "HKD": 11_700_000_000,
    "KRW": 2_035_000_000_000,
}
FX_PLACES = {"WISE": 6, "ALIPAY": 8}
CLASSES = [c.value for c in MATCHING_BREAKS]


def _ids(prefix: str, n: int, offset: int = 0) -> pl.Expr:
    return pl.concat_str(pl.lit(prefix), (pl.int_range(n, dtype=pl.Int64) + offset).cast(pl.String).str.zfill(9))


def generate(rows: int, out: Path, seed: int = 42) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    n = rows
    prov_idx = rng.choice(len(PROVIDERS), size=n, p=[0.45, 0.22, 0.13, 0.12, 0.08])
    provider = np.array(PROVIDERS)[prov_idx]
    currency = np.empty(n, dtype="<U3")
    for i, p in enumerate(PROVIDERS):
        mask = prov_idx == i
        currency[mask] = rng.choice(CURRENCIES[p], size=int(mask.sum()))
    amount = np.maximum(1, (10 ** rng.uniform(2.7, 5.3, n))).astype(np.int64)
    amount = np.where(currency == "KRW", amount * 15, amount)
    fee = amount * 80 // 10_000 + 1
    ccy_codes = sorted(BASE_RATE_E10)
    base_by_code = np.array([BASE_RATE_E10[c] for c in ccy_codes], dtype=np.int64)
    base = base_by_code[np.searchsorted(ccy_codes, currency)]
    rate_e10 = (base * (1 + rng.normal(0, 0.001, n))).astype(np.int64)
    # settle between 00:00 and 23:00; the last 0.2% just before midnight (cut-off pending)
    secs = rng.uniform(60, 82_800, n)
    late = rng.random(n) < 0.002
    secs = np.where(late, rng.uniform(86_400 - 1_500, 86_340, n), secs)
    settled_us = (DAY.timestamp() * 1e6 + secs * 1e6).astype(np.int64)

    # roles: 0 normal, 1 tier2, 2 batch member, 3.. injected classes (settlement side)
    u = rng.random(n)
    role = np.zeros(n, dtype=np.int8)
    role[(u < 0.01) & ~late] = 1
    per_class = 0.0005
    cuts = 0.01
    for k, cls in enumerate(
        ["missing_at_provider", "amount_variance", "fee_variance", "fx_variance", "duplicate", "timing"]
    ):
        sel = (u >= cuts) & (u < cuts + per_class) & ~late
        if cls == "fx_variance":
            sel &= np.isin(provider, ["WISE", "ALIPAY"])
            sel |= (
                (u >= cuts) & (u < cuts + per_class * 4) & ~late & np.isin(provider, ["WISE", "ALIPAY"]) & (role == 0)
            )
        role[sel & (role == 0)] = 3 + k
        cuts += per_class * (4 if cls == "fx_variance" else 1)
    # batch members: payouts of PAYPAL/WISE grouped 4 per batch account
    batch_pool = np.flatnonzero((role == 0) & np.isin(provider, ["PAYPAL", "WISE"]) & ~late)[: n // 1000 * 4]
    role[batch_pool] = 2
    counterparty_no = rng.integers(0, 50_000, n)
    batch_no = np.full(n, -1)
    batch_no[batch_pool] = np.arange(len(batch_pool)) // 4
    # a batch shares provider and currency
    first = batch_pool[::4]
    for j in range(4):
        idx = batch_pool[j::4]
        provider[idx] = provider[first[: len(idx)]]
        currency[idx] = currency[first[: len(idx)]]
    rate_e10[batch_pool] = base_by_code[np.searchsorted(ccy_codes, currency[batch_pool])]
    # batch members live in their own amount range so a batch total never sits within tolerance of a single
    # settlement (tier 2 runs before many-to-one and would otherwise, correctly, pair them)
    amount[batch_pool] = 30_000_000 + rng.integers(0, 1_000_000, len(batch_pool))
    fee[batch_pool] = amount[batch_pool] * 80 // 10_000 + 1
    # tier-2 items (no references) get distinct amounts, far from every other population, so the tolerance
    # tier's nearest-pair choice is unambiguous: the benchmark checks classification, not the tie-breaks
    tier2 = np.flatnonzero(role == 1)
    amount[tier2] = 50_000_000 + 7 * np.arange(len(tier2))
    fee[tier2] = amount[tier2] * 80 // 10_000 + 1
    # timing: settled in the evening, booked after 00:30 next day; they are carried from the previous day
    timing = role == 8
    settled_us = np.where(timing, settled_us - int(86_400e6), settled_us)

    s = pl.DataFrame(
        {
            "i": np.arange(n),
            "provider": provider,
            "currency": currency,
            "amount_minor": amount,
            "fee_minor": fee,
            "rate_e10": rate_e10,
            "settled_us": settled_us,
            "role": role,
            "cp_no": counterparty_no,
            "batch_no": batch_no,
        }
    ).with_columns(
        counterparty=pl.when(pl.col("batch_no") >= 0)
        .then(pl.concat_str(pl.lit("BATCH"), pl.col("batch_no").cast(pl.String).str.zfill(7)))
        .otherwise(pl.concat_str(pl.lit("M"), pl.col("cp_no").cast(pl.String).str.zfill(6))),
        settlement_id=_ids("S", n),
        provider_reference=pl.when(pl.col("role").is_in([1, 2]))
        .then(None)
        .otherwise(pl.concat_str(pl.lit("P"), pl.col("i").cast(pl.String).str.zfill(9))),
        fx_rate=(pl.col("rate_e10").cast(RATE_DTYPE) / pl.lit(10**10)).cast(RATE_DTYPE),
        settled_at=pl.from_epoch("settled_us", time_unit="us").dt.replace_time_zone("UTC"),
    )
    settlements = s.select(
        "settlement_id",
        "provider",
        "provider_reference",
        "counterparty",
        "currency",
        "amount_minor",
        "fee_minor",
        "fx_rate",
        "settled_at",
    )

    # ---- provider lines
    lag_us = rng.uniform(0.2e6, 90e6, n).astype(np.int64)
    booked = settled_us + lag_us
    booked = np.where(late, settled_us + rng.uniform(61e6, 1_700e6, n).astype(np.int64), booked)
    booked = np.where(
        timing,
        int(WINDOW_END.timestamp() * 1e6) - int(86_400e6) + rng.uniform(2_000e6, 9_000e6, n).astype(np.int64),
        booked,
    )
    booked = np.where(role == 1, settled_us + rng.uniform(1e6, 300e6, n).astype(np.int64), booked)
    fee_noise = np.where(rng.random(n) < 0.2, rng.choice([-1, 1], n), 0)
    l_amount = amount.copy()
    l_fee = fee + fee_noise
    l_amount = np.where(role == 4, amount + np.maximum(3, amount // 50), l_amount)
    l_fee = np.where(role == 5, fee + np.maximum(3, fee // 5 + 3), l_fee)
    fx_places = np.select([provider == p for p in FX_PLACES], list(FX_PLACES.values()), -1)
    step = np.where(fx_places > 0, 10 ** (10 - np.maximum(fx_places, 0)), 1)
    l_rate = np.where(fx_places > 0, (rate_e10 + step // 2) // step * step, 0)
    bad = role == 6
    l_rate = np.where(bad, (rate_e10 * 1.005).astype(np.int64) // step * step, l_rate)
    l_amount = np.where(bad, (amount * 1.005).astype(np.int64), l_amount)
    ln = pl.DataFrame(
        {
            "i": np.arange(n),
            "provider": provider,
            "currency": currency,
            "amount_minor": l_amount,
            "fee_minor": l_fee,
            "l_rate": l_rate,
            "has_fx": fx_places > 0,
            "booked_us": booked,
            "role": role,
        }
    ).filter(~pl.col("role").is_in([2, 3]))  # batch members get one line per batch; missing_at_provider none
    lines = ln.with_columns(
        line_id=pl.concat_str(pl.col("provider"), pl.lit(":2026-11-01:P"), pl.col("i").cast(pl.String).str.zfill(9)),
        provider_reference=pl.concat_str(pl.lit("P"), pl.col("i").cast(pl.String).str.zfill(9)),
        our_reference=pl.when(pl.col("role") == 1)
        .then(None)
        .otherwise(pl.concat_str(pl.lit("S"), pl.col("i").cast(pl.String).str.zfill(9))),
        counterparty=pl.lit(None, pl.String),
        fx_rate=pl.when(pl.col("has_fx")).then((pl.col("l_rate").cast(RATE_DTYPE) / pl.lit(10**10)).cast(RATE_DTYPE)),
        booked_at=pl.from_epoch("booked_us", time_unit="us").dt.replace_time_zone("UTC"),
    )
    dups = lines.filter(pl.col("role") == 7).with_columns(
        line_id=pl.col("line_id") + "#2", booked_at=pl.col("booked_at") + pl.duration(minutes=5)
    )
    ghosts_n = int(n * per_class)
    ghosts = pl.DataFrame(
        {
            "provider": rng.choice(PROVIDERS, ghosts_n),
            "amount_minor": rng.integers(10_000_000, 20_000_000, ghosts_n),
            "fee_minor": rng.integers(1, 100, ghosts_n),
            "booked_us": (DAY.timestamp() * 1e6 + rng.uniform(600, 80_000, ghosts_n) * 1e6).astype(np.int64),
        }
    ).with_columns(
        line_id=_ids("GHOST:", ghosts_n),
        provider_reference=_ids("G", ghosts_n),
        our_reference=pl.lit(None, pl.String),
        counterparty=pl.lit(None, pl.String),
        currency=pl.lit("USD"),
        fx_rate=pl.lit(None, RATE_DTYPE),
        booked_at=pl.from_epoch("booked_us", time_unit="us").dt.replace_time_zone("UTC"),
    )
    batch_lines = (
        s.filter(pl.col("role") == 2)
        .group_by("counterparty", "provider", "currency")
        .agg(
            amount_minor=pl.col("amount_minor").sum(),
            fee_minor=pl.col("fee_minor").sum(),
            booked_at=pl.col("settled_at").max() + pl.duration(minutes=5),
        )
        .with_columns(
            line_id=pl.concat_str(pl.lit("BATCHLINE:"), pl.col("counterparty")),
            provider_reference=pl.concat_str(pl.lit("B"), pl.col("counterparty")),
            our_reference=pl.lit(None, pl.String),
            fx_rate=pl.lit(None, RATE_DTYPE),
        )
    )
    cols = [
        "line_id",
        "provider",
        "provider_reference",
        "our_reference",
        "counterparty",
        "currency",
        "amount_minor",
        "fee_minor",
        "fx_rate",
        "booked_at",
    ]
    all_lines = pl.concat([lines.select(cols), dups.select(cols), ghosts.select(cols), batch_lines.select(cols)])
    out.mkdir(parents=True, exist_ok=True)
    settlements.write_parquet(out / "settlements.parquet")
    all_lines.write_parquet(out / "lines.parquet")
    expected = {
        "missing_at_provider": int((role == 3).sum()),
        "amount_variance": int((role == 4).sum()),
        "fee_variance": int((role == 5).sum()),
        "fx_variance": int((role == 6).sum()),
        "duplicate": int((role == 7).sum()),
        "timing": int((role == 8).sum()),
        "missing_internally": ghosts_n,
        "many_to_one_settlements": int((role == 2).sum()),
        "tier2": int((role == 1).sum()),
        "settlements": n,
        "lines": all_lines.height,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1))
    return expected


def metrics(results: pl.DataFrame) -> dict[str, object]:
    # every settlement is on exactly one result row, so counting rows counts settlements
    has_s = pl.col("settlement_id").is_not_null()
    s_total = results.select((has_s & (pl.col("outcome") != "pending")).sum()).item()
    matched = results.select((has_s & (pl.col("outcome") == "matched")).sum()).item()
    breaks = results.filter(pl.col("outcome") == "break")
    by_class = dict(breaks.group_by("break_class").len().iter_rows())
    tiers = dict(results.filter(pl.col("outcome") == "matched").group_by("tier").len().iter_rows())
    return {
        "settlements": s_total,
        "auto_matched": matched,
        "automatic_match_rate": round(matched / s_total, 6),
        "exceptions": breaks.height,
        "pending": results.filter(pl.col("outcome") == "pending").height,
        "breaks_by_class": by_class,
        "matched_by_tier": tiers,
    }


SQL_METRICS = """
SELECT
    (SELECT count(*) FROM m_results WHERE settlement_id IS NOT NULL AND outcome <> 'pending') AS settlements,
    (SELECT count(*) FROM m_results WHERE settlement_id IS NOT NULL AND outcome = 'matched') AS auto_matched,
    (SELECT count(*) FROM m_results WHERE outcome = 'break') AS exceptions,
    (SELECT count(*) FROM m_results WHERE outcome = 'pending') AS pending
"""


def run(engine: str, data: Path) -> dict[str, object]:
    tol = Tolerances()
    vocab = pl.Enum(sorted(set(PROVIDERS) | {c for cs in CURRENCIES.values() for c in cs}))
    t0 = time.perf_counter()
    if engine == "polars":

        def read(name: str) -> pl.DataFrame:
            return (
                pl.scan_parquet(data / name)
                .with_columns(pl.col("provider").cast(vocab), pl.col("currency").cast(vocab))
                .collect()
            )

        inputs = [read("settlements.parquet"), read("lines.parquet")]
        t_read = time.perf_counter()
        # hand the frames over (no other reference) so the engine can free columns it no longer needs
        results = match_polars(inputs.pop(0), inputs.pop(0), tol, WINDOW_END, compact=True)
        t_match = time.perf_counter()
        m = metrics(results)
        results.write_parquet(data / "results_polars.parquet", compression="lz4")
    else:
        import duckdb

        con = duckdb.connect(str(data / "bench.duckdb.tmp"))
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET threads = 2")
        con.execute("SET memory_limit = '3GB'")
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"SET temp_directory = '{data / 'duckdb_spill'}'")
        t_read = time.perf_counter()  # DuckDB scans the Parquet inside the match
        run_match_sql(
            con,
            f"SELECT * FROM read_parquet('{data / 'settlements.parquet'}')",
            f"SELECT * FROM read_parquet('{data / 'lines.parquet'}')",
            tol,
            WINDOW_END,
        )
        t_match = time.perf_counter()
        row = con.execute(SQL_METRICS).fetchall()[0]
        by_class = dict(
            con.execute("SELECT break_class, count(*) FROM m_results WHERE outcome = 'break' GROUP BY ALL").fetchall()
        )
        tiers = dict(
            con.execute("SELECT tier, count(*) FROM m_results WHERE outcome = 'matched' GROUP BY ALL").fetchall()
        )
        m = {
            "settlements": row[0],
            "auto_matched": row[1],
            "automatic_match_rate": round(row[1] / row[0], 6),
            "exceptions": row[2],
            "pending": row[3],
            "breaks_by_class": by_class,
            "matched_by_tier": tiers,
        }
        con.execute(f"COPY m_results TO '{data / 'results_duckdb.parquet'}' (FORMAT parquet, COMPRESSION lz4)")
        con.close()
        (data / "bench.duckdb.tmp").unlink(missing_ok=True)
    t_end = time.perf_counter()
    expected = json.loads((data / "expected.json").read_text())
    wrong = {
        c: (m["breaks_by_class"].get(c, 0), expected[c])
        for c in CLASSES  # type: ignore[attr-defined]
        if m["breaks_by_class"].get(c, 0) != expected[c]
    }  # type: ignore[attr-defined]
    return {
        "engine": engine,
        "rows": expected["settlements"],
        "lines": expected["lines"],
        "read_s": round(t_read - t0, 2),
        "match_classify_s": round(t_match - t_read, 2),
        "metrics_write_s": round(t_end - t_match, 2),
        "total_s": round(t_end - t0, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "metrics": m,
        "class_mismatches": wrong,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--data", type=Path, default=REPO / ".local" / "bench" / "recon")
    ap.add_argument("--engine", choices=["polars", "duckdb", "both"], default="both")
    ap.add_argument("--phase", choices=["all", "generate", "run"], default="all")
    ap.add_argument("--json", type=Path, default=None, help="append results to this JSON-lines file")
    args = ap.parse_args()
    data = args.data / str(args.rows)
    if args.phase in ("all", "generate"):
        if not (data / "expected.json").exists():
            t = time.perf_counter()
            exp = generate(args.rows, data)
            print(
                f"generated {exp['settlements']:,} settlements / {exp['lines']:,} lines in "
                f"{time.perf_counter() - t:.1f}s -> {data}",
                flush=True,
            )
        if args.phase == "generate":
            return 0
    if args.phase == "run":
        out = run(args.engine, data)
        print(json.dumps(out, default=str))
        return 0
    ok = True
    for engine in ["polars", "duckdb"] if args.engine == "both" else [args.engine]:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--rows",
                str(args.rows),
                "--data",
                str(args.data),
                "--engine",
                engine,
                "--phase",
                "run",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        status = "OK" if out["total_s"] <= 60 and out["peak_rss_mb"] <= 4096 and not out["class_mismatches"] else "FAIL"
        ok &= status == "OK"
        print(
            f"{engine:7s} total {out['total_s']:6.2f}s (read {out['read_s']}s, match+classify "
            f"{out['match_classify_s']}s, metrics+write {out['metrics_write_s']}s)  peak RSS "
            f"{out['peak_rss_mb']:.0f} MB  match rate {out['metrics']['automatic_match_rate']}  "
            f"breaks {out['metrics']['breaks_by_class']}  mismatches {out['class_mismatches'] or 'none'}  "
            f"[{status}]",
            flush=True,
        )
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(out) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
