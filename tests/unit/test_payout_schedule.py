"""SCHEDULE payouts (domain.payouts): occurrences and periods (DAILY / WEEKLY / MONTHLY, month ends, leap
years), exactly one payout per period across restarts, a missed period paid once, activation and KYC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from domain.money import Currency
from domain.payouts import (
    Action,
    AutoPayouts,
    KycStatus,
    Rule,
    RuleCode,
    RuleStatus,
    Schedule,
    ScheduleType,
    SkipCode,
    Trigger,
    latest_occurrence,
    next_occurrence,
    period_id,
    sunday_weekday,
    validate_rule,
)
from domain.rails import Provider

K = 1_000_000


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp() * 1000)


def schedule_rule(
    kind: ScheduleType = ScheduleType.DAILY, day: int | None = None, at: str = "09:00", **changes: object
) -> Rule:
    rule = Rule(
        rule_id="r-sched",
        account_id="acct-1",
        trigger_type=Trigger.SCHEDULE,
        payout_provider=Provider.PAYPAL,
        payout_currency=Currency.USD,
        payout_account="holder@example.com",
        max_payout_per_tx_kaus_units=1_000 * K,
        keep_minimum_kaus_units=10 * K,
        schedule_type=kind,
        schedule_day=day,
        schedule_time_utc=at,
    )
    return replace(rule, **changes)  # type: ignore[arg-type]


def book_with(rule: Rule, created_ms: int, *, verified: bool = True) -> AutoPayouts:
    book = AutoPayouts()
    assert book.put_rule(rule, 1, created_ms).status is RuleStatus.ACCEPTED
    if verified:
        book.set_kyc(rule.account_id, KycStatus.VERIFIED, 1, 0, created_ms)
    return book


def balance(units: int) -> Callable[[str], int]:
    return lambda _account: units


def paid(decisions: list) -> list[tuple[str, int]]:
    return [(d.payout_id, d.amount_units) for d in decisions if d.action is Action.PAY]


# --------------------------------------------------------------------------- calendar


@pytest.mark.parametrize(
    ("kind", "day", "code"),
    [
        (ScheduleType.WEEKLY, 7, RuleCode.SCHEDULE_DAY_OUT_OF_RANGE),
        (ScheduleType.WEEKLY, None, RuleCode.SCHEDULE_DAY_MISSING),
        (ScheduleType.MONTHLY, 0, RuleCode.SCHEDULE_DAY_OUT_OF_RANGE),
        (ScheduleType.MONTHLY, 32, RuleCode.SCHEDULE_DAY_OUT_OF_RANGE),
        (ScheduleType.DAILY, 3, RuleCode.FIELD_NOT_FOR_TRIGGER),
    ],
)
def test_schedule_day_out_of_range_for_its_type(kind: ScheduleType, day: int | None, code: RuleCode) -> None:
    problem = validate_rule(schedule_rule(kind, day))
    assert problem is not None and problem.code is code


@pytest.mark.parametrize("at", ["24:00", "9:00", "09:60", "0900", "ab:cd"])
def test_schedule_time_must_be_hh_mm_utc(at: str) -> None:
    problem = validate_rule(schedule_rule(at=at))
    assert problem is not None and problem.code is RuleCode.SCHEDULE_TIME_INVALID


def test_bounds_of_the_days_are_valid() -> None:
    for rule in (schedule_rule(ScheduleType.WEEKLY, 0), schedule_rule(ScheduleType.WEEKLY, 6)):
        assert validate_rule(rule) is None
    for rule in (schedule_rule(ScheduleType.MONTHLY, 1), schedule_rule(ScheduleType.MONTHLY, 31, at="23:59")):
        assert validate_rule(rule) is None


def test_daily_occurrences_and_periods() -> None:
    s = Schedule(ScheduleType.DAILY, None, 9 * 60)
    assert latest_occurrence(s, ms(2026, 3, 5, 9, 0)) == ms(2026, 3, 5, 9, 0)
    assert latest_occurrence(s, ms(2026, 3, 5, 9, 0) - 1) == ms(2026, 3, 4, 9, 0)
    assert next_occurrence(s, ms(2026, 3, 5, 9, 0)) == ms(2026, 3, 6, 9, 0)
    assert period_id(s, ms(2026, 3, 5, 9, 0)) == "D2026-03-05"


def test_weekly_day_0_is_sunday() -> None:
    sunday = datetime(2026, 3, 1, tzinfo=UTC).date()
    assert sunday.strftime("%A") == "Sunday" and sunday_weekday(sunday) == 0
    s = Schedule(ScheduleType.WEEKLY, 0, 18 * 60)
    assert latest_occurrence(s, ms(2026, 3, 4, 12)) == ms(2026, 3, 1, 18)  # Wednesday -> last Sunday
    assert latest_occurrence(s, ms(2026, 3, 1, 17, 59)) == ms(2026, 2, 22, 18)
    assert next_occurrence(s, ms(2026, 3, 1, 18)) == ms(2026, 3, 8, 18)
    saturday = Schedule(ScheduleType.WEEKLY, 6, 0)
    assert latest_occurrence(saturday, ms(2026, 3, 8, 12)) == ms(2026, 3, 7)
    assert period_id(saturday, ms(2026, 3, 7)) == "W2026-03-01"  # its Sunday-started week


@pytest.mark.parametrize(
    ("year", "day", "expected_day"),
    [(2026, 31, 28), (2026, 29, 28), (2026, 28, 28), (2028, 31, 29), (2028, 30, 29), (2028, 29, 29), (2100, 29, 28)],
)
def test_monthly_29_to_31_fall_on_the_last_day_of_february(year: int, day: int, expected_day: int) -> None:
    s = Schedule(ScheduleType.MONTHLY, day, 9 * 60)
    occurrence = latest_occurrence(s, ms(year, 3, 1))
    assert occurrence == ms(year, 2, expected_day, 9)
    assert period_id(s, occurrence) == f"M{year}-02"
    assert next_occurrence(s, occurrence) == ms(year, 3, day, 9)  # March has the day again
    assert latest_occurrence(s, ms(year, 2, expected_day, 8, 59)) == ms(year, 1, day, 9)


def test_monthly_31_across_a_year_pays_every_month_once() -> None:
    s = Schedule(ScheduleType.MONTHLY, 31, 0)
    at, seen = ms(2027, 12, 31), []
    for _ in range(13):
        at = next_occurrence(s, at)
        seen.append(datetime.fromtimestamp(at / 1000, UTC).day)
    assert seen == [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31]  # 2028 is a leap year


# --------------------------------------------------------------------------- the engine


def test_one_payout_per_period_and_again_after_a_restart() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    assert book.tick(ms(2026, 3, 5, 12), balance(500 * K)) == []  # today's 09:00 was before the rule
    assert book.tick(ms(2026, 3, 6, 8, 59), balance(500 * K)) == []
    assert paid(book.tick(ms(2026, 3, 6, 9), balance(500 * K))) == [("r-sched:D2026-03-06", 490 * K)]
    assert book.on_result("r-sched:D2026-03-06", True, 10 * K, ms(2026, 3, 6, 9, 1)) == []
    assert book.evaluate("acct-1", 800 * K, ms(2026, 3, 6, 15)) == []  # the period is consumed
    restarted = AutoPayouts.from_dict(book.to_dict())
    assert restarted.tick(ms(2026, 3, 6, 15), balance(800 * K)) == []
    assert restarted.last_period("r-sched") == "D2026-03-06"
    assert paid(restarted.tick(ms(2026, 3, 7, 9), balance(800 * K))) == [("r-sched:D2026-03-07", 790 * K)]


def test_a_restart_before_the_result_decides_nothing_new() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    before = book.to_dict()
    decided = paid(book.tick(ms(2026, 3, 6, 9), balance(500 * K)))
    after = AutoPayouts.from_dict(book.to_dict())
    assert after.tick(ms(2026, 3, 6, 9, 5), balance(500 * K)) == []
    assert paid(after.on_result(decided[0][0], True, 10 * K, ms(2026, 3, 6, 9, 6))) == []
    # Crashed before the decision was persisted: the same payout id again (the shell's intent matches it).
    lost = AutoPayouts.from_dict(before)
    assert paid(lost.tick(ms(2026, 3, 6, 9, 5), balance(500 * K))) == decided


def test_a_missed_period_pays_once_when_the_worker_comes_back() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    snapshot = book.to_dict()  # then the worker is down from the 5th to the 10th
    back = AutoPayouts.from_dict(snapshot)
    first = back.tick(ms(2026, 3, 10, 10), balance(500 * K))
    assert paid(first) == [("r-sched:D2026-03-10", 490 * K)]
    back.on_result("r-sched:D2026-03-10", True, 10 * K, ms(2026, 3, 10, 10))
    for minute in range(1, 120):  # every later tick that day
        assert back.tick(ms(2026, 3, 10, 10) + minute * 60_000, balance(500 * K)) == []


def test_a_missed_month_pays_once() -> None:
    book = book_with(schedule_rule(ScheduleType.MONTHLY, 31), ms(2026, 1, 1))
    decisions = book.tick(ms(2026, 4, 2), balance(200 * K))  # down since January
    assert paid(decisions) == [("r-sched:M2026-03", 190 * K)]


def test_nothing_above_keep_minimum_consumes_the_period() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    skipped = book.tick(ms(2026, 3, 6, 9), balance(10 * K))
    assert [(d.action, d.code, d.payout_id) for d in skipped] == [
        (Action.SKIP, SkipCode.NOTHING_ABOVE_KEEP_MINIMUM, "r-sched:D2026-03-06")
    ]
    assert book.evaluate("acct-1", 900 * K, ms(2026, 3, 6, 11)) == []


def test_the_cap_leaves_the_rest_for_the_next_period() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    assert paid(book.tick(ms(2026, 3, 6, 9), balance(2_500 * K))) == [("r-sched:D2026-03-06", 1_000 * K)]
    assert book.on_result("r-sched:D2026-03-06", True, 1_500 * K, ms(2026, 3, 6, 9)) == []
    assert paid(book.tick(ms(2026, 3, 7, 9), balance(1_500 * K))) == [("r-sched:D2026-03-07", 1_000 * K)]


def test_a_rule_deactivated_mid_period_does_not_pay_that_period() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    assert book.put_rule(schedule_rule(is_active=False), 2, ms(2026, 3, 6, 8)).status is RuleStatus.ACCEPTED
    assert book.tick(ms(2026, 3, 6, 9, 30), balance(500 * K)) == []
    assert book.put_rule(schedule_rule(), 3, ms(2026, 3, 6, 10)).status is RuleStatus.ACCEPTED
    assert book.tick(ms(2026, 3, 6, 10), balance(500 * K)) == []  # 09:00 passed while it was inactive
    assert paid(book.tick(ms(2026, 3, 7, 9), balance(500 * K))) == [("r-sched:D2026-03-07", 490 * K)]


def test_editing_the_time_after_paying_does_not_pay_twice_in_the_period() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    book.tick(ms(2026, 3, 6, 9), balance(500 * K))
    book.on_result("r-sched:D2026-03-06", True, 10 * K, ms(2026, 3, 6, 9))
    book.put_rule(schedule_rule(at="18:00"), 2, ms(2026, 3, 6, 12))
    assert book.tick(ms(2026, 3, 6, 18), balance(900 * K)) == []
    assert paid(book.tick(ms(2026, 3, 7, 18), balance(900 * K))) == [("r-sched:D2026-03-07", 890 * K)]


def test_kyc_pending_across_periods_pays_once_when_verified() -> None:
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12), verified=False)
    book.set_kyc("acct-1", KycStatus.PENDING, 1, 0, ms(2026, 3, 5, 12))
    waits = []
    for day in (6, 7, 8):
        waits += book.tick(ms(2026, 3, day, 9), balance(500 * K))
    assert [(d.action, d.payout_id) for d in waits] == [
        (Action.WAIT, "r-sched:D2026-03-06"),
        (Action.WAIT, "r-sched:D2026-03-07"),
        (Action.WAIT, "r-sched:D2026-03-08"),
    ]
    verified = book.set_kyc("acct-1", KycStatus.VERIFIED, 2, 500 * K, ms(2026, 3, 8, 14))
    assert paid(verified) == [("r-sched:D2026-03-08", 490 * K)]
    book.on_result("r-sched:D2026-03-08", True, 10 * K, ms(2026, 3, 8, 14))
    assert book.tick(ms(2026, 3, 8, 23), balance(500 * K)) == []


def test_a_schedule_due_while_another_payout_is_in_flight_pays_after_its_result() -> None:
    threshold = Rule(
        rule_id="r-thr",
        account_id="acct-1",
        trigger_type=Trigger.THRESHOLD,
        payout_provider=Provider.STRIPE,
        payout_currency=Currency.USD,
        payout_account="ba_1",
        max_payout_per_tx_kaus_units=100 * K,
        threshold_kaus_units=1_000 * K,
    )
    book = book_with(schedule_rule(), ms(2026, 3, 5, 12))
    book.put_rule(threshold, 1, ms(2026, 3, 5, 12))
    assert paid(book.evaluate("acct-1", 1_200 * K, ms(2026, 3, 6, 8, 59))) == [("r-thr:T0", 100 * K)]
    assert book.tick(ms(2026, 3, 6, 9), balance(1_100 * K)) == []  # one payout in flight per account
    after = book.on_result("r-thr:T0", True, 1_100 * K, ms(2026, 3, 6, 9, 1))
    assert paid(after) == [("r-sched:D2026-03-06", 1_000 * K)]  # SCHEDULE before THRESHOLD
