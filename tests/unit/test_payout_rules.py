"""Auto-payout rules (domain.payouts): validation, the rule book, THRESHOLD and DIVIDEND triggers, the cap,
one payout in flight per account, the KYC gate, failures and a restored book."""

from __future__ import annotations

from dataclasses import replace

import pytest

from domain.money import Currency
from domain.payouts import (
    TRANSIENT_FAILURES,
    Action,
    AutoPayouts,
    KycStatus,
    PayoutConfig,
    Rule,
    RuleCode,
    RuleDividendSource,
    RuleStatus,
    ScheduleType,
    SkipCode,
    Trigger,
    WaitCode,
    evaluate_thresholds,
    payout_id,
    provider_currencies,
    validate_rule,
)
from domain.rails import Provider

T0 = 1_772_000_000_000  # 2026-02-25
K = 1_000_000  # one K-AUS in base units


def threshold_rule(**changes: object) -> Rule:
    rule = Rule(
        rule_id="r-thr",
        account_id="acct-1",
        trigger_type=Trigger.THRESHOLD,
        payout_provider=Provider.STRIPE,
        payout_currency=Currency.USD,
        payout_account="ba_123",
        max_payout_per_tx_kaus_units=500 * K,
        keep_minimum_kaus_units=100 * K,
        threshold_kaus_units=1_000 * K,
    )
    return replace(rule, **changes)  # type: ignore[arg-type]


def dividend_rule(**changes: object) -> Rule:
    rule = Rule(
        rule_id="r-div",
        account_id="acct-1",
        trigger_type=Trigger.DIVIDEND,
        payout_provider=Provider.WISE,
        payout_currency=Currency.EUR,
        payout_account="wise-1",
        max_payout_per_tx_kaus_units=10_000 * K,
        dividend_source=RuleDividendSource.STAKING,
        dividend_min_kaus_units=10 * K,
    )
    return replace(rule, **changes)  # type: ignore[arg-type]


def verified_book(*rules: Rule, config: PayoutConfig | None = None) -> AutoPayouts:
    book = AutoPayouts(config)
    for version, rule in enumerate(rules, 1):
        assert book.put_rule(rule, version, T0).status is RuleStatus.ACCEPTED
        book.set_kyc(rule.account_id, KycStatus.VERIFIED, 1, 0, T0)
    return book


def pays(decisions: list) -> list[tuple[str, int]]:
    return [(d.payout_id, d.amount_units) for d in decisions if d.action is Action.PAY]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        (threshold_rule(threshold_kaus_units=None), RuleCode.THRESHOLD_MISSING),
        (threshold_rule(keep_minimum_kaus_units=1_000 * K + 1), RuleCode.KEEP_MINIMUM_ABOVE_THRESHOLD),
        (threshold_rule(max_payout_per_tx_kaus_units=0), RuleCode.MAX_PER_TX_NOT_POSITIVE),
        (threshold_rule(max_payout_per_tx_kaus_units=-5), RuleCode.INVALID_AMOUNT),
        (threshold_rule(keep_minimum_kaus_units=1.5), RuleCode.INVALID_AMOUNT),
        (threshold_rule(payout_currency=Currency.KRW), RuleCode.CURRENCY_NOT_PAID),  # Stripe has no KRW rail
        (threshold_rule(payout_provider=Provider.TOSS), RuleCode.CURRENCY_NOT_PAID),  # Toss pays KRW only
        (threshold_rule(payout_provider=Provider.PAYPAL, payout_currency=Currency.JPY), RuleCode.CURRENCY_NOT_PAID),
        (threshold_rule(payout_provider=Provider.ALIPAY, payout_currency=Currency.CNY), RuleCode.PROVIDER_NOT_OFFERED),
        (threshold_rule(payout_account="  "), RuleCode.PAYOUT_ACCOUNT_MISSING),
        (threshold_rule(rule_id="x" * 65), RuleCode.INVALID_ID),
        (threshold_rule(schedule_time_utc="09:00"), RuleCode.FIELD_NOT_FOR_TRIGGER),
        (dividend_rule(dividend_source=None), RuleCode.DIVIDEND_SOURCE_MISSING),
        (dividend_rule(threshold_kaus_units=5), RuleCode.FIELD_NOT_FOR_TRIGGER),
        (
            threshold_rule(trigger_type=Trigger.SCHEDULE, threshold_kaus_units=None, schedule_time_utc="09:00"),
            RuleCode.SCHEDULE_TYPE_MISSING,
        ),
        (
            threshold_rule(trigger_type=Trigger.SCHEDULE, threshold_kaus_units=None, schedule_type=ScheduleType.DAILY),
            RuleCode.SCHEDULE_TIME_MISSING,
        ),
    ],
)
def test_a_rule_that_cannot_work_is_refused_with_its_code(rule: Rule, code: RuleCode) -> None:
    problem = validate_rule(rule)
    assert problem is not None and problem.code is code and problem.reason


def test_the_valid_examples_pass_and_keep_minimum_may_equal_the_threshold() -> None:
    assert validate_rule(threshold_rule()) is None
    assert validate_rule(dividend_rule()) is None
    assert validate_rule(threshold_rule(keep_minimum_kaus_units=1_000 * K)) is None
    assert validate_rule(threshold_rule(payout_provider=Provider.TOSS, payout_currency=Currency.KRW)) is None


def test_provider_currencies_come_from_the_rail_table() -> None:
    assert provider_currencies(Provider.PAYPAL) == {Currency.USD, Currency.EUR, Currency.GBP, Currency.AUD}
    assert provider_currencies(Provider.TOSS) == {Currency.KRW}
    assert provider_currencies(Provider.WISE) == set(Currency)
    assert Currency.KRW not in provider_currencies(Provider.STRIPE)


# --------------------------------------------------------------------------- rule book


def test_a_newer_version_replaces_an_older_one_is_ignored_and_a_tombstone_deletes() -> None:
    book = AutoPayouts()
    assert book.put_rule(threshold_rule(), 5, T0).status is RuleStatus.ACCEPTED
    newer = threshold_rule(threshold_kaus_units=2_000 * K)
    assert book.put_rule(newer, 7, T0).status is RuleStatus.ACCEPTED
    assert book.put_rule(threshold_rule(), 6, T0).status is RuleStatus.STALE  # older: a replay
    assert book.put_rule(newer, 7, T0).status is RuleStatus.STALE  # the same record again
    assert book.rule("r-thr") == newer
    assert book.delete_rule("r-thr", 8).status is RuleStatus.DELETED
    assert book.rule("r-thr") is None and book.rules("acct-1") == []
    assert book.put_rule(newer, 7, T0).status is RuleStatus.STALE  # a replayed old record does not resurrect it
    assert book.put_rule(newer, 9, T0).status is RuleStatus.ACCEPTED


def test_an_invalid_newer_version_is_refused_and_stops_the_older_one() -> None:
    book = verified_book(threshold_rule())
    outcome = book.put_rule(threshold_rule(keep_minimum_kaus_units=5_000 * K), 2, T0)
    assert outcome.status is RuleStatus.REJECTED and outcome.code is RuleCode.KEEP_MINIMUM_ABOVE_THRESHOLD
    assert "previous version is stopped" in outcome.reason
    assert book.rule("r-thr") is None
    assert book.evaluate("acct-1", 5_000 * K, T0) == []


def test_an_account_has_at_most_the_configured_number_of_rules() -> None:
    book = AutoPayouts(PayoutConfig(max_rules_per_account=2))
    assert book.put_rule(threshold_rule(rule_id="a"), 1, T0).status is RuleStatus.ACCEPTED
    assert book.put_rule(threshold_rule(rule_id="b"), 1, T0).status is RuleStatus.ACCEPTED
    assert book.put_rule(threshold_rule(rule_id="c"), 1, T0).code is RuleCode.TOO_MANY_RULES
    edited = threshold_rule(rule_id="b", threshold_kaus_units=7_000 * K)
    assert book.put_rule(edited, 2, T0).status is RuleStatus.ACCEPTED  # an existing rule may change


# --------------------------------------------------------------------------- threshold


def test_exactly_at_the_threshold_pays_nothing_one_unit_above_pays_the_excess_over_keep_minimum() -> None:
    rule = threshold_rule(max_payout_per_tx_kaus_units=10_000 * K)
    book = verified_book(rule)
    assert book.evaluate("acct-1", 1_000 * K, T0) == []
    decisions = book.evaluate("acct-1", 1_000 * K + 1, T0)
    assert pays(decisions) == [("r-thr:T0", 900 * K + 1)]  # keep-minimum 100 K-AUS kept to the unit
    d = decisions[0]
    assert (d.provider, d.currency, d.payout_account, d.trigger) == (
        Provider.STRIPE,
        Currency.USD,
        "ba_123",
        Trigger.THRESHOLD,
    )


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (600 * K - 1, 500 * K - 1),  # under the cap: all above keep-minimum
        (600 * K, 500 * K),  # exactly the cap
        (600 * K + 1, 500 * K),  # one unit over: capped, the unit stays
    ],
)
def test_max_payout_per_tx_at_the_boundary(available: int, expected: int) -> None:
    rule = threshold_rule(threshold_kaus_units=200 * K, keep_minimum_kaus_units=100 * K)
    assert pays(verified_book(rule).evaluate("acct-1", available, T0)) == [("r-thr:T0", expected)]
    assert evaluate_thresholds([rule], lambda _: available) == [(rule, expected)]


def test_a_capped_threshold_payout_drains_the_rest_one_transaction_at_a_time() -> None:
    book = verified_book(threshold_rule())  # threshold 1000, keep 100, cap 500
    available = 1_800 * K
    assert pays(book.evaluate("acct-1", available, T0)) == [("r-thr:T0", 500 * K)]
    assert book.evaluate("acct-1", available - 500 * K, T0) == []  # one in flight: nothing more yet
    available -= 500 * K  # the hold, then the capture
    assert pays(book.on_result("r-thr:T0", True, available, T0 + 1)) == [("r-thr:T1", 500 * K)]
    available -= 500 * K  # 800: at or below the threshold now
    assert book.on_result("r-thr:T1", True, available, T0 + 2) == []
    assert book.in_flight("acct-1") is None
    assert book.on_result("r-thr:T1", True, available, T0 + 3) == []  # a repeated result changes nothing


def test_the_same_state_decides_the_same_payout_id_after_a_restart() -> None:
    book = verified_book(threshold_rule())
    first = pays(book.evaluate("acct-1", 2_000 * K, T0))
    restored = AutoPayouts.from_dict(book.to_dict())
    assert restored.to_dict() == book.to_dict()
    assert restored.evaluate("acct-1", 2_000 * K, T0) == []  # still in flight: not decided again
    assert restored.in_flight("acct-1") == book.in_flight("acct-1")
    # A crash before the decision was persisted decides it again under the same id.
    before = verified_book(threshold_rule())
    assert pays(AutoPayouts.from_dict(before.to_dict()).evaluate("acct-1", 2_000 * K, T0)) == first


def test_a_failed_payout_holds_the_account_for_the_back_off_and_keeps_the_balance_for_later() -> None:
    book = verified_book(threshold_rule(), config=PayoutConfig(retry_after_failure_ms=60_000))
    assert pays(book.evaluate("acct-1", 2_000 * K, T0)) == [("r-thr:T0", 500 * K)]
    assert book.on_result("r-thr:T0", False, 2_000 * K, T0 + 10) == []  # hold voided: balance unchanged
    assert book.evaluate("acct-1", 2_000 * K, T0 + 60_009) == []
    assert book.tick(T0 + 60_009, lambda _: 2_000 * K) == []
    assert pays(book.tick(T0 + 60_010, lambda _: 2_000 * K)) == [("r-thr:T1", 500 * K)]  # the back-off's end


def test_a_rule_deactivated_stops_new_payouts_but_not_the_one_in_flight() -> None:
    book = verified_book(threshold_rule())
    assert pays(book.evaluate("acct-1", 2_000 * K, T0)) == [("r-thr:T0", 500 * K)]
    assert book.put_rule(threshold_rule(is_active=False), 2, T0).status is RuleStatus.ACCEPTED
    assert book.in_flight("acct-1") is not None
    assert book.on_result("r-thr:T0", True, 1_500 * K, T0 + 1) == []  # still above threshold: inactive
    assert book.put_rule(threshold_rule(), 3, T0 + 2).status is RuleStatus.ACCEPTED
    assert pays(book.evaluate("acct-1", 1_500 * K, T0 + 3)) == [("r-thr:T1", 500 * K)]


# --------------------------------------------------------------------------- KYC


def test_kyc_pending_waits_with_a_reason_once_and_pays_once_verified() -> None:
    book = AutoPayouts()
    book.put_rule(threshold_rule(), 1, T0)
    first = book.evaluate("acct-1", 2_000 * K, T0)
    assert [(d.action, d.code) for d in first] == [(Action.WAIT, WaitCode.KYC_UNKNOWN)]
    assert book.evaluate("acct-1", 2_000 * K, T0 + 1) == []  # reported once
    waited = book.set_kyc("acct-1", KycStatus.PENDING, 10, 2_000 * K, T0 + 2)
    assert [(d.action, d.code, d.payout_id) for d in waited] == [(Action.WAIT, WaitCode.KYC_PENDING, "r-thr:T0")]
    assert "paid once verified" in waited[0].reason
    assert book.set_kyc("acct-1", KycStatus.VERIFIED, 9, 2_000 * K, T0 + 3) == []  # an older event: ignored
    paid = book.set_kyc("acct-1", KycStatus.VERIFIED, 11, 2_000 * K, T0 + 4)
    assert pays(paid) == [("r-thr:T0", 500 * K)]
    assert book.set_kyc("acct-1", KycStatus.VERIFIED, 12, 2_000 * K, T0 + 5) == []  # in flight: once


@pytest.mark.parametrize(
    ("status", "code"),
    [(KycStatus.REJECTED, WaitCode.KYC_REJECTED), (KycStatus.EXPIRED, WaitCode.KYC_EXPIRED)],
)
def test_only_verified_pays(status: KycStatus, code: WaitCode) -> None:
    book = AutoPayouts()
    book.put_rule(threshold_rule(), 1, T0)
    decisions = book.set_kyc("acct-1", status, 1, 2_000 * K, T0)
    assert [(d.action, d.code) for d in decisions] == [(Action.WAIT, code)]
    assert book.in_flight("acct-1") is None
    # Verified then expired: the next payout waits again.
    assert pays(book.set_kyc("acct-1", KycStatus.VERIFIED, 2, 2_000 * K, T0)) == [("r-thr:T0", 500 * K)]
    assert book.on_result("r-thr:T0", True, 900 * K, T0 + 1) == []
    assert book.set_kyc("acct-1", KycStatus.EXPIRED, 3, 900 * K, T0 + 1) == []
    later = book.evaluate("acct-1", 1_500 * K, T0 + 2)
    assert [(d.action, d.code, d.payout_id) for d in later] == [(Action.WAIT, WaitCode.KYC_EXPIRED, "r-thr:T1")]
    assert book.in_flight("acct-1") is None


# --------------------------------------------------------------------------- dividends


def test_a_dividend_of_the_rule_source_at_or_above_the_minimum_is_paid_out_not_the_whole_balance() -> None:
    book = verified_book(dividend_rule())
    assert book.on_dividend("d/0", "acct-1", "ENERGY_NODE", 50 * K, 900 * K, T0) == []  # other source
    assert book.on_dividend("d/1", "acct-1", "STAKING", 10 * K - 1, 900 * K, T0) == []  # under the minimum
    assert pays(book.on_dividend("d/2", "acct-1", "STAKING", 10 * K, 900 * K, T0)) == [("r-div:Vd/2", 10 * K)]
    assert book.on_dividend("d/2", "acct-1", "STAKING", 10 * K, 900 * K, T0) == []  # re-delivered


def test_dividends_queue_while_a_payout_is_in_flight_and_all_matches_every_source() -> None:
    book = verified_book(dividend_rule(dividend_source=RuleDividendSource.ALL, dividend_min_kaus_units=None))
    assert pays(book.on_dividend("e1/0", "acct-1", "ENERGY_NODE", 7, 1_000, T0)) == [("r-div:Ve1/0", 7)]
    assert book.on_dividend("e2/0", "acct-1", "STAKING", 5, 1_000, T0) == []
    assert book.on_dividend("e3/0", "acct-1", "ENERGY_NODE", 6, 1_000, T0) == []
    assert pays(book.on_result("r-div:Ve1/0", True, 1_000, T0 + 1)) == [("r-div:Ve3/0", 11)]


def test_a_dividend_payout_keeps_the_minimum_and_the_cap() -> None:
    book = verified_book(dividend_rule(keep_minimum_kaus_units=100 * K, max_payout_per_tx_kaus_units=30 * K))
    assert pays(book.on_dividend("d/1", "acct-1", "STAKING", 50 * K, 140 * K, T0)) == [("r-div:Vd/1", 30 * K)]
    book.on_result("r-div:Vd/1", True, 110 * K, T0)
    skipped = book.on_dividend("d/2", "acct-1", "STAKING", 50 * K, 100 * K, T0)  # nothing above keep-minimum
    assert [(d.action, d.code) for d in skipped] == [(Action.SKIP, SkipCode.NOTHING_ABOVE_KEEP_MINIMUM)]


def test_rules_of_one_account_take_turns_dividend_first_then_threshold() -> None:
    book = verified_book(threshold_rule(), dividend_rule())
    first = book.on_dividend("d/1", "acct-1", "STAKING", 20 * K, 2_000 * K, T0)
    assert pays(first) == [("r-div:Vd/1", 20 * K)]
    assert pays(book.on_result("r-div:Vd/1", True, 1_980 * K, T0 + 1)) == [("r-thr:T0", 500 * K)]


def test_payout_ids_fit_the_wire_and_are_deterministic() -> None:
    long_trigger = "V" + "d" * 120
    assert payout_id("r", long_trigger) == payout_id("r", long_trigger)
    assert len(payout_id("r" * 64, long_trigger)) <= 100
    assert payout_id("r", long_trigger) != payout_id("r", long_trigger + "x")


@pytest.mark.parametrize(
    ("code", "wait_ms"),
    [
        ("PROVIDER_DECLINED", 3_600_000),  # the provider judged the account: an hour
        ("NO_RAIL", 3_600_000),
        ("SOMETHING_NEW", 3_600_000),  # a code the core does not know backs off fully
        ("", 3_600_000),
        ("HOLD_REJECTED", 60_000),  # the ledger did not answer (a restart): a minute
        ("STALE_RATE", 60_000),
        ("PAUSED", 0),  # refused because money out was paused: no back-off at all
    ],
)
def test_a_failure_backs_off_by_what_it_says_about_the_account(code: str, wait_ms: int) -> None:
    book = verified_book(threshold_rule())
    assert pays(book.evaluate("acct-1", 2_000 * K, T0)) == [("r-thr:T0", 500 * K)]
    again = book.on_result("r-thr:T0", False, 2_000 * K, T0 + 10, code)
    if wait_ms:
        assert again == [] and book.tick(T0 + 10 + wait_ms - 1, lambda _: 2_000 * K) == []
        again = book.tick(T0 + 10 + wait_ms, lambda _: 2_000 * K)
    assert pays(again) == [("r-thr:T1", 500 * K)]


def test_a_transient_failure_never_backs_off_longer_than_a_decline() -> None:
    config = PayoutConfig(retry_after_failure_ms=30_000, retry_after_transient_ms=60_000)
    assert config.back_off_ms("HOLD_REJECTED") == config.back_off_ms("PROVIDER_DECLINED") == 30_000


def test_the_transient_failures_are_codes_the_bridge_gives() -> None:
    from domain.bridge import ReasonCode

    assert {c.value for c in ReasonCode} >= TRANSIENT_FAILURES and "PAUSED" in {c.value for c in ReasonCode}
