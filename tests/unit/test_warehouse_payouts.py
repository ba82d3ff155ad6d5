"""Holders' auto-payouts in the warehouse (contract 1.2.0): the bridge executes them, so a payout is one bridge
settlement with its payout_id, tied out on the ledger under reference kind PAYOUT (legs HOLD, CAPTURE, RELEASE)
and matched against the provider's report like a card payment; payouts.results is the auto-payout service's
derived copy, kept for analysts and checked against the settlement, never counted a second time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from contracts import models as m
from contracts import topics as t
from contracts.bridge_codec import quote_of_rate, result_json
from devtools.fx_feed import fx_quotes
from devtools.recon_data import GeneratorConfig, generate_period
from domain.bridge import (
    BridgeConfig,
    CardPayment,
    HolderPayout,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
    Rejected,
    Result,
    Settled,
)
from domain.cashback import PayerTier
from domain.fx import FxBook
from domain.ledger import Leg, SettlementKind
from domain.money import Currency
from domain.rails import RAILS, Provider, Rail, Region, payout_region
from streams.bridge.ledger_client import KafkaHoldLedger
from streams.bridge.runner import BridgeRunner
from tests.unit.test_bridge_ledger_references import REWARD_ACCOUNTS, LedgerWire, Record, funded_ledger
from warehouse import quality
from warehouse.db import connect, query, run_sql_file
from warehouse.snapshot_loader import SNAPSHOT_TOPICS, SourceRecord, land_records
from warehouse.sqlrunner import build_models, init_schema

DAY = date(2026, 11, 1)
CUTOFF = datetime(2026, 11, 2, tzinfo=UTC)
GRACE = timedelta(minutes=30)
BREAKS = ("difference_kaus_units", "settlements_not_tied", "settlements_without_ledger", "orphan_ledger_movements")
Events = dict[str, list[Any]]


@pytest.fixture
def con() -> Iterator[Any]:
    c = connect()
    init_schema(c)
    yield c
    c.close()


@pytest.fixture(scope="module")
def events() -> Events:
    """One generated day: card payments, holders' payouts (two of them declined), trades; no injected break."""
    config = GeneratorConfig(
        settlements_per_day=80, breaks_per_class=0, batches_per_day=1, trades_per_day=20, failed_payouts_per_day=2
    )
    return generate_period(5, DAY, 1, config).events[DAY]


def land(con: Any, events: Events) -> None:
    offsets: dict[str, int] = {}
    batch = []
    for name, values in events.items():
        for value in values:
            offsets[name] = offsets.get(name, -1) + 1
            batch.append(SourceRecord(name, 0, offsets[name], t.TOPICS[name].encode(value)))
    stats = land_records(con, batch)
    assert not stats.rejected, stats.rejected
    build_models(con)


def tieout(con: Any, cutoff: datetime = CUTOFF) -> list[dict[str, Any]]:
    sql = "SELECT * FROM mart_ledger_tieout_as_of($c, $g) ORDER BY day, currency"
    return query(con, sql, {"c": cutoff, "g": GRACE}).to_dicts()


def total(rows: list[dict[str, Any]], column: str) -> int:
    return sum(r[column] for r in rows)


def payouts(events: Events) -> list[m.BridgeSettlementCompleted]:
    return [e for e in events[t.BRIDGE_SETTLEMENTS_COMPLETED.name] if e.payout_id is not None]


def payout_id(e: m.BridgeSettlementCompleted) -> str:
    assert e.payout_id is not None
    return e.payout_id


def changed(events: Events, topic: t.Topic, match: Any, **update: Any) -> Events:
    """The events, the ones of ``topic`` for which ``match`` holds changed (or dropped when ``update`` is empty)."""
    out = dict(events)
    out[topic.name] = [(e.model_copy(update=update) if update else None) if match(e) else e for e in events[topic.name]]
    out[topic.name] = [e for e in out[topic.name] if e is not None]
    return out


def checks(con: Any, suite: str) -> dict[str, bool]:
    return {r.target: r.success for r in quality.run_checks(con, DAY, GRACE) if r.suite == suite}


def test_the_generator_writes_payouts_as_the_platform_executes_them(events: Events) -> None:
    paid = payouts(events)
    assert len(paid) >= 5
    assert all(e.request_id == e.payout_id and e.cashback_kaus_units == e.ecosystem_bonus_kaus_units == 0 for e in paid)
    assert {RAILS[e.rail].provider.value for e in paid} <= {"PAYPAL", "STRIPE", "WISE", "TOSS"}
    results = {r.payout_id: r for r in events[t.PAYOUT_RESULTS.name]}
    for e in paid:
        r = results[e.payout_id]
        assert (r.status, r.bridge_tx_id, r.kaus_debited_units, r.amount_minor, r.rail) == (
            m.PayoutStatus.PAID, e.bridge_tx_id, e.kaus_debited_units, e.amount_minor, e.rail
        )  # fmt: skip
    legs = {(tr.reference.kind, tr.reference.leg) for tr in events[t.LEDGER_TRANSFERS.name] if tr.reference}
    assert {(SettlementKind.PAYOUT, leg) for leg in (Leg.HOLD, Leg.CAPTURE, Leg.RELEASE)} <= legs
    assert not any(leg is Leg.PAYOUT for _, leg in legs)  # the retired leg


def test_a_payout_is_one_settlement_of_its_own_kind_and_ties_out(con: Any, events: Events) -> None:
    land(con, events)
    paid = payouts(events)
    ids = sorted(payout_id(e) for e in paid)
    facts = query(con, "SELECT settlement_id, kind, status, provider, counterparty FROM fct_settlements"
                       " WHERE settlement_id IN (SELECT settlement_id FROM stg_payouts)").to_dicts()  # fmt: skip
    assert sorted(f["settlement_id"] for f in facts if f["status"] == "completed") == ids  # each once
    assert {f["kind"] for f in facts} == {"payout"} and len(facts) == len(ids) + 2  # and the two declined
    by_id = {e.payout_id: e for e in paid}
    for f in facts:
        if f["status"] == "completed":
            e = by_id[f["settlement_id"]]
            assert (f["provider"], f["counterparty"]) == (RAILS[e.rail].provider.value, e.payer_account_id)
    assert (
        query(con, "SELECT count(*) FROM fct_settlements WHERE kind = 'bridge'").item()
        == len(events[t.BRIDGE_SETTLEMENTS_COMPLETED.name])
        - len(paid)
        + len(events[t.BRIDGE_SETTLEMENTS_FAILED.name])
        - 2
    )
    rows = tieout(con)
    assert all(r[c] == 0 for r in rows for c in BREAKS), rows
    assert total(rows, "open_holds") == total(rows, "in_flight_movements") == 0
    assert total(rows, "payouts") == len(paid)
    assert total(rows, "payout_kaus_units") == sum(e.kaus_debited_units for e in paid)
    per_currency = {r["currency"]: r["payout_kaus_units"] for r in rows if r["payouts"]}
    assert per_currency == {
        c: sum(e.kaus_debited_units for e in paid if e.currency.value == c) for c in {e.currency.value for e in paid}
    }
    assert (
        total(rows, "settlements")
        == query(con, "SELECT count(*) FROM fct_settlements WHERE status = 'completed'").item()
    )
    assert checks(con, "ledger_tieout") == dict.fromkeys(BREAKS, True)
    assert checks(con, "payout_results") == {"agrees": True}


def test_the_matching_takes_each_payout_once_with_its_rails_provider(con: Any, events: Events) -> None:
    land(con, events)
    params = {"recon_date": DAY, "carry_start": DAY - timedelta(days=7), "ledger_breaks": ["capture_refused"]}
    inputs = run_sql_file(con, "recon/inputs_settlements.sql", params)
    assert inputs is not None
    paid = {payout_id(e): e for e in payouts(events)}
    taken = inputs.filter(inputs["settlement_id"].is_in(list(paid))).to_dicts()
    assert sorted(r["settlement_id"] for r in taken) == sorted(paid)
    assert all(r["provider"] == RAILS[paid[r["settlement_id"]].rail].provider.value for r in taken)
    assert inputs["settlement_id"].is_unique().all()


def test_a_declined_payout_releases_its_hold_and_breaks_nothing(con: Any, events: Events) -> None:
    land(con, events)
    failed = query(con, "SELECT settlement_id, status, reason_code FROM stg_payouts WHERE status = 'failed'").to_dicts()
    assert len(failed) == 2 and {f["reason_code"] for f in failed} == {"PAYOUT_FAILED"}
    released = query(
        con,
        "SELECT settlement_ref, list_sort(list(leg)) AS legs FROM stg_ledger_transfers"
        " WHERE settlement_kind = 'PAYOUT' AND settlement_ref IN (SELECT settlement_id FROM stg_payouts"
        " WHERE status = 'failed') GROUP BY ALL",
    ).to_dicts()
    assert sorted(r["legs"] for r in released) == [["HOLD", "RELEASE"]] * 2
    rows = tieout(con)
    assert all(r[c] == 0 for r in rows for c in BREAKS) and total(rows, "open_holds") == 0


def test_a_payout_hold_open_at_the_cut_off_is_reported_not_broken(con: Any, events: Events) -> None:
    """The bridge held the holder's K-AUS, the provider has not answered by the cut-off: no settlement yet."""
    lost = payouts(events)[0]
    gone = changed(events, t.BRIDGE_SETTLEMENTS_COMPLETED, lambda e: e.request_id == lost.payout_id)
    gone = changed(gone, t.PAYOUT_RESULTS, lambda e: e.payout_id == lost.payout_id)
    gone = changed(gone, t.LEDGER_TRANSFERS, lambda e: e.transfer_id == f"{lost.bridge_tx_id}:post")
    land(con, gone)
    rows = tieout(con)
    assert all(r[c] == 0 for r in rows for c in BREAKS), rows
    [hold] = query(con, "SELECT * FROM mart_ledger_open_holds_as_of($c)", {"c": CUTOFF}).to_dicts()
    assert (hold["settlement_kind"], hold["settlement_ref"], hold["held_kaus_units"]) == (
        "PAYOUT", lost.payout_id, lost.kaus_debited_units
    )  # fmt: skip
    assert total(rows, "open_holds") == 1


@pytest.mark.parametrize(
    "reference",
    [
        pytest.param(lambda e: (SettlementKind.PAYOUT, e.payout_id, Leg.PAYOUT), id="retired-PAYOUT-leg"),
        pytest.param(lambda e: (SettlementKind.CARD_PAYMENT, e.bridge_tx_id, Leg.CAPTURE), id="as-a-card-payment"),
    ],
)
def test_a_payout_captured_under_another_reference_is_a_break(con: Any, events: Events, reference: Any) -> None:
    """The old conventions (K-AUS on leg PAYOUT; the bridge's card-payment reference) tie out no payout."""
    e = payouts(events)[1]
    kind, ref, leg = reference(e)
    moved = changed(
        events,
        t.LEDGER_TRANSFERS,
        lambda tr: tr.transfer_id == f"{e.bridge_tx_id}:post",
        reference=m.LedgerReference(kind=kind, id=ref, leg=leg),
    )
    land(con, moved)
    rows = tieout(con)
    assert (total(rows, "settlements_without_ledger"), total(rows, "settlements_not_tied")) == (1, 1)
    assert (total(rows, "orphan_ledger_movements"), total(rows, "orphan_kaus_units")) == (1, e.kaus_debited_units)
    assert total(rows, "difference_kaus_units") == e.kaus_debited_units
    assert checks(con, "ledger_tieout") == dict.fromkeys(BREAKS, False)


def test_a_reward_on_a_payout_is_not_tied(con: Any, events: Events) -> None:
    """A payout earns no cashback: K-AUS moved as one is a leg its settlement (cashback 0) does not tie."""
    e = payouts(events)[2]
    cashback = m.LedgerTransfer(
        transfer_id=f"{e.bridge_tx_id}:cashback",
        debit_account_id="bridge:rewards",
        credit_account_id=e.payer_account_id,
        asset=m.LedgerAsset.KAUS,
        amount_units=7,
        reference=m.LedgerReference(kind=SettlementKind.PAYOUT, id=e.payout_id, leg=Leg.CASHBACK),
        occurred_at=e.completed_at,
    )
    land(con, {**events, t.LEDGER_TRANSFERS.name: [*events[t.LEDGER_TRANSFERS.name], cashback]})
    rows = tieout(con)
    assert (total(rows, "settlements_not_tied"), total(rows, "difference_kaus_units")) == (1, -7)


def test_a_trade_leg_outside_its_settlement_is_an_orphan_but_the_pool_accrual_is_not(con: Any, events: Events) -> None:
    trade = events[t.ENERGY_SETTLEMENTS.name][0]
    stray = m.LedgerTransfer(
        transfer_id=f"{trade.trade_id}/stray",
        debit_account_id=trade.buyer_account_id,
        credit_account_id="sys:fees",
        asset=m.LedgerAsset.KAUS,
        amount_units=11,
        reference=m.LedgerReference(kind=SettlementKind.TRADE, id=trade.trade_id, leg=Leg.BONUS),
        occurred_at=trade.settled_at,
    )
    land(con, events)
    assert total(tieout(con), "orphan_ledger_movements") == 0  # DIVIDEND_POOL legs of every trade: no settlement
    con.execute("DELETE FROM raw_events")
    land(con, {**events, t.LEDGER_TRANSFERS.name: [*events[t.LEDGER_TRANSFERS.name], stray]})
    rows = tieout(con)
    assert (total(rows, "orphan_ledger_movements"), total(rows, "orphan_kaus_units")) == (1, 11)


@pytest.mark.parametrize("how", ["other-kaus", "no-settlement", "other-status"])
def test_payout_results_that_disagree_with_the_bridge_are_a_warning(con: Any, events: Events, how: str) -> None:
    """The result is the service's copy: a disagreement is shown (warning); the tie-out, from the bridge, holds."""
    e = payouts(events)[3]
    if how == "other-kaus":
        bad = changed(events, t.PAYOUT_RESULTS, lambda r: r.payout_id == e.payout_id,
                      kaus_debited_units=e.kaus_debited_units + 1)  # fmt: skip
    elif how == "other-status":
        bad = changed(events, t.PAYOUT_RESULTS, lambda r: r.payout_id == e.payout_id, status=m.PayoutStatus.FAILED)
    else:
        ghost = next(r for r in events[t.PAYOUT_RESULTS.name] if r.payout_id == e.payout_id)
        ghost = ghost.model_copy(update={"payout_id": "PO-no-bridge-settlement"})
        bad = {**events, t.PAYOUT_RESULTS.name: [*events[t.PAYOUT_RESULTS.name], ghost]}
    land(con, bad)
    [result] = [r for r in quality.run_checks(con, DAY, GRACE) if r.suite == "payout_results"]
    assert (result.success, result.critical) == (False, False)
    assert checks(con, "ledger_tieout") == dict.fromkeys(BREAKS, True)
    assert (
        query(con, "SELECT count(*) FROM fct_settlements WHERE settlement_id = 'PO-no-bridge-settlement'").item() == 0
    )


# --------------------------------------------------------------------------- the real bridge


class HolderStripe:
    """Stripe paying holders' connected accounts at once, and declining the one account it does not know."""

    provider = Provider.STRIPE

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        payout = intent.payment.payout
        if payout is not None and payout.payout_account == "acct_unknown":
            return PayoutOutcome(PayoutStatus.DECLINED, error_code="account_invalid", http_status=400)
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"po_{intent.idempotency_key}")

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"po_{intent.idempotency_key}", replayed=True)


def bridge_payouts_day(holders: list[str]) -> tuple[list[Result], list[Record]]:
    """Three holders' payouts (the last one declined by Stripe) and two card payments, settled by the real bridge
    runner on a real ledger partition; the records both wrote."""
    wire = LedgerWire(funded_ledger(holders))
    now = datetime.now(UTC)
    book = FxBook().with_quotes([quote_of_rate(q) for q in fx_quotes(now.date(), 0, now)])
    rate = book.combined_rate(Currency.USD, time.time_ns() // 1_000_000).rate
    now_ms = time.time_ns() // 1_000_000
    region = payout_region(Provider.STRIPE, Currency.USD)
    assert region is not None
    accounts = ["acct_holder0", "acct_holder1", "acct_unknown"]
    requests = [
        CardPayment(f"rule-{i}:T1", holder, holder, None, 1_000, Currency.USD, region, PayerTier.BRONZE, rate, now_ms,
                    payout=HolderPayout(f"rule-{i}", Provider.STRIPE, account, 40_000_000 + 1_001 * i))
        for i, (holder, account) in enumerate(zip(holders, accounts, strict=True))
    ]  # fmt: skip
    requests += [
        CardPayment(f"card-{i}", holders[i], f"merchant-{i}", None, 1_500 + i, Currency.USD, Region.US,
                    PayerTier.GOLD, rate, now_ms)
        for i in range(2)
    ]  # fmt: skip
    kafka_ledger = KafkaHoldLedger(wire, wire, REWARD_ACCOUNTS, timeout_s=5)  # type: ignore[arg-type]

    async def settle_all() -> list[Result]:
        runner = BridgeRunner(
            ledger=kafka_ledger,
            adapters={Provider.STRIPE: HolderStripe()},  # type: ignore[dict-item]
            fx_book=lambda: book,
            cfg=BridgeConfig(enabled_rails=frozenset({Rail.STRIPE_INSTANT})),
        )
        return [await runner.settle(p) for p in requests]

    results = asyncio.run(settle_all())
    records = list(wire.records)
    for result in results:
        topic = t.BRIDGE_SETTLEMENTS_COMPLETED if isinstance(result, Settled) else t.BRIDGE_SETTLEMENTS_FAILED
        records.append((topic.name, result.request_id.encode(), orjson.dumps(result_json(result))))
    return results, records


def test_payouts_the_real_bridge_executes_tie_out_once_each(con: Any) -> None:
    results, records = bridge_payouts_day(["holder-0", "holder-1", "holder-2"])
    by_id = {r.request_id: r for r in results}
    paid = [by_id["rule-0:T1"], by_id["rule-1:T1"]]
    assert all(isinstance(r, Settled) and r.payout_id == r.request_id for r in paid), results
    assert isinstance(by_id["rule-2:T1"], Rejected) and by_id["rule-2:T1"].payout_id == "rule-2:T1"
    snapshot = {topic.name for topic in SNAPSHOT_TOPICS}
    batch = [SourceRecord(name, 0, i, value) for i, (name, _, value) in enumerate(records) if name in snapshot]
    assert not land_records(con, batch).rejected
    build_models(con)
    rows = query(con, "SELECT * FROM mart_ledger_tieout").to_dicts()
    assert all(r[c] == 0 for r in rows for c in BREAKS) and total(rows, "open_holds") == 0, rows
    [usd] = rows
    assert (usd["settlements"], usd["payouts"]) == (4, 2)  # two card payments, two payouts
    assert usd["payout_kaus_units"] == sum(r.kaus_debited_units for r in paid if isinstance(r, Settled))
    legs = query(con, "SELECT settlement_ref, list_sort(list(leg)) AS legs FROM stg_ledger_transfers"
                      " WHERE settlement_kind = 'PAYOUT' GROUP BY ALL ORDER BY ALL").rows()  # fmt: skip
    assert legs == [("rule-0:T1", ["CAPTURE", "HOLD"]), ("rule-1:T1", ["CAPTURE", "HOLD"]),
                    ("rule-2:T1", ["HOLD", "RELEASE"])]  # fmt: skip
    kinds = dict(query(con, "SELECT settlement_id, kind || ' ' || status FROM fct_settlements").rows())
    assert kinds == {"rule-0:T1": "payout completed", "rule-1:T1": "payout completed", "rule-2:T1": "payout failed",
                     "card-0": "bridge completed", "card-1": "bridge completed"}  # fmt: skip
