"""Ingress validation: raw upstream bytes -> typed message, or a dead letter with a reason.

Pure function of (topic, key, value, origin): no Faust, no I/O, so the same code
guards the Faust agents, the plain confluent-kafka loop and the tests.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from contracts.models import DeadLetter
from contracts.topics import Topic

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


def _classify(error: dict[str, Any]) -> tuple[str, dict[str, str]]:
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
    try:
        message = topic.decode(value)
    except ValidationError as exc:
        details = [_classify(dict(e))[1] for e in exc.errors(include_url=False)]
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


def dead_letter(origin: Origin, key: bytes | None, value: bytes | None, rejected: Rejected) -> DeadLetter:
    return DeadLetter(
        source_topic=origin.topic,
        source_partition=origin.partition,
        source_offset=origin.offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value).decode() if value is not None else None,
        value_size_bytes=len(value or b""),
        reason_code=rejected.code,
        reason=rejected.reason,
        errors=rejected.errors,
        received_at=datetime.now(UTC),
    )


def original_value(letter: DeadLetter) -> bytes | None:
    """The exact bytes that were rejected (for replay after a fix)."""
    return base64.b64decode(letter.value_b64) if letter.value_b64 is not None else None


__all__ = ["Origin", "Rejected", "dead_letter", "original_value", "validate"]
