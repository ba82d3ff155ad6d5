"""Payouts above the auto-approval limit wait for the signers (issue 18, PAYOUT_APPROVAL).

The core (``domain.payouts.AutoPayouts``: the gate at its exact boundary, the approval's outcomes, what the account
does next) and the service (``streams.payouts.service.PayoutService``: one governance request, one wait and one audit
record per payout with deterministic ids, the multisig states it follows, the results it reports), driven with
records as in tests/unit/test_payouts_service.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    AUDIT_RECORDS,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    GOVERNANCE_MULTISIG,
    GOVERNANCE_REQUESTS,
    NOTIFICATIONS_HOLDERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
)
from domain import governance as g
from domain import parameters
from domain.payouts import Action, AutoPayouts, KycStatus, PayoutFailCode, WaitCode
from domain.timeconv import from_ms
from streams.payouts.service import PayoutService, approval_audit_id, approval_nonce, to_rule
from tests.unit.test_payouts_service import HOLDER, T0, Harness, K, completed, of, rule, schedule_rule

LIMIT = 1_000 * K  # the tests' auto-approval limit
BIG = rule(threshold_kaus_units=100 * K, keep_minimum_kaus_units=10 * K, max_payout_per_tx_kaus_units=100_000 * K)


def book(limit: int = LIMIT) -> AutoPayouts:
    b = AutoPayouts()
    b.set_approval_limit(limit)
    b.put_rule(to_rule(BIG), 1, T0)
    b.set_kyc(HOLDER, KycStatus.VERIFIED, 1, 0, T0)
    return b


# --------------------------------------------------------------------------- the core


def test_core_exactly_the_limit_pays_automatically_one_unit_more_waits_for_approval() -> None:
    at_limit = book()
    [pay] = at_limit.evaluate(HOLDER, LIMIT + 10 * K, T0)  # pays available - keep-minimum = the limit
    assert (pay.action, pay.amount_units, pay.approved) == (Action.PAY, LIMIT, False)

    above = book()
    [ask] = above.evaluate(HOLDER, LIMIT + 10 * K + 1, T0)
    assert (ask.action, ask.code, ask.payout_id, ask.amount_units) == (
        Action.APPROVE, WaitCode.APPROVAL_PENDING, "r-thr:T0", LIMIT + 1
    )  # fmt: skip
    assert above.gated("r-thr:T0") is not None and above.in_flight(HOLDER) is None
    assert above.evaluate(HOLDER, 5 * LIMIT, T0 + 1) == []  # asked once; nothing else of the account pays meanwhile
    assert above.tick(T0 + 10 * 86_400_000, lambda _: 5 * LIMIT) == []


def test_core_the_default_limit_is_the_parameters_default() -> None:
    assert AutoPayouts().approval_limit == parameters.PARAMETERS[parameters.AUTO_APPROVAL_LIMIT].default


def test_core_an_approved_payout_pays_exactly_the_approved_amount_under_its_id() -> None:
    b = book()
    [ask] = b.evaluate(HOLDER, 3 * LIMIT, T0)
    [pay] = b.on_approval(ask.payout_id, True, lambda _: 5 * LIMIT, T0 + 5)  # the balance grew meanwhile
    assert (pay.action, pay.payout_id, pay.amount_units, pay.approved) == (Action.PAY, ask.payout_id, ask.amount_units,
                                                                           True)  # fmt: skip
    assert b.in_flight(HOLDER) == pay and b.gated(ask.payout_id) is None
    assert b.on_approval(ask.payout_id, True, lambda _: 5 * LIMIT, T0 + 6) == []  # a repeat: nothing
    assert b.on_result(pay.payout_id, True, 5 * LIMIT - pay.amount_units, T0 + 7)[0].payout_id == "r-thr:T1"


def approved(available: int) -> list[Any]:
    """A payout gated at 3 LIMIT available (it asks for 3 LIMIT - keep-minimum), approved at ``available``."""
    b = book()
    [ask] = b.evaluate(HOLDER, 3 * LIMIT, T0)
    return b.on_approval(ask.payout_id, True, lambda _: available, T0 + 1)


def test_core_an_approved_payout_the_balance_no_longer_covers_fails_without_paying() -> None:
    asked = 3 * LIMIT - 10 * K
    [pay] = approved(asked + 10 * K)  # the approved amount plus keep-minimum: exactly covered
    assert (pay.action, pay.amount_units) == (Action.PAY, asked)
    [fail] = approved(asked + 10 * K - 1)
    assert (fail.action, fail.code, fail.amount_units) == (Action.FAIL, PayoutFailCode.INSUFFICIENT_FUNDS, asked)
    assert "approved for" in fail.reason


def test_core_a_refused_approval_fails_backs_off_and_asks_again_only_under_a_new_id() -> None:
    b = book()
    [ask] = b.evaluate(HOLDER, 3 * LIMIT, T0)
    [fail] = b.on_approval(ask.payout_id, False, lambda _: 3 * LIMIT, T0 + 1)
    assert (fail.action, fail.code, fail.payout_id) == (Action.FAIL, PayoutFailCode.APPROVAL_REFUSED, ask.payout_id)
    assert b.gated(ask.payout_id) is None and b.in_flight(HOLDER) is None
    day = 86_400_000
    assert b.evaluate(HOLDER, 3 * LIMIT, T0 + day) == []  # backed off (retry_after_refusal_ms: a day)
    [again] = b.tick(T0 + 1 + day, lambda _: 3 * LIMIT)
    assert (again.action, again.payout_id) == (Action.APPROVE, "r-thr:T1")  # a new request, not the refused one


def test_core_kyc_and_the_pause_gate_before_the_approval_and_after_it() -> None:
    b = book()
    b.set_kyc(HOLDER, KycStatus.PENDING, 2, 0, T0)
    [wait] = b.evaluate(HOLDER, 3 * LIMIT, T0)
    assert (wait.action, wait.code) == (Action.WAIT, WaitCode.KYC_PENDING)  # nobody is asked to approve it yet
    [ask] = b.set_kyc(HOLDER, KycStatus.VERIFIED, 3, 3 * LIMIT, T0 + 1)
    assert ask.action is Action.APPROVE
    b.set_paused(True)
    [paused] = b.on_approval(ask.payout_id, True, lambda _: 3 * LIMIT, T0 + 2)
    assert (paused.action, paused.code, paused.payout_id) == (Action.WAIT, WaitCode.PAUSED, ask.payout_id)
    assert b.evaluate(HOLDER, 3 * LIMIT, T0 + 3) == []  # waits once
    assert b.set_paused(False) == [HOLDER]
    [pay] = b.evaluate(HOLDER, 3 * LIMIT, T0 + 4)
    assert (pay.action, pay.amount_units, pay.approved) == (Action.PAY, ask.amount_units, True)


def test_core_an_outcome_read_before_the_gate_applies_when_the_payout_is_gated() -> None:
    b = book()
    assert b.on_approval("r-thr:T0", True, lambda _: 0, T0) == []  # a replay: the multisig record came first
    ask, pay = b.evaluate(HOLDER, 3 * LIMIT, T0)
    assert (ask.action, pay.action, pay.approved) == (Action.APPROVE, Action.PAY, True)
    refused = book()
    refused.on_approval("r-thr:T0", False, lambda _: 0, T0)
    ask, fail = refused.evaluate(HOLDER, 3 * LIMIT, T0)
    assert (ask.action, fail.action, fail.code) == (Action.APPROVE, Action.FAIL, PayoutFailCode.APPROVAL_REFUSED)


def test_core_a_gated_payout_survives_the_snapshot() -> None:
    b = book()
    [ask] = b.evaluate(HOLDER, 3 * LIMIT, T0)
    restored = AutoPayouts.from_dict(b.to_dict())
    restored.set_approval_limit(LIMIT)
    assert restored.gated(ask.payout_id) == b.gated(ask.payout_id)
    [pay] = restored.on_approval(ask.payout_id, True, lambda _: 3 * LIMIT, T0 + 1)
    assert (pay.action, pay.amount_units) == (Action.PAY, ask.amount_units)
    again = AutoPayouts.from_dict(restored.to_dict())
    assert again.in_flight(HOLDER) == pay and pay.approved  # the approval rides with the payout in flight


def test_core_a_schedule_refused_pays_at_its_next_period() -> None:
    b = AutoPayouts()
    b.set_approval_limit(LIMIT)
    sched = schedule_rule()
    b.put_rule(to_rule(sched), 1, T0)  # daily at 12:30, from 12:00
    b.set_kyc(HOLDER, KycStatus.VERIFIED, 1, 0, T0)
    [ask] = b.tick(T0 + 3_600_000, lambda _: 5 * LIMIT)
    assert ask.action is Action.APPROVE and b.last_period(sched.rule_id) == ask.trigger_id  # period consumed
    b.on_approval(ask.payout_id, False, lambda _: 5 * LIMIT, T0 + 3_600_001)
    assert b.tick(T0 + 3_600_002 + 3_600_000, lambda _: 5 * LIMIT) == []  # the same day: not asked again
    [next_day] = b.tick(T0 + 3_600_000 + 86_400_000 + 1, lambda _: 5 * LIMIT)
    assert next_day.action is Action.APPROVE and next_day.payout_id != ask.payout_id


# --------------------------------------------------------------------------- the service


class Limit:
    def __init__(self, units: int) -> None:
        self.values = {parameters.AUTO_APPROVAL_LIMIT: units}

    def __call__(self) -> dict[str, int]:
        return self.values


def harness(limit: int = LIMIT) -> Harness:
    h = Harness()
    h.service = PayoutService(h.settings, h.book, parameters=Limit(limit))
    h.kyc("VERIFIED", email="holder@example.com")
    h.send(PAYOUT_RULES, BIG)
    return h


def multisig(payout_id: str, state: str, amount: int, op: str = "PAYOUT_APPROVAL") -> m.MultisigRequest:
    return m.MultisigRequest(
        request_id=f"PAYOUT:{payout_id}", amount_kaus_units=amount, required_signers=3, signatures=3, state=state,
        created_at=from_ms(T0), updated_at=from_ms(T0), operation=op,
    )  # fmt: skip


def test_service_a_payout_above_the_limit_asks_the_signers_once_with_deterministic_ids() -> None:
    h = harness()
    out = h.deposit(3 * LIMIT)
    assert of(out, BRIDGE_REQUESTS) == [] and of(out, PAYOUT_REQUESTS) == []
    [request] = of(out, GOVERNANCE_REQUESTS)
    [wait] = of(out, PAYOUT_WAITING)
    [audit] = of(out, AUDIT_RECORDS)
    amount = 3 * LIMIT - 10 * K
    assert (request.request_id, request.operation, request.amount_kaus_units) == (
        "PAYOUT:r-thr:T0", m.GovernanceOperation.PAYOUT_APPROVAL, amount
    )  # fmt: skip
    assert request.params["payout_id"] == "r-thr:T0" and request.params["account_id"] == HOLDER
    assert request.nonce == approval_nonce("r-thr:T0") < 2**63
    assert request.expires_at - request.created_at == timedelta(days=7) and request.requested_by == "nexus-payouts"
    assert g.check_request(g.Request(request.request_id, g.Operation.PAYOUT_APPROVAL, request.amount_kaus_units,
                                     request.params, request.nonce, request.expires_at, request.requested_by,
                                     request.created_at)) is None  # fmt: skip  # the governance service accepts it
    assert (wait.payout_id, wait.reason_code, wait.amount_kaus_units) == ("r-thr:T0", "APPROVAL_PENDING", amount)
    assert (audit.audit_id, audit.transaction_id, audit.action) == (
        approval_audit_id("r-thr:T0"), "r-thr:T0", "PAYOUT_APPROVAL_REQUESTED"
    )  # fmt: skip
    assert approval_audit_id("r-thr:T0") == "AUDIT-PAYOUT:r-thr:T0:approval-requested"
    [note] = of(out, NOTIFICATIONS_HOLDERS)
    assert note.event == "PAYOUT_WAITING" and "approve" in note.text
    assert of(h.deposit(K) + h.tick(60_000), GOVERNANCE_REQUESTS) == []  # once


def test_service_an_executed_approval_pays_exactly_the_approved_amount_and_reports_the_request() -> None:
    h = harness()
    [request] = of(h.deposit(3 * LIMIT), GOVERNANCE_REQUESTS)
    assert h.send(GOVERNANCE_MULTISIG, multisig("r-thr:T0", "APPROVED", request.amount_kaus_units)) == []
    out = h.send(GOVERNANCE_MULTISIG, multisig("r-thr:T0", "EXECUTED", request.amount_kaus_units))
    [bridge] = of(out, BRIDGE_REQUESTS)
    assert bridge.request_id == "r-thr:T0" and bridge.payout is not None
    assert bridge.payout.amount_kaus_units == request.amount_kaus_units
    h.capture("r-thr:T0", request.amount_kaus_units)
    out = h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed("r-thr:T0", request.amount_kaus_units, 400_000))
    [result] = of(out, PAYOUT_RESULTS)
    assert (result.status, result.approval_request_id) == (m.PayoutStatus.PAID, "PAYOUT:r-thr:T0")
    again = h.send(GOVERNANCE_MULTISIG, multisig("r-thr:T0", "EXECUTED", request.amount_kaus_units))
    assert of(again, BRIDGE_REQUESTS) == []  # a repeated record pays nothing more


@pytest.mark.parametrize("state", ["REJECTED", "EXPIRED"])
def test_service_a_refused_approval_is_failed_with_its_code_and_nothing_is_requested(state: str) -> None:
    h = harness()
    [request] = of(h.deposit(3 * LIMIT), GOVERNANCE_REQUESTS)
    out = h.send(GOVERNANCE_MULTISIG, multisig("r-thr:T0", state, request.amount_kaus_units))
    [result] = of(out, PAYOUT_RESULTS)
    assert (result.status, result.reason_code, result.approval_request_id, result.payout_id) == (
        m.PayoutStatus.FAILED, "APPROVAL_REFUSED", "PAYOUT:r-thr:T0", "r-thr:T0"
    )  # fmt: skip
    assert of(out, BRIDGE_REQUESTS) == [] and of(out, PAYOUT_REQUESTS) == []
    assert [n.event for n in of(out, NOTIFICATIONS_HOLDERS)] == ["PAYOUT_FAILED"]
    later = h.tick(60_000) + h.deposit(K)
    assert of(later, GOVERNANCE_REQUESTS) == [] and of(later, PAYOUT_RESULTS) == []  # not asked again in a loop


def test_service_ignores_other_requests_and_a_record_that_is_not_its_request() -> None:
    h = harness()
    [request] = of(h.deposit(3 * LIMIT), GOVERNANCE_REQUESTS)
    other = m.MultisigRequest(request_id="gov-1", amount_kaus_units=1, required_signers=3, signatures=3,
                              state="EXECUTED", created_at=from_ms(T0), updated_at=from_ms(T0))  # fmt: skip
    assert h.send(GOVERNANCE_MULTISIG, other) == []
    wrong_amount = multisig("r-thr:T0", "EXECUTED", request.amount_kaus_units + 1)
    assert h.send(GOVERNANCE_MULTISIG, wrong_amount) == []
    wrong_op = multisig("r-thr:T0", "EXECUTED", request.amount_kaus_units, op="TREASURY_TRANSFER")
    assert h.send(GOVERNANCE_MULTISIG, wrong_op) == []
    assert h.service.book.gated("r-thr:T0") is not None


def test_service_follows_the_governed_limit() -> None:
    limit = Limit(10 * LIMIT)
    h = Harness()
    h.service = PayoutService(h.settings, h.book, parameters=limit)
    h.kyc("VERIFIED")
    h.send(PAYOUT_RULES, BIG)
    assert of(h.deposit(3 * LIMIT), BRIDGE_REQUESTS)  # under the limit in force: paid at once
    limit.values = {parameters.AUTO_APPROVAL_LIMIT: LIMIT}  # a PARAMETER_CHANGE executed
    h.capture("r-thr:T0", 3 * LIMIT - 10 * K)
    out = h.send(BRIDGE_SETTLEMENTS_COMPLETED, completed("r-thr:T0", 3 * LIMIT - 10 * K, 400_000))
    out += h.deposit(3 * LIMIT)
    assert of(out, BRIDGE_REQUESTS) == [] and [r.request_id for r in of(out, GOVERNANCE_REQUESTS)] == [
        "PAYOUT:r-thr:T1"
    ]


def test_service_a_gated_payout_survives_a_restart() -> None:
    h = harness()
    [request] = of(h.deposit(3 * LIMIT), GOVERNANCE_REQUESTS)
    saved = h.service.to_dict()
    h.service = PayoutService(h.settings, h.book, saved, parameters=Limit(LIMIT))
    out = h.send(GOVERNANCE_MULTISIG, multisig("r-thr:T0", "EXECUTED", request.amount_kaus_units))
    [bridge] = of(out, BRIDGE_REQUESTS)
    assert bridge.payout is not None and bridge.payout.amount_kaus_units == request.amount_kaus_units
    assert h.service.sent["r-thr:T0"].approval_request_id == "PAYOUT:r-thr:T0"
