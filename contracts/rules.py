"""What the platform checks and promises per topic, as README text rendered from the values the code runs with.

Every number here is read, at render time, from the constant or default the platform itself uses (the order
book's `DEFAULT_RULES`, the bridge's `BridgeConfig` and `FxPolicy`, the rail table, the reward tiers, the ledger's
limits, the worker settings), so a changed constant changes the README and the drift test fails until it is
regenerated (`python -m contracts`).
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from contracts import reason_codes as rc
from contracts.models import OrderStatus
from domain import bridge, cashback, fx, ledger, rails
from domain import order_book as ob
from domain import trade_settlement as ts
from domain.ledger import MAX_CLOCK_SKEW_MS, Leg, SettlementKind
from domain.money import KAUS_UNITS_PER_TOKEN, MINOR_UNIT_EXPONENT, Currency
from domain.rails import RailSubstitution
from streams.settings import Settings

MINUTE_MS = 60_000
EXAMPLE_MARKET = "2026-11-24T10:00Z/KR-SEOUL"


def n(value: int) -> str:
    """An integer as the README writes it: 1,000,000."""
    return f"{value:,}"


def seconds(ms: int) -> str:
    return f"{ms / 1000:g} s"


def percent_of_bps(bps: int) -> str:
    return f"{Decimal(bps) / 100:g} %"


def kaus(units: int) -> str:
    """K-AUS base units as K-AUS, exact: 1_000 units -> "0.001"."""
    text = f"{Decimal(units) / KAUS_UNITS_PER_TOKEN:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _setting(name: str) -> object:
    return Settings.model_fields[name].default


# ----------------------------------------------------------------------------- energy.orders


def _band_rule(r: ob.MarketRules) -> str:
    band = r.price_band_bps
    if band is None:
        return "- **Price band**: none.\n"
    ref = r.reference_price_units_per_kwh
    return (
        f"- **Price band**: once the market has a reference price (its last trade"
        f"{'' if ref is None else ', else ' + n(ref)}), a LIMIT price must lie within ±{n(band)} bps "
        f"(±{percent_of_bps(band)}) of it, bounds included: `ref × (10,000 − {n(band)}) ≤ price × 10,000 ≤ "
        f"ref × (10,000 + {n(band)})`, else `REJECTED` `PRICE_OUT_OF_BAND`. "
        + ("Before the market's first trade there is no band. " if ref is None else "")
        + "A MARKET order trades only inside the band.\n"
    )


def order_rules() -> str:
    r = ob.DEFAULT_RULES
    lead = r.gate_closure_lead_ms
    example = ob.parse_market_id(EXAMPLE_MARKET)
    closes = datetime.fromtimestamp((example.delivery_start_ms - lead) / 1000, UTC)
    max_markets = inspect.signature(ob.OrderBookEngine).parameters["max_markets"].default
    return (
        "The matching engine answers every command on `energy.orders.events` (a schema-valid command is never "
        "dead-lettered for these rules). Rules, in the order they are checked:\n\n"
        f"- **Market id** `YYYY-MM-DDTHH:MMZ/REGION`: the delivery interval's start in UTC at minute precision (a "
        f"real date and time), `/`, then the grid region (1–32 of `A-Z 0-9 -`, starting with a letter or digit), "
        f"e.g. `2026-11-24T10:00Z/KR-SEOUL`. Regex: `{ob._MARKET_ID.pattern}`. Otherwise `REJECTED` "
        f"`UNKNOWN_MARKET` (with `sequence` 0: no market was opened). The record key is the market id.\n"
        f"- **Order ids are single-use per market, forever**: an id already submitted to the market (accepted or "
        f"rejected) is `REJECTED` `DUPLICATE_ORDER_ID` and changes nothing. A re-sent SUBMIT therefore gets that "
        f"answer; the original's events are its real answer.\n"
        f"- **Gate closure**: a market accepts commands until **{lead // MINUTE_MS} minutes before its delivery "
        f"start** (`{EXAMPLE_MARKET}` closes at {closes:%Y-%m-%dT%H:%M:%S}Z); at or after it every command is "
        f"`REJECTED` `GATE_CLOSED` and every resting order `EXPIRED` `GATE_CLOSURE`.\n"
        f"- **Time is yours**: a market's clock is the latest `submitted_at` / `requested_at` it has processed; a "
        f"command stamped earlier is processed at that clock (it cannot slip in before the gate). There is no timer: "
        f"expiries and gate closure are applied when the market's next command arrives, and their `EXPIRED` events "
        f"come before that command's answer.\n"
        f"- **Price** (LIMIT orders; required for LIMIT and forbidden for MARKET, else dead letter `INVALID_VALUE`): "
        f"1 to {n(r.max_price_units_per_kwh)} units/kWh ({kaus(r.max_price_units_per_kwh)} K-AUS/kWh), else "
        f"`REJECTED` `INVALID_PRICE` (the schema admits more); a multiple of the **tick, {n(r.tick_size_units)} "
        f"units/kWh** ({kaus(r.tick_size_units)} K-AUS/kWh), else `TICK_SIZE`.\n"
        + _band_rule(r)
        + f"- **Quantity**: 1 to {n(r.max_order_quantity_wh)} Wh per order, else `INVALID_QUANTITY`; a multiple "
        f"of the **lot, {n(r.lot_size_wh)} Wh**, else `LOT_SIZE`. A trade's notional is exactly "
        f"`price × quantity / 1,000` K-AUS units (tick × lot is a multiple of 1,000).\n"
        f"- **Expiry** (`expires_at`, optional): after the order's own time, else `INVALID_EXPIRY`; once the "
        f"market's clock reaches it the order is `EXPIRED` `ORDER_EXPIRY`.\n"
        f"- **Capacity**: at most {n(r.max_resting_orders)} resting orders per market (`BOOK_FULL`) and "
        f"{n(max_markets)} open markets per partition (`TOO_MANY_MARKETS`).\n"
        "- **Matching**: price-time priority; a trade executes at the resting order's price. A MARKET order never "
        "rests: what it cannot fill is `CANCELLED` `IOC_NO_LIQUIDITY` (nothing left) or `IOC_PRICE_BAND` (only "
        "prices outside the band left).\n"
        "- **Self-trade prevention cancels the RESTING order**: when an order would trade with a resting order of "
        "the same account, the resting one is `CANCELLED` `SELF_TRADE_PREVENTION` and the incoming order keeps "
        "matching behind it (the newest instruction is the account's intent).\n"
        "- **CANCEL / AMEND** apply to open orders of the same account only: else `UNKNOWN_ORDER` / `NOT_OWNER`. "
        "AMEND's `new_quantity_wh` is the new *open* quantity; the order keeps its time priority only when the "
        "price is unchanged and the quantity goes down, otherwise it re-queues behind its price level (and may "
        "trade at once). An AMEND that changes nothing is `NO_CHANGE`; its price and quantity are checked as "
        "above.\n"
    )


# ----------------------------------------------------------------------------- bridge.requests


def _hold_example() -> tuple[int, int]:
    policy = fx.FxPolicy()
    rate = Decimal("0.15")
    debit = fx.minor_to_kaus_units(15_000, rate, Currency.USD)
    hold = fx.max_kaus_units_within_slippage(15_000, rate, Currency.USD, policy.slippage_limit_bps)
    return debit, hold


def card_rules() -> str:
    cfg = bridge.BridgeConfig()
    policy = cfg.fx
    limit = policy.slippage_limit_bps
    worst = (Decimal(fx.BPS_PER_UNIT - limit) / fx.BPS_PER_UNIT).normalize()
    debit, hold = _hold_example()
    breaker = rails.DEFAULT_BREAKER
    return (
        "Each request is answered once on `bridge.settlements.completed` or `bridge.settlements.failed` (key "
        "`request_id`); a schema-invalid one is dead-lettered. What the bridge does, in its four phases:\n\n"
        "- **Amounts**: `amount_minor` is what the merchant receives, in minor units of `currency` (cents; whole "
        "units for "
        + ", ".join(f"`{c}`" for c, e in MINOR_UNIT_EXPONENT.items() if e == 0)
        + '). `quoted_rate` is the rate the payer saw: the price of 1 K-AUS in `currency` (e.g. `"0.15"` USD).\n'
        f"- **1. Balance lock — the hold covers the worst accepted rate.** The bridge holds "
        f"`ceil(amount / (quoted_rate × {worst}))` K-AUS (the quoted rate less the {n(limit)} bps slippage limit), "
        f"not `amount / quoted_rate`: a payer whose available balance exactly covers the debit at the quoted rate "
        f"is refused `INSUFFICIENT_FUNDS`. Example: 150.00 USD at 0.15 costs {n(debit)} units "
        f"({kaus(debit)} K-AUS) but needs {n(hold)} units available. A hold above "
        f"{n(ledger.MAX_TRANSFER_UNITS)} units is `AMOUNT_TOO_LARGE`. The hold lives "
        f"{cfg.hold_ttl_ms // MINUTE_MS} minutes.\n"
        f"- **2. FX**: the live rate is the median of the fresh quotes on `fx.rates` (see there); none fresh: "
        f"`STALE_RATE`. If `|live − quoted| / quoted` is {n(limit)} bps ({percent_of_bps(limit)}) **or more**, the "
        f"payment fails `SLIPPAGE` (exactly {percent_of_bps(limit)} fails). The live rate is locked for "
        f"{seconds(policy.lock_ms)}: a payout must start inside the lock (a failover after it fails "
        f"`RATE_LOCK_EXPIRED`). The debit is `ceil(amount / live rate)` K-AUS units (rounded up: the merchant is "
        f"always covered); the rest of the hold is released.\n"
        f"- **3. Merchant credit — rails**: see the rail table below. The bridge takes the fastest available rail "
        f"(expected latency, then fee, then name) among the region's own rail (only for the region's currency) and "
        f"the cross-border fallbacks that pay the currency, skipping rails without an adapter here, rails already "
        f"tried for this payment and rails whose circuit breaker is open ({breaker.failure_threshold} failures in a "
        f"row open it for {seconds(breaker.cooldown_ms)}). A failed payout fails over to another provider, at most "
        f"{cfg.max_providers_per_payment} providers per payment. When the payment went out over another rail than "
        f"the region's, the answer says so: `primary_rail` and `rail_substitution_reason` (its table is under "
        f"`bridge.settlements.completed`), and "
        f"`provider_fee_minor` is the fee of the rail used.\n"
        f"- **4. Confirmation — rewards**: on the K-AUS debited (not the hold), rounded down to a unit: cashback by "
        f"`payer_tier` ("
        + ", ".join(f"{t} {percent_of_bps(bps)}" for t, bps in cashback.CASHBACK_BPS.items())
        + "); plus, when `merchant_program` is "
        + " / ".join(f"`{p}`" for p in sorted(cashback.ECOSYSTEM_PROGRAMS))
        + f", an **ecosystem bonus of {percent_of_bps(cashback.ECOSYSTEM_BONUS_BPS_OF_CASHBACK)} of the cashback** "
        f"(not of the payment).\n"
        "- **Duplicates**: a repeated `request_id` is not paid again; its original answer is re-published with "
        '`"repeat": true` (the same answer, whatever the repeated payload says).\n'
    )


def rail_table() -> str:
    rows = ["| rail | provider | region | currencies | expected latency | fee |\n", "|---|---|---|---|---|---|\n"]
    regions = list(rails.Region)
    for spec in sorted(
        rails.RAILS.values(), key=lambda s: (s.region is None, regions.index(s.region) if s.region else 0)
    ):
        region = f"`{spec.region}` (primary)" if spec.region is not None else "any (fallback)"
        currencies = (
            "all" if spec.currencies == frozenset(Currency) else ", ".join(sorted(str(c) for c in spec.currencies))
        )
        rows.append(
            f"| `{spec.rail}` | `{spec.provider}` | {region} | {currencies} | {spec.expected_latency_ms} ms | "
            f"{fee_text(spec.provider, spec.currencies)} |\n"
        )
    return "".join(rows)


def fee_text(provider: rails.Provider, currencies: frozenset[Currency]) -> str:
    """A rail's fee in the currencies it pays: its percentage (per currency where they differ), a fixed part."""
    schedule = rails.FEES[provider]
    by_bps: dict[int, list[str]] = {}
    for currency in Currency:
        if currency in currencies:
            by_bps.setdefault(schedule.percent_bps[currency], []).append(str(currency))
    if len(by_bps) == 1:
        text = percent_of_bps(next(iter(by_bps)))
    else:
        text = "; ".join(f"{percent_of_bps(bps)} {'/'.join(cs)}" for bps, cs in sorted(by_bps.items()))
    fixed = [f"{schedule.fixed_minor[c]} {c}" for c in Currency if c in currencies and c in schedule.fixed_minor]
    if fixed:
        text += " + " + ", ".join(fixed) + " minor units"
    return text


# ----------------------------------------------------------------------------- fx.rates


def fx_rules() -> str:
    p = fx.FxPolicy()
    ready = _setting("bridge_fx_ready_timeout_s")
    return (
        "Quotes feed the bridge's live rate. Keyed by `quote` currency; `base` is K-AUS unless stated.\n\n"
        f"- **Freshness**: the bridge uses a quote only while `as_of` is at most {seconds(p.max_age_ms)} old and at "
        f"most {seconds(p.max_future_skew_ms)} ahead of its clock. **An FX producer must re-send every currency "
        f"every few seconds** (well under {seconds(p.max_age_ms)}): when every source of a currency is older, card "
        f"payments in it fail `STALE_RATE`. A (re)started bridge waits up to {ready:g} s for fresh quotes before it "
        f"answers any request.\n"
        f"- **Combination**: the newest quote of each `source` counts (an older quote arriving late never "
        f"replaces a newer one of the same source); the live rate is the median of the fresh sources: with three "
        f"the middle one, with two their mean (rounded half-even to {fx.RATE_PLACES} places), with one that quote; "
        f"at least {p.min_fresh_sources} must be fresh.\n"
        "- **Rate text**: `rate` is a positive decimal string (see *Rules every message follows*), never a JSON "
        "number.\n"
        "- `quote_id` identifies the quote (the warehouse loads each once).\n"
    )


# ----------------------------------------------------------------------------- ledger.commands


def ledger_command_rules() -> str:
    return (
        "One partition, kept forever: the ledger applies commands one at a time in log order (a single writer), "
        "so the key (`command_id`) only identifies the command. Upstream systems send `DEPOSIT` (K-AUS arriving: "
        "minted into the account), `REGISTER_HOLDER` (a dividend holder's weight), `DECLARE_DIVIDENDS` (pay the "
        "pool out pro rata) and `GRANT_REWARD` (a reward from an issuance account, answered on `ledger.outcomes`); "
        "`SETTLE_TRADE` is written by matching and `PLACE_HOLD` / `POST_HOLD` / `VOID_HOLD` by "
        "the bridge (answered on `ledger.outcomes`).\n\n"
        f"- **Time**: the broker stamps each record when it appends it; a command's `occurred_at` counts for at "
        f"most {seconds(MAX_CLOCK_SKEW_MS)} past that stamp (a clock far ahead cannot expire every hold), and the "
        f"ledger's clock never goes back.\n"
        f"- **Idempotency**: re-sending a command with the same id and content applies it once (a re-sent hold "
        f"command gets its original outcome again); the same id with other content is refused `ID_CONFLICT`. A "
        f"`DEPOSIT` is answered by its `ledger.transfers` record (`transfer_id` = `command_id`); a re-sent or "
        f"refused deposit writes nothing.\n"
        f"- **Amounts**: 1 to {n(ledger.MAX_TRANSFER_UNITS)} units per movement; a hold expires at most "
        f"{ledger.MAX_HOLD_MS // (24 * 60 * MINUTE_MS)} days ahead.\n"
        f"- **References**: a `PLACE_HOLD` names the transaction it is for in `reference` (the bridge: "
        f"`{SettlementKind.CARD_PAYMENT}` and the `bridge_tx_id`; the hold's record has leg `{Leg.HOLD}`); the ledger "
        f"carries it onto the hold's capture (leg `{Leg.CAPTURE}`) and its void or expiry (`{Leg.RELEASE}`): "
        f"`POST_HOLD` and `VOID_HOLD` have none of their own. A `RewardGrant` or `GRANT_REWARD` names its own "
        f"(`{Leg.CASHBACK}`, `{Leg.BONUS}`). The ledger "
        f"references what it causes itself: a trade's legs, a deposit, a dividend declaration (see "
        f"`ledger.transfers`). Send one with every hold and reward: a movement without one is an orphan in "
        f"finance's tie-out.\n"
        f"- **Trade settlement** (for reading `energy.settlements`): fee {percent_of_bps(ts.FEE_RATE_BPS)} of the "
        f"notional, paid by the seller (remainders carried to the seller's next trade, never rounded away); "
        f"{percent_of_bps(ts.DIVIDEND_SHARE_BPS)} of every fee goes to the dividend pool; renewable sellers earn 1 "
        f"carbon milli-credit per {n(ts.WH_PER_CARBON_MILLICREDIT)} Wh delivered.\n"
    )


# ----------------------------------------------------------------------------- governance and payout rules


def _alert_rules(signal: str) -> list[dict[str, object]]:
    path = Path(str(_setting("alerting_rules_file")))
    rules = tomllib.loads(path.read_text())["rules"]
    return [rule for rule in rules if rule["signal"] == signal]


def _alerts_text(signal: str, what: str) -> str:
    return "; ".join(
        f"`{rule['name']}` fires while {what} {rule['op']} {rule['threshold']} ({rule['severity']})"
        for rule in _alert_rules(signal)
    )


def governance_keys_rules() -> str:
    return (
        "Compacted by `key_id`: the last record of a key is its state; send the whole record again on every "
        f"change. The monitoring agent alerts on it: {_alerts_text('key_expiry', 'the time to `expires_at` is')}; a "
        "RETIRED or DESTROYED version is not watched (it signs and encrypts nothing any more).\n"
    )


def governance_multisig_rules() -> str:
    return (
        "Compacted by `request_id`: the last record of a request is its state; send the whole record on every "
        "change of state or signature count. The monitoring agent alerts on it: "
        + _alerts_text("multisig_pending", "the age of a PENDING request (since `created_at`) is")
        + ".\n"
    )


def payout_rules_rules() -> str:
    codes = ", ".join(f"`{c}`" for c in rc.RULE_MEANINGS)
    return (
        "Compacted by `rule_id`: the last record of a rule is the rule (a newer version replaces it, "
        "`is_active` false stops it, a tombstone — a null value — deletes it). A THRESHOLD rule needs "
        "`threshold_kaus_units` (paid when the holder's available K-AUS is strictly above it: the excess over "
        "`keep_minimum_kaus_units`), a SCHEDULE rule `schedule_type` and `schedule_time_utc` (`HH:MM` UTC; WEEKLY "
        "`schedule_day` 0-6 with 0 = Sunday, MONTHLY 1-31 where 29-31 fall on a shorter month's last day), a "
        "DIVIDEND rule `dividend_source`. `max_payout_per_tx_kaus_units` caps each payout; the rest waits for the "
        "rule's next trigger. A rule that cannot work is dead-lettered with one of "
        f"{codes} (docs/payouts.md); the holder must be KYC-verified before anything is paid.\n"
    )


def governance_requests_rules() -> str:
    return (
        "One record per request; `nonce` is single-use across requests and `expires_at` bounds how long it may "
        "collect signatures and wait for its timelock. The signers sign the request's canonical hash "
        "(docs/governance.md); the lifecycle is published on `governance.multisig`.\n"
    )


def governance_approvals_rules() -> str:
    return (
        "One record per signer and request: `request_hash` must be the request's canonical hash and `signature` an "
        "ECDSA P-256 signature over it (DER, base64) by a key of the signer set; anything else is refused with a "
        "reason on `governance.multisig`.\n"
    )


UPSTREAM_RULES: dict[str, Callable[[], str]] = {
    "energy.orders": order_rules,
    "bridge.requests": card_rules,
    "fx.rates": fx_rules,
    "ledger.commands": ledger_command_rules,
    "payouts.rules": payout_rules_rules,
    "governance.keys": governance_keys_rules,
    "governance.multisig": governance_multisig_rules,
    "governance.requests": governance_requests_rules,
    "governance.approvals": governance_approvals_rules,
}


# ----------------------------------------------------------------------------- answers: codes and semantics


@dataclass(frozen=True)
class CodeTable:
    """The codes one field of an answer topic can carry (the field's schema lists exactly these)."""

    field: str
    codes: tuple[str, ...]
    meanings: Mapping[str, str]


ORDER_STATUS_MEANINGS: dict[str, str] = {
    OrderStatus.ACCEPTED: "the order is valid and entered the book (it may trade at once: fills follow); "
    "`remaining_quantity_wh` is its whole quantity",
    OrderStatus.REJECTED: "refused, nothing changed; `reason_code` says why (table below)",
    OrderStatus.PARTIALLY_FILLED: "a trade filled part of the order; it stays open for `remaining_quantity_wh`",
    OrderStatus.FILLED: "a trade filled the rest of the order; it is done",
    OrderStatus.AMENDED: "the AMEND applied; `remaining_quantity_wh` is the new open quantity (fills may follow "
    "if the new price crosses)",
    OrderStatus.CANCELLED: "the order left the book (`reason_code`: by request, self-trade prevention, or a "
    "MARKET order's unfilled rest)",
    OrderStatus.EXPIRED: "the order reached its expiry or the market's gate closed (`reason_code`)",
}

ANSWER_CODES: dict[str, tuple[CodeTable, ...]] = {
    "energy.orders.events": (
        CodeTable("status", tuple(OrderStatus), ORDER_STATUS_MEANINGS),
        CodeTable("reason_code", rc.ORDER_EVENT_CODES, rc.ORDER_EVENT_MEANINGS),
    ),
    "energy.settlements": (CodeTable("reason_code", rc.SETTLEMENT_CODES, rc.SETTLEMENT_MEANINGS),),
    "ledger.outcomes": (CodeTable("reason_code", rc.LEDGER_CODES, rc.LEDGER_MEANINGS),),
    "bridge.settlements.completed": (
        CodeTable("rail_substitution_reason", tuple(RailSubstitution), rc.RAIL_SUBSTITUTION_MEANINGS),
    ),
    "bridge.settlements.failed": (CodeTable("reason_code", rc.BRIDGE_FAILURE_CODES, rc.BRIDGE_FAILURE_MEANINGS),),
    "payouts.results": (CodeTable("reason_code", rc.PAYOUT_FAILURE_CODES, rc.PAYOUT_FAILURE_MEANINGS),),
    "payouts.waiting": (CodeTable("reason_code", rc.PAYOUT_WAIT_CODES, rc.PAYOUT_WAIT_MEANINGS),),
    "governance.multisig": (CodeTable("reason_code", rc.GOVERNANCE_CODES, rc.GOVERNANCE_MEANINGS),),
    "platform.deadletters": (CodeTable("reason_code", rc.DEAD_LETTER_CODES, rc.REASON_CODES),),
}


def order_event_notes() -> str:
    return (
        "- Every SUBMIT gets exactly one `ACCEPTED` or `REJECTED`; every CANCEL / AMEND one `CANCELLED` / `AMENDED` "
        "or `REJECTED`. After that an order gets one `PARTIALLY_FILLED` or `FILLED` event per trade, each with "
        "`trade_id`, `fill_quantity_wh` and `fill_price_units_per_kwh`.\n"
        "- **`remaining_quantity_wh` is the order's open quantity after the event**: the open quantity of an order "
        "is the value in its latest event; 0 means the order is done (`FILLED`, `CANCELLED`, `EXPIRED`, "
        "`REJECTED`). No need to rebuild it from ACCEPTED minus fills.\n"
        "- `sequence` counts every event of a market (gap-free, increasing); **the two fill events of a trade share "
        "the trade's `sequence`** (the buy order's first, then the sell order's), so the unique id of an event is "
        "(`market_id`, `sequence`, `order_id`). A rejection for a market that could not be opened "
        "(`UNKNOWN_MARKET`, `TOO_MANY_MARKETS`) has `sequence` 0.\n"
        "- `occurred_at` is the market's clock (the commands' own times), not the wall clock.\n"
    )


def price_notes() -> str:
    return (
        "- Compacted by market: the latest record is the market's price picture. A record is written only when "
        "something in it changed (no heartbeat): its age says nothing about staleness; `as_of` is the market's "
        "clock at the change.\n"
        "- `best_bid_quantity_wh` / `best_ask_quantity_wh` are the open quantity of all orders at the best price; "
        "price and size are null together when that side of the book is empty.\n"
        "- `sequence` increases by one per record of a market: drop a record whose `sequence` is not above the last "
        "one you applied. `vwap_units_per_kwh` is the exact volume-weighted price of every trade so far, rounded "
        "half-even to a unit.\n"
    )


def ledger_transfer_notes() -> str:
    return (
        "- `asset` names the unit of `amount_units`: `KAUS` (K-AUS base units, 1 K-AUS = "
        f"{n(KAUS_UNITS_PER_TOKEN)} units) or `CARBON_MILLICREDIT` (1/1,000 carbon credit: the carbon mint, "
        f"`{ts.SYS_CARBON}` → `carbon:<account>`). Never add amounts of different assets.\n"
        "- `kind`: `POSTED` moves at once; `PENDING` is a hold (reserved, not moved); `POST_PENDING` captures a "
        "hold (`pending_id`) and `VOID_PENDING` releases it. A hold that expired is released by a `VOID_PENDING` "
        "with `transfer_id` `<hold id>:expired`.\n"
        "- Transfer ids derive from the cause: `<trade_id>/pay`, `/fee`, `/dividend`, `/carbon` for a trade, the "
        "deposit's `command_id`, and for a card payment `BRIDGE-<request_id>` followed by `:hold`, `:post`, "
        "`:void`, `:cashback` or `:bonus`.\n"
        "- **`reference` links every movement the platform writes to its business transaction** (match on it, not "
        "on transfer ids or `reason`, which is free text): `kind` and `id` name the transaction, `leg` which part "
        "of it the movement is.\n"
        + "".join(f"  - `{kind}` (`id` {what}): {legs}.\n" for kind, what, legs in _REFERENCE_KINDS)
        + "- K-AUS a transaction moved is its posted legs (`POSTED`, `POST_PENDING`): a card payment's "
        f"`{Leg.CAPTURE}` is its `kaus_debited_units`, `{Leg.CASHBACK}` / `{Leg.BONUS}` its `cashback_kaus_units` / "
        f"`ecosystem_bonus_kaus_units`; a trade's `{Leg.PAYMENT}` is its `notional_kaus_units` and `{Leg.FEE}` its "
        f"`fee_kaus_units`. A `{Leg.HOLD}` or `{Leg.RELEASE}` moves nothing.\n"
    )


_REFERENCE_KINDS = (
    (
        SettlementKind.TRADE,
        "the `trade_id`",
        f"`{Leg.PAYMENT}` (buyer → seller), `{Leg.FEE}` (seller → `{ts.SYS_FEES}`), `{Leg.DIVIDEND_POOL}` "
        f"(`{ts.SYS_FEES}` → `{ts.SYS_DIVIDENDS}`), `{Leg.CARBON}` (the carbon mint, in milli-credits)",
    ),
    (
        SettlementKind.CARD_PAYMENT,
        "the `bridge_tx_id` of `bridge.settlements.*`",
        f"`{Leg.HOLD}` (`PENDING`), then `{Leg.CAPTURE}` (`POST_PENDING`) or `{Leg.RELEASE}` (`VOID_PENDING`, a void "
        f"or the expiry), and the rewards riding on the capture, `{Leg.CASHBACK}` and `{Leg.BONUS}`",
    ),
    (SettlementKind.DEPOSIT, "the deposit's `command_id`", f"`{Leg.DEPOSIT}` (minted into the account)"),
    (SettlementKind.DIVIDEND, "the declaration's `command_id`", f"`{Leg.DIVIDEND}` (pool → holder), one per holder"),
    (SettlementKind.PAYOUT, "the `payout_id`", f"`{Leg.PAYOUT}` (not written by this release: no payout executes)"),
)


def bridge_answer_notes() -> str:
    return (
        "- Exactly one answer per `request_id`, on `completed` or `failed`. **A repeated `request_id` is answered "
        'again** by re-publishing the original answer with `"repeat": true`; the payment happened once. Apply '
        "each `request_id` once (a repeat after a crash may also come without the mark).\n"
        "- One payer's payments are settled in the order of their records (the key is the payer); payments of "
        "different payers run concurrently, so their answers come in no particular order.\n"
        "- `rail` is the rail that paid; `primary_rail` the region's own rail; when they differ, "
        "`rail_substitution_reason` says why (e.g. a JP payment over `WISE` because PayPay was unavailable), and "
        "`provider_fee_minor` is the fee of `rail`.\n"
        "- A failed payment's hold is released (`failed_phase` says how far it got); K-AUS is never left locked.\n"
    )


ANSWER_NOTES: dict[str, Callable[[], str]] = {
    "energy.orders.events": order_event_notes,
    "energy.prices": price_notes,
    "ledger.transfers": ledger_transfer_notes,
    "bridge.settlements.completed": bridge_answer_notes,
    "bridge.settlements.failed": bridge_answer_notes,
}
