"""Issue 22 acceptance: a producer written from contracts/README.md and contracts/schemas alone.

Written as another team would write it: plain confluent-kafka, hand-written JSON, and no import of this
repository's contracts/, domain/ or streams/. The fixtures only stand the platform up (the broker, the P2P worker
with matching and the ledger, the bridge with the payout-provider simulator); from there on the test is a
producer and a consumer: it submits orders, deposits, FX quotes and card payments, and reads the answers a front
end reads. The numbers it needs (tick, lot, band, gate closure, quote freshness, slippage, cashback) it reads from
the README's rules sections; every answer code it meets must be in the README's tables.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from math import ceil
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from jsonschema import Draft202012Validator

# Test infrastructure only (the broker, the simulator, worker processes): not the platform's code.
from tests.integration.provider_fixtures import free_port, provider_sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
README = (CONTRACTS / "README.md").read_text()
ANSWER_TIMEOUT_S = 40.0

PRICE = 150_000  # units per kWh: 0.15 K-AUS
KAUS_UNITS = 1_000_000  # 1 K-AUS in base units (README, "Money is integers")
FX_REFRESH_S = 2.0  # "An FX producer must re-send every currency every few seconds" (README, `fx.rates`)
# One KAUS/X rate per platform currency (the bridge converts into each): what our FX desk would publish.
RATES = {
    "USD": "0.15",
    "EUR": "0.138",
    "GBP": "0.119",
    "JPY": "22.5",
    "KRW": "205",
    "AUD": "0.23",
    "SGD": "0.2",
    "AED": "0.55",
    "CNY": "1.08",
}
STALE_CURRENCY, STALE_RATE = "HKD", "1.17"  # quoted once, past the freshness limit: no fresh HKD rate exists
SOURCES = ("NEXUS_INTERNAL", "BLOOMBERG", "REUTERS")

ANSWER_TOPICS = {  # topic -> the value field that is its record key (README, "Topics")
    "energy.orders.events": "market_id",
    "energy.trades": "market_id",
    "energy.prices": "market_id",
    "bridge.settlements.completed": "request_id",
    "bridge.settlements.failed": "request_id",
    "platform.deadletters": "source_topic",
}
INPUT_KEYS = {
    "energy.orders": "market_id",
    "ledger.commands": "command_id",
    "fx.rates": "quote",
    "bridge.requests": "payer_account_id",
}


def readme_section(topic: str) -> str:
    start = README.index(f"### `{topic}`")
    end = README.find("\n### ", start + 1)
    return README[start : end if end > 0 else None]


def stated(topic: str, pattern: str, what: str) -> int:
    """A number the README's section on `topic` states (the first group of `pattern`)."""
    found = re.search(pattern, readme_section(topic))
    assert found, f"contracts/README.md, `{topic}`: {what} not found ({pattern})"
    return int(found.group(1).replace(",", ""))


@dataclass(frozen=True)
class Rules:
    """The numbers this producer relies on, as the README states them."""

    tick_units: int
    lot_wh: int
    band_bps: int
    gate_closure: timedelta
    fx_max_age: timedelta
    slippage_bps: int
    gold_cashback_percent: int
    ecosystem_bonus_percent: int

    @classmethod
    def from_readme(cls) -> Rules:
        orders, cards = "energy.orders", "bridge.requests"
        return cls(
            tick_units=stated(orders, r"\*\*tick, ([\d,]+) units/kWh", "the tick"),
            lot_wh=stated(orders, r"\*\*lot, ([\d,]+) Wh", "the lot"),
            band_bps=stated(orders, r"within ±([\d,]+) bps", "the price band"),
            gate_closure=timedelta(minutes=stated(orders, r"(\d+) minutes before its delivery start", "gate closure")),
            fx_max_age=timedelta(seconds=stated("fx.rates", r"at most (\d+) s old", "the quote freshness")),
            slippage_bps=stated(cards, r"less the (\d+) bps slippage limit", "the hold's slippage limit"),
            gold_cashback_percent=stated(cards, r"GOLD (\d+) ?%", "GOLD cashback"),
            ecosystem_bonus_percent=stated(cards, r"ecosystem bonus of (\d+) ?% of the cashback", "the bonus"),
        )

    def hold_units(self, amount_minor: int, minor_per_unit: int, quoted_rate: str) -> int:
        """The hold: `ceil(amount / (quoted_rate × (1 − slippage limit)))` K-AUS units."""
        worst = Fraction(quoted_rate) * (10_000 - self.slippage_bps) / 10_000
        return ceil(Fraction(amount_minor, minor_per_unit) / worst * KAUS_UNITS)


@pytest.fixture(scope="module")
def rules() -> Rules:
    return Rules.from_readme()


def documented(*codes: str) -> None:
    """The README names each code (in its reason-code tables), as a producer switching on it needs."""
    missing = [code for code in codes if f"`{code}`" not in README]
    assert not missing, f"contracts/README.md does not document {missing}"


def now_text(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------- a producer and a consumer


class Client:
    """What another team's service holds: one producer, one consumer of the answer topics from their current end."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
        self.schemas = {
            topic: Draft202012Validator(json.loads((CONTRACTS / "schemas" / f"{topic}.schema.json").read_text()))
            for topic in INPUT_KEYS
        }
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"external-front-end-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        metadata = self.consumer.list_topics(timeout=30).topics
        self.consumer.assign(
            [
                TopicPartition(t, p, self.end_of(TopicPartition(t, p)))
                for t in ANSWER_TOPICS
                for p in metadata[t].partitions
            ]
        )
        self.seen: list[tuple[str, bytes | None, dict[str, Any]]] = []  # (topic, key, value) of every answer

    def end_of(self, partition: TopicPartition) -> int:
        """Its end offset, once the partition has a leader (topics just made elect theirs)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return int(self.consumer.get_watermark_offsets(partition, timeout=10)[1])
            except KafkaException:
                assert time.monotonic() < deadline, f"no leader for {partition}"
                time.sleep(0.5)

    def send(self, topic: str, message: dict[str, Any], key: str | None = None, check: bool = True) -> None:
        """Produce one hand-written message, keyed by its key field (README); checked against the published schema
        first, as our CI would, unless it is wrong on purpose."""
        if check:
            errors = [e.message for e in self.schemas[topic].iter_errors(message)]
            assert not errors, f"{topic}: our message breaks the published schema: {errors}"
        self.send_raw(topic, (key if key is not None else message[INPUT_KEYS[topic]]).encode(), json.dumps(message))

    def send_raw(self, topic: str, key: bytes, value: str | bytes) -> None:
        self.producer.produce(topic, key=key, value=value)
        assert self.producer.flush(30) == 0

    def wait(self, what: str, found: Callable[[list[tuple[str, bytes | None, dict[str, Any]]]], Any]) -> Any:
        """Poll the answers until `found(answers)` is truthy; returns it."""
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            for msg in self.consumer.consume(500, timeout=0.2):
                if not msg.error() and msg.value():
                    self.seen.append((str(msg.topic()), msg.key(), json.loads(msg.value() or b"")))
            result = found(self.seen)
            if result:
                return result
            assert time.monotonic() < deadline, f"no answer after {ANSWER_TIMEOUT_S:.0f} s: {what}"

    def answers(self, topic: str, **match: Any) -> list[dict[str, Any]]:
        """The answers on `topic` whose fields equal `match`, in the order read; each keyed as the README says."""
        out = []
        for seen_topic, key, value in self.seen:
            if seen_topic == topic and all(value.get(k) == v for k, v in match.items()):
                assert key == str(value[ANSWER_TOPICS[topic]]).encode(), f"{topic}: key {key!r} for {value}"
                out.append(value)
        return out

    def dead_letters(self, source_topic: str, token: str) -> list[dict[str, Any]]:
        """The dead letters of `source_topic` whose original value carries `token`."""
        return [
            letter
            for letter in self.answers("platform.deadletters", source_topic=source_topic)
            if token.encode() in base64.b64decode(letter["value_b64"])
        ]

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class Platform:
    client: Client
    token: str  # in every id of this module, so nothing of another test's is read


def fx_quote(source: str, currency: str, rate: str, as_of: str, token: str) -> dict[str, Any]:
    return {
        "quote_id": f"{source}:{currency}:{as_of}:{token}",
        "source": source,
        "base": "KAUS",
        "quote": currency,
        "rate": rate,
        "as_of": as_of,
    }


@pytest.fixture(scope="module")
def platform(
    kafka_bootstrap: str,
    kafka: Any,
    provider_sim: Any,
    sim_keys_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    rules: Rules,
) -> Iterator[Platform]:
    """The platform as a deployment runs it (`kafka` has made the topics), and our client of it. Our FX desk
    re-sends a quote per source and currency every 2 s from the start, except HKD: quoted once, already stale."""
    token = uuid.uuid4().hex[:10]
    provider_sim.reset()
    client = Client(kafka_bootstrap)
    for source in SOURCES:
        client.send(
            "fx.rates",
            fx_quote(source, STALE_CURRENCY, STALE_RATE, now_text(-rules.fx_max_age - timedelta(seconds=1)), token),
        )
    stop = threading.Event()
    desk = Producer({"bootstrap.servers": kafka_bootstrap})

    def publish() -> None:
        while not stop.is_set():
            as_of = now_text()
            for currency, rate in RATES.items():
                for source in SOURCES:
                    desk.produce(
                        "fx.rates",
                        key=currency.encode(),
                        value=json.dumps(fx_quote(source, currency, rate, as_of, token)),
                    )
            desk.flush(10)
            stop.wait(FX_REFRESH_S)

    feed = threading.Thread(target=publish, daemon=True)
    feed.start()
    data_dir = tmp_path_factory.mktemp("external-producer")
    provider_env = {
        "NEXUS_PROVIDER_SIM_URL": provider_sim.url,
        "NEXUS_PROVIDER_KEYS_DIR": str(sim_keys_dir),
        "NEXUS_PROVIDER_TRANSPORT": "aiohttp",
        "NEXUS_BRIDGE_FX_READY_TIMEOUT_S": "3",  # it waits for fresh HKD quotes, which never come
    }
    workers = [
        WorkerProcess(kafka_bootstrap, f"nexus-ext-p2p-{token}", data_dir, free_port(), free_port(),
                      {"NEXUS_AGENTS": "matching,settlement"}, module="streams.p2p"),
        WorkerProcess(kafka_bootstrap, f"nexus-ext-bridge-{token}", data_dir, free_port(), free_port(),
                      provider_env, module="streams.bridge.loop"),
    ]  # fmt: skip
    try:
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready()
        yield Platform(client, token)
    finally:
        for worker in workers:
            worker.stop()
        stop.set()
        feed.join(10)
        client.close()


# ----------------------------------------------------------------------------- orders


def market_id(region: str, delivery: datetime) -> str:
    return f"{delivery:%Y-%m-%dT%H:%M}Z/{region}"


def next_delivery() -> datetime:
    """A delivery interval two hours ahead: its gate is open for the whole test."""
    return (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)


def submit(
    order_id: str, market: str, account: str, side: str, price: int | None, quantity_wh: int, order_type: str = "LIMIT"
) -> dict[str, Any]:
    return {
        "type": "SUBMIT",
        "order_id": order_id,
        "market_id": market,
        "account_id": account,
        "side": side,
        "order_type": order_type,
        "price_units_per_kwh": price,
        "quantity_wh": quantity_wh,
        "energy_source": "SOLAR" if side == "SELL" else None,
        "submitted_at": now_text(),
        "expires_at": None,
    }


def cancel(order_id: str, market: str, account: str) -> dict[str, Any]:
    return {
        "type": "CANCEL",
        "order_id": order_id,
        "market_id": market,
        "account_id": account,
        "requested_at": now_text(),
    }


def events_of(client: Client, order_id: str) -> list[dict[str, Any]]:
    return client.answers("energy.orders.events", order_id=order_id)


def latest(client: Client, order_id: str, status: str) -> Callable[[Any], dict[str, Any] | None]:
    """A wait condition: the order's latest event, once it has that status."""

    def found(_: Any) -> dict[str, Any] | None:
        events = events_of(client, order_id)
        return events[-1] if events and events[-1]["status"] == status else None

    return found


def test_orders_fill_with_remaining_quantities_and_prices_carry_sizes(platform: Platform) -> None:
    """README `energy.orders.events`: every trade adds a PARTIALLY_FILLED or FILLED event per side, with the trade,
    the fill and the open quantity left (`remaining_quantity_wh` of an order's latest event); `energy.prices`:
    the best bid and ask with the open quantity at each (all orders at that price)."""
    client, t = platform.client, platform.token
    market = market_id(f"F{t.upper()}", next_delivery())
    seller, buyer, other = f"acct-seller-{t}", f"acct-buyer-{t}", f"acct-other-{t}"
    sell, buy, buy_rest = f"f-sell-{t}", f"f-buy-{t}", f"f-buy-rest-{t}"
    client.send("energy.orders", submit(sell, market, seller, "SELL", PRICE, 2_500))
    client.send("energy.orders", submit(buy, market, buyer, "BUY", PRICE, 1_000))
    filled = client.wait(f"{buy} FILLED", latest(client, buy, "FILLED"))
    partly = client.wait(f"{sell} PARTIALLY_FILLED", latest(client, sell, "PARTIALLY_FILLED"))
    accepted = events_of(client, sell)[0]
    assert (accepted["status"], accepted["remaining_quantity_wh"]) == ("ACCEPTED", 2_500), accepted
    [trade] = client.wait("the trade", lambda _: client.answers("energy.trades", market_id=market))
    assert (trade["buy_order_id"], trade["sell_order_id"], trade["quantity_wh"]) == (buy, sell, 1_000)
    for event, remaining in ((filled, 0), (partly, 1_500)):
        assert (event["trade_id"], event["sequence"]) == (trade["trade_id"], trade["sequence"]), event
        assert (event["fill_quantity_wh"], event["fill_price_units_per_kwh"]) == (1_000, PRICE), event
        assert event["remaining_quantity_wh"] == remaining, event

    # two bids at one price (their sizes add up), an ask above, then the rest of the sell order is taken
    client.send("energy.orders", submit(f"f-bid-1-{t}", market, buyer, "BUY", PRICE - 1_000, 500))
    client.send("energy.orders", submit(f"f-bid-2-{t}", market, other, "BUY", PRICE - 1_000, 300))
    client.send("energy.orders", submit(f"f-ask-{t}", market, other, "SELL", PRICE + 2_000, 700))
    client.send("energy.orders", submit(buy_rest, market, buyer, "BUY", PRICE, 1_500))
    done = client.wait(f"{sell} FILLED", latest(client, sell, "FILLED"))
    assert (done["remaining_quantity_wh"], done["fill_quantity_wh"]) == (0, 1_500), done
    assert client.wait(f"{buy_rest} FILLED", latest(client, buy_rest, "FILLED"))["remaining_quantity_wh"] == 0

    def settled_prices(_: Any) -> dict[str, Any] | None:
        prices = client.answers("energy.prices", market_id=market)
        last = max(prices, key=lambda p: p["sequence"]) if prices else None
        return last if last and last["traded_quantity_wh"] == 2_500 else None

    price = client.wait("energy.prices after both trades", settled_prices)
    assert (price["best_bid_units_per_kwh"], price["best_bid_quantity_wh"]) == (PRICE - 1_000, 800), price
    assert (price["best_ask_units_per_kwh"], price["best_ask_quantity_wh"]) == (PRICE + 2_000, 700), price
    assert (price["last_price_units_per_kwh"], price["vwap_units_per_kwh"]) == (PRICE, PRICE), price


Answer = tuple[str, str | None]  # ("REJECTED", code) and the like from the book, ("dead letter", code) from the ingress


def first_answer(client: Client, order_id: str, after: int) -> Callable[[Any], Answer | None]:
    """A wait condition: the first answer to an order past its first `after` events."""

    def found(_: Any) -> Answer | None:
        events = events_of(client, order_id)[after:]
        if events:
            return str(events[0]["status"]), events[0]["reason_code"]
        letters = client.dead_letters("energy.orders", f'"{order_id}"')
        return ("dead letter", str(letters[0]["reason_code"])) if letters else None

    return found


def test_every_order_rule_is_answered_with_its_documented_code(platform: Platform, rules: Rules) -> None:
    """README `energy.orders` rules and the reason codes of `energy.orders.events` (and of the dead letters)."""
    client, t = platform.client, platform.token
    market = market_id(f"R{t.upper()}", next_delivery())
    a, b, c = f"acct-a-{t}", f"acct-b-{t}", f"acct-c-{t}"
    # a trade at PRICE: the reference of the band from here on
    client.send("energy.orders", submit(f"r-sell-{t}", market, a, "SELL", PRICE, 1_000))
    client.send("energy.orders", submit(f"r-buy-{t}", market, b, "BUY", PRICE, 1_000))
    client.wait("the reference trade", latest(client, f"r-buy-{t}", "FILLED"))
    client.wait("the reference trade", latest(client, f"r-sell-{t}", "FILLED"))
    band_high = PRICE * (10_000 + rules.band_bps) // 10_000  # bounds included
    band_low = PRICE * (10_000 - rules.band_bps) // 10_000
    tick, lot = rules.tick_units, rules.lot_wh
    closed = datetime.now(UTC).replace(second=0, microsecond=0) + rules.gate_closure - timedelta(minutes=5)
    gate_market = market_id(f"G{t.upper()}", closed)  # its gate closed 5 minutes ago
    not_a_market = f"{next_delivery():%Y-%m-%dT%H:%M}/R{t.upper()}"  # no Z: not YYYY-MM-DDTHH:MMZ/REGION
    rejected = "REJECTED"
    cases: list[tuple[str, dict[str, Any], set[Answer]]] = [
        # (what, the message, the answers the README allows)
        ("off the tick", submit(f"r-tick-{t}", market, b, "BUY", PRICE - tick // 2, lot),
         {(rejected, "TICK_SIZE")}),
        ("off the lot", submit(f"r-lot-{t}", market, b, "BUY", PRICE - tick, lot + lot // 2),
         {(rejected, "LOT_SIZE")}),
        ("above the band", submit(f"r-high-{t}", market, a, "SELL", band_high + tick, lot),
         {(rejected, "PRICE_OUT_OF_BAND")}),
        ("at the band's top", submit(f"r-high-edge-{t}", market, a, "SELL", band_high, lot), {("ACCEPTED", None)}),
        ("below the band", submit(f"r-low-{t}", market, b, "BUY", band_low - tick, lot),
         {(rejected, "PRICE_OUT_OF_BAND")}),
        ("at the band's bottom", submit(f"r-low-edge-{t}", market, b, "BUY", band_low, lot), {("ACCEPTED", None)}),
        ("after gate closure", submit(f"r-gate-{t}", gate_market, b, "BUY", PRICE, lot), {(rejected, "GATE_CLOSED")}),
        ("a market id without Z", submit(f"r-market-id-{t}", not_a_market, b, "BUY", PRICE, lot),
         {(rejected, "UNKNOWN_MARKET")}),
        ("a MARKET order with a price", submit(f"r-mkt-{t}", market, b, "BUY", PRICE, lot, "MARKET"),
         {("dead letter", "INVALID_VALUE")}),
        ("an order id used before", submit(f"r-sell-{t}", market, a, "SELL", PRICE, 1_000),
         {(rejected, "DUPLICATE_ORDER_ID")}),
        ("a cancel of no order", cancel(f"r-unknown-{t}", market, b), {(rejected, "UNKNOWN_ORDER")}),
        ("a cancel of another's order", cancel(f"r-low-edge-{t}", market, a), {(rejected, "NOT_OWNER")}),
    ]  # fmt: skip
    wrong: dict[str, tuple[Answer, set[Answer]]] = {}
    codes: set[str | None] = set()
    for what, message, allowed in cases:
        order_id = message["order_id"]
        before = len(events_of(client, order_id))
        # a MARKET order with a price is a cross-field rule JSON Schema does not state: send it unchecked
        client.send("energy.orders", message, check=message["type"] != "SUBMIT" or message["order_type"] == "LIMIT")
        got = client.wait(f"{what} ({order_id})", first_answer(client, order_id, before))
        if got not in allowed:
            wrong[what] = (got, allowed)
        codes.add(got[1])

    # self-trade prevention: the resting order of the same account is cancelled, the incoming one goes on
    client.send("energy.orders", submit(f"r-stp-rest-{t}", market, c, "SELL", PRICE + 20_000, 300))
    client.wait("the resting order", latest(client, f"r-stp-rest-{t}", "ACCEPTED"))
    client.send("energy.orders", submit(f"r-stp-in-{t}", market, c, "BUY", PRICE + 25_000, 200))
    cancelled = client.wait("the self-trade cancel", latest(client, f"r-stp-rest-{t}", "CANCELLED"))
    assert (cancelled["reason_code"], cancelled["remaining_quantity_wh"]) == ("SELF_TRADE_PREVENTION", 0), cancelled
    resting = client.wait("the incoming order resting", latest(client, f"r-stp-in-{t}", "ACCEPTED"))
    assert resting["remaining_quantity_wh"] == 200
    assert not [tr for tr in client.answers("energy.trades", market_id=market) if tr["buyer_account_id"] == c]
    # and a cancel by its owner
    client.send("energy.orders", cancel(f"r-low-edge-{t}", market, b))
    withdrawn = client.wait("a cancel", latest(client, f"r-low-edge-{t}", "CANCELLED"))
    assert (withdrawn["reason_code"], withdrawn["remaining_quantity_wh"]) == ("USER_REQUESTED", 0), withdrawn

    codes |= {"SELF_TRADE_PREVENTION", "USER_REQUESTED"}
    undocumented = sorted(code for code in codes if code and f"`{code}`" not in README)
    assert not wrong and not undocumented, f"(got, allowed): {wrong}; not in contracts/README.md: {undocumented}"


# ----------------------------------------------------------------------------- card payments


def card(request_id: str, payer: str, amount_minor: int, currency: str, region: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "payer_account_id": payer,
        "merchant_id": "merchant-cafe-9",
        "merchant_program": None,
        "amount_minor": amount_minor,
        "currency": currency,
        "region": region,
        "payer_tier": "GOLD",
        "quoted_rate": RATES.get(currency, STALE_RATE),
        "requested_at": now_text(),
    }


def deposit(client: Client, account: str, units: int) -> None:
    client.send(
        "ledger.commands",
        {"type": "DEPOSIT", "command_id": f"dep-{account}", "account_id": account, "amount_kaus_units": units,
         "occurred_at": now_text()},
    )  # fmt: skip


def answer_to(client: Client, request_id: str, count: int = 1) -> Callable[[Any], list[dict[str, Any]] | None]:
    def found(_: Any) -> list[dict[str, Any]] | None:
        got = [
            {"topic": topic, **value}
            for topic in ("bridge.settlements.completed", "bridge.settlements.failed")
            for value in client.answers(topic, request_id=request_id)
        ]
        return got if len(got) >= count else None

    return found


def test_card_payments_settle_refuse_an_exact_balance_and_mark_repeats(platform: Platform, rules: Rules) -> None:
    """README `bridge.requests`: the hold is the debit at the quoted rate less the slippage limit, so a balance of
    exactly the debit is refused (INSUFFICIENT_FUNDS) and one of exactly the hold pays; cashback by tier, plus the
    ecosystem bonus; a repeated request_id is answered again with `repeat: true`; a stale rate is not used."""
    client, t = platform.client, platform.token
    amount_minor, rate = 15_000, RATES["USD"]  # 150.00 USD at 0.15: 1,000 K-AUS
    debit = 1_000 * KAUS_UNITS
    hold = rules.hold_units(amount_minor, 100, rate)
    assert hold > debit
    rich, exact, just = f"acct-rich-{t}", f"acct-exact-{t}", f"acct-hold-{t}"
    deposit(client, rich, 10_000 * KAUS_UNITS)
    deposit(client, exact, debit)
    deposit(client, just, hold)
    paid, refused, covered = f"card-paid-{t}", f"card-exact-{t}", f"card-hold-{t}"
    bonus, stale = f"card-bonus-{t}", f"card-stale-{t}"
    client.send("bridge.requests", card(paid, rich, amount_minor, "USD", "US"))
    client.send("bridge.requests", card(refused, exact, amount_minor, "USD", "US"))
    client.send("bridge.requests", card(covered, just, amount_minor, "USD", "US"))
    client.send("bridge.requests", card(bonus, rich, amount_minor, "USD", "US") | {"merchant_program": "AURA_SYDNEY"})
    client.send("bridge.requests", card(stale, rich, 11_700, STALE_CURRENCY, "HK"))
    answers = {rid: client.wait(rid, answer_to(client, rid))[0] for rid in (paid, refused, covered, bonus, stale)}
    assert {rid: a["topic"].rsplit(".", 1)[1] for rid, a in answers.items()} == {
        paid: "completed",
        refused: "failed",
        covered: "completed",
        bonus: "completed",
        stale: "failed",
    }

    done = answers[paid]
    assert (done["rail"], done["primary_rail"], done["rail_substitution_reason"]) == ("STRIPE_INSTANT",) * 2 + (None,)
    assert (done["amount_minor"], done["currency"], done["kaus_debited_units"]) == (amount_minor, "USD", debit)
    assert Decimal(done["rate"]) == Decimal(rate) and done["repeat"] is False
    cashback = debit * rules.gold_cashback_percent // 100
    assert (done["cashback_kaus_units"], done["ecosystem_bonus_kaus_units"]) == (cashback, 0), done
    with_bonus = answers[bonus]
    assert with_bonus["ecosystem_bonus_kaus_units"] == cashback * rules.ecosystem_bonus_percent // 100, with_bonus
    failed = answers[refused]
    assert (failed["failed_phase"], failed["reason_code"], failed["repeat"]) == (
        "BALANCE_LOCK",
        "INSUFFICIENT_FUNDS",
        False,
    )
    assert answers[covered]["kaus_debited_units"] == debit  # the hold's rest is released
    old_rate = answers[stale]
    assert (old_rate["failed_phase"], old_rate["reason_code"]) == ("FX_CONVERSION", "STALE_RATE"), old_rate

    # the same requests again: the original answers, marked as repeats
    client.send("bridge.requests", card(paid, rich, amount_minor, "USD", "US"))
    client.send("bridge.requests", card(refused, exact, amount_minor, "USD", "US"))
    again = client.wait(f"{paid} repeated", answer_to(client, paid, 2))[1]
    refused_again = client.wait(f"{refused} repeated", answer_to(client, refused, 2))[1]
    assert again["repeat"] is True and refused_again["repeat"] is True, (again, refused_again)
    assert {k: v for k, v in again.items() if k != "repeat"} == {k: v for k, v in done.items() if k != "repeat"}
    assert {k: v for k, v in refused_again.items() if k != "repeat"} == {
        k: v for k, v in failed.items() if k != "repeat"
    }
    documented("INSUFFICIENT_FUNDS", "STALE_RATE")


@pytest.mark.parametrize(
    ("region", "currency", "amount_minor", "rail"),
    [("JP", "JPY", 2_250, "PAYPAY_BUSINESS"), ("AE", "AED", 5_500, "PAYFORT")],
)
def test_japan_and_the_uae_are_paid_over_their_own_rails(
    platform: Platform, region: str, currency: str, amount_minor: int, rail: str
) -> None:
    """README `bridge.settlements.completed`: `rail` is the region's own (`primary_rail`) unless
    `rail_substitution_reason` says why not."""
    client, t = platform.client, platform.token
    payer, request_id = f"acct-{region.lower()}-{t}", f"card-{region.lower()}-{t}"
    deposit(client, payer, 1_000 * KAUS_UNITS)
    client.send("bridge.requests", card(request_id, payer, amount_minor, currency, region))
    [done] = client.wait(request_id, answer_to(client, request_id))
    assert done["topic"] == "bridge.settlements.completed", done
    assert (done["rail"], done["primary_rail"], done["rail_substitution_reason"]) == (rail, rail, None), done
    assert done["kaus_debited_units"] == 100 * KAUS_UNITS  # 22.50 × 100 yen, 0.55 × 100 fils: 100 K-AUS


def test_malformed_and_mistyped_messages_are_dead_lettered_with_their_documented_reason(platform: Platform) -> None:
    """README "What happens to a bad message": one dead letter on platform.deadletters keyed by the source topic,
    with the original bytes, a reason_code from its table, and one entry per failing field."""
    client, t = platform.client, platform.token
    payer = f"acct-bad-{t}"
    malformed = f'{{"request_id": "card-malformed-{t}", "amount_minor": '
    client.send_raw("bridge.requests", payer.encode(), malformed)
    client.send(
        "bridge.requests", card(f"card-float-{t}", payer, 15_000, "USD", "US") | {"amount_minor": 150.0}, check=False
    )
    client.send("bridge.requests", card(f"card-negative-{t}", payer, -5, "USD", "US"), check=False)
    client.send("bridge.requests", card(f"card-key-{t}", payer, 15_000, "USD", "US"), key=f"acct-other-{t}")
    client.send(
        "bridge.requests", card(f"card-colour-{t}", payer, 15_000, "USD", "US") | {"colour": "red"}, check=False
    )
    expected = {
        f"card-malformed-{t}": "MALFORMED_JSON",
        f"card-float-{t}": "WRONG_TYPE",
        f"card-negative-{t}": "NEGATIVE_AMOUNT",
        f"card-key-{t}": "KEY_MISMATCH",
        f"card-colour-{t}": "UNKNOWN_FIELD",
    }

    def all_letters(_: Any) -> dict[str, list[dict[str, Any]]] | None:
        letters = {rid: client.dead_letters("bridge.requests", f'"{rid}"') for rid in expected}
        return letters if all(letters.values()) else None

    letters = client.wait("the dead letters", all_letters)
    assert {rid: [d["reason_code"] for d in found] for rid, found in letters.items()} == {
        rid: [code] for rid, code in expected.items()
    }
    for rid in (f"card-float-{t}", f"card-negative-{t}"):
        [letter] = letters[rid]
        assert "amount_minor" in json.dumps(letter["errors"]) and "amount_minor" in letter["reason"], letter
    [negative] = letters[f"card-negative-{t}"]
    assert "≥ 0" not in negative["reason"] and ">= 0" not in negative["reason"], negative["reason"]  # must be > 0
    documented(*expected.values())
    assert not client.answers("bridge.settlements.completed", payer_account_id=payer)


# ----------------------------------------------------------------------------- the README says so

README_STATES = {  # topic -> what this producer relies on -> how the README's section on that topic says it
    "energy.orders": {
        "the market id format": r"`YYYY-MM-DDTHH:MMZ/REGION`",
        "a bad market id is answered UNKNOWN_MARKET": r"Otherwise `REJECTED` `UNKNOWN_MARKET`",
        "a MARKET order with a price is dead-lettered": r"forbidden for MARKET, else dead letter `INVALID_VALUE`",
        "self-trade prevention cancels the resting order": r"(?i)self-trade prevention cancels the resting order",
    },
    "energy.orders.events": {"the open quantity is the latest event's": r"`remaining_quantity_wh` is the order"},
    "energy.prices": {"sizes at the best prices": r"best_bid_quantity_wh|best_ask_quantity_wh"},
    "fx.rates": {"re-send every few seconds": r"(?i)re-send every currency every few seconds"},
    "bridge.requests": {
        "an exact balance is refused": r"exactly covers the debit at the quoted rate is refused `INSUFFICIENT_FUNDS`",
    },
    "bridge.settlements.completed": {"repeats are marked": r'`"repeat": true`'},
}


def test_the_readme_states_the_rules_this_producer_relies_on(rules: Rules) -> None:
    """The numbers (parsed by `rules`) and the behaviour the tests above rely on are written in the README."""
    assert (rules.tick_units, rules.lot_wh) > (0, 0) and rules.gate_closure > timedelta(0)
    missing = [
        f"{topic}: {what} ({pattern})"
        for topic, statements in README_STATES.items()
        for what, pattern in statements.items()
        if not re.search(pattern, readme_section(topic))
    ]
    assert not missing, "contracts/README.md does not state: " + "; ".join(missing)
