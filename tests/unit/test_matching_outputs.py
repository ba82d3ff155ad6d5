"""Matching's market facts on the wire: one fill event per side of every trade, sizes at the best prices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from contracts import models as m
from contracts.topics import ENERGY_ORDER_EVENTS, ENERGY_PRICES, ENERGY_TRADES, LEDGER_COMMANDS
from devtools.order_flow import generate_orders
from streams.p2p.matching import MatchingPartition, to_message

M = "2026-11-24T10:00Z/KR-SEOUL"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
FILLED, PARTIAL = m.OrderStatus.FILLED, m.OrderStatus.PARTIALLY_FILLED


class Market:
    """One MatchingPartition fed wire messages; each call returns (topic name, decoded contract model) pairs."""

    def __init__(self) -> None:
        self.partition = MatchingPartition(0)
        self.offset = 0
        self.at = T0

    def send(self, message: Any) -> list[tuple[str, Any]]:
        out = self.partition.apply(self.offset, message)
        self.offset += 1
        # Decoding the bytes with the topic's contract: what a consumer reads.
        return [(topic.name, topic.decode(topic.encode(record))) for topic, record in out]

    def limit(self, order_id: str, account: str, side: m.Side, price: int, qty: int) -> list[tuple[str, Any]]:
        self.at += timedelta(milliseconds=7)
        return self.send(
            m.SubmitOrder(
                order_id=order_id,
                market_id=M,
                account_id=account,
                side=side,
                order_type=m.OrderType.LIMIT,
                price_units_per_kwh=price,
                quantity_wh=qty,
                submitted_at=self.at,
            )
        )

    def market(self, order_id: str, account: str, side: m.Side, qty: int) -> list[tuple[str, Any]]:
        self.at += timedelta(milliseconds=7)
        return self.send(
            m.SubmitOrder(
                order_id=order_id,
                market_id=M,
                account_id=account,
                side=side,
                order_type=m.OrderType.MARKET,
                quantity_wh=qty,
                submitted_at=self.at,
            )
        )

    def cancel(self, order_id: str, account: str) -> list[tuple[str, Any]]:
        self.at += timedelta(milliseconds=7)
        return self.send(m.CancelOrder(order_id=order_id, market_id=M, account_id=account, requested_at=self.at))


def topics(out: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in out]


def events(out: list[tuple[str, Any]]) -> list[m.OrderEvent]:
    return [model for name, model in out if name == ENERGY_ORDER_EVENTS.name]


def price(out: list[tuple[str, Any]]) -> m.MarketPrice:
    prices = [model for name, model in out if name == ENERGY_PRICES.name]
    assert len(prices) == 1, out
    return prices[0]


def seeded_market() -> Market:
    market = Market()
    market.limit("s1", "seller-1", m.Side.SELL, 101_000, 300)
    market.limit("s2", "seller-2", m.Side.SELL, 101_000, 200)
    market.limit("s3", "seller-3", m.Side.SELL, 102_000, 900)
    market.limit("b1", "buyer-1", m.Side.BUY, 100_000, 400)
    return market


def test_a_partial_fill_gives_each_side_its_fill_event_after_the_trade() -> None:
    market = seeded_market()
    out = market.limit("x", "buyer-2", m.Side.BUY, 101_000, 100)
    order_events = ENERGY_ORDER_EVENTS.name
    assert topics(out) == [
        order_events,  # ACCEPTED
        ENERGY_TRADES.name,
        LEDGER_COMMANDS.name,
        order_events,  # the buy order's fill
        order_events,  # the sell order's fill
        ENERGY_PRICES.name,
    ]
    trade = out[1][1]
    accepted, buy, sell = events(out)
    assert (accepted.status, accepted.remaining_quantity_wh, accepted.trade_id) == (m.OrderStatus.ACCEPTED, 100, None)
    assert (buy.order_id, buy.account_id, buy.status, buy.remaining_quantity_wh) == ("x", "buyer-2", FILLED, 0)
    assert (sell.order_id, sell.account_id, sell.status, sell.remaining_quantity_wh) == ("s1", "seller-1", PARTIAL, 200)
    for fill in (buy, sell):
        assert (fill.trade_id, fill.fill_quantity_wh, fill.fill_price_units_per_kwh) == (trade.trade_id, 100, 101_000)
        assert (fill.sequence, fill.occurred_at) == (trade.sequence, trade.executed_at)
        assert (fill.market_id, fill.reason_code, fill.reason) == (M, None, None)
    # s1 has 200 open, s2 200 behind it at the same price: the best ask's size is the level's 400.
    update = price(out)
    assert (update.best_bid_units_per_kwh, update.best_bid_quantity_wh) == (100_000, 400)
    assert (update.best_ask_units_per_kwh, update.best_ask_quantity_wh) == (101_000, 400)
    assert update.last_price_units_per_kwh == 101_000 and update.traded_quantity_wh == 100


def test_an_order_filled_across_trades_counts_down_to_filled() -> None:
    market = seeded_market()
    out = market.limit("x", "buyer-2", m.Side.BUY, 101_000, 500)  # takes s1 (300) then s2 (200), exactly
    fills = [(e.order_id, e.status, e.remaining_quantity_wh, e.fill_quantity_wh) for e in events(out)[1:]]
    assert fills == [
        ("x", PARTIAL, 200, 300),
        ("s1", FILLED, 0, 300),
        ("x", FILLED, 0, 200),
        ("s2", FILLED, 0, 200),
    ]
    trades = [model for name, model in out if name == ENERGY_TRADES.name]
    assert [e.sequence for e in events(out)[1:]] == [trades[0].sequence] * 2 + [trades[1].sequence] * 2
    update = price(out)  # the 101_000 level is gone: the next ask shows with its own size
    assert (update.best_ask_units_per_kwh, update.best_ask_quantity_wh) == (102_000, 900)


def test_a_market_order_shows_its_remainder_then_is_cancelled_to_zero() -> None:
    market = seeded_market()
    out = market.market("mk", "buyer-2", m.Side.BUY, 2_000)  # 1,400 Wh on offer inside the (absent) band
    statuses = [(e.order_id, e.status, e.remaining_quantity_wh) for e in events(out) if e.order_id == "mk"]
    assert statuses == [
        ("mk", m.OrderStatus.ACCEPTED, 2_000),
        ("mk", PARTIAL, 1_700),
        ("mk", PARTIAL, 1_500),
        ("mk", PARTIAL, 600),
        ("mk", m.OrderStatus.CANCELLED, 0),
    ]
    update = price(out)
    assert (update.best_ask_units_per_kwh, update.best_ask_quantity_wh) == (None, None)
    assert update.best_bid_quantity_wh == 400


def test_the_best_level_size_alone_changing_is_a_price_update() -> None:
    market = seeded_market()
    joined = price(market.limit("b2", "buyer-2", m.Side.BUY, 100_000, 300))  # joins the best bid
    assert (joined.best_bid_units_per_kwh, joined.best_bid_quantity_wh) == (100_000, 700)
    cancelled = market.cancel("s1", "seller-1")
    assert [e.status for e in events(cancelled)] == [m.OrderStatus.CANCELLED]
    update = price(cancelled)
    assert (update.best_ask_units_per_kwh, update.best_ask_quantity_wh) == (101_000, 200)
    assert update.sequence == joined.sequence + 1
    out = market.limit("deep", "buyer-3", m.Side.BUY, 99_000, 100)  # below the best bid: nothing seen changed
    assert ENERGY_PRICES.name not in topics(out)


def test_every_order_event_leaves_the_open_quantity_the_book_holds() -> None:
    """Over a seeded flow: an order's latest event tells its open quantity, and each price update the top of book."""
    partition = MatchingPartition(0)
    latest: dict[str, m.OrderEvent] = {}
    markets = [M, "2026-11-24T11:00Z/KR-SEOUL"]
    fills = 0
    for offset, cmd in enumerate(generate_orders(5, 4_000, markets, [f"acct-{i}" for i in range(6)])):
        out = partition.apply(offset, to_message(cmd))
        for topic, record in out:
            model = topic.decode(topic.encode(record))
            if topic is ENERGY_ORDER_EVENTS:
                latest[f"{model.market_id}|{model.order_id}"] = model
                fills += model.trade_id is not None
            elif topic is ENERGY_PRICES:
                book = partition.engine.book(model.market_id)
                assert book is not None
                assert (
                    model.best_bid_units_per_kwh,
                    model.best_bid_quantity_wh,
                    model.best_ask_units_per_kwh,
                    model.best_ask_quantity_wh,
                ) == book.top_of_book()
    assert fills > 1_000
    for key, event in latest.items():
        market_id, order_id = key.split("|")
        book = partition.engine.book(market_id)
        assert book is not None
        resting = book.order(order_id)
        assert event.remaining_quantity_wh == (0 if resting is None else resting.remaining_quantity_wh), event
        if event.status in (FILLED, PARTIAL):
            assert (event.status is FILLED) == (event.remaining_quantity_wh == 0)


def test_fill_events_take_the_trade_sequence_and_consume_none_of_their_own() -> None:
    market = seeded_market()  # four orders accepted: sequences 1-4
    out = market.limit("x", "buyer-2", m.Side.BUY, 101_000, 100)
    assert [e.sequence for e in events(out)] == [5, 6, 6]  # ACCEPTED, then both fills of trade 6
    book = market.partition.engine.book(M)
    assert book is not None and book.last_seq == 6
    assert [e.sequence for e in events(market.cancel("s2", "seller-2"))] == [7]
