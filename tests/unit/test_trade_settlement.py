"""Trade settlement: legs, fee/carbon/dividend rules with carried remainders, idempotent replays."""

from __future__ import annotations

import json
import random
from itertools import count

from devtools.order_flow import demo_accounts, demo_markets, generate_orders
from domain.ledger import Asset, Ledger, LedgerCode, Leg, Transfer, TransferStatus
from domain.order_book import OrderBookEngine, Side, Trade
from domain.trade_settlement import (
    SYS_CARBON,
    SYS_DIVIDENDS,
    SYS_FEES,
    SYS_MINT,
    AuditAction,
    DividendSource,
    EnergySource,
    SettlementCode,
    SettlementStatus,
    TradeSettler,
    carbon_account_id,
    trade_leg,
)

M = "2026-11-24T10:00Z/KR-SEOUL"
_seq = count(1)


def trade(price: int = 150_000, qty: int = 1_000, buyer: str = "buyer", seller: str = "seller") -> Trade:
    seq = next(_seq)
    return Trade(
        f"{M}:{seq}", M, seq, seq, f"b{seq}", f"s{seq}", buyer, seller, price, qty, price * qty // 1000, Side.BUY
    )


def settler(*funded: str, amount: int = 10**12, check_every_op: bool = True) -> TradeSettler:
    s = TradeSettler(Ledger(check_every_op=check_every_op))
    for account in funded:
        s.ledger.open_account(account)
        s.ledger.apply(Transfer(f"deposit:{account}", SYS_MINT, account, amount, "deposit"), 0)
    return s


def test_settles_payment_fee_and_dividend_pool() -> None:
    s = settler("buyer")
    t = trade(price=150_000, qty=1_000)  # 0.15 K-AUS/kWh * 1 kWh = 150_000 units
    out = s.settle(t, 100)
    assert out.status is SettlementStatus.SETTLED and out.code is None and not out.replayed
    assert (out.notional_units, out.fee_units, out.seller_net_units, out.dividend_pool_units) == (
        150_000,
        375,
        149_625,
        187,
    )
    lg = s.ledger
    assert lg.balance("buyer") == 10**12 - 150_000
    assert lg.balance("seller") == 149_625
    assert lg.balance(SYS_FEES) == 375 - 187 and lg.balance(SYS_DIVIDENDS) == 187
    assert lg.total_balance(Asset.KAUS) == 0
    assert [r.transfer_id for r in out.transfers] == [
        f"{t.trade_id}/pay",
        f"{t.trade_id}/fee",
        f"{t.trade_id}/dividend",
    ]
    assert all(r.status is TransferStatus.POSTED for r in out.transfers)
    assert out.delivery is not None and out.delivery.quantity_wh == 1_000 and out.delivery.buyer_account_id == "buyer"
    assert out.delivery.source is EnergySource.GRID_MIX and out.carbon_millicredits == 0
    actions = [a.action for a in out.audit]
    assert actions == [AuditAction.SETTLEMENT_EXECUTED, AuditAction.FEE_CHARGED, AuditAction.DIVIDEND_POOL_ACCRUED]
    executed = out.audit[0]
    assert (executed.transaction_id, executed.actor_account_id, executed.kaus_amount_units) == (
        t.trade_id,
        "buyer",
        150_000,
    )
    s.check_invariants()


def test_fee_remainders_are_carried_per_seller() -> None:
    s = settler("buyer")
    rng = random.Random(1)
    total_notional = {"s1": 0, "s2": 0}
    total_fee = {"s1": 0, "s2": 0}
    for _ in range(400):
        seller = rng.choice(["s1", "s2"])
        t = trade(price=rng.randint(1, 40) * 1_000, qty=rng.randint(1, 30) * 100, seller=seller)
        out = s.settle(t, 1)
        total_notional[seller] += out.notional_units
        total_fee[seller] += out.fee_units
    for seller in ("s1", "s2"):
        assert total_fee[seller] == total_notional[seller] * 25 // 10_000
        assert s.fee_carry(seller) == total_notional[seller] * 25 % 10_000
    s.check_invariants()


def test_carbon_fractional_accrual_is_never_lost() -> None:
    s = settler("buyer")
    s.register_seller_source("solar", EnergySource.SOLAR)
    rng = random.Random(2)
    total_wh = 0
    minted = 0
    for _ in range(500):
        qty = rng.randint(1, 17) * 100  # mostly well under 1 kWh
        out = s.settle(trade(qty=qty, seller="solar"), 1)
        total_wh += qty
        minted += out.carbon_millicredits
    assert minted == total_wh // 1_000  # the rule applied to the total
    assert s.carbon_carry_wh("solar") == total_wh % 1_000
    assert s.ledger.balance(carbon_account_id("solar")) == minted
    assert s.ledger.balance(SYS_CARBON) == -minted
    assert s.ledger.total_balance(Asset.CARBON_MILLICREDIT) == 0
    grid = s.settle(trade(qty=5_000, seller="grid-seller"), 2)
    assert grid.carbon_millicredits == 0 and not s.ledger.has_account(carbon_account_id("grid-seller"))


def test_carbon_minting_leg_and_audit() -> None:
    s = settler("buyer")
    s.register_seller_source("wind", EnergySource.WIND)
    t = trade(qty=2_500, seller="wind")
    out = s.settle(t, 7)
    assert out.carbon_millicredits == 2 and s.carbon_carry_wh("wind") == 500
    assert out.transfers[-1].transfer_id == f"{t.trade_id}/carbon"
    assert out.audit[-1].action is AuditAction.CARBON_CREDITS_MINTED
    assert dict(out.audit[-1].details)["carbon_millicredits"] == 2
    assert out.delivery is not None and out.delivery.source is EnergySource.WIND


def test_each_leg_is_named_as_the_ledger_code_it_was_posted_with() -> None:
    """The trade id itself contains '/' (a market id): the leg is the last part."""
    s = settler("buyer")
    s.register_seller_source("wind", EnergySource.WIND)
    t = trade(qty=2_500, seller="wind")
    out = s.settle(t, 7)
    named = []
    for r in out.transfers:
        command = s.ledger.command(r.transfer_id)
        assert isinstance(command, Transfer)
        named.append((trade_leg(r.transfer_id), command.code))
    assert named == [
        (Leg.PAYMENT, "trade.payment"),
        (Leg.FEE, "trade.fee"),
        (Leg.DIVIDEND_POOL, "dividend.pool"),
        (Leg.CARBON, "carbon.mint"),
    ]


def test_dividends_pro_rata_with_remainder_carried() -> None:
    s = settler("buyer")
    s.set_dividend_weight("node-a", DividendSource.ENERGY_NODE, 1)
    s.set_dividend_weight("node-b", DividendSource.ENERGY_NODE, 1)
    s.set_dividend_weight("staker", DividendSource.STAKING, 1)
    s.ledger.apply(Transfer("seed-pool", SYS_MINT, SYS_DIVIDENDS, 100, "test"), 0)
    d1 = s.declare_dividends("epoch-1", 10)
    assert d1.status is SettlementStatus.SETTLED
    assert [(d.account_id, d.source, d.amount_units) for d in d1.dividends] == [
        ("node-a", DividendSource.ENERGY_NODE, 33),
        ("node-b", DividendSource.ENERGY_NODE, 33),
        ("staker", DividendSource.STAKING, 33),
    ]
    assert (d1.pool_units, d1.distributed_units, d1.carried_units) == (100, 99, 1)
    assert s.ledger.balance(SYS_DIVIDENDS) == 1
    assert all(d.total_weight == 3 and d.pool_units == 100 and d.declared_at_ms == 10 for d in d1.dividends)
    assert [a.action for a in d1.audit] == [AuditAction.DIVIDEND_DECLARED] * 3
    s.ledger.apply(Transfer("more", SYS_MINT, SYS_DIVIDENDS, 200, "test"), 11)
    d2 = s.declare_dividends("epoch-2", 20)
    assert d2.pool_units == 201 and [d.amount_units for d in d2.dividends] == [67, 67, 67] and d2.carried_units == 0
    replay = s.declare_dividends("epoch-1", 30)
    assert replay.replayed and replay.dividends == d1.dividends and replay.transfers == d1.transfers
    assert s.ledger.balance("node-a") == 100


def test_dividend_pool_fed_by_fees_with_global_carry() -> None:
    s = settler("buyer")
    s.set_dividend_weight("staker", DividendSource.STAKING, 5)
    fees = 0
    pool = 0
    for _ in range(300):
        out = s.settle(trade(price=1_000, qty=700), 1)  # notional 700, fee 1 or 2 with carry
        fees += out.fee_units
        pool += out.dividend_pool_units
    assert pool == fees * 5_000 // 10_000 and s.dividend_carry == fees * 5_000 % 10_000
    declared = s.declare_dividends("d", 2)
    assert declared.distributed_units == pool and s.ledger.balance("staker") == pool


def test_failed_settlement_changes_nothing_and_can_be_retried() -> None:
    s = settler()
    s.ledger.open_account("poor")
    s.register_seller_source("solar", EnergySource.SOLAR)
    t = trade(price=100_000, qty=900, buyer="poor", seller="solar")
    before = json.dumps(s.to_dict(), sort_keys=True)
    out = s.settle(t, 5)
    assert out.status is SettlementStatus.REJECTED and out.code is SettlementCode.LEDGER_REJECTED
    assert "INSUFFICIENT_FUNDS" in out.reason
    assert any(r.code is LedgerCode.INSUFFICIENT_FUNDS for r in out.transfers)
    assert out.audit[0].action is AuditAction.SETTLEMENT_REJECTED
    after = s.to_dict()
    assert after["fee_carry"] == json.loads(before)["fee_carry"] and s.carbon_carry_wh("solar") == 0
    assert not s.is_settled(t.trade_id)
    s.ledger.apply(Transfer("deposit", SYS_MINT, "poor", 90_000, "deposit"), 6)
    retried = s.settle(t, 7)
    assert retried.status is SettlementStatus.SETTLED and s.ledger.balance("poor") == 0
    assert s.carbon_carry_wh("solar") == 900


def test_replay_is_idempotent_and_conflicts_are_rejected() -> None:
    s = settler("buyer")
    t = trade()
    first = s.settle(t, 1)
    snapshot = json.dumps(s.ledger.to_dict(), sort_keys=True)
    again = s.settle(t, 2)
    assert again.replayed and again._replace(replayed=False) == first
    assert json.dumps(s.ledger.to_dict(), sort_keys=True) == snapshot
    conflict = s.settle(t._replace(quantity_wh=2_000, notional_units=t.price_units_per_kwh * 2), 3)
    assert conflict.status is SettlementStatus.REJECTED and conflict.code is SettlementCode.TRADE_ID_CONFLICT


def test_invalid_trades_are_rejected() -> None:
    s = settler("buyer")
    t = trade()
    for bad in (
        t._replace(notional_units=t.notional_units + 1),
        t._replace(seller_account_id="buyer"),
        t._replace(quantity_wh=0, notional_units=0),
        t._replace(trade_id=""),
    ):
        out = s.settle(bad, 1)
        assert out.status is SettlementStatus.REJECTED and out.code is SettlementCode.INVALID_TRADE, bad
    assert s.ledger.balance("buyer") == 10**12


def test_phase_timings_come_from_the_callers_clock() -> None:
    ticks = iter(range(0, 1_000, 10))
    out = settler("buyer").settle(trade(), 1, clock=lambda: next(ticks))
    assert [name for name, _ in out.phase_ns] == ["validate_and_build_legs", "ledger_batch", "records"]
    assert all(ns == 10 for _, ns in out.phase_ns)
    assert settler("buyer").settle(trade(), 1).phase_ns == ()


def test_snapshot_round_trip_then_replays_stay_idempotent() -> None:
    s = settler("buyer")
    s.register_seller_source("solar", EnergySource.SOLAR)
    s.set_dividend_weight("node", DividendSource.ENERGY_NODE, 3)
    trades = [trade(qty=q, seller="solar") for q in (300, 800, 1_200)]
    for t in trades:
        s.settle(t, 1)
    s.declare_dividends("e1", 2)
    text = json.dumps(s.to_dict(), sort_keys=True)
    restored = TradeSettler.from_dict(json.loads(text))
    assert json.dumps(restored.to_dict(), sort_keys=True) == text
    assert restored.settle(trades[0], 9).replayed
    assert restored.declare_dividends("e1", 9).replayed
    nxt = trade(qty=700, seller="solar")
    assert restored.settle(nxt, 10) == s.settle(nxt, 10)
    restored.check_invariants()


def test_end_to_end_from_generated_order_flow() -> None:
    accounts = demo_accounts(10)
    s = settler(*accounts, amount=10**13, check_every_op=False)  # O(n) check per op: done below instead
    for i, account in enumerate(accounts):
        if i % 2:
            s.register_seller_source(account, EnergySource.SOLAR)
        s.set_dividend_weight(account, DividendSource.STAKING if i % 3 else DividendSource.ENERGY_NODE, i + 1)
    engine = OrderBookEngine()
    settled = 0
    for cmd in generate_orders(21, 4_000, demo_markets(3), accounts):
        for event in engine.handle(cmd):
            if type(event) is Trade:
                assert s.settle(event, event.at_ms).status is SettlementStatus.SETTLED
                settled += 1
                if settled % 200 == 0:
                    s.check_invariants()
    assert settled > 100
    s.declare_dividends("epoch", 10**15)
    s.check_invariants()
    assert s.ledger.total_balance(Asset.KAUS) == 0
