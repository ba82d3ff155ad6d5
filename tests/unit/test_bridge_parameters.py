"""Governed parameters in the bridge (issue 18, PARAMETER_CHANGE): cashback per tier, the ecosystem bonus and the
slippage limit come from the configuration (``domain.bridge.configured``), and the runner gives each payment the
values in force when it begins: one before a change keeps the old rates to its end, the next one has the new.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

from domain import bridge as b
from domain import parameters
from domain.bridge import BridgeConfig, PostHold, ReasonCode, Rejected, Settled
from domain.cashback import CASHBACK_BPS, ECOSYSTEM_BONUS_BPS_OF_CASHBACK, PayerTier, RewardRates, compute_rewards
from domain.rails import Provider, Rail
from streams.bridge.runner import BridgeRunner
from tests.unit.test_bridge_core import PAYER, K, fx_book, harness, payment, result_of
from tests.unit.test_bridge_pause import Adapter, RunnerLedger

GOLD = parameters.cashback_name(PayerTier.GOLD)


def test_the_defaults_are_the_parameters_defaults() -> None:
    cfg = b.configured(BridgeConfig(), {})
    assert cfg.rewards == RewardRates() and cfg.fx.slippage_limit_bps == 30
    for tier, bps in CASHBACK_BPS.items():
        assert parameters.PARAMETERS[parameters.cashback_name(tier)].default == bps == cfg.rewards.cashback_bps[tier]
    assert parameters.PARAMETERS[parameters.ECOSYSTEM_BONUS].default == ECOSYSTEM_BONUS_BPS_OF_CASHBACK
    assert parameters.PARAMETERS[parameters.SLIPPAGE_LIMIT].default == BridgeConfig().fx.slippage_limit_bps


def test_compute_rewards_takes_the_rates_in_force() -> None:
    rates = parameters.reward_rates({GOLD: 350, parameters.ECOSYSTEM_BONUS: 2_000})
    r = compute_rewards(1_000 * K, PayerTier.GOLD, "AURA_SYDNEY", rates)
    assert (r.cashback_kaus_units, r.ecosystem_bonus_kaus_units, r.cashback_bps) == (35 * K, 7 * K, 350)
    other = compute_rewards(1_000 * K, PayerTier.SILVER, "AURA_SYDNEY", rates)  # not changed: its default
    assert (other.cashback_kaus_units, other.ecosystem_bonus_kaus_units) == (20 * K, 4 * K)
    assert compute_rewards(1_000 * K, PayerTier.GOLD, None, parameters.reward_rates({GOLD: 0})).total_kaus_units == 0


def test_the_capture_carries_the_configured_cashback_and_the_result_reports_it() -> None:
    h = harness(cfg=b.configured(BridgeConfig(), {GOLD: 450}))
    r = result_of(h.run(payment(program="NOMAD_MONTHLY")))
    [post] = [e for e in h.effects if isinstance(e, PostHold)]
    debit = r.kaus_debited_units if isinstance(r, Settled) else 0
    cashback = debit * 450 // 10_000
    assert isinstance(r, Settled) and (r.cashback_kaus_units, r.ecosystem_bonus_kaus_units) == (
        cashback,
        cashback * 1_000 // 10_000,
    )
    assert [x.amount_units for x in post.rewards] == [cashback, cashback // 10]
    assert post.rewards[0].memo == "cashback GOLD 450 bps"


def test_the_slippage_limit_from_the_configuration_decides_and_sizes_the_hold() -> None:
    moved = fx_book("0.15045")  # 0.3 % above the quote: refused at the default 30 bps
    assert isinstance(result_of(harness(book=moved).run(payment())), Rejected)
    wider = b.configured(BridgeConfig(), {parameters.SLIPPAGE_LIMIT: 31})
    h = harness(book=moved, cfg=wider)
    r = result_of(h.run(payment()))
    assert isinstance(r, Settled) and r.rate == D("0.15045")
    narrower = b.configured(BridgeConfig(), {parameters.SLIPPAGE_LIMIT: 10})
    assert isinstance(result_of(harness(book=fx_book("0.1497")).run(payment())), Settled)  # 0.2 %: within 30 bps
    r = result_of(harness(book=fx_book("0.1497"), cfg=narrower).run(payment()))  # 0.2 % below: over 10 bps
    assert isinstance(r, Rejected) and r.reason_code is ReasonCode.SLIPPAGE
    begun_wide = b.begin(payment(), 10_000 * K, h.clock.now(), wider)
    begun_default = b.begin(payment(), 10_000 * K, h.clock.now(), BridgeConfig())
    assert begun_wide.tx.hold_units > begun_default.tx.hold_units  # the hold covers the worst rate accepted


class Parameters:
    """What ParameterListener.values_now gives the runner: a new mapping on each change."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def __call__(self) -> dict[str, int]:
        return self.values


def test_the_runner_applies_a_change_to_payments_begun_after_it_and_not_to_one_under_way() -> None:
    params = Parameters()
    ledger = RunnerLedger(balances={PAYER: 10_000 * K})
    stripe = Adapter()
    under_way = asyncio.Event()
    release = asyncio.Event()
    original_payout = stripe.payout

    async def slow_payout(intent: b.PayoutIntent) -> b.PayoutOutcome:
        if intent.bridge_tx_id == "BRIDGE-card-before":
            under_way.set()
            await release.wait()
        return await original_payout(intent)

    stripe.payout = slow_payout  # type: ignore[method-assign]

    async def go() -> tuple[b.Result, b.Result]:
        cfg = BridgeConfig(enabled_rails=frozenset({Rail.STRIPE_INSTANT}))
        book = fx_book()
        clock = harness().clock
        adapters: dict[Provider, Any] = {Provider.STRIPE: stripe}
        r = BridgeRunner(
            ledger=ledger, adapters=adapters, fx_book=lambda: book, cfg=cfg, clock=clock, parameters=params
        )
        before = await r.submit(payment("card-before", payer="payer-before"))
        await under_way.wait()  # at its provider, begun with the defaults
        params.values = {GOLD: 500}  # the change is read now
        after = await r.settle(payment("card-after"))
        release.set()
        return await before, after

    ledger.balances["payer-before"] = 10_000 * K
    before, after = asyncio.run(go())
    assert isinstance(before, Settled) and isinstance(after, Settled)
    assert before.cashback_kaus_units == before.kaus_debited_units * 300 // 10_000  # the old rate, to its end
    assert after.cashback_kaus_units == after.kaus_debited_units * 500 // 10_000
    cashbacks = {t: ledger.balances.get(t, 0) for t in ("payer-before", PAYER)}
    assert cashbacks["payer-before"] == 10_000 * K - before.kaus_debited_units + before.cashback_kaus_units
    assert cashbacks[PAYER] == 10_000 * K - after.kaus_debited_units + after.cashback_kaus_units
