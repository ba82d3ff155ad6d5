"""What the simulated providers report about the payouts they made, and the breaks a test injects into it.

The simulator keeps one :class:`PayoutRecord` per payout it executed. A report is built from those records at the
moment it is asked for: each record becomes one neutral :class:`~domain.statements.StatementLine` (its amount,
fee, booking time and, where the provider reports one, FX rate), then each provider's API answer or statement
file is shaped from those lines. Clean records report exactly what was paid; a *break* registered against one
payout changes what its provider reports about it, the way a provider's report goes wrong in production:

=============  ===============================================================================================
``drop``       the payout is missing from the report
``amount``     the report states another amount (``value``: minor units)
``fee``        the report states another fee (``value``: minor units)
``fx_rate``    the report states a conversion at this rate (``value``: decimal text); Stripe and Wise only,
               the reports that carry a rate
``duplicate``  the payout is reported twice (two report rows, one provider reference)
``late``       the provider books it after the cut-off: on the next UTC day, at ``value`` (ISO 8601) or by
               default 01:00 UTC the day after the payout
=============  ===============================================================================================

Breaks on one payout combine (an amount and a fee, say). Same-currency payouts convert nothing, so a clean
report carries no FX rate.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from domain.money import Currency, Money
from domain.rails import Provider
from domain.statements import StatementLine
from streams.bridge.providers import alipay as alipay_api

CST = timezone(timedelta(hours=8))
# Value date per provider (spec §3.1 "Avg Settlement"): instant rails the same day, Wise the next day.
VALUE_DAYS = {Provider.WISE: 1}
FX_REPORTING = frozenset({Provider.STRIPE, Provider.WISE})
PROVIDER_FILES = tuple(Provider)  # every provider's report can also be had as a statement file
BREAK_KINDS = ("drop", "amount", "fee", "fx_rate", "duplicate", "late")
LATE_AT = time(1, 0)  # default booking time of a late payout, on the next UTC day


@dataclass
class PayoutRecord:
    provider: str
    rail: str
    idempotency_key: str
    our_reference: str
    provider_reference: str
    amount_minor: int
    currency: str
    fee_minor: int
    counterparty: str
    created_at: str  # ISO 8601 UTC
    report_reference: str = ""  # what the provider's report shows as the payer's reference; "" → our_reference
    breaks: dict[str, Any] = field(default_factory=dict)  # kind → value, as registered (JSON-friendly)


@dataclass(frozen=True)
class Entry:
    """One row the provider reports: a payout (``copy`` 0) or its duplicate (``copy`` 1)."""

    record: PayoutRecord
    line: StatementLine
    copy: int = 0

    @property
    def row_id(self) -> str:
        """A per-row id (Stripe's txn_, PayPal's transaction id ...): a duplicate row has its own."""
        suffix = "" if self.copy == 0 else f"-{self.copy + 1}"
        return hashlib.sha256(f"{self.record.provider_reference}{suffix}".encode()).hexdigest()[:24] + suffix


class BreakError(ValueError):
    pass


def break_value(provider: Provider, kind: str, value: Any) -> Any:
    """The validated value of one break (JSON-friendly: ints, decimal text, ISO text, True)."""
    if kind not in BREAK_KINDS:
        raise BreakError(f"unknown break kind {kind!r}; known: {', '.join(BREAK_KINDS)}")
    if kind in ("drop", "duplicate"):
        return True
    if kind in ("amount", "fee"):
        if type(value) is not int or value < 0:
            raise BreakError(f"a {kind} break needs a non-negative integer value in minor units, got {value!r}")
        return value
    if kind == "fx_rate":
        if provider not in FX_REPORTING:
            raise BreakError(f"{provider}'s report carries no FX rate; fx_rate breaks apply to {sorted(FX_REPORTING)}")
        try:
            rate = Decimal(str(value))
        except InvalidOperation:
            raise BreakError(f"fx_rate needs a decimal rate, got {value!r}") from None
        if not rate.is_finite() or rate <= 0:
            raise BreakError(f"fx_rate must be positive, got {value!r}")
        return f"{rate:f}"
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        raise BreakError(f"late needs an ISO 8601 booking time or nothing, got {value!r}") from None
    if at.tzinfo is None:
        raise BreakError(f"late booking time {value!r} needs an offset")
    return at.astimezone(UTC).isoformat()


def clean_line(rec: PayoutRecord) -> StatementLine:
    provider = Provider(rec.provider)
    booked = datetime.fromisoformat(rec.created_at)
    return StatementLine(
        provider_reference=rec.provider_reference,
        our_reference=(rec.report_reference or rec.our_reference) or None,
        amount_minor=rec.amount_minor,
        fee_minor=rec.fee_minor,
        currency=Currency(rec.currency),
        fx_rate=None,
        value_date=booked.date() + timedelta(days=VALUE_DAYS.get(provider, 0)),
        created_at=booked,
        counterparty=rec.counterparty or None,
    )


def _late_booking(booked: datetime, value: str | None) -> datetime:
    if value is not None:
        return datetime.fromisoformat(value)
    return datetime.combine(booked.astimezone(UTC).date() + timedelta(days=1), LATE_AT, UTC)


def reported_line(rec: PayoutRecord) -> StatementLine:
    """What the provider reports about this payout, its breaks applied (drop and duplicate aside)."""
    line = clean_line(rec)
    b = rec.breaks
    if "late" in b:
        booked = _late_booking(line.created_at, b["late"])
        days = VALUE_DAYS.get(Provider(rec.provider), 0)
        line = replace(line, created_at=booked, value_date=booked.date() + timedelta(days=days))
    return replace(
        line,
        amount_minor=b.get("amount", line.amount_minor),
        fee_minor=b.get("fee", line.fee_minor),
        fx_rate=Decimal(b["fx_rate"]) if "fx_rate" in b else line.fx_rate,
    )


def entries(records: list[PayoutRecord], provider: Provider) -> list[Entry]:
    """Every row ``provider`` reports, in booking order."""
    out: list[tuple[datetime, int, Entry]] = []
    for seq, rec in enumerate(records):  # records are in execution order: it breaks ties between equal times
        if rec.provider != provider.value or rec.breaks.get("drop"):
            continue
        line = reported_line(rec)
        out.append((line.created_at, seq, Entry(rec, line)))
        if rec.breaks.get("duplicate"):
            out.append((line.created_at, seq, Entry(rec, line, copy=1)))
    out.sort(key=lambda t: (t[0], t[1], t[2].copy))
    return [e for _, _, e in out]


def booked_between(items: list[Entry], start: datetime, end: datetime, *, to_second: bool = False) -> list[Entry]:
    """Entries booked in ``[start, end)``; ``to_second``: compared as the provider states times (whole seconds)."""

    def at(e: Entry) -> datetime:
        return e.line.created_at.replace(microsecond=0) if to_second else e.line.created_at

    return [e for e in items if start <= at(e) < end]


# --------------------------------------------------------------------------- shapes


def major_text(minor: int, currency: Currency, sign: int = 1) -> str:
    return f"{Money(sign * minor, currency).to_decimal():f}"


def paypal_transaction(e: Entry, account: str) -> dict[str, Any]:
    ln = e.line
    ccy = ln.currency
    ts = ln.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
    return {
        "transaction_info": {
            "paypal_account_id": account,
            "transaction_id": e.row_id[:17].upper(),
            "paypal_reference_id": ln.provider_reference,
            "paypal_reference_id_type": "TXN",
            "transaction_event_code": "T0001",
            "transaction_initiation_date": ts,
            "transaction_updated_date": ts,
            "transaction_amount": {"currency_code": ccy.value, "value": major_text(ln.amount_minor, ccy, -1)},
            "fee_amount": {"currency_code": ccy.value, "value": major_text(ln.fee_minor, ccy, -1)},
            "transaction_status": "S",
            "transaction_subject": "NEXUS-X settlement",
            "invoice_id": ln.our_reference or "",
            "protection_eligibility": "02",
        },
        "payer_info": {
            "account_id": hashlib.sha256((ln.counterparty or "").encode()).hexdigest()[:13].upper(),
            "email_address": ln.counterparty or "",
            "address_status": "N",
            "payer_status": "Y",
        },
    }


ALIPAY_ACCOUNT = "2088000000000001"
_BILL_TS = "%Y-%m-%d %H:%M:%S"
_BILL_RULE = "#-----------------------------------------账务明细列表----------------------------------------"
_BILL_END = "#-----------------------------------------账务明细列表结束------------------------------------"


def alipay_bill_rows(items: list[Entry]) -> list[list[str]]:
    """The 账务明细 rows of these entries: a 转账 row per transfer, a 收费 row per fee, a running balance."""
    balance = Money(100_000_000_00, Currency.CNY)
    rows = []
    for e in items:
        ln = e.line
        at = ln.created_at.astimezone(CST).strftime(_BILL_TS)
        for kind, minor, title in (
            (alipay_api.TRANSFER_TYPE, ln.amount_minor, "NEXUS-X settlement"),
            (alipay_api.FEE_TYPE, ln.fee_minor, "服务费"),
        ):
            if minor == 0 and kind == alipay_api.FEE_TYPE:
                continue
            balance = Money(balance.minor_units - minor, Currency.CNY)
            flow = str(int(hashlib.sha256(f"{e.row_id}|{kind}".encode()).hexdigest()[:18], 16))
            rows.append(
                [
                    flow,
                    ln.provider_reference,
                    ln.our_reference or "",
                    title,
                    at,
                    ln.counterparty or "",
                    "",
                    major_text(minor, Currency.CNY, -1),
                    f"{balance.to_decimal():f}",
                    "OPENAPI",
                    kind,
                    "",
                ]
            )
    return rows


def alipay_bill_zip(items: list[Entry], bill_date: date) -> bytes:
    """The signcustomer bill of one Beijing day, zipped as Alipay serves it (detail and summary, GBK)."""
    rows = alipay_bill_rows(items)
    start = datetime.combine(bill_date, time.min)
    period = (
        f"#起始日期：[{start:%Y年%m月%d日 %H:%M:%S}]   终止日期：[{start + timedelta(days=1):%Y年%m月%d日 %H:%M:%S}]"
    )
    out_total = sum((Decimal(r[7]) for r in rows), Decimal(0))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for line in ("#支付宝账务明细查询", f"#账号：[{ALIPAY_ACCOUNT}]", period, _BILL_RULE):
        buf.write(line + "\r\n")
    w.writerow(alipay_api.BILL_COLUMNS)
    w.writerows(rows)
    buf.write(_BILL_END + "\r\n")
    buf.write(f"#支出合计：{len(rows)}笔，共{out_total:f}元\r\n#收入合计：0笔，共0.00元\r\n")
    buf.write(f"#导出时间：[{datetime.now(CST):%Y年%m月%d日 %H:%M:%S}]\r\n")
    summary = f"#支付宝账务明细汇总\r\n{period}\r\n支出笔数,支出金额（-元）\r\n{len(rows)},{out_total:f}\r\n"
    name = f"{ALIPAY_ACCOUNT}_{bill_date:%Y%m%d}"
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name + alipay_api.BILL_DETAIL_SUFFIX, buf.getvalue().encode(alipay_api.BILL_ENCODING))
        archive.writestr(f"{name}_账务明细(汇总).csv", summary.encode(alipay_api.BILL_ENCODING))
    return packed.getvalue()


def payfort_row(e: Entry, command: str) -> dict[str, str]:
    ln = e.line
    return {
        "fort_id": ln.provider_reference,
        "merchant_reference": ln.our_reference or "",
        "command": command,
        "amount": str(ln.amount_minor),
        "currency": ln.currency.value,
        "status": "14",
        "transaction_date": ln.created_at.astimezone(timezone(timedelta(hours=4))).isoformat(timespec="seconds"),
        "total_fees": str(ln.fee_minor),
    }
