"""The ledger tie-out on what the services really write: a P2P day and a bridge day on one real ledger partition.

Settlements and ledger movements are linked by the movements' typed reference and compared leg by leg: they tie
out exactly; a hold open at the cut-off and a capture whose settlement comes after it are reported, not breaks;
a capture that differs from its settlement's `kaus_debited_units`, or a movement with no reference, is a break
(the critical data-quality check fails).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import BRIDGE_SETTLEMENTS_COMPLETED, ENERGY_ORDERS, LEDGER_COMMANDS, LEDGER_TRANSFERS, TOPICS
from devtools.order_flow import generate_orders
from domain.bridge import Settled
from domain.ledger import Leg, Reference, SettlementKind
from streams.kafka import ingress
from streams.kafka.faust_app import Outbox
from streams.p2p.ledger import LedgerPartition
from streams.p2p.matching import MatchingPartition, to_message
from tests.unit.test_bridge_ledger_references import BridgeDay, Record, run_bridge_day
from tests.unit.test_services import ACCOUNTS, MARKETS
from warehouse import quality
from warehouse.db import connect, query
from warehouse.snapshot_loader import SNAPSHOT_TOPICS, SourceRecord, land_records
from warehouse.sqlrunner import build_models, init_schema

SNAPSHOT = {topic.name for topic in SNAPSHOT_TOPICS}
TIEOUT_BREAKS = (
    "difference_kaus_units",
    "settlements_not_tied",
    "settlements_without_ledger",
    "orphan_ledger_movements",
)


def p2p_day(day: BridgeDay, orders: int = 1_500) -> list[Record]:
    """A seeded order flow matched and settled on the bridge day's ledger (two accounts cannot pay: rejected)."""
    matching, ledger = MatchingPartition(0), day.ledger
    records: list[Record] = []
    for offset, order in enumerate(generate_orders(11, orders, MARKETS, ACCOUNTS)):
        message = to_message(order)
        if (
            isinstance(message, m.SubmitOrder)
            and message.side is m.Side.SELL
            and ACCOUNTS.index(message.account_id) % 3
        ):
            message = message.model_copy(update={"energy_source": m.EnergySource.SOLAR})  # carbon credits too
        decoded = ingress.validate(ENERGY_ORDERS, ENERGY_ORDERS.key_of(message), ENERGY_ORDERS.encode(message))
        assert not isinstance(decoded, ingress.Rejected), decoded
        for name, key, value in Outbox.encode_all(matching.apply(offset, decoded)):
            if name == LEDGER_COMMANDS.name:
                command = ingress.validate(LEDGER_COMMANDS, key, value)
                assert not isinstance(command, ingress.Rejected), command
                records.extend(Outbox.encode_all(ledger.apply(ledger.next_offset, command)))
    return records


@pytest.fixture(scope="module")
def platform_day() -> BridgeDay:
    """Card payments, then P2P trades, on one ledger; every account funded but the last two (barely)."""
    ledger = LedgerPartition()
    at = datetime.now(UTC)
    deposits: list[Record] = []
    for i, account in enumerate(ACCOUNTS):
        units = 10**12 if i < len(ACCOUNTS) - 2 else 50_000
        deposit = m.Deposit(command_id=f"dep-{account}", account_id=account, amount_kaus_units=units, occurred_at=at)
        deposits.extend(Outbox.encode_all(ledger.apply(ledger.next_offset, deposit)))
    day = run_bridge_day(ledger, ACCOUNTS[:4], n=12)
    day.records[:0] = deposits
    day.records.extend(p2p_day(day))
    ledger.ledger.check_invariants()
    return day


@pytest.fixture
def con() -> Iterator[Any]:
    c = connect()
    init_schema(c)
    yield c
    c.close()


def land(con: Any, records: list[Record]) -> None:
    offsets: dict[str, int] = {}
    batch = []
    for name, _key, value in records:
        if name in SNAPSHOT:
            offsets[name] = offsets.get(name, -1) + 1
            batch.append(SourceRecord(name, 0, offsets[name], value))
    stats = land_records(con, batch)
    assert not stats.rejected, stats.rejected
    build_models(con)


def tieout(con: Any, cutoff: datetime | None = None, grace: timedelta = timedelta(0)) -> list[dict[str, Any]]:
    if cutoff is None:
        return query(con, "SELECT * FROM mart_ledger_tieout ORDER BY day, currency").to_dicts()
    sql = "SELECT * FROM mart_ledger_tieout_as_of($cutoff, $grace) ORDER BY day, currency"
    return query(con, sql, {"cutoff": cutoff, "grace": grace}).to_dicts()


def total(rows: list[dict[str, Any]], column: str) -> int:
    return sum(r[column] for r in rows)


def with_transfer(records: list[Record], transfer_id: str, **update: Any) -> list[Record]:
    """The records, one `ledger.transfers` record changed (as if the ledger had written it so)."""
    out = []
    for name, key, value in records:
        if name == LEDGER_TRANSFERS.name and key == transfer_id.encode():
            changed = LEDGER_TRANSFERS.decode(value).model_copy(update=update)
            value = LEDGER_TRANSFERS.encode(changed)
        out.append((name, key, value))
    return out


def settled(day: BridgeDay) -> list[Settled]:
    return [r for r in day.results if isinstance(r, Settled)]


def test_a_real_p2p_and_bridge_day_ties_out_exactly(platform_day: BridgeDay, con: Any) -> None:
    land(con, platform_day.records)
    rows = tieout(con)
    assert all(r[c] == 0 for r in rows for c in TIEOUT_BREAKS), rows
    by_currency = {r["currency"]: r for r in rows}
    assert set(by_currency) == {"KAUS", "USD"}, rows  # trades in K-AUS, card payments in their currency
    trades = query(con, "SELECT status, count(*) AS n FROM stg_trade_settlements GROUP BY status").rows()
    assert dict(trades)["completed"] > 100 and dict(trades)["failed"] > 0  # rejected trades moved nothing
    assert by_currency["KAUS"]["settlements"] == dict(trades)["completed"]
    cards = settled(platform_day)
    assert by_currency["USD"]["settlements"] == len(cards) == 12
    # like with like: the capture, cashback and bonus of every payment; the payment and fee of every trade
    card_units = sum(c.kaus_debited_units + c.cashback_kaus_units + c.ecosystem_bonus_kaus_units for c in cards)
    assert by_currency["USD"]["ledger_kaus_units"] == card_units
    trade_units = query(con, "SELECT sum(notional_kaus_units + fee_kaus_units) FROM stg_trade_settlements "
                        "WHERE status = 'completed'").rows()[0][0]  # fmt: skip
    assert by_currency["KAUS"]["ledger_kaus_units"] == by_currency["KAUS"]["settlement_kaus_units"] == trade_units
    legs = dict(query(con, "SELECT leg, count(*) FROM stg_ledger_transfers GROUP BY leg").rows())
    assert {Leg.PAYMENT, Leg.FEE, Leg.DIVIDEND_POOL, Leg.CARBON, Leg.DEPOSIT, Leg.HOLD, Leg.CAPTURE, Leg.RELEASE,
            Leg.CASHBACK, Leg.BONUS} <= set(legs) and None not in legs  # fmt: skip
    assert total(rows, "open_holds") == 0 and total(rows, "in_flight_movements") == 0


def test_the_data_quality_check_passes_on_the_real_day(platform_day: BridgeDay, con: Any) -> None:
    land(con, platform_day.records)
    today = datetime.now(UTC).date()
    checks = [r for r in quality.run_checks(con, today) if r.suite == "ledger_tieout"]
    assert len(checks) == len(TIEOUT_BREAKS) and all(r.success for r in checks), checks


def test_a_hold_open_at_the_cut_off_is_reported_not_broken(platform_day: BridgeDay, con: Any) -> None:
    """A payment whose hold the bridge placed but had neither captured nor released yet."""
    import asyncio

    kafka_ledger, wire = platform_day.kafka_ledger, platform_day.wire
    before = len(wire.records)
    expires = int(datetime.now(UTC).timestamp() * 1000) + 600_000
    reference = Reference(SettlementKind.CARD_PAYMENT, "BRIDGE-card-open", Leg.HOLD)
    asyncio.run(kafka_ledger.place_hold(transfer_id="BRIDGE-card-open:hold", debit_account_id=ACCOUNTS[0],
                                        credit_account_id="bridge:settlement", amount_units=4_321,
                                        expires_at_ms=expires, reference=reference))  # fmt: skip
    land(con, platform_day.records + wire.records[before:])
    rows = tieout(con)
    assert all(r[c] == 0 for r in rows for c in TIEOUT_BREAKS), rows
    assert (total(rows, "open_holds"), total(rows, "open_hold_kaus_units")) == (1, 4_321)
    [open_hold] = query(con, "SELECT * FROM mart_ledger_open_holds_as_of(TIMESTAMPTZ 'infinity')").to_dicts()
    assert (open_hold["settlement_kind"], open_hold["settlement_ref"]) == ("CARD_PAYMENT", "BRIDGE-card-open")
    placed = open_hold["placed_at"]
    assert query(con, "SELECT * FROM mart_ledger_open_holds_as_of($t)", {"t": placed - timedelta(seconds=1)}).is_empty()
    # Captured and released holds are not open at any cut-off after their capture or release
    asyncio.run(kafka_ledger.void_hold(transfer_id="BRIDGE-card-open:void", hold_id="BRIDGE-card-open:hold"))
    land(con, platform_day.records + wire.records[before:])
    assert total(tieout(con), "open_holds") == 0


def test_a_capture_that_differs_from_its_settlement_is_a_break(platform_day: BridgeDay, con: Any) -> None:
    card = settled(platform_day)[3]
    wrong = with_transfer(platform_day.records, f"{card.bridge_tx_id}:post", amount_units=card.kaus_debited_units + 1)
    land(con, wrong)
    rows = tieout(con)
    [usd] = [r for r in rows if r["currency"] == "USD"]
    assert (usd["difference_kaus_units"], usd["settlements_not_tied"], usd["settlements_without_ledger"]) == (-1, 1, 0)
    checks = {r.target: r.success for r in quality.run_checks(con, usd["day"]) if r.suite == "ledger_tieout"}
    assert checks == {
        "difference_kaus_units": False,
        "settlements_not_tied": False,
        "settlements_without_ledger": True,
        "orphan_ledger_movements": True,
    }


def test_legs_that_net_to_zero_still_break(platform_day: BridgeDay, con: Any) -> None:
    """A unit too little captured and a unit too much cashback: the sums agree, the legs do not."""
    card = next(c for c in settled(platform_day) if c.cashback_kaus_units)
    records = with_transfer(platform_day.records, f"{card.bridge_tx_id}:post", amount_units=card.kaus_debited_units - 1)
    records = with_transfer(records, f"{card.bridge_tx_id}:cashback", amount_units=card.cashback_kaus_units + 1)
    land(con, records)
    [usd] = [r for r in tieout(con) if r["currency"] == "USD"]
    assert (usd["difference_kaus_units"], usd["settlements_not_tied"]) == (0, 1)


def test_a_movement_without_a_reference_or_its_settlement_is_an_orphan(platform_day: BridgeDay, con: Any) -> None:
    card = settled(platform_day)[0]
    records = with_transfer(platform_day.records, f"{card.bridge_tx_id}:cashback", reference=None)
    land(con, records)
    rows = tieout(con)
    unknown = [r for r in rows if r["currency"] == "UNKNOWN"]
    assert (total(unknown, "orphan_ledger_movements"), total(unknown, "orphan_kaus_units")) == (
        1,
        card.cashback_kaus_units,
    )
    [usd] = [r for r in rows if r["currency"] == "USD"]
    assert usd["settlements_not_tied"] == 1  # and the payment misses its cashback


def test_a_capture_whose_settlement_comes_after_the_cut_off_is_in_flight(platform_day: BridgeDay, con: Any) -> None:
    """Within the grace it is reported; past it (or at the next day's check) it is an orphan."""
    card = settled(platform_day)[-1]
    [capture] = [
        LEDGER_TRANSFERS.decode(v)
        for n, k, v in platform_day.records
        if n == LEDGER_TRANSFERS.name and k == f"{card.bridge_tx_id}:post".encode()
    ]
    cutoff = capture.occurred_at + timedelta(seconds=1)
    records = []
    for name, key, value in platform_day.records:  # the ledger's answer to the capture came 2 s late
        if name == BRIDGE_SETTLEMENTS_COMPLETED.name and key == card.request_id.encode():
            late = BRIDGE_SETTLEMENTS_COMPLETED.decode(value).model_copy(
                update={"completed_at": cutoff + timedelta(seconds=1)}
            )
            value = BRIDGE_SETTLEMENTS_COMPLETED.encode(late)
        records.append((name, key, value))
    land(con, records)
    rows = tieout(con, cutoff, timedelta(minutes=30))
    assert all(r[c] == 0 for r in rows for c in TIEOUT_BREAKS), rows
    moved = card.kaus_debited_units + card.cashback_kaus_units + card.ecosystem_bonus_kaus_units
    assert (total(rows, "in_flight_movements"), total(rows, "in_flight_kaus_units"), total(rows, "open_holds")) == (
        len([u for u in (card.cashback_kaus_units, card.ecosystem_bonus_kaus_units) if u]) + 1,
        moved,
        0,
    )
    late = tieout(con, cutoff, timedelta(0))  # no grace: nothing can be in flight
    assert total(late, "orphan_kaus_units") == moved and total(late, "in_flight_movements") == 0
    assert all(r[c] == 0 for r in tieout(con) for c in TIEOUT_BREAKS)  # once recorded, it ties out


def test_the_generated_day_ties_out_as_the_services_write_it(con: Any) -> None:
    from devtools.recon_data import GeneratorConfig, generate_period

    day = date(2026, 11, 1)
    config = GeneratorConfig(settlements_per_day=60, breaks_per_class=1, batches_per_day=1, trades_per_day=40)
    events = generate_period(3, day, 1, config).events
    records = [
        (name, b"", TOPICS[name].encode(value))
        for by_topic in events.values()
        for name, values in by_topic.items()
        for value in values
    ]
    land(con, records)
    rows = tieout(con, datetime(2026, 11, 2, tzinfo=UTC), timedelta(minutes=30))
    assert all(r[c] == 0 for r in rows for c in TIEOUT_BREAKS), rows
    assert {r["currency"] for r in rows if r["settlements"]} >= {"KAUS", "USD", "EUR"}
    broken = generate_period(3, day, 1, GeneratorConfig(**{**config.__dict__, "ledger_break": True})).events
    con.execute("DELETE FROM raw_events")
    land(con, [(n, b"", TOPICS[n].encode(v)) for by in broken.values() for n, vs in by.items() for v in vs])
    rows = tieout(con, datetime(2026, 11, 2, tzinfo=UTC), timedelta(minutes=30))
    assert total(rows, "settlements_without_ledger") == 1
