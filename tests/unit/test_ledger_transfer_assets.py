"""Each `ledger.transfers` record names the asset it moves: a reader must not guess it from account names."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import models as m
from contracts.topics import LEDGER_TRANSFERS
from domain.trade_settlement import EnergySource
from streams.p2p.ledger import LedgerPartition

AT = datetime(2026, 11, 24, 10, tzinfo=UTC)


def settled_transfers(source: EnergySource | None) -> list[m.LedgerTransfer]:
    ledger = LedgerPartition()
    ledger.apply(0, m.Deposit(command_id="dep-b", account_id="buyer", amount_kaus_units=10**9, occurred_at=AT))
    trade = m.Trade(
        trade_id="t1",
        market_id="2026-11-24T10:00Z/KR-SEOUL",
        sequence=1,
        buy_order_id="o-b",
        sell_order_id="o-s",
        buyer_account_id="buyer",
        seller_account_id="seller",
        aggressor_side=m.Side.BUY,
        price_units_per_kwh=150_000,
        quantity_wh=5_400,  # 5 milli-credits for a renewable seller (1 per 1,000 Wh), 400 Wh carried
        notional_kaus_units=810_000,
        executed_at=AT,
    )
    out = ledger.apply(1, m.SettleTrade(command_id="t1", trade=trade, seller_energy_source=source))
    # As a consumer reads them: the bytes on the wire, decoded with the contract.
    return [LEDGER_TRANSFERS.decode(LEDGER_TRANSFERS.encode(r)) for topic, r in out if topic is LEDGER_TRANSFERS]


def test_the_carbon_mint_is_written_in_milli_credits_and_the_money_legs_in_k_aus() -> None:
    records = settled_transfers(EnergySource.SOLAR)
    assert [(t.transfer_id, t.debit_account_id, t.credit_account_id, t.asset, t.amount_units) for t in records] == [
        ("t1/pay", "buyer", "seller", "KAUS", 810_000),
        ("t1/fee", "seller", "sys:fees", "KAUS", 2_025),
        ("t1/dividend", "sys:fees", "sys:dividends", "KAUS", 1_012),
        ("t1/carbon", "sys:carbon", "carbon:seller", "CARBON_MILLICREDIT", 5),
    ]
    carbon = LEDGER_TRANSFERS.encode(records[-1])
    assert b'"asset":"CARBON_MILLICREDIT","amount_units":5,' in carbon


def test_a_grid_seller_gets_no_carbon_leg() -> None:
    records = settled_transfers(None)
    assert [(t.transfer_id, t.asset) for t in records] == [
        ("t1/pay", "KAUS"),
        ("t1/fee", "KAUS"),
        ("t1/dividend", "KAUS"),
    ]


def test_a_deposit_is_a_k_aus_mint() -> None:
    out = LedgerPartition().apply(
        0, m.Deposit(command_id="dep-1", account_id="acct", amount_kaus_units=7, occurred_at=AT)
    )
    [(_, record)] = out
    assert (record.debit_account_id, record.asset, record.amount_units) == ("sys:mint", "KAUS", 7)
