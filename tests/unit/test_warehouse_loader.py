"""Snapshot landing (JSONL and Kafka paths) and the SQL project's conventions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from contracts import models as m
from contracts import topics as t
from domain.money import Currency
from warehouse.db import connect, query, scalar
from warehouse.snapshot_loader import SourceRecord, land_records, load_jsonl_day, load_kafka_window
from warehouse.sqlrunner import SQL_DIR, build_models, init_schema, models, render

AT = datetime(2026, 11, 1, 9, tzinfo=UTC)


def _payout(i: int) -> m.PayoutResult:
    return m.PayoutResult(
        payout_id=f"PO-{i}",
        status=m.PayoutStatus.PAID,
        provider=m.Provider.PAYPAL,
        provider_reference=f"PP{i}",
        currency=Currency.USD,
        amount_minor=1000 + i,
        fee_minor=25,
        completed_at=AT + timedelta(seconds=i),
    )


def _rec(i: int, offset: int, value: Any = None, partition: int = 0) -> SourceRecord:
    topic = t.PAYOUT_RESULTS
    return SourceRecord(topic.name, partition, offset, value if value is not None else topic.encode(_payout(i)))


@pytest.fixture
def con() -> Any:
    c = connect()
    init_schema(c)
    yield c
    c.close()


def test_landing_is_idempotent_on_the_event_id(con: Any) -> None:
    records = [_rec(i, i) for i in range(5)] + [_rec(2, 5)]  # offset 5 re-delivers PO-2 (producer retry)
    first = land_records(con, records)
    assert first.landed[t.PAYOUT_RESULTS.name] == 5 and first.duplicates[t.PAYOUT_RESULTS.name] == 1
    again = land_records(con, records)
    assert sum(again.landed.values()) == 0
    assert scalar(con, "SELECT count(*) FROM raw_events") == 5
    statuses = dict(con.execute("SELECT status, count(*) FROM raw_offsets GROUP BY status").fetchall())
    assert statuses == {"landed": 5, "duplicate": 1}
    hw = con.execute("SELECT low_offset, high_offset FROM meta_topic_offsets").fetchall()
    assert hw == [(0, 6)]


def test_an_empty_read_claims_no_offsets_it_did_not_read(con: Any) -> None:
    """A window with no record yet (a later day's, read early) reads (high, high): merged into the range read so
    far it would claim the offsets appended since, which no snapshot read, and fail the completeness check."""
    key = (t.PAYOUT_RESULTS.name, 0)
    land_records(con, [_rec(i, i) for i in range(3)], bounds={key: (0, 3)})
    land_records(con, [], bounds={key: (5, 5)})  # offsets 3 and 4 were appended after the first read
    assert con.execute("SELECT low_offset, high_offset FROM meta_topic_offsets").fetchall() == [(0, 3)]
    land_records(con, [_rec(i, i) for i in range(3, 6)], bounds={key: (3, 6)})
    assert con.execute("SELECT low_offset, high_offset FROM meta_topic_offsets").fetchall() == [(0, 6)]


def test_invalid_messages_are_rejected_with_a_reason(con: Any) -> None:
    bad = json.dumps({**json.loads(t.PAYOUT_RESULTS.encode(_payout(1))), "amount_minor": 10.5})
    stats = land_records(con, [_rec(0, 0), _rec(1, 1, value=bad)])
    assert stats.rejected[t.PAYOUT_RESULTS.name] == 1
    reason = scalar(con, "SELECT reason FROM raw_rejects")
    assert "amount_minor" in reason
    # the rejected offset is still accounted for, so completeness holds
    assert scalar(con, "SELECT count(*) FROM raw_offsets") == 2


def test_jsonl_day_and_missing_export(con: Any, tmp_path: Path) -> None:
    folder = tmp_path / "2026-11-01"
    folder.mkdir()
    rows = [
        json.dumps({"partition": 1, "offset": 10 + i, "value": json.loads(t.PAYOUT_RESULTS.encode(_payout(i)))})
        for i in range(3)
    ]
    (folder / f"{t.PAYOUT_RESULTS.name}.jsonl").write_text("\n".join(rows) + "\n")
    stats = load_jsonl_day(con, tmp_path, date(2026, 11, 1))
    assert stats.landed == {t.PAYOUT_RESULTS.name: 3}
    with pytest.raises(FileNotFoundError, match="no topic export"):
        load_jsonl_day(con, tmp_path, date(2026, 11, 2))


# --------------------------------------------------------------------------- Kafka path with a fake consumer


@dataclass
class _Msg:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:  # (TIMESTAMP_CREATE_TIME, ms): message i is stamped AT + 30 min * i
        return 1, int((AT + timedelta(minutes=30 * self._offset)).timestamp() * 1000)

    def error(self) -> None:
        return None


class _FakeConsumer:
    """Enough of confluent_kafka.Consumer: one partition of payouts.results with 6 messages, 2 per hour."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.msgs = [_Msg(t.PAYOUT_RESULTS.name, 0, i, t.PAYOUT_RESULTS.encode(_payout(i))) for i in range(6)]
        self.queue: list[_Msg] = []

    def list_topics(self, timeout: float) -> Any:
        class Meta:
            topics: ClassVar[dict[str, Any]] = {
                tp.name: type("T", (), {"partitions": {0: None} if tp is t.PAYOUT_RESULTS else {}})()
                for tp in t.TOPICS.values()
            }

        return Meta()

    def offsets_for_times(self, tps: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import TopicPartition

        # message i has timestamp AT + 30 min * i
        out = []
        for tp in tps:
            ts = datetime.fromtimestamp(tp.offset / 1000, UTC)
            first = next((i for i in range(6) if AT + timedelta(minutes=30 * i) >= ts), -1)
            out.append(TopicPartition(tp.topic, tp.partition, first))
        return out

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, 6

    def assign(self, tps: list[Any]) -> None:
        self.queue = [
            msg for tp in tps for msg in self.msgs if msg.partition() == tp.partition and msg.offset() >= tp.offset
        ]

    def consume(self, num_messages: int, timeout: float) -> list[_Msg]:
        out, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return out

    def pause(self, tps: list[Any]) -> None:
        paused = {(tp.topic, tp.partition) for tp in tps}
        self.queue = [msg for msg in self.queue if (msg.topic(), msg.partition()) not in paused]

    def close(self) -> None:
        pass


def test_kafka_window_lands_only_the_window(con: Any) -> None:
    stats = load_kafka_window(
        con,
        AT + timedelta(minutes=30),
        AT + timedelta(minutes=90),
        topics=[t.PAYOUT_RESULTS],
        bootstrap_servers="fake:9092",
        consumer_factory=_FakeConsumer,
        timeout_s=2,
        poll_timeout_s=0.01,
    )
    assert stats.landed == {t.PAYOUT_RESULTS.name: 2}
    assert con.execute("SELECT low_offset, high_offset FROM meta_topic_offsets").fetchall() == [(1, 3)]


# --------------------------------------------------------------------------- SQL project conventions


def test_every_model_declares_its_grain_and_is_documented() -> None:
    readme = (SQL_DIR / "README.md").read_text()
    for layer in ("staging", "marts"):
        for model in models(layer):
            assert model.grain, model.path
            assert f"`{model.name}`" in readme, f"{model.name} is not documented in sql/README.md"


def test_no_sql_file_spells_a_topic_name() -> None:
    names = [re.escape(tp.name) for tp in t.TOPICS.values()]
    pattern = re.compile(r"'(" + "|".join(names) + r")'")
    for path in SQL_DIR.rglob("*.sql"):
        assert not pattern.search(path.read_text()), f"{path} spells a topic name; use {{{{ source('...') }}}}"
    assert "bridge.settlements.completed" in render("{{ source('BRIDGE_SETTLEMENTS_COMPLETED') }}")


def test_models_build_on_an_empty_warehouse(con: Any) -> None:
    built = build_models(con)
    assert {"fct_settlements", "dim_accounts", "mart_settlements_daily", "mart_ledger_tieout"} <= set(built)
    assert query(con, "SELECT * FROM fct_settlements").is_empty()
    assert query(con, "SELECT * FROM mart_ledger_balances_as_of(TIMESTAMPTZ '2026-11-01 00:00:00+00')").is_empty()
