"""The daily reconciliation steps (spec §6.1), each idempotent per recon day.

The Airflow DAG calls one function per task; the demo and the tests call :func:`run_day`. Every step opens
the warehouse, does its work in DuckDB/Polars and returns a small JSON-able summary (the task's XCom).
"""

from __future__ import annotations

import json
import logging
import time as _time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
from confluent_kafka import KafkaException

from domain.variance_rules import LEDGER_BREAKS, BreakClass, MatchTier, Outcome, ReconMetrics, compute_metrics
from streams.settings import get_settings
from warehouse import exceptions as exc_queue
from warehouse import outbox, quality
from warehouse.corrections import read_multisig
from warehouse.db import publish, query, run_sql_file, warehouse
from warehouse.matching import RESULT_SCHEMA, match_duckdb, match_polars, results_from_frame
from warehouse.provider_sync import sync_statements
from warehouse.report import ReportData, archive, render_pdf, send_email, sha256
from warehouse.settings import ReconSettings, day_bounds, get_recon_settings, recon_day_for
from warehouse.snapshot_loader import load_jsonl_day, load_kafka_window
from warehouse.sqlrunner import build_models

log = logging.getLogger("nexus.recon")


def _settings(settings: ReconSettings | None) -> ReconSettings:
    return settings or get_recon_settings()


# --------------------------------------------------------------------------- 01:00 snapshot


def snapshot(day: date, settings: ReconSettings | None = None) -> dict[str, Any]:
    """Land the day's records: from Kafka, the window ``settings.snapshot_window(day)`` by record timestamp (the
    rule is in warehouse/snapshot_loader.py); from JSONL exports, the day's folder. Re-running it adds nothing."""
    s = _settings(settings)
    window: list[str] | None = None
    started = _time.perf_counter()
    with warehouse(s.warehouse_path) as con:
        if s.snapshot_source == "kafka":
            start, end = s.snapshot_window(day)
            window = [start.isoformat(), end.isoformat()]
            stats = load_kafka_window(
                con,
                start,
                end,
                bootstrap_servers=s.kafka_bootstrap_servers,
                group_id=s.kafka_group_id,
                poll_timeout_s=s.kafka_poll_timeout_s,
                late_minutes=s.snapshot_late_minutes,
            )
        else:
            stats = load_jsonl_day(con, s.inbox, day)
        models = build_models(con)
    return {
        "recon_date": day.isoformat(),
        "source": s.snapshot_source,
        "window": window,
        **stats.as_dict(),
        "seconds": round(_time.perf_counter() - started, 3),
        "models": len(models),
    }


# --------------------------------------------------------------------------- 02:00 provider sync


def provider_sync(day: date, settings: ReconSettings | None = None) -> dict[str, Any]:
    """Each provider's report for the day, through its report API or from its statement file
    (``settings.provider_report_source``); the API clients' settings are the bridge's (``NEXUS_PROVIDER_*``)."""
    s = _settings(settings)
    source = s.provider_report_source
    with warehouse(s.warehouse_path) as con:
        imports = sync_statements(con, s.statements, day, source)
    return {"recon_date": day.isoformat(), "source": source, "statements": [i.__dict__ for i in imports]}


# --------------------------------------------------------------------------- data quality gate


def data_quality(day: date, settings: ReconSettings | None = None, alert_client: Any = None) -> dict[str, Any]:
    s = _settings(settings)
    with warehouse(s.warehouse_path) as con:
        build_models(con)
        results = quality.run_checks(con, day, cutoff_grace=s.tolerances().cutoff_grace)
        quality.store_results(con, day, results)
    url = s.alertmanager_url
    if url is None and s.alert_on_critical:
        url = get_settings().alertmanager_url
    quality.raise_on_critical(day, results, url if s.alert_on_critical else None, client=alert_client)
    return {
        "recon_date": day.isoformat(),
        "checks": len(results),
        "failed": [f"{r.suite}.{r.target}" for r in results if not r.success],
    }


# --------------------------------------------------------------------------- 03:00 variance analysis


def variance(day: date, settings: ReconSettings | None = None) -> dict[str, Any]:
    s = _settings(settings)
    tol = s.tolerances()
    params = {
        "recon_date": day,
        "carry_start": day - timedelta(days=s.carry_forward_days),
        "ledger_breaks": sorted(c.value for c in LEDGER_BREAKS),
    }
    _, window_end = day_bounds(day)
    with warehouse(s.warehouse_path) as con:
        settlements = run_sql_file(con, "recon/inputs_settlements.sql", params)
        lines = run_sql_file(con, "recon/inputs_lines.sql", params)
        prior = run_sql_file(con, "recon/inputs_prior.sql", params)
        assert settlements is not None and lines is not None and prior is not None
        started = _time.perf_counter()
        if s.engine == "duckdb":
            results = match_duckdb(con, settlements, lines, tol, window_end, prior)
        else:
            results = match_polars(settlements, lines, tol, window_end, prior)
        elapsed = _time.perf_counter() - started
        ledger = _ledger_breaks(con, day, results.schema)
        results = pl.concat([results, ledger])
        enriched = _with_provider_and_currency(results, settlements, lines, day)
        audit = con.execute(
            "SELECT count(*) FILTER (WHERE has_audit), count(*) FROM fct_settlements"
            " WHERE settled_date = $d AND status = 'completed'",
            {"d": day},
        ).fetchall()[0]
        metrics = compute_metrics(results_from_frame(results), int(audit[0]), int(audit[1]))
        _store_variance(con, day, s, enriched, metrics)
    return {
        "recon_date": day.isoformat(),
        "engine": s.engine,
        "match_seconds": round(elapsed, 3),
        "settlements_in": settlements.height,
        "lines_in": lines.height,
        "settlements": metrics.settlements,
        "auto_matched": metrics.auto_matched,
        "exceptions": metrics.exceptions,
        "pending": metrics.pending,
        "ledger_breaks": ledger.height,
        "automatic_match_rate": str(metrics.automatic_match_rate),
        "exception_rate": str(metrics.exception_rate),
        "audit_trail_coverage": str(metrics.audit_trail_coverage),
        "breaks_by_class": {str(k): v for k, v in metrics.breaks_by_class.items()},
    }


def _ledger_breaks(con: Any, day: date, schema: pl.Schema) -> pl.DataFrame:
    """The day's ledger breaks (``sql/recon/inputs_ledger_breaks.sql``) as result rows of the engines' schema."""
    params = {
        "recon_date": day,
        "tier": MatchTier.NONE.value,
        "outcome": Outcome.BREAK.value,
        "break_class": BreakClass.CAPTURE_REFUSED.value,
    }
    rows = run_sql_file(con, "recon/inputs_ledger_breaks.sql", params)
    assert rows is not None
    return rows.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def _with_provider_and_currency(
    results: pl.DataFrame, settlements: pl.DataFrame, lines: pl.DataFrame, day: date
) -> pl.DataFrame:
    """The engine's rows plus provider and currency from either side, as ``recon_results`` stores them."""
    return (
        results.join(
            settlements.select("settlement_id", s_provider="provider", s_currency="currency"),
            on="settlement_id",
            how="left",
        )
        .join(lines.select("line_id", l_provider="provider", l_currency="currency"), on="line_id", how="left")
        .with_columns(
            provider=pl.coalesce("s_provider", "l_provider"), currency=pl.coalesce("s_currency", "l_currency")
        )
        .select(pl.lit(day).alias("recon_date"), *RESULT_SCHEMA, "provider", "currency")
        .unique(subset=["settlement_id", "line_id", "break_class"], keep="first")
        .sort(["settlement_id", "line_id"], nulls_last=True)
    )


def _store_variance(con: Any, day: date, s: ReconSettings, enriched: pl.DataFrame, metrics: ReconMetrics) -> None:
    """Replace the day's results and run row in one transaction, so a re-run never leaves half a day."""
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM recon_results WHERE recon_date = $d", {"d": day})
        con.register("day_results", enriched)
        con.execute("INSERT INTO recon_results SELECT * FROM day_results")
        con.unregister("day_results")
        con.execute(
            "INSERT OR REPLACE INTO recon_runs VALUES ($d, $engine, $n, $auto, $exc, $pend, $amr, $er, $atc,"
            " $by_class, $tol)",
            {
                "d": day,
                "engine": s.engine,
                "n": metrics.settlements,
                "auto": metrics.auto_matched,
                "exc": metrics.exceptions,
                "pend": metrics.pending,
                "amr": metrics.automatic_match_rate,
                "er": metrics.exception_rate,
                "atc": metrics.audit_trail_coverage,
                "by_class": json.dumps({str(k): v for k, v in metrics.breaks_by_class.items()}),
                "tol": json.dumps(_tolerance_doc(s)),
            },
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _tolerance_doc(s: ReconSettings) -> dict[str, Any]:
    return {
        "amount_minor": s.amount_tolerance_minor,
        "fee_minor": s.fee_tolerance_minor,
        "fx_ppm": s.fx_tolerance_ppm,
        "match_window_min": s.match_window_minutes,
        "cutoff_grace_min": s.cutoff_grace_minutes,
    }


# --------------------------------------------------------------------------- 04:00 exception review


def exception_review(day: date, settings: ReconSettings | None = None) -> dict[str, Any]:
    """Open, reclassify, auto-resolve and age the exceptions; close the ledger corrections governance decided
    (governance.multisig, read only when some wait and the platform's Kafka is used)."""
    s = _settings(settings)
    unread = None
    with warehouse(s.warehouse_path) as con:
        try:
            outcomes = governance_outcomes(con, s)
        except (RuntimeError, TimeoutError, KafkaException) as exc:  # the corrections wait for the next review
            log.warning("governance.multisig not read, corrections stay open: %s", exc)
            outcomes, unread = {}, str(exc)
        summary = exc_queue.sync_exceptions(con, day, outcomes)
    return {"recon_date": day.isoformat(), **summary.__dict__, "governance_unread": unread}


def governance_outcomes(con: Any, s: ReconSettings) -> dict[str, Any]:
    """governance.multisig's latest state of each correction that waits (none read without a platform)."""
    waiting = exc_queue.waiting_corrections(con)
    if not waiting or not s.talks_to_platform:
        return {}
    return read_multisig(s.bootstrap, waiting, s.multisig_read_timeout_s)


def publish_outbox(day: date | None = None, settings: ReconSettings | None = None) -> dict[str, Any]:
    """Send the queued governance requests and audit records (warehouse.outbox); the DAG runs it right after the
    review, in the same task. Without a platform (seeded exports) they stay queued and are only counted."""
    s = _settings(settings)
    with warehouse(s.warehouse_path) as con:
        if not s.talks_to_platform:
            requests, audits = outbox.queued(con)
            return {"requests_sent": 0, "audits_sent": 0, "requests_queued": requests, "audits_queued": audits,
                    "error": "no platform Kafka (NEXUS_RECON_PLATFORM_KAFKA): kept queued"}  # fmt: skip
        done = outbox.publish(con, s.bootstrap, s.publish_timeout_s)
    return {**asdict(done), "recon_date": None if day is None else day.isoformat()}


# --------------------------------------------------------------------------- 05:00 report


def report_data(con: Any, day: date, s: ReconSettings) -> ReportData:
    runs = query(con, "SELECT * FROM recon_runs WHERE recon_date = $d", {"d": day}).to_dicts()
    if not runs:
        raise RuntimeError(f"no variance analysis for {day}: run the variance step (03:00) first")
    daily = query(con, "SELECT * FROM mart_recon_daily WHERE recon_date = $d", {"d": day}).to_dicts()[0]
    trend = query(
        con,
        "SELECT recon_date, automatic_match_rate, exceptions FROM recon_runs"
        " WHERE recon_date <= $d AND recon_date > $start ORDER BY recon_date",
        {"d": day, "start": day - timedelta(days=s.trend_days)},
    ).to_dicts()
    totals = query(
        con,
        "SELECT kind, currency, count(*) AS settlements, sum(amount_minor) AS amount_minor,"
        " sum(fee_minor) AS fee_minor FROM fct_settlements"
        " WHERE settled_date = $d AND status = 'completed' GROUP BY kind, currency"
        " ORDER BY list_position(['bridge', 'payout', 'trade'], kind), currency",
        {"d": day},
    ).to_dicts()
    queue = query(con, "SELECT * FROM mart_exception_queue WHERE opened_on <= $d LIMIT 12", {"d": day}).to_dicts()
    dq = query(
        con, "SELECT * FROM dq_results WHERE recon_date = $d ORDER BY suite, expectation, target", {"d": day}
    ).to_dicts()
    hours = daily.get("avg_resolution_hours")
    ledger, holds = _ledger_report(con, day, s)
    return ReportData(
        recon_date=day,
        run=runs[0],
        resolution_hours=None if hours is None else Decimal(str(hours)),
        open_exceptions=int(daily.get("open_exceptions") or 0),
        totals=[{**t, "amount_minor": int(t["amount_minor"]), "fee_minor": int(t["fee_minor"])} for t in totals],
        breaks_by_class={k: int(v) for k, v in json.loads(runs[0]["breaks_by_class"]).items()},
        trend=trend,
        queue=queue,
        dq=dq,
        engine=runs[0]["engine"],
        tolerances=", ".join(f"{k}={v}" for k, v in json.loads(runs[0]["tolerances"]).items()),
        ledger=ledger,
        open_holds=holds,
    )


def _ledger_report(con: Any, day: date, s: ReconSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The day's ledger tie-out per currency as of its cut-off (what the critical check saw, plus what it reports
    without breaking: holds open, movements in flight, captures refused) and the oldest holds open then."""
    _, cutoff = day_bounds(day)
    tie = query(
        con,
        "SELECT currency, CAST(sum(COLUMNS(* EXCLUDE (day, currency))) AS BIGINT)"
        " FROM mart_ledger_tieout_as_of($cutoff, $grace) WHERE day = $d OR currency = 'UNKNOWN'"
        " GROUP BY currency ORDER BY currency = 'UNKNOWN', currency",
        {"cutoff": cutoff, "grace": s.tolerances().cutoff_grace, "d": day},
    )
    holds = query(
        con,
        "SELECT hold_id, settlement_kind, settlement_ref, held_kaus_units, placed_at"
        " FROM mart_ledger_open_holds_as_of($cutoff) ORDER BY placed_at, hold_id LIMIT 10",
        {"cutoff": cutoff},
    )
    return tie.to_dicts(), holds.to_dicts()


def report(day: date, settings: ReconSettings | None = None, send: bool = True) -> dict[str, Any]:
    s = _settings(settings)
    with warehouse(s.warehouse_path) as con:
        data = report_data(con, day, s)
        pdf = render_pdf(data, s.reports / f"recon-{day.isoformat()}.pdf")
        digest = sha256(pdf)
        archived = archive(pdf, s.archive, day)
        already = con.execute(
            "SELECT count(*) FROM report_deliveries WHERE recon_date = $d AND sha256 = $h", {"d": day, "h": digest}
        ).fetchall()[0][0]
        sent = False
        summary = (
            f"match rate {Decimal(str(data.run['automatic_match_rate'])) * 100:.2f}%, "
            f"{data.run['exceptions']} exceptions, {data.open_exceptions} open"
        )
        if send and not already:
            send_email(
                pdf,
                day,
                summary,
                host=s.smtp_host,
                port=s.smtp_port,
                sender=s.report_from,
                to=s.report_to,
                starttls=s.smtp_starttls,
                user=s.smtp_user,
                password=s.smtp_password,
            )
            con.execute(
                "INSERT INTO report_deliveries VALUES ($d, $h, $p, $a, $to, $at)",
                {"d": day, "h": digest, "p": str(pdf), "a": str(archived), "to": s.report_to, "at": datetime.now(UTC)},
            )
            sent = True
    published = publish(s.warehouse_path)  # readers' copy (warehouse/db.py says why)
    return {
        "recon_date": day.isoformat(),
        "pdf": str(pdf),
        "archived": str(archived),
        "sha256": digest,
        "emailed": sent,
        "already_sent": bool(already),
        "summary": summary,
        "published": str(published),
    }


# --------------------------------------------------------------------------- everything, in process


# The nightly steps in the DAG's order; each takes (day, settings) and reads what the previous ones wrote.
STEPS: tuple[str, ...] = ("snapshot", "provider_sync", "data_quality", "variance", "exception_review", "report")


def run_step(
    name: str, day: date, settings: ReconSettings | None = None, *, send: bool = True, alert_client: Any = None
) -> Any:
    """One step of `STEPS` (``send``: mail the report; ``alert_client``: where data-quality alerts go)."""
    s = _settings(settings)
    if name == "data_quality":
        return data_quality(day, s, alert_client=alert_client)
    if name == "report":
        return report(day, s, send=send)
    plain = {"snapshot": snapshot, "provider_sync": provider_sync, "variance": variance}
    plain["exception_review"] = exception_review
    assert name in plain, f"no reconciliation step {name!r}"
    return plain[name](day, s)


def run_day(
    day: date, settings: ReconSettings | None = None, *, send: bool = True, alert_client: Any = None
) -> dict[str, Any]:
    s = _settings(settings)
    return {name: run_step(name, day, s, send=send, alert_client=alert_client) for name in STEPS}


__all__ = [
    "STEPS",
    "Path",
    "data_quality",
    "exception_review",
    "provider_sync",
    "publish_outbox",
    "recon_day_for",
    "report",
    "run_day",
    "run_step",
    "snapshot",
    "variance",
]
