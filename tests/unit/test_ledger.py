"""Ledger: double entry, idempotency, IdConflict, no negative users, two-phase holds, expiry, batches."""

from __future__ import annotations

import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import (
    MAX_BATCH,
    Asset,
    Ledger,
    LedgerCode,
    PendingState,
    PendingTransfer,
    PostPending,
    Transfer,
    TransferStatus,
    VoidPending,
)

MINT = "sys:mint"


def ledger(*users: str, funded: int = 0) -> Ledger:
    lg = Ledger(check_every_op=True)
    lg.open_account(MINT, allow_negative=True)
    for user in users:
        lg.open_account(user)
        if funded:
            assert lg.apply(Transfer(f"mint-{user}", MINT, user, funded, "deposit"), 0).code is None
    return lg


def test_transfer_moves_money_and_sums_to_zero() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    result = lg.apply(Transfer("t1", "alice", "bob", 300, "p2p"), 5)
    assert result.status is TransferStatus.POSTED and result.code is None and result.amount_units == 300
    assert (lg.balance("alice"), lg.balance("bob"), lg.balance(MINT)) == (700, 1_300, -2_000)
    assert lg.total_balance(Asset.KAUS) == 0
    lg.check_invariants()


def test_user_accounts_never_go_negative() -> None:
    lg = ledger("alice", "bob", funded=100)
    result = lg.apply(Transfer("t1", "alice", "bob", 101, "p2p"), 1)
    assert result.status is TransferStatus.REJECTED and result.code is LedgerCode.INSUFFICIENT_FUNDS
    assert result.reason and lg.balance("alice") == 100
    assert lg.result("t1") is None  # a rejection consumes nothing


def test_validation_codes() -> None:
    lg = ledger("alice", "bob", funded=100)
    lg.open_account("carbon:alice", Asset.CARBON_MILLICREDIT)
    cases = [
        (Transfer("", "alice", "bob", 1, "x"), LedgerCode.INVALID_ID),
        (Transfer("a", "alice", "bob", 0, "x"), LedgerCode.INVALID_AMOUNT),
        (Transfer("b", "alice", "bob", -5, "x"), LedgerCode.INVALID_AMOUNT),
        (Transfer("c", "alice", "bob", 10**19, "x"), LedgerCode.INVALID_AMOUNT),
        (Transfer("d", "alice", "alice", 1, "x"), LedgerCode.SAME_ACCOUNT),
        (Transfer("e", "nobody", "bob", 1, "x"), LedgerCode.UNKNOWN_DEBIT_ACCOUNT),
        (Transfer("f", "alice", "nobody", 1, "x"), LedgerCode.UNKNOWN_CREDIT_ACCOUNT),
        (Transfer("g", "alice", "carbon:alice", 1, "x"), LedgerCode.ASSET_MISMATCH),
        (PendingTransfer("h", "alice", "bob", 1, "x", 0), LedgerCode.INVALID_EXPIRY),
        (PostPending("i", "no-such-hold"), LedgerCode.UNKNOWN_PENDING),
    ]
    for command, code in cases:
        result = lg.apply(command, 10)
        assert result.code is code, (command, result)
        assert result.status is TransferStatus.REJECTED
    assert lg.balance("alice") == 100


def test_open_account_is_idempotent_but_not_redefinable() -> None:
    lg = Ledger()
    lg.open_account("a")
    lg.open_account("a")
    try:
        lg.open_account("a", allow_negative=True)
    except ValueError:
        pass
    else:
        raise AssertionError("re-opening with other flags must fail")


# --- idempotency ------------------------------------------------------------


def test_duplicate_returns_original_outcome_and_applies_once() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    first = lg.apply(Transfer("t1", "alice", "bob", 300, "p2p"), 5)
    again = lg.apply(Transfer("t1", "alice", "bob", 300, "p2p"), 99)
    assert again == first and again.at_ms == 5
    assert lg.balance("alice") == 700


def test_same_id_different_content_is_id_conflict() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    lg.apply(Transfer("t1", "alice", "bob", 300, "p2p"), 5)
    for other in (
        Transfer("t1", "alice", "bob", 301, "p2p"),
        Transfer("t1", "bob", "alice", 300, "p2p"),
        Transfer("t1", "alice", "bob", 300, "other"),
        PendingTransfer("t1", "alice", "bob", 300, "p2p", 1_000),
        VoidPending("t1", "t1"),
    ):
        result = lg.apply(other, 6)
        assert result.code is LedgerCode.ID_CONFLICT, other
    assert lg.balance("alice") == 700


def test_rejected_id_can_be_retried_after_funding() -> None:
    lg = ledger("alice", "bob")
    assert lg.apply(Transfer("t1", "alice", "bob", 50, "p2p"), 1).code is LedgerCode.INSUFFICIENT_FUNDS
    lg.apply(Transfer("dep", MINT, "alice", 50, "deposit"), 2)
    assert lg.apply(Transfer("t1", "alice", "bob", 50, "p2p"), 3).status is TransferStatus.POSTED


# --- two-phase --------------------------------------------------------------


def test_pending_reserves_then_partial_post_releases_rest() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    hold = lg.apply(PendingTransfer("h1", "alice", "bob", 600, "bridge", 1_000), 10)
    assert hold.status is TransferStatus.PENDING and hold.amount_units == 600
    assert (lg.balance("alice"), lg.held("alice"), lg.available("alice")) == (1_000, 600, 400)
    assert lg.apply(Transfer("t", "alice", "bob", 401, "p2p"), 11).code is LedgerCode.INSUFFICIENT_FUNDS
    assert lg.apply(PostPending("p1", "h1", 601), 12).code is LedgerCode.POST_EXCEEDS_PENDING
    posted = lg.apply(PostPending("p1", "h1", 250), 12)
    assert posted.status is TransferStatus.POSTED and posted.amount_units == 250
    assert (posted.debit_account_id, posted.credit_account_id) == ("alice", "bob")
    assert (lg.balance("alice"), lg.held("alice"), lg.available("alice"), lg.balance("bob")) == (750, 0, 750, 1_250)
    view = lg.pending("h1")
    assert view is not None and view.state is PendingState.POSTED and view.posted_units == 250
    assert view.resolved_by == "p1"


def test_post_and_void_each_exactly_once() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    lg.apply(PendingTransfer("h1", "alice", "bob", 100, "x", 1_000), 1)
    assert lg.apply(PostPending("p1", "h1"), 2).amount_units == 100
    assert lg.apply(PostPending("p1", "h1"), 3) == lg.result("p1")  # replay, not a second post
    assert lg.apply(PostPending("p2", "h1"), 3).code is LedgerCode.PENDING_ALREADY_POSTED
    assert lg.apply(VoidPending("v1", "h1"), 3).code is LedgerCode.PENDING_ALREADY_POSTED
    lg.apply(PendingTransfer("h2", "alice", "bob", 100, "x", 1_000), 4)
    voided = lg.apply(VoidPending("v2", "h2"), 5)
    assert voided.status is TransferStatus.VOIDED and voided.amount_units == 100
    assert lg.apply(VoidPending("v3", "h2"), 6).code is LedgerCode.PENDING_ALREADY_VOIDED
    assert lg.apply(PostPending("p3", "h2"), 6).code is LedgerCode.PENDING_ALREADY_VOIDED
    assert (lg.balance("alice"), lg.held("alice"), lg.balance("bob")) == (900, 0, 1_100)


def test_expire_voids_due_holds() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    lg.apply(PendingTransfer("h1", "alice", "bob", 100, "x", 50), 1)
    lg.apply(PendingTransfer("h2", "alice", "bob", 200, "x", 60), 1)
    lg.apply(PendingTransfer("h3", "alice", "bob", 300, "x", 70), 1)
    lg.apply(VoidPending("v3", "h3"), 2)
    assert lg.expire(49) == []
    assert lg.held("alice") == 300  # not expired until expire()/touch runs
    expired = lg.expire(65)
    assert [(e.pending_id, e.amount_units, e.expired_at_ms) for e in expired] == [("h1", 100, 50), ("h2", 200, 60)]
    assert lg.held("alice") == 0 and lg.expire(1_000) == []
    view = lg.pending("h1")
    assert view is not None and view.state is PendingState.EXPIRED


def test_touching_an_expired_hold_expires_it() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    lg.apply(PendingTransfer("h1", "alice", "bob", 100, "x", 50), 1)
    result = lg.apply(PostPending("p1", "h1"), 50)
    assert result.code is LedgerCode.PENDING_EXPIRED
    assert lg.held("alice") == 0 and lg.balance("bob") == 1_000
    assert lg.expire(100) == []  # already expired, not reported twice


def test_clock_never_goes_backwards() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    lg.apply(Transfer("t", "alice", "bob", 1, "x"), 100)
    result = lg.apply(PendingTransfer("h", "alice", "bob", 1, "x", 90), 10)
    assert result.code is LedgerCode.INVALID_EXPIRY and lg.clock_ms == 100


# --- linked batches ---------------------------------------------------------


def test_batch_is_all_or_nothing() -> None:
    lg = ledger("alice", "bob", "carol", funded=100)
    batch = lg.apply_batch(
        [
            Transfer("l1", "alice", "bob", 60, "x"),
            PendingTransfer("l2", "bob", "carol", 150, "x", 1_000),
            Transfer("l3", "alice", "carol", 50, "x"),  # alice has 40 left: fails
        ],
        1,
    )
    assert not batch.ok
    assert [r.code for r in batch.results] == [
        LedgerCode.LINKED_EVENT_FAILED,
        LedgerCode.LINKED_EVENT_FAILED,
        LedgerCode.INSUFFICIENT_FUNDS,
    ]
    assert (lg.balance("alice"), lg.balance("bob"), lg.held("bob"), lg.balance("carol")) == (100, 100, 0, 100)
    assert lg.result("l1") is None and lg.pending("l2") is None
    assert lg.expire(10_000) == []  # the rolled-back hold left no live heap entry


def test_batch_legs_see_earlier_legs_and_replay_is_idempotent() -> None:
    lg = ledger("alice", "bob", funded=100)
    lg.open_account("fees")
    legs = [Transfer("pay", "alice", "bob", 100, "pay"), Transfer("fee", "bob", "fees", 150, "fee")]
    first = lg.apply_batch(legs, 1)
    assert first.ok and not first.replayed
    again = lg.apply_batch(legs, 2)
    assert again.ok and again.replayed and again.results == first.results
    assert (lg.balance("alice"), lg.balance("bob"), lg.balance("fees")) == (0, 50, 150)


def test_batch_with_post_of_a_hold_in_the_same_batch() -> None:
    lg = ledger("alice", "bob", funded=100)
    batch = lg.apply_batch([PendingTransfer("h", "alice", "bob", 80, "x", 100), PostPending("p", "h", 30)], 1)
    assert batch.ok and (lg.balance("alice"), lg.held("alice"), lg.balance("bob")) == (70, 0, 130)
    failing = lg.apply_batch([PendingTransfer("h2", "alice", "bob", 10, "x", 100), PostPending("p2", "h2", 11)], 2)
    assert not failing.ok and lg.pending("h2") is None and lg.held("alice") == 0


def test_batch_id_conflict_and_size_bound() -> None:
    lg = ledger("alice", "bob", funded=100)
    lg.apply(Transfer("t", "alice", "bob", 1, "x"), 1)
    batch = lg.apply_batch([Transfer("u", "alice", "bob", 1, "x"), Transfer("t", "alice", "bob", 2, "x")], 2)
    assert [r.code for r in batch.results] == [LedgerCode.LINKED_EVENT_FAILED, LedgerCode.ID_CONFLICT]
    too_big = [Transfer(f"x{i}", "alice", "bob", 1, "x") for i in range(MAX_BATCH + 1)]
    result = lg.apply_batch(too_big, 3)
    assert not result.ok and result.results[0].code is LedgerCode.BATCH_TOO_LARGE
    assert all(r.code is not None for r in result.results) and lg.balance("alice") == 99


# --- properties -------------------------------------------------------------

USERS = ["u0", "u1", "u2", "u3"]
OP = st.tuples(
    st.sampled_from(["mint", "transfer", "hold", "post", "void", "expire", "replay"]),
    st.sampled_from(USERS),
    st.sampled_from(USERS),
    st.integers(1, 500),
    st.integers(0, 40),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(OP, max_size=60))
def test_random_operations_keep_every_invariant(ops: list[tuple[str, str, str, int, int]]) -> None:
    lg = ledger(*USERS)
    holds: list[str] = []
    applied: list[Transfer] = []
    now = 0
    for i, (kind, a, b, amount, dt) in enumerate(ops):
        now += dt
        if kind == "mint":
            lg.apply(Transfer(f"m{i}", MINT, a, amount, "deposit"), now)
        elif kind == "transfer" and a != b:
            t = Transfer(f"t{i}", a, b, amount, "p2p")
            if lg.apply(t, now).code is None:
                applied.append(t)
        elif kind == "hold" and a != b:
            if lg.apply(PendingTransfer(f"h{i}", a, b, amount, "x", now + 1 + dt), now).code is None:
                holds.append(f"h{i}")
        elif kind in ("post", "void") and holds:
            pending_id = holds[amount % len(holds)]
            view = lg.pending(pending_id)
            assert view is not None
            cmd = (
                PostPending(f"p{i}", pending_id, min(amount, view.amount_units))
                if kind == "post"
                else VoidPending(f"v{i}", pending_id)
            )
            result = lg.apply(cmd, now)
            if view.state is not PendingState.PENDING:
                assert result.code is not None
        elif kind == "expire":
            lg.expire(now)
        elif kind == "replay" and applied:
            t = applied[amount % len(applied)]
            before = lg.balance(t.debit_account_id)
            assert lg.apply(t, now) == lg.result(t.transfer_id)
            assert lg.balance(t.debit_account_id) == before
        # check_every_op=True already ran check_invariants(); assert the headline ones again.
        assert lg.total_balance(Asset.KAUS) == 0
        assert all(lg.available(u) >= 0 and lg.balance(u) >= 0 for u in USERS)


def test_seeded_random_batches_keep_sum_constant() -> None:
    rng = random.Random(9)
    lg = ledger(*USERS, funded=10_000)
    for i in range(800):
        legs = [
            Transfer(f"b{i}-{j}", rng.choice(USERS), rng.choice(USERS), rng.randint(1, 3_000), "x")
            for j in range(rng.randint(1, 4))
        ]
        legs = [leg for leg in legs if leg.debit_account_id != leg.credit_account_id] or [
            Transfer(f"b{i}-m", MINT, "u0", 1, "deposit")
        ]
        before = {u: lg.balance(u) for u in USERS}
        batch = lg.apply_batch(legs, i)
        if not batch.ok:
            assert {u: lg.balance(u) for u in USERS} == before
        assert lg.total_balance(Asset.KAUS) == 0


# --- snapshot ---------------------------------------------------------------


def test_snapshot_round_trip_is_deterministic_and_behaves_the_same() -> None:
    lg = ledger("alice", "bob", funded=1_000)
    lg.open_account("carbon:bob", Asset.CARBON_MILLICREDIT)
    lg.open_account("sys:carbon", Asset.CARBON_MILLICREDIT, allow_negative=True)
    lg.apply(Transfer("c1", "sys:carbon", "carbon:bob", 7, "carbon.mint"), 1)
    lg.apply(PendingTransfer("h1", "alice", "bob", 100, "x", 500), 2)
    lg.apply(PendingTransfer("h2", "alice", "bob", 100, "x", 500), 2)
    lg.apply(PostPending("p1", "h1", 40), 3)
    lg.apply(PendingTransfer("h3", "alice", "bob", 50, "x", 20), 3)
    lg.expire(30)
    data = lg.to_dict()
    text = json.dumps(data, sort_keys=True)
    restored = Ledger.from_dict(json.loads(text), check_every_op=True)
    assert json.dumps(restored.to_dict(), sort_keys=True) == text
    for target in (lg, restored):
        assert target.apply(PostPending("p1", "h1", 40), 10).at_ms == 3  # replay survives restore
        assert target.apply(PostPending("p2", "h2"), 10).amount_units == 100
        assert target.expire(1_000) == []
    assert json.dumps(restored.to_dict(), sort_keys=True) == json.dumps(lg.to_dict(), sort_keys=True)
    assert lg.total_balance(Asset.CARBON_MILLICREDIT) == 0 and lg.balance("carbon:bob") == 7
