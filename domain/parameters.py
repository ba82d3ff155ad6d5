"""The platform parameters a PARAMETER_CHANGE may set (spec §4.2: fee, cashback, limit parameters).

Each has a name, an integer range and its built-in default; a governance request naming anything else, or a
value outside the range, is refused on arrival. An executed change is published on ``governance.parameters``
(compacted by name) and the services that use the parameter follow that topic, so the latest executed value
applies to every decision made after it is read. Values are integers (bps, K-AUS base units): no floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain.cashback import CASHBACK_BPS, ECOSYSTEM_BONUS_BPS_OF_CASHBACK, PayerTier, RewardRates

BPS_MAX = 10_000
KAUS_UNITS_MAX = 10**18  # the ledger's largest transfer


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    minimum: int
    maximum: int
    default: int
    meaning: str


AUTO_APPROVAL_LIMIT = "payouts.auto_approval_limit_kaus_units"
SLIPPAGE_LIMIT = "fx.slippage_limit_bps"
ECOSYSTEM_BONUS = "cashback.ecosystem_bonus_bps_of_cashback"


def cashback_name(tier: PayerTier) -> str:
    return f"cashback.bps.{tier}"


PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter(
            AUTO_APPROVAL_LIMIT,
            0,
            KAUS_UNITS_MAX,
            50_000 * 10**6,
            "a payout of more K-AUS than this waits for a PAYOUT_APPROVAL by the signers",
        ),
        Parameter(SLIPPAGE_LIMIT, 1, BPS_MAX - 1, 30, "the FX slippage the bridge accepts against a quoted rate"),
        Parameter(
            ECOSYSTEM_BONUS,
            0,
            BPS_MAX,
            ECOSYSTEM_BONUS_BPS_OF_CASHBACK,
            "the ecosystem bonus, in bps of the cashback, for merchants in an ecosystem program",
        ),
        *(
            Parameter(cashback_name(tier), 0, BPS_MAX, bps, f"the cashback a {tier} payer earns, in bps of the debit")
            for tier, bps in CASHBACK_BPS.items()
        ),
    )
}


class InvalidParameter(ValueError):
    """The name is not a platform parameter, or the value is not an integer in its range (the message says which)."""


def parse(name: str, value: str) -> int:
    """The value of ``name`` given as text (decimal digits), checked against the parameter's range."""
    parameter = PARAMETERS.get(name)
    if parameter is None:
        raise InvalidParameter(f"{name!r} is not a platform parameter (one of {', '.join(sorted(PARAMETERS))})")
    if not value.isascii() or not value.isdigit():
        raise InvalidParameter(f"{name} takes a whole number (decimal digits), not {value!r}")
    number = int(value)
    if not parameter.minimum <= number <= parameter.maximum:
        raise InvalidParameter(f"{name} must be from {parameter.minimum} to {parameter.maximum}, not {number}")
    return number


def value_of(values: Mapping[str, int], name: str) -> int:
    """``name``'s value in force: the latest executed change in ``values`` (name -> checked value), else its default."""
    return values.get(name, PARAMETERS[name].default)


def reward_rates(values: Mapping[str, int]) -> RewardRates:
    """The cashback rates and the ecosystem bonus in force (what ``domain.cashback.compute_rewards`` takes)."""
    return RewardRates(
        {tier: value_of(values, cashback_name(tier)) for tier in PayerTier}, value_of(values, ECOSYSTEM_BONUS)
    )
