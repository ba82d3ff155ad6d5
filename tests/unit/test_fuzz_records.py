"""Fuzzed upstream records (issue 21): every record gets exactly one outcome, and no input breaks the ledger.

Generated: for every upstream topic (contracts.topics, `upstream=True`), values valid under the published JSON
Schema (tests/support/fuzz_records.py builds them from contracts/schemas/*.json) and the same values damaged: a
field dropped, added or retyped (huge and tiny numbers, > 2^63, negative, 0, floats, booleans, text with control,
zero-width, RTL and non-BMP characters), NaN/Infinity/1e400/4,400-digit number tokens in the JSON text, lone
surrogate escapes and invalid UTF-8 bytes, nesting up to 10,000 levels, duplicate JSON keys, truncated text,
oversized fields, wrong/empty/missing keys, non-JSON bytes and empty values.

Asserted: the validator never raises; a rejection carries a known reason code (contracts.reason_codes) and its
dead letter fits platform.deadletters; energy.orders and ledger.commands records driven in sequences through the
real RecordProcessor (its rebuild reads an in-memory log, not a broker) get exactly one outcome each: processed
(no dead letter; every order command answered by an order event, every hold/post/void/reward by one ledger
outcome) or exactly one dead letter. Records hypothesis picks are made to raise inside `apply` after half-applying
(a bug nobody foresaw): each is dead-lettered PROCESSING_ERROR, the next record is processed, and the state equals
one that never saw it. After every sequence the ledger balances to zero (system accounts included), only the
issuance accounts are negative, and no pending hold names an account that does not exist.

Budget: EXAMPLES (200) examples per test, deadline off; with CI set, derandomized (the same examples every run).
Failing inputs found on the way stay as explicit @example regression cases.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contracts import ledger_codec
from contracts import models as m
from contracts.bridge_codec import payment_from_request
from contracts.reason_codes import REASON_CODES
from contracts.topics import (
    BRIDGE_REQUESTS,
    ENERGY_ORDER_EVENTS,
    ENERGY_ORDERS,
    ENERGY_SETTLEMENTS,
    LEDGER_COMMANDS,
    LEDGER_OUTCOMES,
    PLATFORM_DEADLETTER_PAYLOADS,
    PLATFORM_DEADLETTERS,
    TOPICS,
    Topic,
)
from contracts.types import MAX_UNITS
from domain import bridge as core
from domain.timeconv import to_ms
from domain.trade_settlement import SYS_CARBON, SYS_MINT
from streams.kafka import ingress, partition_log
from streams.kafka.processor import RecordProcessor
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition
from tests.support import fuzz_records as fz

EXAMPLES = 200
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SEQUENCE_MAX = 15
UPSTREAM = [t for t in TOPICS.values() if t.upstream]
MAX_INGRESS_BYTES = 64 * 1024
BASE_MS = to_ms(fz.BASE_TIME)
# Accounts allowed below zero: the issuance accounts (K-AUS and carbon mints, reward pools).
MAY_GO_NEGATIVE = {SYS_MINT, SYS_CARBON, *(a.value for a in m.RewardAccount)}

# ----------------------------------------------------------------------------- pools: records that meet each other

ACCOUNTS = st.sampled_from(["acct-1", "acct-2", "acct-3", "sys:mint", "sys:fees", "bridge:rewards", "carbon:acct-1"])
IDS = st.sampled_from(["id-1", "id-2", "id-3", "id-4"])
MARKETS = st.sampled_from(
    [
        "2026-11-24T10:00Z/KR-SEOUL",
        "2026-11-24T10:00Z/KR-SEOUL",
        "2026-11-24T11:00Z/AU-NSW",
        "m-1",
        "0001-01-01T00:00Z/X",
    ]
)
UNITS = st.one_of(st.integers(1, 5_000_000), st.sampled_from([1, MAX_UNITS, MAX_UNITS - 1, 10**12]))
POOLED: dict[str, fz.Strategy] = {
    name: strategy
    for names, strategy in (
        (("order_id", "command_id", "hold_id", "trade_id", "transfer_id", "buy_order_id", "sell_order_id"), IDS),
        (("account_id", "debit_account_id", "credit_account_id", "buyer_account_id", "seller_account_id"), ACCOUNTS),
        (("market_id",), MARKETS),
        (("amount_kaus_units", "notional_kaus_units", "weight"), UNITS),
        (("price_units_per_kwh", "new_price_units_per_kwh"), st.sampled_from([149_000, 150_000, 151_000, 150_500])),
        (("quantity_wh", "new_quantity_wh"), st.sampled_from([100, 1_000, 2_500, 10**12])),
        (("submitted_at", "requested_at", "occurred_at", "expires_at", "executed_at"), fz.near_timestamp),
    )
    for name in names
}


def pooled_or_any(topic: Topic) -> fz.Strategy:
    """Mostly pooled values (they interact), sometimes anything the schema allows (edges, rare shapes)."""
    return st.one_of(fz.valid_values(topic, POOLED), fz.valid_values(topic, POOLED), fz.valid_values(topic))


# ----------------------------------------------------------------------------- the processor without a broker


@dataclass
class MemoryLog:
    """One partition held in memory: what the processor's rebuild reads instead of Kafka."""

    records: list[tuple[bytes | None, bytes | None, int]] = field(default_factory=list)

    def read(
        self, _bootstrap: str, _topic: str, _partition: int, end: int, start: int | None = None
    ) -> Iterator[tuple[int, bytes | None, bytes | None, int | None]]:
        for offset in range(start or 0, end):
            key, value, record_ms = self.records[offset]
            yield offset, key, value, record_ms


@contextmanager
def memory_log() -> Iterator[MemoryLog]:
    log = MemoryLog()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(partition_log, "read_partition", log.read)
        yield log


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Poisoned(Exception):
    """Stands for a bug: raised after a record was half applied."""


def poisoned_state(base: type[Any]) -> type[Any]:
    """`base` that raises after applying a record at one of its `poisoned` offsets (half applied, as a bug would)."""

    @dataclass
    class PoisonedState(base):  # type: ignore[misc, valid-type]
        poisoned: frozenset[int] = frozenset()

        def apply(self, offset: int, message: Any | None, record_ms: int | None = None) -> list[Any]:
            outputs = super().apply(offset, message, record_ms)
            if message is not None and offset in self.poisoned:
                raise Poisoned(f"offset {offset}")
            return outputs

    PoisonedState.__name__ = f"Poisoned{base.__name__}"
    return PoisonedState


PoisonedLedger = poisoned_state(LedgerPartition)
PoisonedMatching = poisoned_state(MatchingPartition)


Record = tuple[bytes | None, bytes | None, str]


def run(
    topic: Topic, factory: Callable[[int], Any], clean: Callable[[int], Any], records: list[Record]
) -> tuple[Any, Any, list[tuple[Any, list[Any]]]]:
    """Drive `records` through a RecordProcessor; also apply the records that should stay to a clean state.

    Returns the processor's state, the clean state and, per record, (what ingress made of it, its outputs)."""
    processor = RecordProcessor(topic, factory, "memory:0", MAX_INGRESS_BYTES)
    reference = clean(0)
    outcomes = []
    with memory_log() as log:
        for offset, (key, value, _how) in enumerate(records):
            record_ms = BASE_MS + offset * 1_000
            log.records.append((key, value, record_ms))
            decoded = ingress.validate(topic, key, value, MAX_INGRESS_BYTES)
            outputs = processor.process(0, offset, key, value, record_ms)
            outcomes.append((decoded, outputs))
            # The clean state sees what the processor did not dead-letter: a record is all applied or not at all.
            kept = not (outputs and outputs[-1][0] is PLATFORM_DEADLETTERS)
            reference.apply(offset, decoded if kept else None, record_ms)
    return processor.states[0], reference, outcomes


def assert_dead_letter(topic: Topic, offset: int, key: bytes | None, value: bytes | None, outputs: list[Any]) -> str:
    """Exactly one dead letter (after the payload records of bytes too large for it), a known reason, the origin,
    the bytes or their prefix and SHA-256, and it fits its topic. Returns its code."""
    *payloads, (out_topic, letter) = outputs
    assert out_topic is PLATFORM_DEADLETTERS, f"@{offset}: the dead letter comes last, got {out_topic.name}"
    assert all(t is PLATFORM_DEADLETTER_PAYLOADS for t, _ in payloads), [t.name for t, _ in payloads]
    assert letter.reason_code in REASON_CODES, letter.reason_code
    assert letter.reason.startswith(f"{topic.name}:"), letter.reason
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (topic.name, 0, offset)
    encoded = PLATFORM_DEADLETTERS.encode(letter)
    assert len(encoded) <= ingress.DEAD_LETTER_BYTES_MAX <= PLATFORM_DEADLETTERS.max_message_bytes, len(encoded)
    assert PLATFORM_DEADLETTERS.decode(encoded).reason_code == letter.reason_code  # monitoring can read it
    for _, payload in payloads:
        assert len(PLATFORM_DEADLETTER_PAYLOADS.encode(payload)) <= PLATFORM_DEADLETTER_PAYLOADS.max_message_bytes
    if value is not None:
        kept = base64.b64decode(letter.value_b64 or "")
        assert value.startswith(kept) and letter.value_size_bytes == len(value)
        assert letter.value_truncated or kept == value, "the original bytes, for a replay after a fix"
    return str(letter.reason_code)


def assert_outputs_keep_their_contracts(outputs: list[Any]) -> None:
    """Whatever a processed record emits is a valid message of its topic (consumers rely on it)."""
    for out_topic, message in outputs:
        assert out_topic is not PLATFORM_DEADLETTERS
        encoded = out_topic.encode(message)
        assert out_topic.key_of(message)
        assert len(encoded) <= out_topic.max_message_bytes
        out_topic.decode(encoded)


def assert_one_outcome_each(
    topic: Topic, records: list[Record], outcomes: list[tuple[Any, list[Any]]], poisoned: set[int], answered: Any
) -> None:
    for offset, ((key, value, how), (decoded, outputs)) in enumerate(zip(records, outcomes, strict=True)):
        if isinstance(decoded, ingress.Rejected):
            code = assert_dead_letter(topic, offset, key, value, outputs)
            assert code == decoded.code != "PROCESSING_ERROR", f"@{offset} ({how}): {decoded.reason}"
        elif offset in poisoned:
            code = assert_dead_letter(topic, offset, key, value, outputs)
            assert code == "PROCESSING_ERROR", f"@{offset}: {outputs[-1][1].reason}"
            assert "Poisoned" in outputs[-1][1].reason
        else:
            assert_outputs_keep_their_contracts(outputs)
            answered(decoded, outputs)


# ----------------------------------------------------------------------------- invariants


def assert_ledger_invariants(state: LedgerPartition) -> None:
    ledger = state.ledger
    ledger.check_invariants()  # Σ balances per asset == 0, held == live holds, no user account negative
    balances = state.balances()
    assert sum(balances.values()) == 0, "K-AUS created or destroyed (mint and system accounts included)"
    views = ledger.accounts()
    negative = {v.account_id for v in views if v.balance_units < 0}
    assert negative <= MAY_GO_NEGATIVE, f"negative balances: {negative - MAY_GO_NEGATIVE}"
    assert {v.account_id for v in views if v.allow_negative} <= MAY_GO_NEGATIVE, "a user account may go negative"
    assert all(v.available_units >= 0 for v in views if not v.allow_negative)
    for row in ledger.to_dict()["pendings"]:
        hold = ledger.pending(row["pending_id"])
        assert hold is not None
        if hold.state == "PENDING":
            assert ledger.has_account(hold.debit_account_id), f"hold {hold.pending_id} without its owner"
            assert ledger.has_account(hold.credit_account_id), f"hold {hold.pending_id} without its payee"


def ledger_answered(command: Any, outputs: list[Any]) -> None:
    """A processed ledger command: every hold/post/void/reward gets one outcome; a trade at most one settlement."""
    if isinstance(command, m.PlaceHold | m.PostHold | m.VoidHold | m.GrantReward):
        answers = [o for t, o in outputs if t is LEDGER_OUTCOMES and o.command_id == command.command_id]
        assert len(answers) == 1, f"{command.type} {command.command_id}: {len(answers)} outcomes"
    elif isinstance(command, m.SettleTrade):
        settled = [t for t, _ in outputs if t is ENERGY_SETTLEMENTS]
        assert len(settled) <= 1


def order_answered(command: Any, outputs: list[Any]) -> None:
    """A processed order command is answered by an order event about it (accepted, rejected, ...)."""
    events = [ENERGY_ORDER_EVENTS.decode(ENERGY_ORDER_EVENTS.encode(o)) for t, o in outputs if t is ENERGY_ORDER_EVENTS]
    assert any(e.order_id == command.order_id for e in events), f"{command.type} {command.order_id} unanswered"


def book_state(state: MatchingPartition) -> dict[str, Any]:
    books = {}
    for market_id in sorted(state.engine.markets()):
        book = state.engine.book(market_id)
        assert book is not None
        book.check_invariants()
        bid, ask = book.best_bid(), book.best_ask()
        assert bid is None or ask is None or bid < ask, f"{market_id}: crossed book {bid} >= {ask}"
        books[market_id] = (book.resting_orders(m.Side.BUY), book.resting_orders(m.Side.SELL), book.last_seq)
    return books


# ----------------------------------------------------------------------------- tests


def zero_rate(rejected: ingress.Rejected) -> bool:
    """A gap in the published schema, not the validator: a rate's pattern admits "0", the model wants > 0."""
    return all(e["code"] == "OUT_OF_RANGE" and re.fullmatch(r"'0+(\.0+)?'", e["input"]) for e in rejected.errors)


OVERFLOWING_UTC = "0001-01-01T00:00:00+14:00"  # a valid ISO 8601 instant before 0001-01-01 UTC
DEPOSIT = {"type": "DEPOSIT", "command_id": "c", "account_id": "a", "amount_kaus_units": 1}
PRE_1970_POST = b'{"command_id": "0", "hold_id": "0", "occurred_at": "1969-01-01T00:00:00Z", "type": "POST_HOLD"}'


@pytest.mark.parametrize("topic", UPSTREAM, ids=[t.name for t in UPSTREAM])
@FUZZ
@given(data=st.data())
def test_the_validator_never_raises_and_names_a_known_reason(topic: Topic, data: st.DataObject) -> None:
    key, value, how = data.draw(fz.records(topic, fz.valid_values(topic)), label="record")
    decoded = ingress.validate(topic, key, value, MAX_INGRESS_BYTES)  # must not raise: a raise is PROCESSING_ERROR
    if isinstance(decoded, ingress.Rejected):
        assert decoded.code in REASON_CODES and decoded.code != "PROCESSING_ERROR", decoded
        assert decoded.reason.startswith(f"{topic.name}:")
        assert all(set(e) == {"field", "code", "message", "input"} for e in decoded.errors)
        letter = ingress.dead_letter(ingress.Origin(topic.name, 0, 0), key, value, decoded)
        assert len(PLATFORM_DEADLETTERS.encode(letter)) <= ingress.DEAD_LETTER_BYTES_MAX
        # Schema-valid with the right key: only a cross-field rule (not expressible in the schema) may refuse it.
        assert how != "valid" or decoded.code == "INVALID_VALUE" or zero_rate(decoded), decoded.reason
    else:
        assert how != "garbage" and key == topic.key_of(decoded), "accepted only with the key the value names"
        assert topic.decode(topic.encode(decoded)) == decoded, "what is accepted re-encodes to itself"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(fz.deep(10_000), id="10k-nested-lists"),
        pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, id="10k-nested-objects"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b'{"x": "\\ud800"}', id="lone-surrogate"),
        pytest.param(b"NaN", id="nan-token"),
        pytest.param(b"9" * 60_000, id="60k-digit-number"),
        pytest.param(b"   ", id="whitespace"),
    ],
)
@pytest.mark.parametrize("topic", UPSTREAM, ids=[t.name for t in UPSTREAM])
def test_hostile_bytes_are_refused_with_a_reason(topic: Topic, value: bytes) -> None:
    decoded = ingress.validate(topic, b"k", value, MAX_INGRESS_BYTES)
    assert isinstance(decoded, ingress.Rejected) and decoded.code in {"MALFORMED_JSON", "WRONG_TYPE", "NOT_FINITE"}


def test_a_timestamp_that_overflows_in_utc_is_refused_not_raised() -> None:
    """Regression (found by the fuzzer): `0001-01-01T00:00:00+14:00` is valid ISO 8601, but its UTC instant is
    before year 1; converting it raised OverflowError out of the validator (a PROCESSING_ERROR, "our bug")."""
    for topic, late_or_early in ((ENERGY_ORDERS, OVERFLOWING_UTC), (LEDGER_COMMANDS, "9999-12-31T23:59:59-14:00")):
        value = {"type": "DEPOSIT", "command_id": "c", "account_id": "a", "amount_kaus_units": 1}
        if topic is ENERGY_ORDERS:
            value = {"type": "CANCEL", "order_id": "o", "market_id": "c", "account_id": "a"}
            value["requested_at"] = late_or_early
        else:
            value["occurred_at"] = late_or_early
        decoded = ingress.validate(topic, b"c", json.dumps(value).encode(), MAX_INGRESS_BYTES)
        assert isinstance(decoded, ingress.Rejected) and decoded.code == "INVALID_TIMESTAMP", decoded


def sequences(topic: Topic) -> fz.Strategy:
    return st.lists(fz.records(topic, pooled_or_any(topic)), min_size=1, max_size=SEQUENCE_MAX)


def run_poisoned(
    topic: Topic, poisoned: type[Any], clean: type[Any], records: list[Record], poison: set[int], answered: Any
) -> tuple[Any, Any]:
    """`records` through a processor whose state raises at the `poison` offsets, checked record by record; the
    final state, and the clean state of a run that only saw the records the processor did not dead-letter."""
    state, reference, outcomes = run(topic, lambda p: poisoned(p, poisoned=frozenset(poison)), clean, records)
    assert_one_outcome_each(topic, records, outcomes, poison, answered)
    assert isinstance(state, clean) and state.next_offset == len(records)
    return state, reference


@FUZZ
@given(records=sequences(LEDGER_COMMANDS), poison=st.sets(st.integers(0, SEQUENCE_MAX - 1), max_size=3))
@example(records=[(b"0", PRE_1970_POST, "valid")], poison={0})  # found: the known bug and a poison on one record
@example(records=[(b"c", json.dumps({**DEPOSIT, "occurred_at": OVERFLOWING_UTC}).encode(), "valid")], poison=set())
def test_ledger_commands_get_one_outcome_each_and_keep_the_ledger_whole(
    records: list[Record], poison: set[int]
) -> None:
    state, reference = run_poisoned(LEDGER_COMMANDS, PoisonedLedger, LedgerPartition, records, poison, ledger_answered)
    assert_ledger_invariants(state)
    assert state.ledger.to_dict() == reference.ledger.to_dict(), "a record that raised left some of its effects"


@FUZZ
@given(records=sequences(ENERGY_ORDERS), poison=st.sets(st.integers(0, SEQUENCE_MAX - 1), max_size=3))
def test_order_commands_get_one_outcome_each_and_books_stay_sound(records: list[Record], poison: set[int]) -> None:
    state, reference = run_poisoned(ENERGY_ORDERS, PoisonedMatching, MatchingPartition, records, poison, order_answered)
    assert book_state(state) == book_state(reference), "a record that raised left some of its effects"


@FUZZ
@given(data=st.data())
def test_an_accepted_card_request_reaches_the_bridge_core_without_raising(data: st.DataObject) -> None:
    key, value, _how = data.draw(fz.records(BRIDGE_REQUESTS, fz.valid_values(BRIDGE_REQUESTS)), label="record")
    decoded = ingress.validate(BRIDGE_REQUESTS, key, value, MAX_INGRESS_BYTES)
    if isinstance(decoded, ingress.Rejected):
        assert decoded.code in REASON_CODES and decoded.code != "PROCESSING_ERROR"
        return
    payment = payment_from_request(decoded)
    assert payment.fingerprint() == payment_from_request(decoded).fingerprint()
    available = data.draw(st.sampled_from([None, 0, MAX_UNITS]), label="available")
    step = core.begin(payment, available, core.Instant(BASE_MS, 0), core.BridgeConfig())
    assert step.effects, "a request always leads somewhere: a hold to place or a result"
    [effect] = step.effects[:1]
    if isinstance(effect, core.PlaceHold):
        assert effect.amount_units > 0 and effect.expires_at_ms > BASE_MS
        if effect.amount_units <= MAX_UNITS:  # beyond it: test_a_card_payment_never_asks_for_a_hold_beyond_the_contract
            command = ledger_codec.place_hold(
                effect.transfer_id,
                effect.debit_account_id,
                effect.credit_account_id,
                effect.amount_units,
                effect.expires_at_ms,
                BASE_MS,
            )
            hold = ingress.validate(LEDGER_COMMANDS, effect.transfer_id.encode(), command)
            assert isinstance(hold, m.PlaceHold), hold


def test_a_record_far_over_every_limit_gets_one_dead_letter_that_fits() -> None:
    """2 MiB of JSON (what a gzip-compressed batch lets through): the letter keeps a prefix, the payload the rest."""
    huge = json.dumps({**DEPOSIT, "occurred_at": "2026-11-24T09:00:00Z", "pad": "x" * 2 * 1024 * 1024}).encode()
    records: list[Record] = [
        (b"c", huge, "oversize"),
        (b"c", json.dumps({**DEPOSIT, "occurred_at": "2026-11-24T09:00:00Z"}).encode(), "valid"),
    ]
    state, _reference, outcomes = run(LEDGER_COMMANDS, LedgerPartition, LedgerPartition, records)
    assert_one_outcome_each(LEDGER_COMMANDS, records, outcomes, set(), ledger_answered)
    assert outcomes[0][1][-1][1].reason_code == "OVERSIZED"
    assert state.balances()["a"] == 1, "the record behind it is processed"


def test_a_ledger_command_stamped_before_1970_is_refused_at_ingress_or_applied() -> None:
    records: list[Record] = [(b"0", PRE_1970_POST, "valid")]
    _state, _reference, outcomes = run(LEDGER_COMMANDS, LedgerPartition, LedgerPartition, records)
    [(_decoded, outputs)] = outcomes
    assert [t for t, _ in outputs] != [PLATFORM_DEADLETTERS] or outputs[0][1].reason_code != "PROCESSING_ERROR"


CHEAP_RATE_REQUEST = {
    "request_id": "r-1",
    "payer_account_id": "acct-1",
    "merchant_id": "m-1",
    "amount_minor": MAX_UNITS,
    "currency": "JPY",
    "region": "KR",
    "payer_tier": "GOLD",
    "quoted_rate": "0.0000000001",
    "requested_at": "2026-11-24T09:00:00Z",
}


def test_a_card_payment_never_asks_for_a_hold_beyond_the_contract() -> None:
    request = ingress.validate(BRIDGE_REQUESTS, b"acct-1", json.dumps(CHEAP_RATE_REQUEST).encode())
    assert isinstance(request, m.BridgeRequest)
    step = core.begin(payment_from_request(request), None, core.Instant(BASE_MS, 0), core.BridgeConfig())
    holds = [e for e in step.effects if isinstance(e, core.PlaceHold)]
    assert all(h.amount_units <= MAX_UNITS for h in holds), [h.amount_units for h in holds]
