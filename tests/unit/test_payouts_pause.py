"""The emergency pause in the auto-payout service (issue 18 item 4): a due payout waits (PAUSED) and goes out after
the unpause under the same payout id.

The core (``domain.payouts.AutoPayouts.set_paused``) and the service (``streams.payouts.service.PayoutService`` with
``paused``), driven with records as in tests/unit/test_payouts_service.py.
"""

from __future__ import annotations

import json

from contracts.topics import (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_FAILED,
    NOTIFICATIONS_HOLDERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
)
from domain.bridge import bridge_tx_id_for
from domain.payouts import Action, AutoPayouts, KycStatus, WaitCode
from streams.payouts.service import PayoutService, to_rule
from tests.unit.test_payouts_service import HOLDER, RATE, T0, Harness, K, failed, of, rule, schedule_rule


class Pause:
    def __init__(self, on: bool = False) -> None:
        self.on = on

    def __call__(self) -> bool:
        return self.on


def paused_harness(pause: Pause, **kw: object) -> Harness:
    h = Harness(**kw)  # type: ignore[arg-type]
    h.service = PayoutService(h.settings, h.book, paused=pause)
    return h


# --------------------------------------------------------------------------- the core


def test_core_a_due_payout_waits_paused_once_keeps_its_trigger_and_pays_after_the_unpause() -> None:
    book = AutoPayouts()
    book.put_rule(to_rule(rule()), 1, T0)
    book.set_kyc(HOLDER, KycStatus.VERIFIED, 1, 0, T0)
    assert book.set_paused(True) == [] and book.paused
    [wait] = book.evaluate(HOLDER, 2_000 * K, T0)
    assert (wait.action, wait.code, wait.payout_id, wait.amount_units) == (
        Action.WAIT, WaitCode.PAUSED, "r-thr:T0", 1_900 * K
    )  # fmt: skip
    assert book.evaluate(HOLDER, 2_500 * K, T0 + 1) == [] and book.in_flight(HOLDER) is None  # once; nothing held
    assert book.set_paused(True) == []  # no change
    assert book.set_paused(False) == [HOLDER]
    [pay] = book.evaluate(HOLDER, 2_500 * K, T0 + 2)
    assert (pay.action, pay.payout_id, pay.amount_units) == (Action.PAY, "r-thr:T0", 2_400 * K)  # today's balance


def test_core_a_schedule_period_that_waited_for_the_pause_pays_once_after_it() -> None:
    book = AutoPayouts()
    book.put_rule(to_rule(schedule_rule()), 1, T0)  # 12:00; the schedule is daily at 12:30
    assert book.set_kyc(HOLDER, KycStatus.VERIFIED, 1, 0, T0) == []
    book.set_paused(True)
    [wait] = book.tick(T0 + 3_600_000, lambda _: 500 * K)
    assert (wait.action, wait.code) == (Action.WAIT, WaitCode.PAUSED)
    assert book.last_period(schedule_rule().rule_id) is None  # not consumed
    book.set_paused(False)
    [pay] = book.evaluate(HOLDER, 500 * K, T0 + 3_600_001)
    assert (pay.action, pay.payout_id) == (Action.PAY, wait.payout_id)
    book.on_result(pay.payout_id, True, 100 * K, T0 + 3_600_002)
    assert book.evaluate(HOLDER, 500 * K, T0 + 3_600_003) == []  # the period paid once


def test_core_a_failure_without_back_off_lets_the_next_payout_go_at_once() -> None:
    book = AutoPayouts()
    book.put_rule(to_rule(rule()), 1, T0)
    book.set_kyc(HOLDER, KycStatus.VERIFIED, 1, 0, T0)
    [pay] = book.evaluate(HOLDER, 2_000 * K, T0)
    [again] = book.on_result(pay.payout_id, False, 2_000 * K, T0 + 1, "PAUSED")
    assert (again.action, again.payout_id) == (Action.PAY, "r-thr:T1")


# --------------------------------------------------------------------------- the service


def test_a_due_payout_waits_paused_once_and_goes_out_after_the_unpause_under_the_same_id() -> None:
    pause = Pause(on=True)
    h = paused_harness(pause)
    h.kyc("VERIFIED", email="holder@example.com")
    h.send(PAYOUT_RULES, rule())
    out = h.deposit(2_000 * K)
    [waiting] = of(out, PAYOUT_WAITING)
    assert (waiting.payout_id, waiting.reason_code, waiting.amount_kaus_units) == ("r-thr:T0", "PAUSED", 1_900 * K)
    assert of(out, BRIDGE_REQUESTS) == [] and of(out, PAYOUT_REQUESTS) == []
    [note] = of(out, NOTIFICATIONS_HOLDERS)
    assert note.event == "PAYOUT_WAITING" and "paused" in note.text and "1,900.000000 K-AUS" in note.text
    # every movement and tick evaluates it again: reported once, also by a service restarted during the pause
    assert h.deposit(K) + h.tick(60_000) == []
    h.service = PayoutService(h.settings, h.book, json.loads(json.dumps(h.service.to_dict())), paused=pause)
    assert h.tick(1_000) == [] and h.deposit(K) == []
    pause.on = False
    out = h.tick(1_000)
    [request] = of(out, PAYOUT_REQUESTS)
    [bridge] = of(out, BRIDGE_REQUESTS)
    assert (request.payout_id, bridge.request_id) == ("r-thr:T0", "r-thr:T0")
    assert request.amount_kaus_units == 1_902 * K  # the balance when it goes out, keep-minimum kept
    assert of(out, PAYOUT_WAITING) == [] and of(h.tick(1_000), BRIDGE_REQUESTS) == []  # requested once


def test_a_payout_decided_before_the_pause_and_not_requested_yet_waits_then_goes_out() -> None:
    """No fresh rate when it was decided; the pause lands before the rate does: the request waits for the unpause."""
    pause = Pause()
    h = paused_harness(pause, rate=None)
    h.kyc("VERIFIED")
    h.send(PAYOUT_RULES, rule())
    assert h.deposit(2_000 * K) == []  # PAY decided, waiting for a rate
    pause.on = True
    h.rate = RATE
    out = h.tick(1_000)
    [waiting] = of(out, PAYOUT_WAITING)
    assert (waiting.payout_id, waiting.reason_code, waiting.amount_kaus_units) == ("r-thr:T0", "PAUSED", 1_900 * K)
    assert of(out, BRIDGE_REQUESTS) == [] and h.tick(1_000) == []
    pause.on = False
    [bridge] = of(h.tick(1_000), BRIDGE_REQUESTS)
    assert (bridge.request_id, bridge.payout.amount_kaus_units if bridge.payout else None) == ("r-thr:T0", 1_900 * K)


def test_a_payout_the_bridge_refused_for_the_pause_is_reported_failed_and_delays_nothing() -> None:
    pause = Pause()
    h = paused_harness(pause)
    h.kyc("VERIFIED")
    h.send(PAYOUT_RULES, rule())
    [request] = of(h.deposit(2_000 * K), PAYOUT_REQUESTS)
    pause.on = True  # the bridge saw the pause first: refused before any hold
    refused = failed(request.payout_id, failed_phase="BALANCE_LOCK", reason_code="PAUSED", reason="paused", rail=None)
    out = h.send(BRIDGE_SETTLEMENTS_FAILED, refused)
    [result] = of(out, PAYOUT_RESULTS)
    assert (result.status, result.reason_code) == ("FAILED", "PAUSED")
    [waiting] = of(out, PAYOUT_WAITING)  # the next threshold payout, due now, waits for the unpause
    assert (waiting.payout_id, waiting.reason_code) == ("r-thr:T1", "PAUSED")
    pause.on = False
    [retry] = of(h.tick(1_000), BRIDGE_REQUESTS)  # no back-off of an hour
    assert retry.request_id == "r-thr:T1"
    assert bridge_tx_id_for(retry.request_id) != bridge_tx_id_for(request.payout_id)


def test_kyc_is_reported_first_then_the_pause() -> None:
    pause = Pause(on=True)
    h = paused_harness(pause)
    h.kyc("PENDING")
    h.send(PAYOUT_RULES, rule())
    [kyc_wait] = of(h.deposit(2_000 * K), PAYOUT_WAITING)
    assert kyc_wait.reason_code == "KYC_PENDING"
    [paused_wait] = of(h.kyc("VERIFIED"), PAYOUT_WAITING)
    assert (paused_wait.payout_id, paused_wait.reason_code) == (kyc_wait.payout_id, "PAUSED")
    pause.on = False
    [request] = of(h.tick(1_000), PAYOUT_REQUESTS)
    assert request.payout_id == kyc_wait.payout_id and request.account_id == HOLDER
