"""domain.settlement_status: a settlement's status moves only forward, whatever order its observations come in,
and history cursors are opaque, bound to the store's generation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from domain.settlement_status import (
    STEP_IN_FLIGHT,
    Details,
    InvalidCursor,
    Kind,
    Observation,
    State,
    Status,
    apply,
    decode_cursor,
    encode_cursor,
)

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def requested(amount: int = 15_000) -> Observation:
    return Observation(
        "card-1",
        Kind.BRIDGE,
        State.PENDING,
        at(0),
        Details(owner_id="merchant-9", payer_account_id="acct-1", currency="USD", amount_minor=amount),
        requested_at=at(0),
    )


def in_flight() -> Observation:
    return Observation(
        "card-1",
        Kind.BRIDGE,
        State.PENDING,
        at(1),
        Details(owner_id="merchant-9", rail="STRIPE_INSTANT", bridge_tx_id="BRIDGE-card-1", kaus_units=99),
        phase="MERCHANT_CREDIT",
        step=STEP_IN_FLIGHT,
    )


def completed() -> Observation:
    return Observation(
        "card-1",
        Kind.BRIDGE,
        State.COMPLETED,
        at(2),
        Details(
            owner_id="merchant-9",
            payer_account_id="acct-1",
            currency="USD",
            amount_minor=15_000,
            kaus_units=100_000_000,
            rail="STRIPE_INSTANT",
            provider_reference="po_1",
            bridge_tx_id="BRIDGE-card-1",
        ),
    )


def failed() -> Observation:
    return Observation(
        "card-1",
        Kind.BRIDGE,
        State.FAILED,
        at(2),
        Details(payer_account_id="acct-1", currency="USD", amount_minor=15_000),
        phase="BALANCE_LOCK",
        reason_code="INSUFFICIENT_FUNDS",
        reason="balance too low",
    )


def fold(observations: list[Observation]) -> Status:
    status: Status | None = None
    for obs in observations:
        new = apply(status, obs).status
        status = new if new is not None else status
    assert status is not None
    return status


def test_a_card_payment_goes_pending_then_in_flight_then_completed() -> None:
    s = fold([requested()])
    assert (s.state, s.phase, s.details.owner_id, s.created_at) == (State.PENDING, None, "merchant-9", at(0))
    s = fold([requested(), in_flight()])
    assert (s.state, s.phase, s.details.rail) == (State.PENDING, "MERCHANT_CREDIT", "STRIPE_INSTANT")
    s = fold([requested(), in_flight(), completed()])
    assert (s.state, s.phase, s.reason_code) == (State.COMPLETED, None, None)
    assert (s.details.kaus_units, s.details.provider_reference) == (100_000_000, "po_1")  # the final figures
    assert (s.created_at, s.state_at) == (at(0), at(2))


@pytest.mark.parametrize("final", [completed, failed])
def test_every_order_of_the_same_observations_gives_the_same_status(final: object) -> None:
    observations = [requested(), in_flight(), final()]  # type: ignore[operator]
    results = {fold(list(order)) for order in itertools.permutations(observations)}
    assert len(results) == 1
    [status] = results
    assert status.state is (State.COMPLETED if final is completed else State.FAILED)
    assert status.created_at == at(0) and status.created_from_request  # the request's time, read first or last
    assert status.details.owner_id == "merchant-9"  # a failure names no merchant: the request's owner stays


def test_a_late_or_replayed_open_record_never_turns_a_final_state_back() -> None:
    done = fold([requested(), completed()])
    for late in (requested(), in_flight(), requested(amount=1)):
        outcome = apply(done, late)
        assert outcome.status is None or outcome.status.state is State.COMPLETED
    assert apply(done, requested()).status is None  # nothing at all changed
    assert apply(done, completed()).status is None  # the same answer again: no change


def test_a_second_different_final_state_is_a_conflict_and_the_first_stays() -> None:
    done = fold([requested(), completed()])
    outcome = apply(done, failed())
    assert outcome.conflict
    assert outcome.status is None  # nothing to add: the failure's details are all known already
    refused = fold([requested(), failed()])
    outcome = apply(refused, completed())
    assert outcome.conflict and outcome.status is not None
    assert outcome.status.state is State.FAILED and outcome.status.reason_code == "INSUFFICIENT_FUNDS"
    assert outcome.status.details.provider_reference == "po_1"  # unknown details still fill in


def test_open_states_follow_event_time_a_payout_waits_then_is_requested() -> None:
    waiting = Observation(
        "r-1:t1", Kind.PAYOUT, State.WAITING, at(0), Details(owner_id="holder-1"), reason_code="KYC_PENDING"
    )
    sent = Observation(
        "r-1:t1", Kind.PAYOUT, State.PENDING, at(5), Details(owner_id="holder-1", currency="EUR"), requested_at=at(5)
    )
    for order in ([waiting, sent], [sent, waiting]):
        s = fold(order)
        assert (s.state, s.reason_code, s.details.currency) == (State.PENDING, None, "EUR")
        assert s.created_at == at(5)  # the request's time, not the wait's
    paused_again = Observation(
        "r-1:t1", Kind.PAYOUT, State.WAITING, at(9), Details(owner_id="holder-1"), reason_code="PAUSED"
    )
    s = fold([waiting, sent, paused_again])
    assert (s.state, s.reason_code) == (State.WAITING, "PAUSED")


def test_the_final_amount_replaces_an_open_estimate_but_an_open_one_only_fills_gaps() -> None:
    estimate = Observation(
        "r-2:t1", Kind.PAYOUT, State.PENDING, at(0), Details(owner_id="h", amount_minor=1_234), requested_at=at(0)
    )
    paid = Observation("r-2:t1", Kind.PAYOUT, State.COMPLETED, at(3), Details(owner_id="h", amount_minor=1_199))
    assert fold([estimate, paid]).details.amount_minor == 1_199
    assert fold([paid, estimate]).details.amount_minor == 1_199


def test_without_a_request_created_at_is_the_earliest_event_seen() -> None:
    s = fold([completed(), in_flight()])
    assert (s.created_at, s.created_from_request, s.state_at) == (at(1), False, at(2))


def test_naive_times_are_refused() -> None:
    with pytest.raises(AssertionError):
        Observation("x", Kind.BRIDGE, State.PENDING, datetime(2026, 1, 1))


def test_a_cursor_round_trips_and_is_opaque() -> None:
    token = encode_cursor("0123abcd", 41)
    assert "41" not in token and "0123abcd" not in token
    assert decode_cursor(token, "0123abcd") == 41


@pytest.mark.parametrize("token", ["", "not-base64!!", "YWJj", encode_cursor("g1", 3)[:-2], "x" * 300])
def test_a_cursor_not_issued_here_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(token, "g1")


def test_a_cursor_from_before_a_rebuild_is_refused() -> None:
    with pytest.raises(InvalidCursor, match="rebuilt"):
        decode_cursor(encode_cursor("old-generation", 7), "new-generation")


def test_a_duplicate_request_read_later_changes_neither_the_phase_nor_the_final_state() -> None:
    duplicate = Observation(
        "card-1", Kind.BRIDGE, State.PENDING, at(30), Details(owner_id="merchant-9"), requested_at=at(30)
    )
    flying = fold([requested(), in_flight()])
    after = apply(flying, duplicate).status
    assert after is None or (after.phase, after.state_at) == ("MERCHANT_CREDIT", at(1))
    assert apply(fold([requested(), completed()]), duplicate).status is None
