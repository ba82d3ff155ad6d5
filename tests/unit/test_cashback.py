"""domain/cashback.py: tiers, the ecosystem bonus base, floor rounding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import models as m
from domain.cashback import CASHBACK_BPS, PayerTier, compute_rewards

K = 1_000_000  # units per K-AUS


@pytest.mark.parametrize(
    ("tier", "cashback_units"),
    [
        (PayerTier.BRONZE, 10 * K),
        (PayerTier.SILVER, 20 * K),
        (PayerTier.GOLD, 30 * K),
        (PayerTier.PLATINUM, 40 * K),
        (PayerTier.DIAMOND, 50 * K),
    ],
)
def test_tier_cashback_on_1000_kaus(tier: PayerTier, cashback_units: int) -> None:
    r = compute_rewards(1_000 * K, tier, None)
    assert r.cashback_kaus_units == cashback_units
    assert r.ecosystem_bonus_kaus_units == 0


@pytest.mark.parametrize("program", ["AURA_SYDNEY", "NOMAD_MONTHLY"])
def test_ecosystem_bonus_is_10_percent_of_the_cashback(program: str) -> None:
    r = compute_rewards(1_000 * K, PayerTier.GOLD, program)
    assert (r.cashback_kaus_units, r.ecosystem_bonus_kaus_units) == (30 * K, 3 * K)
    assert r.total_kaus_units == 33 * K


def test_other_programs_earn_no_bonus() -> None:
    assert compute_rewards(1_000 * K, PayerTier.DIAMOND, "SOMETHING_ELSE").ecosystem_bonus_kaus_units == 0


def test_rounding_is_floor_and_bonus_uses_the_rounded_cashback() -> None:
    # 1,003,009,028 units x 3% = 30,090,270.84 → 30,090,270; bonus 10% → 3,009,027.0 → 3,009,027
    r = compute_rewards(1_003_009_028, PayerTier.GOLD, "AURA_SYDNEY")
    assert r.cashback_kaus_units == 30_090_270
    assert r.ecosystem_bonus_kaus_units == 3_009_027
    # 33 units x 1% = 0.33 → 0: too small to earn anything
    assert compute_rewards(33, PayerTier.BRONZE, "NOMAD_MONTHLY").total_kaus_units == 0
    # 199 units x 5% = 9.95 → 9; bonus 0.9 → 0
    assert (compute_rewards(199, PayerTier.DIAMOND, "NOMAD_MONTHLY").cashback_kaus_units, 0) == (9, 0)


@given(
    units=st.integers(min_value=0, max_value=10**18),
    tier=st.sampled_from(list(PayerTier)),
    program=st.sampled_from([None, "AURA_SYDNEY", "NOMAD_MONTHLY", "X"]),
)
def test_rewards_are_exact_floors(units: int, tier: PayerTier, program: str | None) -> None:
    r = compute_rewards(units, tier, program)
    assert r.cashback_kaus_units * 10_000 <= units * CASHBACK_BPS[tier] < (r.cashback_kaus_units + 1) * 10_000
    if program in ("AURA_SYDNEY", "NOMAD_MONTHLY"):
        assert r.ecosystem_bonus_kaus_units == r.cashback_kaus_units // 10
    else:
        assert r.ecosystem_bonus_kaus_units == 0


def test_domain_tiers_match_the_contract_enum() -> None:
    assert {t.value for t in PayerTier} == {t.value for t in m.PayerTier}
