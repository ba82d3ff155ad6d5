"""The High-Speed Bridge's record processor and its composition: one per worker process, under either driver.

:class:`BridgeService` takes raw ``bridge.requests`` records from a driver (``streams/bridge/agent.py`` on Faust,
``streams/bridge/loop.py`` on a plain consumer): it validates each (dead-lettering a bad one), loads its
partition's journal once (recovering open payouts first), submits the payment to the runner (bounded
concurrency, per-payer order), emits the result, and then calls the driver back so the record's offset may be
committed. :func:`build_service` builds it with its Kafka ledger client, journal, FX listener and adapters, and
returns only once the FX book holds fresh quotes (bounded): both drivers build the service before they consume.

**Repeat marker.** Every answer carries ``repeat``. It is false on the answer to the record that began the
settlement, and true on the answer to any other record with the same request_id (``domain.bridge.is_repeat``),
and on the answer to that first record read again after this worker's recovery already published its result
(the recovery's publication, false, went first and was acknowledged). Normally each request_id thus has exactly
one answer with repeat false. After a crash or a rebalance, at-least-once delivery may publish that first answer
(false) once more: when the first record is read again and the earlier publication is not known (the result was
journaled, its publication unacknowledged), or when recovery re-emits a result whose publication was under way.

**Emergency pause.** The service follows ``governance.pause`` (:class:`streams.bridge.pause_listener.PauseListener`)
and the runner asks it: while paused, requests are answered FAILED with PAUSED (refused before the hold, or stopped
before their provider call with the hold voided: ``domain.bridge.on_paused``); payouts already at a provider and the
recovery of open intents go on.

**Governed parameters.** The service follows ``governance.parameters``
(:class:`streams.bridge.parameter_listener.ParameterListener`, read to its end before the first request, bounded) and
the runner gives each payment the cashback rates, ecosystem bonus and slippage limit in force when it begins.

**Audit records.** Every answer with repeat false goes out with its payment's spec §7.2 record on ``audit.records``
(``domain.bridge.audit_of``: BRIDGE_SETTLEMENT_COMPLETED or _FAILED; PAYOUT_COMPLETED or PAYOUT_FAILED for a holder's
auto-payout, a request with a ``payout`` block, whose answers carry its ``payout_id``), both sent together and both
acknowledged before the request may be committed; a repeat answer has none. So each settlement has its audit record
once it is answered, also after a crash; a re-publication carries the same ``auditId``
(``AUDIT:<bridge_tx_id>:completed`` or ``:failed``), the key its readers deduplicate by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts import models as m
from contracts.bridge_codec import audit_json, payment_from_request, request_origin, result_json, result_of_entry
from contracts.construct import dump_json
from contracts.topics import (
    AUDIT_RECORDS,
    BRIDGE_PAYOUTS_JOURNAL,
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    GOVERNANCE_PARAMETERS,
    GOVERNANCE_PAUSE,
    Topic,
)
from domain.bridge import (
    BridgeAuditAction,
    BridgeConfig,
    CardPayment,
    FlagForReconciliation,
    Result,
    Settled,
    audit_of,
    is_repeat,
)
from domain.money import Money, kaus_to_decimal
from domain.rails import RAILS
from streams.bridge.fx_listener import FxRatesListener
from streams.bridge.journal import KafkaJournal
from streams.bridge.ledger_client import KafkaHoldLedger, LedgerOutcomes
from streams.bridge.parameter_listener import ParameterListener
from streams.bridge.pause_listener import PauseListener, wait_started
from streams.bridge.providers import build_adapters
from streams.bridge.providers.base import ProviderSettings, Transport, make_transport
from streams.bridge.result_index import ResultIndex
from streams.bridge.runner import BridgeRunner, PayoutParked
from streams.kafka import ingress
from streams.kafka.clients import AsyncProducer
from streams.kafka.topic_admin import topic_id
from streams.ops import logs, metrics
from streams.settings import Settings

log = logging.getLogger("nexus.bridge")

PARKED_RETRY_S = 5.0
PARKED_RETRIES = 12
CHECKPOINT_EVERY_S = 1.0  # how often acknowledged results move into the index file, with their checkpoints


@dataclass
class ServiceStats:
    loaded_partitions: int = 0
    journal_entries_read: int = 0
    recovered: int = 0
    emitted: int = 0
    audited: int = 0
    checkpoints: int = 0


class BridgeService:
    def __init__(
        self,
        runner: BridgeRunner,
        journal: KafkaJournal,
        producer: AsyncProducer,
        listeners: tuple[LedgerOutcomes | FxRatesListener | PauseListener | ParameterListener, ...] = (),
        transport: Transport | None = None,
        max_ingress_bytes: int | None = None,
    ) -> None:
        self.runner = runner
        self.journal = journal
        self.producer = producer
        self.listeners = listeners
        self.transport = transport  # the adapters' HTTP connections
        self.max_ingress_bytes = max_ingress_bytes
        self.stats = ServiceStats()
        self._loaded: set[int] = set()
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._recovered: dict[int, set[str]] = {}  # per partition: request ids whose result its load published
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
            recovered = self._recovered.setdefault(partition, set())
            for result in await self.runner.recover(state.open_intents.values()):
                # No record asked: the answer its first record (read again next, uncommitted) would have had.
                await asyncio.gather(self._emit(result, partition), self.journal.result_acked(result.request_id))
                recovered.add(result.request_id)  # published and acknowledged: any later answer is a repeat
            self.stats.recovered += len(state.open_intents)
        self._loaded.add(partition)
        self._loading.pop(partition, None)
        self.stats.loaded_partitions += 1

    def forget(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        for p in partitions:
            self._loaded.discard(p)
            self._recovered.pop(p, None)
        self.journal.forget(partitions)

    def _start_checkpointing(self) -> None:
        if self.journal.index is not None and self._checkpointing is None:
            self._checkpointing = asyncio.create_task(self._checkpoint_periodically())

    async def _checkpoint_periodically(self) -> None:
        while True:  # a timer, not a retry: aclose() cancels it, then writes the last checkpoint itself
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

    async def handle(
        self, key: bytes | None, value: bytes | None, partition: int, offset: int, on_done: Callable[[], Any]
    ) -> None:
        """One raw ``bridge.requests`` record, as a driver consumed it. ``on_done`` runs once the record is finished
        (its offset may be committed): a valid request once its result is journaled and emitted, a bad one once its
        dead letter is acknowledged. Unfinished records are read again after a restart."""
        try:
            decoded = ingress.validate(BRIDGE_REQUESTS, key, value, self.max_ingress_bytes)
        except Exception as exc:  # an input the validator did not foresee: this record only
            log.exception("bridge.requests[%s]@%s raised while validated", partition, offset)
            decoded = ingress.processing_failed(BRIDGE_REQUESTS.name, exc)
        if isinstance(decoded, ingress.Rejected):
            self._dead_letter(ingress.Origin(BRIDGE_REQUESTS.name, partition, offset), key, value, decoded, on_done)
            return
        await self.submit(decoded, partition, offset, on_done)

    def _dead_letter(
        self,
        origin: ingress.Origin,
        key: bytes | None,
        value: bytes | None,
        rejected: ingress.Rejected,
        on_done: Callable[[], Any],
    ) -> None:
        outputs = ingress.dead_letter_outputs(origin, key, value, rejected)  # payload records, then the letter
        log.warning("dead-lettered %s[%s]@%s: %s", origin.topic, origin.partition, origin.offset, rejected.reason)
        sends = [self.producer.send(t.name, t.key_of(o), t.encode(o)) for t, o in outputs]
        finished: list[bool] = []

        def acked(sent: asyncio.Future[int]) -> None:
            if sent.cancelled() or sent.exception() is not None:  # left unfinished: a restart dead-letters it again
                log.error("dead letter for %s[%s]@%s not acknowledged", origin.topic, origin.partition, origin.offset)
            elif not finished and all(s.done() and not s.cancelled() and s.exception() is None for s in sends):
                finished.append(True)  # every record acknowledged (payloads and letter): once
                on_done()

        for send in sends:
            send.add_done_callback(acked)

    async def submit(self, request: m.BridgeRequest, partition: int, offset: int, on_done: Callable[[], Any]) -> None:
        """Admit one request, read at (``partition``, ``offset``) (waits while the runner is full); ``on_done`` runs
        once its result is emitted."""
        await self.ensure_loaded(partition)
        self.journal.partition_of[request.request_id] = partition
        payment = payment_from_request(request, request_origin(partition, offset))
        future = await self.runner.submit(payment)  # its settlement task carries the transaction id (the runner's)
        with logs.transaction(request.request_id):  # and so do the lines of its answer
            task = asyncio.create_task(self._finish(payment, future, partition, on_done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(
        self, payment: CardPayment, future: asyncio.Future[Result], partition: int, on_done: Callable[[], Any]
    ) -> None:
        request_id = payment.request_id
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
        repeat = is_repeat(payment, result) or request_id in self._recovered.get(partition, ())
        try:
            await asyncio.gather(self._emit(result, partition, repeat), self.journal.result_acked(request_id))
        except Exception:  # Kafka refused the result: leave the request unacked, a restart answers it again
            log.exception("%s: result not published; left unacked", request_id)
            return
        on_done()

    async def _resolve_parked(self, request_id: str) -> Result | None:
        for _ in range(PARKED_RETRIES):  # bounded: after this, only a restart (or a duplicate) retries
            await asyncio.sleep(PARKED_RETRY_S)
            result = await self.runner.resolve_parked(request_id)  # joins a recovery under way (a duplicate's)
            if result is not None or not self.runner.unresolved(request_id):
                return result
        return self.runner.result_of(request_id)

    async def _emit(self, result: Result, partition: int, repeat: bool = False) -> None:
        """The answer, and unless it is a repeat its audit record (sent first: recorded, then reported); returns once
        Kafka acknowledged both."""
        topic: Topic = BRIDGE_SETTLEMENTS_COMPLETED if isinstance(result, Settled) else BRIDGE_SETTLEMENTS_FAILED
        sends = []
        if not repeat:  # a repeat answers a payment already audited
            audit = audit_of(result)
            sends.append(
                self.producer.send(AUDIT_RECORDS.name, audit.transaction_id.encode(), dump_json(audit_json(audit)))
            )
        # Keyed by request id like the registry says; the values are the contracts' JSON built directly.
        sends.append(self.producer.send(topic.name, result.request_id.encode(), dump_json(result_json(result, repeat))))
        await asyncio.gather(*sends)
        self.stats.emitted += 1
        self.stats.audited += not repeat

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


def watch_metrics(services: Callable[[], Iterable[BridgeService]]) -> None:
    """``nexus_rail_breaker_state`` and ``nexus_bridge_settlements_in_flight`` from the running services' runners,
    read when ``/metrics`` is scraped (either driver: the plain loop has one service, the Faust agent its running
    ones)."""

    def breakers() -> dict[Any, Any]:
        merged: dict[Any, Any] = {}
        for running in services():
            merged.update(running.runner.breakers)
        return merged

    metrics.add_refresher(metrics.breaker_refresher(breakers))
    metrics.add_refresher(lambda: metrics.BRIDGE_IN_FLIGHT.set(sum(s.runner.in_flight_count for s in services())))


def capture_refused_audit(flag: FlagForReconciliation, at: datetime) -> m.AuditRecord:
    """The audit record of a capture refused after payout: an exception for reconciliation (the merchant was paid,
    the payer was not debited). Keyed by the bridge transaction; a crash may record it again under the same id."""
    return m.AuditRecord(
        audit_id=f"AUDIT-{flag.bridge_tx_id}:capture-refused"[:128],
        timestamp=at,
        transaction_id=flag.bridge_tx_id,
        action=str(BridgeAuditAction.CAPTURE_REFUSED_AFTER_PAYOUT),
        actor=m.AuditActor(user_id="nexus-bridge", user_agent="NEXUS-X/bridge"),
        details=m.AuditDetails(
            kaus_amount=str(kaus_to_decimal(flag.kaus_units)),
            fiat_amount=str(Money(flag.amount_minor, flag.currency).to_decimal()),
            currency=flag.currency,
            exchange_rate=flag.rate,
            settlement_rail=flag.rail.value,
        ),
    )


def reconciliation_recorder(producer: AsyncProducer) -> Callable[[FlagForReconciliation], Any]:
    """The runner's ``on_reconcile``: the audit record on ``audit.records``, awaited until Kafka acknowledges it."""

    async def record(flag: FlagForReconciliation) -> None:
        audit = capture_refused_audit(flag, datetime.now(UTC))
        await producer.send(AUDIT_RECORDS.name, AUDIT_RECORDS.key_of(audit), AUDIT_RECORDS.encode(audit))

    return record


async def wait_for_fresh_fx(fx: FxRatesListener, cfg: BridgeConfig, timeout_s: float) -> bool:
    """Before the first request: the FX book holds fresh quotes for every currency an enabled rail pays out in
    (bounded; past the bound the bridge goes on and those currencies fail STALE_RATE, truthfully)."""
    rails = cfg.enabled_rails if cfg.enabled_rails is not None else frozenset(RAILS)
    currencies = {c for r in rails for c in RAILS[r].currencies}
    stale = await asyncio.to_thread(fx.wait_ready, currencies, timeout_s)
    if stale:
        log.error(
            "NO FRESH FX QUOTES after %.1f s for %s: going on; payments in them fail STALE_RATE until quotes arrive",
            timeout_s, ", ".join(sorted(stale)),
        )  # fmt: skip
        return False
    log.info("FX book ready: fresh quotes for %d currencies (%d quotes read)", len(currencies), fx.quotes_seen)
    return True


async def build_service(settings: Settings) -> BridgeService:
    """The bridge's service with its Kafka ledger, journal, FX, pause and parameter listeners and provider adapters
    (any runtime), once its FX book holds fresh quotes or ``bridge_fx_ready_timeout_s`` passed. Both runtimes build
    it, so both follow ``governance.pause`` (read to its end before the first request; unknown counts as paused) and
    ``governance.parameters`` (likewise; unknown: the defaults)."""
    bootstrap = settings.bootstrap_servers
    producer = AsyncProducer(bootstrap)
    outcomes = LedgerOutcomes(bootstrap)
    fx = FxRatesListener(bootstrap)
    pause = PauseListener(bootstrap, GOVERNANCE_PAUSE)
    params = ParameterListener(bootstrap, GOVERNANCE_PARAMETERS)
    await asyncio.to_thread(outcomes.start)  # before the first command: no answer can slip past
    await asyncio.to_thread(fx.start)
    await asyncio.to_thread(wait_started, pause, settings.bridge_fx_ready_timeout_s)  # unknown counts as paused
    await asyncio.to_thread(wait_started, params, settings.bridge_fx_ready_timeout_s)  # unknown: the defaults
    provider_settings = ProviderSettings()
    transport = make_transport(
        provider_settings.transport, provider_settings.max_connections, provider_settings.ca_file
    )
    adapters = build_adapters(provider_settings, transport)
    cfg = BridgeConfig(enabled_rails=frozenset(r for r, spec in RAILS.items() if spec.provider in adapters))
    ledger = KafkaHoldLedger(
        producer,
        outcomes,
        {cfg.rewards_account_id: m.RewardAccount.REWARDS, cfg.ecosystem_account_id: m.RewardAccount.ECOSYSTEM},
        settings.bridge_ledger_timeout_s,
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
        on_reconcile=reconciliation_recorder(producer),
        paused=lambda: pause.paused,
        parameters=lambda: params.values_now,
    )
    await wait_for_fresh_fx(fx, cfg, settings.bridge_fx_ready_timeout_s)  # no request before the FX book is fresh
    log.info("bridge ready: %d adapters, %d in flight at most", len(adapters), settings.bridge_max_in_flight)
    return BridgeService(
        runner,
        journal,
        producer,
        listeners=(outcomes, fx, pause, params),
        transport=transport,
        max_ingress_bytes=settings.max_ingress_message_bytes,
    )
