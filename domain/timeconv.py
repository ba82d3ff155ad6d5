"""UTC-aware datetimes <-> integer epoch milliseconds, exactly (integer arithmetic, no float rounding)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime; sub-millisecond parts are dropped (floor)."""
    assert moment.tzinfo is not None, "naive datetime: the platform's timestamps are UTC-aware"
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@lru_cache(maxsize=65_536)
def from_ms(ms: int) -> datetime:
    """The UTC datetime of epoch milliseconds (cached: order and trade times repeat within a market)."""
    return EPOCH + timedelta(milliseconds=ms)


def us_to_ms(us: int) -> int:
    """Microseconds to milliseconds, rounded half up (durations reported in ms)."""
    return (us + 500) // 1000
