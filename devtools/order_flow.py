"""Seeded, deterministic order stream for the bench, the demo and integration tests.

``generate_orders(seed, n, markets, accounts)`` yields ``n`` order-book commands;
the same arguments always yield the same commands (``random.Random(seed)`` is
stable across runs of one CPython version). The mix, by default:

* ~82 % LIMIT orders around a per-market mid price that random-walks by ticks;
  buys are centred a little below mid and sells a little above, with enough
  spread overlap that roughly a third of them cross and trade; ~10 % of them
  carry a good-till-time expiry 1-120 s ahead;
* ~10 % cancels and ~3 % amends of passive orders this generator submitted
  earlier (it cannot see fills, so some target orders that are already gone
  and are rejected with UNKNOWN_ORDER, as they would be in production);
* ~5 % MARKET orders (IOC).

Prices respect the default tick (1,000 units/kWh) and quantities the default
lot (100 Wh); logical time starts six hours before the earliest delivery
interval and advances 0-2 ms per command, so gates stay open for any n up to
about ten million.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from domain.order_book import (
    DEFAULT_RULES,
    AmendOrder,
    CancelOrder,
    Command,
    MarketRules,
    OrderType,
    Side,
    SubmitOrder,
    format_market_id,
    parse_market_id,
)

MAX_GENERATED_ORDERS = 50_000_000
_START_LEAD_MS = 6 * 60 * 60 * 1000
# Orders the generator remembers per market for cancels/amends: bounded.
_MAX_TRACKED = 4_096


@dataclass(frozen=True, slots=True)
class FlowMix:
    """Percentages of each command kind; the remainder are LIMIT orders."""

    cancel_pct: int = 10
    market_pct: int = 5
    amend_pct: int = 3
    gtd_pct_of_limits: int = 10
    mid_price_units_per_kwh: tuple[int, int] = (120_000, 180_000)  # 0.12-0.18 K-AUS per kWh
    max_lots: int = 50

    def __post_init__(self) -> None:
        assert 0 <= self.cancel_pct + self.market_pct + self.amend_pct <= 100
        assert 0 <= self.gtd_pct_of_limits <= 100
        assert 0 < self.mid_price_units_per_kwh[0] <= self.mid_price_units_per_kwh[1]
        assert self.max_lots > 0


DEFAULT_MIX = FlowMix()


def demo_markets(count: int, *, first_delivery: str = "2026-11-24T10:00", regions: Sequence[str] = ()) -> list[str]:
    """``count`` market ids: hourly delivery intervals x a few grid regions."""
    assert count > 0
    regions = tuple(regions) or ("KR-SEOUL", "KR-BUSAN", "AU-NSW", "AU-VIC", "JP-TOKYO")
    first = parse_market_id(f"{first_delivery}Z/{regions[0]}").delivery_start_ms
    hour_ms = 3_600_000
    return [format_market_id(first + (i // len(regions)) * hour_ms, regions[i % len(regions)]) for i in range(count)]


def demo_accounts(count: int) -> list[str]:
    assert count > 1
    return [f"acct-{i:05d}" for i in range(count)]


def generate_orders(
    seed: int,
    n: int,
    markets: Sequence[str],
    accounts: Sequence[str],
    *,
    mix: FlowMix = DEFAULT_MIX,
    rules: MarketRules = DEFAULT_RULES,
    start_ms: int | None = None,
) -> Iterator[Command]:
    """Yield ``n`` deterministic commands spread over ``markets`` and ``accounts``."""
    assert 0 <= n <= MAX_GENERATED_ORDERS
    assert markets and len(accounts) >= 2
    rng = random.Random(seed)
    tick = rules.tick_size_units
    lot = rules.lot_size_wh
    if start_ms is None:
        start_ms = min(parse_market_id(m).delivery_start_ms for m in markets) - _START_LEAD_MS
    low, high = mix.mid_price_units_per_kwh
    mids = [rng.randrange(low // tick, high // tick + 1) * tick for _ in markets]
    tracked: list[list[tuple[str, str, int]]] = [[] for _ in markets]  # (order_id, account, price)
    cancel_cut = mix.cancel_pct
    market_cut = cancel_cut + mix.market_pct
    amend_cut = market_cut + mix.amend_pct
    now = start_ms
    for i in range(n):
        now += rng.randrange(3)
        m = rng.randrange(len(markets))
        market_id = markets[m]
        roll = rng.randrange(100)
        known = tracked[m]
        if roll < cancel_cut and known:
            order_id, account, _ = known.pop(rng.randrange(len(known)))
            yield CancelOrder(order_id, market_id, account, now)
            continue
        if cancel_cut <= roll < market_cut:
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            quantity = rng.randint(1, mix.max_lots) * lot
            account = rng.choice(accounts)
            yield SubmitOrder(f"o{seed}-{i}", market_id, account, side, OrderType.MARKET, None, quantity, now)
            continue
        if market_cut <= roll < amend_cut and known:
            index = rng.randrange(len(known))
            order_id, account, price = known[index]
            if rng.random() < 0.5:
                # Shrink only: keeps priority.
                yield AmendOrder(order_id, market_id, account, None, rng.randint(1, 5) * lot, now)
            else:
                new_price = max(tick, price + rng.choice((-2, -1, 1, 2)) * tick)
                known[index] = (order_id, account, new_price)
                yield AmendOrder(order_id, market_id, account, new_price, None, now)
            continue
        # LIMIT: mid walks one tick now and then; buys sit below it, sells above.
        if rng.random() < 0.05:
            mids[m] = max(low, min(high, mids[m] + rng.choice((-tick, tick))))
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        offset_ticks = rng.randint(-3, 12)
        price = mids[m] - offset_ticks * tick if side is Side.BUY else mids[m] + offset_ticks * tick
        quantity = rng.randint(1, mix.max_lots) * lot
        account = rng.choice(accounts)
        expires = now + rng.randint(1_000, 120_000) if rng.randrange(100) < mix.gtd_pct_of_limits else None
        order_id = f"o{seed}-{i}"
        yield SubmitOrder(order_id, market_id, account, side, OrderType.LIMIT, price, quantity, now, expires)
        if offset_ticks > 0:  # only passive orders: aggressive ones mostly fill at once
            if len(known) >= _MAX_TRACKED:
                known.pop(0)
            known.append((order_id, account, price))
