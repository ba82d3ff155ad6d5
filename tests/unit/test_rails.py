"""domain/rails.py: the §2.2 table, §3.1 fees, the circuit breaker and rail selection/failover."""

from __future__ import annotations

import pytest

from contracts import models as m
from domain.money import Currency
from domain.rails import (
    PRIMARY_RAIL,
    RAILS,
    REGION_CURRENCY,
    BreakerState,
    CircuitBreaker,
    NoRail,
    Provider,
    Rail,
    RailChoice,
    RailSubstitution,
    Region,
    fee_minor,
    new_breakers,
    select_rail,
)

T0 = 1_790_000_000_000


def test_spec_rail_table() -> None:
    expected = {
        Region.KR: (Rail.TOSS_PAYMENTS, Provider.TOSS, 180, Currency.KRW),
        Region.US: (Rail.STRIPE_INSTANT, Provider.STRIPE, 220, Currency.USD),
        Region.EU: (Rail.STRIPE_SEPA, Provider.STRIPE, 250, Currency.EUR),
        Region.JP: (Rail.PAYPAY_BUSINESS, Provider.PAYPAY, 200, Currency.JPY),
        Region.SG: (Rail.STRIPE_ASIA, Provider.STRIPE, 190, Currency.SGD),
        Region.AU: (Rail.STRIPE_AU, Provider.STRIPE, 195, Currency.AUD),
        Region.HK: (Rail.STRIPE_HK, Provider.STRIPE, 185, Currency.HKD),
        Region.AE: (Rail.PAYFORT, Provider.PAYFORT, 210, Currency.AED),
    }
    for region, (rail, provider, latency, ccy) in expected.items():
        spec = RAILS[PRIMARY_RAIL[region]]
        assert (spec.rail, spec.provider, spec.expected_latency_ms) == (rail, provider, latency)
        assert REGION_CURRENCY[region] == ccy


def test_domain_enums_match_the_contract_enums() -> None:
    assert {r.value for r in Region} == {r.value for r in m.Region}
    assert {r.value for r in Rail} == {r.value for r in m.Rail}
    # the bridge knows two providers (PayPay, PayFort) that the payout contract does not carry
    assert {p.value for p in m.Provider} <= {p.value for p in Provider}


# --------------------------------------------------------------------------- fees


def test_spec_fee_schedule_exact_minor_units() -> None:
    assert fee_minor(Provider.STRIPE, 15_000, Currency.USD) == 63  # 37.5 → 38 + 25 (contracts example)
    assert fee_minor(Provider.STRIPE, 10_000, Currency.USD) == 50  # 25 + 25
    assert fee_minor(Provider.STRIPE, 10_000, Currency.JPY) == 25 + 40
    assert fee_minor(Provider.PAYPAL, 15_000, Currency.USD) == 375  # 2.5%
    assert fee_minor(Provider.PAYPAL, 1, Currency.USD) == 1  # 0.025 → rounded up
    assert fee_minor(Provider.TOSS, 10_000, Currency.KRW) == 230  # 2.3%
    assert fee_minor(Provider.TOSS, 10_001, Currency.KRW) == 231  # 230.023 → 231
    assert fee_minor(Provider.ALIPAY, 10_000, Currency.CNY) == 150  # 1.5%
    assert fee_minor(Provider.WISE, 10_000, Currency.EUR) == 50  # 0.5%
    assert fee_minor(Provider.WISE, 10_000, Currency.JPY) == 100  # 1.0%
    assert fee_minor(Provider.WISE, 10_000, Currency.AED) == 150  # 1.5%
    assert fee_minor(Provider.STRIPE, 0, Currency.USD) == 25


# --------------------------------------------------------------------------- breaker


def test_breaker_opens_at_exactly_the_third_consecutive_failure() -> None:
    b = CircuitBreaker(cooldown_ms=30_000)
    b = b.on_failure(T0)
    assert b.state(T0) is BreakerState.CLOSED and b.allows(T0)
    b = b.on_failure(T0 + 1)
    assert b.state(T0 + 1) is BreakerState.CLOSED and b.allows(T0 + 1)
    b = b.on_failure(T0 + 2)
    assert b.state(T0 + 2) is BreakerState.OPEN and not b.allows(T0 + 2)


def test_success_resets_the_consecutive_count() -> None:
    b = CircuitBreaker().on_failure(T0).on_failure(T0).on_success(T0).on_failure(T0).on_failure(T0)
    assert b.state(T0) is BreakerState.CLOSED and b.consecutive_failures == 2


def test_half_open_after_cooldown_admits_one_probe_and_closes_on_success() -> None:
    b = CircuitBreaker(cooldown_ms=30_000, probe_lease_ms=5_000)
    for i in range(3):
        b = b.on_failure(T0 + i)
    opened = T0 + 2
    assert not b.allows(opened + 29_999)
    assert b.state(opened + 30_000) is BreakerState.HALF_OPEN and b.allows(opened + 30_000)
    b = b.on_call(opened + 30_000)  # the probe claims the slot
    assert not b.allows(opened + 30_001)  # one probe at a time
    assert b.allows(opened + 35_000)  # the lease of a silent probe ran out
    b = b.on_success(opened + 30_100)
    assert b.state(opened + 30_100) is BreakerState.CLOSED and b.consecutive_failures == 0


def test_failed_probe_reopens_for_another_cooldown() -> None:
    b = CircuitBreaker(cooldown_ms=1_000)
    for _ in range(3):
        b = b.on_failure(T0)
    b = b.on_call(T0 + 1_000).on_failure(T0 + 1_050)
    assert b.state(T0 + 1_050) is BreakerState.OPEN
    assert b.state(T0 + 2_049) is BreakerState.OPEN
    assert b.state(T0 + 2_050) is BreakerState.HALF_OPEN


def test_results_of_calls_started_before_opening_do_not_change_an_open_breaker() -> None:
    b = CircuitBreaker()
    for _ in range(3):
        b = b.on_failure(T0)
    assert b.on_success(T0 + 10) == b
    assert b.on_failure(T0 + 10) == b


# --------------------------------------------------------------------------- selection


def test_primary_rail_is_chosen_when_closed() -> None:
    for region, rail in PRIMARY_RAIL.items():
        choice = select_rail(region, REGION_CURRENCY[region], 10_000, new_breakers(), T0)
        assert isinstance(choice, RailChoice) and choice.rail is rail and not choice.is_fallback
        assert choice.substitution is None


def test_failover_to_the_next_eligible_rail_when_the_primary_breaker_is_open() -> None:
    breakers = new_breakers()
    for _ in range(3):
        breakers[Rail.STRIPE_INSTANT] = breakers[Rail.STRIPE_INSTANT].on_failure(T0)
    choice = select_rail(Region.US, Currency.USD, 10_000, breakers, T0)
    assert isinstance(choice, RailChoice)
    assert choice.rail is Rail.WISE  # 320 ms beats PayPal's 350 ms
    assert choice.skipped == ((Rail.STRIPE_INSTANT, "circuit breaker OPEN"),)
    assert choice.substitution is RailSubstitution.PRIMARY_CIRCUIT_OPEN
    choice = select_rail(Region.US, Currency.USD, 10_000, breakers, T0, exclude={Rail.WISE})
    assert isinstance(choice, RailChoice) and choice.rail is Rail.PAYPAL
    assert choice.substitution is RailSubstitution.PRIMARY_CIRCUIT_OPEN  # about the primary, not about Wise


def test_rails_without_an_adapter_are_skipped() -> None:
    choice = select_rail(Region.JP, Currency.JPY, 10_000, new_breakers(), T0, enabled={Rail.WISE, Rail.STRIPE_INSTANT})
    assert isinstance(choice, RailChoice) and choice.rail is Rail.WISE
    assert choice.skipped == ((Rail.PAYPAY_BUSINESS, "no adapter configured"),)
    assert choice.substitution is RailSubstitution.PRIMARY_NOT_CONFIGURED


def test_a_primary_tried_for_this_payment_is_substituted_as_failed() -> None:
    choice = select_rail(Region.KR, Currency.KRW, 10_000, new_breakers(), T0, exclude={Rail.TOSS_PAYMENTS})
    assert isinstance(choice, RailChoice) and choice.rail is Rail.WISE
    assert choice.substitution is RailSubstitution.PRIMARY_FAILED


def test_a_half_open_primary_whose_probe_is_out_is_substituted_as_circuit_open() -> None:
    breakers = new_breakers(CircuitBreaker(cooldown_ms=1_000))
    for _ in range(3):
        breakers[Rail.STRIPE_SEPA] = breakers[Rail.STRIPE_SEPA].on_failure(T0)
    breakers[Rail.STRIPE_SEPA] = breakers[Rail.STRIPE_SEPA].on_call(T0 + 1_000)  # the one probe, unanswered
    choice = select_rail(Region.EU, Currency.EUR, 10_000, breakers, T0 + 1_001)
    assert isinstance(choice, RailChoice) and choice.rail is Rail.WISE
    assert choice.skipped == ((Rail.STRIPE_SEPA, "circuit breaker HALF_OPEN"),)
    assert choice.substitution is RailSubstitution.PRIMARY_CIRCUIT_OPEN


def test_the_substitution_names_the_first_check_that_dropped_the_primary() -> None:
    """No adapter, then tried for this payment, then the breaker: the most lasting reason is the one given."""
    breakers = new_breakers()
    for _ in range(3):
        breakers[Rail.STRIPE_INSTANT] = breakers[Rail.STRIPE_INSTANT].on_failure(T0)
    tried = {Rail.STRIPE_INSTANT}
    choice = select_rail(Region.US, Currency.USD, 10_000, breakers, T0, exclude=tried, enabled={Rail.WISE})
    assert isinstance(choice, RailChoice) and choice.substitution is RailSubstitution.PRIMARY_NOT_CONFIGURED
    choice = select_rail(Region.US, Currency.USD, 10_000, breakers, T0, exclude=tried)
    assert isinstance(choice, RailChoice) and choice.substitution is RailSubstitution.PRIMARY_FAILED


def test_a_currency_not_the_regions_is_the_substitution_whatever_the_primary_state() -> None:
    breakers = new_breakers()
    for _ in range(3):
        breakers[Rail.STRIPE_SEPA] = breakers[Rail.STRIPE_SEPA].on_failure(T0)
    for b in (new_breakers(), breakers):
        gbp = select_rail(Region.EU, Currency.GBP, 10_000, b, T0, enabled={Rail.WISE, Rail.PAYPAL})
        assert isinstance(gbp, RailChoice) and gbp.rail is Rail.WISE
        assert gbp.substitution is RailSubstitution.CURRENCY_NOT_ON_PRIMARY


def test_krw_has_toss_then_wise_only() -> None:
    breakers = new_breakers()
    for rail in (Rail.TOSS_PAYMENTS, Rail.WISE):
        for _ in range(3):
            breakers[rail] = breakers[rail].on_failure(T0)
    result = select_rail(Region.KR, Currency.KRW, 10_000, breakers, T0)
    assert isinstance(result, NoRail)
    assert "TOSS_PAYMENTS: circuit breaker OPEN" in result.reason and "WISE" in result.reason


def test_cross_border_currency_uses_fallbacks_and_cny_prefers_alipay() -> None:
    gbp = select_rail(Region.EU, Currency.GBP, 10_000, new_breakers(), T0)
    assert isinstance(gbp, RailChoice) and gbp.rail is Rail.WISE and gbp.is_fallback
    cny = select_rail(Region.HK, Currency.CNY, 10_000, new_breakers(), T0)
    assert isinstance(cny, RailChoice) and cny.rail is Rail.ALIPAY


def test_fee_breaks_latency_ties() -> None:
    from dataclasses import replace

    import domain.rails as rails

    saved = dict(rails.RAILS)
    try:
        # make PayPal as fast as Wise: for USD 10,000 Wise costs 50, PayPal 250 → Wise
        rails.RAILS[Rail.PAYPAL] = replace(saved[Rail.PAYPAL], expected_latency_ms=320)
        breakers = new_breakers()
        for _ in range(3):
            breakers[Rail.STRIPE_INSTANT] = breakers[Rail.STRIPE_INSTANT].on_failure(T0)
        choice = select_rail(Region.US, Currency.USD, 10_000, breakers, T0)
        assert isinstance(choice, RailChoice) and choice.rail is Rail.WISE
    finally:
        rails.RAILS.clear()
        rails.RAILS.update(saved)


@pytest.mark.parametrize("region", list(Region))
def test_every_region_has_a_fallback_for_its_currency(region: Region) -> None:
    breakers = new_breakers()
    primary = PRIMARY_RAIL[region]
    for _ in range(3):
        breakers[primary] = breakers[primary].on_failure(T0)
    choice = select_rail(region, REGION_CURRENCY[region], 10_000, breakers, T0)
    assert isinstance(choice, RailChoice) and choice.is_fallback
    assert choice.substitution is RailSubstitution.PRIMARY_CIRCUIT_OPEN
