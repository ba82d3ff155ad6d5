"""FX for the High-Speed Bridge: quotes, the combined rate, staleness, slippage, rate locks, exact conversion.

Pure and exact: no clock reads (callers pass ``now_ms``), no floats. Rates are ``Decimal`` prices of one
``base`` unit in ``quote`` currency, e.g. KAUS/USD 0.15 (1,000 K-AUS = 150.00 USD, spec §7.2).

Rules (the bridge's documented behaviour):

* **Combined rate** = median of the *fresh* quotes, one per source (NEXUS_INTERNAL, BLOOMBERG, REUTERS; the
  newest quote of each source counts). Three fresh sources → the middle one (one bad feed cannot move the
  price). Two → the mean of the two, rounded to 10 decimal places half-even (the wire's rate precision).
  One → that quote (``FxPolicy.min_fresh_sources`` can demand more). None → :class:`StaleRate`.
* **Fresh** = ``now_ms - as_of_ms <= max_age_ms`` (default 10 s, configurable); quotes stamped more than
  ``max_future_skew_ms`` ahead of ``now_ms`` are ignored too (a producer with a broken clock).
* **Slippage** = ``|live - quoted| / quoted`` in exact rational arithmetic. It is rejected when it is
  **at or above** the limit (default 30 bps = 0.3%): exactly 0.3% rejects, anything under passes.
* **Rate lock**: the combined rate is locked for ``lock_ms`` (default 5,000 ms, spec §2.2): valid on
  ``[locked_at_ms, locked_at_ms + lock_ms)``. The payout must be *initiated* inside the window.
* **K-AUS → fiat** (:func:`kaus_to_minor`): rounded half-even to the currency's minor unit — cents for USD,
  EUR, …; whole yen/won for JPY and KRW (ISO 4217 exponent 0).
* **fiat → K-AUS** (:func:`minor_to_kaus_units`): rounded **up** to the next K-AUS base unit
  (1 unit = 10**-6 K-AUS), so the K-AUS debited always covers the fiat the merchant is paid:
  ``kaus_to_minor(minor_to_kaus_units(m, r), r) >= m``, and one unit less would not cover it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from fractions import Fraction
from types import MappingProxyType

from domain.money import KAUS_DECIMALS, MINOR_UNIT_EXPONENT, Currency, round_half_even

RATE_PLACES = 10  # the wire's rate precision (contracts.types.Rate)
_RATE_QUANTUM = Decimal(1).scaleb(-RATE_PLACES)
BPS_PER_UNIT = 10_000


class FxSource(StrEnum):
    NEXUS_INTERNAL = "NEXUS_INTERNAL"
    BLOOMBERG = "BLOOMBERG"
    REUTERS = "REUTERS"


class StaleRate(Exception):
    """No usable quote: every source is older than the staleness limit (or too few are fresh)."""

    def __init__(self, base: str, quote: str, reason: str) -> None:
        super().__init__(f"{base}/{quote}: {reason}")
        self.base = base
        self.quote = quote
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Quote:
    """One source's price of 1 ``base`` in ``quote``, as of ``as_of_ms`` (epoch ms)."""

    source: str
    base: str
    quote: Currency
    rate: Decimal
    as_of_ms: int
    quote_id: str = ""

    def __post_init__(self) -> None:
        assert isinstance(self.rate, Decimal) and self.rate.is_finite() and self.rate > 0, self.rate
        assert isinstance(self.as_of_ms, int), self.as_of_ms


@dataclass(frozen=True, slots=True)
class FxPolicy:
    max_age_ms: int = 10_000
    max_future_skew_ms: int = 2_000
    min_fresh_sources: int = 1
    slippage_limit_bps: int = 30
    lock_ms: int = 5_000

    def __post_init__(self) -> None:
        assert self.max_age_ms >= 0 and self.max_future_skew_ms >= 0
        assert self.min_fresh_sources >= 1
        assert 0 < self.slippage_limit_bps < BPS_PER_UNIT
        assert self.lock_ms > 0


@dataclass(frozen=True, slots=True)
class CombinedRate:
    base: str
    quote: Currency
    rate: Decimal
    sources: tuple[str, ...]  # the fresh sources that were combined, sorted
    oldest_as_of_ms: int


def median_rate(rates: list[Decimal]) -> Decimal:
    """Median; with an even count the mean of the middle two, rounded to 10 dp half-even."""
    assert rates, "median of nothing"
    ordered = sorted(rates)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    # (a + b) / 2 exactly as a fraction, then one rounding to the wire precision.
    exact = (Fraction(ordered[mid - 1]) + Fraction(ordered[mid])) / 2
    return _fraction_to_rate(exact)


def _fraction_to_rate(value: Fraction) -> Decimal:
    scaled = value * 10**RATE_PLACES
    return Decimal(round_half_even(scaled.numerator, scaled.denominator)).scaleb(-RATE_PLACES).quantize(_RATE_QUANTUM)


@dataclass(frozen=True)
class FxBook:
    """Latest quote per (base, quote, source). Immutable: :meth:`with_quote` returns a new book.

    Indexed by pair (``pairs[(base, quote)][source]``) so reading a rate touches only that pair's quotes.
    """

    policy: FxPolicy = field(default_factory=FxPolicy)
    pairs: Mapping[tuple[str, str], Mapping[str, Quote]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def quotes(self) -> dict[tuple[str, str, str], Quote]:
        return {(b, c, src): q for (b, c), by_source in self.pairs.items() for src, q in by_source.items()}

    def with_quote(self, q: Quote) -> FxBook:
        pair = (q.base, str(q.quote))
        by_source = self.pairs.get(pair, {})
        current = by_source.get(q.source)
        if current is not None and current.as_of_ms > q.as_of_ms:
            return self  # an older quote delivered late never replaces a newer one
        updated = dict(self.pairs)
        updated[pair] = MappingProxyType({**by_source, q.source: q})
        return FxBook(self.policy, MappingProxyType(updated))

    def with_quotes(self, quotes: list[Quote]) -> FxBook:
        book = self
        for q in quotes:
            book = book.with_quote(q)
        return book

    def fresh_quotes(
        self, quote: Currency, now_ms: int, base: str = "KAUS", policy: FxPolicy | None = None
    ) -> list[Quote]:
        p = policy or self.policy
        oldest, newest = now_ms - p.max_age_ms, now_ms + p.max_future_skew_ms
        return [q for q in self.pairs.get((base, str(quote)), {}).values() if oldest <= q.as_of_ms <= newest]

    def combined_rate(
        self, quote: Currency, now_ms: int, base: str = "KAUS", policy: FxPolicy | None = None
    ) -> CombinedRate:
        """Median of the fresh quotes (see module doc); raises :class:`StaleRate` when none qualify."""
        p = policy or self.policy
        fresh = self.fresh_quotes(quote, now_ms, base, p)
        if len(fresh) < p.min_fresh_sources:
            known = list(self.pairs.get((base, str(quote)), {}).values())
            if not known:
                raise StaleRate(base, str(quote), "no quote received from any source")
            newest_age_ms = now_ms - max(q.as_of_ms for q in known)
            raise StaleRate(
                base,
                str(quote),
                f"{len(fresh)} fresh source(s), need {p.min_fresh_sources}; newest quote is "
                f"{newest_age_ms} ms old (limit {p.max_age_ms} ms)",
            )
        return CombinedRate(
            base=base,
            quote=quote,
            rate=median_rate([q.rate for q in fresh]),
            sources=tuple(sorted(q.source for q in fresh)),
            oldest_as_of_ms=min(q.as_of_ms for q in fresh),
        )


# --------------------------------------------------------------------------- slippage


@dataclass(frozen=True, slots=True)
class SlippageCheck:
    ok: bool
    slippage_bps: Fraction  # exact
    limit_bps: int
    quoted: Decimal
    live: Decimal

    @property
    def reason(self) -> str:
        # Truncated for display, so a move just under the limit never reads as the limit itself.
        moved = self.slippage_bps
        pct = (Decimal(moved.numerator) / Decimal(moved.denominator) / 100).quantize(Decimal("0.0001"), ROUND_DOWN)
        return (
            f"rate moved {pct}% from the quoted {self.quoted} to {self.live} "
            f"(limit: under {Decimal(self.limit_bps) / 100:.2f}%)"
        )


def slippage_bps(quoted: Decimal, live: Decimal) -> Fraction:
    """|live - quoted| / quoted in basis points, exactly (Decimal arithmetic could round in its context)."""
    a, b = _ratio(quoted)  # quoted = a / b
    c, d = _ratio(live)  # live = c / d
    return Fraction(abs(c * b - a * d) * BPS_PER_UNIT, a * d)


def check_slippage(quoted: Decimal, live: Decimal, limit_bps: int) -> SlippageCheck:
    """Reject when |live - quoted| / quoted >= limit (integer cross-multiplication: exact)."""
    a, b = _ratio(quoted)
    c, d = _ratio(live)
    moved_num, moved_den = abs(c * b - a * d) * BPS_PER_UNIT, a * d  # bps = moved_num / moved_den
    ok = moved_num < limit_bps * moved_den  # exactly at the limit rejects
    return SlippageCheck(ok, Fraction(moved_num, moved_den), limit_bps, quoted, live)


# --------------------------------------------------------------------------- rate lock


@dataclass(frozen=True, slots=True)
class RateLock:
    lock_id: str
    base: str
    quote: Currency
    rate: Decimal
    locked_at_ms: int
    expires_at_ms: int

    def is_valid(self, now_ms: int) -> bool:
        return self.locked_at_ms <= now_ms < self.expires_at_ms


def lock_rate(lock_id: str, combined: CombinedRate, now_ms: int, policy: FxPolicy) -> RateLock:
    return RateLock(lock_id, combined.base, combined.quote, combined.rate, now_ms, now_ms + policy.lock_ms)


# --------------------------------------------------------------------------- exact conversion


def _ceil_div(num: int, den: int) -> int:
    assert den > 0
    return -((-num) // den)


def _ratio(rate: Decimal) -> tuple[int, int]:
    assert rate.is_finite() and rate > 0, rate
    num, den = rate.as_integer_ratio()
    return num, den


def kaus_to_minor(kaus_units: int, rate: Decimal, currency: Currency) -> int:
    """K-AUS base units → fiat minor units at ``rate`` (fiat per K-AUS), rounded half-even."""
    assert isinstance(kaus_units, int) and kaus_units >= 0
    num, den = _ratio(rate)
    exp = MINOR_UNIT_EXPONENT[currency]
    # minor = units / 10^6 * rate * 10^exp
    return round_half_even(kaus_units * num * 10**exp, den * 10**KAUS_DECIMALS)


def minor_to_kaus_units(amount_minor: int, rate: Decimal, currency: Currency) -> int:
    """Fiat minor units owed → K-AUS base units needed at ``rate``, rounded UP (the merchant is always covered)."""
    assert isinstance(amount_minor, int) and amount_minor >= 0
    num, den = _ratio(rate)
    exp = MINOR_UNIT_EXPONENT[currency]
    # units = minor / 10^exp / rate * 10^6
    return _ceil_div(amount_minor * den * 10**KAUS_DECIMALS, num * 10**exp)


def max_kaus_units_within_slippage(amount_minor: int, quoted: Decimal, currency: Currency, limit_bps: int) -> int:
    """K-AUS to hold before the live rate is known: enough for any rate the slippage check can accept.

    The check accepts only ``live > quoted * (1 - limit)``; the bound itself needs the most K-AUS, and
    ``minor_to_kaus_units`` is monotonic in the rate, so the hold always covers the final debit.
    """
    assert 0 < limit_bps < BPS_PER_UNIT
    num, den = _ratio(quoted)  # worst = num / den x (10,000 - limit) / 10,000
    exp = MINOR_UNIT_EXPONENT[currency]
    return _ceil_div(amount_minor * den * BPS_PER_UNIT * 10**KAUS_DECIMALS, num * (BPS_PER_UNIT - limit_bps) * 10**exp)


def format_rate(rate: Decimal) -> str:
    """Decimal text as the wire wants it (no exponent, at most 10 dp)."""
    return f"{rate.quantize(_RATE_QUANTUM, rounding=ROUND_HALF_EVEN).normalize():f}"
