"""Exact money: K-AUS base units and fiat minor units, never float.

K-AUS is held as integer *base units*: 1 K-AUS = 10**KAUS_DECIMALS units
(micro-K-AUS), so 1,000 K-AUS = 1_000_000_000 units. Fiat amounts are integer
*minor units* of their currency (cents, or whole yen/won where the currency has
no minor unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum

KAUS_DECIMALS = 6
KAUS_UNITS_PER_TOKEN = 10**KAUS_DECIMALS


class Currency(StrEnum):
    """Fiat currencies the platform settles into (spec §2.2 rail table)."""

    USD = "USD"
    EUR = "EUR"
    GBP = "GBP"
    JPY = "JPY"
    KRW = "KRW"
    AUD = "AUD"
    SGD = "SGD"
    HKD = "HKD"
    AED = "AED"
    CNY = "CNY"


# ISO 4217 exponents: JPY and KRW have no minor unit.
MINOR_UNIT_EXPONENT: dict[Currency, int] = {
    Currency.USD: 2,
    Currency.EUR: 2,
    Currency.GBP: 2,
    Currency.JPY: 0,
    Currency.KRW: 0,
    Currency.AUD: 2,
    Currency.SGD: 2,
    Currency.HKD: 2,
    Currency.AED: 2,
    Currency.CNY: 2,
}


class CurrencyMismatch(ValueError):
    """Raised when amounts in different currencies are combined."""


@dataclass(frozen=True, slots=True, order=True)
class Money:
    """An exact fiat amount: integer minor units paired with its currency."""

    minor_units: int
    currency: Currency

    def __post_init__(self) -> None:
        assert isinstance(self.minor_units, int) and not isinstance(self.minor_units, bool)

    def _check(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.minor_units + other.minor_units, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.minor_units - other.minor_units, self.currency)

    def to_decimal(self) -> Decimal:
        """Major units with the currency's fixed scale, e.g. Decimal('150.00')."""
        exp = MINOR_UNIT_EXPONENT[self.currency]
        return Decimal(self.minor_units).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))

    @classmethod
    def from_decimal(cls, amount: Decimal, currency: Currency) -> Money:
        """Exact conversion; raises if `amount` has more precision than the currency."""
        exp = MINOR_UNIT_EXPONENT[currency]
        scaled = amount.scaleb(exp)
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{amount} has more precision than {currency} allows")
        return cls(int(scaled), currency)

    def __str__(self) -> str:
        return f"{self.to_decimal()} {self.currency}"


def round_to_minor(amount: Decimal, currency: Currency) -> int:
    """Round a major-unit Decimal to integer minor units, banker's rounding."""
    exp = MINOR_UNIT_EXPONENT[currency]
    return int(amount.scaleb(exp).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def round_half_even(numerator: int, denominator: int) -> int:
    """numerator/denominator rounded to the nearest int, ties to even (denominator > 0)."""
    assert denominator > 0
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def kaus_to_decimal(units: int) -> Decimal:
    """K-AUS base units as a Decimal token amount with fixed scale 6."""
    return Decimal(units).scaleb(-KAUS_DECIMALS).quantize(Decimal(1).scaleb(-KAUS_DECIMALS))


def minor_text(amount_minor: int, currency: Currency) -> str:
    """Minor units in the currency's own decimals, grouped: 15000 USD -> "150.00", 15000 KRW -> "15,000"."""
    exp = MINOR_UNIT_EXPONENT[currency]
    if exp == 0:
        return f"{amount_minor:,}"
    whole, frac = divmod(amount_minor, 10**exp)
    return f"{whole:,}.{frac:0{exp}d}"


def kaus_text(units: int) -> str:
    """K-AUS base units with every decimal, grouped: 1000000000 -> "1,000.000000"."""
    whole, frac = divmod(units, KAUS_UNITS_PER_TOKEN)
    return f"{whole:,}.{frac:0{KAUS_DECIMALS}d}"
