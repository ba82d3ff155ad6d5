"""Multi-sig governance (spec §4.2) — the functional core. Reason codes first; the rest is being built.

Pure: no clock reads, no I/O. See docs/governance.md.
"""

from __future__ import annotations

from enum import StrEnum


class GovernanceCode(StrEnum):
    INVALID_REQUEST = "INVALID_REQUEST"  # the request cannot be executed as given (a param missing, ...)
    UNKNOWN_REQUEST = "UNKNOWN_REQUEST"  # a signature for a request never seen
    NOT_A_SIGNER = "NOT_A_SIGNER"  # the signer id is not in the signer set
    DUPLICATE_SIGNER = "DUPLICATE_SIGNER"  # this signer already signed this request
    WRONG_HASH = "WRONG_HASH"  # the signature is over another request's hash
    BAD_SIGNATURE = "BAD_SIGNATURE"  # the signature does not verify with the signer's public key
    NONCE_REPLAYED = "NONCE_REPLAYED"  # the nonce was used by another request
    EXPIRED = "EXPIRED"  # the request expired before it was executed
    TIMELOCK_NOT_ENDED = "TIMELOCK_NOT_ENDED"  # an execution before the timelock ends
    ALREADY_FINAL = "ALREADY_FINAL"  # executed, rejected or expired already
    EXECUTION_FAILED = "EXECUTION_FAILED"  # the approved operation failed when executed (e.g. the ledger refused)
