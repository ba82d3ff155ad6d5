"""Ingress validation: raw upstream bytes -> typed message, or a dead letter with a reason.

Pure function of (topic, key, value, origin): no Faust, no I/O, so the same code
guards the Faust agents, the plain confluent-kafka loop and the tests, and a restarted worker
replaying its partitions reaches the verdicts it reached live. A value is plain JSON or framed in
Confluent's wire format (streams/kafka/wire_format.py); the framing's schema id is never looked up.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from contracts import payload_codec
from contracts.construct import Encoded
from contracts.models import DeadLetter
from contracts.topics import PLATFORM_DEADLETTER_PAYLOADS, PLATFORM_DEADLETTERS, Topic
from streams.kafka import wire_format
from streams.ops import metrics

log = logging.getLogger("nexus.ingress")

# Map pydantic error types to stable machine codes a producer team can switch on.
_ERROR_CODES: dict[str, str] = {
    "missing": "MISSING_FIELD",
    "extra_forbidden": "UNKNOWN_FIELD",
    "int_type": "WRONG_TYPE",
    "int_parsing": "WRONG_TYPE",
    "string_type": "WRONG_TYPE",
    "bool_type": "WRONG_TYPE",
    "dict_type": "WRONG_TYPE",
    "list_type": "WRONG_TYPE",
    "model_type": "WRONG_TYPE",
    "model_attributes_type": "WRONG_TYPE",
    "datetime_type": "WRONG_TYPE",
    "datetime_parsing": "INVALID_TIMESTAMP",
    "datetime_from_date_parsing": "INVALID_TIMESTAMP",
    "timestamp_out_of_range": "INVALID_TIMESTAMP",
    "timezone_aware": "NAIVE_TIMESTAMP",
    "enum": "UNKNOWN_ENUM_VALUE",
    "literal_error": "UNKNOWN_ENUM_VALUE",
    "union_tag_invalid": "UNKNOWN_MESSAGE_TYPE",
    "union_tag_not_found": "MISSING_FIELD",
    "finite_number": "NOT_FINITE",
    "greater_than": "OUT_OF_RANGE",
    "greater_than_equal": "OUT_OF_RANGE",
    "less_than": "OUT_OF_RANGE",
    "less_than_equal": "OUT_OF_RANGE",
    "decimal_max_digits": "TOO_MANY_DIGITS",
    "decimal_max_places": "TOO_MANY_DIGITS",
    "string_too_short": "INVALID_ID",
    "string_too_long": "INVALID_ID",
    "string_pattern_mismatch": "INVALID_FORMAT",
    "json_invalid": "MALFORMED_JSON",
    "json_type": "MALFORMED_JSON",
    "value_error": "INVALID_VALUE",
}


@dataclass(frozen=True, slots=True)
class Origin:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Rejected:
    code: str
    reason: str
    errors: list[dict[str, str]]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(error: dict[str, Any]) -> tuple[str, dict[str, str]]:
    loc = ".".join(str(p) for p in error.get("loc", ())) or "<message>"
    kind = str(error.get("type", "value_error"))
    code = _ERROR_CODES.get(kind, "INVALID_VALUE")
    value = error.get("input")
    # A negative money amount is the one range error worth its own code: it is never a typo of scale.
    if code == "OUT_OF_RANGE" and isinstance(value, int) and value < 0:
        code = "NEGATIVE_AMOUNT"
    if code == "OUT_OF_RANGE" and isinstance(value, int) and len(str(abs(value))) > 18:
        code = "AMOUNT_TOO_LARGE"
    if isinstance(value, float) and not math.isfinite(value):
        code = "NOT_FINITE"
    if code == "MISSING_FIELD":
        value = None  # the input is the whole enclosing object: noise in a reason
    detail = {"field": loc, "code": code, "message": str(error.get("msg", "")), "input": _short(value)}
    return code, detail


def validate(topic: Topic, key: bytes | None, value: bytes | None, max_bytes: int | None = None) -> Any | Rejected:
    """Return the typed message, or a Rejected explaining what a person must fix."""
    limit = min(max_bytes or topic.max_message_bytes, topic.max_message_bytes)
    if value is None or len(value) == 0:
        return Rejected("EMPTY_VALUE", f"{topic.name}: the message has no value; send a JSON object", [])
    if len(value) > limit:
        return Rejected("OVERSIZED", f"{topic.name}: value is {len(value)} bytes, above the {limit}-byte limit", [])
    if key is None or len(key) == 0:
        return Rejected(
            "EMPTY_KEY", f"{topic.name}: the message key is empty; set it to the value's {topic.key_field}", []
        )
    payload = wire_format.unwrap(topic.name, value)
    if isinstance(payload, wire_format.Refused):
        return Rejected(payload.code, payload.reason, [])
    try:
        message = topic.decode(payload)
    except ValidationError as exc:
        details = [classify(dict(e))[1] for e in exc.errors(include_url=False)]
        first = details[0]
        more = f" (+{len(details) - 1} more)" if len(details) > 1 else ""
        if first["code"] == "MALFORMED_JSON":
            reason = f"{topic.name}: not valid JSON: {first['message']}"
        else:
            got = "" if first["code"] == "MISSING_FIELD" else f" (got {first['input']})"
            reason = f"{topic.name}: field '{first['field']}': {first['message']}{got}{more}"
        return Rejected(first["code"], reason, details)
    expected = topic.key_of(message)
    if expected != key:
        return Rejected(
            "KEY_MISMATCH",
            f"{topic.name}: key {_short(key)} must equal the value's {topic.key_field} {_short(expected)} "
            "(the key decides which partition owns the message)",
            [],
        )
    return message


def processing_failed(topic: str, error: Exception) -> Rejected:
    """A record that made the platform raise (a bug, an input nobody foresaw): its reason names the error."""
    return Rejected("PROCESSING_ERROR", f"{topic}: processing failed: {type(error).__name__}: {error}", [])


# A dead letter always fits its topic, whatever it rejected: whole bytes up to these sizes, else a prefix with the
# size and SHA-256, and the whole bytes stored on PLATFORM_DEADLETTER_PAYLOADS (dead_letter_outputs). Texts are
# bounded too (an error message may quote an attacker's field). The worst case stays under DEAD_LETTER_BYTES_MAX,
# which leaves the letter readable by anything that reads with the default 64 KiB ingress limit.
VALUE_INLINE_BYTES_MAX = 16 * 1024
KEY_INLINE_BYTES_MAX = 1024
REASON_CHARS_MAX = 1024
ERRORS_MAX = 20
ERROR_ITEMS_MAX = 8
ERROR_TEXT_CHARS_MAX = 256
DEAD_LETTER_BYTES_MAX = 64 * 1024
assert PLATFORM_DEADLETTERS.max_message_bytes >= DEAD_LETTER_BYTES_MAX


def _clip(text: str, chars_max: int) -> str:
    return text if len(text) <= chars_max else text[: chars_max - 1] + "\u2026"


def _bounded_errors(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    clip = ERROR_TEXT_CHARS_MAX
    return [
        {_clip(str(k), clip): _clip(str(v), clip) for k, v in list(e.items())[:ERROR_ITEMS_MAX]}
        for e in errors[:ERRORS_MAX]
    ]


def _part(data: bytes | None, inline_max: int, ref: str | None) -> dict[str, Any]:
    """A key's or value's fields: base64 of the whole bytes or of a prefix, their size and SHA-256."""
    if data is None:
        return {"b64": None, "size_bytes": 0, "sha256": None, "truncated": False, "ref": None}
    truncated = len(data) > inline_max
    return {
        "b64": base64.b64encode(data[:inline_max]).decode(),
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "truncated": truncated,
        "ref": ref if truncated else None,
    }


def dead_letter(
    origin: Origin,
    key: bytes | None,
    value: bytes | None,
    rejected: Rejected,
    key_ref: str | None = None,
    value_ref: str | None = None,
) -> DeadLetter:
    """The dead letter of a rejected record, under DEAD_LETTER_BYTES_MAX. The refs name the payload records that
    hold a truncated key/value whole (see `dead_letter_outputs`); without them a truncated part is not stored."""
    k, v = _part(key, KEY_INLINE_BYTES_MAX, key_ref), _part(value, VALUE_INLINE_BYTES_MAX, value_ref)
    letter = DeadLetter(
        source_topic=origin.topic,
        source_partition=origin.partition,
        source_offset=origin.offset,
        key_b64=k["b64"],
        value_b64=v["b64"],
        value_size_bytes=v["size_bytes"],
        value_sha256=v["sha256"],
        value_truncated=v["truncated"],
        value_ref=v["ref"],
        key_size_bytes=k["size_bytes"] if key is not None else None,
        key_sha256=k["sha256"],
        key_truncated=k["truncated"],
        key_ref=k["ref"],
        reason_code=_clip(rejected.code, 64),
        reason=_clip(rejected.reason, REASON_CHARS_MAX),
        errors=_bounded_errors(rejected.errors),
        received_at=datetime.now(UTC),
    )
    return _fitted(letter)


def _fitted(letter: DeadLetter) -> DeadLetter:
    """`letter` with fewer errors, then a shorter reason, until it fits (texts full of escaped characters)."""
    while len(PLATFORM_DEADLETTERS.encode(letter)) > DEAD_LETTER_BYTES_MAX:
        if letter.errors:
            letter = letter.model_copy(update={"errors": letter.errors[: len(letter.errors) // 2]})
        else:
            assert len(letter.reason) > REASON_CHARS_MAX // 4, letter.source_offset  # the rest is bounded
            letter = letter.model_copy(update={"reason": _clip(letter.reason, REASON_CHARS_MAX // 4)})
    return letter


def _payload(topic: str, partition: int, offset: int, part: str, data: bytes | None, inline_max: int) -> Any:
    """The payload record holding `data` whole, or None if the letter holds it whole or it is too large to store."""
    if data is None or len(data) <= inline_max or len(data) > payload_codec.ORIGINAL_BYTES_MAX:
        return None
    ref = payload_codec.payload_ref(topic, partition, offset, part)
    payloads = PLATFORM_DEADLETTER_PAYLOADS
    wire = payload_codec.encode(payload_codec.Payload(ref, data), payloads.max_message_bytes)
    if wire is None:
        log.warning("%s: %d bytes do not fit %s even compressed; not stored", ref, len(data), payloads.name)
        return None
    return Encoded(ref.encode(), wire, payloads.decode)


def dead_letter_outputs(
    origin: Origin, key: bytes | None, value: bytes | None, rejected: Rejected
) -> list[tuple[Topic, Any]]:
    """What a rejected record becomes, in order: the payload records of a key/value too large for the dead letter
    (stored first, so a letter never points at a payload that is not there), then the dead letter."""
    where = (origin.topic, origin.partition, origin.offset)
    key_record = _payload(*where, "key", key, KEY_INLINE_BYTES_MAX)
    value_record = _payload(*where, "value", value, VALUE_INLINE_BYTES_MAX)
    letter = dead_letter(
        origin,
        key,
        value,
        rejected,
        key_ref=key_record.key.decode() if key_record is not None else None,
        value_ref=value_record.key.decode() if value_record is not None else None,
    )
    payloads = [(PLATFORM_DEADLETTER_PAYLOADS, r) for r in (key_record, value_record) if r is not None]
    metrics.count_dead_letter_written(origin.topic, rejected.code)
    return [*payloads, (PLATFORM_DEADLETTERS, letter)]


def original_value(letter: DeadLetter) -> bytes | None:
    """The exact bytes that were rejected (for replay after a fix); a truncated value is fetched by its
    `value_ref` from PLATFORM_DEADLETTER_PAYLOADS (`nexus deadletters fetch`), not read here."""
    if letter.value_truncated:
        raise ValueError(f"only a prefix of the value is in the dead letter; the whole is at {letter.value_ref}")
    return base64.b64decode(letter.value_b64) if letter.value_b64 is not None else None


__all__ = ["Origin", "Rejected", "dead_letter", "dead_letter_outputs", "original_value", "validate"]
