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

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, ConfigDict, Field, StrictInt, WithJsonSchema
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
SignedMinorUnits = Annotated[StrictInt, Field(ge=-MAX_UNITS, le=MAX_UNITS, description="signed fiat minor units")]
QuantityWh = Annotated[StrictInt, Field(gt=0, le=10**12, description="energy in watt-hours")]
PriceUnitsPerKwh = Annotated[StrictInt, Field(gt=0, le=10**15, description="K-AUS base units per kWh")]
DurationMs = Annotated[StrictInt, Field(ge=0, le=86_400_000)]

RATE_PATTERN = r"^[0-9]{1,14}(\.[0-9]{1,10})?$"


def _decimal_string(value: object) -> object:
    # JSON numbers are binary floats in most producers' languages; a rate must arrive as text.
    if isinstance(value, Decimal):
        return value
    if not isinstance(value, str):
        raise ValueError('must be a decimal string such as "0.15", not a JSON number')
    if not re.fullmatch(RATE_PATTERN, value):
        raise ValueError('must match digits[.up to 10 digits], e.g. "1354.2100"')
    return value


# Exchange rates and ratios: decimal *strings* in JSON, positive, at most 10 fractional digits.
Rate = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(gt=0, max_digits=24, decimal_places=10, allow_inf_nan=False),
    WithJsonSchema(
        {"type": "string", "pattern": RATE_PATTERN, "description": 'positive decimal string, e.g. "0.1500"'}
    ),
]
Bps = Annotated[StrictInt, Field(ge=0, le=10_000, description="basis points")]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_utc(value: datetime) -> datetime:
    # The platform counts time in epoch milliseconds (domain/timeconv.py): earlier instants have no meaning there.
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 falls before year 1 in UTC
        raise PydanticCustomError("timestamp_out_of_range", "the instant falls outside years 1-9999 in UTC") from None
    if utc < EPOCH:
        raise PydanticCustomError("timestamp_out_of_range", "timestamps start at 1970-01-01T00:00:00Z")
    return utc


# Timestamps must carry an offset (naive ones are rejected), are normalised to UTC and are not before 1970.
UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    # JSON Schema's format keywords (ajv-formats and others read formatMinimum): the published rule, machine-readable.
    Field(json_schema_extra={"formatMinimum": "1970-01-01T00:00:00Z"}),
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
    "PriceUnitsPerKwh",
    "QuantityWh",
    "Rate",
    "SignedMinorUnits",
    "UtcDatetime",
]
