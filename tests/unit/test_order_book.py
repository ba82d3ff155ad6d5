"""Order book: price-time priority, IOC, amend rules, STP, bands, tick/lot, gate closure, determinism."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.order_flow import demo_accounts, demo_markets, generate_orders
from domain.order_book import (
    AmendOrder,
    BookEvent,
    CancelOrder,
    CancelReason,
    ExpiryReason,
    MarketConfig,
    MarketRules,
    OrderAccepted,
    OrderAmended,
    OrderBook,
    OrderBookEngine,
    OrderCancelled,
    OrderExpired,
    OrderRejected,
    OrderType,
    RejectCode,
    Side,
    SubmitOrder,
    Trade,
    format_market_id,
    parse_market_id,
)

M = "2026-11-24T10:00Z/KR-SEOUL"
DELIVERY_MS = parse_market_id(M).delivery_start_ms
GATE_MS = DELIVERY_MS - 15 * 60 * 1000
T0 = DELIVERY_MS - 2 * 60 * 60 * 1000
BUY, SELL = Side.BUY, Side.SELL


def book(**overrides: object) -> OrderBook:
    settings_: dict[str, object] = {"market_id": M, "gate_closure_ms": GATE_MS, "price_band_bps": None}
    settings_.update(overrides)
    return OrderBook(MarketConfig(**settings_))  # type: ignore[arg-type]


def limit(
    order_id: str, account: str, side: Side, price: int, qty: int, t: int = T0, expires: int | None = None
) -> SubmitOrder:
    return SubmitOrder(order_id, M, account, side, OrderType.LIMIT, price, qty, t, expires)


def market(order_id: str, account: str, side: Side, qty: int, t: int = T0) -> SubmitOrder:
    return SubmitOrder(order_id, M, account, side, OrderType.MARKET, None, qty, t)


def of(events: list[BookEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if type(e) is kind]


def rejection(events: list[BookEvent]) -> RejectCode:
    rejected = of(events, OrderRejected)
    assert len(rejected) == 1, events
    return rejected[0].code


# --- matching ---------------------------------------------------------------


def test_price_then_time_priority_and_resting_price() -> None:
    b = book()
    b.submit(limit("a", "s1", SELL, 100_000, 100))
    b.submit(limit("b", "s2", SELL, 100_000, 100))
    b.submit(limit("c", "s3", SELL, 99_000, 100))
    events = b.submit(limit("x", "buyer", BUY, 101_000, 300, T0 + 1))
    trades = of(events, Trade)
    assert [t.sell_order_id for t in trades] == ["c", "a", "b"]  # best price first, then time
    assert [t.price_units_per_kwh for t in trades] == [99_000, 100_000, 100_000]  # resting price
    assert all(t.aggressor_side is BUY and t.buy_order_id == "x" and t.buyer_account_id == "buyer" for t in trades)
    assert trades[0].seller_account_id == "s3"
    assert [(t.buy_remaining_wh, t.sell_remaining_wh) for t in trades] == [(200, 0), (100, 0), (0, 0)]
    assert type(events[0]) is OrderAccepted
    for t in trades:
        assert t.trade_id == f"{M}:{t.seq}"
        assert t.notional_units * 1000 == t.price_units_per_kwh * t.quantity_wh
        assert t.at_ms == T0 + 1
    assert b.best_ask() is None and b.best_bid() is None and b.open_order_count() == 0
    b.check_invariants()


def test_partial_fills_leave_remainders_resting() -> None:
    b = book()
    b.submit(limit("s", "seller", SELL, 150_000, 1_000))
    trades = of(b.submit(limit("b1", "buyer", BUY, 150_000, 300)), Trade)
    assert [(t.quantity_wh, t.notional_units) for t in trades] == [(300, 45_000)]
    assert (trades[0].buy_remaining_wh, trades[0].sell_remaining_wh) == (0, 700)  # buy done, sell partly
    resting = b.order("s")
    assert resting is not None and resting.remaining_quantity_wh == 700
    assert b.order("b1") is None
    events = b.submit(limit("b2", "buyer", BUY, 151_000, 1_000))
    assert [(t.quantity_wh, t.buy_remaining_wh, t.sell_remaining_wh) for t in of(events, Trade)] == [(700, 300, 0)]
    assert b.order("s") is None
    rest = b.order("b2")
    assert rest is not None and rest.remaining_quantity_wh == 300 and rest.price_units_per_kwh == 151_000
    assert b.best_bid() == 151_000 and b.depth(BUY) == [(151_000, 300)]
    b.check_invariants()


def test_top_of_book_gives_the_open_quantity_at_each_best_price() -> None:
    b = book()
    assert b.top_of_book() == (None, None, None, None)
    b.submit(limit("s1", "a", SELL, 101_000, 300))
    b.submit(limit("s2", "b", SELL, 101_000, 200))  # joins the best ask
    b.submit(limit("s3", "c", SELL, 102_000, 900))  # behind it: not counted
    b.submit(limit("b1", "d", BUY, 100_000, 400))
    assert b.top_of_book() == (100_000, 400, 101_000, 500)
    b.submit(limit("x", "e", BUY, 101_000, 100))  # partial fill of s1
    assert b.top_of_book() == (100_000, 400, 101_000, 400)
    b.amend(AmendOrder("b1", M, "d", None, 100, T0))  # shrinks in place
    b.cancel(CancelOrder("s2", M, "b", T0))
    assert b.top_of_book() == (100_000, 100, 101_000, 200)
    b.submit(limit("y", "e", BUY, 101_000, 200))  # the best ask level is gone: the next one shows
    assert b.top_of_book() == (100_000, 100, 102_000, 900)
    assert b.top_of_book()[2:] == b.depth(SELL, 1)[0] and b.top_of_book()[:2] == b.depth(BUY, 1)[0]


def test_sell_aggressor_matches_best_bid_first() -> None:
    b = book()
    b.submit(limit("b1", "x", BUY, 100_000, 100))
    b.submit(limit("b2", "y", BUY, 102_000, 100))
    trades = of(b.submit(limit("s", "z", SELL, 100_000, 200)), Trade)
    assert [(t.buy_order_id, t.price_units_per_kwh) for t in trades] == [("b2", 102_000), ("b1", 100_000)]
    # The aggressor's remaining counts down across its trades; each resting bid is filled exactly.
    assert [(t.buy_remaining_wh, t.sell_remaining_wh) for t in trades] == [(0, 100), (0, 0)]
    assert all(t.aggressor_side is SELL and t.seller_account_id == "z" for t in trades)


def test_limit_does_not_trade_through_its_price() -> None:
    b = book()
    b.submit(limit("s", "seller", SELL, 101_000, 100))
    events = b.submit(limit("b", "buyer", BUY, 100_000, 100))
    assert not of(events, Trade)
    assert (b.best_bid(), b.best_ask()) == (100_000, 101_000)


def test_market_order_is_ioc_and_never_rests() -> None:
    b = book()
    events = b.submit(market("m1", "buyer", BUY, 500))
    assert [type(e) for e in events] == [OrderAccepted, OrderCancelled]
    assert events[1].reason is CancelReason.IOC_NO_LIQUIDITY and events[1].cancelled_quantity_wh == 500
    b.submit(limit("s", "seller", SELL, 100_000, 200))
    events = b.submit(market("m2", "buyer", BUY, 500))
    assert [(t.quantity_wh, t.buy_remaining_wh, t.sell_remaining_wh) for t in of(events, Trade)] == [(200, 300, 0)]
    cancelled = of(events, OrderCancelled)
    assert len(cancelled) == 1 and cancelled[0].cancelled_quantity_wh == 300
    assert b.open_order_count() == 0 and b.order("m2") is None
    assert rejection(b.submit(market("m2", "buyer", BUY, 100))) is RejectCode.DUPLICATE_ORDER_ID


def test_market_order_stops_at_the_band() -> None:
    b = book(price_band_bps=1_000, reference_price_units_per_kwh=100_000)  # [90_000, 110_000]
    b.submit(limit("s1", "a", SELL, 103_000, 100))
    b.submit(limit("s2", "b", SELL, 110_000, 100))  # on the band edge: allowed (inclusive)
    b.submit(limit("b1", "c", BUY, 95_000, 100))
    b.submit(limit("s3", "d", SELL, 95_000, 100))  # trades at 95_000: band now [85_500, 104_500]
    assert b.last_price_units_per_kwh == 95_000
    events = b.submit(market("m", "buyer", BUY, 300))
    assert [t.price_units_per_kwh for t in of(events, Trade)] == [103_000]
    cancel = of(events, OrderCancelled)[0]
    assert cancel.reason is CancelReason.IOC_PRICE_BAND and cancel.cancelled_quantity_wh == 200
    assert b.best_ask() == 110_000  # left resting, just out of a market order's reach


def test_market_order_band_is_fixed_at_arrival() -> None:
    b = book(price_band_bps=500, reference_price_units_per_kwh=100_000)  # [95_000, 105_000]
    b.submit(limit("far", "a", SELL, 105_000, 100))
    b.submit(limit("b1", "c", BUY, 96_000, 100))
    b.submit(limit("s1", "d", SELL, 96_000, 100))  # reference 96_000: band [91_200, 100_800]
    b.submit(limit("near", "e", SELL, 100_000, 100))
    events = b.submit(market("m", "buyer", BUY, 500))
    # The fill at 100_000 would move the band up to 105_000, but the order keeps its arrival band.
    assert [t.sell_order_id for t in of(events, Trade)] == ["near"]
    assert of(events, OrderCancelled)[0].reason is CancelReason.IOC_PRICE_BAND
    assert b.last_price_units_per_kwh == 100_000


# --- cancel and amend -------------------------------------------------------


def test_cancel_rules() -> None:
    b = book()
    b.submit(limit("o", "alice", BUY, 100_000, 100))
    assert rejection(b.cancel(CancelOrder("o", M, "mallory", T0))) is RejectCode.NOT_OWNER
    events = b.cancel(CancelOrder("o", M, "alice", T0))
    assert [type(e) for e in events] == [OrderCancelled]
    assert events[0].reason is CancelReason.USER_REQUESTED and events[0].cancelled_quantity_wh == 100
    assert rejection(b.cancel(CancelOrder("o", M, "alice", T0))) is RejectCode.UNKNOWN_ORDER
    assert rejection(b.cancel(CancelOrder("never", M, "alice", T0))) is RejectCode.UNKNOWN_ORDER
    assert b.best_bid() is None
    b.check_invariants()


def test_amend_down_keeps_priority() -> None:
    b = book()
    b.submit(limit("a", "s1", SELL, 100_000, 500))
    b.submit(limit("b", "s2", SELL, 100_000, 500))
    events = b.amend(AmendOrder("a", M, "s1", None, 200, T0))
    amended = of(events, OrderAmended)[0]
    assert amended.priority_kept and (amended.old_quantity_wh, amended.quantity_wh) == (500, 200)
    trades = of(b.submit(limit("x", "buyer", BUY, 100_000, 300)), Trade)
    assert [(t.sell_order_id, t.quantity_wh) for t in trades] == [("a", 200), ("b", 100)]
    # "a" is done at its amended quantity (200, not the 500 it was submitted with).
    assert [(t.buy_remaining_wh, t.sell_remaining_wh) for t in trades] == [(100, 0), (0, 400)]
    b.check_invariants()


def test_amend_up_or_reprice_loses_priority() -> None:
    b = book()
    b.submit(limit("a", "s1", SELL, 100_000, 100))
    b.submit(limit("b", "s2", SELL, 100_000, 100))
    assert not of(b.amend(AmendOrder("a", M, "s1", None, 200, T0)), OrderAmended)[0].priority_kept
    trades = of(b.submit(limit("x", "buyer", BUY, 100_000, 100)), Trade)
    assert [t.sell_order_id for t in trades] == ["b"]

    b.submit(limit("c", "s3", SELL, 100_000, 100))
    # Reprice away and back: behind "c" now even at the same price.
    b.amend(AmendOrder("a", M, "s1", 101_000, None, T0))
    b.amend(AmendOrder("a", M, "s1", 100_000, None, T0))
    trades = of(b.submit(limit("y", "buyer", BUY, 100_000, 100)), Trade)
    assert [t.sell_order_id for t in trades] == ["c"]
    b.check_invariants()


def test_amend_to_crossing_price_trades_immediately() -> None:
    b = book()
    b.submit(limit("bid", "buyer", BUY, 100_000, 100))
    b.submit(limit("ask", "seller", SELL, 102_000, 300))
    events = b.amend(AmendOrder("ask", M, "seller", 100_000, None, T0))
    assert [type(e) for e in events] == [OrderAmended, Trade]
    trade = events[1]
    assert isinstance(trade, Trade)
    assert trade.aggressor_side is SELL and trade.quantity_wh == 100 and trade.price_units_per_kwh == 100_000
    assert (trade.buy_remaining_wh, trade.sell_remaining_wh) == (0, 200)
    rest = b.order("ask")
    assert rest is not None and rest.remaining_quantity_wh == 200 and rest.price_units_per_kwh == 100_000
    b.check_invariants()


def test_amend_rejections_leave_order_intact() -> None:
    b = book()
    b.submit(limit("o", "alice", BUY, 100_000, 500))
    assert rejection(b.amend(AmendOrder("o", M, "alice", 100_500, None, T0))) is RejectCode.TICK_SIZE
    assert rejection(b.amend(AmendOrder("o", M, "alice", None, 250, T0))) is RejectCode.LOT_SIZE
    assert rejection(b.amend(AmendOrder("o", M, "alice", 100_000, 500, T0))) is RejectCode.NO_CHANGE
    assert rejection(b.amend(AmendOrder("o", M, "bob", None, 100, T0))) is RejectCode.NOT_OWNER
    assert rejection(b.amend(AmendOrder("zz", M, "alice", None, 100, T0))) is RejectCode.UNKNOWN_ORDER
    o = b.order("o")
    assert o is not None and (o.price_units_per_kwh, o.remaining_quantity_wh) == (100_000, 500)


# --- self-trade prevention, bands, tick/lot, ids ----------------------------


def test_self_trade_prevention_cancels_resting() -> None:
    b = book()
    b.submit(limit("mine", "alice", SELL, 100_000, 100))
    b.submit(limit("theirs", "bob", SELL, 100_000, 100))
    events = b.submit(limit("buy", "alice", BUY, 100_000, 100))
    assert [type(e) for e in events] == [OrderAccepted, OrderCancelled, Trade]
    stp = events[1]
    assert isinstance(stp, OrderCancelled)
    assert stp.order_id == "mine" and stp.reason is CancelReason.SELF_TRADE_PREVENTION
    trade = events[2]
    assert isinstance(trade, Trade) and trade.sell_order_id == "theirs"
    assert (trade.buy_remaining_wh, trade.sell_remaining_wh) == (0, 0)  # the cancelled "mine" filled nothing
    assert all(t.buyer_account_id != t.seller_account_id for t in of(events, Trade))
    b.check_invariants()


def test_self_trade_prevention_with_only_own_liquidity_rests_incoming() -> None:
    b = book()
    b.submit(limit("mine", "alice", SELL, 100_000, 100))
    events = b.submit(limit("buy", "alice", BUY, 100_000, 300))
    assert not of(events, Trade)
    assert b.best_ask() is None and b.best_bid() == 100_000
    b.check_invariants()


def test_price_band_around_reference_then_last_price() -> None:
    b = book(price_band_bps=2_000, reference_price_units_per_kwh=100_000)
    assert not of(b.submit(limit("hi", "a", SELL, 120_000, 100)), OrderRejected)  # edge: inclusive
    assert not of(b.submit(limit("lo", "a", BUY, 80_000, 100)), OrderRejected)
    assert rejection(b.submit(limit("x1", "a", SELL, 121_000, 100))) is RejectCode.PRICE_OUT_OF_BAND
    assert rejection(b.submit(limit("x2", "a", BUY, 79_000, 100))) is RejectCode.PRICE_OUT_OF_BAND
    b.submit(limit("s", "b", SELL, 110_000, 100))
    b.submit(limit("t", "c", BUY, 110_000, 100))  # trade at 110_000: new reference
    assert b.last_price_units_per_kwh == 110_000
    assert not of(b.submit(limit("y", "a", SELL, 132_000, 100)), OrderRejected)
    assert rejection(b.submit(limit("z", "a", BUY, 87_000, 100))) is RejectCode.PRICE_OUT_OF_BAND


def test_no_band_without_reference() -> None:
    b = book(price_band_bps=2_000)
    assert not of(b.submit(limit("a", "a", SELL, 1_000_000, 100)), OrderRejected)
    assert not of(b.submit(limit("b", "a", BUY, 1_000, 100)), OrderRejected)


def test_tick_lot_and_shape_rejections() -> None:
    b = book()
    cases = [
        (limit("p1", "a", BUY, 100_500, 100), RejectCode.TICK_SIZE),
        (limit("p2", "a", BUY, 100_000, 150), RejectCode.LOT_SIZE),
        (limit("p3", "a", BUY, 100_000, 0), RejectCode.INVALID_QUANTITY),
        (limit("p4", "a", BUY, 100_000, -100), RejectCode.INVALID_QUANTITY),
        (limit("p5", "a", BUY, 0, 100), RejectCode.INVALID_PRICE),
        (limit("p6", "a", BUY, 10**12, 100), RejectCode.INVALID_PRICE),
        (SubmitOrder("p7", M, "a", BUY, OrderType.LIMIT, None, 100, T0), RejectCode.INVALID_PRICE),
        (SubmitOrder("p8", M, "a", BUY, OrderType.MARKET, 100_000, 100, T0), RejectCode.MARKET_ORDER_WITH_PRICE),
        (limit("", "a", BUY, 100_000, 100), RejectCode.INVALID_ORDER_ID),
        (limit("x" * 129, "a", BUY, 100_000, 100), RejectCode.INVALID_ORDER_ID),
        (limit("p9", "", BUY, 100_000, 100), RejectCode.INVALID_ACCOUNT),
        (limit("p10", "a", BUY, 100_000, 100, T0, expires=T0), RejectCode.INVALID_EXPIRY),
        (
            SubmitOrder("p11", "2026-11-24T11:00Z/KR-SEOUL", "a", BUY, OrderType.LIMIT, 1_000, 100, T0),
            RejectCode.WRONG_MARKET,
        ),
    ]
    for command, code in cases:
        events = b.submit(command)
        assert rejection(events) is code, (command, events)
        assert events[-1].reason  # always a human reason
    assert b.open_order_count() == 0
    assert b.last_seq == len(cases)  # every rejection is an event with its own seq


def test_book_full_is_rejected() -> None:
    b = book(max_resting_orders=2)
    b.submit(limit("a", "x", BUY, 100_000, 100))
    b.submit(limit("b", "x", BUY, 100_000, 100))
    assert rejection(b.submit(limit("c", "x", BUY, 100_000, 100))) is RejectCode.BOOK_FULL


def test_duplicate_order_ids_never_create_a_second_order() -> None:
    b = book()
    b.submit(limit("o", "alice", BUY, 100_000, 100))
    events = b.submit(limit("o", "alice", BUY, 100_000, 100))
    assert rejection(events) is RejectCode.DUPLICATE_ORDER_ID
    assert b.open_order_count() == 1 and b.depth(BUY) == [(100_000, 100)]
    # Ids of rejected and of filled orders stay spent too.
    b.submit(limit("bad", "alice", BUY, 100_500, 100))
    assert rejection(b.submit(limit("bad", "alice", BUY, 100_000, 100))) is RejectCode.DUPLICATE_ORDER_ID
    b.submit(limit("s", "bob", SELL, 100_000, 100))
    assert b.order("o") is None
    assert rejection(b.submit(limit("o", "alice", BUY, 100_000, 100))) is RejectCode.DUPLICATE_ORDER_ID


# --- time: expiry and gate closure ------------------------------------------


def test_good_till_time_expiry() -> None:
    b = book()
    b.submit(limit("gtd", "seller", SELL, 100_000, 100, T0, expires=T0 + 10))
    assert b.expire(T0 + 9) == []
    events = b.submit(limit("buy", "buyer", BUY, 100_000, 100, T0 + 20))
    assert [type(e) for e in events] == [OrderExpired, OrderAccepted]  # expired before it could match
    expired = events[0]
    assert isinstance(expired, OrderExpired)
    assert expired.reason is ExpiryReason.ORDER_EXPIRY and expired.at_ms == T0 + 10
    assert b.best_bid() == 100_000 and b.best_ask() is None
    b.check_invariants()


def test_expiry_via_expire_and_stale_entries() -> None:
    b = book()
    b.submit(limit("a", "s", SELL, 100_000, 100, T0, expires=T0 + 5))
    b.submit(limit("b", "s", SELL, 100_000, 100, T0, expires=T0 + 5))
    b.cancel(CancelOrder("a", M, "s", T0 + 1))
    b.amend(AmendOrder("b", M, "s", 101_000, None, T0 + 2))  # re-queued; keeps its expiry
    events = b.expire(T0 + 5)
    assert [(type(e), e.order_id) for e in events] == [(OrderExpired, "b")]
    assert b.open_order_count() == 0
    b.check_invariants()


def test_gate_closure_expires_everything_and_rejects_new_orders() -> None:
    b = book()
    b.submit(limit("b1", "x", BUY, 100_000, 100))
    b.submit(limit("s1", "y", SELL, 101_000, 100, expires=GATE_MS + 10))
    b.submit(limit("b2", "z", BUY, 99_000, 100))
    assert b.expire(GATE_MS - 1) == []
    events = b.submit(limit("late", "x", BUY, 100_000, 100, GATE_MS))
    expired = of(events, OrderExpired)
    assert [e.order_id for e in expired] == ["b1", "s1", "b2"]  # priority order
    assert all(e.reason is ExpiryReason.GATE_CLOSURE and e.at_ms == GATE_MS for e in expired)
    assert type(events[-1]) is OrderRejected and events[-1].code is RejectCode.GATE_CLOSED
    assert b.is_closed and b.open_order_count() == 0
    assert rejection(b.cancel(CancelOrder("b1", M, "x", GATE_MS + 1))) is RejectCode.GATE_CLOSED
    # A command stamped before the gate, arriving after closure, is still too late.
    assert rejection(b.submit(limit("early", "x", BUY, 100_000, 100, GATE_MS - 60_000))) is RejectCode.GATE_CLOSED
    b.check_invariants()


def test_expire_op_closes_gate_and_close_gate_forces_it() -> None:
    b = book()
    b.submit(limit("o", "x", BUY, 100_000, 100))
    events = b.expire(GATE_MS + 5)
    assert [(e.order_id, e.reason) for e in of(events, OrderExpired)] == [("o", ExpiryReason.GATE_CLOSURE)]
    b2 = book()
    b2.submit(limit("o", "x", BUY, 100_000, 100))
    events = b2.close_gate(T0 + 1)
    assert [e.at_ms for e in of(events, OrderExpired)] == [T0 + 1]
    assert rejection(b2.submit(limit("n", "x", BUY, 100_000, 100, T0 + 2))) is RejectCode.GATE_CLOSED


# --- engine -----------------------------------------------------------------


def test_engine_routes_by_market_and_rejects_unknown_markets() -> None:
    engine = OrderBookEngine(MarketRules(price_band_bps=None).config_for)
    other = format_market_id(DELIVERY_MS + 3_600_000, "AU-NSW")
    engine.handle(limit("a", "x", BUY, 100_000, 100))
    engine.handle(SubmitOrder("a", other, "y", SELL, OrderType.LIMIT, 100_000, 100, T0))  # ids are per market
    assert list(engine.markets()) == sorted([M, other])
    first, second = engine.book(M), engine.book(other)
    assert first is not None and second is not None
    assert first.best_bid() == 100_000 and second.best_ask() == 100_000
    events = engine.handle(SubmitOrder("b", "not-a-market", "x", BUY, OrderType.LIMIT, 1_000, 100, T0))
    assert rejection(events) is RejectCode.UNKNOWN_MARKET and events[0].seq == 0
    assert engine.book("not-a-market") is None
    closed = engine.expire(DELIVERY_MS + 3_600_000)
    assert {e.market_id for e in closed} == {M, other}
    engine.retire_market(M)
    assert engine.book(M) is None


def test_engine_bounds_markets() -> None:
    engine = OrderBookEngine(max_markets=1)
    engine.handle(limit("a", "x", BUY, 100_000, 100))
    other = format_market_id(DELIVERY_MS + 3_600_000, "KR-SEOUL")
    events = engine.handle(SubmitOrder("a", other, "x", BUY, OrderType.LIMIT, 100_000, 100, T0))
    assert rejection(events) is RejectCode.TOO_MANY_MARKETS


def test_market_id_round_trip() -> None:
    market = parse_market_id(M)
    assert market.region == "KR-SEOUL" and format_market_id(market.delivery_start_ms, market.region) == M
    for bad in ("2026-11-24T10:00/KR", "2026-11-24T10:00Z/", "x", "2026-13-24T10:00Z/KR"):
        try:
            parse_market_id(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


# --- properties over seeded streams -----------------------------------------


def _run_stream(seed: int, n: int, markets: int = 4) -> tuple[OrderBookEngine, list[BookEvent]]:
    engine = OrderBookEngine()
    events: list[BookEvent] = []
    for cmd in generate_orders(seed, n, demo_markets(markets), demo_accounts(12)):
        events.extend(engine.handle(cmd))
    return engine, events


def _event_bytes(events: list[BookEvent]) -> bytes:
    return "\n".join(json.dumps([type(e).__name__, *e]) for e in events).encode()


def test_same_seed_gives_byte_identical_events() -> None:
    _, first = _run_stream(7, 6_000)
    _, second = _run_stream(7, 6_000)
    trades_a = _event_bytes([e for e in first if type(e) is Trade])
    assert trades_a == _event_bytes([e for e in second if type(e) is Trade])
    assert hashlib.sha256(_event_bytes(first)).digest() == hashlib.sha256(_event_bytes(second)).digest()
    assert len(trades_a) > 0
    _, third = _run_stream(8, 6_000)
    assert _event_bytes(third) != _event_bytes(first)


def test_stream_conserves_quantity_and_keeps_invariants() -> None:
    engine = OrderBookEngine()
    open_qty: dict[tuple[str, str], int] = defaultdict(int)
    last_seq: dict[str, int] = defaultdict(int)
    commands = list(generate_orders(11, 8_000, demo_markets(3), demo_accounts(6)))
    for i, cmd in enumerate(commands):
        for e in engine.handle(cmd):
            assert e.seq == last_seq[e.market_id] + 1  # gap-free per market
            last_seq[e.market_id] = e.seq
            if type(e) is OrderAccepted:
                open_qty[(e.market_id, e.order_id)] += e.quantity_wh
            elif type(e) is Trade:
                assert e.buyer_account_id != e.seller_account_id
                assert e.notional_units * 1000 == e.price_units_per_kwh * e.quantity_wh
                open_qty[(e.market_id, e.buy_order_id)] -= e.quantity_wh
                open_qty[(e.market_id, e.sell_order_id)] -= e.quantity_wh
                assert e.buy_remaining_wh == open_qty[(e.market_id, e.buy_order_id)]
                assert e.sell_remaining_wh == open_qty[(e.market_id, e.sell_order_id)]
            elif type(e) is OrderCancelled:
                open_qty[(e.market_id, e.order_id)] -= e.cancelled_quantity_wh
            elif type(e) is OrderExpired:
                open_qty[(e.market_id, e.order_id)] -= e.expired_quantity_wh
            elif type(e) is OrderAmended:
                open_qty[(e.market_id, e.order_id)] += e.quantity_wh - e.old_quantity_wh
        if i % 1_000 == 0:
            for market_id in engine.markets():
                b = engine.book(market_id)
                assert b is not None
                b.check_invariants()
    for (market_id, order_id), qty in open_qty.items():
        b = engine.book(market_id)
        assert b is not None
        resting = b.order(order_id)
        assert qty == (0 if resting is None else resting.remaining_quantity_wh), order_id
        assert qty >= 0


def _reference_trades(orders: list[tuple[Side, int, int]]) -> list[tuple[int, int, int, int]]:
    """Naive O(n^2) price-time matcher (limit orders, distinct accounts): (buy idx, sell idx, price, qty)."""
    resting: list[list[int]] = []  # [idx, side(0 buy/1 sell), price, remaining]
    trades = []
    for idx, (side, price, qty) in enumerate(orders):
        s = 0 if side is BUY else 1
        while qty:
            opposite = [r for r in resting if r[1] != s and (r[2] <= price if s == 0 else r[2] >= price)]
            if not opposite:
                break
            best = min(opposite, key=lambda r: (r[2] if s == 0 else -r[2], r[0]))
            fill = min(qty, best[3])
            trades.append((idx, best[0], best[2], fill) if s == 0 else (best[0], idx, best[2], fill))
            qty -= fill
            best[3] -= fill
            if not best[3]:
                resting.remove(best)
        if qty:
            resting.append([idx, s, price, qty])
    return trades


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([BUY, SELL]), st.integers(95, 105), st.integers(1, 5)),
        min_size=1,
        max_size=40,
    )
)
def test_matches_naive_reference_model(orders: list[tuple[Side, int, int]]) -> None:
    orders = [(side, price * 1_000, lots * 100) for side, price, lots in orders]
    b = book()
    got = []
    for idx, (side, price, qty) in enumerate(orders):
        for e in b.submit(limit(str(idx), f"acct{idx}", side, price, qty)):
            if type(e) is Trade:
                got.append((int(e.buy_order_id), int(e.sell_order_id), e.price_units_per_kwh, e.quantity_wh))
    assert got == _reference_trades(orders)
    b.check_invariants()


def test_random_cancels_and_amends_keep_book_consistent() -> None:
    rng = random.Random(3)
    b = book()
    live: list[tuple[str, str]] = []
    for i in range(3_000):
        roll = rng.random()
        if roll < 0.2 and live:
            order_id, account = live.pop(rng.randrange(len(live)))
            b.cancel(CancelOrder(order_id, M, account, T0 + i))
        elif roll < 0.35 and live:
            order_id, account = rng.choice(live)
            price = rng.choice([None, rng.randint(95, 105) * 1_000])
            qty = rng.choice([None, rng.randint(1, 10) * 100])
            b.amend(AmendOrder(order_id, M, account, price, qty, T0 + i))
        else:
            account = f"a{rng.randrange(5)}"
            side = rng.choice([BUY, SELL])
            expires = T0 + i + rng.randint(1, 50) if rng.random() < 0.2 else None
            price, qty = rng.randint(95, 105) * 1_000, rng.randint(1, 10) * 100
            b.submit(limit(f"o{i}", account, side, price, qty, T0 + i, expires))
            live.append((f"o{i}", account))
        if i % 100 == 0:
            b.check_invariants()
    b.check_invariants()
