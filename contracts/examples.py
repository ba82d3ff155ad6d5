"""One valid example message per topic, built from the models (so an example can never be invalid).

Rendered into contracts/README.md by `python -m contracts`. Tests and demos build their messages from
these too: ``build(model, **fields)`` is the example of that model with some fields replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

from contracts import models as m
from contracts.payload_codec import Payload

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
MARKET = "2026-11-24T10:00Z/KR-SEOUL"

_TRADE = m.Trade(
    trade_id=f"{MARKET}:42",
    market_id=MARKET,
    sequence=42,
    buy_order_id="ord-b-7",
    sell_order_id="ord-s-3",
    buyer_account_id="acct-consumer-12",
    seller_account_id="acct-solar-7",
    aggressor_side=m.Side.BUY,
    price_units_per_kwh=150_000,
    quantity_wh=2_500,
    notional_kaus_units=375_000,
    executed_at=T0,
    matching_duration_us=35,
)

_BRIDGE_REQUEST = m.BridgeRequest(
    request_id="card-7f3a",
    payer_account_id="acct-consumer-12",
    merchant_id="merchant-cafe-9",
    amount_minor=15_000,
    currency=m.Currency.USD,
    region=m.Region.US,
    payer_tier=m.PayerTier.GOLD,
    quoted_rate=Decimal("0.1500"),
    requested_at=T0,
)

EXAMPLES: dict[str, Any] = {
    "energy.orders": m.SubmitOrder(
        order_id="ord-s-3",
        market_id=MARKET,
        account_id="acct-solar-7",
        side=m.Side.SELL,
        order_type=m.OrderType.LIMIT,
        price_units_per_kwh=150_000,
        quantity_wh=2_500,
        energy_source=m.EnergySource.SOLAR,
        submitted_at=T0,
    ),
    "energy.orders.events": m.OrderEvent(
        order_id="ord-b-9",
        market_id=MARKET,
        account_id="acct-consumer-12",
        status=m.OrderStatus.REJECTED,
        reason_code="PRICE_OFF_TICK",
        reason="price 150500 is not a multiple of the tick 1000",
        sequence=43,
        occurred_at=T0,
    ),
    "energy.trades": _TRADE,
    "energy.prices": m.MarketPrice(
        market_id=MARKET,
        best_bid_units_per_kwh=149_000,
        best_ask_units_per_kwh=151_000,
        last_price_units_per_kwh=150_000,
        vwap_units_per_kwh=150_000,
        traded_quantity_wh=2_500,
        sequence=42,
        as_of=T0,
    ),
    "energy.settlements": m.TradeSettled(
        trade_id=_TRADE.trade_id,
        market_id=MARKET,
        buyer_account_id="acct-consumer-12",
        seller_account_id="acct-solar-7",
        notional_kaus_units=375_000,
        fee_kaus_units=937,
        seller_net_kaus_units=374_063,
        delivered_wh=2_500,
        carbon_credits_minted_milli=0,
        phase_durations_us={"matching": 35, "validation": 12, "transfer": 40, "minting": 8},
        settled_at=T0,
    ),
    "carbon.credits.minted": m.CarbonCreditMinted(
        mint_id="carbon:acct-solar-7:1",
        account_id="acct-solar-7",
        trade_id=_TRADE.trade_id,
        credits_milli=1_000,
        minted_at=T0,
    ),
    "dividends.declared": m.DividendDeclared(
        dividend_id="div:1",
        account_id="acct-node-1",
        source=m.DividendSource.ENERGY_NODE,
        amount_kaus_units=120,
        trade_id=_TRADE.trade_id,
        declared_at=T0,
    ),
    "ledger.commands": m.Deposit(
        command_id="dep-2026-11-24-0001",
        account_id="acct-consumer-12",
        amount_kaus_units=1_000_000_000,
        occurred_at=T0,
    ),
    "ledger.transfers": m.LedgerTransfer(
        transfer_id=f"{_TRADE.trade_id}:pay",
        debit_account_id="acct-consumer-12",
        credit_account_id="acct-solar-7",
        amount_kaus_units=375_000,
        reason="trade settlement",
        occurred_at=T0,
    ),
    "ledger.outcomes": m.LedgerOutcome(
        command_id="BRIDGE-card-7f3a:hold",
        command_type="PLACE_HOLD",
        status=m.LedgerOutcomeStatus.APPLIED,
        amount_kaus_units=1_003_009_028,
        occurred_at=T0,
    ),
    "fx.rates": m.FxRate(
        quote_id="REUTERS:USD:2026-11-24T09:00:00Z",
        source=m.FxSource.REUTERS,
        quote=m.Currency.USD,
        rate=Decimal("0.1500"),
        as_of=T0,
    ),
    "bridge.requests": _BRIDGE_REQUEST,
    "bridge.settlements.completed": m.BridgeSettlementCompleted(
        request_id="card-7f3a",
        bridge_tx_id="BRIDGE-card-7f3a",
        payer_account_id="acct-consumer-12",
        merchant_id="merchant-cafe-9",
        region=m.Region.US,
        currency=m.Currency.USD,
        amount_minor=15_000,
        kaus_debited_units=1_000_000_000,
        rate=Decimal("0.1500"),
        rail=m.Rail.STRIPE_INSTANT,
        provider_reference="po_1Nx",
        provider_fee_minor=63,
        cashback_kaus_units=30_000_000,
        ecosystem_bonus_kaus_units=0,
        phase_durations_ms={
            m.BridgePhase.BALANCE_LOCK: 4,
            m.BridgePhase.FX_CONVERSION: 2,
            m.BridgePhase.MERCHANT_CREDIT: 221,
            m.BridgePhase.CONFIRMATION: 3,
        },
        total_duration_ms=230,
        completed_at=T0,
    ),
    "bridge.settlements.failed": m.BridgeSettlementFailed(
        request_id="card-7f3b",
        payer_account_id="acct-consumer-12",
        region=m.Region.EU,
        currency=m.Currency.EUR,
        amount_minor=2_000,
        failed_phase=m.BridgePhase.FX_CONVERSION,
        reason_code="SLIPPAGE",
        reason="rate moved 0.41% from the quoted 0.1380 (limit 0.30%)",
        failed_at=T0,
    ),
    "bridge.payouts.journal": m.BridgeJournalEntry(
        bridge_tx_id="BRIDGE-card-7f3a",
        request_id="card-7f3a",
        intent=m.BridgePayoutIntent(
            intent_id="BRIDGE-card-7f3a:1:1",
            bridge_tx_id="BRIDGE-card-7f3a",
            idempotency_key="BRIDGE-card-7f3a",
            provider_attempt=1,
            send_no=1,
            rail=m.Rail.STRIPE_INSTANT,
            provider="STRIPE",
            amount_minor=15_000,
            currency=m.Currency.USD,
            fee_minor=225,
            kaus_units=1_000_000_000,
            rate=Decimal("0.1500"),
            lock_id="BRIDGE-card-7f3a:fx",
            locked_at=T0,
            lock_expires_at=datetime(2026, 11, 24, 9, 0, 5, tzinfo=UTC),
            hold_id="BRIDGE-card-7f3a:hold",
            hold_units=1_003_009_028,
            tried_providers=["STRIPE"],
            request=_BRIDGE_REQUEST,
            created_at=T0,
        ),
        fingerprint="9c1d0e7a",
    ),
    "payouts.rules": m.AutoPayoutRule(
        rule_id="rule-1",
        account_id="acct-solar-7",
        trigger_type=m.PayoutTrigger.THRESHOLD,
        threshold_kaus_units=1_000_000_000,
        payout_provider=m.Provider.STRIPE,
        payout_currency=m.Currency.USD,
        payout_account="ba_1234567890",
        keep_minimum_kaus_units=100_000_000,
        max_payout_per_tx_kaus_units=5_000_000_000,
    ),
    "payouts.requests": m.PayoutRequest(
        payout_id="PAYOUT-1",
        rule_id="rule-1",
        account_id="acct-solar-7",
        provider=m.Provider.STRIPE,
        currency=m.Currency.USD,
        amount_kaus_units=1_000_000_000,
        payout_account="ba_1234567890",
        requested_at=T0,
    ),
    "payouts.results": m.PayoutResult(
        payout_id="PAYOUT-1",
        status=m.PayoutStatus.PAID,
        provider=m.Provider.STRIPE,
        provider_reference="po_9",
        currency=m.Currency.USD,
        amount_minor=15_000,
        fee_minor=63,
        rate=Decimal("0.15"),
        completed_at=T0,
    ),
    "governance.keys": m.KeyMetadata(
        key_id="hsm-signing-2026q4",
        label="settlement signing key",
        algorithm="ECDSA-P256",
        created_at=T0,
        expires_at=datetime(2027, 2, 22, tzinfo=UTC),
        observed_at=T0,
    ),
    "governance.multisig": m.MultisigRequest(
        request_id="msig-88",
        amount_kaus_units=60_000_000_000_000,
        required_signers=4,
        signatures=2,
        state=m.MultisigState.PENDING,
        created_at=T0,
        updated_at=T0,
    ),
    "monitoring.alerts": m.Alert(
        fingerprint="failed-settlement:US",
        rule="failed_settlement",
        state=m.AlertState.FIRING,
        severity=m.Severity.CRITICAL,
        channel="pagerduty",
        summary="1 failed settlement in US",
        starts_at=T0,
    ),
    "audit.records": m.AuditRecord(
        audit_id="AUDIT-2026-11-24-000001",
        timestamp=T0,
        transaction_id="BRIDGE-card-7f3a",
        action="SETTLEMENT_EXECUTED",
        actor=m.AuditActor(user_id="acct-consumer-12", ip="203.0.113.7"),
        details=m.AuditDetails(
            kaus_amount="1000.000000",
            fiat_amount="150.00",
            currency=m.Currency.USD,
            exchange_rate=Decimal("0.15"),
            settlement_rail=m.Rail.STRIPE_INSTANT,
            duration=487,
        ),
    ),
    "platform.deadletters": m.DeadLetter(
        source_topic="energy.orders",
        source_partition=2,
        source_offset=1187,
        key_b64="MjAyNi0xMS0yNFQxMDowMFovS1I=",
        value_b64="eyJ0eXBlIjogIlNVQk1JVCIs",
        value_size_bytes=18,
        reason_code="MALFORMED_JSON",
        reason="energy.orders: not valid JSON: EOF while parsing a value at line 1 column 18",
        received_at=T0,
    ),
    "platform.deadletters.payloads": Payload("energy.orders:2:1187:value", b'{"type": "SUBMIT", ' + b" " * 70_000),
}


_M = TypeVar("_M", bound=BaseModel)
_BY_MODEL: dict[type[BaseModel], BaseModel] = {type(e): e for e in EXAMPLES.values()}


def build(model: type[_M], **fields: Any) -> _M:
    """The example ``model`` message with ``fields`` replaced, validated again (so it is a valid message too).

    For tests and demos: ``build(m.BridgeSettlementFailed, request_id="r9", failed_at=now)``.
    """
    return model.model_validate(_BY_MODEL[model].model_dump() | fields)
