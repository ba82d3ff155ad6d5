"""Example messages per topic, built from the models (so an example can never be invalid).

`EXAMPLES` holds one per topic, `MORE_EXAMPLES` the other shapes a topic carries (a FILLED order event, a
substituted rail, a repeat...). Their numbers come from the domain (fees, holds, rewards, rejections), so they
are what the platform would send. Rendered into contracts/README.md by `python -m contracts`, and checked
against the published schemas (tests/unit/test_contract_examples.py). Tests and demos build their messages
from these too: ``build(model, **fields)`` is the example of that model with some fields replaced.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

from contracts import models as m
from contracts.payload_codec import Payload
from domain import bridge
from domain import ledger as lg
from domain import order_book as ob
from domain import trade_settlement as ts
from domain.cashback import compute_rewards
from domain.fx import FxPolicy, check_slippage, max_kaus_units_within_slippage, minor_to_kaus_units
from domain.money import kaus_to_decimal
from domain.rails import fee_minor
from domain.timeconv import to_ms

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
MARKET = "2026-11-24T10:00Z/KR-SEOUL"
SLIPPAGE_BPS = FxPolicy().slippage_limit_bps

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
_DEBIT = minor_to_kaus_units(15_000, Decimal("0.1500"), m.Currency.USD)
_HOLD = max_kaus_units_within_slippage(15_000, Decimal("0.1500"), m.Currency.USD, SLIPPAGE_BPS)
_REWARDS = compute_rewards(_DEBIT, m.PayerTier.GOLD, None)


def _off_tick_rejection() -> ob.OrderRejected:
    """What the order book answers to a price between two ticks (its own code and words)."""
    tick = ob.DEFAULT_RULES.tick_size_units
    lot = ob.DEFAULT_RULES.lot_size_wh
    book = ob.OrderBook(ob.default_market_config(MARKET))
    order = ob.SubmitOrder(
        "ord-b-9",
        MARKET,
        "acct-consumer-12",
        ob.Side.BUY,
        ob.OrderType.LIMIT,
        150 * tick + tick // 2,
        10 * lot,
        to_ms(T0),
    )
    [event] = book.submit(order)
    assert isinstance(event, ob.OrderRejected), event
    return event


_OFF_TICK = _off_tick_rejection()
_BUYER_ORDER_WH = 4_000  # ord-b-7: 4,000 Wh at 150,000; 2,500 filled by trade 42, 1,500 rest


def _fill(order_id: str, account_id: str, remaining: int) -> m.OrderEvent:
    return m.OrderEvent(
        order_id=order_id,
        market_id=MARKET,
        account_id=account_id,
        status=m.OrderStatus.PARTIALLY_FILLED if remaining else m.OrderStatus.FILLED,
        remaining_quantity_wh=remaining,
        trade_id=_TRADE.trade_id,
        fill_quantity_wh=_TRADE.quantity_wh,
        fill_price_units_per_kwh=_TRADE.price_units_per_kwh,
        sequence=_TRADE.sequence,
        occurred_at=T0,
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
    "energy.orders.events": _fill("ord-s-3", "acct-solar-7", 0),
    "energy.trades": _TRADE,
    "energy.prices": m.MarketPrice(
        market_id=MARKET,
        best_bid_units_per_kwh=150_000,
        best_ask_units_per_kwh=151_000,
        best_bid_quantity_wh=_BUYER_ORDER_WH - _TRADE.quantity_wh,
        best_ask_quantity_wh=3_000,
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
        transfer_id=f"{_TRADE.trade_id}/pay",
        debit_account_id="acct-consumer-12",
        credit_account_id="acct-solar-7",
        asset=m.LedgerAsset.KAUS,
        amount_units=_TRADE.notional_kaus_units,
        reason="trade.payment",
        occurred_at=T0,
    ),
    "ledger.outcomes": m.LedgerOutcome(
        command_id="BRIDGE-card-7f3a:hold",
        command_type="PLACE_HOLD",
        status=m.LedgerOutcomeStatus.APPLIED,
        amount_kaus_units=_HOLD,
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
        kaus_debited_units=_DEBIT,
        rate=Decimal("0.1500"),
        rail=m.Rail.STRIPE_INSTANT,
        primary_rail=m.Rail.STRIPE_INSTANT,
        provider_reference="po_1Nx",
        provider_fee_minor=fee_minor(m.Provider.STRIPE, 15_000, m.Currency.USD),
        cashback_kaus_units=_REWARDS.cashback_kaus_units,
        ecosystem_bonus_kaus_units=_REWARDS.ecosystem_bonus_kaus_units,
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
        reason=check_slippage(Decimal("0.1380"), Decimal("0.1386"), SLIPPAGE_BPS).reason,
        failed_at=T0,
        merchant_id="merchant-cafe-9",
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
            fee_minor=fee_minor(m.Provider.STRIPE, 15_000, m.Currency.USD),
            kaus_units=_DEBIT,
            rate=Decimal("0.1500"),
            lock_id="BRIDGE-card-7f3a:fx",
            locked_at=T0,
            lock_expires_at=datetime(2026, 11, 24, 9, 0, 5, tzinfo=UTC),
            hold_id="BRIDGE-card-7f3a:hold",
            hold_units=_HOLD,
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
        account_id="acct-solar-7",
        rule_id="rule-1",
        bridge_tx_id="BRIDGE-PAYOUT-1",
        kaus_debited_units=1_000_000_000,
        rail=m.Rail.STRIPE_INSTANT,
    ),
    "payouts.waiting": m.PayoutWaiting(
        payout_id="rule-2:D2026-03-05",
        account_id="acct-node-1",
        rule_id="rule-2",
        amount_kaus_units=2_500_000_000,
        reason_code="KYC_PENDING",
        reason="the holder's KYC review is pending: paid once it is VERIFIED",
        waiting_since=T0,
    ),
    "kyc.status": m.KycStatusChanged(
        account_id="acct-solar-7",
        status=m.KycStatus.VERIFIED,
        provider="SUMSUB",
        applicant_id="5f1a3b7c9d2e",
        event_id="sumsub-evt-4411",
        email="solar7@example.com",
        phone="+821012345678",
        occurred_at=T0,
    ),
    "notifications.holders": m.HolderNotification(
        notification_id="PAYOUT-1:PAYOUT_COMPLETED:EMAIL",
        account_id="acct-solar-7",
        payout_id="PAYOUT-1",
        event="PAYOUT_COMPLETED",
        channel=m.NotificationChannel.EMAIL,
        destination="solar7@example.com",
        subject="Your NEXUS-X payout of 150.00 USD is on its way",
        text="1,000.000000 K-AUS were paid out as 150.00 USD to your Stripe account (reference po_9).",
        created_at=T0,
    ),
    "notifications.deliveries": m.NotificationDelivery(
        notification_id="PAYOUT-1:PAYOUT_COMPLETED:EMAIL",
        channel=m.NotificationChannel.EMAIL,
        status=m.DeliveryStatus.DELIVERED,
        attempts=1,
        delivered_at=T0,
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
        operation=m.GovernanceOperation.TREASURY_TRANSFER,
        request_hash="0x" + "3f" * 32,
        expires_at=T0 + timedelta(days=7),
    ),
    "governance.requests": m.GovernanceRequest(
        request_id="msig-88",
        operation=m.GovernanceOperation.TREASURY_TRANSFER,
        amount_kaus_units=60_000_000_000_000,
        params={"from_account": "treasury:main", "to_account": "treasury:ops"},
        nonce=88,
        expires_at=T0 + timedelta(days=7),
        requested_by="ops-kim",
        created_at=T0,
    ),
    "governance.approvals": m.GovernanceApproval(
        request_id="msig-88",
        signer_id="signer-2",
        request_hash="0x" + "3f" * 32,
        signature="MEUCIQDx0Y2l0ZWQgZXhhbXBsZSBvbmx5AiAnb3QgYSByZWFsIHNpZ25hdHVyZQ==",
        signed_at=T0,
    ),
    "governance.pause": m.PauseState(
        scope="PLATFORM", paused=False, request_id="msig-90", reason="incident over", updated_at=T0
    ),
    "governance.parameters": m.ParameterSetting(
        name="payouts.auto_approval_limit_kaus_units", value="50000000000", request_id="msig-91", updated_at=T0
    ),
    "audit.checkpoints": m.AuditCheckpoint(
        log_id="nexus-audit-1",
        tree_size=1024,
        root_hash="7d" * 32,
        timestamp=T0,
        key_id="hsm-signing-v2",
        signature="MEQCIGV4YW1wbGUgb25seSwgbm90IGEgc2lnbmF0dXJlAiBub3QgYSByZWFsIG9uZSBlaXRoZXI=",
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
    "audit.records": m.AuditRecord(  # what the bridge writes for the completed payment above
        audit_id="AUDIT:BRIDGE-card-7f3a:completed",
        timestamp=T0,
        transaction_id="BRIDGE-card-7f3a",
        action=str(bridge.BridgeAuditAction.SETTLEMENT_COMPLETED),
        actor=m.AuditActor(user_id="acct-consumer-12"),
        details=m.AuditDetails(
            kaus_amount=str(kaus_to_decimal(_DEBIT)),
            fiat_amount="150.00",
            currency=m.Currency.USD,
            exchange_rate=Decimal("0.1500"),
            settlement_rail=m.Rail.STRIPE_INSTANT,
            duration=230,
        ),
    ),
    "audit.log": m.AuditLogEntry(
        log_id="nexus-audit-1",
        leaf_index=1023,
        leaf_b64="eyJhdWRpdElkIjoiQVVESVQ6QlJJREdFLWNhcmQtN2YzYTpjb21wbGV0ZWQifQ==",
        checkpoint_tree_size=1024,
        record=m.AuditRecord(
            audit_id="AUDIT:BRIDGE-card-7f3a:completed",
            timestamp=T0,
            transaction_id="BRIDGE-card-7f3a",
            action=str(bridge.BridgeAuditAction.SETTLEMENT_COMPLETED),
            actor=m.AuditActor(user_id="acct-consumer-12"),
            details=m.AuditDetails(kaus_amount=str(kaus_to_decimal(_DEBIT)), currency=m.Currency.USD),
            signature="MEQCIGV4YW1wbGUgb25seSwgbm90IGEgc2lnbmF0dXJlAiBub3QgYSByZWFsIG9uZSBlaXRoZXI=",
            blockchain_ref="nexus-audit-1/1024/1023",
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


def _exactly_covered_payment() -> m.BridgeSettlementFailed:
    """A payer holding exactly the K-AUS the payment costs at the quoted rate: refused, as the platform refuses it.

    The hold covers the worst rate the slippage check accepts, so it asks for more than the debit; the ledger
    refuses it and the bridge fails the payment in BALANCE_LOCK with its words (domain.ledger, domain.bridge).
    """
    request = _BRIDGE_REQUEST.model_copy(update={"request_id": "card-7f3c"})
    payment = bridge.CardPayment(
        request.request_id,
        request.payer_account_id,
        request.merchant_id,
        None,
        request.amount_minor,
        request.currency,
        request.region,
        request.payer_tier,
        request.quoted_rate,
        to_ms(T0),
    )
    ledger = lg.Ledger()
    ledger.open_account("sys:mint", allow_negative=True)
    for account in (request.payer_account_id, "bridge:settlement"):
        ledger.open_account(account)
    ledger.apply(lg.Transfer("dep-1", "sys:mint", request.payer_account_id, _DEBIT, "deposit"), to_ms(T0))
    at = bridge.Instant(to_ms(T0), 0)
    step = bridge.begin(payment, None, at, bridge.BridgeConfig())
    [hold] = step.effects
    assert isinstance(hold, bridge.PlaceHold)
    refused = ledger.apply(
        lg.PendingTransfer(
            hold.transfer_id,
            hold.debit_account_id,
            hold.credit_account_id,
            hold.amount_units,
            "hold",
            hold.expires_at_ms,
        ),
        to_ms(T0),
    )
    [done] = bridge.on_hold(step.tx, False, refused.reason, at, str(refused.code)).effects
    assert isinstance(done, bridge.Done) and isinstance(done.result, bridge.Rejected)
    failed = done.result
    return m.BridgeSettlementFailed(
        request_id=failed.request_id,
        bridge_tx_id=failed.bridge_tx_id,
        payer_account_id=failed.payer_account_id,
        region=failed.region,
        currency=failed.currency,
        amount_minor=failed.amount_minor,
        failed_phase=failed.failed_phase,
        reason_code=failed.reason_code,
        reason=failed.reason,
        phase_durations_ms={bridge.Phase.BALANCE_LOCK: 3},
        failed_at=T0,
        merchant_id=failed.merchant_id,
    )


_JP_AMOUNT, _JP_RATE = 2_000, Decimal("22.5")  # 2,000 JPY at 22.5 JPY per K-AUS
_JP_DEBIT = minor_to_kaus_units(_JP_AMOUNT, _JP_RATE, m.Currency.JPY)

# Further shapes a topic carries, each a valid message of it (rendered after the topic's main example).
MORE_EXAMPLES: dict[str, tuple[Any, ...]] = {
    "energy.orders": (
        m.AmendOrder(
            order_id="ord-s-3",
            market_id=MARKET,
            account_id="acct-solar-7",
            new_quantity_wh=2_000,
            requested_at=T0,
        ),
        m.CancelOrder(order_id="ord-s-3", market_id=MARKET, account_id="acct-solar-7", requested_at=T0),
    ),
    "energy.orders.events": (
        m.OrderEvent(
            order_id="ord-b-7",
            market_id=MARKET,
            account_id="acct-consumer-12",
            status=m.OrderStatus.ACCEPTED,
            remaining_quantity_wh=_BUYER_ORDER_WH,
            sequence=_TRADE.sequence - 1,
            occurred_at=T0,
        ),
        _fill("ord-b-7", "acct-consumer-12", _BUYER_ORDER_WH - _TRADE.quantity_wh),
        m.OrderEvent(
            order_id=_OFF_TICK.order_id,
            market_id=MARKET,
            account_id=_OFF_TICK.account_id,
            status=m.OrderStatus.REJECTED,
            reason_code=_OFF_TICK.code,
            reason=_OFF_TICK.reason,
            sequence=_TRADE.sequence + 1,
            occurred_at=T0,
        ),
        m.OrderEvent(
            order_id="ord-s-5",
            market_id=MARKET,
            account_id="acct-solar-7",
            status=m.OrderStatus.CANCELLED,
            reason_code=ob.CancelReason.SELF_TRADE_PREVENTION,
            sequence=_TRADE.sequence + 2,
            occurred_at=T0,
        ),
    ),
    "ledger.commands": (
        m.RegisterDividendHolder(
            command_id="holder-acct-node-1",
            account_id="acct-node-1",
            source=m.DividendSource.ENERGY_NODE,
            weight=250,
            occurred_at=T0,
        ),
        m.Stake(
            command_id="stake-acct-solar-7-1", account_id="acct-solar-7", amount_kaus_units=500_000_000, occurred_at=T0
        ),
        m.GovernedTransfer(
            command_id="GOV:msig-88",
            request_id="msig-88",
            debit_account_id="treasury:main",
            credit_account_id="treasury:ops",
            amount_kaus_units=60_000_000_000_000,
            reason="quarterly operations budget",
            occurred_at=T0,
        ),
        m.Unstake(
            command_id="unstake-acct-solar-7-1",
            position_id="stake-acct-solar-7-1",
            account_id="acct-solar-7",
            occurred_at=T0,
        ),
    ),
    "ledger.transfers": (
        m.LedgerTransfer(
            transfer_id=f"{_TRADE.trade_id}/carbon",
            debit_account_id=ts.SYS_CARBON,
            credit_account_id=ts.carbon_account_id("acct-solar-7"),
            asset=m.LedgerAsset.CARBON_MILLICREDIT,
            amount_units=_TRADE.quantity_wh // ts.WH_PER_CARBON_MILLICREDIT,
            reason="carbon.mint",
            occurred_at=T0,
        ),
    ),
    "bridge.settlements.completed": (
        m.BridgeSettlementCompleted(
            request_id="card-88e1",
            bridge_tx_id="BRIDGE-card-88e1",
            payer_account_id="acct-traveller-4",
            merchant_id="merchant-ramen-2",
            region=m.Region.JP,
            currency=m.Currency.JPY,
            amount_minor=_JP_AMOUNT,
            kaus_debited_units=_JP_DEBIT,
            rate=_JP_RATE,
            rail=m.Rail.WISE,
            primary_rail=m.Rail.PAYPAY_BUSINESS,
            rail_substitution_reason=m.RailSubstitution.PRIMARY_CIRCUIT_OPEN,
            provider_reference="wise-tr-5521",
            provider_fee_minor=fee_minor(m.Provider.WISE, _JP_AMOUNT, m.Currency.JPY),
            cashback_kaus_units=compute_rewards(_JP_DEBIT, m.PayerTier.SILVER, None).cashback_kaus_units,
            ecosystem_bonus_kaus_units=0,
            phase_durations_ms={
                m.BridgePhase.BALANCE_LOCK: 4,
                m.BridgePhase.FX_CONVERSION: 2,
                m.BridgePhase.MERCHANT_CREDIT: 318,
                m.BridgePhase.CONFIRMATION: 3,
            },
            total_duration_ms=327,
            completed_at=T0,
        ),
    ),
    "bridge.settlements.failed": (_exactly_covered_payment(),),
}


_M = TypeVar("_M", bound=BaseModel)
_BY_MODEL: dict[type[BaseModel], BaseModel] = {type(e): e for e in EXAMPLES.values()}
# A repeated request id is answered by re-publishing the original answer, marked.
MORE_EXAMPLES["bridge.settlements.completed"] += (
    EXAMPLES["bridge.settlements.completed"].model_copy(update={"repeat": True}),
)


def build(model: type[_M], **fields: Any) -> _M:
    """The example ``model`` message with ``fields`` replaced, validated again (so it is a valid message too).

    For tests and demos: ``build(m.BridgeSettlementFailed, request_id="r9", failed_at=now)``.
    """
    return model.model_validate(_BY_MODEL[model].model_dump() | fields)
