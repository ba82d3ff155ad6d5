"""Confluent-framed values at ingress: the header is stripped and the JSON after it validated exactly as plain JSON,
whatever the schema id; the id is never looked up, so the same bytes always get the same verdict (live and on
replay)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.topics import ENERGY_ORDERS, PLATFORM_DEADLETTERS
from domain.order_book import Side
from streams.kafka import partition_log
from streams.kafka.ingress import Origin, Rejected, dead_letter, original_value, validate
from streams.kafka.wire_format import frame, unwrap
from streams.p2p.matching import MatchingPartition
from streams.p2p.processors import matching_processor
from streams.settings import Settings
from tests.unit.test_ingress import BAD_INPUTS, KEY, raw

# Ids a producer's serializer might have used: ours, one no registry ever issued, the largest the header holds.
SCHEMA_IDS = [1, 7, 999_999, 2**32 - 1]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingress must not do I/O: any attempt to reach a registry fails the test."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("ingress tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_plain_json_is_untouched() -> None:
    value = raw()
    assert unwrap("energy.orders", value) is value
    assert validate(ENERGY_ORDERS, KEY, value) == validate(ENERGY_ORDERS, KEY, raw())


@pytest.mark.parametrize("schema_id", SCHEMA_IDS)
def test_a_framed_value_is_its_json_whatever_the_schema_id(schema_id: int) -> None:
    assert unwrap("energy.orders", frame(schema_id, raw())) == raw()
    message = validate(ENERGY_ORDERS, KEY, frame(schema_id, raw()))
    assert not isinstance(message, Rejected), message.reason
    assert message == validate(ENERGY_ORDERS, KEY, raw())
    assert message.order_id == "o-1" and message.quantity_wh == 1_000


FRAMEABLE = [b for b in BAD_INPUTS if b[2]]  # an empty value framed is a bare header: see the truncation test


@pytest.mark.parametrize(("label", "key", "value", "code", "fragment"), FRAMEABLE, ids=[b[0] for b in FRAMEABLE])
def test_a_framed_bad_value_gets_the_code_of_its_plain_twin(
    label: str, key: bytes | None, value: bytes, code: str, fragment: str
) -> None:
    plain = validate(ENERGY_ORDERS, key, value)
    framed = validate(ENERGY_ORDERS, key, frame(7, value))
    assert isinstance(plain, Rejected) and isinstance(framed, Rejected), label
    assert framed.code == plain.code == code, framed.reason
    assert framed.errors == plain.errors and fragment in framed.reason


def test_a_framed_bad_value_is_dead_lettered_whole() -> None:
    value = frame(7, raw(quantity_wh="lots"))
    rejected = validate(ENERGY_ORDERS, KEY, value)
    assert isinstance(rejected, Rejected) and rejected.code == "WRONG_TYPE"
    letter = dead_letter(Origin("energy.orders", 0, 5), KEY, value, rejected)
    assert PLATFORM_DEADLETTERS.decode(PLATFORM_DEADLETTERS.encode(letter)).reason_code == "WRONG_TYPE"
    assert original_value(letter) == value, "the framed bytes are kept whole, ready for a replay"


@pytest.mark.parametrize(
    "value", [b"\x00", b"\x00\x00\x07", b"\x00\x00\x00\x00", frame(7, b"")], ids=["1 byte", "3", "4", "bare header"]
)
def test_a_value_starting_with_byte_0_without_json_after_a_whole_header_is_malformed(value: bytes) -> None:
    rejected = validate(ENERGY_ORDERS, KEY, value)
    assert isinstance(rejected, Rejected) and rejected.code == "MALFORMED_JSON"
    assert "Confluent wire-format header" in rejected.reason and f"has {len(value)} bytes" in rejected.reason


@pytest.mark.parametrize(
    "value",
    [frame(999_999, raw()), frame(7, raw(side="HOLD")), b"\x00\x00\x07", raw(), raw(quantity_wh=-5)],
    ids=["framed, unknown id", "framed, bad", "truncated header", "plain", "plain, bad"],
)
def test_the_same_bytes_always_get_the_same_verdict(value: bytes) -> None:
    verdicts = [validate(ENERGY_ORDERS, KEY, value) for _ in range(3)]
    assert verdicts[0] == verdicts[1] == verdicts[2]


# ------------------------------------------------------- replay: a restarted worker rebuilds the same order book


def _order(order_id: str, side: str, price: int, quantity: int) -> bytes:
    account = f"acct-{side.lower()}"  # buyers and sellers apart: no self-trade prevention in the way
    return raw(order_id=order_id, account_id=account, side=side, price_units_per_kwh=price, quantity_wh=quantity)


PARTITION_LOG = [
    frame(7, _order("buy-1", "BUY", 150_000, 1_000)),
    _order("sell-1", "SELL", 140_000, 400),  # trades 400 with buy-1
    frame(999_999, _order("sell-2", "SELL", 160_000, 700)),  # an id no registry knows: rests all the same
    frame(7, _order("buy-2", "BUY", 145_000, -3)),  # dead-lettered live, skipped on replay
    b"\x00\x00\x07",  # a truncated header: dead-lettered live, skipped on replay
    frame(2**32 - 1, _order("buy-3", "BUY", 160_000, 200)),  # trades 200 with sell-2
]


@pytest.fixture
def partition(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """energy.orders[0] held in memory: what a rebuild reads instead of the broker."""

    def read(
        _bootstrap: str, _topic: str, _partition: int, end: int, start: int | None = None
    ) -> Iterator[tuple[int, bytes, bytes, int]]:
        for offset in range(start or 0, end):
            yield offset, KEY, PARTITION_LOG[offset], 0

    monkeypatch.setattr(partition_log, "read_partition", read)
    return PARTITION_LOG


def _book(state: Any) -> tuple[Any, ...]:
    assert isinstance(state, MatchingPartition)
    book = state.engine.book(KEY.decode())
    assert book is not None
    return state.next_offset, book.last_seq, book.resting_orders(Side.BUY), book.resting_orders(Side.SELL)


def test_a_rebuilt_worker_has_the_book_the_live_one_had(partition: list[bytes]) -> None:
    live = matching_processor(Settings())
    outcomes = [live.process(0, offset, KEY, value, None) for offset, value in enumerate(partition)]
    dead = [i for i, out in enumerate(outcomes) if out and out[-1][0] is PLATFORM_DEADLETTERS]
    assert dead == [3, 4]
    book = _book(live.states[0])
    assert [(o.order_id, o.remaining_quantity_wh) for o in book[2]] == [("buy-1", 600)]
    assert [(o.order_id, o.remaining_quantity_wh) for o in book[3]] == [("sell-2", 500)]

    restarted = matching_processor(Settings())
    assert _book(restarted.rebuild(0, len(partition))) == book
