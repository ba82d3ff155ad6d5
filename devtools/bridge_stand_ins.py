"""Stand-ins for the bridge's ledger and intent store, for tests, benchmarks and the CLI (``devtools.bridge_cli``).

* :class:`FileIntentStore`: intents and results as JSON lines with group commit (+ fdatasync).
* :class:`InMemoryHoldLedger`: a small journaled two-phase ledger (its journal survives a SIGKILL).
* :class:`LedgerHolds`: :class:`domain.bridge.HoldLedger` on the platform ledger (``domain.ledger.Ledger``) in
  process, no Kafka (the in-process benchmark and the adapter tests).

Production uses ``streams.bridge.journal.KafkaJournal`` and ``streams.bridge.ledger_client.KafkaHoldLedger``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts import bridge_codec
from contracts import models as m
from contracts.construct import dump_json
from domain import ledger as lg
from domain.bridge import BridgeConfig, LedgerRejected, PayoutIntent, Result, Reward
from streams.bridge.runner import MemoryIntentStore

__all__ = ["FileIntentStore", "InMemoryHoldLedger", "LedgerHolds", "MemoryIntentStore"]


class FileIntentStore(MemoryIntentStore):
    """Append-only JSON lines with group commit: concurrent persists share one write (+ fdatasync).

    Records: ``{"t": "intent", "v": <BridgePayoutIntent>}`` and ``{"t": "result", ...}``. On open, the file
    is replayed; a torn last line (crash mid-write) is ignored — its persist never returned, so nothing
    acted on it.
    """

    def __init__(self, path: Path, fsync: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._fh = self.path.open("ab")
        self._pending: list[tuple[bytes, asyncio.Future[None] | None]] = []
        self._flusher: asyncio.Task[None] | None = None

    def _load(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # torn tail
            if rec["t"] == "intent":
                intent = bridge_codec.intent_from_record(m.BridgePayoutIntent.model_validate(rec["v"]))
                if intent.bridge_tx_id not in self._closed:
                    self._intents[intent.bridge_tx_id] = intent
            else:
                result = bridge_codec.result_from_json(rec["v"])
                self._results[result.request_id] = result
                if result.bridge_tx_id:
                    self._closed.add(result.bridge_tx_id)
                    self._intents.pop(result.bridge_tx_id, None)

    def _enqueue(self, line: bytes, fut: asyncio.Future[None] | None) -> None:
        self._pending.append((line, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let concurrent persists join this batch
            batch, self._pending = self._pending, []
            try:
                # Off the event loop: a write can stall on a busy disk (dirty-page throttling) and fdatasync
                # always waits for the device; other settlements keep running meanwhile.
                await asyncio.to_thread(self._write, b"".join(line for line, _ in batch))
            except OSError as exc:
                for _, fut in batch:
                    if fut is not None:
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if fut is not None:
                    fut.set_result(None)

    def _write(self, data: bytes) -> None:
        self._fh.write(data)  # page cache: survives a process kill
        self._fh.flush()
        if self.fsync:
            os.fdatasync(self._fh.fileno())  # survives a power loss too

    async def persist_intent(self, intent: PayoutIntent) -> None:
        # Awaited: the provider must not hear of a payout that a restart could not find.
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(dump_json({"t": "intent", "v": bridge_codec.intent_json(intent)}) + b"\n", fut)
        await fut
        await super().persist_intent(intent)

    async def persist_result(self, result: Result) -> None:
        # Not awaited: losing a result record in a crash only means the intent is re-resolved on restart
        # (same key → the same payout, idempotent ledger ops) and the result emitted again.
        self._enqueue(dump_json({"t": "result", "v": bridge_codec.result_to_json(result)}) + b"\n", None)
        await super().persist_result(result)

    async def aclose(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self._fh.close()


@dataclass
class _Hold:
    debit: str
    credit: str
    amount: int
    expires_at_ms: int
    state: str = "PENDING"


class InMemoryHoldLedger:
    """A minimal two-phase K-AUS ledger implementing :class:`domain.bridge.HoldLedger` (a stand-in; with a
    journal it survives the SIGKILL test's restarts).

    Holds reduce the available balance until posted (≤ held amount, the rest released) or voided, exactly
    once; an expired hold cannot be posted. A capture's rewards are applied with it (one journal line: both or
    neither survive a crash); a repeated capture applies those of its rewards not applied yet. Transfer ids are
    idempotency keys. With ``journal`` every applied operation is appended (flushed to the OS, which survives
    SIGKILL) and replayed on construction.
    """

    def __init__(
        self,
        balances: dict[str, int] | None = None,
        journal: Path | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.balances: dict[str, int] = dict(balances or {})
        self.holds: dict[str, _Hold] = {}
        self.applied: set[str] = set()
        self.clock_ms = clock_ms
        self._journal = None
        if journal is not None:
            journal = Path(journal)
            journal.parent.mkdir(parents=True, exist_ok=True)
            if journal.exists():
                for line in journal.read_bytes().splitlines():
                    with contextlib.suppress(ValueError, KeyError):
                        op = json.loads(line)
                        getattr(self, "_" + op.pop("op"))(**op)
            self._journal = journal.open("a")

    def _apply(self, op: str, **kw: Any) -> None:
        """Apply ``op`` (``self._<op>(**kw)``, as the journal replay does) and journal it."""
        getattr(self, "_" + op)(**kw)
        self._log(op, **kw)

    def _log(self, op: str, **kw: Any) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps({"op": op, **kw}) + "\n")
            self._journal.flush()

    def deposit(self, transfer_id: str, account_id: str, amount_units: int) -> None:
        if transfer_id in self.applied:
            return
        self._apply("deposit", transfer_id=transfer_id, account_id=account_id, amount_units=amount_units)

    def _deposit(self, transfer_id: str, account_id: str, amount_units: int) -> None:
        self.balances[account_id] = self.balances.get(account_id, 0) + amount_units
        self.applied.add(transfer_id)

    def available_units(self, account_id: str) -> int:
        now = self.clock_ms()
        held = sum(
            h.amount
            for h in self.holds.values()
            if h.state == "PENDING" and h.debit == account_id and h.expires_at_ms > now
        )
        return self.balances.get(account_id, 0) - held

    def place_hold(
        self,
        *,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_units: int,
        expires_at_ms: int,
        reference: lg.Reference | None = None,  # the payment the hold is for (the core's); a stand-in keeps none
    ) -> None:
        if transfer_id in self.applied:
            return
        if self.available_units(debit_account_id) < amount_units:
            raise LedgerRejected("INSUFFICIENT_FUNDS", f"{debit_account_id} cannot cover {amount_units} units")
        self._apply(
            "place_hold",
            transfer_id=transfer_id,
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount_units=amount_units,
            expires_at_ms=expires_at_ms,
        )

    def _place_hold(
        self, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int, expires_at_ms: int
    ) -> None:
        self.holds[transfer_id] = _Hold(debit_account_id, credit_account_id, amount_units, expires_at_ms)
        self.applied.add(transfer_id)

    def post_hold(self, *, transfer_id: str, hold_id: str, amount_units: int, rewards: Sequence[Reward] = ()) -> None:
        grants: list[dict[str, Any]] = [
            {
                "transfer_id": r.transfer_id,
                "debit_account_id": r.debit_account_id,
                "credit_account_id": r.credit_account_id,
                "amount_units": r.amount_units,
            }
            for r in rewards
            if r.transfer_id not in self.applied
        ]
        if transfer_id in self.applied:  # a repeated capture: only its rewards not applied yet
            for grant in grants:
                self.transfer(**grant)
            return
        h = self.holds.get(hold_id)
        if h is None:
            raise LedgerRejected("UNKNOWN_HOLD", hold_id)
        if h.state != "PENDING":
            raise LedgerRejected("HOLD_RESOLVED", f"{hold_id} is already {h.state}")
        if h.expires_at_ms <= self.clock_ms():
            raise LedgerRejected("HOLD_EXPIRED", f"{hold_id} expired at {h.expires_at_ms}")
        if amount_units > h.amount:
            raise LedgerRejected("EXCEEDS_HOLD", f"{amount_units} > held {h.amount}")
        self._apply("post_hold", transfer_id=transfer_id, hold_id=hold_id, amount_units=amount_units, rewards=grants)

    def _post_hold(
        self, transfer_id: str, hold_id: str, amount_units: int, rewards: Sequence[dict[str, Any]] = ()
    ) -> None:
        h = self.holds[hold_id]
        h.state = "POSTED"
        self.balances[h.debit] = self.balances.get(h.debit, 0) - amount_units
        self.balances[h.credit] = self.balances.get(h.credit, 0) + amount_units
        self.applied.add(transfer_id)
        for grant in rewards:  # journaled on the capture's line (older journals: none here, "transfer" lines)
            if grant["transfer_id"] not in self.applied:
                self._transfer(**grant)

    def void_hold(self, *, transfer_id: str, hold_id: str) -> None:
        if transfer_id in self.applied:
            return
        h = self.holds.get(hold_id)
        if h is None or h.state != "PENDING":
            raise LedgerRejected("HOLD_RESOLVED", f"{hold_id}: nothing to void")
        self._apply("void_hold", transfer_id=transfer_id, hold_id=hold_id)

    def _void_hold(self, transfer_id: str, hold_id: str) -> None:
        self.holds[hold_id].state = "VOIDED"
        self.applied.add(transfer_id)

    def transfer(self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int) -> None:
        if transfer_id in self.applied:
            return
        self._apply(
            "transfer",
            transfer_id=transfer_id,
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount_units=amount_units,
        )

    def _transfer(self, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int) -> None:
        self.balances[debit_account_id] = self.balances.get(debit_account_id, 0) - amount_units
        self.balances[credit_account_id] = self.balances.get(credit_account_id, 0) + amount_units
        self.applied.add(transfer_id)

    def pending_holds(self) -> dict[str, int]:
        return {k: h.amount for k, h in self.holds.items() if h.state == "PENDING"}


class LedgerHolds:
    """:class:`domain.bridge.HoldLedger` on the platform ledger (``domain.ledger.Ledger``), in process.

    Holds are ``PendingTransfer`` s (code ``bridge.hold``), captures ``PostPending``, releases ``VoidPending``,
    rewards ``Transfer`` s (code ``bridge.reward``) from the rewards/ecosystem accounts, which are opened with
    ``allow_negative`` (issuance accounts); a capture and its rewards are one atomic ledger batch, as in the
    ledger service. A rejected command raises :class:`LedgerRejected` with the ledger's code. Time comes from
    ``clock_ms`` (the ledger never reads a clock).
    """

    def __init__(
        self,
        ledger: Any,
        cfg: BridgeConfig | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._lg = lg
        self.ledger = ledger
        self.clock_ms = clock_ms
        cfg = cfg or BridgeConfig()
        ledger.open_account(cfg.settlement_account_id)
        ledger.open_account(cfg.rewards_account_id, allow_negative=True)
        ledger.open_account(cfg.ecosystem_account_id, allow_negative=True)

    def _apply(self, command: Any) -> None:
        result = self.ledger.apply(command, self.clock_ms())
        if result.status == self._lg.TransferStatus.REJECTED:
            raise LedgerRejected(str(result.code), result.reason)

    def available_units(self, account_id: str) -> int:
        return int(self.ledger.available(account_id)) if self.ledger.has_account(account_id) else 0

    def place_hold(
        self,
        *,
        transfer_id: str,
        debit_account_id: str,
        credit_account_id: str,
        amount_units: int,
        expires_at_ms: int,
        reference: lg.Reference | None = None,  # the payment the hold is for (the core's); a stand-in keeps none
    ) -> None:
        self._apply(
            self._lg.PendingTransfer(
                transfer_id, debit_account_id, credit_account_id, amount_units, "bridge.hold", expires_at_ms
            )
        )

    def post_hold(self, *, transfer_id: str, hold_id: str, amount_units: int, rewards: Sequence[Reward] = ()) -> None:
        lg = self._lg
        post = lg.PostPending(transfer_id, hold_id, amount_units)
        if not rewards:
            self._apply(post)
            return
        grants = [
            lg.Transfer(r.transfer_id, r.debit_account_id, r.credit_account_id, r.amount_units, "bridge.reward")
            for r in rewards
        ]
        batch = self.ledger.apply_batch([post, *grants], self.clock_ms())
        if not batch.ok:
            failed = next((r for r in batch.results if r.code is not lg.LedgerCode.LINKED_EVENT_FAILED), None)
            failed = failed or batch.results[0]
            raise LedgerRejected(str(failed.code), failed.reason)

    def void_hold(self, *, transfer_id: str, hold_id: str) -> None:
        self._apply(self._lg.VoidPending(transfer_id, hold_id))
