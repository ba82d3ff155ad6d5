"""Service layer for order matching: contracts in, domain engine, contracts out.

No Faust here: the Faust agent and the plain confluent-kafka loop (bench) both
drive a `MatchingPartition`, which owns one input partition's engine and knows
the last input offset it applied — the basis of replay-on-restart (see
docs/state-and-recovery.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from contracts import ledger_codec
from contracts import models as m
from contracts.construct import Encoded, dump_json, utc_text
from contracts.topics import ENERGY_ORDER_EVENTS, ENERGY_PRICES, ENERGY_TRADES, LEDGER_COMMANDS, Topic
from domain import order_book as ob
from domain.price_discovery import PriceDiscovery, PriceUpdate
from domain.timeconv import from_ms, to_ms


def to_command(message: m.SubmitOrder | m.CancelOrder | m.AmendOrder) -> ob.Command:
    if isinstance(message, m.SubmitOrder):
        return ob.SubmitOrder(
            message.order_id,
            message.market_id,
            message.account_id,
            message.side,  # the contract's Side and OrderType are the domain's
            message.order_type,
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


# Outputs are encoded straight from the domain events (contracts.construct.Encoded): no model is built. The
# dicts list each contract's fields in declaration order, as pydantic writes them; tests/unit/test_output_bytes.py
# holds every record to the bytes of its validated model, and test_services.py validates them.
_ACCEPTED, _REJECTED, _CANCELLED = m.OrderStatus.ACCEPTED, m.OrderStatus.REJECTED, m.OrderStatus.CANCELLED
_AMENDED, _EXPIRED = m.OrderStatus.AMENDED, m.OrderStatus.EXPIRED
_FILLED, _PARTIALLY_FILLED = m.OrderStatus.FILLED, m.OrderStatus.PARTIALLY_FILLED
_decode_order_event = ENERGY_ORDER_EVENTS.decode
_decode_trade = ENERGY_TRADES.decode
_decode_price = ENERGY_PRICES.decode
_decode_command = LEDGER_COMMANDS.decode


def order_event_record(event: ob.BookEvent) -> Encoded | None:
    """The `energy.orders.events` record of a book event (None for a trade: see `fill_records`)."""
    if isinstance(event, ob.Trade):
        return None
    reason_code: str | None = None
    reason: str | None = None
    remaining = 0
    if isinstance(event, ob.OrderAccepted):
        status, remaining = _ACCEPTED, event.quantity_wh
    elif isinstance(event, ob.OrderRejected):
        status, reason_code, reason = _REJECTED, str(event.code), event.reason
    elif isinstance(event, ob.OrderCancelled):
        status, reason_code = _CANCELLED, str(event.reason)
    elif isinstance(event, ob.OrderAmended):
        status, remaining = _AMENDED, event.quantity_wh
    elif isinstance(event, ob.OrderExpired):
        status, reason_code = _EXPIRED, str(event.reason)
    else:
        return None
    market_id = event.market_id
    value = dump_json(
        {
            "order_id": event.order_id,
            "market_id": market_id,
            "account_id": event.account_id,
            "status": status,
            "reason_code": reason_code,
            "reason": reason,
            "remaining_quantity_wh": remaining,
            "trade_id": None,
            "fill_quantity_wh": None,
            "fill_price_units_per_kwh": None,
            "sequence": event.seq,
            "occurred_at": utc_text(event.at_ms),
        }
    )
    return Encoded(market_id.encode(), value, _decode_order_event)


def fill_records(trade: ob.Trade) -> tuple[Encoded, Encoded]:
    """The `energy.orders.events` records of a trade: the buy order's fill, then the sell order's.

    One dict serves both (they differ in the order, its account, status and remaining): a trade is hot.
    """
    buy_remaining, sell_remaining = trade.buy_remaining_wh, trade.sell_remaining_wh
    assert buy_remaining is not None and sell_remaining is not None, "a trade from the book carries both"
    market_id = trade.market_id
    fill = {
        "order_id": trade.buy_order_id,
        "market_id": market_id,
        "account_id": trade.buyer_account_id,
        "status": _PARTIALLY_FILLED if buy_remaining else _FILLED,
        "reason_code": None,
        "reason": None,
        "remaining_quantity_wh": buy_remaining,
        "trade_id": trade.trade_id,
        "fill_quantity_wh": trade.quantity_wh,
        "fill_price_units_per_kwh": trade.price_units_per_kwh,
        "sequence": trade.seq,
        "occurred_at": utc_text(trade.at_ms),
    }
    buy = dump_json(fill)
    fill["order_id"], fill["account_id"] = trade.sell_order_id, trade.seller_account_id
    fill["status"] = _PARTIALLY_FILLED if sell_remaining else _FILLED
    fill["remaining_quantity_wh"] = sell_remaining
    key = market_id.encode()
    return Encoded(key, buy, _decode_order_event), Encoded(key, dump_json(fill), _decode_order_event)


def trade_value(event: ob.Trade, matching_duration_us: int | None = None) -> bytes:
    """The `energy.trades` value of a trade (the `trade` of its SettleTrade command too)."""
    return dump_json(
        {
            "trade_id": event.trade_id,
            "market_id": event.market_id,
            "sequence": event.seq,
            "buy_order_id": event.buy_order_id,
            "sell_order_id": event.sell_order_id,
            "buyer_account_id": event.buyer_account_id,
            "seller_account_id": event.seller_account_id,
            "aggressor_side": event.aggressor_side,
            "price_units_per_kwh": event.price_units_per_kwh,
            "quantity_wh": event.quantity_wh,
            "notional_kaus_units": event.notional_units,
            "executed_at": utc_text(event.at_ms),
            "matching_duration_us": matching_duration_us,
        }
    )


def settle_trade_value(trade_id: str, trade: bytes, source: m.EnergySource | None) -> bytes:
    """The `ledger.commands` value of a SettleTrade for the encoded `trade` (no second pass over its fields)."""
    return ledger_codec.settle_trade(trade_id, trade, source)


def price_record(update: PriceUpdate) -> Encoded:
    value = dump_json(
        {
            "market_id": update.market_id,
            "best_bid_units_per_kwh": update.best_bid_units_per_kwh,
            "best_ask_units_per_kwh": update.best_ask_units_per_kwh,
            "best_bid_quantity_wh": update.best_bid_quantity_wh,
            "best_ask_quantity_wh": update.best_ask_quantity_wh,
            "last_price_units_per_kwh": update.last_price_units_per_kwh,
            "vwap_units_per_kwh": update.vwap_units_per_kwh,
            "traded_quantity_wh": update.volume_wh,
            "sequence": update.update_seq,
            "as_of": utc_text(update.at_ms),
        }
    )
    return Encoded(update.market_id.encode(), value, _decode_price)


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

    def apply(self, offset: int, message: Any | None, record_ms: int | None = None) -> list[Output]:
        """Apply the command at `offset` (None for a dead-lettered record: it only advances the offset).
        ``record_ms`` (the record's broker time) is not used here: orders carry their own time."""
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
            if type(event) is ob.Trade:
                trade = trade_value(event, matching_duration_us)
                out.append((ENERGY_TRADES, Encoded(event.market_id.encode(), trade, _decode_trade)))
                source = self.sources.get((event.market_id, event.sell_order_id))
                command = settle_trade_value(event.trade_id, trade, source)
                out.append((LEDGER_COMMANDS, Encoded(event.trade_id.encode(), command, _decode_command)))
                buy_fill, sell_fill = fill_records(event)
                out.append((ENERGY_ORDER_EVENTS, buy_fill))
                out.append((ENERGY_ORDER_EVENTS, sell_fill))
            else:
                order_event = order_event_record(event)
                if order_event is not None:
                    out.append((ENERGY_ORDER_EVENTS, order_event))
        book = self.engine.book(message.market_id)
        if book is not None and events:
            update = self.prices.observe(message.market_id, events, book.top_of_book(), book.now_ms)
            if update is not None:
                out.append((ENERGY_PRICES, price_record(update)))
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
