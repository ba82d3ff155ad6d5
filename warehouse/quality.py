"""Data quality with Great Expectations: suites on the day's snapshot and provider statements.

Suites (critical unless noted):

* ``snapshot_completeness`` — every offset between the low and high-water marks landed per topic partition
  is accounted for (landed, duplicate or rejected): nothing was skipped.
* ``settlements`` — the day's fct_settlements: unique non-null ids, known currencies and rails, amounts and fees
  >= 0, a settlement time.
* ``provider_lines`` — the day's statement lines: unique line ids, known providers and currencies, amounts and
  fees >= 0, a provider reference; and every provider delivered its report (an empty one counts).
* ``ledger_tieout`` — as of the day's cut-off, K-AUS moved by the ledger = K-AUS in the settlements per currency
  and day, leg by leg (linked by the movements' typed reference: ``sql/marts/mart_ledger_tieout.sql``), and no
  orphan movement. Movements in flight at the cut-off (within the cut-off grace, settlement not yet recorded) and
  holds still open are reported in the mart and the report, not counted as breaks; a capture the ledger refused
  after payout is a ledger break in the exception queue (class capture_refused), not a failure here.
* ``audit_coverage`` (warning) — every settlement has an audit record (spec §6.2 target 100%).
* ``payout_results`` (warning) — the day's ``payouts.results`` agree with the bridge settlements that executed
  them (``stg_payouts`` vs ``stg_bridge_settlements`` by payout id: one exists, same status; a PAID one the same
  K-AUS, fiat amount and currency). The reconciliation counts a payout from its bridge settlement only; the
  result is the auto-payout service's derived copy, which holders and analysts read, so a disagreement is
  shown, not a stop.

A critical failure raises :class:`CriticalDataQualityError` after posting an alert to Alertmanager, so the DAG
stops before the report goes out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from contracts.models import Alert, AlertState, Provider, Rail, Severity
from domain.money import Currency
from domain.variance_rules import Tolerances
from streams.alerting.alertmanager import post_alerts
from warehouse.db import query
from warehouse.provider_statements import FORMATS

log = logging.getLogger(__name__)
CURRENCIES = sorted([c.value for c in Currency] + ["KAUS"])
RAILS = sorted([r.value for r in Rail] + ["KAUS_LEDGER"])  # a payout goes out on a bridge rail too
PROVIDERS = sorted(p.value for p in Provider)
# Providers whose report is expected every day (an empty report is a delivery: no payouts that day).
STATEMENT_PROVIDERS = sorted(p.value for p in FORMATS)


class CriticalDataQualityError(RuntimeError):
    pass


@dataclass(frozen=True)
class CheckResult:
    suite: str
    expectation: str
    target: str
    success: bool
    critical: bool
    observed: str


@dataclass(frozen=True)
class Suite:
    name: str
    critical: bool
    sql: str  # one query; parameters $day, $cutoff (the day's end) and $grace (the cut-off grace)
    expectations: Callable[[Any], list[Any]]  # gx.expectations module -> expectations


def _non_negative(e: Any, *columns: str) -> list[Any]:
    """Money columns hold unsigned minor units on both sides; the direction comes from the flow, not a sign."""
    return [e.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in columns]


def _suites() -> list[Suite]:
    def settlements(e: Any) -> list[Any]:
        return [
            e.ExpectColumnValuesToNotBeNull(column="settlement_id"),
            e.ExpectColumnValuesToBeUnique(column="settlement_id"),
            e.ExpectColumnValuesToBeInSet(column="currency", value_set=CURRENCIES),
            e.ExpectColumnValuesToBeInSet(column="rail", value_set=RAILS),
            *_non_negative(e, "amount_minor", "fee_minor"),
            e.ExpectColumnValuesToNotBeNull(column="settled_at"),
        ]

    def lines(e: Any) -> list[Any]:
        return [
            e.ExpectColumnValuesToBeUnique(column="line_id"),
            e.ExpectColumnValuesToBeInSet(column="provider", value_set=PROVIDERS),
            e.ExpectColumnValuesToBeInSet(column="currency", value_set=CURRENCIES),
            *_non_negative(e, "amount_minor", "fee_minor"),
            e.ExpectColumnValuesToNotBeNull(column="provider_reference"),
        ]

    return [
        Suite(
            "snapshot_completeness",
            True,
            """
            SELECT m.topic, m."partition", m.high_offset - m.low_offset AS expected_offsets,
                   (SELECT count(*) FROM raw_offsets o WHERE o.topic = m.topic AND o."partition" = m."partition"
                      AND o."offset" >= m.low_offset AND o."offset" < m.high_offset) AS accounted_offsets
            FROM meta_topic_offsets m""",
            lambda e: [e.ExpectColumnPairValuesToBeEqual(column_A="expected_offsets", column_B="accounted_offsets")],
        ),
        Suite("settlements", True, "SELECT * FROM fct_settlements WHERE settled_date = $day", settlements),
        Suite("provider_lines", True, "SELECT * FROM stg_provider_lines WHERE statement_date = $day", lines),
        Suite(
            "statements_delivered",
            True,
            "SELECT provider, sha256 IS NOT NULL AS delivered FROM meta_statement_files WHERE statement_date = $day",
            lambda e: [
                e.ExpectColumnValuesToBeInSet(column="delivered", value_set=[True]),
                e.ExpectTableRowCountToEqual(value=len(STATEMENT_PROVIDERS)),
            ],
        ),
        Suite(
            "ledger_tieout",
            True,
            # Earlier days' orphans count too: a movement in flight at one cut-off is an orphan at the next.
            "SELECT * FROM mart_ledger_tieout_as_of($cutoff, $grace) WHERE day = $day OR currency = 'UNKNOWN'",
            lambda e: [
                e.ExpectColumnValuesToBeBetween(column="difference_kaus_units", min_value=0, max_value=0),
                e.ExpectColumnValuesToBeBetween(column="settlements_not_tied", min_value=0, max_value=0),
                e.ExpectColumnValuesToBeBetween(column="settlements_without_ledger", min_value=0, max_value=0),
                e.ExpectColumnValuesToBeBetween(column="orphan_ledger_movements", min_value=0, max_value=0),
            ],
        ),
        Suite(
            "audit_coverage",
            False,
            "SELECT settlement_id, has_audit FROM fct_settlements WHERE settled_date = $day AND status = 'completed'",
            lambda e: [e.ExpectColumnValuesToBeInSet(column="has_audit", value_set=[True])],
        ),
        Suite(
            "payout_results",
            False,
            _PAYOUT_RESULTS_SQL,
            lambda e: [e.ExpectColumnValuesToBeInSet(column="agrees", value_set=[True])],
        ),
    ]


# One row per payout result of the day: does the bridge settlement that executed it say the same?
_PAYOUT_RESULTS_SQL = """
SELECT p.settlement_id AS payout_id,
       coalesce(b.status = p.status
                AND (p.status <> 'completed' OR (b.kaus_units, b.amount_minor, b.currency)
                                                 = (p.kaus_units, p.amount_minor, p.currency)), false) AS agrees
FROM stg_payouts p
LEFT JOIN stg_bridge_settlements b ON b.payout_id = p.settlement_id
WHERE CAST(p.settled_at AS DATE) = $day"""


def _gx() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def _observed(result: Any) -> str:
    r = result.result or {}
    for key in ("unexpected_count", "observed_value"):
        if key in r:
            extra = r.get("partial_unexpected_list") or []
            return f"{key}={r[key]}" + (f" e.g. {extra[:3]}" if extra else "")
    return ""


def run_checks(con: duckdb.DuckDBPyConnection, day: date, cutoff_grace: timedelta | None = None) -> list[CheckResult]:
    """``cutoff_grace``: how long before the day's end a movement may still await its settlement record (by
    default the reconciliation's own, ``Tolerances.cutoff_grace``)."""
    gx = _gx()
    cutoff = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    grace = Tolerances().cutoff_grace if cutoff_grace is None else cutoff_grace
    values: dict[str, Any] = {"day": day, "cutoff": cutoff, "grace": grace}
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("warehouse")
    results: list[CheckResult] = []
    for suite_def in _suites():
        params = {name: value for name, value in values.items() if f"${name}" in suite_def.sql}
        frame: pl.DataFrame = query(con, suite_def.sql, params or None)
        asset = source.add_dataframe_asset(suite_def.name)
        batch_def = asset.add_batch_definition_whole_dataframe(f"{suite_def.name}-{day}")
        batch = batch_def.get_batch(batch_parameters={"dataframe": frame.to_pandas()})
        suite = gx.ExpectationSuite(name=suite_def.name)
        for expectation in suite_def.expectations(gx.expectations):
            suite.add_expectation(expectation)
        validation = batch.validate(suite)
        for r in validation.results:
            cfg = r.expectation_config
            kwargs = cfg.kwargs
            target = (
                kwargs.get("column")
                or "|".join(filter(None, [kwargs.get("column_A"), kwargs.get("column_B")]))
                or "table"
            )
            results.append(
                CheckResult(suite_def.name, cfg.type, target, bool(r.success), suite_def.critical, _observed(r))
            )
    return results


def store_results(con: duckdb.DuckDBPyConnection, day: date, results: list[CheckResult]) -> None:
    con.execute("DELETE FROM dq_results WHERE recon_date = $d", {"d": day})
    for r in results:
        con.execute(
            "INSERT INTO dq_results VALUES ($d, $s, $e, $t, $ok, $c, $o) ON CONFLICT DO NOTHING",
            {
                "d": day,
                "s": r.suite,
                "e": r.expectation,
                "t": r.target,
                "ok": r.success,
                "c": r.critical,
                "o": r.observed,
            },
        )


def critical_failures(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.critical and not r.success]


def alert_for(day: date, failures: list[CheckResult]) -> Alert:
    names = ", ".join(sorted({f"{f.suite}.{f.expectation}({f.target})" for f in failures}))
    return Alert(
        fingerprint=f"recon-dq-{day.isoformat()}",
        rule="ReconciliationDataQualityCritical",
        state=AlertState.FIRING,
        severity=Severity.CRITICAL,
        channel="pagerduty",
        summary=f"Reconciliation for {day} stopped before the report: {len(failures)} critical data-quality "
        f"check(s) failed: {names}"[:1000],
        labels={"recon_date": day.isoformat(), "component": "reconciliation"},
        value=str(len(failures)),
        starts_at=datetime.now(UTC),
    )


def raise_on_critical(day: date, results: list[CheckResult], alertmanager_url: str | None, client: Any = None) -> None:
    failures = critical_failures(results)
    if not failures:
        return
    note = ""
    if alertmanager_url:
        try:
            post_alerts(alertmanager_url, [alert_for(day, failures)], client=client)
            note = f" An alert was posted to {alertmanager_url}."
        except Exception as exc:
            note = f" Posting the alert to {alertmanager_url} failed too: {exc}."
            log.error("could not post the data-quality alert: %s", exc)
    lines = "\n".join(f"  - {f.suite}: {f.expectation} on {f.target} ({f.observed})" for f in failures)
    raise CriticalDataQualityError(
        f"{len(failures)} critical data-quality check(s) failed for {day}; the report is held back.{note}\n{lines}\n"
        "Fix the source data (or re-deliver the statement) and re-run the DAG for this date; results are in "
        "dq_results."
    )
