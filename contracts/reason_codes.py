"""Dead-letter reason codes: part of the contract, producers may switch on them."""

from __future__ import annotations

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
    "PROCESSING_ERROR": "a valid-looking record made the platform fail (our bug); nothing of it was applied, the"
    " reason names the error; send it again once the platform is fixed",
}
