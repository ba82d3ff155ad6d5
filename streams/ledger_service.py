"""Service layer for the K-AUS ledger: `ledger.commands` in, domain settlement, contracts out.

The ledger is a single writer over one ordered input (see docs/state-and-recovery.md).
`LedgerPartition.apply` is deterministic except for measured phase durations, which
are reported, never used for decisions or ids.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from contracts import models as m
from contracts.construct import constructor
from contracts.topics import (
    AUDIT_RECORDS,
    CARBON_CREDITS_MINTED,
    DIVIDENDS_DECLARED,
    ENERGY_SETTLEMENTS,
    LEDGER_TRANSFERS,
)
from domain import order_book as ob
from domain import trade_settlement as ts
from domain.ledger import Ledger, TransferResult, TransferStatus
from domain.ledger import Transfer as LedgerTransferCommand
from domain.money import kaus_to_decimal
from streams.matching_service import Output, from_ms, to_ms

DEPOSIT_CODE = "deposit"
_LedgerTransfer = constructor(m.LedgerTransfer)
_AuditRecord = constructor(m.AuditRecord)
_AuditActor = constructor(m.AuditActor)
_AuditDetails = constructor(m.AuditDetails)
_CarbonCreditMinted = constructor(m.CarbonCreditMinted)
_TradeSettled = constructor(m.TradeSettled)
PHASE_NAMES = {"validate_and_build_legs": "validation", "ledger_batch": "transfer_and_mint", "records": "records"}


def to_domain_trade(trade: m.Trade) -> ob.Trade:
    return ob.Trade(
        trade.trade_id,
        trade.market_id,
        trade.sequence,
        to_ms(trade.executed_at),
        trade.buy_order_id,
        trade.sell_order_id,
        trade.buyer_account_id,
        trade.seller_account_id,
        trade.price_units_per_kwh,
        trade.quantity_wh,
        trade.notional_kaus_units,
        ob.Side(trade.aggressor_side),
    )


def transfer_record(result: TransferResult, reason: str) -> m.LedgerTransfer:
    return _LedgerTransfer(
        transfer_id=result.transfer_id,
        debit_account_id=result.debit_account_id,
        credit_account_id=result.credit_account_id,
        amount_kaus_units=result.amount_units,
        reason=reason,
        occurred_at=from_ms(result.at_ms),
    )


def kaus_text(units: int) -> str:
    """`str(kaus_to_decimal(units))` (scale 6, e.g. "1.500000") without Decimal arithmetic."""
    if abs(units) >= 10**21:  # beyond any ledger amount: keep Decimal's own behaviour
        return str(kaus_to_decimal(units))
    whole, frac = divmod(abs(units), 1_000_000)
    return f"{'-' if units < 0 else ''}{whole}.{frac:06d}"


def audit_record(fact: ts.AuditFact) -> m.AuditRecord:
    return _AuditRecord(
        audit_id=f"AUDIT:{fact.transaction_id}:{fact.action}",
        timestamp=from_ms(fact.at_ms),
        transaction_id=fact.transaction_id,
        action=str(fact.action),
        actor=_AuditActor(user_id=fact.actor_account_id, ip=None, user_agent="NEXUS-X/2.0"),
        details=_AuditDetails(kaus_amount=kaus_text(fact.kaus_amount_units)),
        signature=None,
        blockchain_ref=None,
    )


@dataclass
class LedgerPartition:
    """The whole ledger: balances, holds, settlement carries. One instance per worker."""

    partition: int = 0
    settler: ts.TradeSettler = field(default_factory=lambda: ts.TradeSettler(Ledger()))
    next_offset: int = 0

    @property
    def ledger(self) -> Ledger:
        return self.settler.ledger

    def _open(self, *accounts: str) -> None:
        for account in accounts:
            self.ledger.open_account(account)

    def apply(self, offset: int, message: Any | None) -> list[Output]:
        assert offset >= self.next_offset, f"ledger: offset {offset} already applied (next {self.next_offset})"
        self.next_offset = offset + 1
        if message is None:
            return []
        if isinstance(message, m.Deposit):
            return self._deposit(message)
        if isinstance(message, m.SettleTrade):
            return self._settle(message)
        if isinstance(message, m.RegisterDividendHolder):
            self.settler.set_dividend_weight(message.account_id, message.source, message.weight)
            return []
        assert isinstance(message, m.DeclareDividends)
        return self._declare(message)

    def _deposit(self, deposit: m.Deposit) -> list[Output]:
        self._open(deposit.account_id)
        previous = self.ledger.result(deposit.command_id)
        result = self.ledger.apply(
            LedgerTransferCommand(
                deposit.command_id, ts.SYS_MINT, deposit.account_id, deposit.amount_kaus_units, DEPOSIT_CODE
            ),
            to_ms(deposit.occurred_at),
        )
        if previous is not None or result.status is not TransferStatus.POSTED:
            return []  # a re-sent deposit: applied once already
        return [(LEDGER_TRANSFERS, transfer_record(result, DEPOSIT_CODE))]

    def _settle(self, command: m.SettleTrade) -> list[Output]:
        trade = command.trade
        self._open(trade.buyer_account_id, trade.seller_account_id)
        if command.seller_energy_source is not None:
            self.settler.register_seller_source(trade.seller_account_id, command.seller_energy_source)
        outcome = self.settler.settle(to_domain_trade(trade), to_ms(trade.executed_at), clock=time.perf_counter_ns)
        if outcome.replayed:
            return []  # the same trade re-emitted after a matching-agent restart: settled once already
        # Spec §2.1 phases; the carbon mint is a leg of the same atomic ledger batch as the transfer.
        phases = {PHASE_NAMES.get(name, name): ns // 1000 for name, ns in outcome.phase_ns}
        if trade.matching_duration_us is not None:
            phases = {"matching": trade.matching_duration_us, **phases}
        settled_at = from_ms(max(to_ms(trade.executed_at), self.ledger.clock_ms))
        out: list[Output] = []
        if outcome.status is ts.SettlementStatus.SETTLED:
            out.extend(
                (LEDGER_TRANSFERS, transfer_record(r, f"trade:{trade.trade_id}"))
                for r in outcome.transfers
                if r.status is TransferStatus.POSTED
            )
            if outcome.carbon_millicredits:
                out.append(
                    (
                        CARBON_CREDITS_MINTED,
                        _CarbonCreditMinted(
                            mint_id=f"{trade.trade_id}/carbon",
                            account_id=trade.seller_account_id,
                            trade_id=trade.trade_id,
                            credits_milli=outcome.carbon_millicredits,
                            minted_at=settled_at,
                        ),
                    )
                )
        out.append(
            (
                ENERGY_SETTLEMENTS,
                _TradeSettled(
                    trade_id=trade.trade_id,
                    status="SETTLED" if outcome.status is ts.SettlementStatus.SETTLED else "REJECTED",
                    reason_code=str(outcome.code) if outcome.code else None,
                    reason=outcome.reason or None,
                    market_id=trade.market_id,
                    buyer_account_id=trade.buyer_account_id,
                    seller_account_id=trade.seller_account_id,
                    notional_kaus_units=outcome.notional_units,
                    fee_kaus_units=outcome.fee_units,
                    seller_net_kaus_units=outcome.seller_net_units,
                    delivered_wh=trade.quantity_wh,
                    carbon_credits_minted_milli=outcome.carbon_millicredits,
                    phase_durations_us=phases,
                    settled_at=settled_at,
                ),
            )
        )
        out.extend((AUDIT_RECORDS, audit_record(fact)) for fact in outcome.audit)
        return out

    def _declare(self, command: m.DeclareDividends) -> list[Output]:
        declaration = self.settler.declare_dividends(command.command_id, to_ms(command.occurred_at))
        if declaration.replayed:
            return []
        out: list[Output] = [
            (LEDGER_TRANSFERS, transfer_record(r, "dividend"))
            for r in declaration.transfers
            if r.status is TransferStatus.POSTED
        ]
        out.extend(
            (
                DIVIDENDS_DECLARED,
                m.DividendDeclared(
                    dividend_id=d.transfer_id,
                    account_id=d.account_id,
                    source=d.source,
                    amount_kaus_units=d.amount_units,
                    declared_at=from_ms(d.declared_at_ms),
                ),
            )
            for d in declaration.dividends
            if d.amount_units > 0
        )
        out.extend((AUDIT_RECORDS, audit_record(fact)) for fact in declaration.audit)
        return out

    def balances(self) -> dict[str, int]:
        return {a.account_id: a.balance_units for a in self.ledger.accounts()}
