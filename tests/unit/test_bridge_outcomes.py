"""One request, one outcome: the bridge service with its Kafka ledger client and journal over in-memory fakes.

A capture the ledger answers only after the bridge's ledger timeout (set small) must not fail a payment whose
merchant was paid: it stays pending (its offset uncommitted) and gets exactly one completed result once the ledger
answers. A repeated request gets the same answer marked ``repeat``; the request's own record read again after a
restart does not (its first answer may never have gone out). And a (re)started bridge serves no request before
its FX book holds fresh quotes (bounded wait).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition

from contracts import models as m
from contracts.bridge_codec import intent_of_journal, result_of_journal
from contracts.topics import (
    AUDIT_RECORDS,
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    FX_RATES,
    LEDGER_COMMANDS,
)
from devtools.fx_feed import fx_quotes
from domain.bridge import (
    BridgeAuditAction,
    BridgeConfig,
    FlagForReconciliation,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
)
from domain.money import Currency
from domain.rails import Provider, Rail
from streams.bridge import fx_listener, runner, service
from streams.bridge.fx_listener import FxRatesListener
from streams.bridge.journal import JournalPartition, KafkaJournal
from streams.bridge.ledger_client import KafkaHoldLedger
from streams.bridge.runner import BridgeRunner
from streams.bridge.service import BridgeService

# --------------------------------------------------------------------------- fakes


class Producer:
    """AsyncProducer's send (acknowledged at once, with offsets) and send_unacked (ledger commands)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.commands: list[Any] = []

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> asyncio.Future[int]:
        self.sent.append((topic, key, value))
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        ack.set_result(len(self.sent))
        return ack

    def send_unacked(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        assert topic == LEDGER_COMMANDS.name
        self.commands.append(LEDGER_COMMANDS.decode(value))

    def on(self, topic: str) -> list[bytes]:
        return [value for t, _key, value in self.sent if t == topic]


class Ledger:
    """LedgerOutcomes' expect/forget: holds and voids are applied at once; captures wait until released."""

    def __init__(self, refuse_capture: str | None = None) -> None:
        self.waiting: dict[str, asyncio.Future[m.LedgerOutcome]] = {}
        self.captures_asked = 0
        self.capture_up = False
        self.refuse_capture = refuse_capture

    def expect(self, command_id: str) -> asyncio.Future[m.LedgerOutcome]:
        future: asyncio.Future[m.LedgerOutcome] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        is_capture = command_id.endswith(":post")
        self.captures_asked += is_capture
        if not is_capture or self.capture_up:
            asyncio.get_running_loop().call_soon(self.answer, command_id)
        return future

    def forget(self, command_id: str) -> None:
        self.waiting.pop(command_id, None)

    def answer(self, command_id: str) -> None:
        future = self.waiting.pop(command_id, None)
        if future is None or future.done():
            return
        refused = command_id.endswith(":post") and self.refuse_capture
        future.set_result(
            m.LedgerOutcome(
                command_id=command_id,
                command_type="POST_HOLD",
                status=m.LedgerOutcomeStatus.REJECTED if refused else m.LedgerOutcomeStatus.APPLIED,
                reason_code="PENDING_EXPIRED" if refused else None,
                reason=self.refuse_capture if refused else None,
                amount_kaus_units=0,
                occurred_at=datetime.now(UTC),
            )
        )

    def back(self) -> None:
        """The ledger answers again: the capture waiting now (if any) and every later one."""
        self.capture_up = True
        for command_id in [c for c in self.waiting if c.endswith(":post")]:
            self.answer(command_id)


class Stripe:
    """A provider that pays at once and finds the payout on lookup: one payout per key."""

    provider = Provider.STRIPE

    def __init__(self) -> None:
        self.paid: dict[str, PayoutIntent] = {}
        self.lookups = 0

    async def payout(self, intent: PayoutIntent) -> PayoutOutcome:
        self.paid.setdefault(intent.idempotency_key, intent)
        return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"po-{intent.idempotency_key}")

    async def lookup(self, intent: PayoutIntent) -> PayoutOutcome:
        self.lookups += 1
        if intent.idempotency_key in self.paid:
            return PayoutOutcome(PayoutStatus.PAID, provider_reference=f"po-{intent.idempotency_key}", replayed=True)
        return PayoutOutcome(PayoutStatus.NOT_FOUND, http_status=404)


class Journal(KafkaJournal):
    """No Kafka read: the partition holds what an earlier worker left (``earlier``), by default nothing."""

    earlier: JournalPartition | None = None

    def load(self, partition: int) -> JournalPartition:
        state = self.earlier or JournalPartition()
        for intent in state.open_intents.values():  # as KafkaJournal.load: their results journal here
            self.partition_of[intent.payment.request_id] = partition
        return state


def journal_left_by(stand: Stand, *, with_results: bool = True) -> JournalPartition:
    """The journal partition ``stand`` wrote, as a restarted worker reads it; without its results: the worker
    died after the payout, before a result entry was durable."""
    state = JournalPartition()
    for value in stand.producer.on(BRIDGE_PAYOUTS_JOURNAL.name):
        entry = BRIDGE_PAYOUTS_JOURNAL.decode(value)
        if entry.intent is not None:
            state.open_intents[entry.bridge_tx_id] = intent_of_journal(entry)
        elif with_results:
            del state.open_intents[entry.bridge_tx_id]
            state.results[entry.request_id] = result_of_journal(entry)
    return state


def fresh_book_quotes() -> list[m.FxRate]:
    return fx_quotes(datetime.now(UTC).date(), 0, datetime.now(UTC))


class Stand:
    """The bridge service over the fakes; requests go through ``submit`` (what ``handle`` calls once valid)."""

    def __init__(
        self,
        refuse_capture: str | None = None,
        earlier: JournalPartition | None = None,
        stripe: Stripe | None = None,
        producer: Producer | None = None,
    ) -> None:
        from domain.fx import FxBook

        self.producer = producer or Producer()
        self.ledger = Ledger(refuse_capture)
        self.stripe = stripe or Stripe()
        book = FxBook().with_quotes([_quote(r) for r in fresh_book_quotes()])
        kafka_ledger = KafkaHoldLedger(
            self.producer,  # type: ignore[arg-type]
            self.ledger,  # type: ignore[arg-type]
            {"bridge:rewards": m.RewardAccount.REWARDS, "bridge:ecosystem": m.RewardAccount.ECOSYSTEM},
            timeout_s=LEDGER_ANSWER_LATE_S,
        )
        self.journal = Journal("unused:9092", self.producer)  # type: ignore[arg-type]
        self.journal.earlier = earlier
        self.runner = BridgeRunner(
            ledger=kafka_ledger,
            adapters={Provider.STRIPE: self.stripe},  # type: ignore[dict-item]
            fx_book=lambda: book,
            store=self.journal,
            cfg=BridgeConfig(enabled_rails=frozenset({Rail.STRIPE_INSTANT})),
            on_reconcile=service.reconciliation_recorder(self.producer),  # type: ignore[arg-type]
        )
        self.service = BridgeService(self.runner, self.journal, self.producer)  # type: ignore[arg-type]
        self.done: list[int] = []

    async def submit(self, request: m.BridgeRequest, offset: int) -> None:
        await self.service.submit(request, 0, offset, lambda: self.done.append(offset))

    def outcomes(self) -> tuple[list[Any], list[Any]]:
        completed = [
            BRIDGE_SETTLEMENTS_COMPLETED.decode(v) for v in self.producer.on(BRIDGE_SETTLEMENTS_COMPLETED.name)
        ]
        failed = [BRIDGE_SETTLEMENTS_FAILED.decode(v) for v in self.producer.on(BRIDGE_SETTLEMENTS_FAILED.name)]
        return completed, failed

    def commands(self, kind: type) -> list[Any]:
        return [c for c in self.producer.commands if isinstance(c, kind)]


def _quote(rate: m.FxRate) -> Any:
    from contracts.bridge_codec import quote_of_rate

    return quote_of_rate(rate)


def card(request_id: str = "card-late-capture", rate_off_bps: int = 0) -> m.BridgeRequest:
    """A USD card payment quoted at the market rate (``rate_off_bps`` better for the payer: slippage from 30)."""
    from domain.fx import FxBook

    now_ms = time.time_ns() // 1_000_000
    rate = FxBook().with_quotes([_quote(r) for r in fresh_book_quotes()]).combined_rate(Currency.USD, now_ms).rate
    rate = (rate * (10_000 + rate_off_bps) / 10_000).quantize(Decimal("0.000001")) if rate_off_bps else rate
    return m.BridgeRequest(
        request_id=request_id,
        payer_account_id="acct-payer-1",
        merchant_id="merchant-cafe-9",
        amount_minor=15_000,
        currency=Currency.USD,
        region=m.Region.US,
        payer_tier=m.PayerTier.GOLD,
        quoted_rate=rate,
        requested_at=datetime.now(UTC),
    )


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


LEDGER_ANSWER_LATE_S = 0.05  # the bridge's wait for the ledger: an answer after it is late


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "CAPTURE_BACKOFF_S", (0.01,))
    monkeypatch.setattr(service, "PARKED_RETRY_S", 0.05)


# --------------------------------------------------------------------------- capture after payout


def test_a_capture_answered_after_the_timeout_stays_pending_then_completes_once(short_waits: None) -> None:
    async def scenario() -> None:
        stand = Stand()
        await stand.submit(card(), 7)
        await until(lambda: stand.ledger.captures_asked >= 3)  # two sends timed out, the third is waiting
        assert stand.outcomes() == ([], [])  # paid at the provider, but nothing reported: pending
        assert stand.done == []  # the request's offset stays uncommitted (a crash recovers it)
        assert stand.commands(m.VoidHold) == []  # the hold is not released under a paid payment
        stand.ledger.back()
        await until(lambda: stand.done == [7])
        completed, failed = stand.outcomes()
        assert failed == [] and [c.request_id for c in completed] == ["card-late-capture"]
        captures = stand.commands(m.PostHold)
        assert len(captures) >= 3 and {c.command_id for c in captures} == {"BRIDGE-card-late-capture:post"}
        assert len(stand.stripe.paid) == 1
        actions = [AUDIT_RECORDS.decode(v).action for v in stand.producer.on(AUDIT_RECORDS.name)]
        assert actions == ["BRIDGE_SETTLEMENT_COMPLETED"]  # the settlement's record only: no reconciliation

    asyncio.run(scenario())


def test_a_capture_unanswered_past_every_send_is_parked_and_a_duplicate_meanwhile_gets_the_one_result(
    short_waits: None,
) -> None:
    async def scenario() -> None:
        stand = Stand()
        await stand.submit(card(), 7)
        sends = BridgeConfig().max_capture_sends
        await until(lambda: stand.runner.parked != [])  # every send unanswered: parked, still no outcome
        assert stand.ledger.captures_asked == sends and stand.outcomes() == ([], [])
        await stand.submit(card(), 8)  # the producer re-sent the request meanwhile
        await asyncio.sleep(0.2)  # recovery rounds: the provider says PAID, the capture is still unanswered
        assert stand.outcomes() == ([], []) and stand.done == []
        stand.ledger.back()
        await until(lambda: sorted(stand.done) == [7, 8])
        completed, failed = stand.outcomes()
        assert failed == []
        assert [c.request_id for c in completed] == ["card-late-capture"] * 2  # the original and its duplicate
        first, repeat = sorted(completed, key=lambda c: c.repeat)
        assert (first.repeat, repeat.repeat) == (False, True)  # the record at 8 repeated the one at 7
        assert repeat == first.model_copy(update={"repeat": True})  # one outcome, answered twice
        assert len(stand.stripe.paid) == 1 and stand.runner.parked == []
        assert stand.runner.stats.completed == 1 and stand.runner.stats.failed == 0

    asyncio.run(scenario())


def test_a_capture_refused_after_payout_completes_and_is_audited_for_reconciliation(short_waits: None) -> None:
    async def scenario() -> None:
        stand = Stand(refuse_capture="hold expired")
        stand.ledger.back()  # the ledger answers at once: REJECTED
        await stand.submit(card(), 7)
        await until(lambda: stand.done == [7])
        completed, failed = stand.outcomes()
        assert failed == [] and len(completed) == 1  # the merchant was paid: completed, not failed
        assert completed[0].cashback_kaus_units == 0  # the rewards rode on the refused capture
        audits = [AUDIT_RECORDS.decode(v) for v in stand.producer.on(AUDIT_RECORDS.name)]
        [audit] = [a for a in audits if a.action == BridgeAuditAction.CAPTURE_REFUSED_AFTER_PAYOUT]
        assert audit.transaction_id == "BRIDGE-card-late-capture"
        assert Decimal(audit.details.kaus_amount) * 1_000_000 == completed[0].kaus_debited_units
        assert [v.hold_id for v in stand.commands(m.VoidHold)] == ["BRIDGE-card-late-capture:hold"]
        sent = [(t, orjson.loads(v).get("action")) for t, _k, v in stand.producer.sent]
        refused = sent.index((AUDIT_RECORDS.name, "BRIDGE_CAPTURE_REFUSED_AFTER_PAYOUT"))
        assert refused < sent.index((BRIDGE_SETTLEMENTS_COMPLETED.name, None))  # recorded first

    asyncio.run(scenario())


def test_the_audit_record_of_a_refused_capture_is_a_valid_contract_message() -> None:
    flag = FlagForReconciliation(
        "BRIDGE-card-1", "card-1", "acct-1", "BRIDGE-card-1:hold", 1_000_123_456, 15_000, Currency.USD,
        Decimal("0.15"), Rail.STRIPE_INSTANT, "po-1", "expired",
    )  # fmt: skip
    audit = service.capture_refused_audit(flag, datetime(2026, 11, 24, tzinfo=UTC))
    decoded = AUDIT_RECORDS.decode(AUDIT_RECORDS.encode(audit))
    assert decoded == audit and AUDIT_RECORDS.key_of(audit) == b"BRIDGE-card-1"
    assert (audit.details.kaus_amount, audit.details.fiat_amount) == ("1000.123456", "150.00")


# --------------------------------------------------------------------------- repeat marker


def _same_figures(answers: list[Any]) -> bool:
    return all(a.model_copy(update={"repeat": False}) == answers[0] for a in answers)


def test_a_repeated_request_gets_the_original_answer_marked_repeat() -> None:
    async def scenario() -> None:
        stand = Stand()
        stand.ledger.back()
        await stand.submit(card(), 7)
        await stand.submit(card("card-slipped", rate_off_bps=100), 8)  # fails: slippage
        await until(lambda: sorted(stand.done) == [7, 8])
        await stand.submit(card(), 9)  # the producer sent both again
        await stand.submit(card("card-slipped", rate_off_bps=100), 10)
        await until(lambda: sorted(stand.done) == [7, 8, 9, 10])
        completed, failed = stand.outcomes()
        assert [c.repeat for c in completed] == [False, True] and _same_figures(completed)
        assert [f.repeat for f in failed] == [False, True] and _same_figures(failed)
        assert failed[0].reason_code == "SLIPPAGE"
        assert len(stand.stripe.paid) == 1 and stand.runner.stats.duplicates == 2

    asyncio.run(scenario())


def test_after_a_restart_the_requests_own_record_is_answered_as_first_and_another_as_a_repeat() -> None:
    """The worker died after journaling the result, before the record's offset was committed: whether the answer
    went out is unknown, so the record read again is answered with repeat false; a later record is a repeat."""

    async def scenario() -> None:
        before = Stand()
        before.ledger.back()
        await before.submit(card(), 7)
        await until(lambda: before.done == [7])
        [original], _ = before.outcomes()

        after = Stand(earlier=journal_left_by(before), stripe=before.stripe)
        await after.submit(card(), 7)  # delivered again: uncommitted
        await after.submit(card(), 9)
        await until(lambda: sorted(after.done) == [7, 9])
        completed, _ = after.outcomes()
        assert [c.repeat for c in completed] == [False, True]
        assert _same_figures([original, *completed])  # the journal's result, figure for figure
        assert len(before.stripe.paid) == 1 and after.runner.stats.completed == 0

    asyncio.run(scenario())


def test_a_payout_recovered_after_a_restart_is_answered_once_as_first() -> None:
    """The worker died after the payout, before the result entry was durable: the restarted worker resolves the
    open intent and publishes its result (repeat false); the record read again then gets it as a repeat."""

    async def scenario() -> None:
        before = Stand()
        before.ledger.back()
        await before.submit(card(), 7)
        await until(lambda: before.done == [7])

        after = Stand(earlier=journal_left_by(before, with_results=False), stripe=before.stripe)
        after.ledger.back()
        await after.submit(card(), 7)  # loading the partition recovers the intent first
        await after.submit(card(), 9)
        await until(lambda: sorted(after.done) == [7, 9])
        completed, failed = after.outcomes()
        assert failed == [] and [c.repeat for c in completed] == [False, True, True]
        assert _same_figures(completed)
        assert len(before.stripe.paid) == 1 and after.stripe.lookups == 1  # resolved under the same key
        assert after.service.stats.recovered == 1

    asyncio.run(scenario())


# --------------------------------------------------------------------------- FX readiness


class FxConsumer:
    """confluent_kafka.Consumer as the FX listener uses it: one fx.rates partition; records appended by the test."""

    def __init__(self, at_start: list[m.FxRate]) -> None:
        self.log = [FX_RATES.encode(r) for r in at_start]
        self.position = 0
        self.lock = threading.Lock()

    def list_topics(self, name: str, timeout: float) -> Any:
        meta = type("Meta", (), {})()
        meta.topics = {name: type("T", (), {"partitions": {0: None}})()}
        return meta

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, len(self.log)

    def assign(self, partitions: list[TopicPartition]) -> None:
        assert [tp.partition for tp in partitions] == [0]

    def append(self, rates: list[m.FxRate]) -> None:
        with self.lock:
            self.log.extend(FX_RATES.encode(r) for r in rates)

    def consume(self, n: int, timeout: float) -> list[Any]:
        with self.lock:
            batch = list(enumerate(self.log))[self.position : self.position + n]
            self.position += len(batch)
        if not batch:
            time.sleep(min(timeout, 0.01))
        return [_Msg(value, offset) for offset, value in batch]

    def close(self) -> None:
        pass


class _Msg:
    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


@pytest.fixture
def stale_log() -> Iterator[FxConsumer]:
    """fx.rates as a restarted bridge finds it: yesterday's quotes only (older than the 10 s limit)."""
    old = datetime.fromtimestamp(time.time() - 3600, UTC)
    yield FxConsumer(fx_quotes(old.date(), 0, old))


def test_a_started_bridge_waits_for_fresh_quotes_before_it_serves(stale_log: FxConsumer) -> None:
    fx = FxRatesListener("unused:9092", consumer=stale_log)  # type: ignore[arg-type]
    fx.start()
    try:
        publisher = threading.Timer(0.3, lambda: stale_log.append(fresh_book_quotes()))
        publisher.start()
        started = time.monotonic()

        async def ready() -> bool:
            return await service.wait_for_fresh_fx(fx, BridgeConfig(), timeout_s=5)

        assert asyncio.run(ready()) is True
        waited = time.monotonic() - started
        assert 0.25 <= waited < 3, waited  # it waited for the fresh quotes, not for the bound
        assert fx.caught_up.is_set() and fx_listener.stale_currencies(fx.book, Currency, _now_ms()) == []
        publisher.join()
    finally:
        fx.stop()


def test_without_fresh_quotes_the_wait_is_bounded_and_says_so_loudly(
    stale_log: FxConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    fx = FxRatesListener("unused:9092", consumer=stale_log)  # type: ignore[arg-type]
    fx.start()
    try:
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="nexus.bridge"):
            ready = asyncio.run(service.wait_for_fresh_fx(fx, BridgeConfig(), timeout_s=0.3))
        assert ready is False and 0.3 <= time.monotonic() - started < 2
        assert fx.caught_up.is_set()  # the log was read to its end: the quotes are stale, not missing
        assert any("NO FRESH FX QUOTES" in r.getMessage() for r in caplog.records)
    finally:
        fx.stop()


def test_build_service_returns_only_once_the_fx_book_is_fresh(
    stale_log: FxConsumer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Both drivers build the service before they consume bridge.requests (the Faust agent inside the agent,
    so its requests wait): no request can be handled before build_service returns."""
    from streams.settings import Settings

    class Outcomes:
        def __init__(self, bootstrap: str) -> None: ...
        def start(self) -> None: ...
        def stop(self) -> None: ...

    monkeypatch.setattr(service, "LedgerOutcomes", Outcomes)
    monkeypatch.setattr(service, "FxRatesListener", lambda bootstrap: FxRatesListener(bootstrap, stale_log))
    monkeypatch.setattr(service, "topic_id", lambda bootstrap, name: "journal-topic-id")
    monkeypatch.setattr(service, "PauseListener", lambda bootstrap, topic: Outcomes(bootstrap))
    monkeypatch.setattr(service, "wait_started", lambda listener, timeout_s: True)
    publisher = threading.Timer(0.3, lambda: stale_log.append(fresh_book_quotes()))

    async def build() -> None:
        publisher.start()
        started = time.monotonic()
        built = await service.build_service(Settings(data_dir=tmp_path, bridge_fx_ready_timeout_s=5))
        try:
            assert time.monotonic() - started >= 0.25
            [fx] = [x for x in built.listeners if isinstance(x, FxRatesListener)]
            assert fx_listener.stale_currencies(fx.book, [Currency.USD, Currency.EUR], _now_ms()) == []
        finally:
            await built.aclose()

    asyncio.run(build())
    publisher.join()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
