"""The `ledger.commands` values the services send, built from the command's fields without a model.

One function per command type the platform writes (matching: SETTLE_TRADE; the bridge: PLACE_HOLD, POST_HOLD
with its rewards, VOID_HOLD). Each writes the fields in the contract's order, the way `LEDGER_COMMANDS.encode`
of the validated model would (tests/unit/test_output_bytes.py and tests/unit/test_bridge_service.py hold them
to it). Times are epoch milliseconds; the caller reads the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from contracts import models as m
from contracts.construct import dump_json, utc_text_ms
from domain.ledger import Reference

_SOURCE_JSON: dict[m.EnergySource | None, bytes] = {None: b"null", **{s: dump_json(s) for s in m.EnergySource}}

HOLD_REASON = "bridge.hold"
REWARD_REASON = "bridge.reward"


class RewardGrant(NamedTuple):
    """A `RewardGrant` of a capture: a posted transfer from an issuance account to the payer."""

    transfer_id: str
    from_account: m.RewardAccount
    account_id: str
    amount_kaus_units: int
    reason: str = REWARD_REASON
    reference: Reference | None = None


def _reference(ref: Reference | None) -> dict[str, str] | None:
    """A `LedgerReference` object (kind, id, leg, in the contract's order)."""
    return None if ref is None else {"kind": ref.kind, "id": ref.id, "leg": ref.leg}


def settle_trade(trade_id: str, trade: bytes, source: m.EnergySource | None) -> bytes:
    """A SettleTrade for the already encoded `trade` (its bytes are embedded, not parsed again)."""
    return b"".join(
        (
            b'{"type":"SETTLE_TRADE","command_id":',
            dump_json(trade_id),
            b',"trade":',
            trade,
            b',"seller_energy_source":',
            _SOURCE_JSON[source],
            b"}",
        )
    )


def place_hold(
    command_id: str,
    debit_account_id: str,
    credit_account_id: str,
    amount_kaus_units: int,
    expires_at_ms: int,
    occurred_at_ms: int,
    reference: Reference | None = None,
) -> bytes:
    return dump_json(
        {
            "type": "PLACE_HOLD",
            "command_id": command_id,
            "debit_account_id": debit_account_id,
            "credit_account_id": credit_account_id,
            "amount_kaus_units": amount_kaus_units,
            "expires_at": utc_text_ms(expires_at_ms),
            "reason": HOLD_REASON,
            "reference": _reference(reference),
            "occurred_at": utc_text_ms(occurred_at_ms),
        }
    )


def post_hold(
    command_id: str, hold_id: str, amount_kaus_units: int, rewards: Sequence[RewardGrant], occurred_at_ms: int
) -> bytes:
    """A capture; the ledger applies its `rewards` with it, each once by its own transfer id."""
    return dump_json(
        {
            "type": "POST_HOLD",
            "command_id": command_id,
            "hold_id": hold_id,
            "amount_kaus_units": amount_kaus_units,
            "rewards": [
                {
                    "transfer_id": grant.transfer_id,
                    "from_account_id": grant.from_account.value,
                    "account_id": grant.account_id,
                    "amount_kaus_units": grant.amount_kaus_units,
                    "reason": grant.reason,
                    "reference": _reference(grant.reference),
                }
                for grant in rewards
            ],
            "occurred_at": utc_text_ms(occurred_at_ms),
        }
    )


def void_hold(command_id: str, hold_id: str, occurred_at_ms: int) -> bytes:
    return dump_json(
        {"type": "VOID_HOLD", "command_id": command_id, "hold_id": hold_id, "occurred_at": utc_text_ms(occurred_at_ms)}
    )


__all__ = ["HOLD_REASON", "REWARD_REASON", "RewardGrant", "place_hold", "post_hold", "settle_trade", "void_hold"]
