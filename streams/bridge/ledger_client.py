"""The bridge's client of the platform ledger: its holds, captures and voids are ``ledger.commands``.

``ledger.commands`` is the single-writer ledger every K-AUS movement goes through; its answers come back on
``ledger.outcomes`` and are matched to the waiting settlement by command id. The commands' bytes come from
``contracts.ledger_codec``. Each names its payment (a ``LedgerReference``): the hold the reference the core put on
its ``PlaceHold`` (a card payment's, or a holder's payout's: ``domain.bridge.payment_reference``; the ledger carries
it onto the capture or release), each reward its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from contracts import ledger_codec
from contracts import models as m
from contracts.topics import LEDGER_COMMANDS, LEDGER_OUTCOMES
from domain.bridge import LEDGER_TIMEOUT, LedgerRejected, Reward
from domain.ledger import Reference
from streams.kafka.clients import AsyncProducer, consume_now, consumer_config, watermarks


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
            _low, high = watermarks(self._consumer, name, p, 30)
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

    def __init__(
        self,
        producer: AsyncProducer,
        outcomes: LedgerOutcomes,
        reward_accounts: dict[str, m.RewardAccount],
        timeout_s: float = 10.0,
    ) -> None:
        self.timeout_s = timeout_s  # bounded wait for an answer; then LEDGER_TIMEOUT (the runner decides what follows)
        self.producer = producer
        self.outcomes = outcomes
        self.reward_accounts = reward_accounts  # BridgeConfig account id -> issuance account

    async def available_units(self, account_id: str) -> int | None:
        return None  # not known here: the hold is checked by the ledger, in order with every other movement

    def _send(self, command_id: str, value: bytes) -> None:
        # No delivery report: the outcome (or its timeout) is the answer.
        self.producer.send_unacked(LEDGER_COMMANDS.name, command_id.encode(), value)

    async def _ask(self, command_id: str, value: bytes) -> m.LedgerOutcome:
        timeout_s = self.timeout_s
        answer = self.outcomes.expect(command_id)
        try:
            self._send(command_id, value)
            outcome = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            self.outcomes.forget(command_id)
            reason = f"no answer to {command_id} in {timeout_s}s"
            raise LedgerRejected(LEDGER_TIMEOUT, reason) from None
        except BaseException:
            self.outcomes.forget(command_id)
            raise
        if outcome.status is m.LedgerOutcomeStatus.REJECTED:
            raise LedgerRejected(outcome.reason_code or "REJECTED", outcome.reason or "")
        return outcome

    async def place_hold(
        self,
        *,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_units: int,
        expires_at_ms: int,
        reference: Reference,
    ) -> None:
        now_ms = _now_ms()
        command = ledger_codec.place_hold(
            transfer_id, debit_account_id, credit_account_id, amount_units, expires_at_ms, now_ms, reference
        )
        try:
            await self._ask(transfer_id, command)
        except LedgerRejected as exc:
            if exc.code == LEDGER_TIMEOUT:
                # The hold may still land: release it (applied after it, in ledger order) so nothing stays locked.
                void_id = f"{transfer_id}:void-timeout"
                self._send(void_id, ledger_codec.void_hold(void_id, transfer_id, _now_ms()))
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
            grants.append(
                ledger_codec.RewardGrant(
                    r.transfer_id, source, r.credit_account_id, r.amount_units, reference=r.reference
                )
            )
        await self._ask(transfer_id, ledger_codec.post_hold(transfer_id, hold_id, amount_units, grants, _now_ms()))

    async def void_hold(self, *, transfer_id: str, hold_id: str) -> None:
        await self._ask(transfer_id, ledger_codec.void_hold(transfer_id, hold_id, _now_ms()))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
