"""Every reason code an answer topic can carry, declared from the enums that produce them.

Part of the contract: consumers switch on these. Each `*_CODE` type is a string field whose JSON Schema lists
its codes (`enum`) and whose validation refuses any other, so a code the platform sends is always documented.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from domain.bridge import ReasonCode as BridgeCode
from domain.ledger import LedgerCode
from domain.order_book import CancelReason, ExpiryReason, RejectCode
from domain.trade_settlement import SettlementCode

REASON_CODES: dict[str, str] = {
    "MALFORMED_JSON": "the value is not valid UTF-8 JSON",
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
    "UNKNOWN_SCHEMA_ID": "the value is framed (Confluent wire format) with a schema id that is not a registered"
    " version of the topic's subject `<topic>-value`, or no schema registry is configured",
    "PROCESSING_ERROR": "a valid-looking record made the platform fail (our bug); nothing of it was applied, the"
    " reason names the error; send it again once the platform is fixed",
}


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


ORDER_EVENT_CODES = codes(RejectCode, CancelReason, ExpiryReason)
SETTLEMENT_CODES = codes(SettlementCode)
LEDGER_CODES = codes(LedgerCode)
BRIDGE_FAILURE_CODES = codes(BridgeCode)
DEAD_LETTER_CODES = tuple(REASON_CODES)

ORDER_EVENT_CODE = code_field(ORDER_EVENT_CODES)
SETTLEMENT_CODE = code_field(SETTLEMENT_CODES)
LEDGER_CODE = code_field(LEDGER_CODES)
BRIDGE_FAILURE_CODE = code_field(BRIDGE_FAILURE_CODES)
DEAD_LETTER_CODE = code_field(DEAD_LETTER_CODES)
