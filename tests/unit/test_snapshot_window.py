"""The snapshot's defaults and its rule for late records (the Kafka reads themselves: test_snapshot_kafka.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from contracts import models as m
from contracts import topics as t
from domain.money import Currency
from domain.timeconv import to_ms
from warehouse.db import connect
from warehouse.settings import ReconSettings, recon_day_for
from warehouse.snapshot_loader import EVENT_ID_FIELD, SNAPSHOT_TOPICS, SourceRecord, land_records
from warehouse.sqlrunner import init_schema

DAY = date(2026, 11, 1)
MIDNIGHT = datetime(2026, 11, 2, tzinfo=UTC)  # DAY's end


@pytest.fixture
def con() -> Any:
    c = connect()
    init_schema(c)
    yield c
    c.close()


def test_the_snapshot_reads_the_registry_topics_the_warehouse_consumes_by_default() -> None:
    consumed = {topic.name for topic in t.TOPICS.values() if t.Component.WAREHOUSE in topic.consumers}
    # governance.multisig is read whole by the correction check (a request's state changes over days), not by day
    assert {topic.name for topic in SNAPSHOT_TOPICS} == consumed - {t.GOVERNANCE_MULTISIG.name}
    assert EVENT_ID_FIELD[t.AUDIT_RECORDS.name] == "audit_id"  # the registry's identity, `auditId` on the wire
    assert ReconSettings.model_fields["snapshot_source"].default == "kafka"


def test_the_window_of_a_recon_day_runs_from_before_midnight_to_after_the_next() -> None:
    settings = ReconSettings(snapshot_lookback_minutes=5, snapshot_late_minutes=30)
    assert settings.snapshot_window(DAY) == (
        MIDNIGHT - timedelta(days=1, minutes=5),
        MIDNIGHT + timedelta(minutes=30),
    )
    assert recon_day_for(datetime(2026, 11, 2, 1, tzinfo=UTC)) == DAY  # the 01:00 run reconciles the day before


def _payout(payout_id: str, completed_at: datetime) -> bytes:
    return t.PAYOUT_RESULTS.encode(
        m.PayoutResult(
            payout_id=payout_id,
            status=m.PayoutStatus.PAID,
            provider=m.Provider.PAYPAL,
            provider_reference=f"PP-{payout_id}",
            currency=Currency.USD,
            amount_minor=1000,
            fee_minor=25,
            completed_at=completed_at,
        )
    )


def test_an_event_is_late_when_its_record_comes_after_its_days_window_closed(con: Any) -> None:
    completed = MIDNIGHT - timedelta(seconds=5)
    stamps = {
        "in-grace": MIDNIGHT + timedelta(minutes=29, seconds=59),
        "late": MIDNIGHT + timedelta(minutes=30),
        "next-day": MIDNIGHT + timedelta(hours=2),
    }
    records = [
        SourceRecord(t.PAYOUT_RESULTS.name, 0, i, _payout(name, completed), to_ms(stamp))
        for i, (name, stamp) in enumerate(stamps.items())
    ]
    records.append(SourceRecord(t.PAYOUT_RESULTS.name, 0, 3, _payout("exported", completed)))  # no timestamp
    stats = land_records(con, records, late_minutes=30)
    assert stats.landed == {t.PAYOUT_RESULTS.name: 4}
    assert stats.late == {t.PAYOUT_RESULTS.name: 2}  # "late" and "next-day"
    assert len(stats.batch_seconds) == 1
    again = land_records(con, records, late_minutes=30)  # landed once: not late twice
    assert again.landed == {} and again.late == {}
