"""The emergency pause in the bridge (issue 18 item 4): money out halts at once, nothing already sent is abandoned.

The core (``domain.bridge.begin(..., paused=True)``, ``domain.bridge.on_paused``) driven like
tests/unit/test_bridge_core.py, and the runner (``streams.bridge.runner.BridgeRunner(paused=...)``) with a pause that
lands while a payment is under way: a new request is refused before any hold; a payment in conversion, routing or
about to send its payout intent is refused with its hold voided and no provider hears of it; a payout whose send's
outcome is unknown, or that is recovered after a crash, is finished normally. Card payments and holders' payouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from domain import bridge as b
from domain.bridge import (
    CardPayment,
    Done,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
    Phase,
    PlaceHold,
    ReasonCode,
    Rejected,
    Settled,
    Step,
    VoidHold,
)
from domain.ledger import Reference
from domain.rails import Provider, Rail
from streams.bridge.runner import BridgeRunner, MemoryIntentStore
from tests.unit.test_bridge_core import (
    DOWN,
    LOST_REQUEST,
    LOST_RESPONSE,
    PAYER,
    FakeLedger,
    Harness,
    K,
    fx_book,
    harness,
    payment,
    result_of,
    voids,
)
from tests.unit.test_bridge_payout_mode import UNITS, holder_payout

# --------------------------------------------------------------------------- the core


def paused_result(step: Step) -> Rejected:
    result = result_of(step)
    assert isinstance(result, Rejected) and result.reason_code is ReasonCode.PAUSED, result
    return result


def test_a_new_request_is_refused_before_any_hold() -> None:
    for p in (payment("card-new"), holder_payout("payout-new")):
        step = b.begin(p, 10_000 * K, harness().clock.now(), b.BridgeConfig(), paused=True)
        result = paused_result(step)
        assert not any(isinstance(e, PlaceHold) for e in step.effects)
        assert (result.failed_phase, result.hold_voided, result.rail) == (Phase.BALANCE_LOCK, False, None)
        assert result.payout_id == p.payout_id and "paused" in result.reason
        assert [type(e) for e in step.effects] == [Done]


def hold_placed(h: Harness, p: CardPayment) -> Step:
    """Phase 1 done: the hold is placed in the ledger."""
    step = b.begin(p, h.ledger.available_units(p.payer_account_id), h.clock.now(), h.cfg)
    [hold] = step.effects
    assert isinstance(hold, PlaceHold)
    h.ledger.apply_hold(hold)
    return b.on_hold(step.tx, True, "", h.clock.now())


@pytest.mark.parametrize("p", [payment("card-fx"), holder_payout("payout-fx")], ids=["card", "payout"])
def test_a_payment_in_fx_conversion_is_refused_with_its_hold_voided(p: CardPayment) -> None:
    h = harness()
    step = hold_placed(h, p)
    assert step.tx.stage is b.Stage.HOLD_PLACED and len(h.ledger.pending()) == 1
    stopped = b.on_paused(step.tx, h.clock.now())
    assert stopped is not None
    result = paused_result(stopped)
    assert (result.failed_phase, result.hold_voided, result.rail) == (Phase.FX_CONVERSION, True, None)
    [void] = [e for e in stopped.effects if isinstance(e, VoidHold)]
    assert (void.hold_id, void.reason_code) == (step.tx.hold_id, ReasonCode.PAUSED)
    h.ledger.void_hold(transfer_id=void.transfer_id, hold_id=void.hold_id)
    assert h.ledger.pending() == [] and h.ledger.available_units(PAYER) == 10_000 * K


@pytest.mark.parametrize("p", [payment("card-route"), holder_payout("payout-route")], ids=["card", "payout"])
def test_a_payment_being_routed_is_refused_before_its_intent(p: CardPayment) -> None:
    h = harness()
    locked = b.convert(hold_placed(h, p).tx, h.book, h.clock.now(), h.cfg)
    assert locked.tx.stage is b.Stage.RATE_LOCKED
    stopped = b.on_paused(locked.tx, h.clock.now())
    assert stopped is not None and not any(isinstance(e, PayoutIntent) for e in stopped.effects)
    result = paused_result(stopped)
    assert (result.failed_phase, result.hold_voided) == (Phase.MERCHANT_CREDIT, True)
    assert result.amount_minor == locked.tx.fiat_minor  # converted already: the figure it would have paid


def test_an_intent_not_yet_executed_is_stopped_and_no_provider_hears_of_it() -> None:
    """The shell asks right before persisting and sending the intent; the refusal names no rail."""
    h = harness()
    locked = b.convert(hold_placed(h, payment("card-intent")).tx, h.book, h.clock.now(), h.cfg)
    routed = b.route(locked.tx, h.breakers, h.clock.now(), h.cfg)
    [intent] = routed.effects
    assert isinstance(intent, PayoutIntent) and routed.tx.stage is b.Stage.PAYING
    stopped = b.on_paused(routed.tx, h.clock.now())
    assert stopped is not None
    result = paused_result(stopped)
    assert (result.rail, result.hold_voided) == (None, True) and intent.provider in result.reason
    assert h.providers.calls == []


def test_a_failover_intent_is_stopped_after_a_provider_that_did_not_execute() -> None:
    """UNAVAILABLE: definitely not paid; the next provider's intent is stopped before its call."""
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, DOWN)
    locked = b.convert(hold_placed(h, payment("card-failover")).tx, h.book, h.clock.now(), h.cfg)
    routed = b.route(locked.tx, h.breakers, h.clock.now(), h.cfg)
    [first] = routed.effects
    assert isinstance(first, PayoutIntent) and first.rail is Rail.STRIPE_INSTANT
    failover = b.on_payout(routed.tx, h.providers.payout(first), h.breakers, h.clock.now(), h.cfg)
    assert any(isinstance(e, PayoutIntent) for e in failover.effects)
    stopped = b.on_paused(failover.tx, h.clock.now())
    assert stopped is not None and paused_result(stopped).hold_voided
    assert h.providers.payouts == {}


def test_an_intent_whose_send_timed_out_is_finished_normally() -> None:
    """The provider may hold it: the pause no longer stops it (lookup, re-send under the same key, capture)."""
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, LOST_REQUEST)  # a TIMEOUT; the lookup says NOT_FOUND; re-sent
    locked = b.convert(hold_placed(h, payment("card-timeout")).tx, h.book, h.clock.now(), h.cfg)
    routed = b.route(locked.tx, h.breakers, h.clock.now(), h.cfg)
    [intent] = routed.effects
    assert isinstance(intent, PayoutIntent)
    resolving = b.on_payout(routed.tx, h.providers.payout(intent), h.breakers, h.clock.now(), h.cfg)
    assert resolving.tx.maybe_sent and b.on_paused(resolving.tx, h.clock.now()) is None
    resent = b.on_resolved(
        resolving.tx, h.providers.lookup(intent), h.breakers, h.clock.now(), h.cfg
    )  # NOT_FOUND: the intent again, send 2
    [again] = resent.effects
    assert isinstance(again, PayoutIntent) and again.send_no == 2
    assert b.on_paused(resent.tx, h.clock.now()) is None  # as the shell asks before executing it: go on
    done = h.drive(resent)
    assert isinstance(result_of(done), Settled) and h.providers.count(intent.bridge_tx_id) == 1
    assert h.ledger.pending() == [] and voids(h) == []


def test_a_recovered_intent_is_resolved_during_a_pause() -> None:
    h = harness()
    h.providers.on(Rail.STRIPE_INSTANT, LOST_RESPONSE)  # executed; the answer lost
    locked = b.convert(hold_placed(h, payment("card-recover")).tx, h.book, h.clock.now(), h.cfg)
    [intent] = b.route(locked.tx, h.breakers, h.clock.now(), h.cfg).effects
    assert isinstance(intent, PayoutIntent)
    h.providers.payout(intent)  # then the worker crashed
    [step] = b.recover([intent], h.clock.now())
    assert step.tx.maybe_sent and b.on_paused(step.tx, h.clock.now()) is None
    assert isinstance(result_of(h.drive(step)), Settled) and h.providers.count(intent.bridge_tx_id) == 1


def test_a_paid_payment_being_captured_is_not_stopped() -> None:
    h = harness()
    p = holder_payout("payout-posting")
    locked = b.convert(hold_placed(h, p).tx, h.book, h.clock.now(), h.cfg)
    [intent] = b.route(locked.tx, h.breakers, h.clock.now(), h.cfg).effects
    assert isinstance(intent, PayoutIntent)
    paying = b.route(locked.tx, h.breakers, h.clock.now(), h.cfg)
    posting = b.on_payout(paying.tx, h.providers.payout(intent), h.breakers, h.clock.now(), h.cfg)
    assert posting.tx.stage is b.Stage.POSTING and b.on_paused(posting.tx, h.clock.now()) is None
    result = result_of(h.drive(posting))
    assert isinstance(result, Settled) and result.kaus_debited_units == UNITS


# --------------------------------------------------------------------------- the runner


@dataclass
class Adapter:
    """An async provider with real idempotency; ``script`` answers the payout calls in order (then PAID)."""

    script: list[PayoutStatus] = field(default_factory=list)
    on_call: Callable[[], None] | None = None
    paid: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        self.calls.append(f"payout:{intent.bridge_tx_id}")
        if self.on_call is not None:
            self.on_call()
        status = self.script.pop(0) if self.script else PayoutStatus.PAID
        if status is PayoutStatus.UNAVAILABLE:
            return PayoutOutcome(status, http_status=503)
        self.paid.add(intent.idempotency_key)
        return PayoutOutcome(status, provider_reference=f"ref-{intent.idempotency_key}")

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        self.calls.append(f"lookup:{intent.bridge_tx_id}")
        if intent.idempotency_key in self.paid:
            return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"ref-{intent.idempotency_key}")
        return PayoutOutcome(PayoutStatus.NOT_FOUND, http_status=404)


class Pause:
    def __init__(self) -> None:
        self.on = False

    def __call__(self) -> bool:
        return self.on


class RunnerLedger(FakeLedger):
    """The fake ledger as the runner calls it (with the hold's reference); with ``pause``, the pause lands while
    the hold is placed (after the payment began)."""

    pause: Pause | None = None

    def place_hold(  # type: ignore[override]  # the runner passes the hold's reference; this fake keeps none
        self,
        *,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_units: int,
        expires_at_ms: int,
        reference: Reference | None = None,
    ) -> None:
        super().place_hold(
            transfer_id=transfer_id,
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount_units=amount_units,
            expires_at_ms=expires_at_ms,
        )
        if self.pause is not None:
            self.pause.on = True


def runner(adapters: dict[Provider, Any], ledger: RunnerLedger, pause: Pause, **kw: Any) -> BridgeRunner:
    cfg = b.BridgeConfig(enabled_rails=frozenset({Rail.STRIPE_INSTANT, Rail.PAYPAL}))
    book = fx_book()
    clock = harness().clock
    return BridgeRunner(
        ledger=ledger, adapters=adapters, fx_book=lambda: book, cfg=cfg, clock=clock, paused=pause, **kw
    )


def test_runner_stops_a_payment_whose_hold_was_placed_as_the_pause_landed() -> None:
    pause = Pause()
    ledger = RunnerLedger(balances={PAYER: 10_000 * K})
    ledger.pause = pause
    stripe = Adapter()

    async def go() -> tuple[b.Result, b.Result]:
        r = runner({Provider.STRIPE: stripe}, ledger, pause)
        first = await r.settle(payment("card-inflight"))
        second = await r.settle(payment("card-after"))
        return first, second

    first, second = asyncio.run(go())
    assert isinstance(first, Rejected) and first.reason_code is ReasonCode.PAUSED and first.hold_voided
    assert first.failed_phase is Phase.FX_CONVERSION
    assert isinstance(second, Rejected) and second.reason_code is ReasonCode.PAUSED
    assert (second.failed_phase, second.hold_voided) == (Phase.BALANCE_LOCK, False)
    assert stripe.calls == [] and ledger.pending() == [] and [h.state for h in ledger.holds.values()] == ["VOIDED"]


def test_runner_checks_the_pause_right_before_executing_a_payout_intent() -> None:
    """The pause lands during a provider call that fails (503, not executed): the failover intent is not sent."""
    pause = Pause()
    ledger = RunnerLedger(balances={PAYER: 10_000 * K})
    stripe = Adapter([PayoutStatus.UNAVAILABLE], on_call=lambda: setattr(pause, "on", True))
    paypal = Adapter()
    store = MemoryIntentStore()

    async def go() -> b.Result:
        return await runner({Provider.STRIPE: stripe, Provider.PAYPAL: paypal}, ledger, pause, store=store).settle(
            payment("card-failover")
        )

    result = asyncio.run(go())
    assert isinstance(result, Rejected) and result.reason_code is ReasonCode.PAUSED and result.hold_voided
    assert (len(stripe.calls), paypal.calls, stripe.paid | paypal.paid) == (1, [], set())
    assert store.open_intents() == [] and ledger.pending() == []


def test_runner_recovers_an_open_intent_while_paused() -> None:
    pause = Pause()
    pause.on = True
    ledger = RunnerLedger(balances={PAYER: 10_000 * K})
    stripe = Adapter()
    h = harness()
    locked = b.convert(hold_placed(h, holder_payout("payout-open")).tx, h.book, h.clock.now(), h.cfg)
    [intent] = b.route(locked.tx, h.breakers, h.clock.now(), h.cfg).effects
    assert isinstance(intent, PayoutIntent) and intent.provider is Provider.PAYPAL
    ledger.holds, ledger.applied = h.ledger.holds, h.ledger.applied
    paypal = Adapter(paid={intent.idempotency_key})  # the provider paid it before the crash

    async def go() -> list[b.Result]:
        return await runner({Provider.STRIPE: stripe, Provider.PAYPAL: paypal}, ledger, pause).recover([intent])

    [result] = asyncio.run(go())
    assert isinstance(result, Settled) and result.payout_id == "payout-open"
    assert paypal.calls == [f"lookup:{intent.bridge_tx_id}"] and ledger.pending() == []
