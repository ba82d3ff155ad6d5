"""Double-entry ledger for K-AUS (and carbon credits), in integer base units.

Model (after TigerBeetle): accounts hold an integer ``balance`` and an integer
``held`` (the sum of their live pending debits); ``available = balance - held``.
Every state change is a *transfer* that debits one account and credits another
by the same positive amount, so per asset the sum of all balances is always 0.

Mint/burn invariant: money enters circulation only by a transfer out of an
issuance account flagged ``allow_negative`` (``sys:mint`` for K-AUS,
``sys:carbon`` for carbon credits) and leaves it only by a transfer back. So
``Σ balances == 0`` per asset at all times, and ``-balance(sys:mint)`` is the
circulating supply. User accounts are never ``allow_negative``: a debit that
would take ``available`` below 0 is rejected (``INSUFFICIENT_FUNDS``).

Transfers (commands, producer-supplied ids):

* ``Transfer``: posts at once.
* ``PendingTransfer``: a hold; reserves ``amount_units`` on the debit account
  until ``expires_at_ms``. Then exactly one of:
* ``PostPending``: moves ``amount_units`` (default: all of the hold, at most
  all of it); the rest of the hold is released.
* ``VoidPending``: releases the whole hold.
* expiry: ``expire(now_ms)`` voids every hold whose ``expires_at_ms <= now``;
  a post/void that touches a hold past its expiry expires it first and is
  rejected with ``PENDING_EXPIRED``. Until one of those runs, an expired hold
  still reserves its funds (as in TigerBeetle, expiry is an event, not a read).

Idempotency: an id is consumed only by a command that was applied. Re-sending
the same command (same type and content) returns the original
``TransferResult`` unchanged and changes nothing; the same id with different
content is rejected with ``ID_CONFLICT``. A rejected command changed nothing,
so its id is not consumed and a retry (say, after a deposit) is evaluated anew.

``apply_batch`` is a linked batch: all commands apply or none do; on failure
the failing command carries its code and every other one ``LINKED_EVENT_FAILED``.

Time is logical (``now_ms`` from the caller, never a clock read); the ledger's
clock never goes backwards (an earlier ``now_ms`` is treated as the clock).

Applied ids live in an injected :class:`IdStore` (``MemoryIdStore`` by default; the shell keeps them on
disk), not in the ledger's memory: an id is kept for ever, so they grow with history while balances and open
holds do not. A resolved hold leaves memory too (its resolution goes to the store). Every entry carries the
ledger's *id sequence* at which it was applied (one step per applied command, resolution or expiry,
deterministic on replay). A snapshot records that sequence; restoring one makes the store forget every entry
past it, so a command replayed after the snapshot is applied again, never taken for a duplicate.

State is plain data via ``to_dict``/``from_dict`` (deterministic: sorted accounts, open holds in
application order; a memory store's entries are carried too, a durable store's are not) so the shell can
persist it; ``from_dict`` re-checks every invariant.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from heapq import heappop, heappush
from typing import Any, NamedTuple, Protocol

MAX_ID_LENGTH = 128
MAX_TRANSFER_UNITS = 10**18  # contracts.types.MAX_UNITS
MAX_BALANCE_UNITS = 2**127 - 1  # TigerBeetle's u128, signed here
MAX_BATCH = 8_190
MAX_HOLD_MS = 30 * 24 * 60 * 60 * 1000
# A command's own time (occurred_at, a trade's executed_at) counts for at most this far past the broker's append
# time of its record (ledger.commands has LogAppendTime): the ledger's clock only moves forward, so one command
# stamped years ahead would otherwise expire every hold from then on. Deterministic on replay (the broker's
# timestamp is stored with the record). A card hold lives 10 minutes (BridgeConfig.hold_ttl_ms), far above it.
MAX_CLOCK_SKEW_MS = 60_000
SNAPSHOT_FORMAT = "nexus-x.ledger/2"  # /1 carried every transfer and every hold: still loaded (ids migrated)
_SNAPSHOT_FORMAT_1 = "nexus-x.ledger/1"


class Asset(StrEnum):
    KAUS = "KAUS"  # base units: 10**-6 K-AUS (domain.money.KAUS_DECIMALS)
    CARBON_MILLICREDIT = "CARBON_MILLICREDIT"  # 1/1000 of a carbon credit


class SettlementKind(StrEnum):
    """The business transaction a ledger movement belongs to (finance ties every movement to one)."""

    TRADE = "TRADE"  # a P2P energy trade: id = trade_id
    CARD_PAYMENT = "CARD_PAYMENT"  # a High-Speed Bridge payment: id = bridge_tx_id
    DEPOSIT = "DEPOSIT"  # K-AUS arriving from outside: id = the deposit's command_id
    DIVIDEND = "DIVIDEND"  # a dividend declaration: id = its command_id
    PAYOUT = "PAYOUT"  # money going out to a provider: id = payout_id
    STAKING = "STAKING"  # K-AUS staked or released by the staking vault: id = the position id
    GOVERNANCE = "GOVERNANCE"  # a movement a multi-sig request approved: id = the governance request_id


class Leg(StrEnum):
    """Which part of its transaction a movement is."""

    PAYMENT = "PAYMENT"  # buyer -> seller
    FEE = "FEE"  # seller -> platform fees
    DIVIDEND_POOL = "DIVIDEND_POOL"  # fees -> dividend pool
    CARBON = "CARBON"  # carbon milli-credits minted to a renewable seller
    DEPOSIT = "DEPOSIT"
    DIVIDEND = "DIVIDEND"  # dividend pool -> holder
    HOLD = "HOLD"  # payer's K-AUS reserved (pending)
    CAPTURE = "CAPTURE"  # the hold posted (moved)
    RELEASE = "RELEASE"  # the hold voided or expired (nothing moved)
    CASHBACK = "CASHBACK"
    BONUS = "BONUS"  # ecosystem bonus
    PAYOUT = "PAYOUT"
    STAKE = "STAKE"  # holder -> staked:{holder} (locked, not spendable)
    UNSTAKE = "UNSTAKE"  # staked:{holder} -> holder, after the unbonding delay
    TRANSFER = "TRANSFER"  # a governed transfer (treasury, correction)


class Reference(NamedTuple):
    """The business transaction a movement belongs to (``contracts.models.LedgerReference``)."""

    kind: SettlementKind
    id: str  # trade_id, bridge_tx_id, the deposit's or declaration's command_id, payout_id
    leg: Leg


class TransferStatus(StrEnum):
    POSTED = "POSTED"
    PENDING = "PENDING"
    VOIDED = "VOIDED"
    REJECTED = "REJECTED"


class PendingState(StrEnum):
    PENDING = "PENDING"
    POSTED = "POSTED"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"


class LedgerCode(StrEnum):
    INVALID_ID = "INVALID_ID"
    ID_CONFLICT = "ID_CONFLICT"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    SAME_ACCOUNT = "SAME_ACCOUNT"
    UNKNOWN_DEBIT_ACCOUNT = "UNKNOWN_DEBIT_ACCOUNT"
    UNKNOWN_CREDIT_ACCOUNT = "UNKNOWN_CREDIT_ACCOUNT"
    ASSET_MISMATCH = "ASSET_MISMATCH"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    BALANCE_LIMIT = "BALANCE_LIMIT"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    UNKNOWN_PENDING = "UNKNOWN_PENDING"
    PENDING_ALREADY_POSTED = "PENDING_ALREADY_POSTED"
    PENDING_ALREADY_VOIDED = "PENDING_ALREADY_VOIDED"
    PENDING_EXPIRED = "PENDING_EXPIRED"
    POST_EXCEEDS_PENDING = "POST_EXCEEDS_PENDING"
    LINKED_EVENT_FAILED = "LINKED_EVENT_FAILED"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"


# --- commands ---------------------------------------------------------------


class Transfer(NamedTuple):
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount_units: int
    code: str  # what the money is for, e.g. "trade.payment"; part of the content


class PendingTransfer(NamedTuple):
    transfer_id: str
    debit_account_id: str
    credit_account_id: str
    amount_units: int
    code: str
    expires_at_ms: int


class PostPending(NamedTuple):
    transfer_id: str
    pending_id: str
    amount_units: int | None = None  # None: the whole hold


class VoidPending(NamedTuple):
    transfer_id: str
    pending_id: str


LedgerCommand = Transfer | PendingTransfer | PostPending | VoidPending


# --- results ----------------------------------------------------------------


class TransferResult(NamedTuple):
    transfer_id: str
    status: TransferStatus
    code: LedgerCode | None  # None on success
    debit_account_id: str
    credit_account_id: str
    # POSTED: moved; PENDING: reserved; VOIDED: released; REJECTED: 0.
    amount_units: int
    at_ms: int
    reason: str  # "" on success


class BatchResult(NamedTuple):
    ok: bool
    results: tuple[TransferResult, ...]
    replayed: bool  # every command was already applied earlier (an idempotent replay)


class HoldExpired(NamedTuple):
    pending_id: str
    debit_account_id: str
    credit_account_id: str
    amount_units: int
    expired_at_ms: int  # the hold's expires_at_ms: when it logically expired


class AccountView(NamedTuple):
    account_id: str
    asset: Asset
    allow_negative: bool
    balance_units: int
    held_units: int
    available_units: int


class PendingView(NamedTuple):
    pending_id: str
    state: PendingState
    debit_account_id: str
    credit_account_id: str
    amount_units: int
    expires_at_ms: int
    posted_units: int
    resolved_by: str  # id of the post/void, "" while pending or after expiry
    resolved_at_ms: int | None


class HoldResolution(NamedTuple):
    """How a hold ended (it then leaves the ledger's memory for its id store)."""

    pending_id: str
    state: PendingState  # POSTED, VOIDED or EXPIRED
    posted_units: int
    resolved_by: str  # id of the post/void, "" after expiry
    resolved_at_ms: int


# --- applied ids --------------------------------------------------------------


class IdStore(Protocol):
    """Where the ledger keeps every applied id for ever: its command and original result, and how each hold ended.

    ``seq`` is the ledger's id sequence at the entry (1, 2, ...: increasing, without gaps, the same on every
    replay). The store holds every entry up to :meth:`last_seq`. ``durable``: the entries outlive the process
    (a snapshot then carries only the sequence, not the entries).
    """

    durable: bool

    def get(self, transfer_id: str) -> tuple[LedgerCommand, TransferResult] | None: ...

    def resolution(self, pending_id: str) -> HoldResolution | None: ...

    def put(self, seq: int, command: LedgerCommand, result: TransferResult) -> None: ...

    def put_resolution(self, seq: int, resolution: HoldResolution) -> None: ...

    def last_seq(self) -> int: ...

    def forget_after(self, seq: int) -> None:
        """Drop every entry past ``seq`` (a restore to that point: what follows will be applied again)."""

    def count(self) -> int: ...


class MemoryIdStore:
    """The core's default store: dicts, in sequence order (tests, and a ledger nobody persists)."""

    durable = False

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, LedgerCommand, TransferResult]] = {}
        self._resolutions: dict[str, tuple[int, HoldResolution]] = {}
        self._last_seq = 0

    def get(self, transfer_id: str) -> tuple[LedgerCommand, TransferResult] | None:
        entry = self._entries.get(transfer_id)
        return None if entry is None else (entry[1], entry[2])

    def resolution(self, pending_id: str) -> HoldResolution | None:
        entry = self._resolutions.get(pending_id)
        return None if entry is None else entry[1]

    def put(self, seq: int, command: LedgerCommand, result: TransferResult) -> None:
        assert seq > self._last_seq and command.transfer_id not in self._entries, command.transfer_id
        self._entries[command.transfer_id] = (seq, command, result)
        self._last_seq = seq

    def put_resolution(self, seq: int, resolution: HoldResolution) -> None:
        assert seq > self._last_seq and resolution.pending_id not in self._resolutions, resolution.pending_id
        self._resolutions[resolution.pending_id] = (seq, resolution)
        self._last_seq = seq

    def last_seq(self) -> int:
        return self._last_seq

    def forget_after(self, seq: int) -> None:
        # Insertion order is sequence order: the entries past `seq` are the last ones.
        while self._entries and next(reversed(self._entries.values()))[0] > seq:
            self._entries.popitem()
        while self._resolutions and next(reversed(self._resolutions.values()))[0] > seq:
            self._resolutions.popitem()
        self._last_seq = min(self._last_seq, seq)

    def count(self) -> int:
        return len(self._entries)

    def entries(self) -> list[tuple[int, LedgerCommand, TransferResult]]:
        return list(self._entries.values())

    def resolutions(self) -> list[tuple[int, HoldResolution]]:
        return list(self._resolutions.values())


# --- state ------------------------------------------------------------------


class _Account:
    __slots__ = ("account_id", "allow_negative", "asset", "balance", "held")

    def __init__(self, account_id: str, asset: Asset, allow_negative: bool) -> None:
        self.account_id = account_id
        self.asset = asset
        self.allow_negative = allow_negative
        self.balance = 0
        self.held = 0


class _Pending:
    __slots__ = ("posted_units", "resolved_at_ms", "resolved_by", "state", "transfer")

    def __init__(self, transfer: PendingTransfer) -> None:
        self.transfer = transfer
        self.state = _PENDING
        self.posted_units = 0
        self.resolved_by = ""
        self.resolved_at_ms: int | None = None


# An enum member lookup is a slow class-attribute lookup; the hot paths use these aliases.
_PENDING = PendingState.PENDING
_POSTED = PendingState.POSTED
_VOIDED = PendingState.VOIDED
_EXPIRED = PendingState.EXPIRED
_STATUS_POSTED = TransferStatus.POSTED
_STATUS_PENDING = TransferStatus.PENDING
_STATUS_VOIDED = TransferStatus.VOIDED
_REJECTED = TransferStatus.REJECTED

_UNDO_ACCOUNT = 0  # (tag, account, old balance, old held)
_UNDO_PENDING_NEW = 2  # (tag, pending id)
_UNDO_PENDING_STATE = 3  # (tag, pending, old state, old posted, old resolved_by, old resolved_at)

_Failure = tuple[LedgerCode, str]


def _valid_id(value: str) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def _valid_amount(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_TRANSFER_UNITS


class Ledger:
    __slots__ = (
        "_accounts",
        "_check_every_op",
        "_clock_ms",
        "_expiry_heap",
        "_heap_seq",
        "_ids",
        "_pendings",
        "_seq",
    )

    def __init__(self, *, check_every_op: bool = False, ids: IdStore | None = None) -> None:
        """``ids``: where applied ids are kept; a new ledger has applied nothing, so the store is emptied."""
        self._accounts: dict[str, _Account] = {}
        self._ids: IdStore = MemoryIdStore() if ids is None else ids
        self._ids.forget_after(0)
        self._seq = 0  # the id sequence: entries written to the store so far
        self._pendings: dict[str, _Pending] = {}  # open holds (and, within a batch, those it resolved)
        # (expires_at_ms, tiebreak, pending); stale entries are skipped when popped.
        self._expiry_heap: list[tuple[int, int, _Pending]] = []
        self._heap_seq = 0
        self._clock_ms = 0
        self._check_every_op = check_every_op  # O(n) full check after every op: tests

    # -- accounts --

    def open_account(self, account_id: str, asset: Asset = Asset.KAUS, *, allow_negative: bool = False) -> None:
        """Idempotent; re-opening with different asset/flags is a configuration error."""
        assert _valid_id(account_id), f"invalid account id {account_id!r}"
        existing = self._accounts.get(account_id)
        if existing is not None:
            if existing.asset != asset or existing.allow_negative != allow_negative:
                raise ValueError(f"account {account_id!r} already open with other settings")
            return
        self._accounts[account_id] = _Account(account_id, asset, allow_negative)

    def has_account(self, account_id: str) -> bool:
        return account_id in self._accounts

    def account(self, account_id: str) -> AccountView | None:
        a = self._accounts.get(account_id)
        if a is None:
            return None
        return AccountView(a.account_id, a.asset, a.allow_negative, a.balance, a.held, a.balance - a.held)

    def balance(self, account_id: str) -> int:
        return self._accounts[account_id].balance

    def held(self, account_id: str) -> int:
        return self._accounts[account_id].held

    def available(self, account_id: str) -> int:
        a = self._accounts[account_id]
        return a.balance - a.held

    def accounts(self) -> list[AccountView]:
        views = (self.account(account_id) for account_id in sorted(self._accounts))
        return [v for v in views if v is not None]

    def total_balance(self, asset: Asset) -> int:
        return sum(a.balance for a in self._accounts.values() if a.asset == asset)

    # -- lookups --

    @property
    def clock_ms(self) -> int:
        return self._clock_ms

    @property
    def id_seq(self) -> int:
        return self._seq

    @property
    def ids(self) -> IdStore:
        return self._ids

    def result(self, transfer_id: str) -> TransferResult | None:
        entry = self._ids.get(transfer_id)
        return None if entry is None else entry[1]

    def command(self, transfer_id: str) -> LedgerCommand | None:
        entry = self._ids.get(transfer_id)
        return None if entry is None else entry[0]

    def transfer_count(self) -> int:
        return self._ids.count()

    def open_hold_count(self) -> int:
        return len(self._pendings)

    def pending(self, pending_id: str) -> PendingView | None:
        p = self._pendings.get(pending_id)
        if p is None:
            return self._resolved_view(pending_id)
        t = p.transfer
        return PendingView(
            pending_id,
            p.state,
            t.debit_account_id,
            t.credit_account_id,
            t.amount_units,
            t.expires_at_ms,
            p.posted_units,
            p.resolved_by,
            p.resolved_at_ms,
        )

    def _resolved_view(self, pending_id: str) -> PendingView | None:
        done = self._ids.resolution(pending_id)
        entry = self._ids.get(pending_id) if done is not None else None
        if done is None or entry is None:
            return None
        t = entry[0]
        assert type(t) is PendingTransfer
        return PendingView(
            pending_id,
            done.state,
            t.debit_account_id,
            t.credit_account_id,
            t.amount_units,
            t.expires_at_ms,
            done.posted_units,
            done.resolved_by,
            done.resolved_at_ms,
        )

    # -- operations --

    def apply(self, command: LedgerCommand, now_ms: int) -> TransferResult:
        return self.apply_batch((command,), now_ms).results[0]

    def apply_batch(self, commands: Sequence[LedgerCommand], now_ms: int) -> BatchResult:
        """All-or-nothing: either every command applies (or was already applied) or none does."""
        assert commands, "empty batch"
        now = self._tick(now_ms)
        if len(commands) > MAX_BATCH:
            too_large = (LedgerCode.BATCH_TOO_LARGE, f"batch of {len(commands)} exceeds {MAX_BATCH}")
            return self._failed(commands, -1, too_large, now)

        # Holds this batch touches that are already past expiry expire first, and
        # stay expired even if the batch fails: expiry is not the batch's doing.
        for command in commands:
            if type(command) is PostPending or type(command) is VoidPending:
                p = self._pendings.get(command.pending_id)
                if p is not None and p.state is _PENDING and p.transfer.expires_at_ms <= now:
                    self._expire_hold(p)
                    self._retire(p)

        undo: list[tuple[Any, ...]] = []
        results: list[TransferResult] = []
        # This batch's applied commands and resolved holds: written to the id store only once the whole batch applied.
        applied: dict[str, tuple[LedgerCommand, TransferResult]] = {}
        resolved: list[_Pending] = []
        get_prior = self._ids.get
        replayed = True
        for index, command in enumerate(commands):
            prior = applied.get(command.transfer_id) if applied else None
            if prior is None:
                prior = get_prior(command.transfer_id)
            if prior is not None:
                if type(prior[0]) is type(command) and prior[0] == command:
                    results.append(prior[1])  # idempotent replay: the original outcome
                    continue
                failure: _Failure | None = (
                    LedgerCode.ID_CONFLICT,
                    f"id {command.transfer_id!r} was already used for a different transfer",
                )
            else:
                failure = self._validate(command, now)
            if failure is not None:
                self._rollback(undo)
                return self._failed(commands, index, failure, now)
            replayed = False
            result = self._execute(command, now, undo, resolved)
            applied[command.transfer_id] = (command, result)
            results.append(result)

        put = self._ids.put
        for command, result in applied.values():
            self._seq += 1
            put(self._seq, command, result)
        for p in resolved:
            self._retire(p)
        if self._check_every_op:
            self.check_invariants()
        return BatchResult(True, tuple(results), replayed)

    def expire(self, now_ms: int) -> list[HoldExpired]:
        """Void every hold whose expiry is at or before ``now_ms``; oldest expiry first."""
        now = self._tick(now_ms)
        expired: list[HoldExpired] = []
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            _, _, p = heappop(heap)
            if p.state is _PENDING and self._pendings.get(p.transfer.transfer_id) is p:
                expired.append(self._expire_hold(p))
                self._retire(p)
        if self._check_every_op:
            self.check_invariants()
        return expired

    # -- internals --

    def _tick(self, now_ms: int) -> int:
        assert type(now_ms) is int and now_ms >= 0
        if now_ms > self._clock_ms:
            self._clock_ms = now_ms
        return self._clock_ms

    def _failed(self, commands: Sequence[LedgerCommand], index: int, failure: _Failure, now: int) -> BatchResult:
        """index: the failing command; -1: the batch as a whole failed (every result carries the code)."""
        results = []
        for i, command in enumerate(commands):
            code, reason = (
                failure if i == index or index < 0 else (LedgerCode.LINKED_EVENT_FAILED, "another command failed")
            )
            debit, credit = self._parties(command)
            results.append(TransferResult(command.transfer_id, _REJECTED, code, debit, credit, 0, now, reason))
        return BatchResult(False, tuple(results), False)

    def _parties(self, command: LedgerCommand) -> tuple[str, str]:
        if type(command) is Transfer or type(command) is PendingTransfer:
            return command.debit_account_id, command.credit_account_id
        assert type(command) is PostPending or type(command) is VoidPending
        p = self._pendings.get(command.pending_id)
        if p is not None:
            return p.transfer.debit_account_id, p.transfer.credit_account_id
        entry = self._ids.get(command.pending_id)  # a resolved hold
        if entry is None or type(entry[0]) is not PendingTransfer:
            return "", ""
        return entry[0].debit_account_id, entry[0].credit_account_id

    def _validate(self, command: LedgerCommand, now: int) -> _Failure | None:
        if not _valid_id(command.transfer_id):
            return LedgerCode.INVALID_ID, f"transfer id must be 1..{MAX_ID_LENGTH} characters"
        if type(command) is Transfer or type(command) is PendingTransfer:
            amount = command.amount_units
            if not _valid_amount(amount):
                return LedgerCode.INVALID_AMOUNT, f"amount must be an int in 1..{MAX_TRANSFER_UNITS}"
            if command.debit_account_id == command.credit_account_id:
                return LedgerCode.SAME_ACCOUNT, "debit and credit account are the same"
            debit = self._accounts.get(command.debit_account_id)
            if debit is None:
                return LedgerCode.UNKNOWN_DEBIT_ACCOUNT, f"no account {command.debit_account_id!r}"
            credit = self._accounts.get(command.credit_account_id)
            if credit is None:
                return LedgerCode.UNKNOWN_CREDIT_ACCOUNT, f"no account {command.credit_account_id!r}"
            if debit.asset != credit.asset:
                return LedgerCode.ASSET_MISMATCH, f"{debit.asset} account debited to credit a {credit.asset} account"
            if not debit.allow_negative and debit.balance - debit.held < amount:
                return (
                    LedgerCode.INSUFFICIENT_FUNDS,
                    f"{debit.account_id!r} has {debit.balance - debit.held} available, needs {amount}",
                )
            if credit.balance + amount > MAX_BALANCE_UNITS or debit.balance - amount < -MAX_BALANCE_UNITS:
                return LedgerCode.BALANCE_LIMIT, "balance would leave the 128-bit range"
            if type(command) is PendingTransfer:
                expires = command.expires_at_ms
                if type(expires) is not int or not now < expires <= now + MAX_HOLD_MS:
                    return LedgerCode.INVALID_EXPIRY, f"expires_at_ms must be in ({now}, {now + MAX_HOLD_MS}]"
            return None

        assert type(command) is PostPending or type(command) is VoidPending
        p = self._pendings.get(command.pending_id)
        if p is None:
            done = self._ids.resolution(command.pending_id)
            if done is None:
                return LedgerCode.UNKNOWN_PENDING, f"no pending transfer {command.pending_id!r}"
            return _not_pending(command.pending_id, done.state, done.resolved_by, done.resolved_at_ms)
        if p.state is not _PENDING:  # resolved earlier in this batch
            return _not_pending(command.pending_id, p.state, p.resolved_by, p.transfer.expires_at_ms)
        if type(command) is PostPending and command.amount_units is not None:
            amount = command.amount_units
            if not _valid_amount(amount):
                return LedgerCode.INVALID_AMOUNT, f"amount must be an int in 1..{MAX_TRANSFER_UNITS}"
            if amount > p.transfer.amount_units:
                return LedgerCode.POST_EXCEEDS_PENDING, f"post {amount} exceeds hold {p.transfer.amount_units}"
        return None

    def _execute(
        self, command: LedgerCommand, now: int, undo: list[tuple[Any, ...]], resolved: list[_Pending]
    ) -> TransferResult:
        accounts = self._accounts
        if type(command) is Transfer or type(command) is PendingTransfer:
            debit = accounts[command.debit_account_id]
            credit = accounts[command.credit_account_id]
            amount = command.amount_units
            undo.append((_UNDO_ACCOUNT, debit, debit.balance, debit.held))
            if type(command) is Transfer:
                undo.append((_UNDO_ACCOUNT, credit, credit.balance, credit.held))
                debit.balance -= amount
                credit.balance += amount
                status = _STATUS_POSTED
            else:
                assert type(command) is PendingTransfer
                debit.held += amount
                p = self._pendings[command.transfer_id] = _Pending(command)
                undo.append((_UNDO_PENDING_NEW, command.transfer_id))
                self._heap_seq += 1
                heappush(self._expiry_heap, (command.expires_at_ms, self._heap_seq, p))
                status = _STATUS_PENDING
            result = TransferResult(
                command.transfer_id, status, None, debit.account_id, credit.account_id, amount, now, ""
            )
            # Inline (hot path): the debit side is the one that can break non-negativity.
            assert debit.held >= 0 and (debit.allow_negative or debit.balance >= debit.held), debit.account_id
            assert debit.balance >= -MAX_BALANCE_UNITS and credit.balance <= MAX_BALANCE_UNITS
        else:
            assert type(command) is PostPending or type(command) is VoidPending
            p = self._pendings[command.pending_id]
            hold = p.transfer
            assert p.state is _PENDING
            debit = accounts[hold.debit_account_id]
            credit = accounts[hold.credit_account_id]
            undo.append((_UNDO_ACCOUNT, debit, debit.balance, debit.held))
            undo.append((_UNDO_ACCOUNT, credit, credit.balance, credit.held))
            undo.append((_UNDO_PENDING_STATE, p, p.state, p.posted_units, p.resolved_by, p.resolved_at_ms))
            debit.held -= hold.amount_units  # the whole hold is released either way
            if type(command) is PostPending:
                amount = hold.amount_units if command.amount_units is None else command.amount_units
                assert 0 < amount <= hold.amount_units
                debit.balance -= amount
                credit.balance += amount
                p.state, p.posted_units = _POSTED, amount
                status = _STATUS_POSTED
            else:
                amount = hold.amount_units
                p.state = _VOIDED
                status = _STATUS_VOIDED
            p.resolved_by, p.resolved_at_ms = command.transfer_id, now
            resolved.append(p)
            result = TransferResult(
                command.transfer_id, status, None, debit.account_id, credit.account_id, amount, now, ""
            )
            # Inline (hot path): the debit side is the one that can break non-negativity.
            assert debit.held >= 0 and (debit.allow_negative or debit.balance >= debit.held), debit.account_id
            assert debit.balance >= -MAX_BALANCE_UNITS and credit.balance <= MAX_BALANCE_UNITS
        return result

    def _rollback(self, undo: list[tuple[Any, ...]]) -> None:
        for entry in reversed(undo):
            tag = entry[0]
            if tag == _UNDO_ACCOUNT:
                _, account, balance, held = entry
                account.balance, account.held = balance, held
            elif tag == _UNDO_PENDING_NEW:
                del self._pendings[entry[1]]  # its heap entry goes stale and is skipped
            else:
                assert tag == _UNDO_PENDING_STATE
                _, p, state, posted, resolved_by, resolved_at = entry
                p.state, p.posted_units, p.resolved_by, p.resolved_at_ms = state, posted, resolved_by, resolved_at
        undo.clear()

    def _retire(self, p: _Pending) -> None:
        """A resolved hold leaves memory: its resolution goes to the id store (the hold itself is there already)."""
        assert p.state is not _PENDING and p.resolved_at_ms is not None
        pending_id = p.transfer.transfer_id
        del self._pendings[pending_id]
        self._seq += 1
        resolution = HoldResolution(pending_id, p.state, p.posted_units, p.resolved_by, p.resolved_at_ms)
        self._ids.put_resolution(self._seq, resolution)

    def _expire_hold(self, p: _Pending) -> HoldExpired:
        assert p.state is _PENDING
        hold = p.transfer
        debit = self._accounts[hold.debit_account_id]
        debit.held -= hold.amount_units
        p.state = _EXPIRED
        p.resolved_at_ms = hold.expires_at_ms
        self._assert_account(debit)
        return HoldExpired(
            hold.transfer_id, hold.debit_account_id, hold.credit_account_id, hold.amount_units, hold.expires_at_ms
        )

    @staticmethod
    def _assert_account(a: _Account) -> None:
        assert a.held >= 0, a.account_id
        assert a.allow_negative or a.balance - a.held >= 0, f"{a.account_id} went negative"
        assert -MAX_BALANCE_UNITS <= a.balance <= MAX_BALANCE_UNITS

    def check_invariants(self) -> None:
        """O(accounts + open holds): Σ balances per asset == 0, holds match open pendings, no user negative."""
        totals: dict[Asset, int] = {}
        held: dict[str, int] = {}
        assert self._ids.last_seq() == self._seq, f"id store at {self._ids.last_seq()}, ledger at {self._seq}"
        for pending_id, p in self._pendings.items():
            assert p.state is _PENDING, f"{pending_id} resolved but still in memory"
            t = p.transfer
            held[t.debit_account_id] = held.get(t.debit_account_id, 0) + t.amount_units
            entry = self._ids.get(pending_id)
            assert entry is not None and entry[0] == t and entry[1].code is None
        for account_id, a in self._accounts.items():
            assert a.account_id == account_id
            self._assert_account(a)
            assert a.held == held.get(account_id, 0), f"{account_id}: held {a.held} != live holds"
            totals[a.asset] = totals.get(a.asset, 0) + a.balance
        assert all(total == 0 for total in totals.values()), f"balances do not sum to zero: {totals}"

    # -- snapshot --

    def to_dict(self) -> dict[str, Any]:
        """Balances, open holds and the id sequence; a memory store's entries too (nothing else keeps them)."""
        data: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "clock_ms": self._clock_ms,
            "id_seq": self._seq,
            "accounts": [
                {
                    "account_id": a.account_id,
                    "asset": a.asset.value,
                    "allow_negative": a.allow_negative,
                    "balance": a.balance,
                    "held": a.held,
                }
                for _, a in sorted(self._accounts.items())
            ],
            "pendings": [
                {"pending_id": pending_id, "command": _command_to_dict(p.transfer)}
                for pending_id, p in self._pendings.items()
            ],
        }
        if isinstance(self._ids, MemoryIdStore):
            data["transfers"] = [
                {"seq": seq, "command": _command_to_dict(command), "result": _result_to_dict(result)}
                for seq, command, result in self._ids.entries()
            ]
            data["resolutions"] = [{"seq": seq, **_resolution_to_dict(r)} for seq, r in self._ids.resolutions()]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, check_every_op: bool = False, ids: IdStore | None = None) -> Ledger:
        """The ledger a snapshot recorded, over ``ids`` (default: a new memory store).

        The store forgets every entry past the snapshot's sequence: those commands come after the snapshot and
        will be applied again. A snapshot that carries entries (a memory store's, or format /1's) rewrites the
        store with them. A durable store that holds less than the snapshot's sequence cannot serve it: ValueError.
        """
        fmt = data["format"]
        assert fmt in (SNAPSHOT_FORMAT, _SNAPSHOT_FORMAT_1), f"unknown snapshot format {fmt!r}"
        ledger = cls(check_every_op=check_every_op)
        store: IdStore = MemoryIdStore() if ids is None else ids
        ledger._ids = store
        ledger._clock_ms = data["clock_ms"]
        for row in data["accounts"]:
            ledger.open_account(row["account_id"], Asset(row["asset"]), allow_negative=row["allow_negative"])
            account = ledger._accounts[row["account_id"]]
            account.balance, account.held = row["balance"], row["held"]
        if fmt == _SNAPSHOT_FORMAT_1:
            ledger._seq = _migrate_format_1(data, store)
            open_holds = [row["pending_id"] for row in data["pendings"] if row["state"] == PendingState.PENDING.value]
            commands = [store.get(pending_id) for pending_id in open_holds]
            holds = [entry[0] for entry in commands if entry is not None]
        else:
            ledger._seq = data["id_seq"]
            if "transfers" in data:
                _rewrite_store(data["transfers"], data["resolutions"], store)
            elif store.last_seq() < ledger._seq:
                raise ValueError(f"the id store holds entries up to {store.last_seq()}, the snapshot {ledger._seq}")
            holds = [_command_from_dict(row["command"]) for row in data["pendings"]]
        store.forget_after(ledger._seq)
        for command in holds:
            assert type(command) is PendingTransfer
            p = ledger._pendings[command.transfer_id] = _Pending(command)
            ledger._heap_seq += 1
            heappush(ledger._expiry_heap, (command.expires_at_ms, ledger._heap_seq, p))
        ledger.check_invariants()
        return ledger


def _not_pending(pending_id: str, state: PendingState, resolved_by: str, at_ms: int) -> _Failure:
    if state is _POSTED:
        return LedgerCode.PENDING_ALREADY_POSTED, f"{pending_id!r} was posted by {resolved_by!r}"
    if state is _VOIDED:
        return LedgerCode.PENDING_ALREADY_VOIDED, f"{pending_id!r} was voided by {resolved_by!r}"
    assert state is _EXPIRED, state
    return LedgerCode.PENDING_EXPIRED, f"{pending_id!r} expired at {at_ms}"


def _rewrite_store(transfers: list[dict[str, Any]], resolutions: list[dict[str, Any]], store: IdStore) -> None:
    """A snapshot's own entries are the whole truth up to its sequence: the store is rewritten with them."""
    store.forget_after(0)
    rows: list[tuple[int, Any]] = [(row["seq"], row) for row in transfers]
    rows += [(row["seq"], row) for row in resolutions]
    rows.sort(key=lambda item: item[0])
    for seq, row in rows:
        if "command" in row:
            store.put(seq, _command_from_dict(row["command"]), _result_from_dict(row["result"]))
        else:
            store.put_resolution(seq, _resolution_from_dict(row))


def _migrate_format_1(data: dict[str, Any], store: IdStore) -> int:
    """Format /1 kept every transfer and every hold in the snapshot: into the store, in application order, then
    each resolved hold's resolution. Returns the sequence reached."""
    store.forget_after(0)
    seq = 0
    for row in data["transfers"]:
        seq += 1
        store.put(seq, _command_from_dict(row["command"]), _result_from_dict(row["result"]))
    for row in data["pendings"]:
        if row["state"] != PendingState.PENDING.value:
            seq += 1
            store.put_resolution(seq, _resolution_from_dict(row))
    return seq


def _resolution_to_dict(r: HoldResolution) -> dict[str, Any]:
    return {
        "pending_id": r.pending_id,
        "state": r.state.value,
        "posted_units": r.posted_units,
        "resolved_by": r.resolved_by,
        "resolved_at_ms": r.resolved_at_ms,
    }


def _resolution_from_dict(row: dict[str, Any]) -> HoldResolution:
    return HoldResolution(
        row["pending_id"], PendingState(row["state"]), row["posted_units"], row["resolved_by"], row["resolved_at_ms"]
    )


_COMMAND_TYPES: dict[str, type[Any]] = {
    "Transfer": Transfer,
    "PendingTransfer": PendingTransfer,
    "PostPending": PostPending,
    "VoidPending": VoidPending,
}


def _command_to_dict(command: LedgerCommand) -> dict[str, Any]:
    return {"type": type(command).__name__, **command._asdict()}


def _command_from_dict(row: dict[str, Any]) -> LedgerCommand:
    fields = dict(row)
    kind = _COMMAND_TYPES[fields.pop("type")]
    command: LedgerCommand = kind(**fields)
    return command


def _result_to_dict(result: TransferResult) -> dict[str, Any]:
    row = result._asdict()
    row["status"] = result.status.value
    row["code"] = None if result.code is None else result.code.value
    return row


def _result_from_dict(row: dict[str, Any]) -> TransferResult:
    fields = dict(row)
    fields["status"] = TransferStatus(fields["status"])
    fields["code"] = None if fields["code"] is None else LedgerCode(fields["code"])
    return TransferResult(**fields)
