"""The warehouse counts K-AUS only: a trade's carbon mint (milli-credits, same settlement reference) is not money."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import models as m
from contracts import topics as t
from devtools.recon_data import GeneratorConfig, generate_period
from domain.ledger import Leg, SettlementKind
from warehouse.db import connect, query
from warehouse.snapshot_loader import SourceRecord, land_records
from warehouse.sqlrunner import build_models, init_schema

AT = datetime(2026, 11, 1, 9, tzinfo=UTC)
NOTIONAL = 810_000


@pytest.fixture
def con() -> Iterator[Any]:
    c = connect()
    init_schema(c)
    yield c
    c.close()


def transfer(transfer_id: str, debit: str, credit: str, asset: m.LedgerAsset, units: int, leg: Leg) -> m.LedgerTransfer:
    return m.LedgerTransfer(
        transfer_id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        asset=asset,
        amount_units=units,
        reason="trade:TR-1",
        reference=m.LedgerReference(kind=SettlementKind.TRADE, id="TR-1", leg=leg),
        occurred_at=AT,
    )


def land(con: Any, messages: list[tuple[t.Topic, BaseModel]]) -> None:
    records = [SourceRecord(topic.name, 0, offset, topic.encode(msg)) for offset, (topic, msg) in enumerate(messages)]
    stats = land_records(con, records)
    assert not stats.rejected, stats.rejected
    build_models(con)


def test_a_carbon_mint_is_left_out_of_the_tie_out_and_the_balances(con: Any) -> None:
    settled = m.TradeSettled(
        trade_id="TR-1",
        market_id="2026-11-01T09:00Z/KR-SEOUL",
        buyer_account_id="buyer",
        seller_account_id="seller",
        notional_kaus_units=NOTIONAL,
        fee_kaus_units=0,
        seller_net_kaus_units=NOTIONAL,
        delivered_wh=5_400,
        carbon_credits_minted_milli=5,
        settled_at=AT,
    )
    land(
        con,
        [
            (t.ENERGY_SETTLEMENTS, settled),
            (t.LEDGER_TRANSFERS, transfer("TR-1/pay", "buyer", "seller", m.LedgerAsset.KAUS, NOTIONAL, Leg.PAYMENT)),
            (
                t.LEDGER_TRANSFERS,
                transfer("TR-1/carbon", "sys:carbon", "carbon:seller", m.LedgerAsset.CARBON_MILLICREDIT, 5, Leg.CARBON),
            ),
        ],
    )
    staged = query(con, "SELECT transfer_id, asset, amount_units FROM stg_ledger_transfers ORDER BY transfer_id")
    assert staged.rows() == [("TR-1/carbon", "CARBON_MILLICREDIT", 5), ("TR-1/pay", "KAUS", NOTIONAL)]
    tieout = query(con, "SELECT * FROM mart_ledger_tieout").to_dicts()
    assert [(r["currency"], r["ledger_kaus_units"], r["difference_kaus_units"]) for r in tieout] == [
        ("KAUS", NOTIONAL, 0)
    ]
    assert tieout[0]["settlements_without_ledger"] == 0 and tieout[0]["orphan_ledger_movements"] == 0
    balances = query(
        con,
        "SELECT account_id, balance_kaus_units FROM mart_ledger_balances_as_of(TIMESTAMPTZ '2026-11-02 00:00:00+00')"
        " ORDER BY account_id",
    )
    assert balances.rows() == [("buyer", -NOTIONAL), ("seller", NOTIONAL)]


def test_the_generated_trades_mint_carbon_and_still_tie_out(con: Any) -> None:
    day = date(2026, 11, 1)
    config = GeneratorConfig(settlements_per_day=5, breaks_per_class=0, batches_per_day=0, trades_per_day=30)
    events = generate_period(7, day, 1, config).events[day]
    transfers = [x for x in events[t.LEDGER_TRANSFERS.name] if x.reason.startswith("trade:")]  # not bridge/payout
    assets = {x.asset for x in transfers}
    assert assets == {m.LedgerAsset.KAUS, m.LedgerAsset.CARBON_MILLICREDIT}, assets
    land(
        con,
        [(t.LEDGER_TRANSFERS, x) for x in transfers]
        + [(t.ENERGY_SETTLEMENTS, x) for x in events[t.ENERGY_SETTLEMENTS.name]],
    )
    trades = query(con, "SELECT * FROM mart_ledger_tieout WHERE currency = 'KAUS' OR currency = 'UNKNOWN'").to_dicts()
    assert [
        (r["currency"], r["settlements"], r["difference_kaus_units"], r["orphan_ledger_movements"]) for r in trades
    ] == [("KAUS", 30, 0, 0)]
