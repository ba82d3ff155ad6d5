"""Provider settlement statements: a writer and a parser per provider, in that provider's own report shape.

Only the columns reconciliation needs are written, named exactly as the provider names them:

========  ==========================================================  =========================================
provider  format                                                      our id / their id / counterparty / FX
========  ==========================================================  =========================================
STRIPE    CSV, "Balance change from activity" itemized report;        ``payment_metadata[nexus_tx_id]`` /
          amounts in major units, lower-case currency, UTC times      ``source_id`` / ``connected_account`` / –
PAYPAL    CSV, Settlement Report (SRF) with RH/FH/SH/CH/SB/SF/...     ``Invoice ID`` / ``Transaction ID`` /
          record rows; unsigned amounts with two implied decimals,    ``Consumer ID`` / –
          direction in "Debit or Credit" columns, dates with offset
WISE      JSON, balance statement (one per currency, collected in     ``details.paymentReference`` /
          an array); signed decimal amounts including fees            ``referenceNumber`` /
                                                                      ``details.recipient.bankAccount`` /
                                                                      ``exchangeDetails.rate``
TOSS      JSON, GET /v1/settlements response array; KRW integers,     ``orderId`` / ``paymentKey`` / – / –
          ``approvedAt`` in KST with offset
ALIPAY    CSV, cross-border settlement file; decimal major units,     ``Partner_transaction_id`` /
          times in Beijing time (UTC+8) without an offset             ``Transaction_id`` / – / ``Rate``
PAYPAY    CSV, PayPay for Business transaction history export (取引    ``加盟店決済ID`` (both) / – / –
          履歴); yen integers, JST times without an offset; PayPay
          publishes no report API
PAYFORT   CSV, APS transaction export with the Reporting API's        ``merchant_reference`` / ``fort_id`` / –
          columns (minor units, ISO times with offset)
========  ==========================================================  =========================================

Writers take neutral :class:`StatementLine` records (the provider simulator calls them); parsers return the same
records, so ``parse(write(lines)) == lines`` for every provider. Money never goes through float: JSON numbers are
read as Decimal and written from Decimal text. Where a file has the shape of a provider's API answer (Toss, Wise,
PayFort), the row is read by the same function the adapter's report call uses. The line type itself lives in
:mod:`domain.statements`, where the adapters' report calls can produce it too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from contracts.models import Provider
from domain.money import MINOR_UNIT_EXPONENT, Currency, Money
from domain.statements import StatementLine as StatementLine  # re-exported: the warehouse's line type
from streams.bridge.providers import payfort as payfort_api
from streams.bridge.providers import toss as toss_api
from streams.bridge.providers import wise as wise_api

KST = timezone(timedelta(hours=9), "KST")
CST = timezone(timedelta(hours=8), "CST")  # Alipay files: Beijing time, no offset written
JST = timezone(timedelta(hours=9), "JST")


class StatementFormatError(ValueError):
    """A statement file does not have the provider's shape; the message says which file, row and field."""


# --------------------------------------------------------------------------- helpers


def _major(amount_minor: int, currency: Currency) -> Decimal:
    return Money(amount_minor, currency).to_decimal()


def _minor(amount: Decimal | str, currency: Currency, where: str) -> int:
    try:
        return Money.from_decimal(Decimal(str(amount).strip()), currency).minor_units
    except (ArithmeticError, ValueError) as exc:
        raise StatementFormatError(f"{where}: {amount!r} is not an amount in {currency}: {exc}") from exc


def _currency(code: str, where: str) -> Currency:
    try:
        return Currency(code.strip().upper())
    except ValueError:
        raise StatementFormatError(f"{where}: unknown currency {code!r}; supported: {', '.join(Currency)}") from None


def _rate_text(rate: Decimal, places: int) -> str:
    return f"{rate.quantize(Decimal(1).scaleb(-places)):f}"


def _json_dump(obj: Any) -> str:
    """JSON with Decimal written as a number literal (never via float)."""
    marker = "__DECIMAL__"

    def default(o: Any) -> Any:
        if isinstance(o, Decimal):
            return f"{marker}{o:f}"
        raise TypeError(type(o))

    text = json.dumps(obj, default=default, indent=1, ensure_ascii=False)
    return re.sub(rf'"{marker}(-?[0-9.]+)"', r"\1", text)


def _json_load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise StatementFormatError(f"{path}: not valid JSON ({exc})") from exc


def _require(row: dict[str, str], columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise StatementFormatError(f"{where}: missing column(s) {missing}; is this the right provider's file?")


def _write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _write_csv(path: Path, columns: list[str], rows: Iterable[list[str]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return _write_text(path, buf.getvalue())


def _csv_rows(path: Path, columns: list[str], encoding: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Each data row with its ``file:line`` (for messages), checked to have the provider's columns."""
    with Path(path).open(newline="", encoding=encoding) as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{path}:{i}"
            _require(row, columns, where)
            yield where, row


# --------------------------------------------------------------------------- Stripe

STRIPE_COLUMNS = [
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "connected_account",
    "payment_metadata[nexus_tx_id]",
]
_STRIPE_TS = "%Y-%m-%d %H:%M:%S"


def write_stripe_statement(lines: list[StatementLine], path: Path) -> Path:
    return _write_csv(path, STRIPE_COLUMNS, map(_stripe_row, lines))


def _stripe_row(ln: StatementLine) -> list[str]:
    gross = -_major(ln.amount_minor, ln.currency)  # a payout leaves the balance
    fee = _major(ln.fee_minor, ln.currency)
    return [
        "txn_" + ln.provider_reference.removeprefix("po_"),
        ln.created_at.astimezone(UTC).strftime(_STRIPE_TS),
        datetime.combine(ln.value_date, datetime.min.time()).strftime(_STRIPE_TS),
        ln.currency.value.lower(),
        f"{gross:f}",
        f"{fee:f}",
        f"{gross - fee:f}",
        "payout",
        ln.provider_reference,
        "NEXUS-X settlement",
        ln.counterparty or "",
        ln.our_reference or "",
    ]


def parse_stripe_statement(path: Path) -> list[StatementLine]:
    out = []
    for where, row in _csv_rows(path, STRIPE_COLUMNS, "utf-8"):
        ccy = _currency(row["currency"], where)
        gross = _minor(row["gross"].lstrip("-"), ccy, where + " gross")
        out.append(
            StatementLine(
                provider_reference=row["source_id"],
                our_reference=row["payment_metadata[nexus_tx_id]"] or None,
                amount_minor=gross,
                fee_minor=_minor(row["fee"], ccy, where + " fee"),
                currency=ccy,
                fx_rate=None,
                value_date=datetime.strptime(row["available_on_utc"], _STRIPE_TS).date(),
                created_at=datetime.strptime(row["created_utc"], _STRIPE_TS).replace(tzinfo=UTC),
                counterparty=row["connected_account"] or None,
            )
        )
    return out


# --------------------------------------------------------------------------- PayPal Settlement Report (SRF)

PAYPAL_COLUMNS = [
    "Transaction ID",
    "Invoice ID",
    "PayPal Reference ID",
    "PayPal Reference ID Type",
    "Transaction Event Code",
    "Transaction Initiation Date",
    "Transaction Completion Date",
    "Transaction Debit or Credit",
    "Gross Transaction Amount",
    "Gross Transaction Currency",
    "Fee Debit or Credit",
    "Fee Amount",
    "Fee Currency",
    "Custom Field",
    "Consumer ID",
]
_PAYPAL_TS = "%Y/%m/%d %H:%M:%S %z"
_PAYPAL_IMPLIED_DECIMALS = 2  # every currency, e.g. 100.00 USD and 100 JPY are both 10000


def _paypal_amount(minor: int, ccy: Currency) -> str:
    return str(minor * 10 ** (_PAYPAL_IMPLIED_DECIMALS - MINOR_UNIT_EXPONENT[ccy]))


def _paypal_minor(text: str, ccy: Currency, where: str) -> int:
    if not text.isdigit():
        raise StatementFormatError(f"{where}: PayPal amounts are unsigned integers, got {text!r}")
    scale = 10 ** (_PAYPAL_IMPLIED_DECIMALS - MINOR_UNIT_EXPONENT[ccy])
    value, rest = divmod(int(text), scale)
    if rest:
        raise StatementFormatError(f"{where}: {text} has more precision than {ccy} allows")
    return value


def write_paypal_statement(lines: list[StatementLine], path: Path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    day = min((ln.created_at for ln in lines), default=datetime.now(UTC)).astimezone(UTC)
    w.writerow(["RH", day.strftime(_PAYPAL_TS), "A", "NEXUSXMERCHANT", "011"])
    w.writerow(["FH", "01"])
    w.writerow(
        ["SH", day.strftime("%Y/%m/%d 00:00:00 +0000"), day.strftime("%Y/%m/%d 23:59:59 +0000"), "NEXUSXMERCHANT", ""]
    )
    w.writerow(["CH", *PAYPAL_COLUMNS])
    for ln in lines:
        ts = ln.created_at.astimezone(UTC).strftime(_PAYPAL_TS)
        done = datetime.combine(ln.value_date, ln.created_at.astimezone(UTC).time(), UTC).strftime(_PAYPAL_TS)
        w.writerow(
            [
                "SB",
                ln.provider_reference,
                ln.our_reference or "",
                f"BATCH-{ln.provider_reference}" if ln.counterparty else "",
                "TXN" if ln.counterparty else "",
                "T0001",
                ts,
                done,
                "DR",
                _paypal_amount(ln.amount_minor, ln.currency),
                ln.currency.value,
                "DR",
                _paypal_amount(ln.fee_minor, ln.currency),
                ln.currency.value,
                "",
                ln.counterparty or "",
            ]
        )
    w.writerow(["SF", str(len(lines))])
    w.writerow(["SC", str(len(lines))])
    w.writerow(["RF", str(len(lines))])
    w.writerow(["RC", str(len(lines))])
    w.writerow(["FF", str(len(lines))])
    return _write_text(path, buf.getvalue())


def parse_paypal_statement(path: Path) -> list[StatementLine]:
    out: list[StatementLine] = []
    header: list[str] | None = None
    body_rows = 0
    footer_count: int | None = None
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        for i, rec in enumerate(csv.reader(fh), start=1):
            if not rec:
                continue
            kind, fields = rec[0], rec[1:]
            where = f"{path}:{i}"
            if kind == "CH":
                header = fields
            elif kind == "SB":
                if header is None:
                    raise StatementFormatError(f"{where}: SB row before the CH column header row")
                row = dict(zip(header, fields, strict=False))
                _require(row, PAYPAL_COLUMNS, where)
                ccy = _currency(row["Gross Transaction Currency"], where)
                fee_ccy = _currency(row["Fee Currency"] or ccy.value, where)
                if fee_ccy != ccy:
                    raise StatementFormatError(f"{where}: fee in {fee_ccy} on a {ccy} transaction is not supported")
                out.append(
                    StatementLine(
                        provider_reference=row["Transaction ID"],
                        our_reference=row["Invoice ID"] or None,
                        amount_minor=_paypal_minor(row["Gross Transaction Amount"], ccy, where),
                        fee_minor=_paypal_minor(row["Fee Amount"] or "0", ccy, where),
                        currency=ccy,
                        fx_rate=None,
                        value_date=datetime.strptime(row["Transaction Completion Date"], _PAYPAL_TS)
                        .astimezone(UTC)
                        .date(),
                        created_at=datetime.strptime(row["Transaction Initiation Date"], _PAYPAL_TS).astimezone(UTC),
                        counterparty=row["Consumer ID"] or None,
                    )
                )
                body_rows += 1
            elif kind == "SF":
                footer_count = int(fields[0])
    if footer_count is not None and footer_count != body_rows:
        raise StatementFormatError(f"{path}: SF footer says {footer_count} rows, file has {body_rows} (truncated?)")
    return out


# --------------------------------------------------------------------------- Wise balance statement (JSON)


def _wise_money(minor: int, ccy: Currency, sign: int = 1) -> dict[str, Any]:
    return {"value": sign * _major(minor, ccy), "currency": ccy.value}


def wise_transaction(ln: StatementLine) -> dict[str, Any]:
    """A line as a transaction of a Wise balance statement (a DEBIT for a transfer, fees included)."""
    ccy = ln.currency
    return {
        "type": "DEBIT",
        "date": ln.created_at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "amount": _wise_money(ln.amount_minor + ln.fee_minor, ccy, -1),  # total debited, fees included
        "totalFees": _wise_money(ln.fee_minor, ccy),
        "details": {
            "type": "TRANSFER",
            "description": f"Sent money to {ln.counterparty or 'merchant'}",
            "recipient": {"name": ln.counterparty or "", "bankAccount": ln.counterparty or ""},
            "paymentReference": ln.our_reference or "",
        },
        "exchangeDetails": None
        if ln.fx_rate is None
        else {"toAmount": _wise_money(ln.amount_minor, ccy), "rate": ln.fx_rate},
        "valueDate": ln.value_date.isoformat(),
        "referenceNumber": wise_api.TRANSFER_PREFIX + ln.provider_reference,
    }


def wise_statement(ccy: Currency, lines: list[StatementLine], query: dict[str, Any] | None = None) -> dict[str, Any]:
    """One currency's balance statement, as Wise's statement.json answers it."""
    return {
        "accountHolder": {"type": "BUSINESS", "businessName": "NEXUS-X"},
        "issuer": {"name": "Wise Payments Limited"},
        "transactions": [wise_transaction(ln) for ln in lines],
        "query": {"currency": ccy.value, "type": "COMPACT", **(query or {})},
    }


def write_wise_statement(lines: list[StatementLine], path: Path) -> Path:
    by_ccy: dict[Currency, list[StatementLine]] = {}
    for ln in lines:
        by_ccy.setdefault(ln.currency, []).append(ln)
    statements = [wise_statement(ccy, items) for ccy, items in sorted(by_ccy.items())]
    return _write_text(path, _json_dump(statements) + "\n")


def json_text(obj: Any) -> str:
    """JSON as the statements write it: Decimal as a number literal, never via float."""
    return _json_dump(obj)


def parse_wise_statement(path: Path) -> list[StatementLine]:
    data = _json_load(Path(path))
    if isinstance(data, dict):
        data = [data]
    out = []
    for s_i, statement in enumerate(data):
        try:
            out.extend(wise_api.statement_lines(statement))
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise StatementFormatError(f"{path}: statements[{s_i}]: {type(exc).__name__}: {exc}") from exc
    return out


# --------------------------------------------------------------------------- Toss Payments settlements (JSON)


def toss_settlement_row(ln: StatementLine, transaction_key: str | None = None) -> dict[str, Any]:
    """A line as a record of Toss' GET /v1/settlements answer (the file is that answer, saved)."""
    if ln.currency is not Currency.KRW:
        raise ValueError(f"Toss Payments settles KRW only, got {ln.currency} for {ln.provider_reference}")
    vat = ln.fee_minor // 11  # fee quoted VAT-inclusive (10%)
    return {
        "mId": "nexusx",
        "paymentKey": ln.provider_reference,
        "transactionKey": transaction_key or "tr_" + ln.provider_reference,
        "orderId": ln.our_reference or "",
        "currency": "KRW",
        "method": "TRANSFER",
        "amount": ln.amount_minor,
        "interestFee": 0,
        "fees": [{"type": "BASE", "fee": ln.fee_minor - vat}],
        "supplyAmount": ln.fee_minor - vat,
        "vat": vat,
        "payOutAmount": ln.amount_minor - ln.fee_minor,
        "approvedAt": ln.created_at.astimezone(KST).isoformat(timespec="seconds"),
        "soldDate": ln.created_at.astimezone(KST).date().isoformat(),
        "paidOutDate": ln.value_date.isoformat(),
    }


def write_toss_statement(lines: list[StatementLine], path: Path) -> Path:
    return _write_text(path, _json_dump([toss_settlement_row(ln) for ln in lines]) + "\n")


def parse_toss_statement(path: Path) -> list[StatementLine]:
    data = _json_load(Path(path))
    out = []
    for i, row in enumerate(data):
        try:
            out.append(toss_api.settlement_line(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise StatementFormatError(f"{path}: [{i}]: {type(exc).__name__}: {exc}") from exc
    return out


# --------------------------------------------------------------------------- Alipay cross-border settlement file

ALIPAY_COLUMNS = [
    "Partner_transaction_id",
    "Transaction_id",
    "Amount",
    "Rmb_amount",
    "Fee",
    "Settlement",
    "Rmb_settlement",
    "Currency",
    "Rate",
    "Payment_time",
    "Settlement_time",
    "Type",
    "Status",
    "Remarks",
]
_ALIPAY_TS = "%Y-%m-%d %H:%M:%S"


def write_alipay_statement(lines: list[StatementLine], path: Path) -> Path:
    return _write_csv(path, ALIPAY_COLUMNS, map(_alipay_row, lines))


def _alipay_row(ln: StatementLine) -> list[str]:
    amount = _major(ln.amount_minor, ln.currency)
    fee = _major(ln.fee_minor, ln.currency)
    rate = ln.fx_rate if ln.fx_rate is not None else Decimal(1)
    return [
        ln.our_reference or "",
        ln.provider_reference,
        f"{amount:f}",
        f"{(amount * rate).quantize(Decimal('0.01')):f}",
        f"{fee:f}",
        f"{amount - fee:f}",
        f"{((amount - fee) * rate).quantize(Decimal('0.01')):f}",
        ln.currency.value,
        _rate_text(ln.fx_rate, 8) if ln.fx_rate is not None else "",
        ln.created_at.astimezone(CST).strftime(_ALIPAY_TS),
        datetime.combine(ln.value_date, datetime.min.time()).strftime(_ALIPAY_TS),
        "P",
        "L",
        ln.counterparty or "",
    ]


def parse_alipay_statement(path: Path) -> list[StatementLine]:
    out = []
    for where, row in _csv_rows(path, ALIPAY_COLUMNS, "utf-8-sig"):
        if row["Type"] != "P":
            continue  # refunds (R) are not settlements of ours
        ccy = _currency(row["Currency"], where)
        out.append(
            StatementLine(
                provider_reference=row["Transaction_id"],
                our_reference=row["Partner_transaction_id"] or None,
                amount_minor=_minor(row["Amount"], ccy, where + " Amount"),
                fee_minor=_minor(row["Fee"], ccy, where + " Fee"),
                currency=ccy,
                fx_rate=Decimal(row["Rate"]).normalize() if row["Rate"] else None,
                value_date=datetime.strptime(row["Settlement_time"], _ALIPAY_TS).date(),
                created_at=datetime.strptime(row["Payment_time"], _ALIPAY_TS).replace(tzinfo=CST).astimezone(UTC),
                counterparty=row["Remarks"] or None,
            )
        )
    return out


# --------------------------------------------------------------------------- PayPay for Business transaction history

PAYPAY_COLUMNS = [
    "取引番号",
    "加盟店ID",
    "屋号",
    "店舗ID",
    "店舗名",
    "端末番号/PosID",
    "取引ステータス",
    "取引日時",
    "取引金額",
    "レシート番号",
    "支払い方法",
    "支払い詳細項目",
    "取引確定期限",
    "加盟店決済ID",
    # Not in PayPay's documented export: the fee per transaction, which the portal shows under 入金 > 対象取引.
    # To confirm with PayPay; without it a fee difference could not be seen per payout.
    "手数料",
]
PAYPAY_DONE = "取引完了"
_PAYPAY_TS = "%Y/%m/%d %H:%M:%S"
PAYPAY_MERCHANT_ID = "38201699000000001"


def write_paypay_statement(lines: list[StatementLine], path: Path) -> Path:
    rows = []
    for ln in lines:
        if ln.currency is not Currency.JPY:
            raise ValueError(f"PayPay pays JPY only, got {ln.currency} for {ln.provider_reference}")
        rows.append(
            [
                str(int(hashlib.sha256(ln.provider_reference.encode()).hexdigest()[:15], 16)),
                PAYPAY_MERCHANT_ID,
                "NEXUS-X",
                "",
                "",
                "",
                PAYPAY_DONE,
                ln.created_at.astimezone(JST).strftime(_PAYPAY_TS),
                str(ln.amount_minor),
                "",
                "PayPay(残高)",
                "",
                "",
                ln.provider_reference,
                str(ln.fee_minor),
            ]
        )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PAYPAY_COLUMNS)
    w.writerows(rows)
    return _write_text(path, "\ufeff" + buf.getvalue())


def parse_paypay_statement(path: Path) -> list[StatementLine]:
    """Completed transactions; 加盟店決済ID is our merchantCashbackId, the reference the bridge recorded."""
    out = []
    for where, row in _csv_rows(path, PAYPAY_COLUMNS, "utf-8-sig"):
        if row["取引ステータス"] != PAYPAY_DONE:
            continue
        created = datetime.strptime(row["取引日時"], _PAYPAY_TS).replace(tzinfo=JST).astimezone(UTC)
        reference = row["加盟店決済ID"] or row["取引番号"]
        try:
            amount, fee = int(row["取引金額"]), int(row["手数料"] or 0)
        except ValueError as exc:
            raise StatementFormatError(f"{where}: yen amounts are integers ({exc})") from exc
        out.append(
            StatementLine(
                provider_reference=reference,
                our_reference=row["加盟店決済ID"] or None,
                amount_minor=amount,
                fee_minor=fee,
                currency=Currency.JPY,
                fx_rate=None,
                value_date=created.date(),
                created_at=created,
                counterparty=None,
            )
        )
    return out


# --------------------------------------------------------------------------- PayFort (APS) transaction export

PAYFORT_COLUMNS = list(payfort_api.REPORT_COLUMNS)
PAYFORT_ACCEPTED_STATUS = "14"


def write_payfort_statement(lines: list[StatementLine], path: Path) -> Path:
    return _write_csv(
        path,
        PAYFORT_COLUMNS,
        (
            [
                ln.provider_reference,
                ln.our_reference or "",
                "PAYOUT",
                str(ln.amount_minor),
                ln.currency.value,
                PAYFORT_ACCEPTED_STATUS,
                ln.created_at.astimezone(UTC).isoformat(timespec="seconds"),
                str(ln.fee_minor),
            ]
            for ln in lines
        ),
    )


def parse_payfort_statement(path: Path) -> list[StatementLine]:
    """The export of the payout command (APS filters it in the back office), rows with an accepted status."""
    out = []
    for where, row in _csv_rows(path, PAYFORT_COLUMNS, "utf-8-sig"):
        if row["status"][:2] not in payfort_api.ACCEPTED_STATUSES:
            continue
        try:
            out.append(payfort_api.report_row_line(row))
        except (KeyError, ValueError) as exc:
            raise StatementFormatError(f"{where}: {type(exc).__name__}: {exc}") from exc
    return out


# --------------------------------------------------------------------------- registry

Writer = Callable[[list[StatementLine], Path], Path]
Parser = Callable[[Path], list[StatementLine]]


@dataclass(frozen=True)
class StatementFormat:
    provider: Provider
    filename: str
    write: Writer
    parse: Parser
    reports_fx: bool
    rate_places: int | None  # decimal places the provider publishes rates with


FORMATS: dict[Provider, StatementFormat] = {
    Provider.STRIPE: StatementFormat(
        Provider.STRIPE,
        "stripe_balance_change_from_activity.csv",
        write_stripe_statement,
        parse_stripe_statement,
        False,
        None,
    ),
    Provider.PAYPAL: StatementFormat(
        Provider.PAYPAL, "paypal_STL.csv", write_paypal_statement, parse_paypal_statement, False, None
    ),
    Provider.WISE: StatementFormat(
        Provider.WISE, "wise_balance_statements.json", write_wise_statement, parse_wise_statement, True, 6
    ),
    Provider.TOSS: StatementFormat(
        Provider.TOSS, "toss_settlements.json", write_toss_statement, parse_toss_statement, False, None
    ),
    Provider.ALIPAY: StatementFormat(
        Provider.ALIPAY, "alipay_settle.csv", write_alipay_statement, parse_alipay_statement, True, 8
    ),
    Provider.PAYPAY: StatementFormat(
        Provider.PAYPAY, "paypay_transactions.csv", write_paypay_statement, parse_paypay_statement, False, None
    ),
    Provider.PAYFORT: StatementFormat(
        Provider.PAYFORT, "payfort_transactions.csv", write_payfort_statement, parse_payfort_statement, False, None
    ),
}


def assign_line_ids(provider: Provider, statement_day: date, lines: Iterable[StatementLine]) -> list[str]:
    """Stable ids: ``PROVIDER:statement-day:provider-reference``, ``#n`` for the n-th repeat in one statement.

    Re-importing a statement yields the same ids (idempotent); the same reference on another day's statement is
    a different line (and so a duplicate the matcher can see).
    """
    seen: dict[str, int] = {}
    ids = []
    for ln in lines:
        n = seen.get(ln.provider_reference, 0) + 1
        seen[ln.provider_reference] = n
        base = f"{provider.value}:{statement_day.isoformat()}:{ln.provider_reference}"
        ids.append(base if n == 1 else f"{base}#{n}")
    return ids


def statement_path(statements_dir: Path, day: date, provider: Provider) -> Path:
    return Path(statements_dir) / day.isoformat() / FORMATS[provider].filename


def write_statement(provider: Provider, lines: list[StatementLine], statements_dir: Path, day: date) -> Path:
    return FORMATS[provider].write(lines, statement_path(statements_dir, day, provider))


def parse_statement(provider: Provider, path: Path) -> list[StatementLine]:
    return FORMATS[provider].parse(path)
