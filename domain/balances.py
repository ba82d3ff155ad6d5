"""A mirror of the ledger's K-AUS balances, folded from its ``ledger.transfers`` records (auto-payouts read it).

Pure: no framework, no clock. The shell turns each ``ledger.transfers`` record into a :class:`Movement` and calls
:meth:`BalanceMirror.apply`; :meth:`BalanceMirror.available` is then what ``domain.ledger.Ledger.available``
says for that account: the posted balance minus its open holds. Only the K-AUS asset is mirrored (carbon
milli-credits are another unit). Staked K-AUS lives in the ledger account ``staked:{account}``, so it is
never in the holder's available balance.

What the ledger writes, and how each kind is applied (streams/p2p/ledger.py):

* ``POSTED``: ``amount`` moves from the debit to the credit account at once (trades, fees, deposits, dividends,
  rewards, stakes).
* ``PENDING`` (``transfer_id`` = the hold id): ``amount`` is held on the debit account; it stays in its
  balance but is not available.
* ``POST_PENDING`` (``pending_id`` = the hold): ``amount`` (at most the hold) moves; the whole hold is released.
* ``VOID_PENDING`` (``pending_id``): the whole hold is released, nothing moves. The ledger also writes one when
  a hold expires (``{hold}:expired``); the mirror never expires a hold on its own (as in the ledger, expiry is
  an event, not a read).

**Order.** ``ledger.transfers`` is keyed by transfer id over several partitions, so a hold's capture or release
may be read before the hold itself. A resolution read first is remembered (:attr:`early`), and the hold, when
it comes, is not counted as held. Posted amounts add up in any order.

**Duplicates.** The ledger may write a record again after a restart (its outputs are at least once), always
under the same transfer id, into the same partition, shortly after the original (it re-emits only what it had
not committed). Each partition's last ``window`` transfer ids are remembered and a record whose id is among them
is ignored. The window is a count, not a time, so a partition read slowly at a start keeps its own window.

**Resolutions** are remembered (the last ``window`` of them) by hold id and by the reference id they carry
(``PAYOUT`` / payout id for a holder's payout): the payout service waits for its payout's capture or release
here before deciding again on that holder's balance.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from enum import StrEnum
from typing import Any, NamedTuple

SNAPSHOT_FORMAT = "nexus-x.balance-mirror/1"
KAUS = "KAUS"


class MovementKind(StrEnum):
    """``contracts.models.TransferKind``: what a ``ledger.transfers`` record does."""

    POSTED = "POSTED"
    PENDING = "PENDING"
    POST_PENDING = "POST_PENDING"
    VOID_PENDING = "VOID_PENDING"


class Resolution(StrEnum):
    CAPTURE = "CAPTURE"  # the hold was posted: its K-AUS moved
    RELEASE = "RELEASE"  # voided or expired: nothing moved


class Movement(NamedTuple):
    """One ``ledger.transfers`` record, as the mirror needs it."""

    transfer_id: str
    kind: MovementKind
    debit_account_id: str
    credit_account_id: str
    asset: str
    amount_units: int
    pending_id: str | None = None
    reference_id: str | None = None  # the business transaction it belongs to (``reference.id``), if any


class _Hold(NamedTuple):
    account_id: str
    amount_units: int


class BalanceMirror:
    """Balances and open holds per account, from the ledger's movements (see the module doc)."""

    __slots__ = ("_balance", "_early", "_held", "_holds", "_recent", "_resolved", "_seen", "window")

    def __init__(self, window: int = 100_000) -> None:
        assert window >= 1
        self.window = window
        self._balance: dict[str, int] = {}
        self._held: dict[str, int] = {}
        self._holds: dict[str, _Hold] = {}  # open holds by hold id
        self._early: OrderedDict[str, Resolution] = OrderedDict()  # resolutions read before their hold
        self._resolved: OrderedDict[str, Resolution] = OrderedDict()  # hold ids and reference ids, newest last
        self._recent: dict[int, deque[str]] = {}  # per partition: its last `window` transfer ids
        self._seen: set[str] = set()  # the union of `_recent`

    # -- reading --

    def balance(self, account_id: str) -> int:
        return self._balance.get(account_id, 0)

    def held(self, account_id: str) -> int:
        return self._held.get(account_id, 0)

    def available(self, account_id: str) -> int:
        """Posted balance less open holds (``Ledger.available``)."""
        return self._balance.get(account_id, 0) - self._held.get(account_id, 0)

    def hold_open(self, hold_id: str) -> bool:
        return hold_id in self._holds

    def resolution(self, key: str) -> Resolution | None:
        """How the hold ``key`` (a hold id, or the reference id its movements carry) was resolved, if it was."""
        return self._resolved.get(key)

    def seen(self, transfer_id: str) -> bool:
        """The transfer was applied lately (within the duplicate window)."""
        return transfer_id in self._seen

    def total(self) -> int:
        """Σ balances (0 once every movement is in: the ledger is double-entry)."""
        return sum(self._balance.values())

    @property
    def open_holds(self) -> int:
        return len(self._holds)

    # -- applying --

    def apply(self, partition: int, movement: Movement) -> tuple[str, ...]:
        """Apply one record read from ``partition``; the accounts whose available balance it changed."""
        if movement.asset != KAUS or not self._first(partition, movement.transfer_id):
            return ()
        kind, amount = movement.kind, movement.amount_units
        debit, credit = movement.debit_account_id, movement.credit_account_id
        if kind is MovementKind.POSTED:
            self._move(debit, credit, amount)
            return (debit, credit)
        if kind is MovementKind.PENDING:
            if self._early.pop(movement.transfer_id, None) is not None:
                return ()  # resolved already (read first): it holds nothing any more
            self._holds[movement.transfer_id] = _Hold(debit, amount)
            self._held[debit] = self._held.get(debit, 0) + amount
            return (debit,)
        assert movement.pending_id is not None, movement.transfer_id
        resolution = Resolution.CAPTURE if kind is MovementKind.POST_PENDING else Resolution.RELEASE
        self._remember(movement.pending_id, resolution)
        if movement.reference_id is not None:
            self._remember(movement.reference_id, resolution)
        hold = self._holds.pop(movement.pending_id, None)
        if hold is None:
            self._early[movement.pending_id] = resolution
            while len(self._early) > self.window:
                self._early.popitem(last=False)
        else:
            self._held[hold.account_id] -= hold.amount_units
            if not self._held[hold.account_id]:
                del self._held[hold.account_id]
        if resolution is Resolution.CAPTURE:
            self._move(debit, credit, amount)
            return (debit, credit)
        return (debit,)

    def _first(self, partition: int, transfer_id: str) -> bool:
        if transfer_id in self._seen:
            return False
        recent = self._recent.setdefault(partition, deque())
        recent.append(transfer_id)
        self._seen.add(transfer_id)
        if len(recent) > self.window:
            self._seen.discard(recent.popleft())
        return True

    def _move(self, debit: str, credit: str, amount: int) -> None:
        self._balance[debit] = self._balance.get(debit, 0) - amount
        self._balance[credit] = self._balance.get(credit, 0) + amount

    def _remember(self, key: str, resolution: Resolution) -> None:
        self._resolved[key] = resolution
        self._resolved.move_to_end(key)
        while len(self._resolved) > self.window:
            self._resolved.popitem(last=False)

    # -- snapshot --

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "window": self.window,
            "balances": dict(sorted(self._balance.items())),
            "holds": {hold_id: [h.account_id, h.amount_units] for hold_id, h in sorted(self._holds.items())},
            "early": [[k, v.value] for k, v in self._early.items()],
            "resolved": [[k, v.value] for k, v in self._resolved.items()],
            "recent": {str(p): list(ids) for p, ids in sorted(self._recent.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BalanceMirror:
        assert data["format"] == SNAPSHOT_FORMAT, data.get("format")
        mirror = cls(int(data["window"]))
        mirror._balance = {k: int(v) for k, v in data["balances"].items()}
        for hold_id, (account_id, amount) in data["holds"].items():
            mirror._holds[hold_id] = _Hold(account_id, int(amount))
            mirror._held[account_id] = mirror._held.get(account_id, 0) + int(amount)
        mirror._early = OrderedDict((k, Resolution(v)) for k, v in data["early"])
        mirror._resolved = OrderedDict((k, Resolution(v)) for k, v in data["resolved"])
        mirror._recent = {int(p): deque(ids) for p, ids in data["recent"].items()}
        mirror._seen = {i for ids in mirror._recent.values() for i in ids}
        return mirror
