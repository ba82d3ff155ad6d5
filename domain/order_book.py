"""Continuous double auction for P2P energy: one price-time-priority book per market.

A *market* is one delivery interval in one grid region; its id is
``"<delivery start, UTC, minute precision>Z/<REGION>"``, e.g.
``"2026-11-24T10:00Z/KR-SEOUL"``. Each market has its own book.

Units (names carry them, last):

* ``quantity_wh``: energy in watt-hours, int, a multiple of the market's lot.
* ``price_units_per_kwh``: K-AUS base units (micro-K-AUS, see ``domain.money``)
  per kWh, int, a multiple of the market's tick.
* ``notional_units = price_units_per_kwh * quantity_wh // 1000``. The config
  asserts ``tick * lot % 1000 == 0`` so the division is always exact.
* times are caller-supplied logical milliseconds since the Unix epoch
  (``*_at_ms``); nothing in here reads a clock, so one input sequence always
  yields byte-identical events.

Rules (each enforced here, each producing an ``OrderRejected`` with a machine
``RejectCode`` and a human reason, never a silent drop):

* Price-time priority: best price first, then earliest priority within a price.
* LIMIT orders rest whatever does not match; MARKET orders never rest (IOC): the
  unmatched remainder is cancelled with ``CancelReason.IOC_NO_LIQUIDITY`` or
  ``CancelReason.IOC_PRICE_BAND``.
* Amend keeps time priority only when the quantity goes down and the price is
  unchanged; a price change or a quantity increase re-queues the order at the
  back (and may trade at once if the new price crosses). ``new_quantity_wh``
  is the new *open* (remaining) quantity.
* Gate closure: a market accepts nothing at or after ``gate_closure_ms``; the
  first command, ``expire()`` or ``close_gate()`` at/after it expires every
  resting order (``ExpiryReason.GATE_CLOSURE``). Orders may also carry their
  own ``expires_at_ms`` (good-till-time, ``ExpiryReason.ORDER_EXPIRY``).
* Self-trade prevention is CANCEL-RESTING: when an incoming order would match
  a resting order of the same account, the resting one is cancelled
  (``CancelReason.SELF_TRADE_PREVENTION``) and the incoming order keeps
  matching behind it. Why: the newest instruction is the account's current
  intent, and the incoming order still reaches other sellers' liquidity.
* Price band: with a reference price (last trade, else the config's
  ``reference_price_units_per_kwh``) and ``price_band_bps`` set, a limit price
  must satisfy ``ref*(1-band) <= price <= ref*(1+band)`` (exact integer
  comparison, bounds inclusive). Market orders only execute inside that band
  (reference taken at arrival). No reference yet, or ``price_band_bps=None``:
  no band.
* Tick and lot: prices must be positive multiples of ``tick_size_units``,
  quantities positive multiples of ``lot_size_wh``, both bounded.
* Order ids are scoped to a market (the stream is partitioned by market id, so
  no worker can see another market's ids). Every id ever submitted to a market
  is remembered, accepted or rejected: resubmitting it is rejected with
  ``DUPLICATE_ORDER_ID`` and never creates a second order.
* Logical time never goes backwards inside a book: a command stamped earlier
  than the book's clock is processed at the book's clock (so a late-stamped
  order cannot slip in before gate closure).

Defaults (``MarketRules``/``MarketConfig``): tick 1,000 units/kWh (0.001
K-AUS), lot 100 Wh, band +-2,000 bps (20 %) around the reference, gate closure
15 minutes before delivery start, at most 1 GWh per order, prices up to 1,000
K-AUS/kWh (so one order's notional stays <= 10**15 units), at most 1,000,000
resting orders per book. Memory per market is bounded by the orders it sees in
its lifetime (every id is kept for duplicate detection); ``retire_market``
drops a closed market.

Records are ``typing.NamedTuple`` (immutable, as in beancount's ``data.py``)
rather than frozen dataclasses: they are much cheaper to build, and events are
created on the hot path of every order.
"""

from __future__ import annotations

import re
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from heapq import heappop, heappush
from typing import NamedTuple

WH_PER_KWH = 1_000
BPS_DENOMINATOR = 10_000
MAX_ID_LENGTH = 128  # same bound as contracts.types.Id
MAX_NOTIONAL_UNITS = 10**18  # same bound as contracts.types.MAX_UNITS
GATE_CLOSURE_LEAD_MS = 15 * 60 * 1000

# A level's deque is compacted once lazily-deleted entries exceed this slack and
# half its length, so cancel-heavy flow can't grow a deque without bound.
_COMPACT_SLACK = 16


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class RejectCode(StrEnum):
    UNKNOWN_MARKET = "UNKNOWN_MARKET"
    TOO_MANY_MARKETS = "TOO_MANY_MARKETS"
    WRONG_MARKET = "WRONG_MARKET"
    INVALID_ORDER_ID = "INVALID_ORDER_ID"
    INVALID_ACCOUNT = "INVALID_ACCOUNT"
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    GATE_CLOSED = "GATE_CLOSED"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    LOT_SIZE = "LOT_SIZE"
    INVALID_PRICE = "INVALID_PRICE"
    TICK_SIZE = "TICK_SIZE"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"
    MARKET_ORDER_WITH_PRICE = "MARKET_ORDER_WITH_PRICE"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    BOOK_FULL = "BOOK_FULL"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    NOT_OWNER = "NOT_OWNER"
    NO_CHANGE = "NO_CHANGE"


class CancelReason(StrEnum):
    USER_REQUESTED = "USER_REQUESTED"
    SELF_TRADE_PREVENTION = "SELF_TRADE_PREVENTION"
    IOC_NO_LIQUIDITY = "IOC_NO_LIQUIDITY"
    IOC_PRICE_BAND = "IOC_PRICE_BAND"


class ExpiryReason(StrEnum):
    ORDER_EXPIRY = "ORDER_EXPIRY"
    GATE_CLOSURE = "GATE_CLOSURE"


class CommandKind(StrEnum):
    SUBMIT = "SUBMIT"
    CANCEL = "CANCEL"
    AMEND = "AMEND"


# --- commands ---------------------------------------------------------------


class SubmitOrder(NamedTuple):
    order_id: str
    market_id: str
    account_id: str
    side: Side
    order_type: OrderType
    price_units_per_kwh: int | None
    quantity_wh: int
    submitted_at_ms: int
    expires_at_ms: int | None = None


class CancelOrder(NamedTuple):
    order_id: str
    market_id: str
    account_id: str
    requested_at_ms: int


class AmendOrder(NamedTuple):
    """``None`` leaves that attribute unchanged; new_quantity_wh is the new open quantity."""

    order_id: str
    market_id: str
    account_id: str
    new_price_units_per_kwh: int | None
    new_quantity_wh: int | None
    requested_at_ms: int


Command = SubmitOrder | CancelOrder | AmendOrder


# --- events -----------------------------------------------------------------
# Every event carries its market, a per-market sequence number (strictly
# increasing, gap-free across all event types) and the logical time it happened.


class OrderAccepted(NamedTuple):
    market_id: str
    seq: int
    at_ms: int
    order_id: str
    account_id: str
    side: Side
    order_type: OrderType
    price_units_per_kwh: int | None
    quantity_wh: int
    expires_at_ms: int | None


class OrderRejected(NamedTuple):
    market_id: str
    seq: int
    at_ms: int
    order_id: str
    account_id: str
    command: CommandKind
    code: RejectCode
    reason: str


class Trade(NamedTuple):
    trade_id: str  # f"{market_id}:{seq}": deterministic, unique per market
    market_id: str
    seq: int
    at_ms: int
    buy_order_id: str
    sell_order_id: str
    buyer_account_id: str
    seller_account_id: str
    price_units_per_kwh: int  # always the resting order's price
    quantity_wh: int
    notional_units: int  # price_units_per_kwh * quantity_wh // 1000, exact
    aggressor_side: Side
    # Each side's open quantity right after this fill (0: that order is done). The book always sets them;
    # None only on a trade rebuilt from the wire (energy.trades does not carry them).
    buy_remaining_wh: int | None = None
    sell_remaining_wh: int | None = None


class OrderCancelled(NamedTuple):
    market_id: str
    seq: int
    at_ms: int
    order_id: str
    account_id: str
    side: Side
    price_units_per_kwh: int | None
    cancelled_quantity_wh: int
    reason: CancelReason


class OrderAmended(NamedTuple):
    market_id: str
    seq: int
    at_ms: int
    order_id: str
    account_id: str
    side: Side
    old_price_units_per_kwh: int
    price_units_per_kwh: int
    old_quantity_wh: int
    quantity_wh: int
    priority_kept: bool


class OrderExpired(NamedTuple):
    market_id: str
    seq: int
    at_ms: int
    order_id: str
    account_id: str
    side: Side
    price_units_per_kwh: int
    expired_quantity_wh: int
    reason: ExpiryReason


BookEvent = OrderAccepted | OrderRejected | Trade | OrderCancelled | OrderAmended | OrderExpired

# (best bid, open Wh at it, best ask, open Wh at it); None for an empty side.
TopOfBook = tuple[int | None, int | None, int | None, int | None]


class RestingOrder(NamedTuple):
    """Read-only view of an order on the book."""

    order_id: str
    account_id: str
    side: Side
    price_units_per_kwh: int
    remaining_quantity_wh: int
    priority: int
    expires_at_ms: int | None


# --- markets and their configuration ----------------------------------------

_MARKET_ID = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})Z/([A-Z0-9][A-Z0-9-]{0,31})$")


@dataclass(frozen=True, slots=True)
class Market:
    market_id: str
    delivery_start_ms: int
    region: str


@lru_cache(maxsize=4_096)  # pure, and settlement parses the same few ids per trade
def parse_market_id(market_id: str) -> Market:
    """Parse ``"2026-11-24T10:00Z/KR-SEOUL"``; raises ValueError on anything else."""
    match = _MARKET_ID.match(market_id)
    if match is None:
        raise ValueError(f"market id {market_id!r} is not '<YYYY-MM-DDTHH:MM>Z/<REGION>'")
    year, month, day, hour, minute = (int(g) for g in match.groups()[:5])
    start = datetime(year, month, day, hour, minute, tzinfo=UTC)  # ValueError on 2026-13-01 etc.
    return Market(market_id, int(start.timestamp()) * 1000, match.group(6))


def format_market_id(delivery_start_ms: int, region: str) -> str:
    assert delivery_start_ms % 60_000 == 0, "market ids have minute precision"
    start = datetime.fromtimestamp(delivery_start_ms // 1000, tz=UTC)
    return f"{start:%Y-%m-%dT%H:%M}Z/{region}"


@dataclass(frozen=True, slots=True)
class MarketConfig:
    market_id: str
    gate_closure_ms: int
    tick_size_units: int = 1_000  # 0.001 K-AUS per kWh
    lot_size_wh: int = 100
    max_order_quantity_wh: int = 1_000_000_000  # 1 GWh
    max_price_units_per_kwh: int = 1_000_000_000  # 1,000 K-AUS per kWh
    price_band_bps: int | None = 2_000  # +-20 % around the reference
    reference_price_units_per_kwh: int | None = None
    max_resting_orders: int = 1_000_000

    def __post_init__(self) -> None:
        assert self.tick_size_units > 0 and self.lot_size_wh > 0
        # Exact notional: every price*quantity is a multiple of tick*lot.
        assert (self.tick_size_units * self.lot_size_wh) % WH_PER_KWH == 0
        assert self.max_price_units_per_kwh % self.tick_size_units == 0
        assert self.max_order_quantity_wh % self.lot_size_wh == 0
        assert self.max_price_units_per_kwh * self.max_order_quantity_wh // WH_PER_KWH <= MAX_NOTIONAL_UNITS
        assert self.price_band_bps is None or 0 < self.price_band_bps <= BPS_DENOMINATOR
        ref = self.reference_price_units_per_kwh
        assert ref is None or 0 < ref <= self.max_price_units_per_kwh
        assert self.max_resting_orders > 0


@dataclass(frozen=True, slots=True)
class MarketRules:
    """Settings shared by a family of markets; the market id supplies the rest."""

    gate_closure_lead_ms: int = GATE_CLOSURE_LEAD_MS
    tick_size_units: int = 1_000
    lot_size_wh: int = 100
    max_order_quantity_wh: int = 1_000_000_000
    max_price_units_per_kwh: int = 1_000_000_000
    price_band_bps: int | None = 2_000
    reference_price_units_per_kwh: int | None = None
    max_resting_orders: int = 1_000_000

    def config_for(self, market_id: str) -> MarketConfig:
        market = parse_market_id(market_id)
        return MarketConfig(
            market_id=market_id,
            gate_closure_ms=market.delivery_start_ms - self.gate_closure_lead_ms,
            tick_size_units=self.tick_size_units,
            lot_size_wh=self.lot_size_wh,
            max_order_quantity_wh=self.max_order_quantity_wh,
            max_price_units_per_kwh=self.max_price_units_per_kwh,
            price_band_bps=self.price_band_bps,
            reference_price_units_per_kwh=self.reference_price_units_per_kwh,
            max_resting_orders=self.max_resting_orders,
        )


DEFAULT_RULES = MarketRules()


def default_market_config(market_id: str) -> MarketConfig:
    return DEFAULT_RULES.config_for(market_id)


# --- the book ---------------------------------------------------------------


class _Order:
    """Mutable resting-order state; only the book touches it."""

    __slots__ = ("account_id", "expires_at_ms", "live", "order_id", "price", "priority", "remaining", "side")

    def __init__(
        self,
        order_id: str,
        account_id: str,
        side: Side,
        price: int,
        remaining: int,
        priority: int,
        expires_at_ms: int | None,
    ) -> None:
        self.order_id = order_id
        self.account_id = account_id
        self.side = side
        self.price = price
        self.remaining = remaining
        self.priority = priority
        self.expires_at_ms = expires_at_ms
        self.live = True


class _Level:
    """FIFO of orders at one price.

    Cancelled/expired orders are deleted lazily (flagged dead, skipped and popped
    when they reach the front); ``dead`` counts them so the deque can be
    compacted. Live orders always have remaining > 0, so the level is empty
    exactly when ``quantity_wh == 0``.
    """

    __slots__ = ("dead", "orders", "quantity_wh")

    def __init__(self) -> None:
        self.orders: deque[_Order] = deque()
        self.quantity_wh = 0
        self.dead = 0


# NamedTuple.__new__ is a Python-level function; the two records built for nearly
# every order (OrderAccepted, Trade) go through tuple.__new__ directly to skip it.
_tuple_new = tuple.__new__

# An enum member lookup is a slow class-attribute lookup; the hot path uses these aliases.
_BUY = Side.BUY
_SELL = Side.SELL
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_IOC_PRICE_BAND = CancelReason.IOC_PRICE_BAND
_IOC_NO_LIQUIDITY = CancelReason.IOC_NO_LIQUIDITY
_USER_REQUESTED = CancelReason.USER_REQUESTED
_SELF_TRADE_PREVENTION = CancelReason.SELF_TRADE_PREVENTION
_ORDER_EXPIRY = ExpiryReason.ORDER_EXPIRY
_GATE_CLOSURE = ExpiryReason.GATE_CLOSURE
_SUBMIT = CommandKind.SUBMIT
_CANCEL = CommandKind.CANCEL
_AMEND = CommandKind.AMEND


class OrderBook:
    """One market's book. Every operation returns the events it caused, in order.

    Each side is ``dict price -> _Level`` plus a sorted list of *keys* whose
    last element is the best level: bids use key = price, asks key = -price.
    So the best level is always ``keys[-1]``, and a level emptied by matching
    is popped from the end in O(1).
    """

    __slots__ = (
        "_ask_keys",
        "_asks",
        "_band_active",
        "_band_bps",
        "_bid_keys",
        "_bids",
        "_closed",
        "_expiry_heap",
        "_gate_ms",
        "_last_price",
        "_lot",
        "_max_quantity",
        "_max_resting",
        "_now_ms",
        "_open_count",
        "_orders",
        "_price_high",
        "_price_low",
        "_priority",
        "_seq",
        "_tick",
        "config",
        "market_id",
    )

    def __init__(self, config: MarketConfig) -> None:
        self.config = config
        self.market_id = config.market_id
        self._bids: dict[int, _Level] = {}
        self._bid_keys: list[int] = []
        self._asks: dict[int, _Level] = {}
        self._ask_keys: list[int] = []
        # Every order id ever submitted here -> its live resting order, or None once
        # it is gone (rejected, filled, cancelled, expired, IOC remainder). One map
        # serves both duplicate detection and lookup: one hash probe per submit.
        self._orders: dict[str, _Order | None] = {}
        self._open_count = 0
        self._seq = 0
        self._priority = 0  # time priority: unique, increasing each time an order (re)joins the book
        self._now_ms = 0
        self._last_price: int | None = None
        # (expires_at_ms, priority, order); priority is unique so orders never compare.
        self._expiry_heap: list[tuple[int, int, _Order]] = []
        self._closed = False
        self._band_bps = config.price_band_bps
        self._gate_ms = config.gate_closure_ms
        self._tick = config.tick_size_units
        self._lot = config.lot_size_wh
        self._max_quantity = config.max_order_quantity_wh
        self._max_resting = config.max_resting_orders
        # Inclusive limit-price bounds: tick range intersected with the band.
        self._price_low = 1
        self._price_high = config.max_price_units_per_kwh
        self._band_active = False
        self._set_reference(config.reference_price_units_per_kwh)

    # -- queries --

    @property
    def last_price_units_per_kwh(self) -> int | None:
        return self._last_price

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def last_seq(self) -> int:
        return self._seq

    def best_bid(self) -> int | None:
        keys = self._bid_keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self._ask_keys
        return -keys[-1] if keys else None

    def top_of_book(self) -> TopOfBook:
        """Best prices and the open quantity at each (all orders at that price); O(1): asked after every command."""
        bid_keys, ask_keys = self._bid_keys, self._ask_keys
        bid = bid_keys[-1] if bid_keys else None
        ask = -ask_keys[-1] if ask_keys else None
        return (
            bid,
            None if bid is None else self._bids[bid].quantity_wh,
            ask,
            None if ask is None else self._asks[ask].quantity_wh,
        )

    def open_order_count(self) -> int:
        return self._open_count

    def order(self, order_id: str) -> RestingOrder | None:
        o = self._orders.get(order_id)
        return None if o is None else _view(o)

    def depth(self, side: Side, levels: int = 10) -> list[tuple[int, int]]:
        """Best ``levels`` price levels of one side as (price, open quantity_wh)."""
        assert levels > 0
        book, keys = (self._bids, self._bid_keys) if side is _BUY else (self._asks, self._ask_keys)
        out: list[tuple[int, int]] = []
        for key in reversed(keys[-levels:]):
            price = key if side is _BUY else -key
            out.append((price, book[price].quantity_wh))
        return out

    def resting_orders(self, side: Side) -> list[RestingOrder]:
        """All live orders of one side in matching order (price, then time)."""
        book, keys = (self._bids, self._bid_keys) if side is _BUY else (self._asks, self._ask_keys)
        out: list[RestingOrder] = []
        for key in reversed(keys):
            price = key if side is _BUY else -key
            out.extend(_view(o) for o in book[price].orders if o.live)
        return out

    def reference_price(self) -> int | None:
        last = self._last_price
        return last if last is not None else self.config.reference_price_units_per_kwh

    # -- commands --

    def submit(self, cmd: SubmitOrder) -> list[BookEvent]:
        order_id, market_id, account_id, side, order_type, price, quantity, at_ms, expires = cmd
        events: list[BookEvent] = []
        now = self._now_ms
        if at_ms > now:
            self._now_ms = now = at_ms
        heap = self._expiry_heap
        if (heap and heap[0][0] <= now) or (now >= self._gate_ms and not self._closed):
            self._advance(now, events)
        orders = self._orders
        # Fast path: one chained test for the common valid LIMIT order; anything
        # else takes the slow path, which names the exact reason.
        if (
            order_type is _LIMIT
            and price is not None
            and self._price_low <= price <= self._price_high
            and not price % self._tick
            and 0 < quantity <= self._max_quantity
            and not quantity % self._lot
            and order_id not in orders
            and 0 < len(order_id) <= MAX_ID_LENGTH
            and 0 < len(account_id) <= MAX_ID_LENGTH
            and market_id == self.market_id
            and not self._closed
            and (expires is None or expires > now)
            and self._open_count < self._max_resting
        ):
            pass
        else:
            rejection = self._check_submit(cmd, now)
            if order_id and len(order_id) <= MAX_ID_LENGTH and order_id not in orders:
                orders[order_id] = None  # spent, whatever the outcome
            if rejection is not None:
                self._reject(events, now, order_id, account_id, _SUBMIT, rejection)
                return events
            assert order_type is _MARKET, "fast path and _check_submit disagree"
            self._submit_market(order_id, account_id, side, quantity, now, events)
            return events

        self._seq = seq = self._seq + 1
        events.append(
            _tuple_new(
                OrderAccepted, (market_id, seq, now, order_id, account_id, side, order_type, price, quantity, expires)
            )
        )
        if side is _BUY:
            keys = self._ask_keys
            crosses = keys and -keys[-1] <= price
            min_key = -price
        else:
            keys = self._bid_keys
            crosses = keys and keys[-1] >= price
            min_key = price
        remaining = self._match(order_id, account_id, side, min_key, quantity, now, events) if crosses else quantity
        if not remaining:
            orders[order_id] = None
            return events
        self._rest(order_id, account_id, side, price, remaining, expires)
        return events

    def _submit_market(
        self, order_id: str, account_id: str, side: Side, quantity: int, now: int, events: list[BookEvent]
    ) -> None:
        self._seq += 1
        events.append(
            OrderAccepted(self.market_id, self._seq, now, order_id, account_id, side, _MARKET, None, quantity, None)
        )
        # Market orders only execute inside the band (inclusive), never rest.
        min_key: int | None = None
        if self._band_active:
            min_key = -self._price_high if side is _BUY else self._price_low
        remaining = self._match(order_id, account_id, side, min_key, quantity, now, events)
        if remaining:
            opposite = self._ask_keys if side is _BUY else self._bid_keys
            reason = _IOC_PRICE_BAND if opposite else _IOC_NO_LIQUIDITY
            self._seq += 1
            events.append(
                OrderCancelled(self.market_id, self._seq, now, order_id, account_id, side, None, remaining, reason)
            )

    def cancel(self, cmd: CancelOrder) -> list[BookEvent]:
        events: list[BookEvent] = []
        now = self._advance(cmd.requested_at_ms, events)
        rejection = self._check_owned(cmd.market_id, cmd.order_id, cmd.account_id)
        if rejection is not None:
            self._reject(events, now, cmd.order_id, cmd.account_id, _CANCEL, rejection)
            return events
        order = self._orders[cmd.order_id]
        assert order is not None
        self._remove(order)
        self._seq += 1
        events.append(_cancelled(self.market_id, self._seq, now, order, _USER_REQUESTED))
        return events

    def amend(self, cmd: AmendOrder) -> list[BookEvent]:
        events: list[BookEvent] = []
        now = self._advance(cmd.requested_at_ms, events)
        rejection = self._check_owned(cmd.market_id, cmd.order_id, cmd.account_id)
        if rejection is None:
            order = self._orders[cmd.order_id]
            assert order is not None
            rejection = self._check_amend(cmd, order)
        if rejection is not None:
            self._reject(events, now, cmd.order_id, cmd.account_id, _AMEND, rejection)
            return events

        order = self._orders[cmd.order_id]
        assert order is not None
        old_price, old_quantity = order.price, order.remaining
        new_price = old_price if cmd.new_price_units_per_kwh is None else cmd.new_price_units_per_kwh
        new_quantity = old_quantity if cmd.new_quantity_wh is None else cmd.new_quantity_wh
        keep_priority = new_price == old_price and new_quantity < old_quantity
        self._seq += 1
        events.append(
            OrderAmended(
                self.market_id,
                self._seq,
                now,
                order.order_id,
                order.account_id,
                order.side,
                old_price,
                new_price,
                old_quantity,
                new_quantity,
                keep_priority,
            )
        )
        if keep_priority:
            # Shrinking in place: same deque slot, same priority.
            book = self._bids if order.side is _BUY else self._asks
            book[old_price].quantity_wh -= old_quantity - new_quantity
            order.remaining = new_quantity
            return events

        # Loses priority: leave the book, then arrive again as a fresh aggressor.
        self._remove(order)
        side = order.side
        min_key = -new_price if side is _BUY else new_price
        remaining = self._match(order.order_id, order.account_id, side, min_key, new_quantity, now, events)
        if remaining:
            self._rest(order.order_id, order.account_id, side, new_price, remaining, order.expires_at_ms)
        return events

    def expire(self, now_ms: int) -> list[BookEvent]:
        """Advance logical time: expire due good-till-time orders, close the gate if due."""
        events: list[BookEvent] = []
        self._advance(now_ms, events)
        return events

    def close_gate(self, now_ms: int) -> list[BookEvent]:
        """Close the market now (even before its scheduled gate) and expire everything resting."""
        events: list[BookEvent] = []
        now = self._advance(now_ms, events)
        if not self._closed:
            self._close(now, events)
        return events

    # -- internals --

    def _set_reference(self, ref: int | None) -> None:
        """Recompute the inclusive band bounds; called whenever the reference price moves."""
        band = self._band_bps
        low, high = 1, self.config.max_price_units_per_kwh
        self._band_active = band is not None and ref is not None
        if band is not None and ref is not None:
            # price*10_000 >= ref*(10_000-band)  <=>  price >= ceil(ref*(10_000-band)/10_000)
            low = max(low, -(-ref * (BPS_DENOMINATOR - band) // BPS_DENOMINATOR))
            high = min(high, ref * (BPS_DENOMINATOR + band) // BPS_DENOMINATOR)
        self._price_low, self._price_high = low, high

    def _advance(self, at_ms: int, events: list[BookEvent]) -> int:
        now = self._now_ms
        if at_ms > now:
            self._now_ms = now = at_ms
        heap = self._expiry_heap
        if heap and heap[0][0] <= now:
            self._expire_due(now, events)
        if now >= self._gate_ms and not self._closed:
            self._close(self._gate_ms, events)
        return now

    def _expire_due(self, now: int, events: list[BookEvent]) -> None:
        heap = self._expiry_heap
        gate = self._gate_ms
        # Expiries at/after the gate are reported as gate closure instead.
        while heap and heap[0][0] <= now and heap[0][0] < gate:
            expires_at, _, order = heappop(heap)
            if not order.live:
                continue  # filled, cancelled or re-queued by amend since
            self._remove(order)
            self._seq += 1
            events.append(_expired(self.market_id, self._seq, expires_at, order, _ORDER_EXPIRY))

    def _close(self, at_ms: int, events: list[BookEvent]) -> None:
        self._closed = True
        # Priority order makes the Expired events deterministic and meaningful.
        for order in sorted(self._live_orders(), key=lambda o: o.priority):
            self._seq += 1
            events.append(_expired(self.market_id, self._seq, at_ms, order, _GATE_CLOSURE))
            order.live = False
            self._orders[order.order_id] = None
        self._open_count = 0
        self._bids.clear()
        self._bid_keys.clear()
        self._asks.clear()
        self._ask_keys.clear()
        self._expiry_heap.clear()

    def _reject(
        self,
        events: list[BookEvent],
        now: int,
        order_id: str,
        account_id: str,
        command: CommandKind,
        rejection: tuple[RejectCode, str],
    ) -> None:
        self._seq += 1
        events.append(OrderRejected(self.market_id, self._seq, now, order_id, account_id, command, *rejection))

    def _check_submit(self, cmd: SubmitOrder, now: int) -> tuple[RejectCode, str] | None:
        order_id = cmd.order_id
        if not order_id or len(order_id) > MAX_ID_LENGTH:
            return RejectCode.INVALID_ORDER_ID, f"order id must be 1..{MAX_ID_LENGTH} characters"
        if order_id in self._orders:
            return RejectCode.DUPLICATE_ORDER_ID, f"order id {order_id!r} was already submitted to this market"
        if cmd.market_id != self.market_id:
            return RejectCode.WRONG_MARKET, f"order for {cmd.market_id!r} sent to book {self.market_id!r}"
        if not cmd.account_id or len(cmd.account_id) > MAX_ID_LENGTH:
            return RejectCode.INVALID_ACCOUNT, f"account id must be 1..{MAX_ID_LENGTH} characters"
        if self._closed:
            return RejectCode.GATE_CLOSED, f"gate closed at {self._gate_ms} ms"
        config = self.config
        rejection = self._check_quantity(cmd.quantity_wh)
        if rejection is not None:
            return rejection
        if cmd.order_type is _LIMIT:
            price = cmd.price_units_per_kwh
            if price is None:
                return RejectCode.INVALID_PRICE, "limit order needs a price"
            rejection = self._check_price(price)
            if rejection is not None:
                return rejection
        else:
            assert cmd.order_type is _MARKET
            if cmd.price_units_per_kwh is not None:
                return RejectCode.MARKET_ORDER_WITH_PRICE, "market orders take no price"
        expires = cmd.expires_at_ms
        if expires is not None and expires <= now:
            return RejectCode.INVALID_EXPIRY, f"expires_at_ms {expires} is not after now {now}"
        if self._open_count >= config.max_resting_orders:
            return RejectCode.BOOK_FULL, f"book holds its maximum of {config.max_resting_orders} orders"
        return None

    def _check_price(self, price: int) -> tuple[RejectCode, str] | None:
        config = self.config
        if price <= 0 or price > config.max_price_units_per_kwh:
            return RejectCode.INVALID_PRICE, f"price must be 1..{config.max_price_units_per_kwh} units/kWh"
        if price % config.tick_size_units:
            return RejectCode.TICK_SIZE, f"price {price} is not a multiple of tick {config.tick_size_units}"
        band = self._band_bps
        if band is not None:
            ref = self.reference_price()
            if ref is not None:
                scaled = price * BPS_DENOMINATOR
                if scaled < ref * (BPS_DENOMINATOR - band) or scaled > ref * (BPS_DENOMINATOR + band):
                    return (
                        RejectCode.PRICE_OUT_OF_BAND,
                        f"price {price} outside +-{band} bps of reference {ref}",
                    )
        return None

    def _check_owned(self, market_id: str, order_id: str, account_id: str) -> tuple[RejectCode, str] | None:
        if market_id != self.market_id:
            return RejectCode.WRONG_MARKET, f"request for {market_id!r} sent to book {self.market_id!r}"
        if self._closed:
            return RejectCode.GATE_CLOSED, f"gate closed at {self._gate_ms} ms"
        order = self._orders.get(order_id)
        if order is None:
            return RejectCode.UNKNOWN_ORDER, f"no open order {order_id!r} (never rested, filled, cancelled or expired)"
        if order.account_id != account_id:
            return RejectCode.NOT_OWNER, f"order {order_id!r} belongs to another account"
        return None

    def _check_quantity(self, quantity: int) -> tuple[RejectCode, str] | None:
        config = self.config
        if quantity <= 0 or quantity > config.max_order_quantity_wh:
            return RejectCode.INVALID_QUANTITY, f"quantity must be 1..{config.max_order_quantity_wh} Wh"
        if quantity % config.lot_size_wh:
            return RejectCode.LOT_SIZE, f"quantity {quantity} Wh is not a multiple of lot {config.lot_size_wh} Wh"
        return None

    def _check_amend(self, cmd: AmendOrder, order: _Order) -> tuple[RejectCode, str] | None:
        quantity = cmd.new_quantity_wh
        if quantity is not None:
            rejection = self._check_quantity(quantity)
            if rejection is not None:
                return rejection
        price = cmd.new_price_units_per_kwh
        if price is not None:
            rejection = self._check_price(price)
            if rejection is not None:
                return rejection
        if (price is None or price == order.price) and (quantity is None or quantity == order.remaining):
            return RejectCode.NO_CHANGE, "amend changes neither price nor quantity"
        return None

    def _match(
        self,
        order_id: str,
        account_id: str,
        side: Side,
        min_key: int | None,
        quantity: int,
        now: int,
        events: list[BookEvent],
    ) -> int:
        """Match an aggressor against the opposite side; return its unfilled quantity.

        ``min_key`` is the worst opposite key the aggressor accepts (None: any);
        opposite keys are ``-price`` for asks and ``price`` for bids.
        """
        if side is _BUY:
            book, keys, sign = self._asks, self._ask_keys, -1
        else:
            book, keys, sign = self._bids, self._bid_keys, 1
        remaining = quantity
        trade_price = 0
        while remaining and keys:
            key = keys[-1]
            if min_key is not None and key < min_key:
                break
            price = key * sign
            level = book[price]
            level_remaining = self._match_level(level, price, order_id, account_id, side, remaining, now, events)
            if level_remaining < remaining:  # traded here: self-trade cancels fill nothing
                trade_price = price
            remaining = level_remaining
            if not level.quantity_wh:
                del book[price]
                keys.pop()
        if trade_price and trade_price != self._last_price:
            self._last_price = trade_price
            self._set_reference(trade_price)
        assert 0 <= remaining <= quantity
        return remaining

    def _match_level(
        self,
        level: _Level,
        price: int,
        order_id: str,
        account_id: str,
        side: Side,
        quantity: int,
        now: int,
        events: list[BookEvent],
    ) -> int:
        """Fill an aggressor from one price level in time priority; return its unfilled quantity."""
        remaining = quantity
        orders = self._orders
        market_id = self.market_id
        seq = self._seq
        closed_orders = 0
        queue = level.orders
        while queue:
            resting = queue[0]
            if not resting.live:
                queue.popleft()
                level.dead -= 1
                continue
            if resting.account_id == account_id:
                seq += 1
                self._cancel_self_trade(level, resting, seq, now, events)
                closed_orders += 1
                continue
            resting_remaining = resting.remaining
            fill = resting_remaining if resting_remaining < remaining else remaining
            seq += 1
            notional_scaled = price * fill
            assert notional_scaled % WH_PER_KWH == 0
            remaining -= fill
            resting_left = resting_remaining - fill
            if side is _BUY:
                buy_id, sell_id, buyer, seller = order_id, resting.order_id, account_id, resting.account_id
                buy_left, sell_left = remaining, resting_left
            else:
                buy_id, sell_id, buyer, seller = resting.order_id, order_id, resting.account_id, account_id
                buy_left, sell_left = resting_left, remaining
            trade_id, notional = f"{market_id}:{seq}", notional_scaled // WH_PER_KWH
            fields = (trade_id, market_id, seq, now, buy_id, sell_id, buyer, seller, price, fill, notional, side,
                      buy_left, sell_left)  # fmt: skip
            events.append(_tuple_new(Trade, fields))
            level.quantity_wh -= fill
            if not resting_left:
                queue.popleft()
                resting.remaining = 0
                resting.live = False
                orders[resting.order_id] = None
                closed_orders += 1
            else:
                resting.remaining = resting_left
            if not remaining:
                break
        self._seq = seq
        self._open_count -= closed_orders
        return remaining

    def _cancel_self_trade(self, level: _Level, resting: _Order, seq: int, now: int, events: list[BookEvent]) -> None:
        """Cancel-resting self-trade prevention: the front order of ``level`` leaves the book.

        The caller counts it out of the open orders and owns ``seq``.
        """
        level.orders.popleft()
        resting.live = False
        self._orders[resting.order_id] = None
        level.quantity_wh -= resting.remaining
        events.append(_cancelled(self.market_id, seq, now, resting, _SELF_TRADE_PREVENTION))

    def _rest(
        self, order_id: str, account_id: str, side: Side, price: int, quantity: int, expires_at_ms: int | None
    ) -> None:
        assert quantity > 0 and self._orders.get(order_id) is None
        self._priority += 1
        order = _Order(order_id, account_id, side, price, quantity, self._priority, expires_at_ms)
        if side is _BUY:
            book, keys, key = self._bids, self._bid_keys, price
        else:
            book, keys, key = self._asks, self._ask_keys, -price
        level = book.get(price)
        if level is None:
            level = book[price] = _Level()
            insort(keys, key)
        level.orders.append(order)
        level.quantity_wh += quantity
        self._orders[order_id] = order
        self._open_count += 1
        if expires_at_ms is not None:
            heappush(self._expiry_heap, (expires_at_ms, order.priority, order))

    def _remove(self, order: _Order) -> None:
        assert order.live
        order.live = False
        self._orders[order.order_id] = None
        self._open_count -= 1
        price = order.price
        if order.side is _BUY:
            book, keys, key = self._bids, self._bid_keys, price
        else:
            book, keys, key = self._asks, self._ask_keys, -price
        level = book[price]
        level.quantity_wh -= order.remaining
        assert level.quantity_wh >= 0
        if not level.quantity_wh:
            del book[price]
            index = bisect_left(keys, key)
            assert keys[index] == key
            del keys[index]
        else:
            level.dead += 1
            if level.dead > _COMPACT_SLACK and 2 * level.dead > len(level.orders):
                level.orders = deque(o for o in level.orders if o.live)
                level.dead = 0

    def _live_orders(self) -> Iterator[_Order]:
        for book in (self._bids, self._asks):
            for level in book.values():
                yield from (o for o in level.orders if o.live)

    def check_invariants(self) -> None:
        """O(n) consistency check of the whole book, for tests and debugging."""
        seen: set[str] = set()
        for book, keys, sign in ((self._bids, self._bid_keys, 1), (self._asks, self._ask_keys, -1)):
            assert keys == sorted(keys) and len(keys) == len(set(keys)) == len(book)
            for key in keys:
                price = key * sign
                level = book[price]
                live = [o for o in level.orders if o.live]
                assert live and len(level.orders) - len(live) == level.dead
                assert sum(o.remaining for o in live) == level.quantity_wh
                priorities = [o.priority for o in live]
                assert priorities == sorted(priorities)
                for o in live:
                    assert o.price == price and o.remaining > 0
                    assert self._orders[o.order_id] is o
                    seen.add(o.order_id)
        assert seen == {order_id for order_id, o in self._orders.items() if o is not None}
        assert len(seen) == self._open_count
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask, "book must never stay crossed"
        if self._closed:
            assert self._open_count == 0 and not self._expiry_heap


def _view(o: _Order) -> RestingOrder:
    return RestingOrder(o.order_id, o.account_id, o.side, o.price, o.remaining, o.priority, o.expires_at_ms)


def _cancelled(market_id: str, seq: int, at_ms: int, o: _Order, reason: CancelReason) -> OrderCancelled:
    """A resting order's cancellation, for its whole open quantity."""
    return OrderCancelled(market_id, seq, at_ms, o.order_id, o.account_id, o.side, o.price, o.remaining, reason)


def _expired(market_id: str, seq: int, at_ms: int, o: _Order, reason: ExpiryReason) -> OrderExpired:
    """A resting order's expiry, for its whole open quantity."""
    return OrderExpired(market_id, seq, at_ms, o.order_id, o.account_id, o.side, o.price, o.remaining, reason)


# --- routing ----------------------------------------------------------------


def command_time_ms(cmd: Command) -> int:
    return cmd.submitted_at_ms if isinstance(cmd, SubmitOrder) else cmd.requested_at_ms


_COMMAND_KIND: dict[type, CommandKind] = {
    SubmitOrder: CommandKind.SUBMIT,
    CancelOrder: CommandKind.CANCEL,
    AmendOrder: CommandKind.AMEND,
}


class OrderBookEngine:
    """Routes commands to per-market books, creating each book from config on first use."""

    __slots__ = ("_books", "_config_for", "_max_markets")

    def __init__(
        self,
        config_for: Callable[[str], MarketConfig] = default_market_config,
        *,
        max_markets: int = 100_000,
    ) -> None:
        assert max_markets > 0
        self._books: dict[str, OrderBook] = {}
        self._config_for = config_for
        self._max_markets = max_markets

    def handle(self, cmd: Command) -> list[BookEvent]:
        book = self._books.get(cmd.market_id)
        if book is None:
            opened = self._open(cmd)
            if isinstance(opened, OrderRejected):
                return [opened]
            book = opened
        if type(cmd) is SubmitOrder:
            return book.submit(cmd)
        if type(cmd) is CancelOrder:
            return book.cancel(cmd)
        assert type(cmd) is AmendOrder
        return book.amend(cmd)

    def _open(self, cmd: Command) -> OrderBook | OrderRejected:
        def reject(code: RejectCode, reason: str) -> OrderRejected:
            # seq 0: no book exists, so no market sequence is consumed.
            kind = _COMMAND_KIND[type(cmd)]
            at_ms = command_time_ms(cmd)
            return OrderRejected(cmd.market_id, 0, at_ms, cmd.order_id, cmd.account_id, kind, code, reason)

        if len(self._books) >= self._max_markets:
            return reject(RejectCode.TOO_MANY_MARKETS, f"engine holds its maximum of {self._max_markets} markets")
        try:
            config = self._config_for(cmd.market_id)
        except ValueError as error:
            return reject(RejectCode.UNKNOWN_MARKET, str(error))
        assert config.market_id == cmd.market_id
        book = self._books[cmd.market_id] = OrderBook(config)
        return book

    def expire(self, now_ms: int) -> list[BookEvent]:
        """Advance every book's clock (good-till-time expiry, gate closure), in market-id order."""
        events: list[BookEvent] = []
        for market_id in sorted(self._books):
            events.extend(self._books[market_id].expire(now_ms))
        return events

    close_gates = expire

    def book(self, market_id: str) -> OrderBook | None:
        return self._books.get(market_id)

    def markets(self) -> Iterator[str]:
        return iter(sorted(self._books))

    def retire_market(self, market_id: str) -> None:
        """Forget a closed market (after its delivery interval settled) to bound memory."""
        book = self._books.get(market_id)
        assert book is None or book.is_closed, "only closed markets can be retired"
        self._books.pop(market_id, None)
