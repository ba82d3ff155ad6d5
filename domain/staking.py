"""The staking vault (spec §1 "Staking Vault"): stake and unstake K-AUS, and each holder's STAKING weight.

Pure: no clock reads (callers pass ``now_ms``), integer K-AUS base units, money moved on the shared
``domain.ledger.Ledger`` (the one ``TradeSettler`` owns: persist both in one snapshot).

**Where staked K-AUS lives**: a stake moves it from the holder's account to their own ledger account
``staked:{account}`` (transfer ``{position_id}/stake``), and a release moves it back
(``{position_id}/release``). So staked K-AUS is outside ``Ledger.available(account)``: the ledger itself
refuses to spend it, and auto-payouts (which read the available balance) never pay it out. Σ balances per
asset is unchanged by staking.

**A position's life** (one per stake command; the position id is the command id)::

    STAKED --unstake, once now >= locked_until--> UNBONDING --release_due, once now >= releasable_at--> RELEASED

``lock_ms`` (default 7 days) is the minimum stake; ``unbonding_ms`` (default 2 days) the delay between the
request and the money being spendable again. Both are placeholders to confirm with the business (the spec
gives no figures). A position is unstaked whole; to unstake part, stake in several positions. Every
command is idempotent: the same command again returns the first outcome (``replayed``); the same position
id with other content is refused; a refused command changes nothing.

**STAKING weight** (:meth:`StakingVault.weights`): **time-weighted**, ``Σ amount × ms staked within the
window`` over the holder's positions, counting from the stake until the unstake *request* (unbonding K-AUS
earns nothing: it is on its way out). Time-weighting, not the end-of-epoch balance, because a snapshot
balance pays a whole epoch's dividend to K-AUS staked a minute before the snapshot; with time weights a
holder earns exactly for the time their K-AUS was committed. The unit is base-unit-milliseconds (exact
integers; the pro-rata split is scale-free, so no averaging or rounding is needed).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from domain.ledger import Asset, Ledger, TransferResult
from domain.ledger import Transfer as LedgerTransfer

MS_PER_DAY = 86_400_000
MAX_POSITION_ID_LENGTH = 100  # transfer ids {position_id}/stake stay within the ledger's 128 characters
SNAPSHOT_FORMAT = "nexus-x.staking/1"
STAKE_CODE = "staking.stake"
RELEASE_CODE = "staking.release"


def staked_account_id(account_id: str) -> str:
    return f"staked:{account_id}"


class PositionState(StrEnum):
    STAKED = "STAKED"
    UNBONDING = "UNBONDING"
    RELEASED = "RELEASED"


class StakingCode(StrEnum):
    INVALID_COMMAND = "INVALID_COMMAND"
    POSITION_ID_CONFLICT = "POSITION_ID_CONFLICT"
    UNKNOWN_POSITION = "UNKNOWN_POSITION"
    NOT_OWNER = "NOT_OWNER"
    STILL_LOCKED = "STILL_LOCKED"
    LEDGER_REJECTED = "LEDGER_REJECTED"


@dataclass(frozen=True, slots=True)
class StakingConfig:
    lock_ms: int = 7 * MS_PER_DAY
    unbonding_ms: int = 2 * MS_PER_DAY

    def __post_init__(self) -> None:
        assert self.lock_ms >= 0 and self.unbonding_ms >= 0


class Position(NamedTuple):
    position_id: str
    account_id: str
    amount_units: int
    staked_at_ms: int
    locked_until_ms: int
    state: PositionState
    unstaked_at_ms: int | None = None  # when the unstake was requested: it stops earning then
    releasable_at_ms: int | None = None
    released_at_ms: int | None = None


class StakingOutcome(NamedTuple):
    position_id: str
    ok: bool
    code: StakingCode | None
    reason: str
    position: Position | None
    transfer: TransferResult | None  # the ledger movement of a stake or release (None for an unstake)
    replayed: bool


class StakingVault:
    """Positions by id, over the ledger they move K-AUS on."""

    __slots__ = ("_config", "_ledger", "_positions", "_releases")

    def __init__(self, ledger: Ledger, config: StakingConfig | None = None) -> None:
        self._ledger = ledger
        self._config = config or StakingConfig()
        self._positions: dict[str, Position] = {}
        self._releases: list[tuple[int, str]] = []  # (releasable_at, position) of UNBONDING positions

    @property
    def config(self) -> StakingConfig:
        return self._config

    def position(self, position_id: str) -> Position | None:
        return self._positions.get(position_id)

    def positions(self, account_id: str) -> list[Position]:
        return [p for p in self._positions.values() if p.account_id == account_id]

    def staked_units(self, account_id: str) -> int:
        """K-AUS in STAKED or UNBONDING positions (what ``staked:{account}`` holds)."""
        return sum(p.amount_units for p in self.positions(account_id) if p.state is not PositionState.RELEASED)

    # -- commands --

    def stake(self, position_id: str, account_id: str, amount_units: int, now_ms: int) -> StakingOutcome:
        """Move ``amount_units`` from the holder's available K-AUS into a new locked position."""
        prior = self._positions.get(position_id)
        if prior is not None:
            if (prior.account_id, prior.amount_units) == (account_id, amount_units):
                return self._ok(prior, self._ledger.result(f"{position_id}/stake"), replayed=True)
            return _refused(position_id, StakingCode.POSITION_ID_CONFLICT, "position id already used for another stake")
        if not (0 < len(position_id) <= MAX_POSITION_ID_LENGTH) or type(amount_units) is not int or amount_units <= 0:
            return _refused(position_id, StakingCode.INVALID_COMMAND, "position id 1..100 characters, amount > 0")
        if not self._ledger.has_account(account_id):
            return _refused(position_id, StakingCode.LEDGER_REJECTED, f"unknown account {account_id!r}")
        vault = staked_account_id(account_id)
        self._ledger.open_account(vault, Asset.KAUS)
        transfer = LedgerTransfer(f"{position_id}/stake", account_id, vault, amount_units, STAKE_CODE)
        result = self._ledger.apply(transfer, now_ms)
        if result.code is not None:
            return _refused(position_id, StakingCode.LEDGER_REJECTED, f"{result.code.value}: {result.reason}", result)
        at = result.at_ms  # the ledger's clock: never behind an earlier command
        position = Position(position_id, account_id, amount_units, at, at + self._config.lock_ms, PositionState.STAKED)
        self._positions[position_id] = position
        return self._ok(position, result, replayed=False)

    def unstake(self, position_id: str, account_id: str, now_ms: int) -> StakingOutcome:
        """Start unbonding a whole position once its lock has passed; it stops earning now."""
        p = self._positions.get(position_id)
        if p is None:
            return _refused(position_id, StakingCode.UNKNOWN_POSITION, "no such position")
        if p.account_id != account_id:
            return _refused(position_id, StakingCode.NOT_OWNER, "the position belongs to another account")
        if p.state is not PositionState.STAKED:
            return self._ok(p, None, replayed=True)
        if now_ms < p.locked_until_ms:
            return _refused(
                position_id, StakingCode.STILL_LOCKED, f"locked until {p.locked_until_ms} (now {now_ms})", None, p
            )
        releasable = now_ms + self._config.unbonding_ms
        p = p._replace(state=PositionState.UNBONDING, unstaked_at_ms=now_ms, releasable_at_ms=releasable)
        self._positions[position_id] = p
        heapq.heappush(self._releases, (releasable, position_id))
        return self._ok(p, None, replayed=False)

    def release_due_by(self, now_ms: int) -> bool:
        """Whether a position's unbonding has ended by ``now_ms`` (cheap: the ledger asks on every command)."""
        return bool(self._releases) and self._releases[0][0] <= now_ms

    def release_due(self, now_ms: int) -> list[StakingOutcome]:
        """Move every position whose unbonding has ended back to its holder's available balance."""
        out = []
        while self._releases and self._releases[0][0] <= now_ms:
            _, position_id = heapq.heappop(self._releases)
            p = self._positions[position_id]
            transfer = LedgerTransfer(
                f"{position_id}/release", staked_account_id(p.account_id), p.account_id, p.amount_units, RELEASE_CODE
            )
            result = self._ledger.apply(transfer, now_ms)
            assert result.code is None, result  # the vault account holds exactly its positions' K-AUS
            p = p._replace(state=PositionState.RELEASED, released_at_ms=result.at_ms)
            self._positions[position_id] = p
            out.append(self._ok(p, result, replayed=False))
        return out

    def _ok(self, p: Position, transfer: TransferResult | None, *, replayed: bool) -> StakingOutcome:
        return StakingOutcome(p.position_id, True, None, "", p, transfer, replayed)

    # -- dividend weights --

    def weights(self, start_ms: int, end_ms: int) -> dict[str, int]:
        """Each holder's STAKING weight over ``[start_ms, end_ms)``: Σ amount × ms earning in the window."""
        assert start_ms <= end_ms
        out: dict[str, int] = {}
        for p in self._positions.values():
            stop = end_ms if p.unstaked_at_ms is None else min(end_ms, p.unstaked_at_ms)
            overlap = stop - max(start_ms, p.staked_at_ms)
            if overlap > 0:
                out[p.account_id] = out.get(p.account_id, 0) + p.amount_units * overlap
        return dict(sorted(out.items()))

    # -- invariants and snapshot --

    def check_invariants(self) -> None:
        """Each holder's vault account holds exactly their unreleased positions."""
        expected: dict[str, int] = {}
        for p in self._positions.values():
            if p.state is not PositionState.RELEASED:
                expected[p.account_id] = expected.get(p.account_id, 0) + p.amount_units
        for account_id, units in expected.items():
            view = self._ledger.account(staked_account_id(account_id))
            assert view is not None and view.balance_units == units, account_id

    def to_dict(self) -> dict[str, Any]:
        """The positions (the ledger is persisted by its owner, in the same snapshot)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "config": {"lock_ms": self._config.lock_ms, "unbonding_ms": self._config.unbonding_ms},
            "positions": [[*p[:5], p.state.value, *p[6:]] for p in self._positions.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], ledger: Ledger) -> StakingVault:
        assert data["format"] == SNAPSHOT_FORMAT
        vault = cls(ledger, StakingConfig(**data["config"]))
        for row in data["positions"]:
            p = Position(row[0], row[1], row[2], row[3], row[4], PositionState(row[5]), row[6], row[7], row[8])
            vault._positions[p.position_id] = p
            if p.state is PositionState.UNBONDING:
                assert p.releasable_at_ms is not None
                heapq.heappush(vault._releases, (p.releasable_at_ms, p.position_id))
        vault.check_invariants()
        return vault


def _refused(
    position_id: str,
    code: StakingCode,
    reason: str,
    transfer: TransferResult | None = None,
    position: Position | None = None,
) -> StakingOutcome:
    return StakingOutcome(position_id, False, code, reason, position, transfer, False)
