"""The pipeline's steps take their sources and tolerances from the settings: provider reports through the APIs
for the platform's topics (files for seeded exports), every provider's report expected daily (an API's empty
report is a delivery), and the data-quality gate judges in-flight movements with the reconciliation's own grace."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from domain.rails import Provider
from domain.statements import StatementLine
from warehouse import pipeline, provider_sync, quality
from warehouse.db import warehouse
from warehouse.provider_statements import FORMATS, write_statement
from warehouse.settings import ReconSettings
from warehouse.sqlrunner import build_models

DAY = date(2026, 11, 2)


def test_provider_reports_come_from_the_apis_unless_the_snapshot_reads_seeded_exports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ReconSettings().provider_report_source == "api"  # the platform's topics: the providers' report APIs
    assert ReconSettings(snapshot_source="jsonl").provider_report_source == "files"  # seeded data has its files
    assert ReconSettings(snapshot_source="jsonl", provider_source="api").provider_report_source == "api"
    monkeypatch.setenv("NEXUS_RECON_PROVIDER_SOURCE", "files")
    assert ReconSettings().provider_report_source == "files"


class EmptyReporter:
    """A provider's report API on a day without payouts: an empty report."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.base_url = f"https://{provider.value.lower()}.test"

    async def settlements(self, day: date) -> list[StatementLine]:
        return []


def test_every_provider_delivers_on_a_day_without_payouts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[Provider] = []

    def build(settings: Any, transport: Any, providers: frozenset[Provider]) -> dict[Provider, EmptyReporter]:
        asked.extend(providers)
        return {p: EmptyReporter(p) for p in providers}

    monkeypatch.setattr(provider_sync, "build_reporters", build)
    monkeypatch.setenv("NEXUS_PROVIDER_KEYS_DIR", str(tmp_path / "keys"))
    settings = ReconSettings(home=tmp_path, alert_on_critical=False)
    write_statement(Provider.PAYPAY, [], settings.statements, DAY)  # PayPay publishes a file, even an empty one
    out = pipeline.provider_sync(DAY, settings)
    assert out["source"] == "api" and set(asked) == set(FORMATS) - {Provider.PAYPAY}
    assert len(out["statements"]) == len(FORMATS) == 7
    assert all(s["delivered"] and s["lines"] == 0 for s in out["statements"]), out["statements"]
    with warehouse(settings.warehouse_path) as con:
        build_models(con)
        checks = [r for r in quality.run_checks(con, DAY) if r.suite == "statements_delivered"]
    assert len(checks) == 2 and all(r.success for r in checks), checks


def test_the_data_quality_gate_uses_the_reconciliations_cut_off_grace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[timedelta | None] = []

    def run_checks(con: Any, day: date, cutoff_grace: timedelta | None = None) -> list[quality.CheckResult]:
        seen.append(cutoff_grace)
        return []

    monkeypatch.setattr(quality, "run_checks", run_checks)
    settings = ReconSettings(home=tmp_path, cutoff_grace_minutes=7, alert_on_critical=False)
    assert pipeline.data_quality(DAY, settings)["failed"] == []
    assert seen == [timedelta(minutes=7)]
