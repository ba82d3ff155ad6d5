"""The bridge shell: drives the pure core (``domain.bridge``) against a ledger, the FX book, adapters and a store.

What it adds to the core, and nothing else:

* **Effects executed in order**: holds, captures (with their rewards) and voids on the
  :class:`~domain.bridge.HoldLedger`,
  breaker bookkeeping, and for a :class:`~domain.bridge.PayoutIntent`: *persist the intent, then call the
  provider* (``IntentStore.persist_intent`` returns only once the record is durable), then feed the outcome
  back. Every result is persisted too; a request id with a stored result is a duplicate.
* **Concurrency without stalling**: at most ``max_in_flight`` settlements run at once (a slow provider holds
  one slot, not the stream); requests of one payer run strictly in submission order (each waits for the
  previous one of the same payer), others interleave. ``submit`` applies back-pressure once
  ``max_queued`` settlements are admitted and unfinished.
* **Recovery**: ``recover()`` resumes every persisted intent without a result (after a crash) and every
  parked one (outcome unknown), through ``domain.bridge.recover`` — same idempotency key, one payout.

Ledgers: :class:`LedgerHolds` puts the protocol on the platform ledger (``domain.ledger.Ledger``, in
process); :class:`InMemoryHoldLedger` is a small journaled stand-in used by the CLI below (its journal
survives the SIGKILL test's restarts). CLI::

    python -m streams.bridge.runner --state-dir DIR --requests REQS.jsonl [--sim-url URL]
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from contracts import models as m
from contracts.construct import utc_text_ms
from domain import bridge as core
from domain.bridge import (
    BridgeConfig,
    CardPayment,
    Done,
    Instant,
    LedgerRejected,
    ParkForRecovery,
    PayoutIntent,
    PayoutOutcome,
    PayoutStatus,
    PlaceHold,
    PostHold,
    RailOutcome,
    Rejected,
    ResolvePayout,
    Result,
    Reward,
    Settled,
    Step,
    VoidHold,
)
from domain.cashback import PayerTier
from domain.fx import FxBook, format_rate
from domain.rails import DEFAULT_BREAKER, CircuitBreaker, Provider, Rail, Region, new_breakers
from streams.bridge.providers.base import ProviderAdapter

log = logging.getLogger("nexus.bridge")


# --------------------------------------------------------------------------- clock


class Clock(Protocol):
    def now(self) -> Instant: ...


class SystemClock:
    def now(self) -> Instant:
        return Instant(time.time_ns() // 1_000_000, time.perf_counter_ns() // 1_000)


# --------------------------------------------------------------------------- contract <-> domain


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _us_to_ms(us: int) -> int:
    return (us + 500) // 1000


def payment_from_request(req: m.BridgeRequest) -> CardPayment:
    return CardPayment(
        request_id=req.request_id,
        payer_account_id=req.payer_account_id,
        merchant_id=req.merchant_id,
        merchant_program=req.merchant_program,
        amount_minor=req.amount_minor,
        currency=req.currency,
        region=Region(req.region.value),
        payer_tier=PayerTier(req.payer_tier.value),
        quoted_rate=req.quoted_rate,
        requested_at_ms=_ms(req.requested_at),
    )


def request_from_payment(p: CardPayment) -> m.BridgeRequest:
    return m.BridgeRequest(
        request_id=p.request_id,
        payer_account_id=p.payer_account_id,
        merchant_id=p.merchant_id,
        merchant_program=p.merchant_program,
        amount_minor=p.amount_minor,
        currency=p.currency,
        region=m.Region(p.region.value),
        payer_tier=m.PayerTier(p.payer_tier.value),
        quoted_rate=p.quoted_rate,
        requested_at=_dt(p.requested_at_ms),
    )


def _iso(ms: int) -> str:
    return utc_text_ms(ms)  # hot path: exact integer arithmetic, the second's text cached (test_construct.py)


def request_json(p: CardPayment) -> dict[str, Any]:
    """``bridge.requests`` JSON of a payment, built directly (the hot path skips pydantic)."""
    return {
        "request_id": p.request_id,
        "payer_account_id": p.payer_account_id,
        "merchant_id": p.merchant_id,
        "merchant_program": p.merchant_program,
        "amount_minor": p.amount_minor,
        "currency": str(p.currency),
        "region": str(p.region),
        "payer_tier": str(p.payer_tier),
        "quoted_rate": format_rate(p.quoted_rate),
        "requested_at": _iso(p.requested_at_ms),
    }


def result_json(result: Result) -> dict[str, Any]:
    """The wire JSON of a result in the contract's shape (``bridge.settlements.completed`` / ``.failed``)."""
    durations = {str(p): _us_to_ms(us) for p, us in result.phase_durations_us}
    if isinstance(result, Settled):
        return {
            "request_id": result.request_id,
            "bridge_tx_id": result.bridge_tx_id,
            "payer_account_id": result.payer_account_id,
            "merchant_id": result.merchant_id,
            "region": str(result.region),
            "currency": str(result.currency),
            "amount_minor": result.amount_minor,
            "kaus_debited_units": result.kaus_debited_units,
            "rate": format_rate(result.rate),
            "rail": str(result.rail),
            "provider_reference": result.provider_reference,
            "provider_fee_minor": result.provider_fee_minor,
            "cashback_kaus_units": result.cashback_kaus_units,
            "ecosystem_bonus_kaus_units": result.ecosystem_bonus_kaus_units,
            "phase_durations_ms": durations,
            "total_duration_ms": _us_to_ms(result.total_duration_us),
            "completed_at": _iso(result.completed_at_ms),
        }
    return {
        "request_id": result.request_id,
        "bridge_tx_id": result.bridge_tx_id,
        "payer_account_id": result.payer_account_id,
        "region": str(result.region),
        "currency": str(result.currency),
        "amount_minor": result.amount_minor,
        "failed_phase": str(result.failed_phase),
        "reason_code": str(result.reason_code),
        "reason": result.reason[:2000],
        "rail": str(result.rail) if result.rail else None,
        "phase_durations_ms": durations,
        "failed_at": _iso(result.failed_at_ms),
    }


def to_contract(result: Result) -> m.BridgeSettlementCompleted | m.BridgeSettlementFailed:
    """The validated wire message for a result (what the agent sends)."""
    if isinstance(result, Settled):
        return m.BridgeSettlementCompleted.model_validate(result_json(result))
    return m.BridgeSettlementFailed.model_validate(result_json(result))


def intent_json(i: PayoutIntent) -> dict[str, Any]:
    """``BridgePayoutIntent`` JSON of an intent, built directly (persisted before every provider call)."""
    return {
        "intent_id": f"{i.bridge_tx_id}:{i.provider_attempt}:{i.send_no}",
        "bridge_tx_id": i.bridge_tx_id,
        "idempotency_key": i.idempotency_key,
        "provider_attempt": i.provider_attempt,
        "send_no": i.send_no,
        "rail": str(i.rail),
        "provider": str(i.provider),
        "amount_minor": i.amount_minor,
        "currency": str(i.currency),
        "fee_minor": i.fee_minor,
        "kaus_units": i.kaus_units,
        "rate": format_rate(i.rate),
        "lock_id": i.lock_id,
        "locked_at": _iso(i.locked_at_ms),
        "lock_expires_at": _iso(i.lock_expires_at_ms),
        "hold_id": i.hold_id,
        "hold_units": i.hold_units,
        "tried_providers": [str(p) for p in i.tried_providers],
        "request": request_json(i.payment),
        "created_at": _iso(i.created_at_ms),
    }


def intent_to_record(i: PayoutIntent) -> m.BridgePayoutIntent:
    return m.BridgePayoutIntent.model_validate(intent_json(i))


def intent_from_record(r: m.BridgePayoutIntent) -> PayoutIntent:
    return PayoutIntent(
        bridge_tx_id=r.bridge_tx_id,
        idempotency_key=r.idempotency_key,
        provider_attempt=r.provider_attempt,
        send_no=r.send_no,
        rail=Rail(r.rail.value),
        provider=Provider(r.provider),
        amount_minor=r.amount_minor,
        currency=r.currency,
        fee_minor=r.fee_minor,
        kaus_units=r.kaus_units,
        rate=r.rate,
        lock_id=r.lock_id,
        locked_at_ms=_ms(r.locked_at),
        lock_expires_at_ms=_ms(r.lock_expires_at),
        hold_id=r.hold_id,
        hold_units=r.hold_units,
        tried_providers=tuple(Provider(p) for p in r.tried_providers),
        payment=payment_from_request(r.request),
        created_at_ms=_ms(r.created_at),
    )


def _result_to_json(result: Result) -> dict[str, Any]:
    wire = result_json(result)
    extra: dict[str, Any] = {
        "fingerprint": result.fingerprint,
        "durations_us": [[str(p), us] for p, us in result.phase_durations_us],
    }
    if isinstance(result, Settled):
        extra.update(provider=str(result.provider), total_duration_us=result.total_duration_us)
    else:
        extra.update(hold_voided=result.hold_voided, needs_reconciliation=result.needs_reconciliation)
    return {"ok": isinstance(result, Settled), "wire": wire, "x": extra}


def _result_from_json(d: dict[str, Any]) -> Result:
    x = d["x"]
    durations = tuple((core.Phase(p), int(us)) for p, us in x["durations_us"])
    if d["ok"]:
        c = m.BridgeSettlementCompleted.model_validate(d["wire"])
        return Settled(
            request_id=c.request_id,
            bridge_tx_id=c.bridge_tx_id,
            payer_account_id=c.payer_account_id,
            merchant_id=c.merchant_id,
            region=Region(c.region.value),
            currency=c.currency,
            amount_minor=c.amount_minor,
            kaus_debited_units=c.kaus_debited_units,
            rate=c.rate,
            rail=Rail(c.rail.value),
            provider=Provider(x["provider"]),
            provider_reference=c.provider_reference,
            provider_fee_minor=c.provider_fee_minor,
            cashback_kaus_units=c.cashback_kaus_units,
            ecosystem_bonus_kaus_units=c.ecosystem_bonus_kaus_units,
            phase_durations_us=durations,
            total_duration_us=int(x["total_duration_us"]),
            completed_at_ms=_ms(c.completed_at),
            fingerprint=x["fingerprint"],
        )
    f = m.BridgeSettlementFailed.model_validate(d["wire"])
    return Rejected(
        request_id=f.request_id,
        bridge_tx_id=f.bridge_tx_id,
        payer_account_id=f.payer_account_id,
        region=Region(f.region.value),
        currency=f.currency,
        amount_minor=f.amount_minor,
        failed_phase=core.Phase(f.failed_phase.value),
        reason_code=core.ReasonCode(f.reason_code),
        reason=f.reason,
        rail=Rail(f.rail.value) if f.rail else None,
        phase_durations_us=durations,
        failed_at_ms=_ms(f.failed_at),
        fingerprint=x["fingerprint"],
        hold_voided=bool(x["hold_voided"]),
        needs_reconciliation=bool(x["needs_reconciliation"]),
    )


# --------------------------------------------------------------------------- intent store


def _dumps(obj: Any) -> bytes:
    try:
        import orjson

        return bytes(orjson.dumps(obj))
    except ImportError:  # orjson ships with the platform extra; stdlib json is the fallback
        return json.dumps(obj, separators=(",", ":")).encode()


class AsyncHoldLedger(Protocol):
    """:class:`domain.bridge.HoldLedger` over a remote ledger (``streams.bridge.service.KafkaHoldLedger``).

    Same contract; ``available_units`` None means the balance is not known locally (the hold decides).
    """

    async def available_units(self, account_id: str) -> int | None: ...

    async def place_hold(
        self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int, expires_at_ms: int
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
                intent = intent_from_record(m.BridgePayoutIntent.model_validate(rec["v"]))
                if intent.bridge_tx_id not in self._closed:
                    self._intents[intent.bridge_tx_id] = intent
            else:
                result = _result_from_json(rec["v"])
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
        self._enqueue(_dumps({"t": "intent", "v": intent_json(intent)}) + b"\n", fut)
        await fut
        await super().persist_intent(intent)

    async def persist_result(self, result: Result) -> None:
        # Not awaited: losing a result record in a crash only means the intent is re-resolved on restart
        # (same key → the same payout, idempotent ledger ops) and the result emitted again.
        self._enqueue(_dumps({"t": "result", "v": _result_to_json(result)}) + b"\n", None)
        await super().persist_result(result)

    async def aclose(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self._fh.close()


# --------------------------------------------------------------------------- stand-in ledger


@dataclass
class _Hold:
    debit: str
    credit: str
    amount: int
    expires_at_ms: int
    state: str = "PENDING"


class InMemoryHoldLedger:
    """A minimal two-phase K-AUS ledger implementing :class:`domain.bridge.HoldLedger` (stand-in, see module doc).

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

    def _log(self, op: str, **kw: Any) -> None:
        if self._journal is not None:
            self._journal.write(json.dumps({"op": op, **kw}) + "\n")
            self._journal.flush()

    def deposit(self, transfer_id: str, account_id: str, amount_units: int) -> None:
        if transfer_id in self.applied:
            return
        self._deposit(transfer_id=transfer_id, account_id=account_id, amount_units=amount_units)
        self._log("deposit", transfer_id=transfer_id, account_id=account_id, amount_units=amount_units)

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
        self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int, expires_at_ms: int
    ) -> None:
        if transfer_id in self.applied:
            return
        if self.available_units(debit_account_id) < amount_units:
            raise LedgerRejected("INSUFFICIENT_FUNDS", f"{debit_account_id} cannot cover {amount_units} units")
        kw = dict(
            transfer_id=transfer_id,
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount_units=amount_units,
            expires_at_ms=expires_at_ms,
        )
        self._place_hold(**kw)  # type: ignore[arg-type]
        self._log("place_hold", **kw)

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
        self._post_hold(transfer_id=transfer_id, hold_id=hold_id, amount_units=amount_units, rewards=grants)
        self._log("post_hold", transfer_id=transfer_id, hold_id=hold_id, amount_units=amount_units, rewards=grants)

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
        self._void_hold(transfer_id=transfer_id, hold_id=hold_id)
        self._log("void_hold", transfer_id=transfer_id, hold_id=hold_id)

    def _void_hold(self, transfer_id: str, hold_id: str) -> None:
        self.holds[hold_id].state = "VOIDED"
        self.applied.add(transfer_id)

    def transfer(self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int) -> None:
        if transfer_id in self.applied:
            return
        kw = dict(
            transfer_id=transfer_id,
            debit_account_id=debit_account_id,
            credit_account_id=credit_account_id,
            amount_units=amount_units,
        )
        self._transfer(**kw)  # type: ignore[arg-type]
        self._log("transfer", **kw)

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
        from domain import ledger as lg

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
        self, *, transfer_id: str, debit_account_id: str, credit_account_id: str, amount_units: int, expires_at_ms: int
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


# --------------------------------------------------------------------------- the runner


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
    ) -> None:
        self.ledger = ledger
        self.adapters = adapters
        self.fx_book = fx_book
        self.store: IntentStore = store or MemoryIntentStore()
        self.cfg = cfg or BridgeConfig(enabled_rails=frozenset(r for r in Rail if core.RAILS[r].provider in adapters))
        self.breakers = breakers if breakers is not None else new_breakers()
        self.clock: Clock = clock or SystemClock()
        self.on_result = on_result
        self.stats = RunnerStats()
        self._results: MutableMapping[str, Result] = self.store.results()
        self._in_flight: dict[str, asyncio.Future[Result]] = {}
        self._parked: dict[str, PayoutIntent] = {}
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

    async def drain(self) -> None:
        while self._tails:
            await asyncio.gather(*list(self._tails.values()), return_exceptions=True)

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
        steps = core.recover(pending.values(), self.clock.now())
        self.stats.recovered += len(steps)

        async def one(step: Step) -> Result | None:
            async with self._slots:
                return await self._drive(step)

        results = await asyncio.gather(*(one(s) for s in steps))
        return [r for r in results if r is not None]

    @property
    def parked(self) -> list[PayoutIntent]:
        return list(self._parked.values())

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
        if core.bridge_tx_id_for(payment.request_id) in self._parked:
            # Its payout outcome is still unknown; starting it again could contradict what recover() finds.
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
            result = await self._drive(core.begin(payment, available, self.clock.now(), self.cfg))
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

    async def _drive(self, step: Step) -> Result | None:
        cfg, ledger = self.cfg, self.ledger
        while True:
            nxt: Step | None = None
            tx = step.tx
            for e in step.effects:
                if isinstance(e, RailOutcome):
                    b = self.breakers.get(e.rail, DEFAULT_BREAKER)
                    self.breakers[e.rail] = b.on_success(e.at_ms) if e.ok else b.on_failure(e.at_ms)
                elif isinstance(e, PlaceHold):
                    try:
                        await _maybe_await(
                            ledger.place_hold(
                                transfer_id=e.transfer_id,
                                debit_account_id=e.debit_account_id,
                                credit_account_id=e.credit_account_id,
                                amount_units=e.amount_units,
                                expires_at_ms=e.expires_at_ms,
                            )
                        )
                        nxt = core.on_hold(tx, True, "", self.clock.now())
                    except LedgerRejected as exc:
                        nxt = core.on_hold(tx, False, str(exc), self.clock.now(), exc.code)
                elif isinstance(e, VoidHold):
                    try:
                        await _maybe_await(ledger.void_hold(transfer_id=e.transfer_id, hold_id=e.hold_id))
                    except LedgerRejected as exc:  # e.g. it expired on its own: nothing stays locked either way
                        log.info("void of %s: %s", e.hold_id, exc)
                elif isinstance(e, PostHold):
                    try:  # the rewards ride on the capture: applied with it, each once
                        await _maybe_await(
                            ledger.post_hold(
                                transfer_id=e.transfer_id,
                                hold_id=e.hold_id,
                                amount_units=e.amount_units,
                                rewards=e.rewards,
                            )
                        )
                        nxt = core.on_posted(tx, True, "", self.clock.now(), cfg)
                    except LedgerRejected as exc:
                        nxt = core.on_posted(tx, False, str(exc), self.clock.now(), cfg)
                elif isinstance(e, PayoutIntent):
                    await self.store.persist_intent(e)  # durable BEFORE the provider hears of it
                    now = self.clock.now()
                    self.breakers[e.rail] = self.breakers.get(e.rail, DEFAULT_BREAKER).on_call(now.wall_ms)
                    outcome = await self._call(e, lookup=False)
                    nxt = core.on_payout(tx, outcome, self.breakers, self.clock.now(), cfg)
                elif isinstance(e, ResolvePayout):
                    outcome = await self._call(e.intent, lookup=True)
                    nxt = core.on_resolved(tx, outcome, self.breakers, self.clock.now(), cfg)
                elif isinstance(e, ParkForRecovery):
                    self._parked[e.intent.bridge_tx_id] = e.intent
                    self.stats.parked += 1
                    log.warning("parked %s: %s", e.intent.bridge_tx_id, e.reason)
                    return None
                elif isinstance(e, Done):
                    await self.store.persist_result(e.result)
                    self._results[e.result.request_id] = e.result
                    if isinstance(e.result, Settled):
                        self.stats.completed += 1
                    else:
                        self.stats.failed += 1
                        code = e.result.reason_code.value
                        self.stats.by_reason[code] = self.stats.by_reason.get(code, 0) + 1
                    if self.on_result is not None:
                        self.on_result(e.result)
                    return e.result
            if nxt is None:
                if tx.stage is core.Stage.HOLD_PLACED:
                    nxt = core.convert(tx, self.fx_book(), self.clock.now(), cfg)
                elif tx.stage is core.Stage.RATE_LOCKED:
                    nxt = core.route(tx, self.breakers, self.clock.now(), cfg)
                else:
                    raise AssertionError(f"{tx.bridge_tx_id}: no transition from {tx.stage}")
            step = nxt

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


async def _maybe_await(value: Any) -> Any:
    """The ledger may be in process (plain calls) or remote (``streams.bridge.service``: coroutines)."""
    return await value if inspect.isawaitable(value) else value


class PayoutParked(Exception):
    """The payout's outcome is unknown (provider unreachable even to ask); ``recover()`` will finish it."""


# --------------------------------------------------------------------------- CLI (kill/recovery test, demo)


def _load_requests(path: Path) -> list[CardPayment]:
    return [
        payment_from_request(m.BridgeRequest.model_validate_json(line))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


async def _cli(args: Any) -> dict[str, Any]:
    from datetime import date

    from devtools.fx_feed import domain_quotes
    from streams.bridge.providers import build_adapters
    from streams.bridge.providers.base import ProviderSettings, make_transport

    state = Path(args.state_dir)
    payments = _load_requests(Path(args.requests))
    ledger = InMemoryHoldLedger(journal=state / "ledger.jsonl")
    for payer in sorted({p.payer_account_id for p in payments}):
        ledger.deposit(f"seed:{payer}", payer, args.seed_units)
    store = FileIntentStore(state / "intents.jsonl", fsync=not args.no_fsync)
    settings = ProviderSettings(**({"sim_url": args.sim_url} if args.sim_url else {}))
    transport = make_transport(args.transport or settings.transport, settings.max_connections, settings.ca_file)
    adapters = build_adapters(settings, transport)
    day = date.fromisoformat(args.fx_day)

    def book() -> FxBook:
        return FxBook().with_quotes(domain_quotes(day, 0, time.time_ns() // 1_000_000))

    runner = BridgeRunner(ledger=ledger, adapters=adapters, fx_book=book, store=store, max_in_flight=args.concurrency)
    print(json.dumps({"event": "started", "pid": os.getpid(), "open_intents": len(store.open_intents())}), flush=True)
    recovered = await runner.recover()
    futures = [await runner.submit(p) for p in payments]
    results: list[Result] = []
    for f in futures:
        with contextlib.suppress(PayoutParked):
            results.append(await f)
    await store.aclose()
    await transport.aclose()
    summary = {
        "event": "finished",
        "recovered": [r.request_id for r in recovered],
        "completed": sorted({r.request_id for r in [*recovered, *results] if isinstance(r, Settled)}),
        "failed": sorted({r.request_id for r in [*recovered, *results] if isinstance(r, Rejected)}),
        "parked": [i.bridge_tx_id for i in runner.parked],
        "pending_holds": ledger.pending_holds(),
        "balances": ledger.balances,
    }
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: Iterable[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m streams.bridge.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--requests", required=True, help="JSON lines of bridge.requests messages")
    parser.add_argument("--sim-url", default="")
    parser.add_argument(
        "--transport",
        default="",
        choices=["", "lean", "httpx", "aiohttp"],
        help="default: NEXUS_PROVIDER_TRANSPORT (lean)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed-units", type=int, default=1_000_000 * 1_000_000)
    parser.add_argument("--fx-day", default="2026-10-30")
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_cli(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
