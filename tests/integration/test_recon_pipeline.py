"""End to end in process: seeded topics + provider files -> DuckDB -> GX -> variance -> exceptions -> report."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.models import AuditRecord
from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED
from domain.variance_rules import MATCHING_BREAKS
from tests.integration.recon_fixtures import pdf_text, seed, smtp_server, table_digests
from warehouse import pipeline
from warehouse.db import connect, query, warehouse
from warehouse.quality import CriticalDataQualityError
from warehouse.report import render_pdf
from warehouse.settings import ReconSettings


@pytest.fixture(scope="module")
def reconciled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("recon")
    period, settings = seed(home, days=3, per_day=900, breaks=52)
    ages = {}
    for day in period.days:
        pipeline.run_day(day, settings, send=False)
        with warehouse(settings.warehouse_path) as con:
            ages[day] = dict(
                con.execute("SELECT exception_id, age_days FROM recon_exceptions WHERE state = 'open'").fetchall()
            )
    return {"period": period, "settings": settings, "ages": ages}


def _open(settings: ReconSettings) -> dict[str, str]:
    with warehouse(settings.warehouse_path) as con:
        return dict(
            con.execute("SELECT exception_id, break_class FROM recon_exceptions WHERE state = 'open'").fetchall()
        )


def test_every_injected_break_is_found_and_classified(reconciled: dict[str, Any]) -> None:
    period, settings = reconciled["period"], reconciled["settings"]
    truth = {k: v.value for k, v in period.truth.items()}
    counts = Counter(truth.values())
    assert set(counts) == {c.value for c in MATCHING_BREAKS} and min(counts.values()) >= 50, counts
    found = _open(settings)
    wrong = {k: (found.get(k), v) for k, v in truth.items() if found.get(k) != v}
    assert not wrong, f"{len(wrong)} injected breaks missed or misclassified, e.g. {list(wrong.items())[:5]}"
    # legitimate fee/FX rounding, tier-2 and batch matches and cut-off bookings within the grace raise nothing
    extra = {k: v for k, v in found.items() if k not in truth}
    assert not extra, f"{len(extra)} exceptions not injected, e.g. {list(extra.items())[:5]}"


def test_cutoff_items_are_pending_not_exceptions(reconciled: dict[str, Any]) -> None:
    period, settings = reconciled["period"], reconciled["settings"]
    last = period.days[-1]
    with warehouse(settings.warehouse_path) as con:
        pending = {
            f"S:{r[0]}"
            for r in con.execute(
                "SELECT settlement_id FROM recon_results WHERE recon_date = $d AND outcome = 'pending'"
                " AND settlement_id IS NOT NULL",
                {"d": last},
            ).fetchall()
        }
        tiers = dict(
            con.execute("SELECT tier, count(*) FROM recon_results WHERE outcome = 'matched' GROUP BY tier").fetchall()
        )
    assert period.pending and period.pending <= pending
    assert tiers["reference"] > 1000 and tiers["tolerance"] > 40 and tiers["many_to_one"] > 20


def test_next_day_ages_open_exceptions(reconciled: dict[str, Any]) -> None:
    d1, d2, d3 = reconciled["period"].days
    ages = reconciled["ages"]
    carried = [k for k in ages[d1] if k in ages[d3]]
    assert carried
    assert all(ages[d1][k] == 0 and ages[d2][k] == 1 and ages[d3][k] == 2 for k in carried)


def test_metrics_and_marts(reconciled: dict[str, Any]) -> None:
    settings = reconciled["settings"]
    with warehouse(settings.warehouse_path) as con:
        daily = query(con, "SELECT * FROM mart_recon_daily ORDER BY recon_date").to_dicts()
        tieout = query(con, "SELECT * FROM mart_ledger_tieout WHERE difference_kaus_units <> 0")
        by_dims = query(con, "SELECT * FROM mart_settlements_daily")
        latency = query(con, "SELECT * FROM mart_settlement_latency WHERE rail = 'TOSS_PAYMENTS'")
    assert len(daily) == 3 and all(r["audit_trail_coverage"] == 1 for r in daily)
    assert all(0.8 < float(r["automatic_match_rate"]) < 1 for r in daily)
    assert tieout.is_empty()
    assert {"settled_date", "currency", "region", "rail"} <= set(by_dims.columns)
    assert (latency["p99_ms"] >= latency["p50_ms"]).all()


def test_rerunning_a_day_changes_nothing(reconciled: dict[str, Any], tmp_path: Path) -> None:
    settings: ReconSettings = reconciled["settings"]
    copy = settings.model_copy(update={"home": tmp_path})
    shutil.copytree(settings.home, tmp_path, dirs_exist_ok=True)
    before = table_digests(copy.warehouse_path)
    pipeline.run_day(reconciled["period"].days[-1], copy, send=False)
    assert table_digests(copy.warehouse_path) == before


def test_duckdb_engine_gives_the_same_results(reconciled: dict[str, Any], tmp_path: Path) -> None:
    settings: ReconSettings = reconciled["settings"]
    copy = settings.model_copy(update={"home": tmp_path, "engine": "duckdb"})
    shutil.copytree(settings.home, tmp_path, dirs_exist_ok=True)
    before = table_digests(copy.warehouse_path)["recon_results"]
    for day in reconciled["period"].days:
        pipeline.variance(day, copy)
    assert table_digests(copy.warehouse_path)["recon_results"] == before


def test_report_is_emailed_once_with_the_pdf(reconciled: dict[str, Any], tmp_path: Path) -> None:
    settings: ReconSettings = reconciled["settings"]
    shutil.copytree(settings.home, tmp_path, dirs_exist_ok=True)
    day = reconciled["period"].days[-1]
    with smtp_server() as (port, inbox):
        copy = settings.model_copy(update={"home": tmp_path, "smtp_port": port})
        first = pipeline.report(day, copy)
        second = pipeline.report(day, copy)
    assert first["emailed"] and not second["emailed"] and second["already_sent"]
    [(name, pdf)] = inbox.pdf_attachments()
    assert name == f"recon-{day}.pdf" and pdf.startswith(b"%PDF") and pdf == Path(first["pdf"]).read_bytes()
    assert Path(first["archived"]).read_bytes() == pdf
    assert "match rate" in inbox.messages[0]["Subject"]


def test_holders_payouts_are_reconciled_once_and_the_report_says_what_was_paid_out(
    reconciled: dict[str, Any],
) -> None:
    """Generated as the platform executes them (a bridge settlement with the payout_id, its ledger legs under
    PAYOUT, the service's result): each payout decided once per day against the provider's report, tied out on
    the ledger once, its result agreeing; the day's report lists the fiat and K-AUS paid out per currency."""
    period, settings = reconciled["period"], reconciled["settings"]
    day = period.days[0]
    paid = [e for e in period.events[day][BRIDGE_SETTLEMENTS_COMPLETED.name] if e.payout_id is not None]
    assert len(paid) > 100
    with warehouse(settings.warehouse_path) as con:
        decided = dict(
            con.execute(
                "SELECT settlement_id, count(*) FROM recon_results WHERE recon_date = $d"
                " AND settlement_id IN (SELECT settlement_id FROM fct_settlements WHERE kind = 'payout') GROUP BY ALL",
                {"d": day},
            ).fetchall()
        )
        tie = query(
            con,
            "SELECT currency, payouts, payout_kaus_units FROM mart_ledger_tieout WHERE day = $d AND payouts > 0",
            {"d": day},
        ).rows()
        checks = dict(
            con.execute(
                "SELECT suite, bool_and(success) FROM dq_results WHERE recon_date = $d GROUP BY suite", {"d": day}
            ).fetchall()
        )
        data = pipeline.report_data(con, day, settings)
    assert set(decided) == {e.payout_id for e in paid} and set(decided.values()) == {1}
    expected = Counter[str]()
    for e in paid:
        expected[e.currency.value] += e.kaus_debited_units
    assert {c: (n, units) for c, n, units in tie} == {
        c: (sum(e.currency.value == c for e in paid), units) for c, units in expected.items()
    }
    assert checks["payout_results"] and checks["ledger_tieout"]
    totals = {(r["kind"], r["currency"]): r for r in data.totals}
    assert {c for k, c in totals if k == "payout"} == set(expected)
    for c in expected:
        fiat = sum(e.amount_minor for e in paid if e.currency.value == c)
        assert (totals[("payout", c)]["settlements"], totals[("payout", c)]["amount_minor"]) == (
            sum(e.currency.value == c for e in paid),
            fiat,
        )
    text = pdf_text(render_pdf(data, settings.home / "payouts-report.pdf").read_bytes())
    assert "Paid out (holders)" in text and f"Paid out to holders: {len(paid):,} payouts" in text


def test_exception_review_cli_is_audited(
    reconciled: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from warehouse import cli
    from warehouse.settings import get_recon_settings

    shutil.copytree(reconciled["settings"].home, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("NEXUS_RECON_HOME", str(tmp_path))
    monkeypatch.setenv("NEXUS_RECON_PLATFORM_KAFKA", "false")  # no platform here: the audit records stay queued
    get_recon_settings.cache_clear()
    try:
        assert cli.main(["exceptions", "list", "--class", "fee_variance", "--limit", "3"]) == 0
        con = connect(tmp_path / "warehouse.duckdb", read_only=True)
        ids = [
            r[0]
            for r in con.execute(
                "SELECT exception_id FROM recon_exceptions WHERE state = 'open' ORDER BY exception_id LIMIT 3"
            ).fetchall()
        ]
        con.close()
        assert cli.main(["exceptions", "approve", ids[0], "--reason", "provider confirmed", "--actor", "ana"]) == 0
        assert cli.main(["exceptions", "correct", ids[1], "--reason", "ADJ-77 booked", "--actor", "ana"]) == 0
        assert cli.main(["exceptions", "write-off", ids[2], "--reason", "below materiality", "--actor", "cfo"]) == 0
        assert cli.main(["exceptions", "approve", ids[0], "--reason", "twice", "--actor", "ana"]) == 1
        assert cli.main(["exceptions", "approve", "S:NOPE", "--reason", "x"]) == 1
        err = capsys.readouterr().err
        assert "cannot move an exception from approved" in err and "no exception 'S:NOPE'" in err
        said = " ".join(err.split())  # rich wraps lines
        assert "stay in the warehouse" in said and "`exceptions publish` sends them" in said  # committed, waits
        assert cli.main(["exceptions", "publish"]) == 1  # still queued: nothing was lost, nothing was sent
        assert cli.main(["exceptions", "show", ids[1]]) == 0
        con = connect(tmp_path / "warehouse.duckdb", read_only=True)
        states = dict(
            con.execute(
                "SELECT exception_id, state FROM recon_exceptions WHERE exception_id IN (?, ?, ?)", ids
            ).fetchall()
        )
        actions = con.execute(
            "SELECT actor, action, reason, audit_record, published_at FROM recon_exception_actions"
            " WHERE actor IN ('ana', 'cfo') ORDER BY acted_at"
        ).fetchall()
        con.close()
    finally:
        get_recon_settings.cache_clear()
    assert states == {ids[0]: "approved", ids[1]: "corrected", ids[2]: "written_off"}
    assert [(a[0], a[1], a[2]) for a in actions] == [
        ("ana", "approved", "provider confirmed"),
        ("ana", "corrected", "ADJ-77 booked"),
        ("cfo", "written_off", "below materiality"),
    ]
    record = AuditRecord.model_validate_json(actions[0][3])
    assert record.action == "RECON_EXCEPTION_APPROVED" and record.actor.user_id == "ana"
    assert [a[4] for a in actions] == [None, None, None]  # the outbox: unpublished until a broker acknowledges


def test_critical_quality_failure_stops_before_the_report_and_alerts(tmp_path: Path) -> None:
    period, settings = seed(tmp_path, days=1, per_day=150, breaks=2, seed_value=5, ledger_break=True)
    settings = settings.model_copy(update={"alert_on_critical": True, "alertmanager_url": "http://alertmanager.test"})
    posted: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200)

    day = period.days[0]
    pipeline.snapshot(day, settings)
    pipeline.provider_sync(day, settings)
    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        pytest.raises(CriticalDataQualityError, match="ledger_tieout") as caught,
    ):
        pipeline.data_quality(day, settings, alert_client=client)
    assert "report is held back" in str(caught.value)
    [(path, body)] = posted
    assert path == "/api/v2/alerts"
    assert body[0]["labels"]["alertname"] == "ReconciliationDataQualityCritical"
    assert body[0]["labels"]["severity"] == "critical" and body[0]["labels"]["recon_date"] == day.isoformat()
    with warehouse(settings.warehouse_path) as con:
        failed = con.execute("SELECT suite, target FROM dq_results WHERE NOT success AND critical").fetchall()
        runs = con.execute("SELECT count(*) FROM recon_runs").fetchall()[0][0]
    assert ("ledger_tieout", "settlements_without_ledger") in failed and runs == 0
    assert timedelta(0) == timedelta(0)
