"""A dead letter always fits its topic: bounded prefixes, sizes and SHA-256, the whole bytes as a payload record."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from contracts import payload_codec
from contracts.construct import Encoded
from contracts.models import DeadLetter
from contracts.topics import ENERGY_ORDERS, PLATFORM_DEADLETTER_PAYLOADS, PLATFORM_DEADLETTERS
from streams.kafka import ingress
from streams.kafka.ingress import (
    DEAD_LETTER_BYTES_MAX,
    KEY_INLINE_BYTES_MAX,
    VALUE_INLINE_BYTES_MAX,
    Origin,
    Rejected,
    dead_letter,
    dead_letter_outputs,
)
from tests.unit.test_ingress import GOOD as ORDER
from tests.unit.test_ingress import KEY

ORIGIN = Origin("energy.orders", 3, 42)
HUGE = b"[" + b",".join([json.dumps(ORDER).encode()] * 25_000) + b"]"  # ~5 MB of valid-looking JSON
OVERSIZED = Rejected("OVERSIZED", "energy.orders: value is too large", [])


def fits(letter: DeadLetter) -> bytes:
    wire = PLATFORM_DEADLETTERS.encode(letter)
    assert len(wire) <= DEAD_LETTER_BYTES_MAX <= PLATFORM_DEADLETTERS.max_message_bytes
    assert PLATFORM_DEADLETTERS.decode(wire) == letter
    return wire


def test_a_huge_value_becomes_a_prefix_and_a_payload_that_round_trips() -> None:
    assert len(HUGE) > 5_000_000
    outputs = dead_letter_outputs(ORIGIN, KEY, HUGE, OVERSIZED)
    assert [t for t, _ in outputs] == [PLATFORM_DEADLETTER_PAYLOADS, PLATFORM_DEADLETTERS]
    (payloads, record), (_, letter) = outputs
    fits(letter)
    assert letter.value_truncated and letter.value_size_bytes == len(HUGE)
    assert base64.b64decode(letter.value_b64 or "") == HUGE[:VALUE_INLINE_BYTES_MAX]
    assert letter.value_sha256 == hashlib.sha256(HUGE).hexdigest()
    assert letter.value_ref == "energy.orders:3:42:value" and letter.key_ref is None and not letter.key_truncated
    wire = payloads.encode(record)
    assert len(wire) <= payloads.max_message_bytes and payloads.key_of(record) == letter.value_ref.encode()
    stored = payloads.decode(wire)
    assert stored.ref == letter.value_ref and hashlib.sha256(stored.data).hexdigest() == letter.value_sha256
    with pytest.raises(ValueError, match="only a prefix"):
        ingress.original_value(letter)


def test_a_payload_too_large_even_compressed_is_not_stored_and_the_letter_says_so() -> None:
    noise = os.urandom(2 * 1024 * 1024)
    outputs = dead_letter_outputs(ORIGIN, KEY, noise, OVERSIZED)
    assert [t for t, _ in outputs] == [PLATFORM_DEADLETTERS]
    letter = outputs[0][1]
    fits(letter)
    assert letter.value_truncated and letter.value_ref is None
    assert letter.value_sha256 == hashlib.sha256(noise).hexdigest() and letter.value_size_bytes == len(noise)


def test_a_huge_key_is_bounded_and_stored_whole() -> None:
    key = b"k" * 3_000_000
    outputs = dead_letter_outputs(ORIGIN, key, b'{"x": 1}', Rejected("KEY_MISMATCH", "bad key " + "k" * 5000, []))
    assert [t for t, _ in outputs] == [PLATFORM_DEADLETTER_PAYLOADS, PLATFORM_DEADLETTERS]
    letter = outputs[-1][1]
    fits(letter)
    assert letter.key_truncated and letter.key_size_bytes == len(key) and letter.key_ref == "energy.orders:3:42:key"
    assert base64.b64decode(letter.key_b64 or "") == key[:KEY_INLINE_BYTES_MAX]
    assert not letter.value_truncated and ingress.original_value(letter) == b'{"x": 1}'
    assert PLATFORM_DEADLETTER_PAYLOADS.decode(outputs[0][1].value).data == key


def test_huge_error_texts_are_bounded() -> None:
    attack = "\x00" * 1_000_000  # each character is six bytes of JSON escape
    errors = [{f"field{i}{attack}": attack, "code": "WRONG_TYPE", "input": attack} for i in range(100)]
    rejected = Rejected("WRONG_TYPE", attack, errors)
    letter = dead_letter(ORIGIN, b"\x00" * 10**6, b"\x00" * 10**6, rejected)
    fits(letter)
    assert len(letter.reason) <= ingress.REASON_CHARS_MAX and len(letter.errors) <= ingress.ERRORS_MAX


def test_huge_error_texts_of_plain_characters_keep_some_errors() -> None:
    rejected = Rejected("WRONG_TYPE", "r" * 10**6, [{"field": "f" * 10**6, "message": "m" * 10**6}] * 100)
    letter = dead_letter(ORIGIN, KEY, b"v" * 10**6, rejected)
    fits(letter)
    assert 0 < len(letter.errors) <= ingress.ERRORS_MAX
    assert all(len(v) <= ingress.ERROR_TEXT_CHARS_MAX for e in letter.errors for v in e.values())


@pytest.mark.parametrize("size", [VALUE_INLINE_BYTES_MAX - 1, VALUE_INLINE_BYTES_MAX, VALUE_INLINE_BYTES_MAX + 1])
def test_the_inline_boundary_is_exact(size: int) -> None:
    value = b"x" * size
    outputs = dead_letter_outputs(ORIGIN, KEY, value, OVERSIZED)
    letter = outputs[-1][1]
    fits(letter)
    whole = size <= VALUE_INLINE_BYTES_MAX
    assert letter.value_truncated is not whole and len(outputs) == (1 if whole else 2)
    assert base64.b64decode(letter.value_b64 or "") == value[:VALUE_INLINE_BYTES_MAX]
    assert (letter.value_ref is None) is whole


@pytest.mark.parametrize("size", [KEY_INLINE_BYTES_MAX, KEY_INLINE_BYTES_MAX + 1])
def test_the_key_boundary_is_exact(size: int) -> None:
    letter = dead_letter_outputs(ORIGIN, b"k" * size, b"{}", OVERSIZED)[-1][1]
    assert letter.key_truncated is (size > KEY_INLINE_BYTES_MAX)


def test_the_payload_limit_is_exact() -> None:
    data = os.urandom(4096)
    wire = payload_codec.encode(payload_codec.Payload("t:0:1:value", data))
    assert wire is not None
    assert payload_codec.encode(payload_codec.Payload("t:0:1:value", data), len(wire)) == wire
    assert payload_codec.encode(payload_codec.Payload("t:0:1:value", data), len(wire) - 1) is None


def test_payloads_are_gzip_files_named_by_their_ref() -> None:
    import gzip

    wire = PLATFORM_DEADLETTER_PAYLOADS.encode(payload_codec.Payload("energy.orders:0:7:value", HUGE))
    assert gzip.decompress(wire) == HUGE
    with pytest.raises(payload_codec.PayloadError):
        PLATFORM_DEADLETTER_PAYLOADS.decode(gzip.compress(HUGE))  # no name: not one of ours
    with pytest.raises(payload_codec.PayloadError):
        PLATFORM_DEADLETTER_PAYLOADS.decode(wire[:-9] + bytes([wire[-9] ^ 1]) + wire[-8:])  # damaged


def test_old_dead_letters_without_the_new_fields_still_validate() -> None:
    old = {
        "source_topic": "energy.orders",
        "source_partition": 0,
        "source_offset": 1,
        "key_b64": None,
        "value_b64": "e30=",
        "value_size_bytes": 2,
        "reason_code": "MALFORMED_JSON",
        "reason": "x",
        "received_at": "2026-11-24T09:00:00Z",
    }
    letter = PLATFORM_DEADLETTERS.decode(json.dumps(old))
    assert not letter.value_truncated and letter.value_ref is None and ingress.original_value(letter) == b"{}"


def test_the_payload_record_travels_as_its_bytes() -> None:
    """Drivers produce outputs with `Topic.encode` / `key_of`: an encoded payload needs no other path."""
    record = dead_letter_outputs(ORIGIN, KEY, HUGE, OVERSIZED)[0][1]
    assert type(record) is Encoded
    assert PLATFORM_DEADLETTER_PAYLOADS.encode(record) is record.value
    assert PLATFORM_DEADLETTER_PAYLOADS.key_of(record) == b"energy.orders:3:42:value"
    assert ENERGY_ORDERS.max_message_bytes < len(HUGE)


def test_monitoring_reads_every_dead_letter_new_and_old() -> None:
    """The monitoring agent reads dead letters up to their registry limit, not the 64 KiB upstream limit."""
    import asyncio
    from types import SimpleNamespace

    from domain.alert_rules import load_rules
    from streams.alerting.agent import Monitor
    from streams.kafka.faust_app import Outbox
    from streams.settings import Settings

    settings = Settings()
    monitor = Monitor(load_rules(settings.alerting_rules_file.read_text()), settings, Outbox("unused:9092"))
    bounded = dead_letter_outputs(ORIGIN, KEY, HUGE, OVERSIZED)[-1][1]
    old_style = bounded.model_copy(update={"value_b64": base64.b64encode(b"x" * 200_000).decode()})
    for offset, letter in enumerate((bounded, old_style)):
        wire = PLATFORM_DEADLETTERS.encode(letter)
        message = SimpleNamespace(
            topic=PLATFORM_DEADLETTERS.name, key=PLATFORM_DEADLETTERS.key_of(letter), value=wire, offset=offset
        )
        asyncio.run(monitor.receive(SimpleNamespace(message=message)))  # type: ignore[arg-type]
    assert len(PLATFORM_DEADLETTERS.encode(old_style)) > settings.max_ingress_message_bytes
    assert monitor.received[PLATFORM_DEADLETTERS.name] == 2 and not monitor.rejected
