"""The provider-neutral statement line: what reconciliation reads from any provider's report, file or API.

Every provider reports its payouts in its own shape (a CSV, a JSON statement, a paged API listing); each parser
and each adapter's report call turns those rows into :class:`StatementLine` records, so the matcher sees one
shape whatever the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from domain.money import Currency


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One provider statement row, provider-neutral. Amounts are positive minor units of ``currency``."""

    provider_reference: str
    our_reference: str | None
    amount_minor: int
    fee_minor: int
    currency: Currency
    fx_rate: Decimal | None
    value_date: date
    created_at: datetime
    counterparty: str | None = None


def day_window(day: date) -> tuple[datetime, datetime]:
    """The UTC day ``[start, end)``: a recon day's report holds the lines booked inside it."""
    start = datetime.combine(day, time.min, UTC)
    return start, start + timedelta(days=1)


def booked_on(line: StatementLine, day: date) -> bool:
    start, end = day_window(day)
    return start <= line.created_at < end
