"""The nightly snapshot on a real broker: the recon day's window by record timestamp, late records, idempotence
by event id, and the same day reconciled from Kafka as from its export.

The broker is this module's own (tests/integration/recon_kafka.py says why): every record is produced up front,
in timestamp order, as services would have appended them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts import topics as t
from contracts.bridge_codec import result_json
from contracts.construct import dump_json
from domain.bridge import Phase, Settled, bridge_tx_id_for
from domain.money import Currency
from domain.rails import Provider, Rail, Region
from domain.timeconv import to_ms
from tests.integration.recon_fixtures import seed
from tests.integration.recon_kafka import Row, backdated_broker, event_rows, produce
from warehouse import pipeline
from warehouse.db import connect
from warehouse.settings import ReconSettings

pytestmark = pytest.mark.slow

DAY = date(2026, 11, 10)  # after the seeded period (11-01, 11-02): the windows do not meet
MIDNIGHT = datetime(2026, 11, 11, tzinfo=UTC)  # DAY's end
TOPIC = t.BRIDGE_SETTLEMENTS_COMPLETED
# name -> (completed_at, record timestamp), relative to MIDNIGHT; the settings' window is [-5 min, +30 min).
CASES: dict[str, tuple[timedelta, timedelta]] = {
    "before": (timedelta(days=-1, minutes=-10), timedelta(days=-1, minutes=-10)),  # stamped before the lookback
    "lookback": (timedelta(days=-1, minutes=-2), timedelta(days=-1, minutes=-2)),  # the day before's, re-read
    "day": (timedelta(hours=-14), timedelta(hours=-14)),
    "after_midnight": (timedelta(seconds=-30), timedelta(minutes=10)),  # the day's, appended after midnight
    "next": (timedelta(minutes=20), timedelta(minutes=20)),  # the next day's, inside the late minutes
    "late": (timedelta(seconds=-10), timedelta(minutes=45)),  # the day's, appended after its window closed
}
RESENT_AT = timedelta(hours=-12)  # "day" again: an at-least-once producer's retry
BAD_AT = timedelta(hours=-11)  # a record that breaks its contract


def _settled(request_id: str, completed_at: datetime) -> bytes:
    """A completed card payment's record as the bridge writes it (its codec, not a model)."""
    result = Settled(
        request_id=request_id,
        bridge_tx_id=bridge_tx_id_for(request_id),
        payer_account_id="acct-payer-1",
        merchant_id="merchant-1",
        region=Region.US,
        currency=Currency.USD,
        amount_minor=1250,
        kaus_debited_units=83_333_333,
        rate=Decimal("0.15"),
        rail=Rail.STRIPE_INSTANT,
        primary_rail=Rail.STRIPE_INSTANT,
        rail_substitution=None,
        provider=Provider.STRIPE,
        provider_reference=f"po_{request_id}",
        provider_fee_minor=31,
        cashback_kaus_units=0,
        ecosystem_bonus_kaus_units=0,
        phase_durations_us=tuple((phase, 1000) for phase in Phase),
        total_duration_us=4000,
        completed_at_ms=to_ms(completed_at),
        fingerprint=request_id,
    )
    return dump_json(result_json(result))


def _window_rows() -> list[Row]:
    rows = [
        (TOPIC, name.encode(), _settled(name, MIDNIGHT + completed), to_ms(MIDNIGHT + stamped))
        for name, (completed, stamped) in CASES.items()
    ]
    rows.append((TOPIC, b"day", _settled("day", MIDNIGHT + CASES["day"][0]), to_ms(MIDNIGHT + RESENT_AT)))
    rows.append((TOPIC, b"bad", b'{"request_id": "bad"}', to_ms(MIDNIGHT + BAD_AT)))
    return sorted(rows, key=lambda row: row[3])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("snapshot-kafka")
    period, jsonl_settings = seed(tmp / "jsonl", days=2, per_day=150, breaks=4, seed_value=5)
    with backdated_broker(tmp / "kafka") as bootstrap:
        produce(bootstrap, [*event_rows(period.events), *_window_rows()])  # the period's records come first
        yield {"bootstrap": bootstrap, "period": period, "jsonl": jsonl_settings, "tmp": tmp}


def _kafka_settings(broker: dict[str, Any], name: str) -> ReconSettings:
    return ReconSettings(
        home=broker["tmp"] / name,
        kafka_bootstrap_servers=broker["bootstrap"],
        kafka_group_id=f"recon-test-{name}",
        alert_on_critical=False,
        wait_for_schedule=False,
    )


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = connect(path, read_only=True)
    try:
        return sorted(con.execute(sql).fetchall(), key=repr)
    finally:
        con.close()


def _digest(path: Path, *tables: str) -> str:
    return hashlib.sha256(repr([_rows(path, f"SELECT * FROM {table}") for table in tables]).encode()).hexdigest()


def test_a_day_is_read_by_record_timestamp_and_counts_by_business_time(broker: dict[str, Any]) -> None:
    settings = _kafka_settings(broker, "window")
    assert settings.snapshot_source == "kafka"  # the default
    first = pipeline.snapshot(DAY, settings)
    assert first["source"] == "kafka"
    assert first["window"] == [
        (MIDNIGHT - timedelta(days=1, minutes=5)).isoformat(),
        (MIDNIGHT + timedelta(minutes=30)).isoformat(),
    ]
    assert first["read"] == {TOPIC.name: 6} and first["rejected"] == {TOPIC.name: 1}
    assert first["duplicates"] == {TOPIC.name: 1} and first["late"] == {}
    path = settings.warehouse_path
    landed = _rows(path, f"SELECT event_id FROM raw_events WHERE topic = '{TOPIC.name}'")
    assert landed == [("after_midnight",), ("day",), ("lookback",), ("next",)]
    # the day's settlements are those completed that day, whenever their record was appended
    on_day = _rows(path, f"SELECT settlement_id FROM fct_settlements WHERE settled_date = DATE '{DAY}'")
    assert on_day == [("after_midnight",), ("day",)]

    tables = ("raw_events", "raw_offsets", "raw_rejects", "meta_topic_offsets")
    before = _digest(path, *tables)
    again = pipeline.snapshot(DAY, settings)
    assert again["read"] == first["read"] and again["landed"] == {} and _digest(path, *tables) == before

    following = pipeline.snapshot(DAY + timedelta(days=1), settings)
    assert following["landed"] == {TOPIC.name: 1} and following["late"] == {TOPIC.name: 1}  # "late", once
    assert following["duplicates"] == {TOPIC.name: 2}  # after_midnight and next, read by both windows
    # the two windows overlap: every offset from the first read to the high-water mark is accounted for
    gaps = _rows(
        path,
        """SELECT m.topic, m."partition" FROM meta_topic_offsets m
           WHERE m.high_offset - m.low_offset <> (SELECT count(*) FROM raw_offsets o WHERE o.topic = m.topic
                 AND o."partition" = m."partition" AND o."offset" >= m.low_offset AND o."offset" < m.high_offset)""",
    )
    assert gaps == []


def test_the_same_day_reconciles_alike_from_kafka_and_from_its_export(broker: dict[str, Any]) -> None:
    period, jsonl = broker["period"], broker["jsonl"]
    kafka = _kafka_settings(broker, "alike").model_copy(
        update={"statements_dir": jsonl.statements, "provider_source": "files"}
    )
    day = period.days[0]
    out = {}
    for settings in (jsonl, kafka):
        snap = pipeline.snapshot(day, settings)
        assert snap["rejected"] == {} and snap["late"] == {}
        pipeline.provider_sync(day, settings)
        out[settings.snapshot_source] = pipeline.variance(day, settings)
    assert out["kafka"]["settlements"] > 100 and out["kafka"]["exceptions"] > 0
    assert {k: v for k, v in out["kafka"].items() if k not in ("match_seconds",)} == {
        k: v for k, v in out["jsonl"].items() if k not in ("match_seconds",)
    }
    results = "SELECT * EXCLUDE (recon_date) FROM recon_results"
    assert _rows(kafka.warehouse_path, results) == _rows(jsonl.warehouse_path, results)
    settled = f"SELECT * FROM fct_settlements WHERE settled_date = DATE '{day}'"
    assert _rows(kafka.warehouse_path, settled) == _rows(jsonl.warehouse_path, settled)
