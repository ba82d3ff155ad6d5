"""Service layer for order matching: contracts in, domain engine, contracts out.

No Faust here: the Faust agent and the plain confluent-kafka loop (bench) both
drive a `MatchingPartition`, which owns one input partition's engine and knows
the last input offset it applied — the basis of replay-on-restart (see
docs/state-and-recovery.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from contracts import models as m
from contracts.construct import constructor
from contracts.topics import ENERGY_ORDER_EVENTS, ENERGY_PRICES, ENERGY_TRADES, LEDGER_COMMANDS, Topic
from domain import order_book as ob
from domain.price_discovery import PriceDiscovery, PriceUpdate


def to_ms(ts: datetime) -> int:
    return (
        int(ts.timestamp() * 1000)
        if ts.microsecond % 1000 == 0
        else int(ts.timestamp()) * 1000 + ts.microsecond // 1000
    )


@lru_cache(maxsize=65_536)
def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(microsecond=(ms % 1000) * 1000)


def to_command(message: m.SubmitOrder | m.CancelOrder | m.AmendOrder) -> ob.Command:
    if isinstance(message, m.SubmitOrder):
        return ob.SubmitOrder(
            message.order_id,
            message.market_id,
            message.account_id,
            ob.Side(message.side),
            ob.OrderType(message.order_type),
            message.price_units_per_kwh,
            message.quantity_wh,
            to_ms(message.submitted_at),
            to_ms(message.expires_at) if message.expires_at else None,
        )
    if isinstance(message, m.CancelOrder):
        return ob.CancelOrder(message.order_id, message.market_id, message.account_id, to_ms(message.requested_at))
    return ob.AmendOrder(
        message.order_id,
        message.market_id,
        message.account_id,
        message.new_price_units_per_kwh,
        message.new_quantity_wh,
        to_ms(message.requested_at),
    )


# Outputs are built without validation (contracts.construct, a fast model_construct): their fields come from
# the domain core, whose invariants are asserted there; tests/unit/test_services.py validates every output
# against its contract.
_OrderEvent = constructor(m.OrderEvent)
_Trade = constructor(m.Trade)
_MarketPrice = constructor(m.MarketPrice)
_SettleTrade = constructor(m.SettleTrade)


def _order_event(event: ob.BookEvent) -> m.OrderEvent | None:
    assert not isinstance(event, ob.Trade)
    at = from_ms(event.at_ms)
    common: dict[str, Any] = {
        "order_id": event.order_id,
        "market_id": event.market_id,
        "account_id": event.account_id,
        "sequence": event.seq,
        "occurred_at": at,
    }
    if isinstance(event, ob.OrderAccepted):
        return _OrderEvent(status=m.OrderStatus.ACCEPTED, remaining_quantity_wh=event.quantity_wh, **common)
    if isinstance(event, ob.OrderRejected):
        return _OrderEvent(status=m.OrderStatus.REJECTED, reason_code=str(event.code), reason=event.reason, **common)
    if isinstance(event, ob.OrderCancelled):
        return _OrderEvent(status=m.OrderStatus.CANCELLED, reason_code=str(event.reason), **common)
    if isinstance(event, ob.OrderAmended):
        return _OrderEvent(status=m.OrderStatus.AMENDED, remaining_quantity_wh=event.quantity_wh, **common)
    if isinstance(event, ob.OrderExpired):
        return _OrderEvent(status=m.OrderStatus.EXPIRED, reason_code=str(event.reason), **common)
    return None


def to_trade(event: ob.Trade, matching_duration_us: int | None = None) -> m.Trade:
    return _Trade(
        trade_id=event.trade_id,
        market_id=event.market_id,
        sequence=event.seq,
        buy_order_id=event.buy_order_id,
        sell_order_id=event.sell_order_id,
        buyer_account_id=event.buyer_account_id,
        seller_account_id=event.seller_account_id,
        aggressor_side=m.Side(event.aggressor_side),
        price_units_per_kwh=event.price_units_per_kwh,
        quantity_wh=event.quantity_wh,
        notional_kaus_units=event.notional_units,
        executed_at=from_ms(event.at_ms),
        matching_duration_us=matching_duration_us,
    )


def to_price(update: PriceUpdate) -> m.MarketPrice:
    return _MarketPrice(
        market_id=update.market_id,
        best_bid_units_per_kwh=update.best_bid_units_per_kwh,
        best_ask_units_per_kwh=update.best_ask_units_per_kwh,
        last_price_units_per_kwh=update.last_price_units_per_kwh,
        vwap_units_per_kwh=update.vwap_units_per_kwh,
        traded_quantity_wh=update.volume_wh,
        sequence=update.update_seq,
        as_of=from_ms(update.at_ms),
    )


Output = tuple[Topic, Any]


@dataclass
class MatchingPartition:
    """One input partition's order books. Deterministic: same inputs, same outputs."""

    partition: int
    engine: ob.OrderBookEngine = field(default_factory=ob.OrderBookEngine)
    prices: PriceDiscovery = field(default_factory=PriceDiscovery)
    next_offset: int = 0  # the next input offset this state expects
    # Where each sell order's energy comes from (carbon credits are minted for renewables only).
    sources: dict[tuple[str, str], m.EnergySource] = field(default_factory=dict)

    def apply(self, offset: int, message: Any | None) -> list[Output]:
        """Apply the command at `offset` (None for a dead-lettered record: it only advances the offset)."""
        assert offset >= self.next_offset, f"partition {self.partition}: offset {offset} already applied"
        self.next_offset = offset + 1
        if message is None:
            return []
        if isinstance(message, m.SubmitOrder) and message.energy_source is not None:
            self.sources.setdefault((message.market_id, message.order_id), message.energy_source)
        started_ns = time.perf_counter_ns()
        events = self.engine.handle(to_command(message))
        # Measured, reported, never used for a decision or an id.
        matching_duration_us = (time.perf_counter_ns() - started_ns) // 1000
        out: list[Output] = []
        for event in events:
            if isinstance(event, ob.Trade):
                trade = to_trade(event, matching_duration_us)
                out.append((ENERGY_TRADES, trade))
                source = self.sources.get((event.market_id, event.sell_order_id))
                out.append(
                    (
                        LEDGER_COMMANDS,
                        _SettleTrade(command_id=trade.trade_id, trade=trade, seller_energy_source=source),
                    )
                )
            else:
                order_event = _order_event(event)
                if order_event is not None:
                    out.append((ENERGY_ORDER_EVENTS, order_event))
        book = self.engine.book(message.market_id)
        if book is not None and events:
            update = self.prices.observe(message.market_id, events, book.best_bid(), book.best_ask(), book.now_ms)
            if update is not None:
                out.append((ENERGY_PRICES, to_price(update)))
        return out


def to_message(cmd: ob.Command) -> m.SubmitOrder | m.CancelOrder | m.AmendOrder:
    """Domain command -> wire contract (what a producer sends); used by demo and load generators."""
    if isinstance(cmd, ob.SubmitOrder):
        return m.SubmitOrder(
            order_id=cmd.order_id,
            market_id=cmd.market_id,
            account_id=cmd.account_id,
            side=m.Side(cmd.side),
            order_type=m.OrderType(cmd.order_type),
            price_units_per_kwh=cmd.price_units_per_kwh,
            quantity_wh=cmd.quantity_wh,
            submitted_at=from_ms(cmd.submitted_at_ms),
            expires_at=from_ms(cmd.expires_at_ms) if cmd.expires_at_ms is not None else None,
        )
    if isinstance(cmd, ob.CancelOrder):
        return m.CancelOrder(
            order_id=cmd.order_id,
            market_id=cmd.market_id,
            account_id=cmd.account_id,
            requested_at=from_ms(cmd.requested_at_ms),
        )
    return m.AmendOrder(
        order_id=cmd.order_id,
        market_id=cmd.market_id,
        account_id=cmd.account_id,
        new_price_units_per_kwh=cmd.new_price_units_per_kwh,
        new_quantity_wh=cmd.new_quantity_wh,
        requested_at=from_ms(cmd.requested_at_ms),
    )
