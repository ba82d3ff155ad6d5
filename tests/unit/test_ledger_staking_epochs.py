"""The ledger service's staking vault (STAKE / UNSTAKE on ledger.commands) and its dividend epochs (the epoch
timer's DECLARE_DIVIDENDS): what moves, what is refused, once only, and what a snapshot keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts import models as m
from contracts.topics import DIVIDENDS_DECLARED, LEDGER_COMMANDS, LEDGER_OUTCOMES, LEDGER_TRANSFERS, Topic
from domain.dividends import EpochSchedule
from domain.ledger import Leg, SettlementKind
from domain.staking import StakingConfig, staked_account_id
from domain.timeconv import to_ms
from domain.trade_settlement import SYS_DIVIDENDS
from streams.p2p.epoch_timer import EpochTimer, latest_closed
from streams.p2p.ledger import LedgerPartition
from streams.p2p.snapshots import restore, serialise
from streams.settings import Settings

T0 = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
HOLDER = "acct-holder"
NODE = "acct-node"
LOCK = StakingConfig(lock_ms=2 * 3_600_000, unbonding_ms=3_600_000)


class Driver:
    def __init__(self, ledger: LedgerPartition | None = None) -> None:
        self.ledger = ledger or LedgerPartition(staking=LOCK)
        self.offset = self.ledger.next_offset

    def send(self, message: Any) -> list[tuple[Topic, Any]]:
        out = self.ledger.apply(self.offset, message)
        self.offset += 1
        for topic, record in out:  # every output is a valid contract message
            topic.decode(topic.encode(record))
        return out

    def available(self, account: str) -> int:
        return self.ledger.ledger.available(account)


def outcome(out: list[tuple[Topic, Any]]) -> m.LedgerOutcome:
    [answer] = [r for t, r in out if t is LEDGER_OUTCOMES]
    return answer


def transfers(out: list[tuple[Topic, Any]]) -> list[m.LedgerTransfer]:
    return [LEDGER_TRANSFERS.decode(LEDGER_TRANSFERS.encode(r)) for t, r in out if t is LEDGER_TRANSFERS]


def stake(position: str, units: int, at: datetime = T0, account: str = HOLDER) -> m.Stake:
    return m.Stake(command_id=position, account_id=account, amount_kaus_units=units, occurred_at=at)


def unstake(position: str, at: datetime, account: str = HOLDER) -> m.Unstake:
    return m.Unstake(command_id=f"un-{position}-{at:%H%M}", position_id=position, account_id=account, occurred_at=at)


def funded(units: int = 1_000) -> Driver:
    d = Driver()
    d.send(m.Deposit(command_id="dep-1", account_id=HOLDER, amount_kaus_units=units, occurred_at=T0))
    return d


def test_a_stake_moves_k_aus_to_the_vault_account_where_it_cannot_be_spent() -> None:
    d = funded(1_000)
    out = d.send(stake("pos-1", 400))
    assert outcome(out).status is m.LedgerOutcomeStatus.APPLIED and outcome(out).amount_kaus_units == 400
    [t] = transfers(out)
    assert (t.debit_account_id, t.credit_account_id, t.amount_units) == (HOLDER, staked_account_id(HOLDER), 400)
    assert t.reference is not None
    assert (t.reference.kind, t.reference.id, t.reference.leg) == (SettlementKind.STAKING, "pos-1", Leg.STAKE)
    assert d.available(HOLDER) == 600
    hold = m.PlaceHold(
        command_id="h-1",
        debit_account_id=HOLDER,
        credit_account_id="bridge:settlement",
        amount_kaus_units=601,
        expires_at=T0 + HOUR,
        occurred_at=T0,
    )
    refused = outcome(d.send(hold))
    assert refused.status is m.LedgerOutcomeStatus.REJECTED and refused.reason_code == "INSUFFICIENT_FUNDS"


def test_a_stake_beyond_the_available_balance_is_refused_and_moves_nothing() -> None:
    d = funded(100)
    out = d.send(stake("pos-1", 101))
    answer = outcome(out)
    assert answer.status is m.LedgerOutcomeStatus.REJECTED and answer.reason_code == "LEDGER_REJECTED"
    assert "INSUFFICIENT_FUNDS" in (answer.reason or "")
    assert transfers(out) == [] and d.available(HOLDER) == 100


def test_a_resent_stake_is_applied_once() -> None:
    d = funded()
    d.send(stake("pos-1", 300))
    again = d.send(stake("pos-1", 300))
    assert outcome(again).duplicate and transfers(again) == []
    assert d.available(HOLDER) == 700
    other = outcome(d.send(stake("pos-1", 200)))
    assert other.status is m.LedgerOutcomeStatus.REJECTED and other.reason_code == "POSITION_ID_CONFLICT"


def test_unstake_waits_for_the_lock_then_the_unbonding_before_the_k_aus_comes_back() -> None:
    d = funded()
    d.send(stake("pos-1", 300))
    early = outcome(d.send(unstake("pos-1", T0 + HOUR)))
    assert early.status is m.LedgerOutcomeStatus.REJECTED and early.reason_code == "STILL_LOCKED"
    assert outcome(d.send(unstake("pos-1", T0 + 2 * HOUR, account="acct-other"))).reason_code == "NOT_OWNER"
    out = d.send(unstake("pos-1", T0 + 2 * HOUR))
    assert outcome(out).status is m.LedgerOutcomeStatus.APPLIED and transfers(out) == []
    assert d.available(HOLDER) == 700  # unbonding: still in the vault
    before = d.send(m.Deposit(command_id="dep-2", account_id=NODE, amount_kaus_units=1, occurred_at=T0 + 2 * HOUR))
    assert [t.reference.leg for t in transfers(before) if t.reference] == [Leg.DEPOSIT]
    after = d.send(m.Deposit(command_id="dep-3", account_id=NODE, amount_kaus_units=1, occurred_at=T0 + 3 * HOUR))
    released = [t for t in transfers(after) if t.reference and t.reference.leg is Leg.UNSTAKE]
    assert len(released) == 1 and released[0].credit_account_id == HOLDER and released[0].amount_units == 300
    assert d.available(HOLDER) == 1_000 and d.ledger.ledger.available(staked_account_id(HOLDER)) == 0
    later = d.send(m.Deposit(command_id="dep-4", account_id=NODE, amount_kaus_units=1, occurred_at=T0 + 4 * HOUR))
    assert not [t for t in transfers(later) if t.reference and t.reference.leg is Leg.UNSTAKE]  # released once


def epoch_ledger(pool: int = 1_000_001) -> Driver:
    """A node holder (energy-node weight), a staker from 06:00 of 2026-03-04, and a funded dividend pool."""
    d = Driver()
    day_before = T0 - timedelta(days=1)
    d.send(m.Deposit(command_id="dep-s", account_id=HOLDER, amount_kaus_units=10_000, occurred_at=day_before))
    d.send(stake("pos-1", 5_000, at=day_before.replace(hour=6)))
    d.send(
        m.RegisterDividendHolder(
            command_id="reg-node", account_id=NODE, source=m.DividendSource.ENERGY_NODE, weight=7, occurred_at=T0
        )
    )
    d.send(m.Deposit(command_id="dep-pool", account_id=SYS_DIVIDENDS, amount_kaus_units=pool, occurred_at=T0))
    return d


def declared(out: list[tuple[Topic, Any]]) -> dict[tuple[str, str], int]:
    return {(r.account_id, r.source): r.amount_kaus_units for t, r in out if t is DIVIDENDS_DECLARED}


def test_an_epoch_is_declared_once_pro_rata_by_source_and_the_pool_is_conserved() -> None:
    d = epoch_ledger(1_000_001)
    epoch_id = EpochSchedule().epoch_id(EpochSchedule().index(to_ms(T0)) - 1)  # 2026-03-04
    assert epoch_id == "div-20260304T0000Z-1440m"
    out = d.send(m.DeclareDividends(command_id=epoch_id, occurred_at=T0))
    shares = declared(out)
    # half the pool per source; each source has one holder: the staker's weight is over the epoch, not its balance
    assert shares == {(NODE, "ENERGY_NODE"): 500_000, (HOLDER, "STAKING"): 500_000}
    carried = d.available(SYS_DIVIDENDS)
    assert sum(shares.values()) + carried == 1_000_001
    references = [t.reference for t in transfers(out)]
    assert {(r.kind, r.id) for r in references if r is not None} == {(SettlementKind.DIVIDEND, epoch_id)}
    assert None not in references
    assert d.send(m.DeclareDividends(command_id=epoch_id, occurred_at=T0 + HOUR)) == []  # once
    assert d.ledger.epochs is not None and d.ledger.epochs.due(to_ms(T0 + HOUR)) is None


def test_an_epoch_id_that_is_not_due_declares_nothing_and_missed_epochs_are_folded_into_the_latest() -> None:
    d = epoch_ledger(900)
    three_days_later = T0 + timedelta(days=3)
    stale = EpochSchedule().epoch_id(EpochSchedule().index(to_ms(three_days_later)) - 3)
    assert d.send(m.DeclareDividends(command_id=stale, occurred_at=three_days_later)) == []
    latest = latest_closed(EpochSchedule(), to_ms(three_days_later))
    shares = declared(d.send(m.DeclareDividends(command_id=latest, occurred_at=three_days_later)))
    assert sum(shares.values()) == 900  # one declaration for the whole span, the pool once
    assert d.send(m.DeclareDividends(command_id=stale, occurred_at=three_days_later)) == []


def test_a_manual_declaration_still_uses_the_registered_weights() -> None:
    d = epoch_ledger(1_000)
    shares = declared(d.send(m.DeclareDividends(command_id="manual-1", occurred_at=T0)))
    assert shares == {(NODE, "ENERGY_NODE"): 1_000}  # no STAKING holder registered, the vault is not asked


def test_a_snapshot_keeps_the_vault_and_the_epochs() -> None:
    d = epoch_ledger(1_000)
    epoch_id = latest_closed(EpochSchedule(), to_ms(T0))
    d.send(m.DeclareDividends(command_id=epoch_id, occurred_at=T0))
    restored = Driver(restore(serialise(d.ledger, "topic-1"), "topic-1", 0))
    assert restored.ledger.vault is not None and restored.ledger.vault.staked_units(HOLDER) == 5_000
    assert restored.send(m.DeclareDividends(command_id=epoch_id, occurred_at=T0 + HOUR)) == []
    assert restored.available(HOLDER) == d.available(HOLDER)


def test_the_epoch_timer_proposes_each_closed_epoch_once() -> None:
    sent: list[m.DeclareDividends] = []
    now = [to_ms(T0)]
    timer = EpochTimer(Settings(dividend_epoch_minutes=60), sent.append, lambda: now[0])
    assert timer.tick() == "div-20260305T0800Z-60m"
    assert timer.tick() is None
    now[0] += 30 * 60_000
    assert timer.tick() is None
    now[0] += 30 * 60_000
    assert timer.tick() == "div-20260305T0900Z-60m"
    assert [c.command_id for c in sent] == ["div-20260305T0800Z-60m", "div-20260305T0900Z-60m"]
    for command in sent:  # what goes on the wire is a valid ledger command
        LEDGER_COMMANDS.decode(LEDGER_COMMANDS.encode(command))
