"""Per-market price discovery: best bid/ask, last trade, exact VWAP.

``PriceDiscovery.observe(market_id, events, top_of_book, at_ms)`` folds one
operation's book events (only ``Trade`` matters here) plus the book's top of
book after that operation (``OrderBook.top_of_book()``: best bid and the open
quantity at it, best ask and the open quantity at it) into the market's running
state, and returns a ``PriceUpdate`` only when something a subscriber sees
changed (a best price, the size at a best price, last price/quantity or
VWAP/volume); otherwise ``None``.

VWAP is exact: the state keeps integer sums ``Σ price*qty`` (units/kWh * Wh) and
``Σ qty`` (Wh). ``PriceUpdate.vwap_units_per_kwh`` is that ratio rounded
half-to-even to an integer unit/kWh (banker's rounding, the same rule as
``domain.money.round_to_minor``); ``MarketPriceState.vwap_exact()`` returns the
exact ``Fraction`` for anyone who needs it.

State is plain data (``to_dict``/``from_dict``) so the shell can persist it.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Any, NamedTuple

from domain.money import round_half_even
from domain.order_book import BookEvent, TopOfBook, Trade

WH_PER_KWH = 1_000
MAX_MARKETS = 100_000


class PriceUpdate(NamedTuple):
    market_id: str
    update_seq: int  # per market, +1 per emitted update
    at_ms: int
    best_bid_units_per_kwh: int | None
    best_bid_quantity_wh: int | None  # open quantity at the best bid, all orders at that price
    best_ask_units_per_kwh: int | None
    best_ask_quantity_wh: int | None
    last_price_units_per_kwh: int | None
    last_quantity_wh: int | None
    vwap_units_per_kwh: int | None  # Σ(price*qty)/Σqty, rounded half-to-even
    volume_wh: int
    notional_units: int  # Σ price*qty/1000: K-AUS base units traded, exact
    trade_count: int


class MarketPriceState:
    """Running figures for one market. Mutable; only PriceDiscovery changes it."""

    __slots__ = (
        "best_ask",
        "best_ask_quantity_wh",
        "best_bid",
        "best_bid_quantity_wh",
        "last_price",
        "last_quantity_wh",
        "market_id",
        "price_quantity_sum",
        "trade_count",
        "update_seq",
        "volume_wh",
    )

    def __init__(self, market_id: str) -> None:
        self.market_id = market_id
        self.best_bid: int | None = None
        self.best_ask: int | None = None
        self.best_bid_quantity_wh: int | None = None
        self.best_ask_quantity_wh: int | None = None
        self.last_price: int | None = None
        self.last_quantity_wh: int | None = None
        self.price_quantity_sum = 0  # Σ price_units_per_kwh * quantity_wh
        self.volume_wh = 0
        self.trade_count = 0
        self.update_seq = 0

    def vwap_exact(self) -> Fraction | None:
        return None if not self.volume_wh else Fraction(self.price_quantity_sum, self.volume_wh)

    def vwap_units_per_kwh(self) -> int | None:
        return None if not self.volume_wh else round_half_even(self.price_quantity_sum, self.volume_wh)

    def notional_units(self) -> int:
        # Every trade's price*qty is a multiple of 1000 (tick*lot rule), so the sum is too.
        assert self.price_quantity_sum % WH_PER_KWH == 0
        return self.price_quantity_sum // WH_PER_KWH

    def check_invariants(self) -> None:
        assert self.volume_wh >= 0 and self.price_quantity_sum >= 0 and self.trade_count >= 0
        assert (self.volume_wh == 0) == (self.trade_count == 0) == (self.last_price is None)
        assert self.price_quantity_sum % WH_PER_KWH == 0
        # A best price has a positive size at it; an empty side has neither.
        for price, quantity in ((self.best_bid, self.best_bid_quantity_wh), (self.best_ask, self.best_ask_quantity_wh)):
            assert (price is None and quantity is None) or (price is not None and quantity is not None and quantity > 0)


class PriceDiscovery:
    __slots__ = ("_markets",)

    def __init__(self) -> None:
        self._markets: dict[str, MarketPriceState] = {}

    def state(self, market_id: str) -> MarketPriceState | None:
        return self._markets.get(market_id)

    def observe(
        self,
        market_id: str,
        events: Iterable[BookEvent],
        top_of_book: TopOfBook,
        at_ms: int,
    ) -> PriceUpdate | None:
        state = self._markets.get(market_id)
        if state is None:
            assert len(self._markets) < MAX_MARKETS
            state = self._markets[market_id] = MarketPriceState(market_id)
        traded = False
        for event in events:
            if type(event) is Trade:
                assert event.market_id == market_id
                price, quantity = event.price_units_per_kwh, event.quantity_wh
                assert price > 0 and quantity > 0
                state.price_quantity_sum += price * quantity
                state.volume_wh += quantity
                state.trade_count += 1
                state.last_price, state.last_quantity_wh = price, quantity
                traded = True
        bid, bid_quantity, ask, ask_quantity = top_of_book
        assert bid is None or ask is None or bid < ask, "top of book must not be crossed"
        assert (bid is None) is (bid_quantity is None) and (ask is None) is (ask_quantity is None)
        if (
            not traded
            and bid == state.best_bid
            and ask == state.best_ask
            and bid_quantity == state.best_bid_quantity_wh
            and ask_quantity == state.best_ask_quantity_wh
        ):
            return None
        state.best_bid, state.best_ask = bid, ask
        state.best_bid_quantity_wh, state.best_ask_quantity_wh = bid_quantity, ask_quantity
        state.update_seq += 1
        state.check_invariants()
        return PriceUpdate(
            market_id,
            state.update_seq,
            at_ms,
            bid,
            bid_quantity,
            ask,
            ask_quantity,
            state.last_price,
            state.last_quantity_wh,
            state.vwap_units_per_kwh(),
            state.volume_wh,
            state.notional_units(),
            state.trade_count,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "nexus-x.price-discovery/2",
            "markets": [
                {
                    "market_id": s.market_id,
                    "best_bid": s.best_bid,
                    "best_ask": s.best_ask,
                    "best_bid_quantity_wh": s.best_bid_quantity_wh,
                    "best_ask_quantity_wh": s.best_ask_quantity_wh,
                    "last_price": s.last_price,
                    "last_quantity_wh": s.last_quantity_wh,
                    "price_quantity_sum": s.price_quantity_sum,
                    "volume_wh": s.volume_wh,
                    "trade_count": s.trade_count,
                    "update_seq": s.update_seq,
                }
                for _, s in sorted(self._markets.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PriceDiscovery:
        assert data["format"] == "nexus-x.price-discovery/2"
        discovery = cls()
        for row in data["markets"]:
            state = MarketPriceState(row["market_id"])
            state.best_bid, state.best_ask = row["best_bid"], row["best_ask"]
            state.best_bid_quantity_wh = row["best_bid_quantity_wh"]
            state.best_ask_quantity_wh = row["best_ask_quantity_wh"]
            state.last_price, state.last_quantity_wh = row["last_price"], row["last_quantity_wh"]
            state.price_quantity_sum = row["price_quantity_sum"]
            state.volume_wh, state.trade_count = row["volume_wh"], row["trade_count"]
            state.update_seq = row["update_seq"]
            state.check_invariants()
            discovery._markets[state.market_id] = state
        return discovery
