"""The staking vault (domain.staking): lock, unbonding, idempotent commands, staked K-AUS neither spendable
nor paid out, time-weighted STAKING weights, snapshot."""

from __future__ import annotations

import pytest

from domain.ledger import Asset, Ledger, LedgerCode, Transfer
from domain.money import Currency
from domain.payouts import AutoPayouts, KycStatus, Rule, Trigger
from domain.rails import Provider
from domain.staking import PositionState, StakingCode, StakingConfig, StakingVault, staked_account_id

DAY = 86_400_000
T0 = 1_772_000_000_000
K = 1_000_000


def funded(*accounts: tuple[str, int]) -> Ledger:
    ledger = Ledger(check_every_op=True)
    ledger.open_account("sys:mint", Asset.KAUS, allow_negative=True)
    for account_id, units in accounts:
        ledger.open_account(account_id)
        assert ledger.apply(Transfer(f"dep-{account_id}", "sys:mint", account_id, units, "deposit"), T0).code is None
    return ledger


def test_stake_moves_kaus_out_of_the_available_balance_and_supply_is_unchanged() -> None:
    ledger = funded(("alice", 1_000 * K))
    vault = StakingVault(ledger)
    outcome = vault.stake("pos-1", "alice", 400 * K, T0)
    assert outcome.ok and outcome.position is not None and outcome.position.state is PositionState.STAKED
    assert ledger.available("alice") == 600 * K
    assert ledger.balance(staked_account_id("alice")) == 400 * K
    assert vault.staked_units("alice") == 400 * K
    assert ledger.total_balance(Asset.KAUS) == 0
    # Not spendable: the ledger refuses to move more than the unstaked rest.
    ledger.open_account("bob")
    spend = ledger.apply(Transfer("spend", "alice", "bob", 600 * K + 1, "payment"), T0)
    assert spend.code is LedgerCode.INSUFFICIENT_FUNDS


def test_staked_kaus_is_not_paid_out() -> None:
    ledger = funded(("alice", 2_000 * K))
    StakingVault(ledger).stake("pos-1", "alice", 1_500 * K, T0)
    book = AutoPayouts()
    rule = Rule(
        rule_id="r",
        account_id="alice",
        trigger_type=Trigger.THRESHOLD,
        payout_provider=Provider.STRIPE,
        payout_currency=Currency.USD,
        payout_account="ba",
        max_payout_per_tx_kaus_units=10_000 * K,
        threshold_kaus_units=1_000 * K,
    )
    book.put_rule(rule, 1, T0)
    assert book.set_kyc("alice", KycStatus.VERIFIED, 1, ledger.available("alice"), T0) == []  # 500 available
    ledger.apply(Transfer("dep-2", "sys:mint", "alice", 600 * K, "deposit"), T0)
    decisions = book.evaluate("alice", ledger.available("alice"), T0)
    assert [d.amount_units for d in decisions] == [1_100 * K]  # the 1,500 staked are not part of it


def test_a_stake_the_balance_cannot_cover_changes_nothing() -> None:
    ledger = funded(("alice", 100 * K))
    vault = StakingVault(ledger)
    outcome = vault.stake("pos-1", "alice", 100 * K + 1, T0)
    assert not outcome.ok and outcome.code is StakingCode.LEDGER_REJECTED and "INSUFFICIENT_FUNDS" in outcome.reason
    assert vault.position("pos-1") is None and ledger.available("alice") == 100 * K
    assert vault.stake("pos-1", "alice", 100 * K, T0).ok  # the id was not consumed


def test_commands_are_idempotent_and_an_id_reused_for_other_content_is_refused() -> None:
    ledger = funded(("alice", 1_000 * K))
    vault = StakingVault(ledger)
    first = vault.stake("pos-1", "alice", 100 * K, T0)
    again = vault.stake("pos-1", "alice", 100 * K, T0 + 5)
    assert again.replayed and again.position == first.position and again.transfer == first.transfer
    assert ledger.available("alice") == 900 * K
    assert vault.stake("pos-1", "alice", 101 * K, T0).code is StakingCode.POSITION_ID_CONFLICT
    assert vault.stake("bad", "alice", 0, T0).code is StakingCode.INVALID_COMMAND
    assert vault.stake("pos-x", "nobody", 1, T0).code is StakingCode.LEDGER_REJECTED


def test_lock_then_unbonding_then_release() -> None:
    config = StakingConfig(lock_ms=7 * DAY, unbonding_ms=2 * DAY)
    ledger = funded(("alice", 1_000 * K))
    vault = StakingVault(ledger, config)
    vault.stake("pos-1", "alice", 300 * K, T0)
    locked = vault.unstake("pos-1", "alice", T0 + 7 * DAY - 1)
    assert locked.code is StakingCode.STILL_LOCKED and vault.position("pos-1").state is PositionState.STAKED  # type: ignore[union-attr]
    assert vault.unstake("pos-1", "mallory", T0 + 7 * DAY).code is StakingCode.NOT_OWNER
    assert vault.unstake("nope", "alice", T0).code is StakingCode.UNKNOWN_POSITION
    unbonding = vault.unstake("pos-1", "alice", T0 + 7 * DAY)
    assert unbonding.ok and unbonding.position.state is PositionState.UNBONDING  # type: ignore[union-attr]
    assert vault.unstake("pos-1", "alice", T0 + 7 * DAY + 1).replayed
    assert ledger.available("alice") == 700 * K  # still not spendable while unbonding
    assert vault.release_due(T0 + 9 * DAY - 1) == []
    released = vault.release_due(T0 + 9 * DAY)
    assert [(r.position_id, r.position.state) for r in released] == [("pos-1", PositionState.RELEASED)]  # type: ignore[union-attr]
    assert ledger.available("alice") == 1_000 * K and ledger.balance(staked_account_id("alice")) == 0
    assert vault.release_due(T0 + 30 * DAY) == []
    vault.check_invariants()


def test_staking_weight_is_time_weighted_and_unbonding_earns_nothing() -> None:
    config = StakingConfig(lock_ms=0, unbonding_ms=DAY)
    ledger = funded(("alice", 1_000 * K), ("bob", 1_000 * K))
    vault = StakingVault(ledger, config)
    start, end = T0, T0 + DAY
    vault.stake("a-1", "alice", 100 * K, start)  # the whole epoch
    ledger.apply(Transfer("tick", "sys:mint", "bob", 1, "deposit"), start + DAY - 60_000)
    vault.stake("b-1", "bob", 1_000 * K, start + DAY - 60_000)  # a minute before the end
    assert vault.weights(start, end) == {"alice": 100 * K * DAY, "bob": 1_000 * K * 60_000}
    vault.unstake("a-1", "alice", end + DAY // 2)
    assert vault.weights(end, end + DAY) == {"alice": 100 * K * (DAY // 2), "bob": 1_000 * K * DAY}
    assert vault.weights(end + DAY, end + 2 * DAY) == {"bob": 1_000 * K * DAY}


def test_a_restored_vault_keeps_positions_and_pending_releases() -> None:
    ledger = funded(("alice", 1_000 * K))
    vault = StakingVault(ledger, StakingConfig(lock_ms=DAY, unbonding_ms=DAY))
    vault.stake("p1", "alice", 10 * K, T0)
    vault.stake("p2", "alice", 20 * K, T0)
    vault.unstake("p1", "alice", T0 + DAY)
    restored = StakingVault.from_dict(vault.to_dict(), ledger)
    assert restored.to_dict() == vault.to_dict()
    assert [r.position_id for r in restored.release_due(T0 + 2 * DAY)] == ["p1"]
    assert restored.staked_units("alice") == 20 * K


def test_a_restore_against_another_ledger_state_is_refused() -> None:
    ledger = funded(("alice", 1_000 * K))
    vault = StakingVault(ledger)
    vault.stake("p1", "alice", 10 * K, T0)
    with pytest.raises(AssertionError):
        StakingVault.from_dict(vault.to_dict(), funded(("alice", 1_000 * K)))
