"""Amounts as people read them (holder notifications, the dashboard): exact, in each currency's decimals."""

from __future__ import annotations

from domain.money import Currency, kaus_text, minor_text


def test_minor_units_are_shown_in_their_currencys_decimals() -> None:
    assert minor_text(15_000, Currency.USD) == "150.00"
    assert minor_text(1_234_567, Currency.KRW) == "1,234,567"
    assert minor_text(5, Currency.EUR) == "0.05"
    assert minor_text(0, Currency.JPY) == "0"


def test_k_aus_is_shown_with_every_decimal() -> None:
    assert kaus_text(1_000_000_000) == "1,000.000000"
    assert kaus_text(1) == "0.000001"
    assert kaus_text(123_456_789_012) == "123,456.789012"
