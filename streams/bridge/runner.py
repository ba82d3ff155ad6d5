"""The bridge shell: drives the pure core (``domain.bridge``) against a ledger, the FX book, adapters and a store.

What it adds to the core, and nothing else:

* **Effects executed in order**: holds, captures (with their rewards) and voids on the
  :class:`~domain.bridge.HoldLedger`, breaker bookkeeping, and for a :class:`~domain.bridge.PayoutIntent`:
  *persist the intent, then call the provider* (``IntentStore.persist_intent`` returns only once the record is
  durable), then feed the outcome back. Every result is persisted too; a request id with a stored result (or one
  in flight, or being recovered) is a duplicate and gets that result (whether its answer is a repeat is the
  service's call: ``domain.bridge.is_repeat``).
* **Concurrency without stalling**: at most ``max_in_flight`` settlements run at once (a slow provider holds
  one slot, not the stream); requests of one payer run strictly in submission order (each waits for the
  previous one of the same payer), others interleave. ``submit`` applies back-pressure once
  ``max_queued`` settlements are admitted and unfinished.
* **Recovery**: ``recover()`` resumes every persisted intent without a result (after a crash) and every
  parked one (outcome unknown), through ``domain.bridge.recover``: same idempotency key, one payout. One
  transaction is recovered by one task at a time (a duplicate request joins the recovery under way).
* **Emergency pause** (``paused``, from ``governance.pause``): asked when a payment begins, before its conversion
  and routing, and right before a payout intent is persisted and sent; the core decides (``core.begin``,
  ``core.on_paused``): refused with PAUSED, hold voided, unless a provider may already hold its payout. Recovery
  is never stopped.
* **Governed parameters** (``parameters``, from ``governance.parameters``: name -> checked value): a payment takes
  the configuration in force when it begins (``domain.bridge.configured``: cashback rates, ecosystem bonus,
  slippage limit) and keeps it to its end, so its hold, its slippage check and its rewards agree; a change read
  later applies to later payments. A payment recovered after a restart takes the configuration of its recovery.
* **Captures after payout**: a capture the ledger did not answer in time is sent again (same transfer id) after
  a bounded backoff (``CAPTURE_BACKOFF_S``), as the core decides; a refused one is recorded through
  ``on_reconcile`` (durably, before the result is reported).

Ledgers and stores: ``streams.bridge.ledger_client`` and ``streams.bridge.journal`` (Kafka);
``devtools.bridge_stand_ins`` for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from domain import bridge as core
from domain.bridge import (
    BridgeConfig,
    BridgeTx,
    CardPayment,
    Done,
    Effect,
    FlagForReconciliation,
    Instant,
    LedgerRejected,
    ParkForRecovery,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
    PlaceHold,
    PostHold,
    RailOutcome,
    ResolvePayout,
    Result,
    Reward,
    Settled,
    Step,
    VoidHold,
)
from domain.fx import FxBook
from domain.ledger import Reference
from domain.rails import DEFAULT_BREAKER, CircuitBreaker, Provider, Rail, new_breakers
from streams.bridge.providers.base import ProviderAdapter
from streams.ops import logs

log = logging.getLogger("nexus.bridge")

# The longest path the core allows is far shorter (hold, conversion, routing, capture, and per provider at most
# max_sends_per_provider sends with max_lookups lookups each: under 50 steps with the defaults). Reaching this
# bound means the core loops: the settlement fails loudly (its request stays unacked; a restart recovers it)
# instead of spinning forever.
STEPS_PER_SETTLEMENT_MAX = 256

# Wait before the n-th send of an unanswered capture (n = 2, 3, ...; the last value repeats). The ledger may be
# restarting or replaying; each send then waits up to the ledger client's own timeout for the answer.
CAPTURE_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


def capture_backoff_s(send_no: int) -> float:
    assert send_no >= 2, send_no
    return CAPTURE_BACKOFF_S[min(send_no - 2, len(CAPTURE_BACKOFF_S) - 1)]


class Clock(Protocol):
    def now(self) -> Instant: ...


class SystemClock:
    def now(self) -> Instant:
        return Instant(time.time_ns() // 1_000_000, time.perf_counter_ns() // 1_000)


class AsyncHoldLedger(Protocol):
    """:class:`domain.bridge.HoldLedger` over a remote ledger (``streams.bridge.service.KafkaHoldLedger``).

    Same contract; ``available_units`` None means the balance is not known locally (the hold decides).
    """

    async def available_units(self, account_id: str) -> int | None: ...

    async def place_hold(
        self,
        *,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_units: int,
        expires_at_ms: int,
        reference: Reference,
    ) -> None: ...

    async def post_hold(
        self, *, transfer_id: str, hold_id: str, amount_units: int, rewards: Sequence[Reward] = ()
    ) -> None: ...

    async def void_hold(self, *, transfer_id: str, hold_id: str) -> None: ...


class IntentStore(Protocol):
    """Durable record of payout intents and results. ``persist_*`` return once the record is durable."""

    async def persist_intent(self, intent: PayoutIntent) -> None: ...

    async def persist_result(self, result: Result) -> None: ...

    def open_intents(self) -> list[PayoutIntent]: ...

    def results(self) -> MutableMapping[str, Result]: ...

    async def aclose(self) -> None: ...


class MemoryIntentStore:
    """The runner's default store: nothing durable (tests, the in-process benchmark); production journals to
    Kafka (``streams.bridge.journal.KafkaJournal``)."""

    def __init__(self) -> None:
        self._intents: dict[str, PayoutIntent] = {}  # latest per bridge tx
        self._results: dict[str, Result] = {}
        self._closed: set[str] = set()

    async def persist_intent(self, intent: PayoutIntent) -> None:
        self._intents[intent.bridge_tx_id] = intent

    async def persist_result(self, result: Result) -> None:
        self._results[result.request_id] = result
        if result.bridge_tx_id:
            self._closed.add(result.bridge_tx_id)
            self._intents.pop(result.bridge_tx_id, None)

    def open_intents(self) -> list[PayoutIntent]:
        return list(self._intents.values())

    def results(self) -> dict[str, Result]:
        return dict(self._results)

    async def aclose(self) -> None:
        return None


class FifoSlots:
    """A counting semaphore with O(1) acquire/release under thousands of waiters, granted in FIFO order.

    (asyncio.Semaphore in 3.11 scans and ``deque.remove`` s its waiters: quadratic when many queue up.)
    """

    def __init__(self, n: int) -> None:
        assert n >= 1
        self._free = n
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # hand the slot straight to the next waiter
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


@dataclass
class RunnerStats:
    admitted: int = 0
    completed: int = 0
    failed: int = 0
    parked: int = 0
    duplicates: int = 0
    duplicate_mismatches: int = 0
    recovered: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class BridgeRunner:
    def __init__(
        self,
        *,
        ledger: core.HoldLedger | AsyncHoldLedger,
        adapters: dict[Provider, ProviderAdapter],
        fx_book: Callable[[], FxBook],
        store: IntentStore | None = None,
        cfg: BridgeConfig | None = None,
        breakers: dict[Rail, CircuitBreaker] | None = None,
        clock: Clock | None = None,
        max_in_flight: int = 256,
        max_queued: int = 4096,
        on_result: Callable[[Result], None] | None = None,
        on_reconcile: Callable[[FlagForReconciliation], Awaitable[None]] | None = None,
        paused: Callable[[], bool] | None = None,
        parameters: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.adapters = adapters
        self.fx_book = fx_book
        self.store: IntentStore = store or MemoryIntentStore()
        self.cfg = cfg or BridgeConfig(enabled_rails=frozenset(r for r in Rail if core.RAILS[r].provider in adapters))
        self.breakers = breakers if breakers is not None else new_breakers()
        self.clock: Clock = clock or SystemClock()
        self.on_result = on_result
        self.on_reconcile = on_reconcile
        self.paused: Callable[[], bool] = paused or _never_paused  # governance.pause (streams.bridge.pause_listener)
        self.parameters = parameters  # governance.parameters (streams.bridge.parameter_listener)
        self._configured: tuple[Mapping[str, int] | None, BridgeConfig] = (None, self.cfg)
        self._cfg_of: dict[str, BridgeConfig] = {}  # bridge tx id -> the config its payment began with
        self.stats = RunnerStats()
        self._results: MutableMapping[str, Result] = self.store.results()
        self._in_flight: dict[str, asyncio.Future[Result]] = {}
        self._parked: dict[str, PayoutIntent] = {}
        self._recovering: dict[str, asyncio.Future[Result | None]] = {}  # by bridge tx id
        self._slots = FifoSlots(max_in_flight)
        self._admission = FifoSlots(max_queued)
        self._tails: dict[str, asyncio.Task[None]] = {}

    # ---------------------------------------------------------------- public API

    async def submit(self, payment: CardPayment) -> asyncio.Future[Result]:
        """Admit one payment (waits while ``max_queued`` are unfinished); the future resolves to its result."""
        await self._admission.acquire()
        self.stats.admitted += 1
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        prev = self._tails.get(payment.payer_account_id)
        with logs.transaction(payment.request_id):  # the settlement's log lines carry its id (the task copies it)
            task = asyncio.create_task(self._run(payment, prev, fut))
        self._tails[payment.payer_account_id] = task

        def done(t: asyncio.Task[None], payer: str = payment.payer_account_id) -> None:
            self._admission.release()
            if self._tails.get(payer) is t:
                del self._tails[payer]

        task.add_done_callback(done)
        return fut

    async def settle(self, payment: CardPayment) -> Result:
        return await (await self.submit(payment))

    @property
    def in_flight_count(self) -> int:
        """Settlements begun and not yet finished (each holds at most one K-AUS hold): ``/metrics`` reads it."""
        return len(self._in_flight)

    def result_of(self, request_id: str) -> Result | None:
        return self._results.get(request_id)

    def remember(self, results: Iterable[Result]) -> None:
        """Results persisted by an earlier run (a partition taken over): their duplicates get them back."""
        for result in results:
            self._results.setdefault(result.request_id, result)

    async def recover(self, intents: Iterable[PayoutIntent] | None = None) -> list[Result]:
        """Resume persisted intents without a result and parked ones; returns the results reached.

        ``intents``: only these (e.g. one partition's, just loaded) instead of every open one in the store.
        """
        if intents is None:
            pending = {i.bridge_tx_id: i for i in self.store.open_intents()}
            pending.update(self._parked)
            self._parked.clear()
        else:
            pending = {i.bridge_tx_id: i for i in intents}
        joined = [self._recovering[t] for t in pending if t in self._recovering]  # under way: wait for it
        fresh = [i for t, i in pending.items() if t not in self._recovering]
        for intent in fresh:
            self._parked.pop(intent.bridge_tx_id, None)  # parked again if it stays unknown
        steps = core.recover(fresh, self.clock.now())
        self.stats.recovered += len(steps)
        results = await asyncio.gather(*joined, *(self._recover_one(s) for s in steps))
        return [r for r in results if r is not None]

    async def _recover_one(self, step: Step) -> Result | None:
        tx_id = step.tx.bridge_tx_id
        fut: asyncio.Future[Result | None] = asyncio.get_running_loop().create_future()
        self._recovering[tx_id] = fut
        try:
            with logs.transaction(step.tx.payment.request_id):  # gather runs each recovery in a task of its own
                async with self._slots:
                    result = await self._drive(step)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: the joiners (if any) see it too
            raise
        finally:
            del self._recovering[tx_id]
        fut.set_result(result)
        return result

    async def resolve_parked(self, request_id: str) -> Result | None:
        """One more try at a parked payment (or wait for the recovery already under way); its result, if reached."""
        tx_id = core.bridge_tx_id_for(request_id)
        under_way = self._recovering.get(tx_id)
        if under_way is not None:
            await asyncio.shield(under_way)
        elif tx_id in self._parked:
            await self.recover([self._parked[tx_id]])
        return self.result_of(request_id)

    def unresolved(self, request_id: str) -> bool:
        """Parked or being recovered: its outcome is not known yet."""
        tx_id = core.bridge_tx_id_for(request_id)
        return tx_id in self._parked or tx_id in self._recovering

    @property
    def parked(self) -> list[PayoutIntent]:
        return list(self._parked.values())

    def config_now(self) -> BridgeConfig:
        """The configuration in force: ``cfg`` with the governed parameters last read (rebuilt when they change)."""
        if self.parameters is None:
            return self.cfg
        values = self.parameters()
        seen, cfg = self._configured
        if values is not seen:  # the follower replaces its mapping on each change: identity is enough
            cfg = core.configured(self.cfg, values)
            self._configured = (values, cfg)
        return cfg

    def _cfg(self, tx: BridgeTx) -> BridgeConfig:
        """The configuration ``tx``'s payment began with (a recovered one: the configuration in force)."""
        return self._cfg_of.get(tx.bridge_tx_id) or self.config_now()

    # ---------------------------------------------------------------- internals

    async def _run(self, payment: CardPayment, prev: asyncio.Task[None] | None, fut: asyncio.Future[Result]) -> None:
        if prev is not None:
            await asyncio.wait([prev])  # this payer's previous payment finishes first
        try:
            async with self._slots:
                result = await self._process(payment)
        except PayoutParked as exc:
            if not fut.done():
                fut.set_exception(exc)
            return
        except BaseException as exc:  # surface to the caller, never lose the slot
            if not fut.done():
                fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            log.exception("bridge settlement %s crashed", payment.request_id)
            return
        if not fut.done():
            fut.set_result(result)

    async def _process(self, payment: CardPayment) -> Result:
        tx_id = core.bridge_tx_id_for(payment.request_id)
        if tx_id in self._recovering:  # a duplicate of a payment being recovered gets the recovery's result
            self.stats.duplicates += 1
            recovered = await asyncio.shield(self._recovering[tx_id])
            if recovered is None:
                raise PayoutParked(payment.request_id)
            return recovered
        if tx_id in self._parked:
            # Its outcome is still unknown; starting it again could contradict what recover() finds.
            raise PayoutParked(payment.request_id)
        admission = core.admit(payment, self._results, self._in_flight)
        if isinstance(admission, core.Duplicate):
            self.stats.duplicates += 1
            if not admission.same_payload:
                self.stats.duplicate_mismatches += 1
                log.warning(
                    "request id %s reused with a different payload; returning the original result", payment.request_id
                )
            return admission.result
        if isinstance(admission, core.InFlight):
            self.stats.duplicates += 1
            return await asyncio.shield(self._in_flight[payment.request_id])
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._in_flight[payment.request_id] = fut
        try:
            available = await _maybe_await(self.ledger.available_units(payment.payer_account_id))
            cfg = self._cfg_of[core.bridge_tx_id_for(payment.request_id)] = self.config_now()
            begun = core.begin(payment, available, self.clock.now(), cfg, self.paused())
            result = await self._drive(begun)
            if result is None:  # parked: the outcome is unknown until recovery
                raise PayoutParked(payment.request_id)
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._in_flight[payment.request_id]
            if tx_id not in self._parked:  # a parked payment keeps its config for its recovery
                self._cfg_of.pop(tx_id, None)

    async def _drive(self, step: Step) -> Result | None:
        """Run a settlement's steps until its result (persisted and reported) or until it parks (None)."""
        for _ in range(STEPS_PER_SETTLEMENT_MAX):
            nxt: Step | None = None
            for effect in step.effects:
                if isinstance(effect, Done):
                    await self._conclude(effect.result)
                    self._parked.pop(step.tx.bridge_tx_id, None)
                    return effect.result
                if isinstance(effect, ParkForRecovery):
                    self._parked[effect.intent.bridge_tx_id] = effect.intent
                    self.stats.parked += 1
                    log.warning("parked %s: %s", effect.intent.bridge_tx_id, effect.reason)
                    return None
                answered = await self._execute(effect, step.tx)
                if answered is not None:
                    nxt = answered
            step = nxt if nxt is not None else self._advance(step.tx)
        raise AssertionError(f"{step.tx.bridge_tx_id}: no result after {STEPS_PER_SETTLEMENT_MAX} steps")

    async def _execute(self, e: Effect, tx: BridgeTx) -> Step | None:
        """One effect on the ledger, the breakers or a provider; the core's next step if the effect answers."""
        if isinstance(e, RailOutcome):
            b = self.breakers.get(e.rail, DEFAULT_BREAKER)
            self.breakers[e.rail] = b.on_success(e.at_ms) if e.ok else b.on_failure(e.at_ms)
        elif isinstance(e, PlaceHold):
            try:
                await _maybe_await(
                    self.ledger.place_hold(
                        transfer_id=e.transfer_id,
                        debit_account_id=e.debit_account_id,
                        credit_account_id=e.credit_account_id,
                        amount_units=e.amount_units,
                        expires_at_ms=e.expires_at_ms,
                        reference=e.reference,
                    )
                )
                return core.on_hold(tx, True, "", self.clock.now())
            except LedgerRejected as exc:
                return core.on_hold(tx, False, str(exc), self.clock.now(), exc.code)
        elif isinstance(e, VoidHold):
            try:
                await _maybe_await(self.ledger.void_hold(transfer_id=e.transfer_id, hold_id=e.hold_id))
            except LedgerRejected as exc:  # e.g. it expired on its own: nothing stays locked either way
                log.info("void of %s: %s", e.hold_id, exc)
        elif isinstance(e, PostHold):
            return await self._capture(e, tx)
        elif isinstance(e, FlagForReconciliation):
            log.error("%s: RECONCILE: %s; owed %d K-AUS units", e.request_id, e.reason, e.kaus_units)
            if self.on_reconcile is not None:
                await self.on_reconcile(e)  # durable before the result is reported
        elif isinstance(e, PayoutIntent):
            stopped = core.on_paused(tx, self.clock.now()) if self.paused() else None
            if stopped is not None:  # the last check before the provider hears of it
                return stopped
            await self.store.persist_intent(e)  # durable BEFORE the provider hears of it
            now = self.clock.now()
            self.breakers[e.rail] = self.breakers.get(e.rail, DEFAULT_BREAKER).on_call(now.wall_ms)
            outcome = await self._call(e, lookup=False)
            return core.on_payout(tx, outcome, self.breakers, self.clock.now(), self._cfg(tx))
        elif isinstance(e, ResolvePayout):
            outcome = await self._call(e.intent, lookup=True)
            return core.on_resolved(tx, outcome, self.breakers, self.clock.now(), self._cfg(tx))
        return None

    async def _capture(self, e: PostHold, tx: BridgeTx) -> Step:
        """The capture (its rewards ride on it: applied with it, each once). The merchant is paid: an unanswered
        capture is never a failure, the core re-sends it (same transfer id) after a backoff, or parks it."""
        if e.send_no > 1:
            await asyncio.sleep(capture_backoff_s(e.send_no))
        try:
            await _maybe_await(
                self.ledger.post_hold(
                    transfer_id=e.transfer_id, hold_id=e.hold_id, amount_units=e.amount_units, rewards=e.rewards
                )
            )
        except LedgerRejected as exc:
            if exc.code == core.LEDGER_TIMEOUT:
                log.warning("%s: capture send %d unanswered: %s", tx.bridge_tx_id, e.send_no, exc)
                return core.on_capture_unanswered(tx, str(exc), self.clock.now(), self._cfg(tx))
            return core.on_posted(tx, False, str(exc), self.clock.now(), self._cfg(tx))
        return core.on_posted(tx, True, "", self.clock.now(), self._cfg(tx))

    def _advance(self, tx: BridgeTx) -> Step:
        """No effect answered: the transaction moves on by its stage (unless a pause stops it)."""
        if self.paused():
            stopped = core.on_paused(tx, self.clock.now())
            if stopped is not None:
                return stopped
        if tx.stage is core.Stage.HOLD_PLACED:
            return core.convert(tx, self.fx_book(), self.clock.now(), self._cfg(tx))
        if tx.stage is core.Stage.RATE_LOCKED:
            return core.route(tx, self.breakers, self.clock.now(), self._cfg(tx))
        raise AssertionError(f"{tx.bridge_tx_id}: no transition from {tx.stage}")

    async def _conclude(self, result: Result) -> None:
        self._cfg_of.pop(core.bridge_tx_id_for(result.request_id), None)
        await self.store.persist_result(result)
        self._results[result.request_id] = result
        if isinstance(result, Settled):
            self.stats.completed += 1
        else:
            self.stats.failed += 1
            code = result.reason_code.value
            self.stats.by_reason[code] = self.stats.by_reason.get(code, 0) + 1
        if self.on_result is not None:
            self.on_result(result)

    async def _call(self, intent: PayoutIntent, *, lookup: bool) -> PayoutOutcome:
        adapter = self.adapters.get(intent.provider)
        if adapter is None:
            return PayoutOutcome(
                PayoutStatus.UNAVAILABLE, error_code="NO_ADAPTER", error_message=f"no adapter for {intent.provider}"
            )
        try:
            return await (adapter.lookup(intent) if lookup else adapter.payout(intent))
        except Exception as exc:  # an adapter bug must not lose the settlement: the outcome is unknown
            log.exception("adapter %s raised", intent.provider)
            return PayoutOutcome(PayoutStatus.TIMEOUT, error_code="ADAPTER_ERROR", error_message=repr(exc))


def _never_paused() -> bool:
    return False


async def _maybe_await(value: Any) -> Any:
    """The ledger may be in process (plain calls) or remote (``streams.bridge.service``: coroutines)."""
    return await value if inspect.isawaitable(value) else value


class PayoutParked(Exception):
    """The payout's outcome is unknown (provider unreachable even to ask); ``recover()`` will finish it."""
