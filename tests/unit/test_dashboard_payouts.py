"""The dashboard's payout figures (dashboards.payouts): once per payout id, a wait ended by its result, exact sums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts import models as m
from contracts.examples import build
from dashboards.payouts import PayoutFigures, amount_text, kaus_text

NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


def paid(pid: str, minor: int, currency: m.Currency, units: int, at: datetime = NOW) -> m.PayoutResult:
    return build(
        m.PayoutResult,
        payout_id=pid,
        status=m.PayoutStatus.PAID,
        currency=currency,
        amount_minor=minor,
        kaus_debited_units=units,
        completed_at=at,
    )


def failed(pid: str, code: str, at: datetime = NOW) -> m.PayoutResult:
    return build(
        m.PayoutResult,
        payout_id=pid,
        status=m.PayoutStatus.FAILED,
        provider_reference=None,
        amount_minor=500,
        fee_minor=0,
        kaus_debited_units=None,
        reason_code=code,
        reason="provider said no",
        failed_phase=m.BridgePhase.MERCHANT_CREDIT,
        completed_at=at,
    )


def waiting(pid: str, code: str = "KYC_PENDING", at: datetime = NOW) -> m.PayoutWaiting:
    return build(m.PayoutWaiting, payout_id=pid, reason_code=code, waiting_since=at)


def delivery(nid: str, channel: m.NotificationChannel, status: m.DeliveryStatus) -> m.NotificationDelivery:
    return build(
        m.NotificationDelivery, notification_id=nid, channel=channel, status=status, delivered_at=NOW, attempts=1
    )


def test_a_payout_that_waited_then_was_paid_counts_once_as_paid_whichever_is_read_first() -> None:
    for order in ("wait first", "result first"):
        figures = PayoutFigures()
        wait, result = waiting("p1", at=NOW - timedelta(hours=3)), paid("p1", 15_000, m.Currency.USD, 10**9)
        for message in (wait, result) if order == "wait first" else (result, wait):
            figures.add(message)
        s = figures.summary(NOW)
        assert (s["paid"], s["waiting"], s["failed"]) == (1, 0, 0), order
        assert s["waiting_by_reason"] == {} and s["fiat_paid_minor"] == {"USD": 15_000}, order


def test_fiat_per_currency_and_kaus_are_exact_sums_in_their_own_decimals() -> None:
    figures = PayoutFigures()
    figures.add(paid("u1", 15_000, m.Currency.USD, 1_000_000_001))
    figures.add(paid("u2", 1, m.Currency.USD, 2))
    figures.add(paid("u2", 1, m.Currency.USD, 2))  # reported again: once
    figures.add(paid("k1", 1_234_567, m.Currency.KRW, 7_000_000))
    figures.add(paid("j1", 5, m.Currency.JPY, 1))
    s = figures.summary(NOW)
    assert s["paid"] == 4
    assert s["fiat_paid_minor"] == {"KRW": 1_234_567, "USD": 15_001, "JPY": 5}
    assert s["kaus_paid_units"] == 1_000_000_001 + 2 + 7_000_000 + 1
    assert s["display"]["fiat_paid"] == {"KRW": "1,234,567", "USD": "150.01", "JPY": "5"}
    assert s["display"]["kaus_paid"] == "1,007.000004 K-AUS"


def test_failures_by_reason_code_once_per_payout() -> None:
    figures = PayoutFigures()
    for pid, code in (("f1", "PAYOUT_FAILED"), ("f2", "PAYOUT_FAILED"), ("f3", "NO_RAIL"), ("f1", "PAYOUT_FAILED")):
        figures.add(failed(pid, code))
    figures.add(waiting("f3"))  # a wait read after its result changes nothing
    s = figures.summary(NOW)
    assert (s["failed"], s["paid"], s["waiting"]) == (3, 0, 0)
    assert list(s["failed_by_reason"].items()) == [("PAYOUT_FAILED", 2), ("NO_RAIL", 1)]
    assert s["fiat_paid_minor"] == {} and s["kaus_paid_units"] == 0  # nothing left on a failure


def test_waiting_by_reason_follows_the_latest_reason_of_each_payout() -> None:
    figures = PayoutFigures()
    figures.add(waiting("w1", "KYC_PENDING", NOW - timedelta(hours=2)))
    figures.add(waiting("w1", "KYC_REJECTED", NOW - timedelta(hours=1)))
    figures.add(waiting("w1", "KYC_PENDING", NOW - timedelta(hours=2)))  # the older record read again
    figures.add(waiting("w2", "KYC_PENDING", NOW - timedelta(minutes=5)))
    figures.add(waiting("w3", "KYC_PENDING", NOW - timedelta(minutes=5)))
    s = figures.summary(NOW)
    assert s["waiting"] == 3
    assert s["waiting_by_reason"] == {"KYC_PENDING": 2, "KYC_REJECTED": 1}


def test_notifications_per_channel_once_per_notification() -> None:
    figures = PayoutFigures()
    email, sms, push = m.NotificationChannel.EMAIL, m.NotificationChannel.SMS, m.NotificationChannel.PUSH
    ok, gave_up = m.DeliveryStatus.DELIVERED, m.DeliveryStatus.UNDELIVERED
    figures.add(delivery("p1:PAYOUT_COMPLETED:EMAIL", email, ok))
    figures.add(delivery("p1:PAYOUT_COMPLETED:EMAIL", email, ok))  # re-sent after a crash: once
    figures.add(delivery("p1:PAYOUT_COMPLETED:SMS", sms, gave_up))
    figures.add(delivery("p2:PAYOUT_WAITING:SMS", sms, gave_up))
    figures.add(delivery("p2:PAYOUT_WAITING:SMS", sms, ok))  # sent again by hand from its dead letter
    s = figures.summary(NOW)
    assert s["notifications"] == {
        "EMAIL": {"delivered": 1, "undelivered": 0},
        "SMS": {"delivered": 1, "undelivered": 1},
        "PUSH": {"delivered": 0, "undelivered": 0},
    }
    assert s["paid"] == 0 and push.value in s["display"]["notifications"]


def test_the_window_is_the_last_24_hours_and_old_ids_are_forgotten() -> None:
    figures = PayoutFigures()
    figures.add(paid("old", 100, m.Currency.USD, 10, NOW - timedelta(hours=24, minutes=1)))
    figures.add(waiting("late", at=NOW - timedelta(hours=30)))
    figures.add(paid("late", 200, m.Currency.USD, 20, NOW - timedelta(minutes=1)))  # waited 30 h, paid now
    figures.add(paid("future", 300, m.Currency.USD, 30, NOW + timedelta(minutes=2)))
    s = figures.summary(NOW)
    assert (s["paid"], s["waiting"], s["fiat_paid_minor"]) == (1, 0, {"USD": 200})
    figures.summary(NOW + timedelta(hours=26))
    assert figures.latest == {} and figures.buckets == {}


def test_amount_texts() -> None:
    assert amount_text(15_000, m.Currency.USD) == "150.00"
    assert amount_text(7, m.Currency.EUR) == "0.07"
    assert amount_text(15_000, m.Currency.KRW) == "15,000"
    assert kaus_text(1) == "0.000001"
    assert kaus_text(12_345_678_900_000) == "12,345,678.900000"
