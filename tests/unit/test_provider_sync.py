"""Provider sync into DuckDB: reports pulled through the (here faked) report APIs and statement files land as the
same lines; a re-run for a day replaces that day's lines, never duplicates them; a failed pull is a non-delivery
that keeps what an earlier pull delivered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from domain.money import Currency
from domain.rails import Provider
from domain.statements import StatementLine
from streams.bridge.providers import REPORT_APIS
from streams.bridge.providers.base import ProviderSettings, ReportError
from warehouse import provider_sync
from warehouse.db import connect
from warehouse.provider_statements import write_statement
from warehouse.provider_sync import sync_statements
from warehouse.sqlrunner import init_schema

DAY = date(2026, 11, 2)
AT = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def line(ref: str, amount: int, fee: int = 10, ccy: Currency = Currency.USD, **kw: Any) -> StatementLine:
    return StatementLine(ref, f"BRIDGE-{ref}", amount, fee, ccy, kw.pop("fx", None), DAY, kw.pop("at", AT), None)


class FakeReporter:
    def __init__(self, provider: Provider, reports: dict[Provider, Any]) -> None:
        self.provider = provider
        self.reports = reports
        self.base_url = f"https://{provider.value.lower()}.test"

    async def settlements(self, day: date) -> list[StatementLine]:
        found = self.reports.get(self.provider, [])
        if isinstance(found, Exception):
            raise found
        return list(found)


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> dict[Provider, Any]:
    """What each faked report API answers (every provider with an API answers an empty report by default)."""
    answers: dict[Provider, Any] = {}

    def build(settings: Any, transport: Any, providers: frozenset[Provider]) -> dict[Provider, FakeReporter]:
        return {p: FakeReporter(p, answers) for p in providers}

    monkeypatch.setattr(provider_sync, "build_reporters", build)
    return answers


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = connect(":memory:")
    init_schema(c)
    yield c
    c.close()


def stored(con: duckdb.DuckDBPyConnection, provider: Provider) -> list[tuple[Any, ...]]:
    return con.execute(
        "SELECT line_id, amount_minor, fee_minor, fx_rate, source_file FROM raw_provider_lines WHERE provider = $p "
        "ORDER BY line_id",
        {"p": provider.value},
    ).fetchall()


def sync(con: duckdb.DuckDBPyConnection, tmp_path: Path, source: Any = "api") -> dict[str, Any]:
    settings = ProviderSettings(sim_url="https://sim.test", keys_dir=tmp_path / "keys")
    return {i.provider: i for i in sync_statements(con, tmp_path / "st", DAY, source, settings)}


def test_api_reports_and_the_paypay_file_land_as_lines(
    con: duckdb.DuckDBPyConnection, reports: dict[Provider, Any], tmp_path: Path
) -> None:
    reports[Provider.STRIPE] = [line("po_1", 150_00), line("po_2", 20_00, fx=Decimal("1.0876"))]
    reports[Provider.TOSS] = [line("tk_1", 150_000, 3_450, Currency.KRW)]
    write_statement(Provider.PAYPAY, [line("BRIDGE-pp", 1_500, 30, Currency.JPY)], tmp_path / "st", DAY)

    got = sync(con, tmp_path)

    assert {p for p, i in got.items() if i.source == "api"} == {p.value for p in REPORT_APIS}
    assert got["PAYPAY"].source == "file" and got["PAYPAY"].delivered and got["PAYPAY"].lines == 1
    assert all(i.delivered for i in got.values())  # an empty report is a delivered report
    assert stored(con, Provider.STRIPE) == [
        ("STRIPE:2026-11-02:po_1", 150_00, 10, None, "api:STRIPE:https://stripe.test"),
        ("STRIPE:2026-11-02:po_2", 20_00, 10, Decimal("1.0876"), "api:STRIPE:https://stripe.test"),
    ]
    assert [r[0] for r in stored(con, Provider.PAYPAY)] == ["PAYPAY:2026-11-02:BRIDGE-pp"]
    meta = con.execute("SELECT count(*), count(sha256) FROM meta_statement_files WHERE statement_date = $d", {"d": DAY})
    assert meta.fetchall() == [(len(Provider), len(Provider))]


def test_rerun_changes_nothing_and_page_order_does_not_matter(
    con: duckdb.DuckDBPyConnection, reports: dict[Provider, Any], tmp_path: Path
) -> None:
    reports[Provider.WISE] = [line("1", 10_00), line("2", 20_00), line("2", 20_00)]  # one reported twice
    first = sync(con, tmp_path)
    reports[Provider.WISE] = list(reversed(reports[Provider.WISE]))
    again = sync(con, tmp_path)

    assert (first["WISE"].new_lines, again["WISE"].new_lines, again["WISE"].replaced) == (3, 0, False)
    assert [r[0] for r in stored(con, Provider.WISE)] == [
        "WISE:2026-11-02:1",
        "WISE:2026-11-02:2",
        "WISE:2026-11-02:2#2",
    ]


def test_a_changed_report_replaces_the_days_lines(
    con: duckdb.DuckDBPyConnection, reports: dict[Provider, Any], tmp_path: Path
) -> None:
    reports[Provider.PAYPAL] = [line("B1", 10_00), line("B2", 20_00), line("B3", 30_00)]
    sync(con, tmp_path)
    reports[Provider.PAYPAL] = [line("B1", 10_00), replace(line("B2", 20_00), amount_minor=19_99), line("B4", 4_00)]
    got = sync(con, tmp_path)

    assert got["PAYPAL"].replaced and got["PAYPAL"].lines == 3
    assert [(r[0], r[1]) for r in stored(con, Provider.PAYPAL)] == [
        ("PAYPAL:2026-11-02:B1", 10_00),
        ("PAYPAL:2026-11-02:B2", 19_99),
        ("PAYPAL:2026-11-02:B4", 4_00),
    ]


def test_a_failed_pull_is_not_delivered_and_keeps_the_earlier_delivery(
    con: duckdb.DuckDBPyConnection, reports: dict[Provider, Any], tmp_path: Path
) -> None:
    reports[Provider.ALIPAY] = ReportError("ALIPAY bill url: 40004 isp.bill_not_exist")
    got = sync(con, tmp_path)
    assert not got["ALIPAY"].delivered and "bill_not_exist" in (got["ALIPAY"].error or "")
    delivered = "SELECT sha256 IS NOT NULL FROM meta_statement_files WHERE provider = 'ALIPAY' AND statement_date = $d"
    assert con.execute(delivered, {"d": DAY}).fetchall() == [(False,)]

    reports[Provider.ALIPAY] = [line("ORD1", 88_00, 1_32, Currency.CNY)]
    assert sync(con, tmp_path)["ALIPAY"].delivered
    reports[Provider.ALIPAY] = ReportError("ALIPAY bill url: HTTP 503")
    assert not sync(con, tmp_path)["ALIPAY"].delivered
    assert con.execute(delivered, {"d": DAY}).fetchall() == [(True,)]
    assert [r[0] for r in stored(con, Provider.ALIPAY)] == ["ALIPAY:2026-11-02:ORD1"]


def test_files_source_reads_only_files(
    con: duckdb.DuckDBPyConnection, reports: dict[Provider, Any], tmp_path: Path
) -> None:
    reports[Provider.STRIPE] = [line("po_api", 1_00)]
    write_statement(Provider.STRIPE, [line("po_file", 2_00)], tmp_path / "st", DAY)

    got = sync(con, tmp_path, source="files")

    assert {i.source for i in got.values()} == {"file"}
    assert [r[0] for r in stored(con, Provider.STRIPE)] == ["STRIPE:2026-11-02:po_file"]
    assert not got["PAYPAL"].delivered  # no file, and the API is not asked


def test_api_and_file_of_the_same_report_give_the_same_lines(
    con: duckdb.DuckDBPyConnection, reports: dict[Provider, Any], tmp_path: Path
) -> None:
    lines = [line("tk_1", 150_000, 3_450, Currency.KRW), line("tk_2", 7_000, 161, Currency.KRW)]
    reports[Provider.TOSS] = lines
    sync(con, tmp_path)
    via_api = [r[:4] for r in stored(con, Provider.TOSS)]

    write_statement(Provider.TOSS, lines, tmp_path / "st", DAY)
    sync(con, tmp_path, source="files")

    assert [r[:4] for r in stored(con, Provider.TOSS)] == via_api
