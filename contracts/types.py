"""Field types shared by every contract: exact money, UTC time, producer ids.

Why these rules: upstream systems are written in other languages, so every
constraint lives in the JSON Schema they read (see contracts/README.md), and the
worker rejects anything outside it into the dead-letter topic.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

# A producer-supplied identifier: also the idempotency key of the state change it causes.
Id = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"),
]

# Money is integer units; 10**18 bounds it well inside int64-safe decimal text and
# rejects 40-digit amounts. JSON floats and numeric strings are refused (strict).
MAX_UNITS = 10**18
KausUnits = Annotated[StrictInt, Field(ge=0, le=MAX_UNITS, description="K-AUS base units; 1 K-AUS = 1,000,000 units")]
PositiveKausUnits = Annotated[StrictInt, Field(gt=0, le=MAX_UNITS, description="K-AUS base units (> 0)")]
MinorUnits = Annotated[
    StrictInt, Field(ge=0, le=MAX_UNITS, description="fiat minor units (cents; whole units for JPY/KRW)")
]
PositiveMinorUnits = Annotated[
    StrictInt, Field(gt=0, le=MAX_UNITS, description="fiat minor units (> 0; cents, whole units for JPY/KRW)")
]
SignedMinorUnits = Annotated[StrictInt, Field(ge=-MAX_UNITS, le=MAX_UNITS, description="signed fiat minor units")]
QuantityWh = Annotated[StrictInt, Field(gt=0, le=10**12, description="energy in watt-hours")]
PriceUnitsPerKwh = Annotated[StrictInt, Field(gt=0, le=10**15, description="K-AUS base units per kWh")]
DurationMs = Annotated[StrictInt, Field(ge=0, le=86_400_000)]

RATE_INTEGER_DIGITS = 14
RATE_FRACTION_DIGITS = 10


def positive_decimal_pattern(integer_digits: int, fraction_digits: int) -> str:
    """A regex of the positive decimals with at most these digit counts, no leading zero, no exponent.

    Written without look-ahead so every JSON Schema validator compiles it (RE2-based ones included): a
    whole part from 1, or "0." and a fraction with a non-zero digit, enumerated by its count of leading zeros.
    """
    fraction = rf"(?:\.[0-9]{{1,{fraction_digits}}})?"
    whole = rf"[1-9][0-9]{{0,{integer_digits - 1}}}{fraction}"
    small = "|".join(
        "0" * zeros + "[1-9]" + (rf"[0-9]{{0,{fraction_digits - 1 - zeros}}}" if zeros < fraction_digits - 1 else "")
        for zeros in range(fraction_digits)
    )
    return rf"^(?:{whole}|0\.(?:{small}))$"


RATE_PATTERN = positive_decimal_pattern(RATE_INTEGER_DIGITS, RATE_FRACTION_DIGITS)
_RATE = re.compile(RATE_PATTERN)
# The same digits, zero allowed: a text of this shape that is not a rate is zero (told apart for its error code).
_DECIMAL_SHAPE = re.compile(
    rf"^(?:0|[1-9][0-9]{{0,{RATE_INTEGER_DIGITS - 1}}})(?:\.[0-9]{{1,{RATE_FRACTION_DIGITS}}})?$"
)


def _decimal_string(value: object) -> object:
    # JSON numbers are binary floats in most producers' languages; a rate must arrive as text.
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", 'must be a decimal string such as "0.15", not a JSON number')
    if _RATE.match(value) is None:
        if _DECIMAL_SHAPE.match(value) is not None:
            raise PydanticCustomError("greater_than", "must be greater than 0")
        raise PydanticCustomError(
            "string_pattern_mismatch",
            f'must be a decimal string: 1-{RATE_INTEGER_DIGITS} digits without a leading zero, optionally "." and '
            f'1-{RATE_FRACTION_DIGITS} digits, e.g. "1354.2100" or "0.15"',
        )
    return value


# Exchange rates and ratios: decimal *strings* in JSON, positive, at most 10 fractional digits.
Rate = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(gt=0, max_digits=24, decimal_places=10, allow_inf_nan=False),
    # Positional notation on the wire: str(Decimal) writes small rates as "1E-10", which the pattern refuses.
    PlainSerializer(lambda rate: format(rate, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": RATE_PATTERN,
            "description": f"positive decimal string, at most {RATE_INTEGER_DIGITS} digits before the point (no "
            f'leading zero) and {RATE_FRACTION_DIGITS} after, e.g. "0.1500"',
        }
    ),
]
Bps = Annotated[StrictInt, Field(ge=0, le=10_000, description="basis points")]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 date-time (JSON Schema's `date-time` format): seconds required, "T" between date and time, an offset.
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"


def _iso_text(value: object) -> object:
    # pydantic reads a JSON number, or a string of digits, as Unix time: a producer's unit slip (ms for s) would land
    # in another century unnoticed. pydantic's parser checks the digits; these few character tests (cheaper than the
    # pattern, on every timestamp) refuse what it accepts beyond RFC 3339: no "T", no seconds, "+0900", "00,5".
    # A naive text passes here, so it gets its own error (NAIVE_TIMESTAMP).
    if type(value) is str:
        if len(value) < 19 or value[10] not in "Tt" or value[16] != ":" or value[-5] in "+-" or "," in value:
            raise PydanticCustomError(
                "datetime_parsing", "must be an ISO 8601 (RFC 3339) timestamp such as 2026-11-24T09:00:00Z"
            )
        return value
    if isinstance(value, datetime):
        return value
    raise PydanticCustomError(
        "datetime_type",
        "must be an ISO 8601 timestamp string such as 2026-11-24T09:00:00Z (not a number: no Unix time)",
    )


def _to_utc(value: datetime) -> datetime:
    # The platform counts time in epoch milliseconds (domain/timeconv.py): earlier instants have no meaning there.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 falls before year 1 in UTC
        raise PydanticCustomError("timestamp_out_of_range", "the instant falls outside years 1-9999 in UTC") from None
    if utc < EPOCH:
        raise PydanticCustomError("timestamp_out_of_range", "timestamps start at 1970-01-01T00:00:00Z")
    return utc


# Timestamps are RFC 3339 text (never numbers), must carry an offset (naive ones are rejected), are normalised to
# UTC and are not before 1970.
UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_text),
    AfterValidator(_to_utc),
    # The published rule, machine-readable: `pattern` for every validator (format checks are optional in 2020-12),
    # formatMinimum for those that read it (ajv-formats and others).
    Field(json_schema_extra={"formatMinimum": "1970-01-01T00:00:00Z", "pattern": TIMESTAMP_PATTERN}),
]

# One config for every contract: unknown fields are errors (typos must not be silently
# ignored on money messages), records are immutable once decoded.
CONTRACT_CONFIG = ConfigDict(
    extra="forbid",
    frozen=True,
    str_strip_whitespace=False,
    ser_json_timedelta="iso8601",
    use_enum_values=False,
)

__all__ = [
    "CONTRACT_CONFIG",
    "Bps",
    "Decimal",
    "DurationMs",
    "Id",
    "KausUnits",
    "MinorUnits",
    "PositiveKausUnits",
    "PositiveMinorUnits",
    "PriceUnitsPerKwh",
    "QuantityWh",
    "Rate",
    "SignedMinorUnits",
    "UtcDatetime",
]

# Personal data sealed with envelope encryption (docs/security.md): a fresh AES-256-GCM data key per value, the data
# key wrapped by the HSM's encryption key of the named version. Only the services that need the value open it.
Sealed = Annotated[
    str,
    Field(
        max_length=4096,
        pattern=r"^enc:v1:[A-Za-z0-9._-]{1,128}:[A-Za-z0-9+/]+={0,2}:[A-Za-z0-9+/]+={0,2}:[A-Za-z0-9+/]+={0,2}$",
        description="enc:v1:<encryption key id>:<wrapped data key>:<nonce>:<ciphertext> (base64 parts)",
    ),
]
