"""Service layer of the High-Speed Bridge on Kafka: the runner, the platform ledger, the payout journal.

No Faust here (``streams/bridge/agent.py`` only decodes, calls :class:`BridgeService` and acks):

* :class:`KafkaHoldLedger` — the bridge's holds, captures (carrying the payment's rewards) and voids are
  commands on ``ledger.commands`` (the single-writer ledger every K-AUS movement goes through); the
  ledger's answers come back on ``ledger.outcomes`` and are matched to the waiting settlement by command id.
* :class:`KafkaJournal` — intent-before-payout, on the compacted ``bridge.payouts.journal``, written to the
  partition number of the request's ``bridge.requests`` record. Whoever owns that request partition reads
  the journal partition first: open intents are resolved with the provider under the same idempotency
  key (never paid twice), and results answer duplicates.
* :class:`BridgeService` — per request: load its partition's journal once, submit to the runner (bounded
  concurrency, per-payer order), emit the result, then ack the request so its offset may be committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from contracts import models as m
from contracts.topics import (
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    FX_RATES,
    LEDGER_COMMANDS,
    LEDGER_OUTCOMES,
    Topic,
)
from devtools.fx_feed import to_domain as fx_to_domain
from domain.bridge import BridgeConfig, LedgerRejected, PayoutIntent, Result, Reward, Settled, bridge_tx_id_for
from domain.fx import FxBook
from domain.rails import RAILS
from streams.bridge.providers import build_adapters
from streams.bridge.providers.base import ProviderSettings, Transport, make_transport
from streams.bridge.result_index import JournalProgress, ResultIndex
from streams.bridge.runner import (
    BridgeRunner,
    PayoutParked,
    _iso,
    _result_from_json,
    _result_to_json,
    intent_from_record,
    intent_json,
    payment_from_request,
    result_json,
)
from streams.kafka.clients import AsyncProducer, consume_now, consumer_config
from streams.kafka.partition_log import read_partition
from streams.kafka.topic_admin import topic_id
from streams.settings import Settings

log = logging.getLogger("nexus.bridge")

LEDGER_TIMEOUT_S = 10.0  # bounded wait for the ledger's answer; a lost answer fails the settlement, not the worker
PARKED_RETRY_S = 5.0
PARKED_RETRIES = 12


# --------------------------------------------------------------------------- ledger answers


class LedgerOutcomes:
    """Reads ``ledger.outcomes`` from its end (every partition, no consumer group) and wakes waiters.

    Started before any command is sent, so no answer can slip past. Waiters are keyed by command id; an
    answer nobody waits for (another worker's, or one that came after its waiter timed out) is dropped.
    """

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(consumer_config(bootstrap, f"nexus-bridge-outcomes-{uuid.uuid4().hex}"))
        self._waiters: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[m.LedgerOutcome]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-outcomes", daemon=True)

    def start(self) -> None:
        name = LEDGER_OUTCOMES.name
        meta = self._consumer.list_topics(name, timeout=30).topics[name]
        assignment = []
        for p in sorted(meta.partitions):
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(name, p), timeout=30)
            assignment.append(TopicPartition(name, p, high))
        self._consumer.assign(assignment)
        self._thread.start()

    def expect(self, command_id: str) -> asyncio.Future[m.LedgerOutcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[m.LedgerOutcome] = loop.create_future()
        with self._lock:
            self._waiters[command_id] = (loop, future)
        return future

    def forget(self, command_id: str) -> None:
        with self._lock:
            self._waiters.pop(command_id, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            batch = consume_now(self._consumer, 0.1)
            with self._lock:  # once per batch, not per record
                waiters = [
                    (self._waiters.pop(key.decode(), None), value)
                    for msg in batch
                    if not msg.error() and (key := msg.key()) is not None and (value := msg.value()) is not None
                ]
            for waiter, value in waiters:
                if waiter is None:
                    continue
                loop, future = waiter
                try:
                    answer: Any = LEDGER_OUTCOMES.decode(value)
                except ValueError as exc:  # our own ledger wrote it: a bug, but never a stuck settlement
                    answer = exc
                answers.setdefault(loop, []).append((future, answer))
            for loop, answered in answers.items():  # one wake-up per loop and batch, not per answer
                loop.call_soon_threadsafe(_answer_all, answered)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def _answer_all(answered: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, answer in answered:
        if future.done():
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)


class KafkaHoldLedger:
    """:class:`streams.bridge.runner.AsyncHoldLedger` on the platform ledger, through Kafka.

    Holds and captures wait for the ledger's answer (a refusal raises :class:`LedgerRejected` with the
    ledger's code). Voids wait too — the result then says truthfully that nothing stays locked. The rewards
    ride on the capture (``POST_HOLD``'s ``rewards``): the ledger applies them with it, atomically and each
    once by its own id (a re-sent capture after a crash applies none twice), so the capture's APPLIED
    outcome proves its rewards are applied too, and nothing else needs to be awaited for them.

    Commands are produced without a delivery report (:meth:`AsyncProducer.send_unacked`): their answer is
    the outcome, and a command lost on its way surfaces like a lost answer, as ``LEDGER_TIMEOUT``.
    """

    def __init__(self, producer: AsyncProducer, outcomes: LedgerOutcomes, reward_accounts: dict[str, str]) -> None:
        self.producer = producer
        self.outcomes = outcomes
        self.reward_accounts = reward_accounts  # BridgeConfig account id -> contract RewardAccount value

    async def available_units(self, account_id: str) -> int | None:
        return None  # not known here: the hold is checked by the ledger, in order with every other movement

    def _send(self, command: dict[str, Any]) -> None:
        # Built as JSON directly (hot path); tests/unit/test_bridge_service.py validates each shape against
        # the ledger.commands contract. No delivery report: the outcome (or its timeout) is the answer.
        self.producer.send_unacked(LEDGER_COMMANDS.name, command["command_id"].encode(), orjson.dumps(command))

    async def _ask(self, command: dict[str, Any]) -> m.LedgerOutcome:
        command_id = command["command_id"]
        answer = self.outcomes.expect(command_id)
        try:
            self._send(command)
            outcome = await asyncio.wait_for(answer, LEDGER_TIMEOUT_S)
        except TimeoutError:
            self.outcomes.forget(command_id)
            reason = f"no answer to {command_id} in {LEDGER_TIMEOUT_S}s"
            raise LedgerRejected("LEDGER_TIMEOUT", reason) from None
        except BaseException:
            self.outcomes.forget(command_id)
            raise
        if outcome.status is m.LedgerOutcomeStatus.REJECTED:
            raise LedgerRejected(outcome.reason_code or "REJECTED", outcome.reason or "")
        return outcome

    async def place_hold(
        self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int, expires_at_ms: int
    ) -> None:
        try:
            await self._ask(
                place_hold_command(transfer_id, debit_account_id, credit_account_id, amount_units, expires_at_ms)
            )
        except LedgerRejected as exc:
            if exc.code == "LEDGER_TIMEOUT":
                # The hold may still land: release it (applied after it, in ledger order) so nothing stays locked.
                self._send(void_hold_command(f"{transfer_id}:void-timeout", transfer_id))
            raise

    async def post_hold(
        self, *, transfer_id: str, hold_id: str, amount_units: int, rewards: Sequence[Reward] = ()
    ) -> None:
        grants = []
        for r in rewards:
            source = self.reward_accounts.get(r.debit_account_id)
            if source is None:
                why = f"rewards come from issuance accounts; {r.debit_account_id} is not one"
                raise LedgerRejected("NOT_A_REWARD_ACCOUNT", why)
            grants.append(reward_grant(r.transfer_id, source, r.credit_account_id, r.amount_units))
        await self._ask(post_hold_command(transfer_id, hold_id, amount_units, grants))

    async def void_hold(self, *, transfer_id: str, hold_id: str) -> None:
        await self._ask(void_hold_command(transfer_id, hold_id))


def _now_iso() -> str:
    return _iso(time.time_ns() // 1_000_000)


def place_hold_command(hold_id: str, debit: str, credit: str, units: int, expires_at_ms: int) -> dict[str, Any]:
    return {
        "type": "PLACE_HOLD", "command_id": hold_id, "debit_account_id": debit, "credit_account_id": credit,
        "amount_kaus_units": units, "expires_at": _iso(expires_at_ms), "reason": "bridge.hold",
        "occurred_at": _now_iso(),
    }  # fmt: skip


def post_hold_command(
    command_id: str, hold_id: str, units: int, rewards: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``rewards``: :func:`reward_grant` s, applied by the ledger with the capture (each once, by its id)."""
    return {
        "type": "POST_HOLD", "command_id": command_id, "hold_id": hold_id, "amount_kaus_units": units,
        "rewards": rewards or [], "occurred_at": _now_iso(),
    }  # fmt: skip


def void_hold_command(command_id: str, hold_id: str) -> dict[str, Any]:
    return {"type": "VOID_HOLD", "command_id": command_id, "hold_id": hold_id, "occurred_at": _now_iso()}


def reward_grant(transfer_id: str, source: str, account: str, units: int) -> dict[str, Any]:
    """A ``RewardGrant`` of a capture: ``source`` is a contract ``RewardAccount`` value."""
    return {
        "transfer_id": transfer_id, "from_account_id": source, "account_id": account, "amount_kaus_units": units,
        "reason": "bridge.reward",
    }  # fmt: skip


class FxRatesListener:
    """Keeps the latest quote per source and currency from ``fx.rates`` (every partition, from the start).

    Every bridge worker needs every currency, so this reads without a consumer group. The book is
    immutable; a new one replaces it per batch, so a settlement reads one consistent book.
    """

    def __init__(self, bootstrap: str) -> None:
        self._consumer = Consumer(consumer_config(bootstrap, f"nexus-bridge-fx-{uuid.uuid4().hex}"))
        self.book = FxBook()
        self.quotes_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fx-rates", daemon=True)

    def start(self) -> None:
        name = FX_RATES.name
        meta = self._consumer.list_topics(name, timeout=30).topics[name]
        self._consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            quotes = []
            for msg in self._consumer.consume(1000, timeout=0.1):
                value = msg.value()
                if msg.error() or value is None:
                    continue
                try:
                    quotes.append(fx_to_domain(FX_RATES.decode(value)))
                except ValueError:
                    log.warning("fx.rates: skipped an invalid quote at offset %s", msg.offset())
            if quotes:
                self.book = self.book.with_quotes(quotes)
                self.quotes_seen += len(quotes)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


# --------------------------------------------------------------------------- the journal


def journal_of_intent(intent: PayoutIntent) -> dict[str, Any]:
    """A ``BridgeJournalEntry`` (JSON-ready) for an intent about to be sent."""
    return {
        "bridge_tx_id": intent.bridge_tx_id,
        "request_id": intent.payment.request_id,
        "intent": intent_json(intent),
        "fingerprint": intent.payment.fingerprint(),
    }


def journal_of_result(result: Result, bridge_tx_id: str) -> dict[str, Any]:
    """A ``BridgeJournalEntry`` (JSON-ready) closing a transaction with its result."""
    stored = _result_to_json(result)
    extra = stored["x"]
    entry: dict[str, Any] = {
        "bridge_tx_id": bridge_tx_id,
        "request_id": result.request_id,
        "completed" if stored["ok"] else "failed": stored["wire"],
        "fingerprint": extra["fingerprint"],
        "phase_durations_us": dict(extra["durations_us"]),
    }
    if isinstance(result, Settled):
        entry.update(provider=extra["provider"], total_duration_us=extra["total_duration_us"])
    else:
        entry.update(hold_voided=extra["hold_voided"], needs_reconciliation=extra["needs_reconciliation"])
    return entry


def result_of_journal(entry: m.BridgeJournalEntry) -> Result:
    wire = entry.completed or entry.failed
    assert wire is not None, "an intent entry has no result"
    x: dict[str, Any] = {
        "fingerprint": entry.fingerprint,
        "durations_us": [[str(p), us] for p, us in entry.phase_durations_us.items()],
        "provider": entry.provider,
        "total_duration_us": entry.total_duration_us,
        "hold_voided": entry.hold_voided,
        "needs_reconciliation": entry.needs_reconciliation,
    }
    return _result_from_json({"ok": entry.completed is not None, "wire": wire.model_dump(mode="json"), "x": x})


@dataclass
class JournalPartition:
    """What one journal partition says: intents still open, where its checkpoint may go, and (without a
    result index only) every result, to answer duplicates with."""

    results: dict[str, Result] = field(default_factory=dict)
    open_intents: dict[str, PayoutIntent] = field(default_factory=dict)
    progress: JournalProgress = field(default_factory=lambda: JournalProgress(0))
    read_from: int = 0
    entries_read: int = 0


REPLAY_COMMIT_EVERY = 10_000  # entries per transaction while a partition is read into the index


def result_of_entry(value: bytes) -> Result:
    """A result journal entry's bytes (as the index stores them) back to the result."""
    return result_of_journal(BRIDGE_PAYOUTS_JOURNAL.decode(value))


class KafkaJournal:
    """:class:`streams.bridge.runner.IntentStore` on ``bridge.payouts.journal`` (see the module doc).

    With a :class:`ResultIndex`, results live in its file and a partition's load reads the journal only
    from the index's checkpoint; ``progress`` tracks, per loaded partition, where the next checkpoint may be.
    """

    def __init__(self, bootstrap: str, producer: AsyncProducer, index: ResultIndex | None = None) -> None:
        self.bootstrap = bootstrap
        self.producer = producer
        self.index = index
        self.progress: dict[int, JournalProgress] = {}  # loaded journal partitions
        self.partition_of: dict[str, int] = {}  # request id -> its bridge.requests partition, while unfinished
        self._result_acks: dict[str, asyncio.Future[int]] = {}

    def _write(self, entry: dict[str, Any], partition: int | None = None) -> tuple[asyncio.Future[int], bytes]:
        """Send an entry now to its request's partition; await the future to wait for Kafka's ack."""
        request_id = entry["request_id"]
        if partition is None:
            partition = self.partition_of.get(request_id)
        assert partition is not None, f"{request_id}: journal partition unknown (request not admitted here)"
        value = orjson.dumps(entry)
        name = BRIDGE_PAYOUTS_JOURNAL.name
        return self.producer.send(name, entry["bridge_tx_id"].encode(), value, partition=partition), value

    async def persist_intent(self, intent: PayoutIntent) -> None:
        partition = self.partition_of.get(intent.payment.request_id)
        progress = self.progress.get(partition) if partition is not None else None
        if progress is not None:
            progress.intent_open(intent.bridge_tx_id)  # before it is sent: no checkpoint may pass it
        ack, _value = self._write(journal_of_intent(intent), partition)
        offset = await ack  # acked (acks=all) before the provider hears of it
        if progress is not None:
            progress.acked(offset)

    async def persist_result(self, result: Result) -> None:
        """Journal the result without waiting here: the result is published meanwhile, and
        :meth:`result_acked` (awaited before the request is acked) waits for the entry's ack.

        Nothing else is awaited: a result is reached only after the capture's APPLIED outcome, and the
        rewards it reports ride on that capture, so the ledger has applied them already. A crash before the
        entry is durable leaves the intent open; recovery resolves it and re-sends the capture with the
        same rewards, which the ledger applies none twice (each by its own id)."""
        bridge_tx_id = result.bridge_tx_id or bridge_tx_id_for(result.request_id)
        entry = journal_of_result(result, bridge_tx_id)
        partition = self.partition_of.pop(result.request_id, None)
        assert partition is not None, f"{result.request_id}: journal partition unknown (request not admitted here)"
        ack, value = self._write(entry, partition)
        self._result_acks[result.request_id] = ack

        def durable(sent: asyncio.Future[int], request_id: str = result.request_id) -> None:
            if sent.cancelled() or sent.exception() is not None:
                return  # the intent stays open in the progress: the next load resolves it
            offset = sent.result()
            progress = self.progress.get(partition)
            if progress is not None:  # not revoked meanwhile
                progress.closed(bridge_tx_id, offset)
            if self.index is not None:  # in the same callback: a commit sees both or neither
                self.index.acked(request_id, partition, value)

        ack.add_done_callback(durable)

    async def result_acked(self, request_id: str) -> None:
        ack = self._result_acks.pop(request_id, None)
        if ack is not None:
            await ack

    def open_intents(self) -> list[PayoutIntent]:
        return []  # recovery is per partition: see load()

    def results(self) -> MutableMapping[str, Result]:
        """What the runner checks every request against: the index, or (without one) a plain dict."""
        return self.index if self.index is not None else {}

    async def aclose(self) -> None:
        return None

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.progress.pop(p, None)  # its last committed checkpoint stays: a later load resumes there

    def checkpoints(self) -> dict[int, int]:
        return {p: progress.checkpoint() for p, progress in self.progress.items()}

    def load(self, partition: int) -> JournalPartition:
        """Read one journal partition from the index's checkpoint (or the beginning) to its end; write its
        results into the index as they come (blocking: call it in a thread)."""
        consumer = Consumer(consumer_config(self.bootstrap, f"nexus-journal-{uuid.uuid4().hex}"))
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(BRIDGE_PAYOUTS_JOURNAL.name, partition), timeout=30
            )
        finally:
            consumer.close()
        start = low
        if self.index is not None:
            checkpoint = self.index.checkpoint(partition)
            if checkpoint is not None and checkpoint > high:
                log.warning(
                    "journal partition %d ends at %d, before the index's checkpoint %d: reading it all again",
                    partition, high, checkpoint,
                )  # fmt: skip
                self.index.reset(partition)
            elif checkpoint is not None:
                start = max(low, checkpoint)
        state = JournalPartition(progress=JournalProgress(start), read_from=start)
        rows: list[tuple[str, int, bytes]] = []
        intents: dict[str, PayoutIntent] = state.open_intents
        entries = read_partition(self.bootstrap, BRIDGE_PAYOUTS_JOURNAL.name, partition, high, start)
        for offset, _key, value, _ms in entries if high > start else ():
            state.entries_read += 1
            if value is None:
                state.progress.acked(offset)
                continue
            entry = BRIDGE_PAYOUTS_JOURNAL.decode(value)
            if entry.intent is not None:
                intents[entry.bridge_tx_id] = intent_from_record(entry.intent)
                state.progress.intent_open(entry.bridge_tx_id, offset)
                state.progress.acked(offset)
                continue
            intents.pop(entry.bridge_tx_id, None)
            state.progress.closed(entry.bridge_tx_id, offset)
            if self.index is None:
                state.results[entry.request_id] = result_of_journal(entry)
                continue
            rows.append((entry.request_id, partition, value))
            if len(rows) >= REPLAY_COMMIT_EVERY:
                self.index.commit(rows, {partition: state.progress.checkpoint()})
                rows = []
        if high > start:
            state.progress.acked(high - 1)  # every entry below the end is reflected now, open intents aside
        if self.index is not None:
            self.index.commit(rows, {partition: state.progress.checkpoint()})
        for intent in intents.values():
            self.partition_of[intent.payment.request_id] = partition
        return state


# --------------------------------------------------------------------------- the service


@dataclass
class ServiceStats:
    loaded_partitions: int = 0
    journal_entries_read: int = 0
    recovered: int = 0
    emitted: int = 0
    checkpoints: int = 0


CHECKPOINT_EVERY_S = 1.0  # how often acknowledged results move into the index file, with their checkpoints


class BridgeService:
    def __init__(
        self,
        runner: BridgeRunner,
        journal: KafkaJournal,
        producer: AsyncProducer,
        listeners: tuple[LedgerOutcomes | FxRatesListener, ...] = (),
        transport: Transport | None = None,
    ) -> None:
        self.runner = runner
        self.journal = journal
        self.producer = producer
        self.listeners = listeners
        self.transport = transport  # the adapters' HTTP connections
        self.stats = ServiceStats()
        self._loaded: set[int] = set()
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpoint_lock = asyncio.Lock()

    async def ensure_loaded(self, partition: int) -> None:
        """First sight of a partition (start, crash, rebalance): finish its open payouts before new requests."""
        if partition in self._loaded:
            return
        task = self._loading.get(partition)
        if task is None:
            task = self._loading[partition] = asyncio.create_task(self._load(partition))
        await task

    async def _load(self, partition: int) -> None:
        state = await asyncio.to_thread(self.journal.load, partition)
        self.journal.progress[partition] = state.progress  # before recovery: its results close intents there
        self.runner.remember(state.results.values())
        self.stats.journal_entries_read += state.entries_read
        log.info(
            "journal partition %d read from offset %d: %d entries, %d payouts open",
            partition, state.read_from, state.entries_read, len(state.open_intents),
        )  # fmt: skip
        self._start_checkpointing()
        if state.open_intents:
            log.warning("partition %d: resolving %d open payout intents", partition, len(state.open_intents))
            for result in await self.runner.recover(state.open_intents.values()):
                await asyncio.gather(self._emit(result, partition), self.journal.result_acked(result.request_id))
            self.stats.recovered += len(state.open_intents)
        self._loaded.add(partition)
        self._loading.pop(partition, None)
        self.stats.loaded_partitions += 1

    def forget(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        for p in partitions:
            self._loaded.discard(p)
        self.journal.forget(partitions)

    def _start_checkpointing(self) -> None:
        if self.journal.index is not None and self._checkpointing is None:
            self._checkpointing = asyncio.create_task(self._checkpoint_periodically())

    async def _checkpoint_periodically(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY_S)
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Write the results whose journal entries are acknowledged, with the checkpoints that cover them."""
        index = self.journal.index
        if index is None:
            return
        async with self._checkpoint_lock:
            rows, checkpoints = index.take_acked(), self.journal.checkpoints()  # together: consistent
            if rows or checkpoints:
                await asyncio.to_thread(index.commit, rows, checkpoints)
                index.written(rows)
                self.stats.checkpoints += 1

    async def submit(self, request: m.BridgeRequest, partition: int, on_done: Callable[[], Any]) -> None:
        """Admit one request (waits while the runner is full); ``on_done`` runs once its result is emitted."""
        await self.ensure_loaded(partition)
        self.journal.partition_of[request.request_id] = partition
        payment = payment_from_request(request)
        future = await self.runner.submit(payment)
        task = asyncio.create_task(self._finish(payment.request_id, future, partition, on_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, request_id: str, future: asyncio.Future[Result], partition: int, on_done: Callable[[], Any]
    ) -> None:
        result: Result | None
        try:
            result = await future
        except PayoutParked:
            result = await self._resolve_parked(request_id)
            if result is None:
                log.error("%s: payout outcome still unknown; left unacked for recovery after restart", request_id)
                return
        except Exception:
            log.exception("%s: settlement crashed; left unacked for recovery after restart", request_id)
            return
        try:
            await asyncio.gather(self._emit(result, partition), self.journal.result_acked(request_id))
        except Exception:  # Kafka refused the result: leave the request unacked, a restart answers it again
            log.exception("%s: result not published; left unacked", request_id)
            return
        on_done()

    async def _resolve_parked(self, request_id: str) -> Result | None:
        for _ in range(PARKED_RETRIES):  # bounded: after this, only a restart retries
            await asyncio.sleep(PARKED_RETRY_S)
            mine = [i for i in self.runner.parked if i.payment.request_id == request_id]
            if not mine:
                break
            await self.runner.recover(mine)
        return self.runner.result_of(request_id)

    async def _emit(self, result: Result, partition: int) -> None:
        topic: Topic = BRIDGE_SETTLEMENTS_COMPLETED if isinstance(result, Settled) else BRIDGE_SETTLEMENTS_FAILED
        # Keyed by request id like the registry says; the value is the contract's JSON built directly.
        await self.producer.send(topic.name, result.request_id.encode(), orjson.dumps(result_json(result)))
        self.stats.emitted += 1

    def close(self, timeout_s: float = 10.0) -> None:
        """Blocking: stop the listener threads and wait for what was already sent to be acknowledged."""
        for listener in self.listeners:
            listener.stop()
        self.producer.close(timeout_s)

    async def aclose(self) -> None:
        """Close the provider connections, then :meth:`close`."""
        if self.transport is not None:
            await self.transport.aclose()
        await asyncio.to_thread(self.close)
        for _ in range(3):  # the acks the flush handed over settle their futures, whose callbacks note them
            await asyncio.sleep(0)
        if self._checkpointing is not None:
            self._checkpointing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointing
        await self.checkpoint()
        if self.journal.index is not None:
            self.journal.index.close()


async def build_service(settings: Settings) -> BridgeService:
    """The bridge's service with its Kafka ledger, journal, FX listener and provider adapters (any runtime)."""
    bootstrap = settings.bootstrap_servers
    producer = AsyncProducer(bootstrap)
    outcomes = LedgerOutcomes(bootstrap)
    fx = FxRatesListener(bootstrap)
    await asyncio.to_thread(outcomes.start)  # before the first command: no answer can slip past
    await asyncio.to_thread(fx.start)
    provider_settings = ProviderSettings()
    transport = make_transport(
        provider_settings.transport, provider_settings.max_connections, provider_settings.ca_file
    )
    adapters = build_adapters(provider_settings, transport)
    cfg = BridgeConfig(enabled_rails=frozenset(r for r, spec in RAILS.items() if spec.provider in adapters))
    ledger = KafkaHoldLedger(
        producer,
        outcomes,
        {cfg.rewards_account_id: "bridge:rewards", cfg.ecosystem_account_id: "bridge:ecosystem"},
    )
    journal_id = await asyncio.to_thread(topic_id, bootstrap, BRIDGE_PAYOUTS_JOURNAL.name)
    index = ResultIndex(settings.bridge_result_index_path, journal_id, result_of_entry)
    journal = KafkaJournal(bootstrap, producer, index)
    runner = BridgeRunner(
        ledger=ledger,
        adapters=adapters,
        fx_book=lambda: fx.book,
        store=journal,
        cfg=cfg,
        max_in_flight=settings.bridge_max_in_flight,
        max_queued=settings.bridge_max_queued,
    )
    log.info("bridge ready: %d adapters, %d in flight at most", len(adapters), settings.bridge_max_in_flight)
    return BridgeService(runner, journal, producer, listeners=(outcomes, fx), transport=transport)
