"""Settling a matched Trade on the ledger (spec §2.1 phases 3-4, §2.3 dividend trigger).

For each ``order_book.Trade`` one linked ledger batch (all legs or none), with
transfer ids derived from the trade id so a replay is idempotent:

==========================  =========================  ==========================
transfer id                 debit -> credit            amount
==========================  =========================  ==========================
``{trade_id}/pay``          buyer -> seller            notional (price*qty/1000)
``{trade_id}/fee``          seller -> ``sys:fees``     fee (if > 0)
``{trade_id}/dividend``     ``sys:fees`` ->            dividend share (if > 0)
                            ``sys:dividends``
``{trade_id}/carbon``       ``sys:carbon`` ->          carbon milli-credits
                            ``carbon:{seller}``        (renewable sellers, if > 0)
==========================  =========================  ==========================

``trade_leg`` names each transfer's leg (PAYMENT, FEE, DIVIDEND_POOL, CARBON) for the shell's records.

Rules (all integer; nothing is ever rounded away, remainders are carried):

* Fee: ``FEE_RATE_BPS = 25`` (0.25 %) of notional, charged to the seller.
  ``fee = (notional*25 + carry) // 10_000``, the remainder ``(...) % 10_000`` is
  carried per seller into their next trade. So for every seller,
  ``Σ fees == floor(Σ notional * 25 / 10_000)`` exactly.
* Dividend pool: ``DIVIDEND_SHARE_BPS = 5_000`` (50 %) of every fee moves from
  ``sys:fees`` to ``sys:dividends``, with one global carried remainder the same
  way, so ``Σ pool accruals == floor(Σ fees / 2)``.
* Carbon credits: sellers registered with a renewable ``EnergySource`` earn
  1 credit per MWh delivered = 1 milli-credit per 1,000 Wh. Their Wh are
  accrued per seller and only whole milli-credits are minted; the remainder
  (< 1,000 Wh) is carried. So ``Σ minted == floor(Σ Wh / 1000)`` per seller.
  Carbon credits are their own ledger asset (``Asset.CARBON_MILLICREDIT``),
  issued by ``sys:carbon`` (allowed negative: -balance == credits issued).
* Dividends (spec §2.3 ``dividendSource: ENERGY_NODE | STAKING``): holders are
  registered with a source and an integer weight (energy-node capacity,
  staked amount...). ``declare_dividends(declaration_id, now_ms)`` distributes
  the whole available ``sys:dividends`` pool pro rata (``domain.dividends``):
  ``amount_i = floor(pool * weight_i / Σ weights)``; the remainder stays in the
  pool for the next declaration. An epoch declaration may pass the staking
  vault's weights and the sources' shares of the pool instead. Each payout
  is a ``DividendDeclared`` event that auto-payout rules consume. Declaration
  is a separate, explicit step (per epoch, by the shell's schedule) so a trade
  costs a fixed number of legs however many holders there are.

A settlement that fails (e.g. the buyer's available balance is short) changes
nothing, carries included, and can be retried with the same trade later.
Re-settling an already settled trade returns the original outcome with
``replayed=True``; a different trade under a settled trade id is rejected.
Settled trades live in an injected :class:`SettledStore` (``MemorySettledStore`` by default; the shell keeps
them on disk), as the ledger's applied ids do (``domain.ledger.IdStore``), under the same discipline: each
entry carries the settler's *settled sequence* (one step per settled trade), a snapshot records that
sequence, and restoring one makes the store forget every trade settled past it (the replay settles them again).

No clock is read here; ``settle(..., clock=...)`` accepts a callable returning
nanoseconds (e.g. ``time.perf_counter_ns``) and reports per-phase timings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from domain.dividends import allocate, allocate_by_source
from domain.ledger import (
    MAX_BATCH,
    Asset,
    BatchResult,
    IdStore,
    Ledger,
    LedgerCommand,
    Leg,
    TransferResult,
)
from domain.ledger import (
    Transfer as LedgerTransfer,
)
from domain.order_book import Side, Trade, parse_market_id

WH_PER_KWH = 1_000
BPS_DENOMINATOR = 10_000
FEE_RATE_BPS = 25
DIVIDEND_SHARE_BPS = 5_000
WH_PER_CARBON_MILLICREDIT = 1_000  # 1 credit/MWh
SYS_MINT = "sys:mint"
SYS_FEES = "sys:fees"
SYS_DIVIDENDS = "sys:dividends"
SYS_CARBON = "sys:carbon"
MAX_DIVIDEND_HOLDERS = MAX_BATCH
SNAPSHOT_FORMAT = "nexus-x.trade-settlement/2"  # /1 carried every settled trade: still loaded (moved to the store)
_SNAPSHOT_FORMAT_1 = "nexus-x.trade-settlement/1"
# A trade's legs: transfer id suffix -> (ledger code, the leg finance sees on `ledger.transfers`).
TRADE_LEGS: dict[str, tuple[str, Leg]] = {
    "pay": ("trade.payment", Leg.PAYMENT),
    "fee": ("trade.fee", Leg.FEE),
    "dividend": ("dividend.pool", Leg.DIVIDEND_POOL),
    "carbon": ("carbon.mint", Leg.CARBON),
}
_LEG_OF_SUFFIX = {suffix: leg for suffix, (_, leg) in TRADE_LEGS.items()}


def trade_leg(transfer_id: str) -> Leg:
    """Which leg of its trade a transfer is: ids are ``{trade_id}/{suffix}`` (``settle`` builds them)."""
    return _LEG_OF_SUFFIX[transfer_id[transfer_id.rindex("/") + 1 :]]


def carbon_account_id(account_id: str) -> str:
    return f"carbon:{account_id}"


class EnergySource(StrEnum):
    SOLAR = "SOLAR"
    WIND = "WIND"
    HYDRO = "HYDRO"
    GEOTHERMAL = "GEOTHERMAL"
    BIOMASS = "BIOMASS"
    GRID_MIX = "GRID_MIX"  # unregistered or non-renewable


RENEWABLE_SOURCES = frozenset(
    {EnergySource.SOLAR, EnergySource.WIND, EnergySource.HYDRO, EnergySource.GEOTHERMAL, EnergySource.BIOMASS}
)


class DividendSource(StrEnum):
    ENERGY_NODE = "ENERGY_NODE"
    STAKING = "STAKING"


class SettlementStatus(StrEnum):
    SETTLED = "SETTLED"
    REJECTED = "REJECTED"


class SettlementCode(StrEnum):
    INVALID_TRADE = "INVALID_TRADE"
    TRADE_ID_CONFLICT = "TRADE_ID_CONFLICT"
    DECLARATION_ID_CONFLICT = "DECLARATION_ID_CONFLICT"
    LEDGER_REJECTED = "LEDGER_REJECTED"  # the ledger's own code is in the transfer results


class AuditAction(StrEnum):
    SETTLEMENT_EXECUTED = "SETTLEMENT_EXECUTED"
    SETTLEMENT_REJECTED = "SETTLEMENT_REJECTED"
    FEE_CHARGED = "FEE_CHARGED"
    DIVIDEND_POOL_ACCRUED = "DIVIDEND_POOL_ACCRUED"
    CARBON_CREDITS_MINTED = "CARBON_CREDITS_MINTED"
    DIVIDEND_DECLARED = "DIVIDEND_DECLARED"


@dataclass(frozen=True, slots=True)
class SettlementConfig:
    fee_rate_bps: int = FEE_RATE_BPS
    dividend_share_bps: int = DIVIDEND_SHARE_BPS
    wh_per_carbon_millicredit: int = WH_PER_CARBON_MILLICREDIT

    def __post_init__(self) -> None:
        assert 0 <= self.fee_rate_bps < BPS_DENOMINATOR
        assert 0 <= self.dividend_share_bps <= BPS_DENOMINATOR
        assert self.wh_per_carbon_millicredit > 0


# --- records ----------------------------------------------------------------


class EnergyDelivery(NamedTuple):
    """The buyer's claim on energy: what the grid operator must deliver or net."""

    trade_id: str
    market_id: str
    buyer_account_id: str
    seller_account_id: str
    quantity_wh: int
    source: EnergySource
    delivery_start_ms: int | None  # from the market id, when it has the standard form


class AuditFact(NamedTuple):
    """What the shell needs for a spec §7.2 audit record (it adds auditId, timestamp, signature)."""

    action: AuditAction
    transaction_id: str
    actor_account_id: str
    kaus_amount_units: int
    at_ms: int
    details: tuple[tuple[str, str | int], ...]


class TradeSettlement(NamedTuple):
    trade_id: str
    status: SettlementStatus
    code: SettlementCode | None
    reason: str
    notional_units: int
    fee_units: int
    seller_net_units: int  # notional - fee
    dividend_pool_units: int
    carbon_millicredits: int
    delivery: EnergyDelivery | None
    transfers: tuple[TransferResult, ...]
    audit: tuple[AuditFact, ...]
    replayed: bool
    phase_ns: tuple[tuple[str, int], ...]  # only when a clock was passed


class DividendDeclared(NamedTuple):
    declaration_id: str
    transfer_id: str
    account_id: str
    source: DividendSource
    amount_units: int
    weight: int
    total_weight: int
    pool_units: int
    declared_at_ms: int


class DividendDeclaration(NamedTuple):
    declaration_id: str
    status: SettlementStatus
    code: SettlementCode | None
    pool_units: int
    distributed_units: int
    carried_units: int  # stays in sys:dividends for the next declaration
    dividends: tuple[DividendDeclared, ...]
    transfers: tuple[TransferResult, ...]
    audit: tuple[AuditFact, ...]
    replayed: bool


class SettledTrade(NamedTuple):
    """Enough to rebuild a settlement's outcome on replay (transfers come from the ledger)."""

    trade: Trade
    fee_units: int
    dividend_units: int
    carbon_millicredits: int
    source: EnergySource
    settled_at_ms: int


# --- settled trades -------------------------------------------------------------


class SettledStore(Protocol):
    """Where the settler keeps every settled trade for ever (its replay and conflict check).

    ``seq`` is the settler's settled sequence at the entry (1, 2, ...: one per settled trade, without gaps, the
    same on every replay). The store holds every entry up to :meth:`last_seq`. ``durable``: the entries outlive
    the process (a snapshot then carries only the sequence).
    """

    durable: bool

    def get(self, trade_id: str) -> SettledTrade | None: ...

    def put(self, seq: int, settled: SettledTrade) -> None: ...

    def last_seq(self) -> int: ...

    def forget_after(self, seq: int) -> None:
        """Drop every entry past ``seq`` (a restore to that point: those trades will be settled again)."""

    def count(self) -> int: ...


class MemorySettledStore:
    """The core's default store: a dict in sequence order (tests, and a settler nobody persists)."""

    durable = False

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, SettledTrade]] = {}
        self._last_seq = 0

    def get(self, trade_id: str) -> SettledTrade | None:
        entry = self._entries.get(trade_id)
        return None if entry is None else entry[1]

    def put(self, seq: int, settled: SettledTrade) -> None:
        trade_id = settled.trade.trade_id
        assert seq == self._last_seq + 1 and trade_id not in self._entries, trade_id
        self._entries[trade_id] = (seq, settled)
        self._last_seq = seq

    def last_seq(self) -> int:
        return self._last_seq

    def forget_after(self, seq: int) -> None:
        # Insertion order is sequence order: the entries past `seq` are the last ones.
        while self._entries and next(reversed(self._entries.values()))[0] > seq:
            self._entries.popitem()
        self._last_seq = min(self._last_seq, seq)

    def count(self) -> int:
        return len(self._entries)

    def entries(self) -> list[tuple[int, SettledTrade]]:
        return list(self._entries.values())


class _Declared(NamedTuple):
    pool_units: int
    total_weight: int
    at_ms: int
    payouts: tuple[tuple[str, DividendSource, int, int], ...]  # (account, source, weight, amount)


# An enum member lookup is a slow class-attribute lookup; the per-trade path uses these aliases.
_SETTLED = SettlementStatus.SETTLED
_REJECTED = SettlementStatus.REJECTED
_GRID_MIX = EnergySource.GRID_MIX
_EXECUTED = AuditAction.SETTLEMENT_EXECUTED
_FEE_CHARGED = AuditAction.FEE_CHARGED
_POOL_ACCRUED = AuditAction.DIVIDEND_POOL_ACCRUED
_CARBON_MINTED = AuditAction.CARBON_CREDITS_MINTED
_PAY_CODE, _FEE_CODE, _POOL_CODE, _CARBON_CODE = (TRADE_LEGS[s][0] for s in ("pay", "fee", "dividend", "carbon"))


class TradeSettler:
    """Owns the settlement carries and registrations, and the ledger they move money on.

    Persist ``to_dict()`` as one unit: the ledger and the carries must never be
    restored from different points in time. Settled trades are in ``settled`` (the store), not in memory.
    """

    __slots__ = (
        "_carbon_carry_wh",
        "_config",
        "_declarations",
        "_dividend_carry",
        "_fee_carry",
        "_ledger",
        "_settled",
        "_settled_seq",
        "_sources",
        "_weights",
    )

    def __init__(
        self, ledger: Ledger, config: SettlementConfig | None = None, *, settled: SettledStore | None = None
    ) -> None:
        """``settled``: where settled trades are kept; a new settler has settled nothing, so the store is emptied."""
        self._ledger = ledger
        self._config = config or SettlementConfig()
        self._sources: dict[str, EnergySource] = {}
        self._weights: dict[tuple[DividendSource, str], int] = {}
        # Carried remainders: fee numerators (< 10_000) and carbon Wh (< 1_000) per seller.
        self._fee_carry: dict[str, int] = {}
        self._carbon_carry_wh: dict[str, int] = {}
        self._dividend_carry = 0
        self._settled: SettledStore = MemorySettledStore() if settled is None else settled
        self._settled.forget_after(0)
        self._settled_seq = 0  # trades settled so far: entries written to the store
        self._declarations: dict[str, _Declared] = {}
        ledger.open_account(SYS_MINT, Asset.KAUS, allow_negative=True)
        ledger.open_account(SYS_FEES, Asset.KAUS)
        ledger.open_account(SYS_DIVIDENDS, Asset.KAUS)
        ledger.open_account(SYS_CARBON, Asset.CARBON_MILLICREDIT, allow_negative=True)

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def config(self) -> SettlementConfig:
        return self._config

    # -- registrations --

    def register_seller_source(self, account_id: str, source: EnergySource) -> None:
        """Which energy a seller delivers; renewable sources earn carbon credits from now on."""
        self._sources[account_id] = source

    def set_dividend_weight(self, account_id: str, source: DividendSource, weight: int) -> None:
        """Register (weight > 0) or remove (weight == 0) a dividend holder for one source."""
        assert type(weight) is int and weight >= 0
        key = (source, account_id)
        if weight == 0:
            self._weights.pop(key, None)
            return
        if key not in self._weights and len(self._weights) >= MAX_DIVIDEND_HOLDERS:
            raise ValueError(f"at most {MAX_DIVIDEND_HOLDERS} dividend registrations")
        self._weights[key] = weight

    def fee_carry(self, account_id: str) -> int:
        return self._fee_carry.get(account_id, 0)

    def carbon_carry_wh(self, account_id: str) -> int:
        return self._carbon_carry_wh.get(account_id, 0)

    @property
    def dividend_carry(self) -> int:
        return self._dividend_carry

    @property
    def settled(self) -> SettledStore:
        return self._settled

    @property
    def settled_seq(self) -> int:
        return self._settled_seq

    def is_settled(self, trade_id: str) -> bool:
        return self._settled.get(trade_id) is not None

    def is_declared(self, declaration_id: str) -> bool:
        return declaration_id in self._declarations

    # -- settlement --

    def settle(self, trade: Trade, now_ms: int, *, clock: Callable[[], int] | None = None) -> TradeSettlement:
        t0 = clock() if clock is not None else 0
        prior = self._settled.get(trade.trade_id)
        if prior is not None:
            if prior.trade == trade:
                return self._outcome(prior, replayed=True, phase_ns=())
            return self._rejected(
                trade, now_ms, SettlementCode.TRADE_ID_CONFLICT, "trade id already settled with other content"
            )
        invalid = _invalid_trade(trade)
        if invalid is not None:
            return self._rejected(trade, now_ms, SettlementCode.INVALID_TRADE, invalid)

        config = self._config
        seller = trade.seller_account_id
        notional = trade.notional_units
        fee_numerator = notional * config.fee_rate_bps + self._fee_carry.get(seller, 0)
        fee, fee_carry = divmod(fee_numerator, BPS_DENOMINATOR)
        dividend_numerator = fee * config.dividend_share_bps + self._dividend_carry
        dividend, dividend_carry = divmod(dividend_numerator, BPS_DENOMINATOR)
        source = self._sources.get(seller, _GRID_MIX)
        carbon = 0
        carbon_carry = self._carbon_carry_wh.get(seller, 0)
        if source in RENEWABLE_SOURCES:
            carbon, carbon_carry = divmod(carbon_carry + trade.quantity_wh, config.wh_per_carbon_millicredit)
        assert 0 <= fee <= notional and 0 <= dividend <= fee and carbon >= 0

        ledger = self._ledger
        ledger.open_account(seller, Asset.KAUS)  # credit-only here, so opening is harmless
        trade_id = trade.trade_id
        legs: list[LedgerCommand] = [
            LedgerTransfer(f"{trade_id}/pay", trade.buyer_account_id, seller, notional, _PAY_CODE)
        ]
        if fee:
            legs.append(LedgerTransfer(f"{trade_id}/fee", seller, SYS_FEES, fee, _FEE_CODE))
        if dividend:
            legs.append(LedgerTransfer(f"{trade_id}/dividend", SYS_FEES, SYS_DIVIDENDS, dividend, _POOL_CODE))
        if carbon:
            ledger.open_account(carbon_account_id(seller), Asset.CARBON_MILLICREDIT)
            legs.append(
                LedgerTransfer(f"{trade_id}/carbon", SYS_CARBON, carbon_account_id(seller), carbon, _CARBON_CODE)
            )
        t1 = clock() if clock is not None else 0

        batch = ledger.apply_batch(legs, now_ms)
        t2 = clock() if clock is not None else 0
        if not batch.ok:
            return self._ledger_rejected(trade, now_ms, batch)
        assert not batch.replayed, "ledger already holds this trade's legs but the settler has no record of it"

        # Commit carries only after the batch applied: a failed settlement changes nothing.
        self._fee_carry[seller] = fee_carry
        self._dividend_carry = dividend_carry
        if source in RENEWABLE_SOURCES:
            self._carbon_carry_wh[seller] = carbon_carry
        settled = SettledTrade(trade, fee, dividend, carbon, source, now_ms)
        self._settled_seq += 1
        self._settled.put(self._settled_seq, settled)
        outcome = self._outcome(settled, replayed=False, phase_ns=(), transfers=batch.results)
        if clock is not None:
            t3 = clock()
            phases = (("validate_and_build_legs", t1 - t0), ("ledger_batch", t2 - t1), ("records", t3 - t2))
            outcome = TradeSettlement._make((*outcome[:-1], phases))  # cheaper than _replace on 14 fields
        return outcome

    def _outcome(
        self,
        s: SettledTrade,
        *,
        replayed: bool,
        phase_ns: tuple[tuple[str, int], ...],
        transfers: tuple[TransferResult, ...] | None = None,
    ) -> TradeSettlement:
        """`transfers`: the batch's results when it was just applied (in leg order); else read from the ledger."""
        trade = s.trade
        if transfers is None:
            transfers = self._leg_results(s)
        return TradeSettlement(
            trade.trade_id,
            _SETTLED,
            None,
            "",
            trade.notional_units,
            s.fee_units,
            trade.notional_units - s.fee_units,
            s.dividend_units,
            s.carbon_millicredits,
            _delivery(trade, s.source),
            transfers,
            self._audit_facts(s),
            replayed,
            phase_ns,
        )

    def _leg_results(self, s: SettledTrade) -> tuple[TransferResult, ...]:
        """The ledger's results for a settled trade's legs, in the order settle() built them."""
        trade_id = s.trade.trade_id
        leg_ids = [f"{trade_id}/pay"]
        if s.fee_units:
            leg_ids.append(f"{trade_id}/fee")
        if s.dividend_units:
            leg_ids.append(f"{trade_id}/dividend")
        if s.carbon_millicredits:
            leg_ids.append(f"{trade_id}/carbon")
        found = []
        for leg_id in leg_ids:
            result = self._ledger.result(leg_id)
            assert result is not None, leg_id
            found.append(result)
        return tuple(found)

    def _audit_facts(self, s: SettledTrade) -> tuple[AuditFact, ...]:
        """One fact for the execution, plus one per fee, pool accrual and carbon mint that moved anything."""
        trade = s.trade
        trade_id = trade.trade_id
        seller, buyer, at = trade.seller_account_id, trade.buyer_account_id, s.settled_at_ms
        audit = [
            AuditFact(
                _EXECUTED,
                trade_id,
                buyer,
                trade.notional_units,
                at,
                (
                    ("market_id", trade.market_id),
                    ("seller_account_id", seller),
                    ("quantity_wh", trade.quantity_wh),
                    ("price_units_per_kwh", trade.price_units_per_kwh),
                    ("fee_units", s.fee_units),
                    ("seller_net_units", trade.notional_units - s.fee_units),
                    ("transfer_id", f"{trade_id}/pay"),
                ),
            )
        ]
        if s.fee_units:
            audit.append(
                AuditFact(
                    _FEE_CHARGED,
                    f"{trade_id}/fee",
                    seller,
                    s.fee_units,
                    at,
                    (("trade_id", trade_id), ("fee_rate_bps", self._config.fee_rate_bps)),
                )
            )
        if s.dividend_units:
            audit.append(
                AuditFact(
                    _POOL_ACCRUED,
                    f"{trade_id}/dividend",
                    SYS_FEES,
                    s.dividend_units,
                    at,
                    (("trade_id", trade_id), ("dividend_share_bps", self._config.dividend_share_bps)),
                )
            )
        if s.carbon_millicredits:
            audit.append(
                AuditFact(
                    _CARBON_MINTED,
                    f"{trade_id}/carbon",
                    seller,
                    0,
                    at,
                    (
                        ("trade_id", trade_id),
                        ("carbon_millicredits", s.carbon_millicredits),
                        ("source", s.source.value),
                    ),
                )
            )
        return tuple(audit)

    def _rejected(
        self,
        trade: Trade,
        now_ms: int,
        code: SettlementCode,
        reason: str,
        transfers: tuple[TransferResult, ...] = (),
    ) -> TradeSettlement:
        audit = AuditFact(
            AuditAction.SETTLEMENT_REJECTED,
            trade.trade_id,
            trade.buyer_account_id,
            trade.notional_units,
            now_ms,
            (("code", code.value), ("reason", reason)),
        )
        return TradeSettlement(
            trade.trade_id,
            _REJECTED,
            code,
            reason,
            trade.notional_units,
            0,
            0,
            0,
            0,
            None,
            transfers,
            (audit,),
            False,
            (),
        )

    def _ledger_rejected(self, trade: Trade, now_ms: int, batch: BatchResult) -> TradeSettlement:
        cause = next(r for r in batch.results if r.code is not None and r.code.value != "LINKED_EVENT_FAILED")
        assert cause.code is not None
        reason = f"{cause.transfer_id}: {cause.code.value}: {cause.reason}"
        return self._rejected(trade, now_ms, SettlementCode.LEDGER_REJECTED, reason, batch.results)

    # -- dividends --

    def declare_dividends(
        self,
        declaration_id: str,
        now_ms: int,
        *,
        staking_weights: Mapping[str, int] | None = None,
        source_shares_bps: Mapping[str, int] | None = None,
    ) -> DividendDeclaration:
        """Distribute the available dividend pool pro rata (``domain.dividends``); the floors stay in the pool.

        Defaults: the registered weights in one weight space. An epoch declaration passes the staking
        vault's weights over the epoch (they replace the registered STAKING weights for this declaration)
        and the sources' shares of the pool (``dividends.allocate_by_source``).
        """
        prior = self._declarations.get(declaration_id)
        if prior is not None:
            return self._declaration(declaration_id, prior, replayed=True)
        assert 0 < len(declaration_id) <= 100, "declaration id too long to derive transfer ids from"
        ledger = self._ledger
        pool = ledger.available(SYS_DIVIDENDS)
        weights = dict(self._weights)
        if staking_weights is not None:
            weights = {k: w for k, w in weights.items() if k[0] is not DividendSource.STAKING}
            weights.update(((DividendSource.STAKING, a), w) for a, w in staking_weights.items() if w > 0)
            if len(weights) > MAX_DIVIDEND_HOLDERS:
                raise ValueError(f"at most {MAX_DIVIDEND_HOLDERS} dividend holders per declaration")
        holders = sorted(weights.items())  # (source, account) order: deterministic
        if source_shares_bps is None:
            allocation = allocate(pool, holders)
        else:
            allocation = allocate_by_source(pool, holders, source_shares_bps)
        payouts: list[tuple[str, DividendSource, int, int]] = []
        legs: list[LedgerCommand] = []
        for (source, account_id), weight, amount in allocation.shares:
            ledger.open_account(account_id, Asset.KAUS)
            transfer_id = f"{declaration_id}/{len(legs)}"
            legs.append(LedgerTransfer(transfer_id, SYS_DIVIDENDS, account_id, amount, f"dividend.{source.value}"))
            payouts.append((account_id, source, weight, amount))
        if legs:
            batch = ledger.apply_batch(legs, now_ms)
            if not batch.ok:
                return DividendDeclaration(
                    declaration_id,
                    _REJECTED,
                    SettlementCode.LEDGER_REJECTED,
                    pool,
                    0,
                    pool,
                    (),
                    batch.results,
                    (),
                    False,
                )
            assert not batch.replayed
        declared = _Declared(pool, allocation.total_weight, now_ms, tuple(payouts))
        self._declarations[declaration_id] = declared
        return self._declaration(declaration_id, declared, replayed=False)

    def _declaration(self, declaration_id: str, d: _Declared, *, replayed: bool) -> DividendDeclaration:
        dividends = []
        transfers = []
        audit = []
        for index, (account_id, source, weight, amount) in enumerate(d.payouts):
            transfer_id = f"{declaration_id}/{index}"
            result = self._ledger.result(transfer_id)
            assert result is not None
            transfers.append(result)
            dividends.append(
                DividendDeclared(
                    declaration_id,
                    transfer_id,
                    account_id,
                    source,
                    amount,
                    weight,
                    d.total_weight,
                    d.pool_units,
                    d.at_ms,
                )
            )
            audit.append(
                AuditFact(
                    AuditAction.DIVIDEND_DECLARED,
                    transfer_id,
                    account_id,
                    amount,
                    d.at_ms,
                    (("declaration_id", declaration_id), ("dividend_source", source.value), ("weight", weight)),
                )
            )
        distributed = sum(p[3] for p in d.payouts)
        return DividendDeclaration(
            declaration_id,
            _SETTLED,
            None,
            d.pool_units,
            distributed,
            d.pool_units - distributed,
            tuple(dividends),
            tuple(transfers),
            tuple(audit),
            replayed,
        )

    # -- invariants and snapshot --

    def check_invariants(self) -> None:
        config = self._config
        assert all(0 <= c < BPS_DENOMINATOR for c in self._fee_carry.values())
        assert 0 <= self._dividend_carry < BPS_DENOMINATOR
        assert all(0 <= c < config.wh_per_carbon_millicredit for c in self._carbon_carry_wh.values())
        assert all(w > 0 for w in self._weights.values())
        assert self._settled.last_seq() == self._settled_seq, (
            f"store at {self._settled.last_seq()}, settler at {self._settled_seq}"
        )
        self._ledger.check_invariants()

    def to_dict(self) -> dict[str, Any]:
        """Carries, registrations, declarations, the ledger and the settled sequence; a memory store's entries too
        (nothing else keeps them)."""
        data: dict[str, Any] = {
            "format": SNAPSHOT_FORMAT,
            "config": {
                "fee_rate_bps": self._config.fee_rate_bps,
                "dividend_share_bps": self._config.dividend_share_bps,
                "wh_per_carbon_millicredit": self._config.wh_per_carbon_millicredit,
            },
            "ledger": self._ledger.to_dict(),
            "sources": {k: v.value for k, v in sorted(self._sources.items())},
            "weights": [[source.value, account, w] for (source, account), w in sorted(self._weights.items())],
            "fee_carry": dict(sorted(self._fee_carry.items())),
            "carbon_carry_wh": dict(sorted(self._carbon_carry_wh.items())),
            "dividend_carry": self._dividend_carry,
            "settled_seq": self._settled_seq,
            "declarations": [
                {
                    "declaration_id": declaration_id,
                    "pool_units": d.pool_units,
                    "total_weight": d.total_weight,
                    "at_ms": d.at_ms,
                    "payouts": [[a, src.value, w, amt] for a, src, w, amt in d.payouts],
                }
                for declaration_id, d in self._declarations.items()
            ],
        }
        if isinstance(self._settled, MemorySettledStore):
            data["settled"] = [{"seq": seq, **_settled_to_dict(s)} for seq, s in self._settled.entries()]
        return data

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, ids: IdStore | None = None, settled: SettledStore | None = None
    ) -> TradeSettler:
        """The settler a snapshot recorded. ``ids``: the store the ledger's applied ids are in
        (``Ledger.from_dict``); ``settled``: where its settled trades are (default: a new memory store).

        As for the ledger's ids: the store forgets every trade settled past the snapshot's sequence, a snapshot
        that carries its entries (a memory store's, or format /1's) rewrites the store with them, and a durable
        store that holds less than the snapshot's sequence cannot serve it: ValueError.
        """
        fmt = data["format"]
        assert fmt in (SNAPSHOT_FORMAT, _SNAPSHOT_FORMAT_1), f"unknown snapshot format {fmt!r}"
        settler = cls(Ledger.from_dict(data["ledger"], ids=ids), SettlementConfig(**data["config"]))
        store: SettledStore = MemorySettledStore() if settled is None else settled
        settler._settled = store  # after the constructor, which empties the store it is given
        if fmt == _SNAPSHOT_FORMAT_1:  # every settled trade inside, in settlement order, without a sequence
            settler._settled_seq = _rewrite_settled(enumerate(data["settled"], start=1), store)
        else:
            settler._settled_seq = data["settled_seq"]
            if "settled" in data:
                _rewrite_settled(((row["seq"], row) for row in data["settled"]), store)
            elif store.last_seq() < settler._settled_seq:
                raise ValueError(
                    f"the settled store holds trades up to {store.last_seq()}, the snapshot {settler._settled_seq}"
                )
        store.forget_after(settler._settled_seq)
        settler._sources = {k: EnergySource(v) for k, v in data["sources"].items()}
        settler._weights = {(DividendSource(src), account): w for src, account, w in data["weights"]}
        settler._fee_carry = dict(data["fee_carry"])
        settler._carbon_carry_wh = dict(data["carbon_carry_wh"])
        settler._dividend_carry = data["dividend_carry"]
        for row in data["declarations"]:
            payouts = tuple((a, DividendSource(src), w, amt) for a, src, w, amt in row["payouts"])
            settler._declarations[row["declaration_id"]] = _Declared(
                row["pool_units"], row["total_weight"], row["at_ms"], payouts
            )
        settler.check_invariants()
        return settler


def _invalid_trade(trade: Trade) -> str | None:
    if not (0 < len(trade.trade_id) <= 100):
        return "trade id must be 1..100 characters (transfer ids are derived from it)"
    if trade.buyer_account_id == trade.seller_account_id:
        return "buyer and seller are the same account"
    if not trade.buyer_account_id or not trade.seller_account_id:
        return "missing account"
    if trade.quantity_wh <= 0 or trade.price_units_per_kwh <= 0:
        return "price and quantity must be positive"
    scaled = trade.price_units_per_kwh * trade.quantity_wh
    if scaled % WH_PER_KWH or scaled // WH_PER_KWH != trade.notional_units:
        return "notional_units is not exactly price_units_per_kwh * quantity_wh / 1000"
    return None


def _delivery(trade: Trade, source: EnergySource) -> EnergyDelivery:
    delivery_start: int | None
    try:
        delivery_start = parse_market_id(trade.market_id).delivery_start_ms
    except ValueError:
        delivery_start = None  # a market id without the standard form still settles
    return EnergyDelivery(
        trade.trade_id,
        trade.market_id,
        trade.buyer_account_id,
        trade.seller_account_id,
        trade.quantity_wh,
        source,
        delivery_start,
    )


def _settled_to_dict(s: SettledTrade) -> dict[str, Any]:
    """A settled trade as plain data (a memory store's entries in a snapshot)."""
    return {
        "trade": _trade_to_dict(s.trade),
        "fee_units": s.fee_units,
        "dividend_units": s.dividend_units,
        "carbon_millicredits": s.carbon_millicredits,
        "source": s.source.value,
        "settled_at_ms": s.settled_at_ms,
    }


def _settled_from_dict(row: dict[str, Any]) -> SettledTrade:
    return SettledTrade(
        _trade_from_dict(row["trade"]),
        row["fee_units"],
        row["dividend_units"],
        row["carbon_millicredits"],
        EnergySource(row["source"]),
        row["settled_at_ms"],
    )


def _rewrite_settled(rows: Iterable[tuple[int, dict[str, Any]]], store: SettledStore) -> int:
    """A snapshot's own settled trades are the whole truth up to its sequence: the store is rewritten with them.
    Returns the sequence reached."""
    store.forget_after(0)
    seq = 0
    for seq, row in rows:
        store.put(seq, _settled_from_dict(row))
    return seq


def _trade_to_dict(trade: Trade) -> dict[str, Any]:
    row = trade._asdict()
    row["aggressor_side"] = trade.aggressor_side.value
    return row


def _trade_from_dict(row: dict[str, Any]) -> Trade:
    fields = dict(row)
    fields["aggressor_side"] = Side(fields["aggressor_side"])
    return Trade(**fields)
