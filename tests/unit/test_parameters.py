"""Governed parameters (domain/parameters.py) and the compacted-topic follower the bridge and the payouts service
read them with (streams/kafka/compacted_follower.py, streams/bridge/parameter_listener.py, pause_listener.py):
names and ranges, the defaults, a record that does not validate is skipped (the previous value stands), a tombstone
restores the default, and the pause still fails closed until the topic is read to its end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from contracts import models as m
from contracts.topics import GOVERNANCE_PARAMETERS, GOVERNANCE_PAUSE, Topic
from domain import parameters
from domain.cashback import PayerTier
from streams.bridge.parameter_listener import ParameterListener
from streams.bridge.pause_listener import PauseListener

T0 = datetime(2026, 12, 1, tzinfo=UTC)
GOLD = parameters.cashback_name(PayerTier.GOLD)


def test_every_parameter_parses_its_range_and_refuses_outside_it() -> None:
    for p in parameters.PARAMETERS.values():
        assert p.minimum <= p.default <= p.maximum
        assert parameters.parse(p.name, str(p.minimum)) == p.minimum
        assert parameters.parse(p.name, str(p.maximum)) == p.maximum
        with pytest.raises(parameters.InvalidParameter, match="must be from"):
            parameters.parse(p.name, str(p.maximum + 1))
    assert set(parameters.PARAMETERS) == {
        "payouts.auto_approval_limit_kaus_units",
        "fx.slippage_limit_bps",
        "cashback.ecosystem_bonus_bps_of_cashback",
        *(f"cashback.bps.{t}" for t in PayerTier),
    }
    for bad in ("", "1.5", "-3", "١٢", " 7"):
        with pytest.raises(parameters.InvalidParameter, match="whole number"):
            parameters.parse(GOLD, bad)
    with pytest.raises(parameters.InvalidParameter, match="not a platform parameter"):
        parameters.parse("cashback.bps.gold", "100")


def test_the_value_in_force_is_the_latest_change_else_the_default() -> None:
    assert parameters.value_of({}, parameters.AUTO_APPROVAL_LIMIT) == 50_000 * 10**6
    assert parameters.value_of({parameters.AUTO_APPROVAL_LIMIT: 7}, parameters.AUTO_APPROVAL_LIMIT) == 7
    rates = parameters.reward_rates({GOLD: 333})
    assert rates.cashback_bps[PayerTier.GOLD] == 333 and rates.cashback_bps[PayerTier.DIAMOND] == 500


# --------------------------------------------------------------------------- the follower, on a fake log


class KeyedLog:
    """confluent_kafka.Consumer as a follower uses it: one partition of ``topic``; records appended by the test."""

    def __init__(self, topic: Topic, at_start: list[tuple[str, bytes | None]]) -> None:
        self.topic = topic
        self.log = list(at_start)
        self.position = 0
        self.lock = threading.Lock()

    def list_topics(self, name: str, timeout: float) -> Any:
        meta = type("Meta", (), {})()
        meta.topics = {name: type("T", (), {"partitions": {0: None}})()}
        return meta

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, len(self.log)

    def assign(self, partitions: list[TopicPartition]) -> None:
        assert [tp.partition for tp in partitions] == [0]

    def append(self, key: str, value: bytes | None) -> None:
        with self.lock:
            self.log.append((key, value))

    def consume(self, n: int, timeout: float) -> list[Any]:
        with self.lock:
            batch = list(enumerate(self.log))[self.position : self.position + n]
            self.position += len(batch)
        if not batch:
            time.sleep(min(timeout, 0.01))
        return [Msg(key, value, offset) for offset, (key, value) in batch]

    def close(self) -> None:
        pass


class Msg:
    def __init__(self, key: str, value: bytes | None, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def key(self) -> bytes:
        return self._key.encode()

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def setting(name: str, value: str, rid: str = "gov-1") -> tuple[str, bytes]:
    record = m.ParameterSetting(name=name, value=value, request_id=rid, updated_at=T0)
    return name, GOVERNANCE_PARAMETERS.encode(record)


def wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_parameters_follow_the_latest_valid_record_per_name(caplog: pytest.LogCaptureFixture) -> None:
    log = KeyedLog(GOVERNANCE_PARAMETERS, [setting(GOLD, "350"), setting(parameters.SLIPPAGE_LIMIT, "45")])
    listener = ParameterListener("unused:9092", GOVERNANCE_PARAMETERS, consumer=log)  # type: ignore[arg-type]
    assert listener.values_now == {}  # not read yet: the defaults
    listener.start()
    try:
        assert listener.wait_ready(5)
        assert listener.values_now == {GOLD: 350, parameters.SLIPPAGE_LIMIT: 45}
        seen = listener.values_now
        log.append(*setting(GOLD, "10001", "gov-bad"))  # out of range: skipped, 350 stands
        log.append("fee_bps", GOVERNANCE_PARAMETERS.encode(
            m.ParameterSetting(name="fee_bps", value="1", request_id="gov-x", updated_at=T0)))  # fmt: skip
        log.append(GOLD, b"{not json")
        wait_for(lambda: listener.records_skipped == 3)
        assert listener.values_now is seen  # unchanged: the same mapping
        log.append(*setting(GOLD, "400", "gov-2"))
        wait_for(lambda: listener.values_now.get(GOLD) == 400)
        assert listener.values_now is not seen  # a new mapping: readers compare by identity
        log.append(GOLD, None)  # a tombstone: back to the default
        wait_for(lambda: GOLD not in listener.values_now)
        assert parameters.value_of(listener.values_now, GOLD) == 300
        log.append(parameters.SLIPPAGE_LIMIT, setting(GOLD, "1")[1])  # a name that is not its key: skipped
        wait_for(lambda: listener.records_skipped == 4)
        assert listener.values_now == {parameters.SLIPPAGE_LIMIT: 45}
    finally:
        listener.stop()
    assert any("skipped" in r.getMessage() and "10001" in r.getMessage() for r in caplog.records)


def pause(paused: bool, rid: str) -> tuple[str, bytes]:
    state = m.PauseState(scope="PLATFORM", paused=paused, request_id=rid, updated_at=T0)
    return "PLATFORM", GOVERNANCE_PAUSE.encode(state)


def test_the_pause_fails_closed_until_read_and_follows_the_latest_state() -> None:
    log = KeyedLog(GOVERNANCE_PAUSE, [pause(True, "gov-p"), pause(False, "gov-u")])
    listener = PauseListener("unused:9092", GOVERNANCE_PAUSE, consumer=log)  # type: ignore[arg-type]
    assert listener.paused  # not known yet: paused
    listener.start()
    try:
        assert listener.wait_ready(5) and not listener.paused
        log.append(*pause(True, "gov-p2"))
        wait_for(lambda: listener.paused)
        log.append("PLATFORM", setting(GOLD, "1")[1])  # not a PauseState: skipped, still paused
        wait_for(lambda: listener.records_skipped == 1)
        assert listener.paused
        log.append("PLATFORM", None)  # the scope's tombstone: no pause
        wait_for(lambda: not listener.paused)
    finally:
        listener.stop()
