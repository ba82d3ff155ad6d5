"""The integration runs' schema check (tests/support/schema_check.py) catches what it must: a record its published
schema refuses, a key that is not the value's key field, a malformed timestamp; and it exempts only marked records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.examples import EXAMPLES
from contracts.topics import TOPICS
from tests.support.kafka_io import BAD_INPUT_HEADER
from tests.support.schema_check import (
    RecordChecker,
    Report,
    Violation,
    checked_topics,
    marked_bad_input,
    verify,
)

TRADES = TOPICS["energy.trades"]


@pytest.fixture
def trades() -> RecordChecker:
    return RecordChecker.for_topic(TRADES)


def trade(**changes: Any) -> tuple[bytes, bytes]:
    value = json.loads(TRADES.encode(EXAMPLES["energy.trades"])) | changes
    return str(value["market_id"]).encode(), json.dumps(value).encode()


def test_a_record_as_the_platform_writes_it_passes(trades: RecordChecker) -> None:
    assert trades.check(*trade()) is None


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"quantity_wh": 2500.5}, "quantity_wh: 2500.5 is not of type 'integer'"),
        ({"quantity_wh": -5}, "quantity_wh: -5 is less than"),
        ({"colour": "red"}, "Additional properties are not allowed ('colour' was unexpected)"),
        ({"aggressor_side": "HOLD"}, "aggressor_side: 'HOLD' is not one of ['BUY', 'SELL']"),
        ({"executed_at": "2026-11-24 09:00:00"}, "executed_at: '2026-11-24 09:00:00' is not a 'date-time'"),
        ({"executed_at": "2026-13-24T09:00:00Z"}, "executed_at: '2026-13-24T09:00:00Z' is not a 'date-time'"),
    ],
)
def test_a_record_its_schema_refuses_is_reported_with_the_field(
    trades: RecordChecker, changes: dict[str, Any], error: str
) -> None:
    found = trades.check(*trade(**changes))
    assert found is not None and error in found, found


def test_a_missing_field_not_json_and_no_value_are_reported(trades: RecordChecker) -> None:
    key, value = trade()
    without = {k: v for k, v in json.loads(value).items() if k != "sequence"}
    assert "'sequence' is a required property" in str(trades.check(key, json.dumps(without).encode()))
    assert str(trades.check(key, value[:-3])).startswith("not UTF-8 JSON")
    assert trades.check(key, None) == "the record has no value"


def test_a_key_that_is_not_the_value_key_field_is_reported(trades: RecordChecker) -> None:
    _key, value = trade()
    assert trades.check(b"2026-11-24T10:00Z/KR-BUSAN", value) == (
        "record key b'2026-11-24T10:00Z/KR-BUSAN' is not the value's market_id '2026-11-24T10:00Z/KR-SEOUL'"
    )
    assert trades.check(None, value) is not None


def test_a_camel_case_topic_keys_by_its_wire_name() -> None:
    audit = TOPICS["audit.records"]
    value = audit.encode(EXAMPLES["audit.records"])
    checker = RecordChecker.for_topic(audit)
    assert checker.key_property == "transactionId"
    assert checker.check(b"BRIDGE-card-7f3a", value) is None
    assert checker.check(b"BRIDGE-card-other", value) is not None


def test_only_the_platform_written_json_topics_are_checked() -> None:
    names = {t.name for t in checked_topics()}
    assert "energy.orders.events" in names and "platform.deadletters" in names
    assert not names & {"energy.orders", "bridge.requests", "fx.rates", "ledger.commands"}  # upstream
    assert "platform.deadletters.payloads" not in names  # gzip bytes


def test_only_records_carrying_the_bad_input_header_are_exempt() -> None:
    assert marked_bad_input([BAD_INPUT_HEADER])
    assert marked_bad_input([("trace-id", b"x"), BAD_INPUT_HEADER])
    assert not marked_bad_input(None)
    assert not marked_bad_input([(BAD_INPUT_HEADER[0], b"0")])


def test_a_failure_lists_each_record_and_counts_the_rest() -> None:
    report = Report("test broker")
    report.validated.update({"energy.trades": 20})
    report.violations += [Violation("energy.trades", 1, n, "quantity_wh: -5 is less than 0") for n in range(10)]
    text = report.failure_text()
    assert "energy.trades[1]@0: quantity_wh: -5 is less than 0" in text
    assert "energy.trades[1]@7:" in text and "energy.trades[1]@8:" not in text
    assert "and 2 more invalid records on energy.trades" in text
    assert report.failed and "20 records validated" in report.summary()


def test_verify_fails_the_test_with_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = Report("test broker", violations=[Violation("energy.prices", 0, 3, "sequence: -1 is less than 0")])
    monkeypatch.setattr("tests.support.schema_check.check_cluster", lambda *_args: bad)
    monkeypatch.setattr("tests.support.schema_check.REPORTS", [])  # not this session's broker: no summary line
    with pytest.raises(pytest.fail.Exception, match=r"energy.prices\[0\]@3: sequence: -1 is less than 0"):
        verify("localhost:1", "test broker")
