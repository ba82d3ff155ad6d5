"""A capture the ledger refuses after the provider paid out: an exception for finance, not a halted reconciliation.

A real bridge flow on a real ledger partition (`KafkaHoldLedger` over `LedgerWire`), where one payment's hold is
voided by the ledger before its capture arrives: the ledger refuses the capture, the bridge completes the payment
(the merchant was paid) without rewards and writes its `BRIDGE_CAPTURE_REFUSED_AFTER_PAYOUT` audit record. The
warehouse then ties out (the refused capture is counted apart, the critical check passes), the variance step raises
one `capture_refused` break whose exception (`K:<settlement>`) stays open although the provider's line matches,
the settlement is not counted as matched automatically, and the report states it (beside a hold open at the
cut-off: reported, not a break).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import models as m
from contracts.bridge_codec import quote_of_rate, result_json
from contracts.topics import AUDIT_RECORDS, BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED, LEDGER_TRANSFERS
from devtools.fx_feed import fx_quotes
from domain.bridge import BridgeConfig, FlagForReconciliation, Settled
from domain.fx import FxBook
from domain.ledger import Leg, SettlementKind
from domain.money import Currency
from domain.rails import Rail
from domain.variance_rules import BreakClass
from streams.bridge.ledger_client import KafkaHoldLedger
from streams.bridge.runner import BridgeRunner
from streams.bridge.service import capture_refused_audit
from tests.integration.recon_fixtures import pdf_text
from tests.unit.test_bridge_ledger_references import (
    REWARD_ACCOUNTS,
    LedgerWire,
    Record,
    Stripe,
    funded_ledger,
    payments,
)
from tests.unit.test_warehouse_ledger_tieout import TIEOUT_BREAKS, land
from warehouse import pipeline, quality
from warehouse.db import query, warehouse
from warehouse.provider_statements import FORMATS
from warehouse.settings import ReconSettings

PAYERS = ["payer-1", "payer-2"]
REFUSED = "card-2"  # its hold is voided before the capture arrives


@dataclass
class RefusingWire(LedgerWire):
    """The ledger voids one payment's hold just before applying its capture (as an expiry would): the capture is
    then refused by the ledger itself."""

    refuse_request: str = REFUSED

    def apply(self, command: Any) -> None:
        if isinstance(command, m.PostHold) and command.hold_id.startswith(f"BRIDGE-{self.refuse_request}:"):
            super().apply(
                m.VoidHold(
                    command_id=f"{command.hold_id}:expired", hold_id=command.hold_id, occurred_at=datetime.now(UTC)
                )
            )
        super().apply(command)


def completed_at(result: Settled) -> datetime:
    return datetime.fromtimestamp(result.completed_at_ms / 1000, UTC)


@dataclass
class RefusedDay:
    records: list[Record]
    settled: list[Settled]
    refused: Settled


@pytest.fixture(scope="module")
def refused_day() -> RefusedDay:
    wire = RefusingWire(funded_ledger(PAYERS))
    now = datetime.now(UTC)
    book = FxBook().with_quotes([quote_of_rate(q) for q in fx_quotes(now.date(), 0, now)])
    rate = book.combined_rate(Currency.USD, time.time_ns() // 1_000_000).rate
    flags: list[FlagForReconciliation] = []

    async def record(flag: FlagForReconciliation) -> None:
        flags.append(flag)

    async def settle_all() -> list[Any]:
        runner = BridgeRunner(
            ledger=KafkaHoldLedger(wire, wire, REWARD_ACCOUNTS, timeout_s=5),  # type: ignore[arg-type]
            adapters={m.Provider.STRIPE: Stripe()},  # type: ignore[dict-item]
            fx_book=lambda: book,
            cfg=BridgeConfig(enabled_rails=frozenset({Rail.STRIPE_INSTANT})),
            on_reconcile=record,
        )
        return [await runner.settle(p) for p in payments(PAYERS, rate, 6)]

    results = asyncio.run(settle_all())
    records = list(wire.records)
    for flag in flags:
        audit = capture_refused_audit(flag, datetime.now(UTC))
        records.append((AUDIT_RECORDS.name, AUDIT_RECORDS.key_of(audit), AUDIT_RECORDS.encode(audit)))
    for result in results:
        topic = BRIDGE_SETTLEMENTS_COMPLETED if isinstance(result, Settled) else BRIDGE_SETTLEMENTS_FAILED
        records.append((topic.name, result.request_id.encode(), orjson.dumps(result_json(result))))
    settled = [r for r in results if isinstance(r, Settled)]
    [refused] = [r for r in settled if r.request_id == REFUSED]
    assert [f.request_id for f in flags] == [REFUSED] and refused.cashback_kaus_units == 0
    return RefusedDay(records, settled, refused)


@pytest.fixture
def settings(tmp_path: Path, refused_day: RefusedDay) -> Iterator[ReconSettings]:
    """A warehouse holding the day, and Stripe's report of it: one line per payout, as paid."""
    s = ReconSettings(home=tmp_path, alert_on_critical=False, wait_for_schedule=False)
    day = completed_at(refused_day.refused).date()
    with warehouse(s.warehouse_path) as con:
        land(con, refused_day.records)
        for i, r in enumerate(refused_day.settled):
            con.execute(
                "INSERT INTO raw_provider_lines VALUES ($id, 'STRIPE', $d, $ref, $ours, 'merchant', 'USD', $amount,"
                " $fee, NULL, $d, $at, 'test', $at)",
                {"id": f"STRIPE:{day}:{i}", "d": day, "ref": r.provider_reference, "ours": r.bridge_tx_id,
                 "amount": r.amount_minor, "fee": r.provider_fee_minor, "at": completed_at(r)},
            )  # fmt: skip
        for provider in FORMATS:
            con.execute(
                "INSERT INTO meta_statement_files VALUES ($p, $d, 'test', 'sha', 0, $at)",
                {"p": provider.value, "d": day, "at": datetime.now(UTC)},
            )
    yield s


def test_the_refused_capture_is_counted_apart_and_the_critical_tie_out_passes(
    refused_day: RefusedDay, settings: ReconSettings
) -> None:
    refused = refused_day.refused
    day = completed_at(refused).date()
    with warehouse(settings.warehouse_path) as con:
        [row] = query(con, "SELECT * FROM mart_capture_refused").to_dicts()
        assert (row["settlement_id"], row["bridge_tx_id"], row["kaus_owed_units"]) == (
            REFUSED,
            refused.bridge_tx_id,
            refused.kaus_debited_units,
        )
        rows = query(con, "SELECT * FROM mart_ledger_tieout WHERE currency = 'USD'").to_dicts()
        assert all(r[c] == 0 for r in rows for c in TIEOUT_BREAKS), rows
        assert sum(r["capture_refused"] for r in rows) == 1
        assert sum(r["capture_refused_kaus_units"] for r in rows) == refused.kaus_debited_units
        checks = [r for r in quality.run_checks(con, day) if r.suite == "ledger_tieout"]
    assert checks and all(r.success for r in checks), checks


def test_it_is_its_own_exception_that_the_provider_match_does_not_resolve(
    refused_day: RefusedDay, settings: ReconSettings
) -> None:
    refused = refused_day.refused
    day = completed_at(refused).date()
    pipeline.data_quality(day, settings)  # the critical checks pass: the DAG goes on
    v = pipeline.variance(day, settings)
    assert v["ledger_breaks"] == 1 and v["breaks_by_class"][BreakClass.CAPTURE_REFUSED] == 1
    assert v["exceptions"] == 1 and sum(v["breaks_by_class"].values()) == 1
    assert (v["settlements"], v["auto_matched"]) == (len(refused_day.settled), len(refused_day.settled) - 1)
    review = pipeline.exception_review(day, settings)
    assert (review["opened"], review["auto_resolved"], review["open_total"]) == (1, 0, 1)
    with warehouse(settings.warehouse_path) as con:
        results = query(con, "SELECT * FROM recon_results WHERE settlement_id = $s ORDER BY line_id", {"s": REFUSED})
        queue = query(con, "SELECT * FROM recon_exceptions").to_dicts()
    assert sorted(zip(results["outcome"], results["break_class"], strict=True), key=str) == sorted(
        [("matched", None), ("break", "capture_refused")], key=str
    )  # the provider paid what we recorded; the ledger did not collect it
    [exc] = queue
    assert (exc["exception_id"], exc["break_class"], exc["state"]) == (f"K:{REFUSED}", "capture_refused", "open")
    assert (exc["related_id"], exc["amount_delta_minor"]) == (refused.bridge_tx_id, -refused.amount_minor)
    # the next day: nothing new, the exception ages and stays open
    pipeline.variance(day + timedelta(days=1), settings)
    review = pipeline.exception_review(day + timedelta(days=1), settings)
    assert (review["auto_resolved"], review["open_total"], review["oldest_age_days"]) == (0, 1, 1)


def test_the_report_states_the_tie_out_the_refused_capture_and_an_open_hold(
    refused_day: RefusedDay, settings: ReconSettings
) -> None:
    day = completed_at(refused_day.refused).date()
    hold = m.LedgerTransfer(
        transfer_id="BRIDGE-card-open:hold", kind=m.TransferKind.PENDING, debit_account_id=PAYERS[0],
        credit_account_id="bridge:settlement", asset=m.LedgerAsset.KAUS, amount_units=4_321_000,
        expires_at=datetime.now(UTC) + timedelta(minutes=10), reason="bridge.hold", occurred_at=datetime.now(UTC),
        reference=m.LedgerReference(kind=SettlementKind.CARD_PAYMENT, id="BRIDGE-card-open", leg=Leg.HOLD),
    )  # fmt: skip
    with warehouse(settings.warehouse_path) as con:
        land(con, [*refused_day.records, (LEDGER_TRANSFERS.name, b"", LEDGER_TRANSFERS.encode(hold))])
    pipeline.data_quality(day, settings)
    pipeline.variance(day, settings)
    pipeline.exception_review(day, settings)
    with warehouse(settings.warehouse_path) as con:
        data = pipeline.report_data(con, day, settings)
    by_currency = {r["currency"]: r for r in data.ledger}
    assert by_currency["USD"]["capture_refused"] == 1 and by_currency["USD"]["difference_kaus_units"] == 0
    assert [h["hold_id"] for h in data.open_holds] == ["BRIDGE-card-open:hold"]
    assert [q["exception_id"] for q in data.queue] == [f"K:{REFUSED}"]
    out = pipeline.report(day, settings, send=False)
    text = pdf_text(Path(out["pdf"]).read_bytes())
    owed = f"{Decimal(refused_day.refused.kaus_debited_units).scaleb(-6):,.2f}"
    assert "Open holds at the cut-off: 1, 4.32 K-AUS reserved, nothing moved yet" in text
    assert f"Captures refused after payout: 1, {owed} K-AUS owed by payers" in text
    assert "Movements in flight: 0, 0.00 K-AUS" in text
    assert "BRIDGE-card-open:hold" in text and f"K:{REFUSED}" in text
