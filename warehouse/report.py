"""The daily reconciliation report: a PDF (reportlab), e-mailed over SMTP and archived.

The PDF is rendered with ``invariant=1`` so the same data gives the same bytes: re-running a day produces an
identical file, which is archived once and mailed once (``report_deliveries`` keys on its SHA-256).
"""

from __future__ import annotations

import hashlib
import shutil
import smtplib
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from domain.money import MINOR_UNIT_EXPONENT, Currency
from domain.variance_rules import BreakClass

TARGETS = {  # spec §6.2
    "automatic_match_rate": Decimal("0.995"),
    "exception_rate": Decimal("0.005"),
    "resolution_hours": Decimal(4),
    "audit_trail_coverage": Decimal(1),
}
NAVY = colors.HexColor("#14213d")
OK = colors.HexColor("#2a9d8f")
BAD = colors.HexColor("#e76f51")


@dataclass
class ReportData:
    recon_date: date
    run: dict[str, Any]  # recon_runs row
    resolution_hours: Decimal | None
    open_exceptions: int
    totals: list[dict[str, Any]]  # kind (bridge|payout|trade), currency, settlements, amount_minor, fee_minor
    breaks_by_class: dict[str, int]
    trend: list[dict[str, Any]]  # recon_date, automatic_match_rate, exceptions
    queue: list[dict[str, Any]]  # top open exceptions
    dq: list[dict[str, Any]]  # suite, expectation, target, success, critical
    engine: str
    tolerances: str
    # Ledger tie-out as of the cut-off (mart_ledger_tieout_as_of): per currency settlements, settlement_kaus_units,
    # ledger_kaus_units, difference_kaus_units, in_flight_movements, in_flight_kaus_units, open_holds,
    # open_hold_kaus_units, capture_refused, capture_refused_kaus_units, payouts, payout_kaus_units.
    ledger: list[dict[str, Any]] = field(default_factory=list)
    open_holds: list[dict[str, Any]] = field(default_factory=list)  # the oldest holds open at the cut-off


def _fmt_amount(minor: int | None, currency: str) -> str:
    if minor is None:
        return "-"
    if currency == "KAUS":
        return f"{Decimal(minor).scaleb(-6):,.2f}"
    exp = MINOR_UNIT_EXPONENT.get(Currency(currency), 2) if currency in Currency.__members__ else 2
    return f"{Decimal(minor).scaleb(-exp):,.{exp}f}"


def _pct(x: Decimal | float | None) -> str:
    return "-" if x is None else f"{Decimal(str(x)) * 100:.2f}%"


def _kpi_rows(data: ReportData) -> list[list[Any]]:
    run = data.run
    rows: list[list[Any]] = [["Metric (spec §6.2)", "Target", "Actual", "Status"]]
    checks = [
        (
            "Automatic match rate",
            "> 99.5%",
            _pct(run["automatic_match_rate"]),
            Decimal(str(run["automatic_match_rate"])) > TARGETS["automatic_match_rate"],
        ),
        (
            "Exception rate",
            "< 0.5%",
            _pct(run["exception_rate"]),
            Decimal(str(run["exception_rate"])) < TARGETS["exception_rate"],
        ),
        (
            "Resolution time",
            "< 4 hours",
            "none resolved yet" if data.resolution_hours is None else f"{data.resolution_hours:.1f} h",
            data.resolution_hours is None or data.resolution_hours < TARGETS["resolution_hours"],
        ),
        (
            "Audit trail coverage",
            "100%",
            _pct(run["audit_trail_coverage"]),
            Decimal(str(run["audit_trail_coverage"])) >= TARGETS["audit_trail_coverage"],
        ),
    ]
    for name, target, actual, ok in checks:
        rows.append([name, target, actual, "MET" if ok else "MISSED"])
    return rows


def _table(rows: list[list[Any]], widths: list[float], status_col: int | None = None, text_cols: int = 1) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1)
    style = [
        ("BACKGROUND", (0, 0), (-1, 0), NAVY),
        ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 8.5),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f1f3f8")]),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#c5cad6")),
        ("ALIGN", (text_cols, 1), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
    ]
    if status_col is not None:
        for i, row in enumerate(rows[1:], start=1):
            color = OK if row[status_col] in ("MET", "PASS") else BAD
            style += [
                ("TEXTCOLOR", (status_col, i), (status_col, i), color),
                ("FONTNAME", (status_col, i), (status_col, i), "Helvetica-Bold"),
            ]
    table.setStyle(TableStyle(style))
    return table


def _bar_chart(by_class: dict[str, int]) -> Drawing:
    drawing = Drawing(170 * mm, 62 * mm)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 12 * mm, 14 * mm, 150 * mm, 42 * mm
    labels = [c.value for c in BreakClass]
    chart.data = [[by_class.get(label, 0) for label in labels]]
    chart.categoryAxis.categoryNames = [label.replace("_", "\n", 1) for label in labels]
    chart.categoryAxis.labels.fontSize = 6.5
    chart.categoryAxis.labels.dy = -2
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = max(5, int(max(chart.data[0]) * 1.25) + 1)
    chart.valueAxis.labels.fontSize = 7
    chart.bars[0].fillColor = BAD
    chart.barLabelFormat = "%d"
    chart.barLabels.fontSize = 7
    chart.barLabels.nudge = 6
    drawing.add(chart)
    drawing.add(String(12 * mm, 59 * mm, "Exceptions by class (today)", fontSize=9, fontName="Helvetica-Bold"))
    return drawing


def _trend_chart(trend: list[dict[str, Any]]) -> Drawing:
    drawing = Drawing(170 * mm, 58 * mm)
    drawing.add(
        String(12 * mm, 54 * mm, "Trend: automatic match rate (%) by recon day", fontSize=9, fontName="Helvetica-Bold")
    )
    if not trend:
        return drawing
    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = 14 * mm, 10 * mm, 148 * mm, 38 * mm
    base = trend[0]["recon_date"]
    # reportlab charts plot floats: these are display coordinates, not money
    points = [
        ((row["recon_date"] - base).days, float(Decimal(str(row["automatic_match_rate"])) * 100)) for row in trend
    ]
    plot.data = [points, [(p[0], 99.5) for p in points]]
    plot.lines[0].strokeColor = NAVY
    plot.lines[0].strokeWidth = 1.6
    plot.lines[0].symbol = makeMarker("FilledCircle", size=4)
    plot.lines[1].strokeColor = OK
    plot.lines[1].strokeDashArray = [3, 2]
    low = min(min(p[1] for p in points), 99.5)
    plot.yValueAxis.valueMin = max(0.0, low - 0.5)
    plot.yValueAxis.valueMax = 100.0
    plot.yValueAxis.labels.fontSize = 7
    plot.xValueAxis.valueMin = 0
    plot.xValueAxis.valueMax = max(1, points[-1][0])
    plot.xValueAxis.valueSteps = [p[0] for p in points]
    plot.xValueAxis.labelTextFormat = lambda v: (base.fromordinal(base.toordinal() + int(v))).strftime("%m-%d")
    plot.xValueAxis.labels.fontSize = 7
    drawing.add(plot)
    drawing.add(String(130 * mm, 50 * mm, "- - target 99.5%", fontSize=7, fillColor=OK))
    return drawing


def render_pdf(data: ReportData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    styles = getSampleStyleSheet()
    h1 = ParagraphStyle("h1", parent=styles["Title"], textColor=NAVY, fontSize=17, spaceAfter=2)
    h2 = ParagraphStyle("h2", parent=styles["Heading2"], textColor=NAVY, fontSize=11.5, spaceBefore=8, spaceAfter=4)
    small = ParagraphStyle("small", parent=styles["Normal"], fontSize=7.5, textColor=colors.HexColor("#555555"))
    run = data.run
    story: list[Any] = [
        Paragraph("NEXUS-X Daily Settlement Reconciliation", h1),
        Paragraph(
            f"Recon day <b>{data.recon_date.isoformat()}</b> (UTC) &nbsp;·&nbsp; "
            f"{run['settlements']:,} settlements decided, {run['auto_matched']:,} matched automatically, "
            f"{run['exceptions']:,} exceptions raised, {run['pending']:,} pending next statement, "
            f"{data.open_exceptions:,} open in the queue",
            styles["Normal"],
        ),
        Spacer(1, 4 * mm),
        _table(_kpi_rows(data), [62 * mm, 32 * mm, 32 * mm, 30 * mm], status_col=3),
        Paragraph("Settlement totals (completed)", h2),
    ]
    story += [
        _table(_totals_rows(data), [34 * mm, 24 * mm, 30 * mm, 44 * mm, 36 * mm], text_cols=2),
        Spacer(1, 3 * mm),
        _bar_chart(data.breaks_by_class),
    ]
    by_class = [["Break class", "Count"]] + [[c.value, f"{data.breaks_by_class.get(c.value, 0):,}"] for c in BreakClass]
    story += [_table(by_class, [70 * mm, 30 * mm]), _trend_chart(data.trend)]
    story += _ledger_section(data, h2, small)
    story.append(Paragraph("Oldest open exceptions", h2))
    story.append(_table(_queue_rows(data), [72 * mm, 32 * mm, 18 * mm, 38 * mm, 14 * mm], text_cols=3))
    story.append(Paragraph("Data quality (Great Expectations)", h2))
    story.append(_table(_dq_rows(data), [70 * mm, 25 * mm, 25 * mm, 25 * mm], status_col=3))
    dq_failed = [r for r in data.dq if not r["success"]]
    if dq_failed:
        story.append(
            Paragraph(
                "Non-critical findings: "
                + "; ".join(f"{r['suite']}.{r['target']} ({r['observed']})" for r in dq_failed),
                small,
            )
        )
    story += [
        Spacer(1, 4 * mm),
        Paragraph(
            f"Variance engine: {data.engine}. Tolerances: {data.tolerances}. Matching tiers: provider reference, "
            "amount/currency/time within tolerance, many-to-one batches. Generated by the NEXUS-X reconciliation DAG.",
            small,
        ),
    ]
    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=16 * mm,
        rightMargin=16 * mm,
        topMargin=14 * mm,
        bottomMargin=14 * mm,
        title=f"NEXUS-X reconciliation {data.recon_date}",
        author="NEXUS-X Settlement Team",
        invariant=1,
    )
    doc.build(story)
    return path


def _kaus(units: int) -> str:
    return _fmt_amount(int(units), "KAUS")


def _ledger_section(data: ReportData, h2: ParagraphStyle, small: ParagraphStyle) -> list[Any]:
    """K-AUS moved by the ledger vs K-AUS in the settlements, and what is reported without being a break: holds
    open at the cut-off (reserved, nothing moved), movements in flight (their settlement recorded after the
    cut-off) and captures refused after payout (exceptions: the payer owes the K-AUS). Holders' payouts are
    settlements of their currency like card payments; the last columns say how much of it was paid out."""
    if not data.ledger:
        return []
    rows = [["Currency", "Settlements", "Settlements K-AUS", "Ledger K-AUS", "Difference", "Payouts", "Paid out K-AUS"]]
    rows += [
        [r["currency"], f"{r['settlements']:,}", _kaus(r["settlement_kaus_units"]), _kaus(r["ledger_kaus_units"]),
         _kaus(r["difference_kaus_units"]), f"{r['payouts']:,}", _kaus(r["payout_kaus_units"])]
        for r in data.ledger
        if r["settlements"]
    ]  # fmt: skip
    total = {k: sum(int(r[k]) for r in data.ledger) for k in data.ledger[0] if k not in ("day", "currency")}
    notes = [
        f"Paid out to holders: {total['payouts']:,} payouts, {_kaus(total['payout_kaus_units'])} K-AUS "
        "(captured through the bridge, in the tie-out above)",
        f"Open holds at the cut-off: {total['open_holds']:,}, {_kaus(total['open_hold_kaus_units'])} K-AUS "
        "reserved, nothing moved yet",
        f"Movements in flight: {total['in_flight_movements']:,}, {_kaus(total['in_flight_kaus_units'])} K-AUS "
        "whose settlement was recorded after the cut-off",
        f"Captures refused after payout: {total['capture_refused']:,}, "
        f"{_kaus(total['capture_refused_kaus_units'])} K-AUS owed by payers (exceptions, class capture_refused)",
    ]
    out: list[Any] = [
        Paragraph("Ledger tie-out (K-AUS, as of the cut-off)", h2),
        _table(rows, [20 * mm, 22 * mm, 30 * mm, 30 * mm, 24 * mm, 20 * mm, 30 * mm]),
        Spacer(1, 2 * mm),
        Paragraph(notes[0], small),
        Paragraph("Reported beside the tie-out, not tie-out breaks:", small),
        *(Paragraph(note, small) for note in notes[1:]),
    ]
    if data.open_holds:
        holds = [["Open hold", "Transaction", "K-AUS held", "Placed (UTC)"]]
        holds += [
            [h["hold_id"], f"{h['settlement_kind'] or '-'} {h['settlement_ref'] or ''}", _kaus(h["held_kaus_units"]),
             f"{h['placed_at']:%m-%d %H:%M:%S}"]
            for h in data.open_holds
        ]  # fmt: skip
        out += [Spacer(1, 2 * mm), _table(holds, [56 * mm, 62 * mm, 26 * mm, 22 * mm], text_cols=2)]
    return out


KIND_NAMES = {"bridge": "Card payments", "payout": "Paid out (holders)", "trade": "P2P trades"}


def _totals_rows(data: ReportData) -> list[list[str]]:
    """Per kind and currency: card payments, holders' payouts (fiat paid out) and trades (K-AUS)."""
    rows = [["Kind", "Currency", "Settlements", "Amount", "Fees"]]
    for row in data.totals:
        rows.append(
            [
                KIND_NAMES.get(row["kind"], row["kind"]),
                row["currency"],
                f"{row['settlements']:,}",
                _fmt_amount(row["amount_minor"], row["currency"]),
                _fmt_amount(row["fee_minor"], row["currency"]),
            ]
        )
    return rows


def _queue_rows(data: ReportData) -> list[list[str]]:
    rows = [["Exception", "Class", "Provider", "Δ amount", "Age (d)"]]
    for row in data.queue:
        eid = row["exception_id"]
        rows.append(
            [
                eid if len(eid) <= 40 else eid[:39] + "…",
                row["break_class"],
                row["provider"] or "-",
                _fmt_amount(row["amount_delta_minor"], row["currency"] or "USD") + f" {row['currency'] or ''}",
                str(row["age_days"]),
            ]
        )
    return rows


def _dq_rows(data: ReportData) -> list[list[str]]:
    """One row per suite; a suite without critical checks is marked a warning."""
    rows = [["Suite", "Checks", "Failed", "Status"]]
    for suite in sorted({r["suite"] for r in data.dq}):
        checks = [r for r in data.dq if r["suite"] == suite]
        failed = [r for r in checks if not r["success"]]
        critical = any(r["critical"] for r in checks)
        rows.append(
            [
                suite + ("" if critical else " (warning)"),
                str(len(checks)),
                str(len(failed)),
                "PASS" if not failed else "FAIL",
            ]
        )
    return rows


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive(path: Path, archive_dir: Path, day: date) -> Path:
    dest = archive_dir / f"{day:%Y}" / f"{day:%m}" / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, dest)
    dest.with_suffix(".pdf.sha256").write_text(f"{sha256(dest)}  {dest.name}\n", encoding="utf-8")
    return dest


def send_email(
    path: Path,
    day: date,
    summary: str,
    *,
    host: str,
    port: int,
    sender: str,
    to: str,
    starttls: bool = False,
    user: str | None = None,
    password: str | None = None,
) -> None:
    msg = EmailMessage()
    msg["Subject"] = f"NEXUS-X reconciliation {day.isoformat()}: {summary}"
    msg["From"] = sender
    msg["To"] = to
    msg.set_content(f"The daily settlement reconciliation for {day.isoformat()} (UTC) is attached.\n\n{summary}\n")
    msg.add_attachment(path.read_bytes(), maintype="application", subtype="pdf", filename=path.name)
    try:
        with smtplib.SMTP(host, port, timeout=30) as smtp:
            if starttls:
                smtp.starttls()
            if user:
                smtp.login(user, password or "")
            smtp.send_message(msg)
    except OSError as exc:
        raise RuntimeError(
            f"could not send the report through SMTP {host}:{port}: {exc}. Check "
            "NEXUS_RECON_SMTP_HOST/PORT; the PDF is kept at " + str(path)
        ) from exc
