"""Cashback and the ecosystem bonus of a bridge settlement (spec §2.2 phase 4), in exact K-AUS base units.

Rules:

* **Base**: the K-AUS actually debited from the payer for this payment (the posted amount, not the hold).
* **Cashback by payer tier** (the spec's "1-5% tier-based"), in basis points of the base:
  BRONZE 100 (1%), SILVER 200 (2%), GOLD 300 (3%), PLATINUM 400 (4%), DIAMOND 500 (5%).
* **Ecosystem bonus** ("AURA SYDNEY / NOMAD MONTHLY: 10%"): when the merchant belongs to the AURA_SYDNEY
  or NOMAD_MONTHLY program, the payer receives an extra **10% of the cashback** (1,000 bps of it), i.e. a
  GOLD payer earns 3% + 0.3% of the debit. We read "10%" as a boost of the reward rather than 10% of the
  payment because 10% of the payment would exceed every tier's cashback several times over.
* **Governed rates**: the rates above are the defaults; a PARAMETER_CHANGE executed by the signers
  (``governance.parameters``: ``cashback.bps.<TIER>``, ``cashback.ecosystem_bonus_bps_of_cashback``) replaces
  them, and :func:`compute_rewards` takes the rates in force as :class:`RewardRates` (the bridge's configuration).
* **Rounding**: each amount is rounded **down** to a whole base unit (1 unit = 10**-6 K-AUS); the bonus
  is computed from the already-rounded cashback. Rewards are never over-paid, and a payment too small to
  earn one unit earns none.

Example: 1,000 K-AUS debited (1_000_000_000 units) by a GOLD payer at an AURA_SYDNEY merchant →
cashback 30_000_000 units (30 K-AUS), bonus 3_000_000 units (3 K-AUS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

BPS = 10_000


class PayerTier(StrEnum):
    BRONZE = "BRONZE"
    SILVER = "SILVER"
    GOLD = "GOLD"
    PLATINUM = "PLATINUM"
    DIAMOND = "DIAMOND"


CASHBACK_BPS: dict[PayerTier, int] = {
    PayerTier.BRONZE: 100,
    PayerTier.SILVER: 200,
    PayerTier.GOLD: 300,
    PayerTier.PLATINUM: 400,
    PayerTier.DIAMOND: 500,
}
ECOSYSTEM_PROGRAMS: frozenset[str] = frozenset({"AURA_SYDNEY", "NOMAD_MONTHLY"})
ECOSYSTEM_BONUS_BPS_OF_CASHBACK = 1_000

assert set(CASHBACK_BPS) == set(PayerTier)


@dataclass(frozen=True, slots=True)
class RewardRates:
    """The cashback rate per payer tier and the ecosystem bonus, in bps (of the debit, of the cashback)."""

    cashback_bps: Mapping[PayerTier, int] = field(default_factory=lambda: dict(CASHBACK_BPS))
    ecosystem_bonus_bps_of_cashback: int = ECOSYSTEM_BONUS_BPS_OF_CASHBACK

    def __post_init__(self) -> None:
        assert set(self.cashback_bps) == set(PayerTier), self.cashback_bps
        assert all(0 <= bps <= BPS for bps in self.cashback_bps.values()), self.cashback_bps
        assert 0 <= self.ecosystem_bonus_bps_of_cashback <= BPS, self.ecosystem_bonus_bps_of_cashback


DEFAULT_RATES = RewardRates()


@dataclass(frozen=True, slots=True)
class Rewards:
    cashback_kaus_units: int
    ecosystem_bonus_kaus_units: int
    cashback_bps: int
    bonus_bps_of_cashback: int

    @property
    def total_kaus_units(self) -> int:
        return self.cashback_kaus_units + self.ecosystem_bonus_kaus_units


def compute_rewards(
    kaus_debited_units: int, tier: PayerTier, merchant_program: str | None, rates: RewardRates = DEFAULT_RATES
) -> Rewards:
    """The rewards of ``kaus_debited_units`` at ``rates`` (the rates in force when the payment is settled)."""
    assert isinstance(kaus_debited_units, int) and kaus_debited_units >= 0
    cashback_bps = rates.cashback_bps[tier]
    cashback = kaus_debited_units * cashback_bps // BPS
    bonus_bps = rates.ecosystem_bonus_bps_of_cashback if merchant_program in ECOSYSTEM_PROGRAMS else 0
    bonus = cashback * bonus_bps // BPS
    assert 0 <= bonus <= cashback <= kaus_debited_units
    return Rewards(cashback, bonus, cashback_bps, bonus_bps)
