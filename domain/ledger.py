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

State is plain data via ``to_dict``/``from_dict`` (deterministic: sorted
accounts, application-ordered transfers) so the shell can persist it;
``from_dict`` re-checks every invariant.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from heapq import heappop, heappush
from typing import Any, NamedTuple

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
SNAPSHOT_FORMAT = "nexus-x.ledger/1"


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
_UNDO_TRANSFER = 1  # (tag, transfer id)
_UNDO_PENDING_NEW = 2  # (tag, pending id)
_UNDO_PENDING_STATE = 3  # (tag, pending, old state, old posted, old resolved_by, old resolved_at)

_Failure = tuple[LedgerCode, str]


def _valid_id(value: str) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def _valid_amount(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_TRANSFER_UNITS


class Ledger:
    __slots__ = ("_accounts", "_check_every_op", "_clock_ms", "_expiry_heap", "_heap_seq", "_pendings", "_transfers")

    def __init__(self, *, check_every_op: bool = False) -> None:
        self._accounts: dict[str, _Account] = {}
        # id -> (command, result) of every applied command, in application order.
        self._transfers: dict[str, tuple[LedgerCommand, TransferResult]] = {}
        self._pendings: dict[str, _Pending] = {}
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

    def result(self, transfer_id: str) -> TransferResult | None:
        entry = self._transfers.get(transfer_id)
        return None if entry is None else entry[1]

    def command(self, transfer_id: str) -> LedgerCommand | None:
        entry = self._transfers.get(transfer_id)
        return None if entry is None else entry[0]

    def transfer_count(self) -> int:
        return len(self._transfers)

    def pending(self, pending_id: str) -> PendingView | None:
        p = self._pendings.get(pending_id)
        if p is None:
            return None
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

        undo: list[tuple[Any, ...]] = []
        results: list[TransferResult] = []
        replayed = True
        for index, command in enumerate(commands):
            prior = self._transfers.get(command.transfer_id)
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
            results.append(self._execute(command, now, undo))

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
        return ("", "") if p is None else (p.transfer.debit_account_id, p.transfer.credit_account_id)

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
            return LedgerCode.UNKNOWN_PENDING, f"no pending transfer {command.pending_id!r}"
        state = p.state
        if state is _POSTED:
            return LedgerCode.PENDING_ALREADY_POSTED, f"{command.pending_id!r} was posted by {p.resolved_by!r}"
        if state is _VOIDED:
            return LedgerCode.PENDING_ALREADY_VOIDED, f"{command.pending_id!r} was voided by {p.resolved_by!r}"
        if state is _EXPIRED:
            return LedgerCode.PENDING_EXPIRED, f"{command.pending_id!r} expired at {p.transfer.expires_at_ms}"
        if type(command) is PostPending and command.amount_units is not None:
            amount = command.amount_units
            if not _valid_amount(amount):
                return LedgerCode.INVALID_AMOUNT, f"amount must be an int in 1..{MAX_TRANSFER_UNITS}"
            if amount > p.transfer.amount_units:
                return LedgerCode.POST_EXCEEDS_PENDING, f"post {amount} exceeds hold {p.transfer.amount_units}"
        return None

    def _execute(self, command: LedgerCommand, now: int, undo: list[tuple[Any, ...]]) -> TransferResult:
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
            result = TransferResult(
                command.transfer_id, status, None, debit.account_id, credit.account_id, amount, now, ""
            )
            # Inline (hot path): the debit side is the one that can break non-negativity.
            assert debit.held >= 0 and (debit.allow_negative or debit.balance >= debit.held), debit.account_id
            assert debit.balance >= -MAX_BALANCE_UNITS and credit.balance <= MAX_BALANCE_UNITS
        self._transfers[command.transfer_id] = (command, result)
        undo.append((_UNDO_TRANSFER, command.transfer_id))
        return result

    def _rollback(self, undo: list[tuple[Any, ...]]) -> None:
        for entry in reversed(undo):
            tag = entry[0]
            if tag == _UNDO_ACCOUNT:
                _, account, balance, held = entry
                account.balance, account.held = balance, held
            elif tag == _UNDO_TRANSFER:
                del self._transfers[entry[1]]
            elif tag == _UNDO_PENDING_NEW:
                del self._pendings[entry[1]]  # its heap entry goes stale and is skipped
            else:
                assert tag == _UNDO_PENDING_STATE
                _, p, state, posted, resolved_by, resolved_at = entry
                p.state, p.posted_units, p.resolved_by, p.resolved_at_ms = state, posted, resolved_by, resolved_at
        undo.clear()

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
        """O(n) full check: Σ balances per asset == 0, holds match live pendings, no user negative."""
        totals: dict[Asset, int] = {}
        held: dict[str, int] = {}
        for p in self._pendings.values():
            assert p.state in PendingState
            if p.state is _PENDING:
                t = p.transfer
                held[t.debit_account_id] = held.get(t.debit_account_id, 0) + t.amount_units
            else:
                assert p.state is not _POSTED or 0 < p.posted_units <= p.transfer.amount_units
            entry = self._transfers.get(p.transfer.transfer_id)
            assert entry is not None and entry[0] == p.transfer
        for account_id, a in self._accounts.items():
            assert a.account_id == account_id
            self._assert_account(a)
            assert a.held == held.get(account_id, 0), f"{account_id}: held {a.held} != live holds"
            totals[a.asset] = totals.get(a.asset, 0) + a.balance
        assert all(total == 0 for total in totals.values()), f"balances do not sum to zero: {totals}"
        for transfer_id, (command, result) in self._transfers.items():
            assert command.transfer_id == transfer_id == result.transfer_id
            assert result.code is None and result.status is not TransferStatus.REJECTED

    # -- snapshot --

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "clock_ms": self._clock_ms,
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
            "transfers": [
                {"command": _command_to_dict(command), "result": _result_to_dict(result)}
                for command, result in self._transfers.values()
            ],
            "pendings": [
                {
                    "pending_id": pending_id,
                    "state": p.state.value,
                    "posted_units": p.posted_units,
                    "resolved_by": p.resolved_by,
                    "resolved_at_ms": p.resolved_at_ms,
                }
                for pending_id, p in self._pendings.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, check_every_op: bool = False) -> Ledger:
        assert data["format"] == SNAPSHOT_FORMAT, f"unknown snapshot format {data.get('format')!r}"
        ledger = cls(check_every_op=check_every_op)
        ledger._clock_ms = data["clock_ms"]
        for row in data["accounts"]:
            ledger.open_account(row["account_id"], Asset(row["asset"]), allow_negative=row["allow_negative"])
            account = ledger._accounts[row["account_id"]]
            account.balance, account.held = row["balance"], row["held"]
        for row in data["transfers"]:
            command = _command_from_dict(row["command"])
            result = _result_from_dict(row["result"])
            assert command.transfer_id not in ledger._transfers
            ledger._transfers[command.transfer_id] = (command, result)
        for row in data["pendings"]:
            command = ledger._transfers[row["pending_id"]][0]
            assert type(command) is PendingTransfer
            p = _Pending(command)
            p.state = PendingState(row["state"])
            p.posted_units, p.resolved_by, p.resolved_at_ms = (
                row["posted_units"],
                row["resolved_by"],
                row["resolved_at_ms"],
            )
            ledger._pendings[command.transfer_id] = p
            if p.state is PendingState.PENDING:
                ledger._heap_seq += 1
                heappush(ledger._expiry_heap, (command.expires_at_ms, ledger._heap_seq, p))
        ledger.check_invariants()
        return ledger


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
