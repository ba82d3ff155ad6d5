"""streams.status: the topics' messages as observations, and the SQLite store the API reads — history pages that
stay complete and disjoint while settlements arrive, filters, positions committed with the rows, a reader beside
the writer, a rebuilt file refusing old cursors."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts import models as m
from contracts.examples import EXAMPLES, build
from contracts.topics import (
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_WAITING,
)
from domain.settlement_status import Details, InvalidCursor, Kind, Observation, State
from streams.status import observe
from streams.status.store import Input, StatusRecord, StatusStore

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


class Feed:
    """Inputs at increasing offsets of one partition per topic, as the service hands them over."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def __call__(self, topic: str, obs: Observation | None, skipped: bool = False) -> Input:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        return Input(topic, 0, offset, 1_000, obs, skipped)


def card(i: int, *, state: State = State.PENDING, owner: str = "merchant-a", currency: str = "USD") -> Observation:
    return Observation(
        f"card-{i}",
        Kind.BRIDGE,
        state,
        T0 + timedelta(seconds=i),
        Details(owner_id=owner, payer_account_id=f"acct-{i}", currency=currency, amount_minor=100 + i, rail="SEPA"),
        requested_at=T0 + timedelta(seconds=i),
    )


@pytest.fixture
def store(tmp_path: Path) -> StatusStore:
    return StatusStore(tmp_path / "status.sqlite3")


def all_pages(store: StatusStore, owner: str | None, limit: int, **filters: object) -> list[list[StatusRecord]]:
    pages, cursor = [], None
    while True:
        page, cursor = store.history(owner, cursor=cursor, limit=limit, **filters)  # type: ignore[arg-type]
        pages.append(page)
        if cursor is None:
            return pages


# --------------------------------------------------------------------------- observations of each topic


def test_a_card_payment_is_owned_by_its_merchant_and_a_payout_by_its_holder() -> None:
    req = observe.of_request(EXAMPLES[BRIDGE_REQUESTS.name])
    assert (req.kind, req.state, req.details.owner_id) == (Kind.BRIDGE, State.PENDING, "merchant-cafe-9")
    payout_req = build(
        m.BridgeRequest,
        request_id="r-1:t1",
        payout={"provider": "PAYPAL", "payout_account": "h@example.com", "amount_kaus_units": 5_000_000},
    )
    obs = observe.of_request(payout_req)
    assert (obs.kind, obs.id, obs.details.owner_id) == (Kind.PAYOUT, "r-1:t1", payout_req.payer_account_id)
    assert obs.details.kaus_units == 5_000_000


def test_answers_give_final_states_and_repeats_observe_nothing() -> None:
    done = EXAMPLES[BRIDGE_SETTLEMENTS_COMPLETED.name]
    obs = observe.of_completed(done)
    assert obs is not None and (obs.state, obs.details.bridge_tx_id) == (State.COMPLETED, done.bridge_tx_id)
    assert obs.details.owner_id == done.merchant_id and obs.details.kaus_units == done.kaus_debited_units
    assert observe.of_completed(done.model_copy(update={"repeat": True})) is None
    bad = EXAMPLES[BRIDGE_SETTLEMENTS_FAILED.name]
    obs = observe.of_failed(bad)
    assert obs is not None and (obs.state, obs.phase, obs.reason_code) == (
        State.FAILED,
        str(bad.failed_phase),
        str(bad.reason_code),
    )
    assert obs.details.owner_id == bad.merchant_id  # named on the failure since 1.3.0
    older = bad.model_copy(update={"merchant_id": None})
    assert (got := observe.of_failed(older)) is not None and got.details.owner_id is None  # then from the request
    assert observe.of_failed(bad.model_copy(update={"repeat": True})) is None
    payout_failed = observe.of_failed(bad.model_copy(update={"payout_id": bad.request_id}))
    assert payout_failed is not None and payout_failed.kind is Kind.PAYOUT
    assert payout_failed.details.owner_id == bad.payer_account_id


def test_the_journal_tells_a_pending_payment_is_being_paid_out() -> None:
    entry = EXAMPLES[BRIDGE_PAYOUTS_JOURNAL.name]
    obs = observe.of_journal(entry)
    assert obs is not None
    if entry.intent is not None:
        assert (obs.state, obs.phase) == (State.PENDING, "MERCHANT_CREDIT")
        assert obs.details.bridge_tx_id == entry.bridge_tx_id
    else:
        assert obs.state.final


def test_payout_records_wait_request_and_settle() -> None:
    wait = observe.of_payout_waiting(EXAMPLES[PAYOUT_WAITING.name])
    assert (wait.kind, wait.state, wait.reason_code) == (Kind.PAYOUT, State.WAITING, "KYC_PENDING")
    req = observe.of_payout_request(EXAMPLES[PAYOUT_REQUESTS.name])
    assert (req.state, req.requested_at) == (State.PENDING, EXAMPLES[PAYOUT_REQUESTS.name].requested_at)
    result = EXAMPLES[PAYOUT_RESULTS.name]
    paid = observe.of_payout_result(result)
    assert paid.state is (State.COMPLETED if result.status is m.PayoutStatus.PAID else State.FAILED)
    refused = observe.of_payout_result(
        build(m.PayoutResult, status="FAILED", reason_code="APPROVAL_REFUSED", reason="refused by the signers")
    )
    assert (refused.state, refused.reason_code) == (State.FAILED, "APPROVAL_REFUSED")


# --------------------------------------------------------------------------- the store


def test_rows_and_positions_are_written_together_and_a_record_read_twice_changes_nothing(store: StatusStore) -> None:
    feed = Feed()
    batch = [feed("bridge.requests", card(i)) for i in range(3)]
    outcome = store.apply_batch(batch)
    assert (outcome.applied, outcome.changed) == (3, 3)
    assert store.positions() == {("bridge.requests", 0): 3}
    again = store.apply_batch(batch)  # a consumer that re-delivered them: below the stored position
    assert (again.applied, again.stale) == (0, 3)
    assert store.counters()["records_applied"] == 3
    assert store.records_read() == {("bridge.requests", 0): (3, 3)}  # each record counted once
    reopened = StatusStore(store.path)  # a restart resumes from the file's positions
    assert reopened.positions() == {("bridge.requests", 0): 3}
    assert [r.id for r in reopened.history(None)[0]] == ["card-2", "card-1", "card-0"]


def test_skipped_and_repeated_records_advance_positions_and_are_counted(store: StatusStore) -> None:
    feed = Feed()
    store.apply_batch(
        [
            feed("bridge.requests", None, skipped=True),
            feed("bridge.settlements.completed", None),  # a repeat
            feed("bridge.requests", card(1)),
        ]
    )
    counters = store.counters()
    assert (counters["records_skipped"], counters["records_ignored"], counters["records_applied"]) == (1, 1, 2)
    assert store.positions() == {("bridge.requests", 0): 2, ("bridge.settlements.completed", 0): 1}
    fresh = store.freshness()
    assert fresh.records_skipped == 1 and fresh.last_record_at == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_a_status_moves_forward_in_the_file_and_keeps_its_sequence(store: StatusStore) -> None:
    feed = Feed()
    store.apply_batch([feed("bridge.requests", card(1)), feed("bridge.requests", card(2))])
    done = Observation("card-1", Kind.BRIDGE, State.COMPLETED, T0 + timedelta(seconds=9), Details(rail="SEPA"))
    store.apply_batch([feed("bridge.settlements.completed", done)])
    store.apply_batch([feed("bridge.requests", card(1))])  # replayed: changes nothing
    record = store.get("card-1")
    assert record is not None and (record.state, record.seq, record.owner_id) == ("COMPLETED", 1, "merchant-a")
    assert record.updated_at == T0 + timedelta(seconds=9) and record.created_at == T0 + timedelta(seconds=1)
    assert store.get("card-unknown") is None


def test_history_pages_stay_complete_and_disjoint_while_new_settlements_arrive(store: StatusStore) -> None:
    feed = Feed()
    rng = random.Random(7)
    store.apply_batch([feed("bridge.requests", card(i)) for i in range(100)])
    before = {r.id for r in store.history(None, limit=500)[0]}
    seen: list[str] = []
    cursor: str | None = None
    next_id = 100
    while True:
        page, cursor = store.history(None, cursor=cursor, limit=7)
        seen += [r.id for r in page]
        # between page fetches: new settlements, and updates of old ones
        store.apply_batch([feed("bridge.requests", card(next_id + k)) for k in range(rng.randint(0, 5))])
        next_id += 5
        old = f"card-{rng.randrange(100)}"
        store.apply_batch([feed("bridge.settlements.completed", Observation(old, Kind.BRIDGE, State.COMPLETED, T0))])
        if cursor is None:
            break
    assert len(seen) == len(set(seen))  # disjoint
    assert set(seen) == before  # complete: every row there at page 1, none of those that arrived later
    newest = store.history(None, limit=3)[0]
    assert [r.seq for r in newest] == sorted((r.seq for r in newest), reverse=True)
    assert newest[0].id not in before  # the new ones come before page 1


def test_filters(store: StatusStore) -> None:
    feed = Feed()
    store.apply_batch(
        [
            feed("bridge.requests", card(1, owner="merchant-a")),
            feed("bridge.requests", card(2, owner="merchant-b", currency="EUR")),
            feed("bridge.requests", card(3, owner="merchant-a", currency="EUR")),
            feed("bridge.requests", card(4, owner="merchant-a")),
            feed(
                "payouts.requests",
                Observation(
                    "r-1:t1",
                    Kind.PAYOUT,
                    State.PENDING,
                    T0 + timedelta(seconds=5),
                    Details(owner_id="merchant-a", currency="USD", kaus_units=7),
                    requested_at=T0 + timedelta(seconds=5),
                ),
            ),
        ]
    )
    store.apply_batch([feed("bridge.settlements.completed", card(4, state=State.COMPLETED))])

    def ids(owner: str | None, **filters: object) -> list[str]:
        return [r.id for page in all_pages(store, owner, 2, **filters) for r in page]

    assert ids("merchant-a") == ["r-1:t1", "card-4", "card-3", "card-1"]
    assert ids("merchant-b") == ["card-2"]
    assert ids(None) == ["r-1:t1", "card-4", "card-3", "card-2", "card-1"]  # an analyst: every owner
    assert ids("merchant-a", currency="EUR") == ["card-3"]
    assert ids("merchant-a", state="COMPLETED") == ["card-4"]
    assert ids("merchant-a", kind="PAYOUT") == ["r-1:t1"]
    assert ids("merchant-a", kind="BRIDGE", rail="SEPA") == ["card-4", "card-3", "card-1"]
    window = {"created_from": T0 + timedelta(seconds=2), "created_to": T0 + timedelta(seconds=4)}
    assert ids(None, **window) == ["card-3", "card-2"]  # from inclusive, to exclusive
    assert ids("merchant-nobody") == []
    with pytest.raises(ValueError, match="UTC"):
        store.history(None, created_from=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="limit"):
        store.history(None, limit=0)
    with pytest.raises(InvalidCursor):
        store.history(None, cursor="bogus")


def test_a_reader_reads_beside_the_writer_and_follows_a_rebuilt_file(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite3"
    reader = StatusStore(path, readonly=True)
    assert reader.get("card-1") is None and reader.history(None) == ([], None)
    assert reader.freshness().present is False
    assert not path.exists()  # a reader never creates the file

    writer = StatusStore(path)
    feed = Feed()
    writer.apply_batch([feed("bridge.requests", card(i)) for i in range(3)])
    writer.record_ends([("bridge.requests", 0, 0, 5)])
    fresh = reader.freshness()
    assert fresh.present and fresh.records_applied == 3 and fresh.lag == 2  # 5 on the topic, 3 applied
    page, cursor = reader.history(None, limit=2)
    assert [r.id for r in page] == ["card-2", "card-1"] and cursor is not None
    with pytest.raises(Exception, match="readonly"):
        reader._con().execute("DELETE FROM statuses")  # type: ignore[union-attr]

    writer.close()
    for leftover in tmp_path.iterdir():  # the file lost: a new one is rebuilt from the topics
        leftover.unlink()
    rebuilt = StatusStore(path)
    rebuilt.apply_batch([Feed()("bridge.requests", card(7))])
    time.sleep(1.1)  # readers look for a replaced file at most once a second
    assert [r.id for r in reader.history(None)[0]] == ["card-7"]
    with pytest.raises(InvalidCursor, match="rebuilt"):
        reader.history(None, cursor=cursor)
    reader.close()
    rebuilt.close()
