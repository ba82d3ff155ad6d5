"""Dividend epochs and the pro-rata split of the dividend pool (spec §2.1 dividend calculation, §2.3 sources).

Pure: no clock reads, integers only. ``domain.trade_settlement.TradeSettler.declare_dividends`` moves the
money with these functions; this module owns the arithmetic and the epoch calendar.

**Pro rata** (:func:`allocate`): ``amount_i = floor(pool * weight_i / Σ weights)``; what the floors leave
(less than one unit per holder) is *carried*: it stays in ``sys:dividends`` for the next declaration, so
``Σ amounts + carried == pool`` exactly, and nothing is ever rounded away.

**Per source** (:func:`allocate_by_source`): energy-node weights (capacity) and staking weights (staked
K-AUS over time) are in different units, so one weight space would let whichever unit is larger take the
whole pool. Each source first gets its share of the pool (``source_shares_bps``, default half each),
renormalised over the sources that have any weight (a source without holders strands nothing), and each
share is then split pro rata within its source. The floors of both steps are carried.

**Epochs** (:class:`EpochSchedule`): fixed-length windows aligned to ``offset_ms`` after the Unix epoch
(default: one UTC day from 00:00). Epoch ``i`` is ``[offset + i*length, offset + (i+1)*length)``; it is
declared once it has closed, under the id ``div-{start:%Y%m%dT%H%MZ}-{length in minutes}m``.
:class:`EpochScheduler` remembers the last epoch declared: each closed epoch is declared at most once
(and the ledger refuses a second declaration with the same id anyway). When it finds several closed
epochs undeclared (the timer was down), it declares them **once, together**, under the latest one's id
and over their whole span: the pool is a balance, not a per-epoch flow, so declaring each missed epoch in
turn would hand the whole pool to the first and nothing to the others. Persist the scheduler with the
ledger's state (one snapshot), so the two never disagree about what was declared.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

K = TypeVar("K", bound=Hashable)

MS_PER_DAY = 86_400_000
BPS_DENOMINATOR = 10_000
DEFAULT_SOURCE_SHARES_BPS: Mapping[str, int] = {"ENERGY_NODE": 5_000, "STAKING": 5_000}
SNAPSHOT_FORMAT = "nexus-x.dividend-epochs/1"


class Share(NamedTuple, Generic[K]):
    key: K
    weight: int
    amount_units: int


class Allocation(NamedTuple, Generic[K]):
    pool_units: int
    total_weight: int
    shares: tuple[Share[K], ...]  # in the order given; holders whose floor is 0 are left out
    carried_units: int  # pool - Σ shares: stays in the pool


def allocate(pool_units: int, weights: Sequence[tuple[K, int]]) -> Allocation[K]:
    """Split ``pool_units`` pro rata to integer weights, rounding each share down and carrying the rest."""
    assert type(pool_units) is int and pool_units >= 0
    assert all(type(w) is int and w >= 0 for _, w in weights)
    total = sum(w for _, w in weights)
    shares: list[Share[K]] = []
    if pool_units and total:
        for key, weight in weights:
            amount = pool_units * weight // total
            if amount:
                shares.append(Share(key, weight, amount))
    carried = pool_units - sum(s.amount_units for s in shares)
    assert 0 <= carried <= pool_units
    return Allocation(pool_units, total, tuple(shares), carried)


S = TypeVar("S", bound=str)
A = TypeVar("A", bound=Hashable)


def allocate_by_source(
    pool_units: int,
    weights: Sequence[tuple[tuple[S, A], int]],
    source_shares_bps: Mapping[str, int] = DEFAULT_SOURCE_SHARES_BPS,
) -> Allocation[tuple[S, A]]:
    """Split the pool between sources by their shares (over the sources that have weight), then pro rata."""
    assert all(bps >= 0 for bps in source_shares_bps.values())
    by_source: dict[str, list[tuple[tuple[S, A], int]]] = {}
    for key, weight in weights:
        by_source.setdefault(key[0], []).append((key, weight))
    present = sorted(
        s for s, rows in by_source.items() if source_shares_bps.get(s, 0) > 0 and sum(w for _, w in rows) > 0
    )
    share_total = sum(source_shares_bps[s] for s in present)
    shares: list[Share[tuple[S, A]]] = []
    for source in present:
        part = allocate(pool_units * source_shares_bps[source] // share_total, by_source[source])
        shares.extend(part.shares)
    carried = pool_units - sum(s.amount_units for s in shares)
    assert 0 <= carried <= pool_units
    return Allocation(pool_units, sum(w for _, w in weights), tuple(shares), carried)


# --------------------------------------------------------------------------- epochs


@dataclass(frozen=True, slots=True)
class EpochSchedule:
    length_ms: int = MS_PER_DAY
    offset_ms: int = 0  # where epochs start after 1970-01-01T00:00Z (0: at 00:00 UTC)

    def __post_init__(self) -> None:
        assert self.length_ms >= 60_000 and self.length_ms % 60_000 == 0, "epochs are whole minutes"
        assert 0 <= self.offset_ms < self.length_ms

    def index(self, now_ms: int) -> int:
        """The epoch ``now_ms`` falls in."""
        return (now_ms - self.offset_ms) // self.length_ms

    def start_ms(self, index: int) -> int:
        return self.offset_ms + index * self.length_ms

    def end_ms(self, index: int) -> int:
        return self.start_ms(index + 1)

    def epoch_id(self, index: int) -> str:
        start = datetime.fromtimestamp(self.start_ms(index) / 1000, UTC)
        return f"div-{start:%Y%m%dT%H%MZ}-{self.length_ms // 60_000}m"


class EpochDue(NamedTuple):
    declaration_id: str  # the latest covered epoch's id
    first_index: int
    last_index: int
    start_ms: int  # the span the declaration covers (staking weights are taken over it)
    end_ms: int

    @property
    def epochs(self) -> int:
        return self.last_index - self.first_index + 1


class EpochScheduler:
    """Which closed epoch to declare now, at most once each."""

    __slots__ = ("_last_declared", "schedule")

    def __init__(self, schedule: EpochSchedule | None = None, last_declared: int | None = None) -> None:
        self.schedule = schedule or EpochSchedule()
        self._last_declared = last_declared

    @property
    def last_declared(self) -> int | None:
        return self._last_declared

    def due(self, now_ms: int) -> EpochDue | None:
        """The closed epochs not yet declared, as one declaration; None when the latest closed one was."""
        closed = self.schedule.index(now_ms) - 1
        if self._last_declared is not None and closed <= self._last_declared:
            return None
        first = closed if self._last_declared is None else self._last_declared + 1
        s = self.schedule
        return EpochDue(s.epoch_id(closed), first, closed, s.start_ms(first), s.end_ms(closed))

    def mark_declared(self, due: EpochDue) -> None:
        """Call once the ledger applied (or replayed) the declaration."""
        if self._last_declared is None or due.last_index > self._last_declared:
            self._last_declared = due.last_index

    def to_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "format": SNAPSHOT_FORMAT,
            "length_ms": s.length_ms,
            "offset_ms": s.offset_ms,
            "last_declared": self._last_declared,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochScheduler:
        assert data["format"] == SNAPSHOT_FORMAT
        return cls(EpochSchedule(data["length_ms"], data["offset_ms"]), data["last_declared"])
