"""Dividend epochs (domain.dividends): the pro-rata split conserves the pool exactly, the per-source split,
the epoch calendar and its scheduler (once per epoch, missed epochs folded), and an epoch declared on the
ledger with the staking vault's time weights."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.dividends import (
    EpochSchedule,
    EpochScheduler,
    allocate,
    allocate_by_source,
)
from domain.ledger import Asset, Ledger, Transfer
from domain.staking import StakingConfig, StakingVault
from domain.trade_settlement import SYS_DIVIDENDS, SYS_MINT, DividendDeclaration, DividendSource, TradeSettler

DAY = 86_400_000
EPOCH_0305 = 1_772_668_800_000  # 2026-03-05T00:00Z
K = 1_000_000

weights_st = st.lists(st.integers(min_value=0, max_value=10**24), max_size=40)
pools_st = st.integers(min_value=0, max_value=10**18)


@settings(max_examples=300, deadline=None)
@given(pool=pools_st, weights=weights_st)
def test_pro_rata_conserves_the_pool_exactly(pool: int, weights: list[int]) -> None:
    result = allocate(pool, [(i, w) for i, w in enumerate(weights)])
    assert sum(s.amount_units for s in result.shares) + result.carried_units == pool
    total = sum(weights)
    for share in result.shares:
        assert share.amount_units == pool * share.weight // total  # never more than the exact share
    positive = sum(1 for w in weights if w)
    assert result.carried_units == pool if not total else result.carried_units < max(positive, 1)


@settings(max_examples=300, deadline=None)
@given(
    pool=pools_st,
    energy=weights_st,
    staking=weights_st,
    shares=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)),
)
def test_the_split_by_source_conserves_the_pool_exactly(
    pool: int, energy: list[int], staking: list[int], shares: tuple[int, int]
) -> None:
    holders = [(("ENERGY_NODE", f"n{i}"), w) for i, w in enumerate(energy)]
    holders += [(("STAKING", f"s{i}"), w) for i, w in enumerate(staking)]
    result = allocate_by_source(pool, holders, {"ENERGY_NODE": shares[0], "STAKING": shares[1]})
    assert sum(s.amount_units for s in result.shares) + result.carried_units == pool
    assert result.carried_units <= pool
    has_weight = (shares[0] and sum(energy)) or (shares[1] and sum(staking))
    if has_weight:
        assert result.carried_units < len(holders) + 2  # only the floors are carried
    else:
        assert result.carried_units == pool


def test_each_source_gets_its_share_and_a_source_without_holders_strands_nothing() -> None:
    holders = [(("ENERGY_NODE", "node"), 3), (("STAKING", "a"), 1), (("STAKING", "b"), 3)]
    result = allocate_by_source(1_000, holders)
    assert [(s.key[1], s.amount_units) for s in result.shares] == [("node", 500), ("a", 125), ("b", 375)]
    only_stakers = allocate_by_source(1_001, [(("STAKING", "a"), 10**20), (("STAKING", "b"), 10**20)])
    assert [s.amount_units for s in only_stakers.shares] == [500, 500] and only_stakers.carried_units == 1
    assert allocate_by_source(77, []).carried_units == 77


def test_epochs_default_to_utc_days_from_midnight() -> None:
    schedule = EpochSchedule()
    index = schedule.index(EPOCH_0305 + 5 * 3_600_000)
    assert schedule.start_ms(index) == EPOCH_0305 and schedule.end_ms(index) == EPOCH_0305 + DAY
    assert schedule.index(EPOCH_0305) == index and schedule.index(EPOCH_0305 - 1) == index - 1
    assert schedule.epoch_id(index) == "div-20260305T0000Z-1440m"
    hourly = EpochSchedule(length_ms=3_600_000, offset_ms=30 * 60_000)
    i = hourly.index(EPOCH_0305)
    assert hourly.epoch_id(i) == "div-20260304T2330Z-60m"


def test_the_scheduler_declares_each_closed_epoch_once_even_across_a_restart() -> None:
    scheduler = EpochScheduler()
    assert scheduler.due(EPOCH_0305 + DAY - 1) is not None  # the 4th has closed (first run: only the latest)
    due = scheduler.due(EPOCH_0305 + DAY)
    assert due is not None and due.declaration_id == "div-20260305T0000Z-1440m" and due.epochs == 1
    assert (due.start_ms, due.end_ms) == (EPOCH_0305, EPOCH_0305 + DAY)
    scheduler.mark_declared(due)
    assert scheduler.due(EPOCH_0305 + DAY) is None
    assert scheduler.due(EPOCH_0305 + 2 * DAY - 1) is None
    restarted = EpochScheduler.from_dict(scheduler.to_dict())
    assert restarted.due(EPOCH_0305 + 2 * DAY - 1) is None
    assert restarted.due(EPOCH_0305 + 2 * DAY) is not None


def test_missed_epochs_are_declared_once_together() -> None:
    scheduler = EpochScheduler()
    first = scheduler.due(EPOCH_0305 + DAY)
    assert first is not None
    scheduler.mark_declared(first)
    back = scheduler.due(EPOCH_0305 + 4 * DAY + 3_600_000)  # down for three days
    assert back is not None and back.epochs == 3
    assert back.declaration_id == "div-20260308T0000Z-1440m"
    assert (back.start_ms, back.end_ms) == (EPOCH_0305 + DAY, EPOCH_0305 + 4 * DAY)
    scheduler.mark_declared(back)
    assert scheduler.due(EPOCH_0305 + 4 * DAY + 7_200_000) is None
    scheduler.mark_declared(first)  # a late, older mark does not go back
    assert scheduler.last_declared == back.last_index


# --------------------------------------------------------------------------- on the ledger


def epoch_world() -> tuple[TradeSettler, StakingVault]:
    ledger = Ledger(check_every_op=True)
    settler = TradeSettler(ledger)
    for account_id in ("node-a", "node-b", "alice", "bob"):
        ledger.open_account(account_id)
        ledger.apply(Transfer(f"dep-{account_id}", SYS_MINT, account_id, 1_000 * K, "deposit"), EPOCH_0305)
    settler.set_dividend_weight("node-a", DividendSource.ENERGY_NODE, 2)
    settler.set_dividend_weight("node-b", DividendSource.ENERGY_NODE, 1)
    settler.set_dividend_weight("alice", DividendSource.STAKING, 10**9)  # a registration the vault replaces
    vault = StakingVault(ledger, StakingConfig(lock_ms=0, unbonding_ms=DAY))
    vault.stake("alice-1", "alice", 100 * K, EPOCH_0305)  # the whole epoch
    vault.stake("bob-1", "bob", 100 * K, EPOCH_0305 + DAY // 2)  # half of it
    return settler, vault


def accrue(ledger: Ledger, transfer_id: str, units: int, at_ms: int) -> None:
    """Stand-in for the trades' pool accruals (50% of fees)."""
    assert ledger.apply(Transfer(transfer_id, SYS_MINT, SYS_DIVIDENDS, units, "dividend.pool"), at_ms).code is None


def declare_due_epoch(
    settler: TradeSettler, vault: StakingVault, scheduler: EpochScheduler, now_ms: int
) -> DividendDeclaration | None:
    """What the shell's epoch timer does (the order matters: declare, then mark)."""
    due = scheduler.due(now_ms)
    if due is None:
        return None
    declaration = settler.declare_dividends(
        due.declaration_id,
        now_ms,
        staking_weights=vault.weights(due.start_ms, due.end_ms),
        source_shares_bps={"ENERGY_NODE": 5_000, "STAKING": 5_000},
    )
    scheduler.mark_declared(due)
    return declaration


def test_an_epoch_pays_energy_nodes_and_stakers_by_time_and_carries_the_remainder() -> None:
    settler, vault = epoch_world()
    ledger = settler.ledger
    accrue(ledger, "fees-1", 1_000_003, EPOCH_0305 + 1_000)
    scheduler = EpochScheduler(last_declared=EpochSchedule().index(EPOCH_0305) - 1)
    declaration = declare_due_epoch(settler, vault, scheduler, EPOCH_0305 + DAY)
    assert declaration is not None and declaration.declaration_id == "div-20260305T0000Z-1440m"
    paid = {(d.account_id, d.source): d.amount_units for d in declaration.dividends}
    assert paid == {
        ("node-a", DividendSource.ENERGY_NODE): 333_334,  # 500,001 x 2/3
        ("node-b", DividendSource.ENERGY_NODE): 166_667,
        ("alice", DividendSource.STAKING): 333_334,  # 500,001 x 2/3: staked twice as long as bob
        ("bob", DividendSource.STAKING): 166_667,
    }
    assert sum(paid.values()) + declaration.carried_units == declaration.pool_units == 1_000_003
    assert ledger.balance(SYS_DIVIDENDS) == declaration.carried_units == 1
    assert ledger.total_balance(Asset.KAUS) == 0
    # Exactly once: the timer fires again, restarts, or the ledger sees the same id again.
    assert declare_due_epoch(settler, vault, scheduler, EPOCH_0305 + DAY + 60_000) is None
    replay = settler.declare_dividends(declaration.declaration_id, EPOCH_0305 + DAY + 120_000)
    assert replay.replayed and replay.dividends == declaration.dividends
    assert ledger.balance(SYS_DIVIDENDS) == 1
    # The carried unit is part of the next epoch's pool.
    accrue(ledger, "fees-2", 999_999, EPOCH_0305 + DAY + 1_000)
    following = declare_due_epoch(settler, vault, scheduler, EPOCH_0305 + 2 * DAY)
    assert following is not None and following.pool_units == 1_000_000


@settings(max_examples=60, deadline=None)
@given(
    accruals=st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=6),
    node_weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=0, max_size=5),
    stakes=st.lists(st.tuples(st.integers(1, 500 * K), st.integers(0, DAY - 1)), min_size=0, max_size=5),
)
def test_declared_plus_carried_is_the_pool_for_every_epoch(
    accruals: list[int], node_weights: list[int], stakes: list[tuple[int, int]]
) -> None:
    ledger = Ledger()
    settler = TradeSettler(ledger)
    vault = StakingVault(ledger, StakingConfig(lock_ms=0, unbonding_ms=0))
    for i, weight in enumerate(node_weights):
        settler.set_dividend_weight(f"node-{i}", DividendSource.ENERGY_NODE, weight)
    for i, (units, offset) in enumerate(stakes):
        ledger.open_account(f"staker-{i}")
        ledger.apply(Transfer(f"dep-{i}", SYS_MINT, f"staker-{i}", units, "deposit"), EPOCH_0305)
        assert vault.stake(f"pos-{i}", f"staker-{i}", units, EPOCH_0305 + offset).ok
    scheduler = EpochScheduler(last_declared=EpochSchedule().index(EPOCH_0305) - 1)
    total_declared = 0
    for day, units in enumerate(accruals):
        accrue(ledger, f"fees-{day}", units, EPOCH_0305 + day * DAY + DAY - 1)
        carried_before = ledger.balance(SYS_DIVIDENDS) - units
        declaration = declare_due_epoch(settler, vault, scheduler, EPOCH_0305 + (day + 1) * DAY)
        assert declaration is not None
        assert declaration.pool_units == carried_before + units
        assert declaration.distributed_units + declaration.carried_units == declaration.pool_units
        assert ledger.balance(SYS_DIVIDENDS) == declaration.carried_units
        total_declared += declaration.distributed_units
    assert total_declared + ledger.balance(SYS_DIVIDENDS) == sum(accruals)
    assert ledger.total_balance(Asset.KAUS) == 0
