"""Price discovery: top of book, last price, exact VWAP, updates only on change."""

from __future__ import annotations

import json
import random
from fractions import Fraction

from devtools.order_flow import demo_accounts, demo_markets, generate_orders
from domain.order_book import OrderBookEngine, Side, Trade
from domain.price_discovery import PriceDiscovery, round_half_even

M = "2026-11-24T10:00Z/KR-SEOUL"
EMPTY = (None, None, None, None)  # a book with neither bids nor asks


def trade(seq: int, price: int, qty: int) -> Trade:
    return Trade(f"{M}:{seq}", M, seq, seq, "b", "s", "buyer", "seller", price, qty, price * qty // 1000, Side.BUY)


def test_round_half_even() -> None:
    assert [round_half_even(n, 2) for n in (1, 3, 5, 7, -1, -3)] == [0, 2, 2, 4, 0, -2]
    assert round_half_even(10, 3) == 3 and round_half_even(11, 3) == 4 and round_half_even(0, 7) == 0


def test_updates_only_when_something_changed() -> None:
    pd = PriceDiscovery()
    first = pd.observe(M, [], (100_000, 500, 101_000, 200), 1)
    assert first is not None and first.update_seq == 1
    assert (first.best_bid_units_per_kwh, first.best_ask_units_per_kwh, first.vwap_units_per_kwh) == (
        100_000,
        101_000,
        None,
    )
    assert (first.best_bid_quantity_wh, first.best_ask_quantity_wh) == (500, 200)
    assert pd.observe(M, [], (100_000, 500, 101_000, 200), 2) is None
    moved = pd.observe(M, [], (100_000, 500, None, None), 3)
    assert moved is not None and moved.best_ask_units_per_kwh is None and moved.update_seq == 2
    assert moved.best_ask_quantity_wh is None and moved.best_bid_quantity_wh == 500
    traded = pd.observe(M, [trade(1, 100_000, 300)], (100_000, 500, None, None), 4)
    assert traded is not None
    assert traded.last_price_units_per_kwh == 100_000 and traded.last_quantity_wh == 300
    assert (traded.volume_wh, traded.notional_units, traded.trade_count) == (300, 30_000, 1)
    assert traded.vwap_units_per_kwh == 100_000


def test_a_size_change_at_an_unchanged_best_price_is_an_update() -> None:
    pd = PriceDiscovery()
    assert pd.observe(M, [], (100_000, 500, 101_000, 200), 1) is not None
    joined = pd.observe(M, [], (100_000, 800, 101_000, 200), 2)  # an order joins the best bid
    assert joined is not None and joined.update_seq == 2
    assert (joined.best_bid_units_per_kwh, joined.best_bid_quantity_wh) == (100_000, 800)
    shrunk = pd.observe(M, [], (100_000, 800, 101_000, 100), 3)  # part of the best ask leaves
    assert shrunk is not None and shrunk.update_seq == 3 and shrunk.best_ask_quantity_wh == 100
    assert pd.observe(M, [], (100_000, 800, 101_000, 100), 4) is None


def test_vwap_exact_and_rounded_half_even() -> None:
    pd = PriceDiscovery()
    update = pd.observe(M, [trade(1, 1_000, 100), trade(2, 2_000, 100)], EMPTY, 1)
    assert update is not None and update.vwap_units_per_kwh == 1_500
    # (1001 + 1002) / 2 = 1001.5 -> 1002 ; (1002 + 1003) / 2 = 1002.5 -> 1002 (ties to even)
    u = PriceDiscovery().observe(M, [trade(1, 1_001, 1_000), trade(2, 1_002, 1_000)], EMPTY, 1)
    assert u is not None and u.vwap_units_per_kwh == 1_002
    u = PriceDiscovery().observe(M, [trade(1, 1_002, 1_000), trade(2, 1_003, 1_000)], EMPTY, 1)
    assert u is not None and u.vwap_units_per_kwh == 1_002


def test_vwap_matches_fraction_over_random_trades() -> None:
    rng = random.Random(5)
    pd = PriceDiscovery()
    trades = [trade(i, rng.randint(90, 200) * 1_000, rng.randint(1, 50) * 100) for i in range(2_000)]
    for i in range(0, len(trades), 7):
        pd.observe(M, trades[i : i + 7], EMPTY, i)
    state = pd.state(M)
    assert state is not None
    exact = Fraction(sum(t.price_units_per_kwh * t.quantity_wh for t in trades), sum(t.quantity_wh for t in trades))
    assert state.vwap_exact() == exact
    assert state.vwap_units_per_kwh() == round(exact)  # Python's round on Fraction is half-even
    assert state.notional_units() == sum(t.notional_units for t in trades)


def test_fed_from_engine_and_snapshot_round_trip() -> None:
    engine = OrderBookEngine()
    pd = PriceDiscovery()
    updates = 0
    for cmd in generate_orders(3, 3_000, demo_markets(2), demo_accounts(8)):
        events = engine.handle(cmd)
        book = engine.book(cmd.market_id)
        assert book is not None
        update = pd.observe(cmd.market_id, events, book.top_of_book(), book.now_ms)
        if update is not None:
            updates += 1
            assert update.best_bid_units_per_kwh == book.best_bid()
            assert update.last_price_units_per_kwh == book.last_price_units_per_kwh
            bids, asks = book.depth(Side.BUY, 1), book.depth(Side.SELL, 1)
            assert update.best_bid_quantity_wh == (bids[0][1] if bids else None)
            assert update.best_ask_quantity_wh == (asks[0][1] if asks else None)
    assert 0 < updates < 3_000
    data = json.loads(json.dumps(pd.to_dict()))
    restored = PriceDiscovery.from_dict(data)
    assert restored.to_dict() == pd.to_dict()
