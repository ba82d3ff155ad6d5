"""The ledger service's two-phase holds and rewards (what the bridge sends on ledger.commands)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts import models as m
from contracts.topics import LEDGER_OUTCOMES, LEDGER_TRANSFERS, Topic
from streams.p2p.ledger import LedgerPartition

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
PAYER = "acct-payer"
SETTLEMENT = "bridge:settlement"


class Driver:
    def __init__(self) -> None:
        self.ledger = LedgerPartition()
        self.offset = 0

    def send(self, message: Any) -> list[tuple[Topic, Any]]:
        out = self.ledger.apply(self.offset, message)
        self.offset += 1
        for topic, record in out:  # every output is a valid contract message
            topic.decode(topic.encode(record))
        return out


def outcome(out: list[tuple[Topic, Any]]) -> m.LedgerOutcome:
    [answer] = [r for t, r in out if t is LEDGER_OUTCOMES]
    return answer


def transfers(out: list[tuple[Topic, Any]]) -> list[m.LedgerTransfer]:
    return [r for t, r in out if t is LEDGER_TRANSFERS]


def hold(hold_id: str, units: int, at: datetime = T0, ttl_s: int = 60) -> m.PlaceHold:
    return m.PlaceHold(
        command_id=hold_id,
        debit_account_id=PAYER,
        credit_account_id=SETTLEMENT,
        amount_kaus_units=units,
        expires_at=at + timedelta(seconds=ttl_s),
        occurred_at=at,
    )


def reward(command_id: str, units: int) -> m.GrantReward:
    return m.GrantReward(
        command_id=command_id,
        from_account_id=m.RewardAccount.REWARDS,
        account_id=PAYER,
        amount_kaus_units=units,
        occurred_at=T0,
    )


def funded(units: int = 1_000) -> Driver:
    d = Driver()
    d.send(m.Deposit(command_id="dep-1", account_id=PAYER, amount_kaus_units=units, occurred_at=T0))
    return d


def test_a_hold_reserves_funds_and_a_second_one_beyond_the_balance_is_refused() -> None:
    d = funded(1_000)
    placed = d.send(hold("h1", 700))
    assert outcome(placed).status is m.LedgerOutcomeStatus.APPLIED and outcome(placed).amount_kaus_units == 700
    assert [t.kind for t in transfers(placed)] == [m.TransferKind.PENDING]
    refused = d.send(hold("h2", 301))
    assert outcome(refused).status is m.LedgerOutcomeStatus.REJECTED
    assert outcome(refused).reason_code == "INSUFFICIENT_FUNDS" and transfers(refused) == []
    assert d.ledger.ledger.available(PAYER) == 300 and d.ledger.ledger.balance(PAYER) == 1_000


def test_a_resent_hold_with_a_new_expiry_is_the_same_hold() -> None:
    d = funded()
    d.send(hold("h1", 400))
    again = d.send(hold("h1", 400, at=T0 + timedelta(seconds=3)))  # a restarted requester computes a new expiry
    assert outcome(again).status is m.LedgerOutcomeStatus.APPLIED and outcome(again).duplicate
    assert transfers(again) == [] and d.ledger.ledger.held(PAYER) == 400
    other = d.send(hold("h1", 401))  # same id, other amount: a conflict, not a duplicate
    assert outcome(other).status is m.LedgerOutcomeStatus.REJECTED and outcome(other).reason_code == "ID_CONFLICT"


def test_post_moves_part_of_the_hold_once_and_releases_the_rest() -> None:
    d = funded(1_000)
    d.send(hold("h1", 600))
    post = m.PostHold(command_id="h1:post", hold_id="h1", amount_kaus_units=450, occurred_at=T0)
    posted = d.send(post)
    assert outcome(posted).status is m.LedgerOutcomeStatus.APPLIED
    [record] = transfers(posted)
    assert (record.kind, record.asset, record.amount_units, record.pending_id) == ("POST_PENDING", "KAUS", 450, "h1")
    assert d.ledger.ledger.balance(PAYER) == 550 and d.ledger.ledger.held(PAYER) == 0
    assert d.ledger.ledger.balance(SETTLEMENT) == 450
    replay = d.send(post)
    assert outcome(replay).duplicate and transfers(replay) == [] and d.ledger.ledger.balance(PAYER) == 550
    void = d.send(m.VoidHold(command_id="h1:void", hold_id="h1", occurred_at=T0))
    assert outcome(void).status is m.LedgerOutcomeStatus.REJECTED
    assert outcome(void).reason_code == "PENDING_ALREADY_POSTED"


def test_void_releases_everything() -> None:
    d = funded(1_000)
    d.send(hold("h1", 600))
    voided = d.send(m.VoidHold(command_id="h1:void", hold_id="h1", occurred_at=T0))
    assert outcome(voided).status is m.LedgerOutcomeStatus.APPLIED
    assert [t.kind for t in transfers(voided)] == [m.TransferKind.VOID_PENDING]
    assert d.ledger.ledger.available(PAYER) == 1_000 and d.ledger.ledger.balance(PAYER) == 1_000


def test_an_expired_hold_frees_its_funds_before_the_next_command_and_cannot_be_resumed() -> None:
    d = funded(1_000)
    d.send(hold("h1", 900, ttl_s=5))
    later = T0 + timedelta(seconds=6)
    out = d.send(hold("h2", 800, at=later))  # fits only because h1 expired first
    expired = [t for t in transfers(out) if t.kind is m.TransferKind.VOID_PENDING]
    assert [(t.pending_id, t.asset, t.amount_units, t.reason) for t in expired] == [("h1", "KAUS", 900, "hold expired")]
    assert outcome(out).status is m.LedgerOutcomeStatus.APPLIED
    resumed = d.send(hold("h1", 900, at=later))  # a restarted requester re-sends the expired hold
    assert outcome(resumed).status is m.LedgerOutcomeStatus.REJECTED
    assert outcome(resumed).reason_code == "PENDING_EXPIRED"


def test_rewards_come_from_issuance_accounts_and_k_aus_is_conserved() -> None:
    d = funded(1_000)
    d.send(hold("h1", 500))
    d.send(m.PostHold(command_id="h1:post", hold_id="h1", amount_kaus_units=500, occurred_at=T0))
    granted = d.send(reward("h1:cashback", 15))
    assert outcome(granted).status is m.LedgerOutcomeStatus.APPLIED
    ledger = d.ledger.ledger
    assert ledger.balance(PAYER) == 515 and ledger.balance("bridge:rewards") == -15
    balances = d.ledger.balances()
    assert sum(balances.values()) == 0  # the deposit's mint account is the only other negative one


def test_commands_naming_an_issuance_account_in_any_order_never_crash_the_ledger() -> None:
    d = funded(1_000)
    # a hold crediting the rewards account must not reopen it with other settings (that raised before)
    odd = d.send(
        m.PlaceHold(
            command_id="h-odd",
            debit_account_id=PAYER,
            credit_account_id="bridge:rewards",
            amount_kaus_units=10,
            expires_at=T0 + timedelta(seconds=60),
            occurred_at=T0,
        )
    )
    assert outcome(odd).status is m.LedgerOutcomeStatus.APPLIED
    granted = d.send(reward("r-1", 5))
    assert outcome(granted).status is m.LedgerOutcomeStatus.APPLIED
    assert d.ledger.ledger.balance("bridge:rewards") == -5


# --------------------------------------------------------------------------- rewards riding on the capture


def grant(transfer_id: str, units: int, source: m.RewardAccount = m.RewardAccount.REWARDS) -> m.RewardGrant:
    return m.RewardGrant(
        transfer_id=transfer_id,
        from_account_id=source,
        account_id=PAYER,
        amount_kaus_units=units,
        reason="bridge.reward",
    )


CASHBACK = grant("h1:cashback", 15)
BONUS = grant("h1:bonus", 2, m.RewardAccount.ECOSYSTEM)


def post(*rewards: m.RewardGrant, at: datetime = T0, units: int = 500) -> m.PostHold:
    return m.PostHold(
        command_id="h1:post", hold_id="h1", amount_kaus_units=units, rewards=list(rewards), occurred_at=at
    )


def test_a_capture_applies_its_rewards_once_with_one_outcome() -> None:
    d = funded(1_000)
    d.send(hold("h1", 600))
    out = d.send(post(CASHBACK, BONUS))
    answer = outcome(out)  # one outcome for the whole command
    assert (answer.command_id, answer.status, answer.duplicate) == ("h1:post", m.LedgerOutcomeStatus.APPLIED, False)
    assert answer.amount_kaus_units == 500
    records = transfers(out)
    assert [(t.transfer_id, t.kind, t.debit_account_id, t.asset, t.amount_units) for t in records] == [
        ("h1:post", m.TransferKind.POST_PENDING, PAYER, "KAUS", 500),
        ("h1:cashback", m.TransferKind.POSTED, "bridge:rewards", "KAUS", 15),
        ("h1:bonus", m.TransferKind.POSTED, "bridge:ecosystem", "KAUS", 2),
    ]
    assert [t for t, _ in out][-1] is LEDGER_OUTCOMES  # the records come before the answer
    for record in records[1:]:  # a reward's record is exactly GRANT_REWARD's, as pydantic writes it
        assert record.credit_account_id == PAYER and record.reason == "bridge.reward" and record.pending_id is None
        raw = LEDGER_TRANSFERS.encode(record)  # the bytes the ledger worker produces
        model = LEDGER_TRANSFERS.decode(raw)
        assert raw == model.__pydantic_serializer__.to_json(model, by_alias=True)
    ledger = d.ledger.ledger
    assert ledger.balance(PAYER) == 1_000 - 500 + 17 and ledger.held(PAYER) == 0
    assert ledger.balance("bridge:rewards") == -15 and ledger.balance("bridge:ecosystem") == -2
    assert sum(d.ledger.balances().values()) == 0


def test_a_resent_capture_applies_no_reward_twice_but_one_that_was_missing() -> None:
    d = funded(1_000)
    d.send(hold("h1", 600))
    d.send(post(CASHBACK))  # e.g. sent before the bonus was known
    again = d.send(post(CASHBACK, BONUS, at=T0 + timedelta(seconds=2)))  # a restarted bridge re-sends the capture
    answer = outcome(again)
    assert answer.status is m.LedgerOutcomeStatus.APPLIED and answer.duplicate and answer.amount_kaus_units == 500
    assert [(t.transfer_id, t.kind) for t in transfers(again)] == [("h1:bonus", m.TransferKind.POSTED)]
    same = d.send(post(CASHBACK, BONUS, at=T0 + timedelta(seconds=3)))
    assert outcome(same).status is m.LedgerOutcomeStatus.APPLIED and outcome(same).duplicate
    assert transfers(same) == []
    ledger = d.ledger.ledger
    assert ledger.balance(PAYER) == 1_000 - 500 + 17
    assert ledger.balance("bridge:rewards") == -15 and ledger.balance("bridge:ecosystem") == -2


def test_a_rejected_capture_applies_no_reward() -> None:
    d = funded(1_000)
    d.send(hold("h1", 600))
    d.send(m.VoidHold(command_id="h1:void", hold_id="h1", occurred_at=T0))
    voided = d.send(post(CASHBACK, BONUS))
    assert outcome(voided).status is m.LedgerOutcomeStatus.REJECTED
    assert outcome(voided).reason_code == "PENDING_ALREADY_VOIDED" and outcome(voided).amount_kaus_units == 0
    assert transfers(voided) == []

    d.send(hold("h2", 600, ttl_s=5))
    late = T0 + timedelta(seconds=6)
    expired = d.send(
        m.PostHold(
            command_id="h2:post",
            hold_id="h2",
            amount_kaus_units=500,
            rewards=[grant("h2:cashback", 15)],
            occurred_at=late,
        )
    )
    assert outcome(expired).status is m.LedgerOutcomeStatus.REJECTED
    assert outcome(expired).reason_code == "PENDING_EXPIRED"
    assert [t.kind for t in transfers(expired)] == [m.TransferKind.VOID_PENDING]  # the expiry, no reward
    ledger = d.ledger.ledger
    assert ledger.balance(PAYER) == 1_000 and ledger.held(PAYER) == 0
    assert ledger.balance("bridge:rewards") == 0 and ledger.balance("bridge:ecosystem") == 0
    for reward_id in ("h1:cashback", "h1:bonus", "h2:cashback"):
        assert ledger.result(reward_id) is None


def test_a_reward_that_cannot_apply_rejects_the_whole_capture() -> None:
    d = funded(1_000)
    d.send(reward("h1:cashback", 99))  # the id already names another transfer
    d.send(hold("h1", 600))
    refused = d.send(post(CASHBACK, BONUS))
    answer = outcome(refused)
    assert answer.status is m.LedgerOutcomeStatus.REJECTED and answer.reason_code == "ID_CONFLICT"
    assert answer.reason is not None and "h1:cashback" in answer.reason
    assert transfers(refused) == []
    ledger = d.ledger.ledger
    assert ledger.held(PAYER) == 600 and ledger.balance(PAYER) == 1_099  # the hold is still there to void
    assert ledger.result("h1:bonus") is None


def test_a_command_stamped_far_ahead_does_not_move_the_ledger_clock_past_its_broker_time() -> None:
    """One upstream deposit with a clock years ahead must not expire every card hold from then on."""
    from domain.ledger import MAX_CLOCK_SKEW_MS

    d = Driver()
    appended_ms = int(T0.timestamp() * 1000)  # the broker's append time of each record below
    future = T0 + timedelta(days=3650)
    d.ledger.apply(
        0, m.Deposit(command_id="dep-1", account_id=PAYER, amount_kaus_units=1_000, occurred_at=future), appended_ms
    )
    assert d.ledger.ledger.clock_ms == appended_ms + MAX_CLOCK_SKEW_MS  # bounded, not ten years ahead
    placed = d.ledger.apply(1, hold("h1", 700, ttl_s=600), appended_ms)  # the bridge's hold: 10 minutes
    assert outcome(placed).status is m.LedgerOutcomeStatus.APPLIED
    posted = d.ledger.apply(
        2, m.PostHold(command_id="h1:post", hold_id="h1", amount_kaus_units=700, occurred_at=T0), appended_ms + 1_000
    )
    assert outcome(posted).status is m.LedgerOutcomeStatus.APPLIED  # not PENDING_EXPIRED
    assert d.ledger.ledger.balance(PAYER) == 300


def test_without_a_broker_time_a_command_counts_at_its_own_time() -> None:
    d = Driver()
    future = T0 + timedelta(days=1)
    d.send(m.Deposit(command_id="dep-1", account_id=PAYER, amount_kaus_units=1_000, occurred_at=future))
    assert d.ledger.ledger.clock_ms == int(future.timestamp() * 1000)  # in-process callers, tests: as before
