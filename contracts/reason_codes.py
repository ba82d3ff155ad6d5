"""Every reason code an answer topic can carry, declared from the enums that produce them.

Part of the contract: consumers switch on these. Each `*_CODE` type is a string field whose JSON Schema lists
its codes (`enum`) and whose validation refuses any other, so a code the platform sends is always documented.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from domain.bridge import ReasonCode as BridgeCode
from domain.governance import GovernanceCode
from domain.ledger import LedgerCode
from domain.order_book import CancelReason, ExpiryReason, RejectCode
from domain.payouts import PayoutFailCode, RuleCode, WaitCode
from domain.rails import RailSubstitution
from domain.staking import StakingCode
from domain.trade_settlement import SettlementCode

REASON_CODES: dict[str, str] = {
    "MALFORMED_JSON": "the value is not valid UTF-8 JSON (or, framed in Confluent's wire format, its 5-byte"
    " header is cut short)",
    "EMPTY_VALUE": "the record has no value (null or zero bytes)",
    "EMPTY_KEY": "the record key is missing or empty; it must equal the value's key field",
    "KEY_MISMATCH": "the record key differs from the value's key field (it decides the owning partition)",
    "OVERSIZED": "the value is larger than the topic's limit",
    "MISSING_FIELD": "a required field is absent",
    "UNKNOWN_FIELD": "a field the contract does not define (typos are not ignored on money messages)",
    "WRONG_TYPE": "a field has the wrong JSON type (e.g. a string or float where an integer is required)",
    "UNKNOWN_ENUM_VALUE": "a field's value is not one of the allowed values",
    "UNKNOWN_MESSAGE_TYPE": "the `type` discriminator names no known message",
    "NEGATIVE_AMOUNT": "an amount or quantity is negative",
    "NOT_FINITE": "a number is NaN or infinite",
    "AMOUNT_TOO_LARGE": "an amount has more than 18 digits",
    "OUT_OF_RANGE": "a number is outside its allowed range",
    "TOO_MANY_DIGITS": "a decimal has more digits than allowed",
    "NAIVE_TIMESTAMP": "a timestamp has no UTC offset",
    "INVALID_TIMESTAMP": "a timestamp is not ISO 8601",
    "INVALID_ID": "an id is empty or longer than 128 characters",
    "INVALID_FORMAT": "a string does not match its pattern (ids: letters, digits and ._:/@-)",
    "INVALID_VALUE": "a cross-field rule failed (e.g. a LIMIT order without a price); the reason says which",
    "PROCESSING_ERROR": "a valid-looking record made the platform fail (our bug); nothing of it was applied, the"
    " reason names the error; send it again once the platform is fixed",
    "NOTIFICATION_UNDELIVERED": "a holder notification failed on every attempt (the reason gives the last error); "
    "the record is the notification, to send again by hand",
}
# An auto-payout rule that cannot work is dead-lettered with one of these (domain.payouts.validate_rule).
RULE_MEANINGS: dict[str, str] = {
    RuleCode.INVALID_ID: "the rule id is longer than 64 characters (payout ids are built from it)",
    RuleCode.INVALID_AMOUNT: "an amount is not integer K-AUS base units in 0..10^18",
    RuleCode.MAX_PER_TX_NOT_POSITIVE: "max_payout_per_tx_kaus_units must be positive",
    RuleCode.PAYOUT_ACCOUNT_MISSING: "payout_account is empty",
    RuleCode.PROVIDER_NOT_OFFERED: "the provider pays no holder payouts (PAYPAL, STRIPE, WISE and TOSS do)",
    RuleCode.CURRENCY_NOT_PAID: "no rail of the provider pays out this currency",
    RuleCode.THRESHOLD_MISSING: "a THRESHOLD rule without threshold_kaus_units",
    RuleCode.KEEP_MINIMUM_ABOVE_THRESHOLD: "keep_minimum_kaus_units is above threshold_kaus_units: nothing could "
    "ever be paid",
    RuleCode.SCHEDULE_TYPE_MISSING: "a SCHEDULE rule without schedule_type",
    RuleCode.SCHEDULE_TIME_MISSING: "a SCHEDULE rule without schedule_time_utc",
    RuleCode.SCHEDULE_TIME_INVALID: "schedule_time_utc is not HH:MM (00:00-23:59)",
    RuleCode.SCHEDULE_DAY_MISSING: "a WEEKLY or MONTHLY rule without schedule_day",
    RuleCode.SCHEDULE_DAY_OUT_OF_RANGE: "schedule_day is not 0-6 (WEEKLY, 0 = Sunday) or 1-31 (MONTHLY)",
    RuleCode.DIVIDEND_SOURCE_MISSING: "a DIVIDEND rule without dividend_source",
    RuleCode.FIELD_NOT_FOR_TRIGGER: "a field of another trigger type is set (e.g. a THRESHOLD rule with a "
    "schedule_time_utc): it would be ignored, so the rule is refused",
    RuleCode.TOO_MANY_RULES: "the account already has the maximum number of rules",
}
for _code, _meaning in RULE_MEANINGS.items():
    REASON_CODES.setdefault(str(_code), _meaning)


def codes(*enums: type[Enum]) -> tuple[str, ...]:
    """The values of `enums`, in declaration order, each once."""
    return tuple(dict.fromkeys(str(member.value) for enum in enums for member in enum))


def code_field(allowed: tuple[str, ...]) -> Any:
    """A string restricted to `allowed` (the schema lists them; decoding refuses others)."""
    allowed_set = frozenset(allowed)

    def check(value: str) -> str:
        if value not in allowed_set:
            raise ValueError(f"{value!r} is not a documented reason code")
        return value

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"enum": list(allowed)})]


# What each code an answer carries means, one line each (README tables). Every code of every set has one:
# tests/unit/test_contract_docs.py checks it, so a new domain code is documented before it ships.
ORDER_EVENT_MEANINGS: dict[str, str] = {
    RejectCode.UNKNOWN_MARKET: "the market id is not `YYYY-MM-DDTHH:MMZ/REGION` (a real UTC minute, then the region)",
    RejectCode.TOO_MANY_MARKETS: "the matching partition holds its maximum number of open markets",
    RejectCode.DUPLICATE_ORDER_ID: "this order id was already submitted to this market (accepted or not): ids are "
    "single-use per market",
    RejectCode.GATE_CLOSED: "the market's gate has closed (delivery start minus the gate-closure lead)",
    RejectCode.INVALID_QUANTITY: "the quantity is above the per-order maximum",
    RejectCode.LOT_SIZE: "the quantity is not a multiple of the lot size",
    RejectCode.INVALID_PRICE: "a LIMIT price is missing or above the maximum price",
    RejectCode.TICK_SIZE: "the price is not a multiple of the tick size",
    RejectCode.PRICE_OUT_OF_BAND: "the price is outside the band around the market's reference (last trade) price",
    RejectCode.INVALID_EXPIRY: "expires_at is not after the order's own time (the book's clock)",
    RejectCode.BOOK_FULL: "the book holds its maximum number of resting orders",
    RejectCode.UNKNOWN_ORDER: "CANCEL / AMEND of an order that is not open (never rested, filled, cancelled, expired)",
    RejectCode.NOT_OWNER: "CANCEL / AMEND from another account than the order's",
    RejectCode.NO_CHANGE: "an AMEND that changes neither price nor quantity",
    CancelReason.USER_REQUESTED: "cancelled by a CANCEL command",
    CancelReason.SELF_TRADE_PREVENTION: "a newer order of the same account would have traded with this resting "
    "order: the resting one is cancelled, the newer one keeps matching",
    CancelReason.IOC_NO_LIQUIDITY: "a MARKET order's unfilled rest: nothing left on the other side",
    CancelReason.IOC_PRICE_BAND: "a MARKET order's unfilled rest: what is left on the other side is outside the band",
    ExpiryReason.ORDER_EXPIRY: "the order reached its own expires_at",
    ExpiryReason.GATE_CLOSURE: "the market's gate closed with the order still resting",
}
SETTLEMENT_MEANINGS: dict[str, str] = {
    SettlementCode.INVALID_TRADE: "the trade is inconsistent (same buyer and seller, notional not price x quantity "
    "/ 1000, ...); nothing moved",
    SettlementCode.TRADE_ID_CONFLICT: "this trade id was already settled with other content; nothing moved",
    SettlementCode.DECLARATION_ID_CONFLICT: "this dividend declaration id was already used",
    SettlementCode.LEDGER_REJECTED: "the ledger refused a leg (e.g. the buyer's INSUFFICIENT_FUNDS); the reason "
    "names the leg and the ledger's code; nothing moved",
}
LEDGER_MEANINGS: dict[str, str] = {
    LedgerCode.INVALID_ID: "the command id is empty or longer than 128 characters",
    LedgerCode.ID_CONFLICT: "this command id was already applied with other content",
    LedgerCode.INVALID_AMOUNT: "the amount is not in 1..10^18 units",
    LedgerCode.SAME_ACCOUNT: "debit and credit account are the same",
    LedgerCode.UNKNOWN_DEBIT_ACCOUNT: "the debit account does not exist",
    LedgerCode.UNKNOWN_CREDIT_ACCOUNT: "the credit account does not exist",
    LedgerCode.ASSET_MISMATCH: "the accounts hold different assets (K-AUS vs carbon milli-credits)",
    LedgerCode.INSUFFICIENT_FUNDS: "the debit account's available balance (balance minus its holds) is below the "
    "amount",
    LedgerCode.BALANCE_LIMIT: "a balance would leave the ledger's 128-bit range",
    LedgerCode.INVALID_EXPIRY: "a hold's expires_at is not after the ledger's clock, or more than 30 days ahead",
    LedgerCode.UNKNOWN_PENDING: "POST_HOLD / VOID_HOLD of a hold that does not exist",
    LedgerCode.PENDING_ALREADY_POSTED: "the hold was already captured (by another command id)",
    LedgerCode.PENDING_ALREADY_VOIDED: "the hold was already released",
    LedgerCode.PENDING_EXPIRED: "the hold expired before this command",
    LedgerCode.POST_EXCEEDS_PENDING: "the capture is larger than the hold",
    LedgerCode.LINKED_EVENT_FAILED: "another command of the same atomic step failed (e.g. one of a capture's rewards)",
    LedgerCode.BATCH_TOO_LARGE: "too many movements in one atomic step",
    StakingCode.INVALID_COMMAND: "a STAKE / UNSTAKE with an id or amount the vault cannot take",
    StakingCode.POSITION_ID_CONFLICT: "this position id was already used with other content",
    StakingCode.UNKNOWN_POSITION: "UNSTAKE of a position that does not exist (or was already released)",
    StakingCode.NOT_OWNER: "UNSTAKE from another account than the position's",
    StakingCode.STILL_LOCKED: "UNSTAKE before the position's lock period ended",
    StakingCode.LEDGER_REJECTED: "the ledger refused the stake's movement (e.g. INSUFFICIENT_FUNDS; the reason "
    "says which)",
}
BRIDGE_FAILURE_MEANINGS: dict[str, str] = {
    BridgeCode.INSUFFICIENT_FUNDS: "the payer's available K-AUS does not cover the hold, which is sized for the "
    "worst rate the slippage limit accepts (more than the debit at the quoted rate)",
    BridgeCode.HOLD_REJECTED: "the ledger refused the hold for another reason (its words are in `reason`)",
    BridgeCode.STALE_RATE: "no fresh FX quote for the currency: every source's latest is too old",
    BridgeCode.SLIPPAGE: "the live rate moved from quoted_rate by the slippage limit or more",
    BridgeCode.RATE_LOCK_EXPIRED: "the locked rate expired before a payout could be started (after failovers)",
    BridgeCode.HOLD_INSUFFICIENT: "the K-AUS needed exceeds the hold (guard; not expected)",
    BridgeCode.NO_RAIL: "no rail can pay this currency in this region now (none eligible, or all unavailable)",
    BridgeCode.PROVIDER_DECLINED: "the provider refused this payment (a 4xx about it); nothing was paid",
    BridgeCode.PAYOUT_FAILED: "every provider tried failed; nothing was paid",
    BridgeCode.HOLD_POST_FAILED: "the ledger refused the capture (not sent: such a payment still completes and is "
    "flagged for reconciliation)",
    BridgeCode.AMOUNT_TOO_LARGE: "the hold this payment needs is above the ledger's 10^18 units per transfer",
    BridgeCode.PAUSED: "money out is paused by governance (an emergency pause): refused before the provider was "
    "called, the hold voided",
    BridgeCode.AMOUNT_TOO_SMALL: "a holder payout whose K-AUS converts to less than one minor unit of its currency "
    "at the locked rate: nothing to pay, the hold is voided",
}
GOVERNANCE_MEANINGS: dict[str, str] = {
    GovernanceCode.INVALID_REQUEST: "the request cannot be executed as given (the reason names the field)",
    GovernanceCode.UNKNOWN_REQUEST: "a signature for a request the platform has not seen",
    GovernanceCode.NOT_A_SIGNER: "the signer is not one of the signer set",
    GovernanceCode.DUPLICATE_SIGNER: "this signer already signed this request: one signature per signer counts",
    GovernanceCode.WRONG_HASH: "the signature is over another request's hash",
    GovernanceCode.BAD_SIGNATURE: "the signature does not verify with the signer's public key",
    GovernanceCode.NONCE_REPLAYED: "another request already used this nonce",
    GovernanceCode.EXPIRED: "the request expired before it was executed",
    GovernanceCode.TIMELOCK_NOT_ENDED: "an execution before the request's timelock ended",
    GovernanceCode.ALREADY_FINAL: "the request was already executed, rejected or expired",
    GovernanceCode.EXECUTION_FAILED: "the approved operation failed when executed (the reason says why)",
}
PAYOUT_WAIT_MEANINGS: dict[str, str] = {
    WaitCode.KYC_UNKNOWN: "no KYC status received for the holder yet: paid once it is VERIFIED",
    WaitCode.KYC_PENDING: "the holder's KYC review is pending: paid once it is VERIFIED",
    WaitCode.KYC_REJECTED: "the holder's KYC was rejected: nothing leaves until a new review verifies them",
    WaitCode.KYC_EXPIRED: "the holder's KYC expired: paid once it is renewed (VERIFIED)",
    WaitCode.PAUSED: "money out is paused by governance (an emergency pause): paid once unpaused",
    WaitCode.APPROVAL_PENDING: "the payout is above the auto-approval limit: a PAYOUT_APPROVAL request waits for "
    "the signers (governance.multisig); paid once it is executed",
}
PAYOUT_FAILURE_MEANINGS: dict[str, str] = {
    **BRIDGE_FAILURE_MEANINGS,
    PayoutFailCode.APPROVAL_REFUSED: "the payout's PAYOUT_APPROVAL request was rejected or expired: nothing was "
    "paid and no hold was taken",
}

RAIL_SUBSTITUTION_MEANINGS: dict[str, str] = {
    RailSubstitution.PRIMARY_CIRCUIT_OPEN: "the region's rail failed 3 times in a row: its circuit breaker refuses "
    "calls for a cool-down",
    RailSubstitution.PRIMARY_FAILED: "the region's rail was tried for this payment and failed",
    RailSubstitution.PRIMARY_NOT_CONFIGURED: "this deployment has no adapter for the region's rail",
    RailSubstitution.CURRENCY_NOT_ON_PRIMARY: "the payment's currency is not the region's: only a cross-border rail "
    "pays it",
}

# The book's checks that the contract makes first: such an order is dead-lettered at ingress and never reaches a
# book, so these codes never appear on energy.orders.events (tests/unit/test_contract_examples.py proves each).
REFUSED_AT_INGRESS = frozenset(
    {
        RejectCode.INVALID_ORDER_ID,
        RejectCode.INVALID_ACCOUNT,
        RejectCode.WRONG_MARKET,
        RejectCode.MARKET_ORDER_WITH_PRICE,
    }
)
ORDER_EVENT_CODES = tuple(c for c in codes(RejectCode, CancelReason, ExpiryReason) if c not in REFUSED_AT_INGRESS)
SETTLEMENT_CODES = codes(SettlementCode)
LEDGER_CODES = codes(LedgerCode, StakingCode)
BRIDGE_FAILURE_CODES = codes(BridgeCode)
PAYOUT_FAILURE_CODES = codes(BridgeCode, PayoutFailCode)
DEAD_LETTER_CODES = tuple(REASON_CODES)
PAYOUT_WAIT_CODES = codes(WaitCode)
GOVERNANCE_CODES = codes(GovernanceCode)

ORDER_EVENT_CODE = code_field(ORDER_EVENT_CODES)
SETTLEMENT_CODE = code_field(SETTLEMENT_CODES)
LEDGER_CODE = code_field(LEDGER_CODES)
BRIDGE_FAILURE_CODE = code_field(BRIDGE_FAILURE_CODES)
PAYOUT_FAILURE_CODE = code_field(PAYOUT_FAILURE_CODES)
DEAD_LETTER_CODE = code_field(DEAD_LETTER_CODES)
PAYOUT_WAIT_CODE = code_field(PAYOUT_WAIT_CODES)
GOVERNANCE_CODE = code_field(GOVERNANCE_CODES)
