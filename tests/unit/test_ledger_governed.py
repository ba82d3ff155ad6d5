"""GOVERNED_TRANSFER on ledger.commands: an approved multi-sig movement, applied once, with its reference."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import models as m
from domain.ledger import Leg, SettlementKind
from tests.unit.test_ledger_staking_epochs import Driver, outcome, transfers

T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)


def governed(units: int, request_id: str = "msig-1", debit: str = "treasury:main") -> m.GovernedTransfer:
    return m.GovernedTransfer(
        command_id=f"GOV:{request_id}",
        request_id=request_id,
        debit_account_id=debit,
        credit_account_id="treasury:ops",
        amount_kaus_units=units,
        reason="ops budget",
        occurred_at=T0,
    )


def treasury(units: int) -> Driver:
    d = Driver()
    d.send(m.Deposit(command_id="fund", account_id="treasury:main", amount_kaus_units=units, occurred_at=T0))
    return d


def test_a_governed_transfer_moves_once_with_its_request_as_reference() -> None:
    d = treasury(1_000)
    out = d.send(governed(400))
    assert outcome(out).status is m.LedgerOutcomeStatus.APPLIED
    [t] = transfers(out)
    assert (t.debit_account_id, t.credit_account_id, t.amount_units) == ("treasury:main", "treasury:ops", 400)
    assert t.reference is not None
    assert (t.reference.kind, t.reference.id, t.reference.leg) == (SettlementKind.GOVERNANCE, "msig-1", Leg.TRANSFER)
    again = d.send(governed(400))
    assert outcome(again).duplicate and transfers(again) == []
    assert d.available("treasury:main") == 600 and d.available("treasury:ops") == 400


def test_a_governed_transfer_the_ledger_cannot_apply_is_refused_and_moves_nothing() -> None:
    d = treasury(100)
    refused = d.send(governed(101))
    assert outcome(refused).status is m.LedgerOutcomeStatus.REJECTED
    assert outcome(refused).reason_code == "INSUFFICIENT_FUNDS" and transfers(refused) == []
    unknown = outcome(d.send(governed(1, "msig-2", debit="treasury:nowhere")))
    assert unknown.status is m.LedgerOutcomeStatus.REJECTED and unknown.reason_code == "UNKNOWN_DEBIT_ACCOUNT"
    assert d.available("treasury:main") == 100
