"""domain/fx.py: combined rate, staleness, slippage boundary, rate lock, exact conversion both ways."""

from __future__ import annotations

from decimal import Decimal as D
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.fx import (
    FxBook,
    FxPolicy,
    FxSource,
    Quote,
    StaleRate,
    check_slippage,
    format_rate,
    kaus_to_minor,
    lock_rate,
    max_kaus_units_within_slippage,
    median_rate,
    minor_to_kaus_units,
)
from domain.money import MINOR_UNIT_EXPONENT, Currency

NOW = 1_790_000_000_000
USD = Currency.USD


def q(source: FxSource, rate: str, age_ms: int = 0, ccy: Currency = USD) -> Quote:
    return Quote(source.value, "KAUS", ccy, D(rate), NOW - age_ms)


def book(*quotes: Quote, **policy: int) -> FxBook:
    return FxBook(FxPolicy(**policy)).with_quotes(list(quotes))


# --------------------------------------------------------------------------- combined rate


def test_three_fresh_sources_take_the_median() -> None:
    b = book(q(FxSource.NEXUS_INTERNAL, "0.1500"), q(FxSource.BLOOMBERG, "0.1503"), q(FxSource.REUTERS, "0.1490"))
    c = b.combined_rate(USD, NOW)
    assert c.rate == D("0.1500")
    assert c.sources == ("BLOOMBERG", "NEXUS_INTERNAL", "REUTERS")


def test_one_outlier_source_cannot_move_the_median() -> None:
    b = book(q(FxSource.NEXUS_INTERNAL, "0.1500"), q(FxSource.BLOOMBERG, "0.1501"), q(FxSource.REUTERS, "9.99"))
    assert b.combined_rate(USD, NOW).rate == D("0.1501")


def test_two_fresh_sources_take_the_mean_rounded_half_even_to_10dp() -> None:
    b = book(
        q(FxSource.BLOOMBERG, "0.1500000001"),
        q(FxSource.REUTERS, "0.1500000002"),
        q(FxSource.NEXUS_INTERNAL, "0.2", age_ms=60_000),
    )
    # mean = 0.15000000015 → half-even at 10 dp → 0.1500000002 (2 is even)
    assert b.combined_rate(USD, NOW).rate == D("0.1500000002")
    assert median_rate([D("0.1500000001"), D("0.1500000004")]) == D("0.1500000002")  # 0.15000000025 → ...02


def test_newest_quote_per_source_wins_and_late_older_quotes_are_ignored() -> None:
    b = book(q(FxSource.BLOOMBERG, "0.1400", age_ms=100))
    b = b.with_quote(q(FxSource.BLOOMBERG, "0.1500", age_ms=50))
    b = b.with_quote(q(FxSource.BLOOMBERG, "0.1300", age_ms=900))  # delivered late, older
    assert b.combined_rate(USD, NOW).rate == D("0.1500")


def test_stale_rate_when_every_quote_is_older_than_the_limit() -> None:
    b = book(
        q(FxSource.BLOOMBERG, "0.15", age_ms=10_001), q(FxSource.REUTERS, "0.15", age_ms=20_000), max_age_ms=10_000
    )
    with pytest.raises(StaleRate) as err:
        b.combined_rate(USD, NOW)
    assert "10001 ms old" in err.value.reason


def test_staleness_limit_is_inclusive_and_configurable() -> None:
    b = book(q(FxSource.BLOOMBERG, "0.15", age_ms=10_000), max_age_ms=10_000)
    assert b.combined_rate(USD, NOW).rate == D("0.15")
    with pytest.raises(StaleRate):
        b.combined_rate(USD, NOW, policy=FxPolicy(max_age_ms=9_999))


def test_stale_sources_are_left_out_of_the_median() -> None:
    b = book(
        q(FxSource.BLOOMBERG, "0.1500"), q(FxSource.REUTERS, "0.1502"), q(FxSource.NEXUS_INTERNAL, "0.9", age_ms=11_000)
    )
    assert b.combined_rate(USD, NOW).rate == D("0.1501")


def test_no_quote_at_all_and_min_sources() -> None:
    with pytest.raises(StaleRate, match="no quote"):
        FxBook().combined_rate(Currency.KRW, NOW)
    b = book(q(FxSource.BLOOMBERG, "0.15"), min_fresh_sources=2)
    with pytest.raises(StaleRate, match="need 2"):
        b.combined_rate(USD, NOW)


def test_quotes_from_the_future_beyond_skew_are_ignored() -> None:
    b = book(q(FxSource.BLOOMBERG, "0.15", age_ms=-5_000), max_future_skew_ms=2_000)
    with pytest.raises(StaleRate):
        b.combined_rate(USD, NOW)


# --------------------------------------------------------------------------- slippage


def test_slippage_exactly_at_0_3_percent_rejects() -> None:
    # 0.15 * 1.003 = 0.15045 exactly; 0.15 * 0.997 = 0.14955 exactly
    for live in ("0.15045", "0.14955"):
        check = check_slippage(D("0.15"), D(live), 30)
        assert not check.ok and check.slippage_bps == 30
        assert "0.3000%" in check.reason


def test_slippage_just_under_0_3_percent_passes() -> None:
    for live in ("0.1504499999", "0.1495500001"):
        check = check_slippage(D("0.15"), D(live), 30)
        assert check.ok and check.slippage_bps < 30
        assert "0.2999%" in check.reason


def test_slippage_is_exact_for_long_rates() -> None:
    quoted = D("1234.5678901234")
    at_limit = quoted * D("1.003")  # exact in Decimal: 1238.2715937937702
    assert not check_slippage(quoted, at_limit, 30).ok
    assert check_slippage(quoted, at_limit - D("0.0000000001"), 30).ok


# --------------------------------------------------------------------------- lock


def test_rate_lock_valid_for_exactly_5_seconds() -> None:
    c = book(q(FxSource.BLOOMBERG, "0.15")).combined_rate(USD, NOW)
    lock = lock_rate("L1", c, NOW, FxPolicy())
    assert lock.is_valid(NOW) and lock.is_valid(NOW + 4_999)
    assert not lock.is_valid(NOW + 5_000) and not lock.is_valid(NOW - 1)


# --------------------------------------------------------------------------- conversion


def test_spec_example_1000_kaus_is_150_usd() -> None:
    assert kaus_to_minor(1_000_000_000, D("0.15"), USD) == 15_000
    assert minor_to_kaus_units(15_000, D("0.15"), USD) == 1_000_000_000


def test_jpy_and_krw_have_no_minor_unit() -> None:
    assert MINOR_UNIT_EXPONENT[Currency.JPY] == 0 and MINOR_UNIT_EXPONENT[Currency.KRW] == 0
    # 1 K-AUS at 210.55 KRW → 210.55 won → rounds half-even to 211 whole won
    assert kaus_to_minor(1_000_000, D("210.55"), Currency.KRW) == 211
    assert kaus_to_minor(1_000_000, D("210.50"), Currency.KRW) == 210  # half-even: tie to even
    assert kaus_to_minor(1_000_000, D("211.50"), Currency.KRW) == 212
    # 1,000 won at 210.55 KRW/K-AUS = 4.749465... K-AUS → rounded UP to the next micro-K-AUS
    assert minor_to_kaus_units(1_000, D("210.55"), Currency.KRW) == 4_749_466
    assert minor_to_kaus_units(2_300, D("23.1"), Currency.JPY) == 99_567_100  # 99.5670995... → up


def test_inverse_rounds_up_by_at_most_one_unit() -> None:
    # 1 cent at 0.15 USD/K-AUS = 0.0666666.. K-AUS → 66,667 units (not 66,666)
    assert minor_to_kaus_units(1, D("0.15"), USD) == 66_667


@given(
    amount=st.integers(min_value=1, max_value=10**12),
    rate=st.decimals(min_value=D("0.0000000001"), max_value=D("99999"), places=10, allow_nan=False),
    ccy=st.sampled_from(list(Currency)),
)
def test_units_needed_always_cover_the_fiat_and_are_minimal(amount: int, rate: D, ccy: Currency) -> None:
    units = minor_to_kaus_units(amount, rate, ccy)
    assert kaus_to_minor(units, rate, ccy) >= amount
    # one unit less is strictly short of the exact amount (before any rounding)
    exp = MINOR_UNIT_EXPONENT[ccy]
    assert Fraction(units - 1) * Fraction(rate) * 10**exp < Fraction(amount) * 10**6


@given(
    amount=st.integers(min_value=1, max_value=10**10),
    quoted=st.decimals(min_value=D("0.001"), max_value=D("5000"), places=6, allow_nan=False),
    moved_bps_x100=st.integers(min_value=-2_999, max_value=2_999),
)
def test_hold_covers_any_rate_the_slippage_check_accepts(amount: int, quoted: D, moved_bps_x100: int) -> None:
    live = (quoted * (1 + D(moved_bps_x100) / 1_000_000)).quantize(D("1E-10"))
    if not check_slippage(quoted, live, 30).ok:
        return
    hold = max_kaus_units_within_slippage(amount, quoted, USD, 30)
    assert minor_to_kaus_units(amount, live, USD) <= hold


def test_format_rate() -> None:
    assert format_rate(D("0.1500")) == "0.15"
    assert format_rate(D("1354.21")) == "1354.21"
    assert format_rate(D("10")) == "10"


# --------------------------------------------------------------------------- the ECB replay feed (devtools/fx_feed.py)


def test_fx_feed_quotes_are_three_sources_per_currency_priced_from_ecb() -> None:
    from datetime import date

    from contracts.models import FxRate
    from devtools.fx_feed import AED_PER_USD, KAUS_USD, ecb_rates, fx_quotes, kaus_mid_rates

    day = date(2026, 10, 30)
    quotes = fx_quotes(day, seed=0)
    assert len(quotes) == 3 * len(Currency)
    assert all(isinstance(q, FxRate) and q.base == "KAUS" for q in quotes)
    mids = kaus_mid_rates(day)
    assert mids[Currency.USD] == KAUS_USD  # spec: 1,000 K-AUS = 150.00 USD
    assert mids[Currency.AED] == KAUS_USD * AED_PER_USD  # the dirham's USD peg (the ECB has no AED)
    _, per_eur = ecb_rates(day)
    assert mids[Currency.EUR] == (KAUS_USD / per_eur["USD"]).quantize(D("1E-10"))
    for q in quotes:
        bps = abs(q.rate - mids[q.quote]) / mids[q.quote] * 10_000
        assert bps <= D("4.001"), (q.source, q.quote, bps)
        assert (bps == 0) == (q.source.value == "NEXUS_INTERNAL")
    assert fx_quotes(day, seed=0) == quotes  # pure: same inputs, same quotes
    # the sources disagree, so the median is not always the same source
    book = FxBook().with_quotes([Quote(q.source.value, "KAUS", q.quote, q.rate, NOW) for q in quotes])
    medians = {c: book.combined_rate(c, NOW).rate for c in Currency}
    assert any(medians[c] != mids[c] for c in Currency)


def test_fx_feed_uses_the_latest_fixing_on_days_without_one() -> None:
    from datetime import date

    from devtools.fx_feed import ecb_rates

    saturday = date(2026, 10, 31)
    fixing_day, _ = ecb_rates(saturday)
    assert fixing_day == date(2026, 10, 30)
