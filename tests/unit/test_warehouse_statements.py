"""Provider statements: each provider's format round-trips, and the format details hold."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from contracts.models import Provider
from domain.money import Currency
from warehouse.provider_statements import (
    FORMATS,
    StatementFormatError,
    StatementLine,
    assign_line_ids,
    parse_alipay_statement,
    parse_paypal_statement,
    write_alipay_statement,
    write_paypal_statement,
    write_stripe_statement,
    write_toss_statement,
    write_wise_statement,
)

AT = datetime(2026, 11, 1, 23, 58, 7, tzinfo=UTC)


def _line(
    ccy: Currency,
    amount: int,
    fee: int,
    fx: str | None = None,
    ref: str = "REF-1",
    ours: str | None = "BR-20261101-000001",
    cp: str | None = None,
) -> StatementLine:
    return StatementLine(ref, ours, amount, fee, ccy, Decimal(fx) if fx else None, date(2026, 11, 2), AT, cp)


SAMPLES = {
    Provider.STRIPE: [
        _line(Currency.USD, 150_00, 62, ref="po_1AbC"),
        _line(Currency.EUR, 1, 0, ref="po_2", ours=None, cp="acct_77"),
    ],
    Provider.PAYPAL: [
        _line(Currency.USD, 150_00, 375, ref="8MC585209K746392H"),
        _line(Currency.JPY, 1500, 38, ref="9XY", ours=None, cp="ACCT-1"),
    ],
    Provider.WISE: [
        _line(Currency.EUR, 867_32, 6_88, fx="0.137946", ref="TRANSFER-1", cp="GB33BUKB"),
        _line(Currency.GBP, 5_00, 1, ref="TRANSFER-2"),
    ],
    Provider.TOSS: [_line(Currency.KRW, 1_234_567, 28_395, ref="tgen_ABC")],
    Provider.ALIPAY: [
        _line(Currency.HKD, 39_30, 59, fx="1.16999999", ref="2026000123"),
        _line(Currency.USD, 10_00, 15, ref="2026000124"),
    ],
    # PayPay's export has no value date (the created day) and one id column for both references.
    Provider.PAYPAY: [
        StatementLine("BRIDGE-card-1", "BRIDGE-card-1", 15_000, 297, Currency.JPY, None, AT.date(), AT, None)
    ],
    Provider.PAYFORT: [
        StatementLine("169996200000012345", "BRIDGE-card-2", 55_000, 1_210, Currency.AED, None, AT.date(), AT, None)
    ],
}


@pytest.mark.parametrize("provider", list(FORMATS))  # providers that publish a statement feed
def test_round_trip(provider: Provider, tmp_path: Path) -> None:
    fmt = FORMATS[provider]
    lines = SAMPLES[provider]
    path = fmt.write(lines, tmp_path / fmt.filename)
    assert fmt.parse(path) == lines


@pytest.mark.parametrize("provider", list(FORMATS))  # providers that publish a statement feed
def test_empty_statement_parses(provider: Provider, tmp_path: Path) -> None:
    fmt = FORMATS[provider]
    assert fmt.parse(fmt.write([], tmp_path / fmt.filename)) == []


def test_stripe_is_major_units_lower_case_currency(tmp_path: Path) -> None:
    path = write_stripe_statement(SAMPLES[Provider.STRIPE], tmp_path / "s.csv")
    row = next(csv.DictReader(path.open()))
    assert (row["currency"], row["gross"], row["fee"], row["net"]) == ("usd", "-150.00", "0.62", "-150.62")
    assert row["created_utc"] == "2026-11-01 23:58:07"
    assert row["payment_metadata[nexus_tx_id]"] == "BR-20261101-000001"


def test_paypal_srf_records_and_implied_decimals(tmp_path: Path) -> None:
    path = write_paypal_statement(SAMPLES[Provider.PAYPAL], tmp_path / "STL.csv")
    rows = list(csv.reader(path.open()))
    assert [r[0] for r in rows] == ["RH", "FH", "SH", "CH", "SB", "SB", "SF", "SC", "RF", "RC", "FF"]
    body = [dict(zip(rows[3][1:], r[1:], strict=False)) for r in rows if r[0] == "SB"]
    assert body[0]["Gross Transaction Amount"] == "15000" and body[0]["Transaction Debit or Credit"] == "DR"
    assert body[1]["Gross Transaction Amount"] == "150000"  # JPY 1,500 with two implied decimals
    assert body[0]["Transaction Initiation Date"] == "2026/11/01 23:58:07 +0000"
    rows[-5][1] = "7"  # tamper with the SF footer count
    with (tmp_path / "bad.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(StatementFormatError, match="footer"):
        parse_paypal_statement(tmp_path / "bad.csv")


def test_wise_numbers_are_json_numbers_read_as_decimal(tmp_path: Path) -> None:
    path = write_wise_statement(SAMPLES[Provider.WISE], tmp_path / "w.json")
    text = path.read_text()
    assert '"value": -874.20' in text and '"rate": 0.137946' in text
    doc = json.loads(text)
    assert [s["query"]["currency"] for s in doc] == ["EUR", "GBP"]  # one balance statement per currency


def test_toss_fee_split_and_kst(tmp_path: Path) -> None:
    path = write_toss_statement(SAMPLES[Provider.TOSS], tmp_path / "t.json")
    row = json.loads(path.read_text())[0]
    assert row["approvedAt"] == "2026-11-02T08:58:07+09:00" and row["soldDate"] == "2026-11-02"
    assert row["supplyAmount"] + row["vat"] == 28_395 and row["payOutAmount"] == 1_234_567 - 28_395
    with pytest.raises(ValueError, match="KRW only"):
        write_toss_statement([_line(Currency.USD, 1, 0)], tmp_path / "x.json")


def test_alipay_times_are_beijing_time(tmp_path: Path) -> None:
    path = write_alipay_statement(SAMPLES[Provider.ALIPAY], tmp_path / "a.csv")
    row = next(csv.DictReader(path.open()))
    assert row["Payment_time"] == "2026-11-02 07:58:07" and row["Rate"] == "1.16999999"
    assert parse_alipay_statement(path)[0].created_at == AT


def test_wrong_file_is_reported_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "a.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(StatementFormatError, match=r"a.csv:2: missing column"):
        parse_alipay_statement(bad)


def test_line_ids_are_stable_and_number_repeats() -> None:
    lines = [
        _line(Currency.USD, 1, 0, ref="po_1"),
        _line(Currency.USD, 1, 0, ref="po_1"),
        _line(Currency.USD, 1, 0, ref="po_2"),
    ]
    assert assign_line_ids(Provider.STRIPE, date(2026, 11, 1), lines) == [
        "STRIPE:2026-11-01:po_1",
        "STRIPE:2026-11-01:po_1#2",
        "STRIPE:2026-11-01:po_2",
    ]
