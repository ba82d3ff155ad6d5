"""Payment rails: the spec's region table, provider fees, per-rail circuit breakers and rail selection.

Pure: no clock reads (callers pass ``now_ms``), integer money only.

**Rail table** (spec §2.2, one primary rail per region) plus three *fallback* rails that any region may use
when its currency is supported. Fallback latencies are our estimates (the spec gives none) and are set
slower than every primary rail, so a fallback is only chosen when the primary is unavailable:

=================  ========  ==========  ===============================  =====================
rail               provider  latency ms  currencies                       regions
=================  ========  ==========  ===============================  =====================
TOSS_PAYMENTS      TOSS      180         KRW                              KR
STRIPE_INSTANT     STRIPE    220         USD                              US
STRIPE_SEPA        STRIPE    250         EUR                              EU
PAYPAY_BUSINESS    PAYPAY    200         JPY                              JP
STRIPE_ASIA        STRIPE    190         SGD                              SG
STRIPE_AU          STRIPE    195         AUD                              AU
STRIPE_HK          STRIPE    185         HKD                              HK
PAYFORT            PAYFORT   210         AED                              AE
ALIPAY (fallback)  ALIPAY    280         CNY                              any
WISE (fallback)    WISE      320         every platform currency          any (cross-border)
PAYPAL (fallback)  PAYPAL    350         USD, EUR, GBP, AUD (§3.1)        any
=================  ========  ==========  ===============================  =====================

**Selection** (:func:`select_rail`): among the rails eligible for (region, currency) — the region's
primary rail if its currency matches, and every fallback supporting the currency — drop those without an
adapter, those already tried for this payment and those whose breaker does not admit a call; then take the
lowest expected latency, then the lowest fee for this amount, then the rail name (determinism). Every
primary is faster than every fallback, so a fallback is chosen only when the primary is out, and the choice
says why (:class:`RailSubstitution`, the first of those checks that dropped it, or the currency).

**Fees** (spec §3.1), exact integers in the payout currency's minor units, percentage part rounded
**up** to the next minor unit (a provider never charges less than the exact fee, and we never book
less than we will be charged): PayPal 2.5%; Stripe 0.25% + a fixed 25¢-equivalent from a static
per-currency table (e.g. 25 US cents, 25 euro cents, 40 yen, 350 won); Wise 0.5% on the USD/EUR/GBP
corridors, 1.0% on AUD/SGD/HKD/JPY, 1.5% on KRW/AED/CNY (the spec's 0.5–1.5% band); Toss 2.3%;
Alipay 1.5%. PayPay 1.98% and PayFort 2.2% are not in §3.1 and are placeholders to confirm with finance.

**Circuit breaker** (spec §9.2 "automatic at 3 consecutive failures"): CLOSED counts consecutive
failures; the 3rd opens it. OPEN refuses calls for ``cooldown_ms`` (default 30 s, the spec's failover
window), then is HALF_OPEN: exactly one probe call is admitted (its slot is re-offered if it has not
reported within ``probe_lease_ms``); the probe's success closes the breaker, its failure re-opens it for
another cool-down. A provider *decline* (a 4xx about this payment) is not a rail failure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from domain.money import Currency


class Region(StrEnum):
    KR = "KR"
    US = "US"
    EU = "EU"
    JP = "JP"
    SG = "SG"
    AU = "AU"
    HK = "HK"
    AE = "AE"


class Rail(StrEnum):
    TOSS_PAYMENTS = "TOSS_PAYMENTS"
    STRIPE_INSTANT = "STRIPE_INSTANT"
    STRIPE_SEPA = "STRIPE_SEPA"
    PAYPAY_BUSINESS = "PAYPAY_BUSINESS"
    STRIPE_ASIA = "STRIPE_ASIA"
    STRIPE_AU = "STRIPE_AU"
    STRIPE_HK = "STRIPE_HK"
    PAYFORT = "PAYFORT"
    PAYPAL = "PAYPAL"
    WISE = "WISE"
    ALIPAY = "ALIPAY"


class RailSubstitution(StrEnum):
    """Why a payment went out over another rail than its region's primary one."""

    PRIMARY_CIRCUIT_OPEN = "PRIMARY_CIRCUIT_OPEN"  # the primary's breaker refused calls (3 failures in a row)
    PRIMARY_FAILED = "PRIMARY_FAILED"  # the primary was tried for this payment and failed
    PRIMARY_NOT_CONFIGURED = "PRIMARY_NOT_CONFIGURED"  # this deployment has no adapter for the primary's provider
    CURRENCY_NOT_ON_PRIMARY = "CURRENCY_NOT_ON_PRIMARY"  # the payout currency is not the region's currency


class Provider(StrEnum):
    PAYPAL = "PAYPAL"
    STRIPE = "STRIPE"
    WISE = "WISE"
    TOSS = "TOSS"
    ALIPAY = "ALIPAY"
    PAYPAY = "PAYPAY"
    PAYFORT = "PAYFORT"


@dataclass(frozen=True, slots=True)
class RailSpec:
    rail: Rail
    provider: Provider
    expected_latency_ms: int
    currencies: frozenset[Currency]
    region: Region | None  # None: a cross-border fallback usable from any region


_ALL = frozenset(Currency)
C = Currency

RAILS: dict[Rail, RailSpec] = {
    s.rail: s
    for s in (
        RailSpec(Rail.TOSS_PAYMENTS, Provider.TOSS, 180, frozenset({C.KRW}), Region.KR),
        RailSpec(Rail.STRIPE_INSTANT, Provider.STRIPE, 220, frozenset({C.USD}), Region.US),
        RailSpec(Rail.STRIPE_SEPA, Provider.STRIPE, 250, frozenset({C.EUR}), Region.EU),
        RailSpec(Rail.PAYPAY_BUSINESS, Provider.PAYPAY, 200, frozenset({C.JPY}), Region.JP),
        RailSpec(Rail.STRIPE_ASIA, Provider.STRIPE, 190, frozenset({C.SGD}), Region.SG),
        RailSpec(Rail.STRIPE_AU, Provider.STRIPE, 195, frozenset({C.AUD}), Region.AU),
        RailSpec(Rail.STRIPE_HK, Provider.STRIPE, 185, frozenset({C.HKD}), Region.HK),
        RailSpec(Rail.PAYFORT, Provider.PAYFORT, 210, frozenset({C.AED}), Region.AE),
        RailSpec(Rail.ALIPAY, Provider.ALIPAY, 280, frozenset({C.CNY}), None),
        RailSpec(Rail.WISE, Provider.WISE, 320, _ALL, None),
        RailSpec(Rail.PAYPAL, Provider.PAYPAL, 350, frozenset({C.USD, C.EUR, C.GBP, C.AUD}), None),
    )
}

PRIMARY_RAIL: dict[Region, Rail] = {s.region: s.rail for s in RAILS.values() if s.region is not None}
REGION_CURRENCY: dict[Region, Currency] = {
    s.region: next(iter(s.currencies)) for s in RAILS.values() if s.region is not None
}

assert len(PRIMARY_RAIL) == len(Region) == 8
# A fallback never outranks an available primary: a substitution always has a reason (select_rail relies on it).
assert max(RAILS[r].expected_latency_ms for r in PRIMARY_RAIL.values()) < min(
    s.expected_latency_ms for s in RAILS.values() if s.region is None
)


# --------------------------------------------------------------------------- fees


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    percent_bps: Mapping[Currency, int]
    fixed_minor: Mapping[Currency, int]


def _flat(bps: int) -> dict[Currency, int]:
    return dict.fromkeys(Currency, bps)


# Stripe's fixed part: "25¢-equivalent", as a static table so fees stay pure and reviewable.
STRIPE_FIXED_MINOR: dict[Currency, int] = {
    C.USD: 25,
    C.EUR: 25,
    C.GBP: 20,
    C.JPY: 40,
    C.KRW: 350,
    C.AUD: 40,
    C.SGD: 35,
    C.HKD: 200,
    C.AED: 92,
    C.CNY: 180,
}
WISE_BPS: dict[Currency, int] = {
    C.USD: 50,
    C.EUR: 50,
    C.GBP: 50,
    C.AUD: 100,
    C.SGD: 100,
    C.HKD: 100,
    C.JPY: 100,
    C.KRW: 150,
    C.AED: 150,
    C.CNY: 150,
}
assert set(STRIPE_FIXED_MINOR) == set(WISE_BPS) == set(Currency)

FEES: dict[Provider, FeeSchedule] = {
    Provider.PAYPAL: FeeSchedule(_flat(250), {}),
    Provider.STRIPE: FeeSchedule(_flat(25), STRIPE_FIXED_MINOR),
    Provider.WISE: FeeSchedule(WISE_BPS, {}),
    Provider.TOSS: FeeSchedule(_flat(230), {}),
    Provider.ALIPAY: FeeSchedule(_flat(150), {}),
    Provider.PAYPAY: FeeSchedule(_flat(198), {}),
    Provider.PAYFORT: FeeSchedule(_flat(220), {}),
}


def fee_minor(provider: Provider, amount_minor: int, currency: Currency) -> int:
    """The provider's fee for paying out ``amount_minor``: ceil(amount x bps / 10,000) + fixed part."""
    assert isinstance(amount_minor, int) and amount_minor >= 0
    schedule = FEES[provider]
    bps = schedule.percent_bps[currency]
    percent_part = -((-amount_minor * bps) // 10_000)
    return percent_part + schedule.fixed_minor.get(currency, 0)


# --------------------------------------------------------------------------- circuit breaker


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    failure_threshold: int = 3
    cooldown_ms: int = 30_000
    probe_lease_ms: int = 10_000
    consecutive_failures: int = 0
    opened_at_ms: int | None = None
    probe_started_at_ms: int | None = None

    def __post_init__(self) -> None:
        assert self.failure_threshold >= 1 and self.cooldown_ms >= 0 and self.probe_lease_ms > 0

    def state(self, now_ms: int) -> BreakerState:
        if self.opened_at_ms is None:
            return BreakerState.CLOSED
        if now_ms - self.opened_at_ms < self.cooldown_ms:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allows(self, now_ms: int) -> bool:
        state = self.state(now_ms)
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        # HALF_OPEN: one probe at a time; a probe that never reported frees its slot after the lease.
        return self.probe_started_at_ms is None or now_ms - self.probe_started_at_ms >= self.probe_lease_ms

    def on_call(self, now_ms: int) -> CircuitBreaker:
        """Record that a call is being made (claims the probe slot when half-open)."""
        if self.state(now_ms) is BreakerState.HALF_OPEN:
            return replace(self, probe_started_at_ms=now_ms)
        return self

    def on_success(self, now_ms: int) -> CircuitBreaker:
        if self.state(now_ms) is BreakerState.OPEN:
            return self  # a call started before the breaker opened: not evidence of recovery
        return replace(self, consecutive_failures=0, opened_at_ms=None, probe_started_at_ms=None)

    def on_failure(self, now_ms: int) -> CircuitBreaker:
        state = self.state(now_ms)
        if state is BreakerState.OPEN:
            return self  # already open; late failures do not extend the cool-down
        if state is BreakerState.HALF_OPEN:
            return replace(
                self, consecutive_failures=self.consecutive_failures + 1, opened_at_ms=now_ms, probe_started_at_ms=None
            )
        failures = self.consecutive_failures + 1
        opened = now_ms if failures >= self.failure_threshold else None
        return replace(self, consecutive_failures=failures, opened_at_ms=opened)


Breakers = Mapping[Rail, CircuitBreaker]
DEFAULT_BREAKER = CircuitBreaker()


def new_breakers(template: CircuitBreaker = DEFAULT_BREAKER) -> dict[Rail, CircuitBreaker]:
    return dict.fromkeys(Rail, template)


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class RailChoice:
    spec: RailSpec
    fee_minor: int
    is_fallback: bool
    skipped: tuple[tuple[Rail, str], ...]  # better-ranked rails passed over, and why
    substitution: RailSubstitution | None = None  # why this is not the region's primary rail (None: it is)

    @property
    def rail(self) -> Rail:
        return self.spec.rail

    @property
    def provider(self) -> Provider:
        return self.spec.provider


@dataclass(frozen=True, slots=True)
class NoRail:
    reason: str
    skipped: tuple[tuple[Rail, str], ...]


def eligible_rails(region: Region, currency: Currency) -> list[RailSpec]:
    """Rails that can pay ``currency`` to a merchant in ``region``, unranked."""
    return [s for s in RAILS.values() if currency in s.currencies and (s.region is None or s.region is region)]


def unavailable(
    rail: Rail, breakers: Breakers, now_ms: int, exclude: Collection[Rail], enabled: Collection[Rail] | None
) -> tuple[RailSubstitution, str] | None:
    """Why ``rail`` cannot take this payment now (as the substitution it causes when it is the primary, and in
    words), or None when it can. Checked in this order: an adapter, this payment's attempts, the breaker."""
    if enabled is not None and rail not in enabled:
        return RailSubstitution.PRIMARY_NOT_CONFIGURED, "no adapter configured"
    if rail in exclude:
        return RailSubstitution.PRIMARY_FAILED, "already tried for this payment"
    breaker = breakers.get(rail, DEFAULT_BREAKER)
    if not breaker.allows(now_ms):
        return RailSubstitution.PRIMARY_CIRCUIT_OPEN, f"circuit breaker {breaker.state(now_ms).value}"
    return None


def select_rail(
    region: Region,
    currency: Currency,
    amount_minor: int,
    breakers: Breakers,
    now_ms: int,
    *,
    exclude: Collection[Rail] = (),
    enabled: Collection[Rail] | None = None,
) -> RailChoice | NoRail:
    """Best available rail: has an adapter, not excluded, breaker admits a call; then latency, fee, name.

    The choice names the substitution when it is not ``region``'s primary rail: the payout currency is not the
    region's, or the reason the primary was dropped.
    """
    ranked = sorted(
        eligible_rails(region, currency),
        key=lambda s: (s.expected_latency_ms, fee_minor(s.provider, amount_minor, currency), s.rail.value),
    )
    if not ranked:
        return NoRail(f"no rail pays {currency} in region {region}", ())
    primary = PRIMARY_RAIL[region]
    substitution = None if currency is REGION_CURRENCY[region] else RailSubstitution.CURRENCY_NOT_ON_PRIMARY
    skipped: list[tuple[Rail, str]] = []
    for spec in ranked:
        why = unavailable(spec.rail, breakers, now_ms, exclude, enabled)
        if why is None:
            assert (spec.rail is primary) == (substitution is None), (spec.rail, substitution)
            fee = fee_minor(spec.provider, amount_minor, currency)
            return RailChoice(spec, fee, spec.region is None, tuple(skipped), substitution)
        if spec.rail is primary:
            substitution = why[0]
        skipped.append((spec.rail, why[1]))
    detail = "; ".join(f"{r.value}: {text}" for r, text in skipped)
    return NoRail(f"no available rail for {currency} in {region} ({detail})", tuple(skipped))


# --------------------------------------------------------------------------- holder payouts


def payout_region(provider: Provider, currency: Currency) -> Region | None:
    """The region a holder's payout through ``provider`` in ``currency`` goes out in (deterministic; the auto-payout
    service puts it on the bridge request). A payout may only use its provider's rails, so the region must have one:

    * a provider with a regional rail paying the currency: that rail's region (Stripe USD → US, Toss KRW → KR);
    * a cross-border provider (PayPal, Wise: their rails serve every region): the currency's home region (USD → US),
      or, for a currency no region has as its own (GBP, CNY), the first region declared;
    * None when no rail of the provider pays the currency.
    """
    specs = [s for s in RAILS.values() if s.provider is provider and currency in s.currencies]
    regional = [s.region for s in specs if s.region is not None]
    if regional:
        return min(regional, key=list(Region).index)
    if not specs:
        return None
    home = [r for r, c in REGION_CURRENCY.items() if c is currency]
    return min(home, key=list(Region).index) if home else next(iter(Region))
