"""One pydantic model per message on every topic (the wire contract).

Money is integer units (K-AUS base units or fiat minor units), rates are decimal
strings, timestamps carry an offset and are normalised to UTC, ids are supplied
by the producer and double as idempotency keys. JSON Schemas in
``contracts/schemas/`` are generated from these classes (``python -m contracts``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator
from pydantic.alias_generators import to_camel

from contracts.reason_codes import (
    BRIDGE_FAILURE_CODE,
    DEAD_LETTER_CODE,
    GOVERNANCE_CODE,
    LEDGER_CODE,
    ORDER_EVENT_CODE,
    PAYOUT_FAILURE_CODE,
    PAYOUT_WAIT_CODE,
    SETTLEMENT_CODE,
)
from contracts.types import (
    CONTRACT_CONFIG,
    Bps,
    DurationMs,
    Id,
    KausUnits,
    MinorUnits,
    PositiveKausUnits,
    PositiveMinorUnits,
    PriceUnitsPerKwh,
    QuantityWh,
    Rate,
    Sealed,
    SignedMinorUnits,
    UtcDatetime,
)
from domain.bridge import Phase as BridgePhase
from domain.cashback import PayerTier
from domain.fx import FxSource
from domain.ledger import Asset as LedgerAsset
from domain.ledger import Leg, SettlementKind
from domain.money import Currency
from domain.order_book import OrderType, Side
from domain.payouts import KycStatus
from domain.rails import Provider, Rail, RailSubstitution, Region
from domain.trade_settlement import DividendSource, EnergySource


class Contract(BaseModel):
    """Base of every wire message: strict, immutable, unknown fields rejected."""

    model_config = CONTRACT_CONFIG


# --------------------------------------------------------------------------- enums


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# --------------------------------------------------------------------------- energy market


class SubmitOrder(Contract):
    """Place an order in a market (delivery interval x grid region)."""

    type: Literal["SUBMIT"] = "SUBMIT"
    order_id: Id
    market_id: Id = Field(description="delivery interval and grid region, e.g. 2026-11-24T10:00Z/KR-SEOUL")
    account_id: Id
    side: Side
    order_type: OrderType
    price_units_per_kwh: PriceUnitsPerKwh | None = Field(
        default=None, description="limit price in K-AUS base units per kWh; required for LIMIT, absent for MARKET"
    )
    quantity_wh: QuantityWh
    energy_source: EnergySource | None = Field(default=None, description="sellers: where the energy comes from")
    submitted_at: UtcDatetime
    expires_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _price_matches_type(self) -> SubmitOrder:
        if self.order_type is OrderType.LIMIT and self.price_units_per_kwh is None:
            raise ValueError("a LIMIT order needs price_units_per_kwh")
        if self.order_type is OrderType.MARKET and self.price_units_per_kwh is not None:
            raise ValueError("a MARKET order must not carry price_units_per_kwh")
        return self


class CancelOrder(Contract):
    type: Literal["CANCEL"] = "CANCEL"
    order_id: Id
    market_id: Id
    account_id: Id
    requested_at: UtcDatetime


class AmendOrder(Contract):
    """Change price and/or quantity; raising quantity or changing price loses time priority."""

    type: Literal["AMEND"] = "AMEND"
    order_id: Id
    market_id: Id
    account_id: Id
    new_price_units_per_kwh: PriceUnitsPerKwh | None = None
    new_quantity_wh: QuantityWh | None = None
    requested_at: UtcDatetime


# Value of `energy.orders`: one command, told apart by its `type` field.
OrderCommand = Annotated[SubmitOrder | CancelOrder | AmendOrder, Field(discriminator="type")]


class OrderStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    AMENDED = "AMENDED"
    EXPIRED = "EXPIRED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"


class OrderEvent(Contract):
    """What happened to an order: the producer's answer, keyed by market.

    Every trade adds one PARTIALLY_FILLED or FILLED event per side (with the trade's `sequence`), so an
    order's open quantity is always the `remaining_quantity_wh` of its latest event.
    """

    order_id: Id
    market_id: Id
    account_id: Id
    status: OrderStatus
    reason_code: ORDER_EVENT_CODE | None = Field(
        default=None, description="why: REJECTED, CANCELLED and EXPIRED events carry one"
    )
    reason: str | None = None
    remaining_quantity_wh: Annotated[int, Field(ge=0)] = Field(
        default=0, description="the order's open quantity after this event (0: the order is done)"
    )
    trade_id: Id | None = Field(default=None, description="PARTIALLY_FILLED / FILLED: the trade that filled it")
    fill_quantity_wh: QuantityWh | None = Field(default=None, description="PARTIALLY_FILLED / FILLED: energy filled")
    fill_price_units_per_kwh: PriceUnitsPerKwh | None = Field(
        default=None, description="PARTIALLY_FILLED / FILLED: the trade price"
    )
    sequence: Annotated[int, Field(ge=0)]
    occurred_at: UtcDatetime


class Trade(Contract):
    trade_id: Id
    market_id: Id
    sequence: Annotated[int, Field(ge=0)]
    buy_order_id: Id
    sell_order_id: Id
    buyer_account_id: Id
    seller_account_id: Id
    aggressor_side: Side
    price_units_per_kwh: PriceUnitsPerKwh
    quantity_wh: QuantityWh
    notional_kaus_units: PositiveKausUnits
    executed_at: UtcDatetime
    matching_duration_us: Annotated[int, Field(ge=0)] | None = None


class MarketPrice(Contract):
    """Compacted per market: the latest price picture."""

    market_id: Id
    best_bid_units_per_kwh: PriceUnitsPerKwh | None = None
    best_ask_units_per_kwh: PriceUnitsPerKwh | None = None
    best_bid_quantity_wh: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="open quantity at the best bid, all orders at that price"
    )
    best_ask_quantity_wh: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="open quantity at the best ask, all orders at that price"
    )
    last_price_units_per_kwh: PriceUnitsPerKwh | None = None
    vwap_units_per_kwh: PriceUnitsPerKwh | None = None
    traded_quantity_wh: Annotated[int, Field(ge=0)] = 0
    sequence: Annotated[int, Field(ge=0)]
    as_of: UtcDatetime


class TradeSettled(Contract):
    """The settlement engine's result for one trade (spec §2.1 phases); REJECTED moves nothing."""

    trade_id: Id
    status: Literal["SETTLED", "REJECTED"] = "SETTLED"
    reason_code: SETTLEMENT_CODE | None = None
    reason: str | None = None
    market_id: Id
    buyer_account_id: Id
    seller_account_id: Id
    notional_kaus_units: PositiveKausUnits
    fee_kaus_units: KausUnits
    seller_net_kaus_units: KausUnits
    delivered_wh: QuantityWh
    carbon_credits_minted_milli: Annotated[int, Field(ge=0)] = 0
    phase_durations_us: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="matching, validation, transfer, minting"
    )
    settled_at: UtcDatetime


class CarbonCreditMinted(Contract):
    mint_id: Id
    account_id: Id
    trade_id: Id
    credits_milli: Annotated[int, Field(gt=0)]
    minted_at: UtcDatetime


class DividendDeclared(Contract):
    dividend_id: Id
    account_id: Id
    source: DividendSource
    amount_kaus_units: PositiveKausUnits
    trade_id: Id | None = None
    declared_at: UtcDatetime


# --------------------------------------------------------------------------- ledger


class TransferKind(StrEnum):
    POSTED = "POSTED"
    PENDING = "PENDING"
    POST_PENDING = "POST_PENDING"
    VOID_PENDING = "VOID_PENDING"


class LedgerReference(Contract):
    """The business transaction a ledger movement belongs to, and which part of it the movement is."""

    kind: SettlementKind
    id: Id = Field(description="trade_id, bridge_tx_id, the deposit's or declaration's command_id, payout_id")
    leg: Leg


class LedgerTransfer(Contract):
    """A double-entry movement of one asset, applied at most once per transfer_id."""

    transfer_id: Id
    kind: TransferKind = TransferKind.POSTED
    debit_account_id: Id
    credit_account_id: Id
    asset: LedgerAsset = Field(description="KAUS or CARBON_MILLICREDIT: the unit of amount_units")
    amount_units: Annotated[StrictInt, Field(ge=0, le=10**18)] = Field(
        description="in the asset's base unit: K-AUS base units (1 K-AUS = 1,000,000) or carbon milli-credits"
    )
    pending_id: Id | None = Field(default=None, description="for POST_PENDING / VOID_PENDING: the hold it resolves")
    expires_at: UtcDatetime | None = Field(default=None, description="for PENDING: when the hold voids itself")
    reason: str = Field(default="", max_length=200)
    reference: LedgerReference | None = Field(
        default=None, description="the settlement this movement belongs to (every movement the platform writes)"
    )
    occurred_at: UtcDatetime

    @model_validator(mode="after")
    def _shape(self) -> LedgerTransfer:
        if self.debit_account_id == self.credit_account_id:
            raise ValueError("debit and credit accounts must differ")
        if self.kind in (TransferKind.POST_PENDING, TransferKind.VOID_PENDING) and self.pending_id is None:
            raise ValueError(f"{self.kind} needs pending_id")
        return self


class Deposit(Contract):
    """K-AUS arriving from outside the market (on-chain bridge-in, top-up): minted into an account."""

    type: Literal["DEPOSIT"] = "DEPOSIT"
    command_id: Id = Field(description="the transfer id; a re-sent deposit is applied once")
    account_id: Id
    amount_kaus_units: PositiveKausUnits
    occurred_at: UtcDatetime


class SettleTrade(Contract):
    """Ask the ledger to settle one matched trade (emitted by the matching agent)."""

    type: Literal["SETTLE_TRADE"] = "SETTLE_TRADE"
    command_id: Id = Field(description="the trade id")
    trade: Trade
    seller_energy_source: EnergySource | None = None

    @model_validator(mode="after")
    def _ids_agree(self) -> SettleTrade:
        if self.command_id != self.trade.trade_id:
            raise ValueError("command_id must equal trade.trade_id")
        return self


class RegisterDividendHolder(Contract):
    """Give an energy-node or staking holder a weight in future dividend declarations."""

    type: Literal["REGISTER_HOLDER"] = "REGISTER_HOLDER"
    command_id: Id
    account_id: Id
    source: DividendSource
    weight: Annotated[StrictInt, Field(ge=0, le=10**18)]
    occurred_at: UtcDatetime


class DeclareDividends(Contract):
    """Distribute the dividend pool pro rata to holders (sent by the ledger's epoch timer)."""

    type: Literal["DECLARE_DIVIDENDS"] = "DECLARE_DIVIDENDS"
    command_id: Id = Field(description="the declaration id, e.g. the epoch")
    occurred_at: UtcDatetime


class PlaceHold(Contract):
    """Reserve K-AUS in a payer's account (two-phase transfer, phase one); voids itself at `expires_at`.

    Answered on `ledger.outcomes`. Re-sending the same `command_id` for the same accounts and amount
    returns the original outcome (the expiry may differ: a restarted requester computes a new one).
    """

    type: Literal["PLACE_HOLD"] = "PLACE_HOLD"
    command_id: Id = Field(description="the hold id")
    debit_account_id: Id
    credit_account_id: Id
    amount_kaus_units: PositiveKausUnits
    expires_at: UtcDatetime
    reason: str = Field(default="", max_length=200)
    reference: LedgerReference | None = Field(
        default=None, description="the transaction the hold is for; its capture and release carry it too"
    )
    occurred_at: UtcDatetime


class RewardAccount(StrEnum):
    """Issuance accounts rewards are paid from (they may run negative; finance funds them)."""

    REWARDS = "bridge:rewards"
    ECOSYSTEM = "bridge:ecosystem"


class RewardGrant(Contract):
    """A reward paid with a capture (`PostHold.rewards`): a posted transfer from an issuance account."""

    transfer_id: Id = Field(description="the reward's own transfer id (its idempotency key)")
    from_account_id: RewardAccount
    account_id: Id = Field(description="the account credited (the payer)")
    amount_kaus_units: PositiveKausUnits
    reason: str = Field(default="", max_length=200)
    reference: LedgerReference | None = None


class PostHold(Contract):
    """Capture a hold (phase two): move `amount_kaus_units` (≤ the hold) and release the rest."""

    type: Literal["POST_HOLD"] = "POST_HOLD"
    command_id: Id
    hold_id: Id
    amount_kaus_units: PositiveKausUnits | None = Field(default=None, description="None: the whole hold")
    rewards: list[RewardGrant] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "rewards the ledger applies right after the capture, only if the capture applies (one atomic "
            "step: a reward that cannot apply rejects the whole command); each is deduplicated by its own "
            "transfer id, so a re-sent capture applies those of its rewards not applied yet and none twice"
        ),
    )
    occurred_at: UtcDatetime


class VoidHold(Contract):
    """Release a hold without moving anything."""

    type: Literal["VOID_HOLD"] = "VOID_HOLD"
    command_id: Id
    hold_id: Id
    occurred_at: UtcDatetime


class GrantReward(Contract):
    """Pay a reward from an issuance account on its own; only those may be debited.

    The bridge no longer sends it: its cashback and ecosystem bonus ride on the capture (`PostHold.rewards`).
    """

    type: Literal["GRANT_REWARD"] = "GRANT_REWARD"
    command_id: Id
    from_account_id: RewardAccount
    account_id: Id
    amount_kaus_units: PositiveKausUnits
    reason: str = Field(default="", max_length=200)
    reference: LedgerReference | None = None
    occurred_at: UtcDatetime


class Stake(Contract):
    """Stake K-AUS in the vault (spec §1 Staking Vault): the amount moves to ``staked:{account_id}``, is not
    spendable and not paid out, and earns STAKING dividends; it can be unstaked after the lock period."""

    type: Literal["STAKE"] = "STAKE"
    command_id: Id = Field(description="the position id; a re-sent stake is applied once")
    account_id: Id
    amount_kaus_units: PositiveKausUnits
    occurred_at: UtcDatetime


class Unstake(Contract):
    """Ask for a whole position back: refused while it is locked; released to the holder after the unbonding
    delay (the ledger's own timer moves it)."""

    type: Literal["UNSTAKE"] = "UNSTAKE"
    command_id: Id
    position_id: Id = Field(description="the STAKE command's command_id")
    account_id: Id = Field(description="must own the position")
    occurred_at: UtcDatetime


class GovernedTransfer(Contract):
    """A movement outside the automatic flows (a treasury transfer, a reconciliation correction), executed by the
    governance service once its multi-sig request is approved and its timelock has ended (spec §4.2)."""

    type: Literal["GOVERNED_TRANSFER"] = "GOVERNED_TRANSFER"
    command_id: Id = Field(description="the transfer id: GOV:<request_id>")
    request_id: Id = Field(description="the approved governance request")
    debit_account_id: Id
    credit_account_id: Id
    amount_kaus_units: PositiveKausUnits
    reason: str = Field(default="", max_length=200)
    occurred_at: UtcDatetime


# Value of `ledger.commands`: the ledger's single ordered input.
LedgerCommand = Annotated[
    Deposit
    | SettleTrade
    | RegisterDividendHolder
    | DeclareDividends
    | PlaceHold
    | PostHold
    | VoidHold
    | GrantReward
    | Stake
    | Unstake
    | GovernedTransfer,
    Field(discriminator="type"),
]


class LedgerOutcomeStatus(StrEnum):
    APPLIED = "APPLIED"
    REJECTED = "REJECTED"


class LedgerOutcome(Contract):
    """The ledger's answer to a hold, post, void, reward, stake or unstake command (requesters await it by
    command_id)."""

    command_id: Id
    command_type: Literal[
        "PLACE_HOLD", "POST_HOLD", "VOID_HOLD", "GRANT_REWARD", "STAKE", "UNSTAKE", "GOVERNED_TRANSFER"
    ]
    status: LedgerOutcomeStatus
    duplicate: bool = Field(default=False, description="the command was applied earlier; this is its outcome")
    reason_code: LEDGER_CODE | None = Field(default=None, description="why, when REJECTED")
    reason: str | None = None
    amount_kaus_units: KausUnits = Field(description="held, moved or released; 0 when rejected")
    occurred_at: UtcDatetime


# --------------------------------------------------------------------------- FX


class FxRate(Contract):
    """One quote: price of 1 `base` in `quote`, e.g. KAUS/USD 0.15 (1,000 K-AUS = 150.00 USD)."""

    quote_id: Id
    source: FxSource
    base: Literal["KAUS", "USD", "EUR"] = "KAUS"
    quote: Currency
    rate: Rate
    as_of: UtcDatetime


# --------------------------------------------------------------------------- High-Speed Bridge


class HolderPayout(Contract):
    """What makes a bridge request an auto-payout (spec §2.3): the holder is paid, not a merchant."""

    rule_id: Id | None = Field(default=None, description="the auto-payout rule that decided it, if any")
    provider: Literal["PAYPAL", "STRIPE", "WISE", "TOSS"] = Field(description="the rule's provider; no other pays it")
    payout_account: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="the holder's account at the provider (PayPal e-mail, Stripe connected account, Wise "
        "recipient id, Toss sub-mall id)"
    )
    amount_kaus_units: PositiveKausUnits = Field(
        description="K-AUS debited, exactly; the fiat paid is their conversion at the locked rate, rounded down"
    )
    payout_account_sealed: Sealed | None = Field(
        default=None, description="the payout account, sealed (then `payout_account` is masked); opened to pay"
    )


class BridgeRequest(Contract):
    """A card payment: K-AUS from the payer, fiat to the merchant (spec §2.2); or, with `payout`, a holder's
    auto-payout through the same phases (hold, rate lock, provider, capture or void)."""

    request_id: Id = Field(description="idempotency key; a duplicate returns the original result")
    payer_account_id: Id
    merchant_id: Id
    merchant_program: Literal["AURA_SYDNEY", "NOMAD_MONTHLY"] | None = None
    amount_minor: PositiveMinorUnits = Field(description="fiat the merchant receives, minor units")
    currency: Currency
    region: Region
    payer_tier: PayerTier
    quoted_rate: Rate = Field(description="KAUS->currency rate the payer saw")
    requested_at: UtcDatetime
    payout: HolderPayout | None = Field(
        default=None,
        description="set by the auto-payout service: the payer is the holder paid out, request_id the payout_id, "
        "amount_minor only an estimate at quoted_rate; no cashback or bonus",
    )


class BridgeSettlementCompleted(Contract):
    request_id: Id
    bridge_tx_id: Id
    payer_account_id: Id
    merchant_id: Id
    region: Region
    currency: Currency
    amount_minor: MinorUnits
    kaus_debited_units: PositiveKausUnits
    rate: Rate
    rail: Rail
    primary_rail: Rail | None = Field(
        default=None, description="the region's own rail; differs from `rail` when the payment went out elsewhere"
    )
    rail_substitution_reason: RailSubstitution | None = Field(
        default=None, description="why `rail` is not `primary_rail` (null when it is)"
    )
    provider_reference: str
    provider_fee_minor: MinorUnits
    cashback_kaus_units: KausUnits
    ecosystem_bonus_kaus_units: KausUnits
    phase_durations_ms: dict[BridgePhase, DurationMs]
    total_duration_ms: DurationMs
    repeat: bool = Field(
        default=False, description="true: the answer to a repeated request_id, re-published; the payment happened once"
    )
    completed_at: UtcDatetime
    payout_id: Id | None = Field(
        default=None, description="set when this settled a holder's auto-payout (the request's `payout`): its id"
    )


class BridgeSettlementFailed(Contract):
    request_id: Id
    bridge_tx_id: Id | None = None
    payer_account_id: Id
    region: Region
    currency: Currency
    amount_minor: MinorUnits
    failed_phase: BridgePhase
    reason_code: BRIDGE_FAILURE_CODE
    reason: str
    rail: Rail | None = None
    phase_durations_ms: dict[BridgePhase, DurationMs] = Field(default_factory=dict)
    repeat: bool = Field(default=False, description="true: the answer to a repeated request_id, re-published")
    failed_at: UtcDatetime
    payout_id: Id | None = Field(
        default=None, description="set when this settled a holder's auto-payout (the request's `payout`): its id"
    )
    merchant_id: Id | None = Field(default=None, description="the request's merchant (absent before 1.3.0)")


# --------------------------------------------------------------------------- payouts (spec §2.3, §3)


class PayoutTrigger(StrEnum):
    THRESHOLD = "THRESHOLD"
    SCHEDULE = "SCHEDULE"
    DIVIDEND = "DIVIDEND"


class AutoPayoutRule(Contract):
    """Compacted by rule_id (spec §2.3 AutoPayoutRule, amounts in exact units)."""

    rule_id: Id
    account_id: Id
    trigger_type: PayoutTrigger
    threshold_kaus_units: KausUnits | None = None
    schedule_type: Literal["DAILY", "WEEKLY", "MONTHLY"] | None = None
    schedule_day: Annotated[int, Field(ge=0, le=31)] | None = None
    schedule_time_utc: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] | None = None
    dividend_source: Literal["ENERGY_NODE", "STAKING", "ALL"] | None = None
    dividend_min_kaus_units: KausUnits | None = None
    payout_provider: Provider
    payout_currency: Currency
    payout_account: Annotated[str, Field(min_length=1, max_length=200)]
    keep_minimum_kaus_units: KausUnits = 0
    max_payout_per_tx_kaus_units: PositiveKausUnits
    is_active: bool = True

    @model_validator(mode="after")
    def _trigger_fields(self) -> AutoPayoutRule:
        if self.trigger_type is PayoutTrigger.THRESHOLD and self.threshold_kaus_units is None:
            raise ValueError("THRESHOLD rules need threshold_kaus_units")
        if self.trigger_type is PayoutTrigger.SCHEDULE and (
            self.schedule_type is None or self.schedule_time_utc is None
        ):
            raise ValueError("SCHEDULE rules need schedule_type and schedule_time_utc")
        if self.trigger_type is PayoutTrigger.DIVIDEND and self.dividend_source is None:
            raise ValueError("DIVIDEND rules need dividend_source")
        return self


class PayoutRequest(Contract):
    """A payout the auto-payout service decided (it then sends it through the bridge as a bridge request)."""

    payout_id: Id = Field(description="deterministic: {rule_id}:{trigger}, e.g. r-1:D2026-03-05 or r-1:t3")
    rule_id: Id | None = None
    account_id: Id
    provider: Provider
    currency: Currency
    amount_kaus_units: PositiveKausUnits
    payout_account: Annotated[str, Field(min_length=1, max_length=200)]
    requested_at: UtcDatetime
    trigger_type: PayoutTrigger | None = Field(default=None, description="what made it due")
    payout_account_sealed: Sealed | None = Field(
        default=None, description="the payout account, sealed (then `payout_account` is masked)"
    )
    trigger_id: str | None = Field(
        default=None,
        max_length=128,
        description="the period (D2026-03-05, W2026-03-01, M2026-02), dividend id or "
        "threshold sequence that made it due",
    )


class PayoutStatus(StrEnum):
    PAID = "PAID"
    FAILED = "FAILED"


class PayoutResult(Contract):
    """The outcome of a payout, once per payout_id: PAID, or FAILED (nothing paid, its hold voided)."""

    payout_id: Id
    status: PayoutStatus
    provider: Provider
    provider_reference: str | None = None
    currency: Currency
    amount_minor: MinorUnits
    fee_minor: MinorUnits
    rate: Rate | None = None
    reason: str | None = None
    completed_at: UtcDatetime
    account_id: Id | None = None
    rule_id: Id | None = None
    bridge_tx_id: Id | None = Field(default=None, description="the bridge settlement that executed it")
    kaus_debited_units: KausUnits | None = Field(default=None, description="PAID: the K-AUS captured")
    reason_code: PAYOUT_FAILURE_CODE | None = Field(default=None, description="FAILED: why")
    failed_phase: BridgePhase | None = None
    rail: Rail | None = None
    approval_request_id: Id | None = Field(
        default=None, description="the PAYOUT_APPROVAL governance request, for a payout above the auto-approval limit"
    )


class PayoutWaiting(Contract):
    """A payout that is due but held back (the holder is not KYC-verified): it is paid, under the same
    payout_id, once the reason clears."""

    payout_id: Id
    account_id: Id
    rule_id: Id | None = None
    amount_kaus_units: KausUnits = Field(description="what it would pay now (the amount is decided when it pays)")
    reason_code: PAYOUT_WAIT_CODE
    reason: str
    waiting_since: UtcDatetime


# --------------------------------------------------------------------------- KYC and holder notifications


class KycStatusChanged(Contract):
    """A holder's identity-verification status (Sumsub- or Jumio-style webhook, verified and translated by the
    platform's KYC receiver), compacted by account: the latest is the status. Only VERIFIED holders are paid out."""

    account_id: Id
    status: KycStatus
    provider: Literal["SUMSUB", "JUMIO"]
    applicant_id: Id
    event_id: Id = Field(description="the webhook's id (a re-delivered webhook has the same)")
    email: Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = Field(
        default=None, description="personal data: for payout notifications only"
    )
    phone: Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")] | None = Field(
        default=None, description="E.164; personal data: for payout notifications only"
    )
    push_token: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    occurred_at: UtcDatetime
    contacts_sealed: Sealed | None = Field(
        default=None,
        description="email, phone and push token as one sealed JSON object; the platform's receiver writes this and "
        "leaves the plain fields empty",
    )


class NotificationChannel(StrEnum):
    EMAIL = "EMAIL"
    SMS = "SMS"
    PUSH = "PUSH"


class HolderNotification(Contract):
    """One message to one holder over one channel (spec §2.3 notifications), sent once: `notification_id` is
    the sender's idempotency key. Not an on-call alert (those go to Alertmanager)."""

    notification_id: Id = Field(description="{payout_id}:{event}:{channel}")
    account_id: Id
    payout_id: Id | None = None
    event: Literal["PAYOUT_COMPLETED", "PAYOUT_FAILED", "PAYOUT_WAITING"]
    channel: NotificationChannel
    destination: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="e-mail address, E.164 number or push token (personal data); masked when destination_sealed is set"
    )
    subject: Annotated[str, Field(max_length=200)]
    text: Annotated[str, Field(max_length=2000)]
    created_at: UtcDatetime
    destination_sealed: Sealed | None = Field(default=None, description="the destination, sealed; opened to send")


class DeliveryStatus(StrEnum):
    DELIVERED = "DELIVERED"
    UNDELIVERED = "UNDELIVERED"  # every attempt failed: dead-lettered with the notification's bytes


class NotificationDelivery(Contract):
    """What became of one notification: delivered (once) or given up after the last retry."""

    notification_id: Id
    channel: NotificationChannel
    status: DeliveryStatus
    attempts: Annotated[int, Field(ge=1, le=100)]
    reason: str | None = None
    delivered_at: UtcDatetime


# --------------------------------------------------------------------------- governance feeds (alerting inputs)


class KeyPurpose(StrEnum):
    MASTER = "MASTER"  # AES-256: wraps the others for backup
    SIGNING = "SIGNING"  # ECDSA P-256: signs the audit log's checkpoints
    ENCRYPTION = "ENCRYPTION"  # AES-256: wraps the data keys of personal data at rest


class KeyState(StrEnum):
    ACTIVE = "ACTIVE"  # the version in use (signs, encrypts)
    RETIRED = "RETIRED"  # rotated out: verifies and decrypts only
    DESTROYED = "DESTROYED"  # removed from the token by a key ceremony


class KeyMetadata(Contract):
    """HSM key lifecycle fact, compacted by key_id (feeds the key-expiry alert)."""

    key_id: Id
    label: str
    algorithm: Literal["AES-256", "ECDSA-P256"]
    created_at: UtcDatetime
    expires_at: UtcDatetime
    observed_at: UtcDatetime
    purpose: KeyPurpose | None = None
    version: Annotated[int, Field(ge=1)] | None = Field(default=None, description="rotation creates the next one")
    state: KeyState | None = None
    public_key_pem: Annotated[str, Field(max_length=1000)] | None = Field(
        default=None, description="SIGNING keys: the public key (SubjectPublicKeyInfo PEM) auditors verify with"
    )


class MultisigState(StrEnum):
    PENDING = "PENDING"  # collecting signatures
    APPROVED = "APPROVED"  # quorum reached; executable once the timelock ends
    EXECUTED = "EXECUTED"
    REJECTED = "REJECTED"  # refused (reason_code says why); nothing executed
    EXPIRED = "EXPIRED"  # not executed before expires_at


class GovernanceOperation(StrEnum):
    """What a multi-sig request may do (spec §4.2): movements and changes outside the automatic flows."""

    TREASURY_TRANSFER = "TREASURY_TRANSFER"
    LEDGER_CORRECTION = "LEDGER_CORRECTION"  # reconciliation's "correct"
    PAYOUT_APPROVAL = "PAYOUT_APPROVAL"  # a payout above the auto-approval limit
    PARAMETER_CHANGE = "PARAMETER_CHANGE"  # fee, cashback, limit parameters
    SIGNER_CHANGE = "SIGNER_CHANGE"
    KEY_CEREMONY = "KEY_CEREMONY"  # rotate early, restore, destroy (spec §4.1 quorum 3/5)
    PAUSE = "PAUSE"  # emergency pause: 2/5, immediate
    UNPAUSE = "UNPAUSE"


class MultisigRequest(Contract):
    """Multi-sig approval lifecycle (spec §4.2), compacted by request_id."""

    request_id: Id
    amount_kaus_units: KausUnits
    required_signers: Annotated[int, Field(ge=1, le=7)]
    signatures: Annotated[int, Field(ge=0, le=7)]
    state: MultisigState
    created_at: UtcDatetime
    updated_at: UtcDatetime
    operation: GovernanceOperation | None = None
    request_hash: Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")] | None = Field(
        default=None, description="the canonical hash the signers sign (docs/governance.md)"
    )
    timelock_until: UtcDatetime | None = Field(default=None, description="APPROVED: executable from then on")
    expires_at: UtcDatetime | None = None
    reason_code: GOVERNANCE_CODE | None = Field(default=None, description="REJECTED / EXPIRED, or a refused signature")
    reason: str | None = None


class GovernanceRequest(Contract):
    """A request for the signers (spec §4.2): what, how much, a nonce and an expiry; its canonical hash (typed,
    domain-separated, like EIP-712) is what each signer signs."""

    request_id: Id
    operation: GovernanceOperation
    amount_kaus_units: KausUnits = 0
    params: dict[str, Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, max_length=16, description="what the operation needs, e.g. from_account, to_account"
    )
    nonce: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
    expires_at: UtcDatetime
    requested_by: Id
    created_at: UtcDatetime


class GovernanceApproval(Contract):
    """One signer's signature over a request's canonical hash."""

    request_id: Id
    signer_id: Id
    request_hash: Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$")]
    signature: Annotated[str, Field(min_length=8, max_length=200, pattern=r"^[A-Za-z0-9+/]+={0,2}$")] = Field(
        description="ECDSA P-256 over the hash, DER, base64"
    )
    signed_at: UtcDatetime


class PauseState(Contract):
    """Whether money going out is halted (an executed PAUSE / UNPAUSE); compacted by scope."""

    scope: Literal["PLATFORM"]
    paused: bool
    request_id: Id = Field(description="the governance request that set it")
    reason: Annotated[str, Field(max_length=200)] = ""
    updated_at: UtcDatetime


class ParameterSetting(Contract):
    """A platform parameter's value set by an executed PARAMETER_CHANGE (domain/parameters.py lists the names and
    ranges); compacted by name: the latest record is the value in force, none means the built-in default."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.A-Z]*$")]
    value: Annotated[str, Field(min_length=1, max_length=20, pattern=r"^[0-9]+$")] = Field(
        description="a whole number (bps, K-AUS base units) as decimal digits"
    )
    request_id: Id = Field(description="the governance request that set it")
    updated_at: UtcDatetime


class AuditCheckpoint(Contract):
    """A signed tree head of the audit log (RFC 6962 style): the Merkle root over the first tree_size leaves."""

    log_id: Id
    tree_size: Annotated[StrictInt, Field(ge=0)]
    root_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    timestamp: UtcDatetime
    key_id: Id = Field(description="the signing key's id and version (governance.keys)")
    signature: Annotated[str, Field(min_length=8, max_length=200, pattern=r"^[A-Za-z0-9+/]+={0,2}$")] = Field(
        description="ECDSA P-256 over the checkpoint's canonical text, DER, base64 (docs/audit-log.md)"
    )


# --------------------------------------------------------------------------- alerts and audit


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(Contract):
    fingerprint: Id
    rule: str
    state: AlertState
    severity: Severity
    channel: Literal["slack", "pagerduty", "email", "sms"]
    summary: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: str | None = None
    starts_at: UtcDatetime
    ends_at: UtcDatetime | None = None


class AuditActor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)
    user_id: str
    ip: str | None = None
    user_agent: str = "NEXUS-X/2.0"


class AuditDetails(BaseModel):
    """Spec §7.2 details, with exact types: amounts are decimal strings, duration in ms."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)
    kaus_amount: str | None = Field(default=None, pattern=r"^-?[0-9]+\.[0-9]{6}$")
    fiat_amount: str | None = Field(default=None, pattern=r"^-?[0-9]+(\.[0-9]{1,3})?$")
    currency: Currency | None = None
    exchange_rate: Rate | None = None
    settlement_rail: Rail | None = None
    duration: DurationMs | None = Field(default=None, description="milliseconds")


class AuditRecord(BaseModel):
    """Spec §7.2 audit trail shape (camelCase on the wire, as the spec shows)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)
    audit_id: Id
    timestamp: UtcDatetime
    transaction_id: Id
    action: str
    actor: AuditActor
    details: AuditDetails
    signature: str | None = None
    blockchain_ref: str | None = None


class AuditLogEntry(Contract):
    """One leaf of the append-only audit log (docs/audit-log.md): the audit record exactly as appended (its bytes
    are the leaf: `leaf_b64`), its index, and the first signed checkpoint that covers it. In `record`, `signature`
    is that checkpoint's signature and `blockchainRef` is `<log_id>/<tree_size>/<leaf_index>`: where to find the
    checkpoint and the leaf (the log is the chain; nothing is written to a public blockchain)."""

    log_id: Id
    leaf_index: Annotated[StrictInt, Field(ge=0)]
    leaf_b64: Annotated[str, Field(min_length=4, max_length=32_768, pattern=r"^[A-Za-z0-9+/]+={0,2}$")]
    checkpoint_tree_size: Annotated[StrictInt, Field(ge=1)]
    record: AuditRecord


# --------------------------------------------------------------------------- dead letters


class DeadLetter(Contract):
    """A message the platform could not accept, with everything needed to fix and replay it."""

    source_topic: str
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    key_b64: str | None = Field(description="original key bytes, base64 (only a prefix if key_truncated)")
    value_b64: str | None = Field(description="original value bytes, base64 (only a prefix if value_truncated)")
    value_size_bytes: Annotated[int, Field(ge=0)]
    value_sha256: str | None = Field(default=None, description="SHA-256 (hex) of the whole original value")
    value_truncated: bool = Field(default=False, description="value_b64 holds only the first bytes of the value")
    value_ref: str | None = Field(
        default=None,
        description="key of the record on platform.deadletters.payloads holding the whole value; null when "
        "value_b64 is whole, or when the value was too large to store there",
    )
    key_size_bytes: Annotated[int, Field(ge=0)] | None = Field(default=None, description="original key length")
    key_sha256: str | None = Field(default=None, description="SHA-256 (hex) of the whole original key")
    key_truncated: bool = Field(default=False, description="key_b64 holds only the first bytes of the key")
    key_ref: str | None = Field(
        default=None, description="as value_ref, for the key: where the whole key is, if key_truncated"
    )
    reason_code: DEAD_LETTER_CODE
    reason: str = Field(description="what is wrong and how to fix it, for a person")
    errors: list[dict[str, str]] = Field(default_factory=list, description="one per failing field")
    received_at: UtcDatetime


__all__ = [name for name in dir() if not name.startswith("_")]
_ = (Bps, SignedMinorUnits)  # exported for later contracts


# --------------------------------------------------------------------------- bridge internals
# Records the High-Speed Bridge keeps for itself (not an upstream contract). A payout intent is persisted
# BEFORE the provider is called; an intent whose request has no completed/failed result after a restart is
# re-queried (and, if the provider never received it, re-sent) under the same idempotency key.


class BridgePayoutIntent(Contract):
    """One payout about to be sent to a provider (domain.bridge.PayoutIntent); keyed by bridge_tx_id."""

    intent_id: Id = Field(description="<bridge_tx_id>:<provider_attempt>:<send_no>")
    bridge_tx_id: Id
    idempotency_key: Id = Field(description="sent to the provider; equal to bridge_tx_id")
    provider_attempt: Annotated[int, Field(ge=1, le=10)]
    send_no: Annotated[int, Field(ge=1, le=10)]
    rail: Rail
    provider: Literal["PAYPAL", "STRIPE", "WISE", "TOSS", "ALIPAY", "PAYPAY", "PAYFORT"]
    amount_minor: Annotated[MinorUnits, Field(gt=0)]
    currency: Currency
    fee_minor: MinorUnits
    kaus_units: PositiveKausUnits
    rate: Rate
    lock_id: Id
    locked_at: UtcDatetime
    lock_expires_at: UtcDatetime
    hold_id: Id
    hold_units: PositiveKausUnits
    tried_providers: list[Literal["PAYPAL", "STRIPE", "WISE", "TOSS", "ALIPAY", "PAYPAY", "PAYFORT"]]
    request: BridgeRequest
    created_at: UtcDatetime
    rail_substitution_reason: RailSubstitution | None = Field(
        default=None, description="why `rail` is not the region's primary rail (null when it is)"
    )


class BridgeJournalEntry(Contract):
    """The bridge's durable memory of one transaction, compacted by bridge_tx_id (exactly one of the three).

    `intent`: a payout is about to be (or was) sent to the provider — after a crash it is resolved with the
    provider under the same idempotency key, never sent as a new payout. `completed` / `failed`: the final
    result; a duplicate request gets it back. The `*_us`, `provider` and `fingerprint` fields let a restarted
    worker rebuild the exact result (the wire results round durations to ms).
    """

    bridge_tx_id: Id
    request_id: Id
    intent: BridgePayoutIntent | None = None
    completed: BridgeSettlementCompleted | None = None
    failed: BridgeSettlementFailed | None = None
    fingerprint: str = Field(default="", max_length=128, description="hash of the request payload")
    phase_durations_us: dict[BridgePhase, Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=dict)
    total_duration_us: Annotated[StrictInt, Field(ge=0)] | None = None
    provider: Literal["PAYPAL", "STRIPE", "WISE", "TOSS", "ALIPAY", "PAYPAY", "PAYFORT"] | None = None
    hold_voided: bool = False
    needs_reconciliation: bool = False
    request_record: str | None = Field(
        default=None,
        max_length=41,
        pattern=r"^[0-9]{1,20}:[0-9]{1,20}$",
        description="<partition>:<offset> of the bridge.requests record that began the transaction: that record "
        "read again is answered with repeat false, any other record with the same request_id with repeat true",
    )

    @model_validator(mode="after")
    def _one_state(self) -> BridgeJournalEntry:
        if sum(x is not None for x in (self.intent, self.completed, self.failed)) != 1:
            raise ValueError("exactly one of intent, completed, failed")
        return self


__all__ += ["BridgeJournalEntry", "BridgePayoutIntent"]  # the list above is computed before this section
