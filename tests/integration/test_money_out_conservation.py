"""Issue 17 acceptance, conservation: after a day of mixed traffic, Σ over all accounts per asset is unchanged except
for deposits and what was paid out in fiat, exactly.

On a broker of its own (the ledger is one fold over all of ``ledger.commands``: only this test's traffic is in it),
the real processes — the P2P worker (matching and the ledger, its epoch timer on one-minute epochs, the staking vault
with no lock and no unbonding delay), the bridge's plain runtime against the provider simulator, an FX feed and
``python -m streams.payouts`` — carry a seeded day: deposits; a seeded P2P order flow that trades (fees, the dividend
pool, carbon credits for solar sellers), sent in two halves so that two epochs have fees to declare and the first
one's remainder is carried into the second; card payments over every region's rail (cashback and ecosystem bonus);
stakes and an unstake; dividend epochs declared by the ledger's timer; auto-payouts of all three triggers (THRESHOLD
twice, a DAILY schedule due at once on the payouts service's clock run ahead, DIVIDEND for an energy node and for a
staker); a payout the provider declines (FAILED, its hold voided); a KYC-pending holder whose payout waits; and a
SIGKILL of the bridge and of the payouts service once each, at points drawn from the seed. The DIVIDEND rules are
then switched off, every process is stopped once nothing is in flight (the ledger last, restarted once with its
timer off so that every command in ``ledger.commands`` has been applied), and every ``ledger.transfers`` record is
folded (each transfer id once): posted K-AUS is POSTED and POST_PENDING, carbon milli-credits are kept apart.

The K-AUS identity, each side from a different source::

    holders + staked + platform  =  deposits + rewards issued - captured by the bridge

* holders: every account of a person or business — traders, card payers, the payout holders, the energy nodes,
  the staker (the fold must find exactly these; none may be negative);
* staked: ``staked:{holder}``, K-AUS in the vault (the holder's still, but not spendable, so not with holders);
* platform: ``sys:fees`` and ``sys:dividends``, K-AUS the platform keeps (the fees' other half and the pool not
  declared yet; it equals Σ trade fees - Σ dividends declared);
* deposits: Σ ``DEPOSIT`` commands in ``ledger.commands`` (each command id once): minted from ``sys:mint``;
* rewards issued: Σ cashback + ecosystem bonus of the bridge's completed card payments (each request once), paid
  from the issuance accounts ``bridge:rewards`` and ``bridge:ecosystem``, which run negative by design;
* captured by the bridge: Σ K-AUS debited by completed card payments and by PAID ``payouts.results``: it sits in
  ``bridge:settlement``, the K-AUS that left the platform as fiat paid to merchants and holders.

The left side comes from the ledger's records, the right from what the services said they did (the commands sent,
the bridge's answers, the payout results); the issuance and settlement accounts are also checked term by term.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    BRIDGE_REQUESTS,
    DIVIDENDS_DECLARED,
    ENERGY_ORDERS,
    ENERGY_SETTLEMENTS,
    KYC_STATUS,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    PAYOUT_WAITING,
)
from devtools.order_flow import FlowMix, generate_orders
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import bridge_tx_id_for, kaus_to_minor_floor
from domain.dividends import DEFAULT_SOURCE_SHARES_BPS, allocate_by_source
from domain.fx import kaus_to_minor
from domain.money import Currency
from domain.order_book import format_market_id
from domain.rails import REGION_CURRENCY, Region
from domain.staking import staked_account_id
from domain.trade_settlement import SYS_CARBON, SYS_DIVIDENDS, SYS_FEES, SYS_MINT
from streams.bridge.providers.base import uuid_for_key
from streams.p2p.matching import to_message
from tests.integration.provider_fixtures import free_port, provider_sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.recon_kafka import backdated_broker
from tests.integration.test_payouts_e2e import CLOCK_OFFSET_MS, FX_DAY, K, Platform, values
from tests.support import schema_check
from tests.support.kafka_io import KafkaIO
from tests.support.money_out import (
    CARBON,
    KAUS,
    FxFeed,
    LedgerFold,
    bridge_answers,
    card_payment,
    wait_until_served,
)
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.slow

SEED = 20261117
ORDERS = 300
ORDER_MIX = FlowMix(max_lots=100_000)  # up to 10 MWh an order: fees big enough for dividends worth paying out
FUNDS = 10**13  # K-AUS units per trader and card payer
ISSUANCE = ("bridge:rewards", "bridge:ecosystem")  # reward accounts (they may run negative)
SETTLEMENT = "bridge:settlement"  # what the bridge captured: K-AUS that left as fiat
PLATFORM = (SYS_FEES, SYS_DIVIDENDS)
MAY_BE_NEGATIVE = {(KAUS, SYS_MINT), (CARBON, SYS_CARBON), *((KAUS, a) for a in ISSUANCE)}
NODE_WEIGHTS = {"a": 3, "b": 7}  # ENERGY_NODE registrations
STAKES = {"p1": 20_000 * K, "p2": 10_000 * K, "p3": 5_000 * K}  # p1 is unstaked (then released), p3 staked after
# Card payments: every region's own rail, twice; amounts are fiat minor units.
CARD_MINOR = {Region.KR: 15_000, Region.US: 15_00, Region.EU: 12_00, Region.JP: 2_200, Region.SG: 20_00,
              Region.AU: 23_00, Region.HK: 117_00, Region.AE: 55_00}  # fmt: skip
FIRST_CARDS = 10  # the bridge is killed while these are paid


@dataclass(frozen=True)
class Names:
    """Accounts and rules of one run (the token keeps two runs apart)."""

    token: str
    h_thr: str = ""  # THRESHOLD twice
    h_day: str = ""  # a DAILY schedule
    h_fail: str = ""  # a payout PayPal declines
    h_kyc: str = ""  # KYC pending: its payout waits
    h_stake: str = ""  # the staker (DIVIDEND from STAKING)
    r_thr: str = ""
    r_day: str = ""
    r_fail: str = ""
    r_kyc: str = ""
    r_node: str = ""  # node a's DIVIDEND rule (ENERGY_NODE)
    r_stake: str = ""

    @classmethod
    def of(cls, token: str) -> Names:
        kinds = ("thr", "day", "fail", "kyc", "stake")
        holders = {f"h_{k}": f"holder-{k}-{token}" for k in kinds}
        return cls(token, **holders, **{f"r_{k}": f"r-{k}-{token}" for k in (*kinds[:4], "node", "stake")})

    @property
    def traders(self) -> list[str]:
        return [f"trader-{self.token}-{i}" for i in range(8)]

    @property
    def payers(self) -> list[str]:
        return [f"payer-{self.token}-{i}" for i in range(4)]

    @property
    def nodes(self) -> dict[str, str]:
        return {k: f"node-{k}-{self.token}" for k in NODE_WEIGHTS}

    @property
    def marker(self) -> str:
        return f"marker-{self.token}"

    @property
    def holders(self) -> set[str]:
        people = {self.h_thr, self.h_day, self.h_fail, self.h_kyc, self.h_stake, self.marker}
        return people | set(self.traders) | set(self.payers) | set(self.nodes.values())


@dataclass
class Day:
    """The running platform and what the test did to it."""

    kafka: KafkaIO
    sim: ProviderSimProcess
    platform: Platform
    ledger: WorkerProcess
    bridge: WorkerProcess
    names: Names
    rng: random.Random
    markets: list[str] = field(default_factory=list)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    cards: list[str] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)

    @property
    def payouts(self) -> WorkerProcess:
        return self.platform.payouts

    def rule(self, rule_id: str, account: str, **fields: Any) -> tuple[int, int]:
        self.rules[rule_id] = {"account": account, **fields}
        return self.platform.rule(rule_id, account, **fields)

    def commands(self, messages: list[Any]) -> None:
        self.kafka.produce_messages(LEDGER_COMMANDS, messages)

    def results(self) -> list[dict[str, Any]]:
        return values(self.kafka, PAYOUT_RESULTS)

    def wait_results(self, what: str, check: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 120) -> None:
        until(f"payouts.results with {what}", lambda: check(self.results()), timeout_s)

    def dividends_paid(self) -> dict[str, set[str]]:
        """The epochs each DIVIDEND rule has a PAID payout for (payout id ``{rule}:V{epoch}/{index}``)."""
        paid: dict[str, set[str]] = {}
        for r in self.results():
            if r["status"] == "PAID" and ":V" in r["payout_id"]:
                rule_id, dividend_id = r["payout_id"].split(":V")
                paid.setdefault(rule_id, set()).add(dividend_id.split("/")[0])
        return paid


def until(what: str, check: Callable[[], bool], timeout_s: float = 120) -> None:
    """Wait for ``check`` (what the platform does takes its time; the test asserts on what it did, not when)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never saw {what} in {timeout_s} s"
        time.sleep(0.5)


@dataclass
class Seen:
    """Everything the day left on the broker and at the provider, read once every process had stopped."""

    names: Names
    fold: LedgerFold
    commands: list[dict[str, Any]]
    answers: dict[str, list[dict[str, Any]]]
    cards: list[str]
    payout_requests: list[dict[str, Any]]
    results: list[dict[str, Any]]
    waiting: list[dict[str, Any]]
    declared: list[dict[str, Any]]
    settlements: list[dict[str, Any]]
    sim_payouts: list[dict[str, Any]]
    kills: dict[str, int]

    def paid(self) -> dict[str, dict[str, Any]]:
        return {r["payout_id"]: r for r in self.results if r["status"] == "PAID"}

    def failed(self) -> dict[str, dict[str, Any]]:
        return {r["payout_id"]: r for r in self.results if r["status"] == "FAILED"}

    def completed_cards(self) -> list[dict[str, Any]]:
        return [a[0] for rid in self.cards for a in (self.answers[rid],) if a[0]["topic"].endswith("completed")]

    def at_provider(self, request_id: str) -> list[dict[str, Any]]:
        """The provider's payouts under this payment's idempotency key (the bridge tx id, or Wise's UUID of it)."""
        keys = provider_keys(request_id)
        return [p for p in self.sim_payouts if p["idempotency_key"] in keys]


def provider_keys(request_id: str) -> set[str]:
    tx = bridge_tx_id_for(request_id)
    return {tx, uuid_for_key(tx)}


# --------------------------------------------------------------------------- the day


@pytest.fixture(scope="module")
def seen(
    provider_sim: ProviderSimProcess, sim_keys_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seen]:
    token = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("money-out")
    provider_sim.reset()
    with backdated_broker(tmp / "kafka") as bootstrap:
        wait_until_served(bootstrap)
        kafka = KafkaIO(bootstrap)
        with FxFeed(kafka, FX_DAY):
            day = platform(kafka, provider_sim, sim_keys_dir, tmp, Names.of(token))
            try:
                start(day)
                run_day(day)
                stop_quietly(day)
                result = collect(day)
            finally:
                for w in (day.payouts, day.bridge, day.ledger):
                    w.stop()
                provider_sim.reset()
        schema_check.verify(bootstrap, "the money-out conservation broker")
    yield result


def platform(kafka: KafkaIO, sim: ProviderSimProcess, keys: Path, tmp: Path, names: Names) -> Day:
    """The ledger, the bridge and the payouts service (not started yet)."""
    provider = {"NEXUS_PROVIDER_SIM_URL": sim.url, "NEXUS_PROVIDER_KEYS_DIR": str(keys),
                "NEXUS_PROVIDER_TRANSPORT": "aiohttp"}  # fmt: skip
    ledger_env = {
        "NEXUS_AGENTS": "matching,settlement",
        "NEXUS_DIVIDEND_EPOCH_MINUTES": "1",
        "NEXUS_DIVIDEND_TIMER_EVERY_S": "1",
        "NEXUS_STAKING_LOCK_MINUTES": "0",
        "NEXUS_STAKING_UNBONDING_MINUTES": "0",
    }

    def worker(name: str, module: str, env: dict[str, str]) -> WorkerProcess:
        return WorkerProcess(kafka.bootstrap, f"nexus-money-out-{name}-{names.token}", tmp / name, free_port(),
                             free_port(), env, module=module)  # fmt: skip

    ledger = worker("ledger", "streams.p2p", ledger_env)
    bridge = worker("bridge", "streams.bridge.loop", provider)
    payouts = worker("payouts", "streams.payouts", {"NEXUS_PAYOUTS_CLOCK_OFFSET_MS": str(CLOCK_OFFSET_MS)})
    return Day(kafka, sim, Platform(kafka, sim, payouts, names.token), ledger, bridge, names, random.Random(SEED))


def start(day: Day) -> None:
    for w in (day.ledger, day.bridge, day.payouts):
        w.start(wait=False)
    for w in (day.ledger, day.bridge, day.payouts):
        w.wait_ready(120)
    # Every provider answers after 150 ms (payments stay in flight a while); PayPal declines the holder's payout
    # (and a re-send of it after the bridge's kill: nothing else here goes through PayPal).
    day.sim.configure({"*": {"latency_ms": 150}, "PAYPAL": {"latency_ms": 150, "decline_next": 3}})


def run_day(day: Day) -> None:
    n = day.names
    holders_and_rules(day)
    now = datetime.now(UTC)
    deposits = {n.h_thr: 1_500 * K + 7, n.h_fail: 80 * K, n.h_kyc: 250 * K, n.h_day: 400 * K, n.h_stake: 50_000 * K}
    deposits |= dict.fromkeys([*n.traders, *n.payers], FUNDS)
    day.commands(
        [m.Deposit(command_id=f"dep-{a}", account_id=a, amount_kaus_units=u, occurred_at=now)
         for a, u in deposits.items()]
        + [m.RegisterDividendHolder(command_id=f"reg-{a}", account_id=a, source="ENERGY_NODE",
                                    weight=NODE_WEIGHTS[k], occurred_at=now) for k, a in n.nodes.items()]
        + [m.Stake(command_id=f"{p}-{n.token}", account_id=n.h_stake, amount_kaus_units=STAKES[p], occurred_at=now)
           for p in ("p1", "p2")]
    )  # fmt: skip
    hour_ms = 3_600_000
    delivery = (time.time_ns() // 1_000_000 // hour_ms + 8) * hour_ms
    token = n.token.upper()
    day.markets = [format_market_id(delivery, f"KR-{token}"), format_market_id(delivery + hour_ms, f"AU-{token}")]
    day.kafka.produce_messages(ENERGY_ORDERS, order_flow(day, 0, ORDERS // 2))
    cards_with_a_bridge_kill(day)
    kill_the_payouts_service(day)
    a_schedule_due_at_once(day)
    unstake_and_stake_again(day)
    day.platform.results(f"{n.r_thr}:T0")
    day.commands([m.Deposit(command_id=f"dep2-{n.h_thr}", account_id=n.h_thr, amount_kaus_units=1_100 * K,
                            occurred_at=datetime.now(UTC))])  # fmt: skip
    wait_for_the_outcomes(day)
    a_second_dividend_epoch(day)


def holders_and_rules(day: Day) -> None:
    """KYC statuses (one holder pending) and every rule but the schedule's, read by the service before money moves."""
    n, digits = day.names, int(day.names.token, 16) % 10**9
    statuses = dict.fromkeys([n.h_thr, n.h_day, n.h_fail, n.h_stake, n.nodes["a"]], "VERIFIED") | {n.h_kyc: "PENDING"}
    for account, status in statuses.items():
        message = m.KycStatusChanged(account_id=account, status=status, provider="SUMSUB",
                                     applicant_id=f"app-{account}", event_id=f"evt-{account}",
                                     email=f"{account}@example.com", occurred_at=datetime.now(UTC))  # fmt: skip
        day.kafka.produce(KYC_STATUS, account.encode(), KYC_STATUS.encode(message))
    day.kafka.flush()
    day.rule(
        n.r_thr, n.h_thr, trigger_type="THRESHOLD", threshold_kaus_units=1_000 * K, keep_minimum_kaus_units=200 * K
    )
    day.rule(n.r_fail, n.h_fail, trigger_type="THRESHOLD", threshold_kaus_units=10 * K, payout_provider="PAYPAL",
             payout_account=f"fail-{n.token}@example.com")  # fmt: skip
    day.rule(n.r_kyc, n.h_kyc, trigger_type="THRESHOLD", threshold_kaus_units=100 * K)
    # Dividends below 1 K-AUS do not trigger: a payout worth less than a minor unit would fail (and back off an hour).
    day.rule(
        n.r_node,
        n.nodes["a"],
        trigger_type="DIVIDEND",
        dividend_source="ENERGY_NODE",
        dividend_min_kaus_units=K,
        payout_provider="WISE",
        payout_currency="GBP",
        payout_account=f"7{digits}",
    )
    day.rule(n.r_stake, n.h_stake, trigger_type="DIVIDEND", dividend_source="STAKING", dividend_min_kaus_units=K,
             payout_provider="TOSS", payout_currency="KRW", payout_account=f"holder_{n.token}")  # fmt: skip

    def ready(s: dict[str, Any]) -> bool:
        accounts = s["book"]["accounts"]
        kyc_read = all(accounts.get(a, {}).get("kyc") == st for a, st in statuses.items())
        return kyc_read and set(day.rules) <= set(s["book"]["versions"])

    day.platform.wait_state("the KYC statuses and the rules", ready)


def order_flow(day: Day, first: int, count: int) -> list[m.SubmitOrder | m.CancelOrder | m.AmendOrder]:
    """Commands ``first`` to ``first + count`` of the seeded order flow, stamped from now; half the traders sell
    solar energy (their trades mint carbon credits)."""
    traders = day.names.traders
    solar = set(traders[::2])
    commands = generate_orders(SEED, ORDERS, day.markets, traders, mix=ORDER_MIX, start_ms=time.time_ns() // 1_000_000)
    flow = []
    for command in islice(commands, first, first + count):
        message = to_message(command)
        if isinstance(message, m.SubmitOrder) and message.side is m.Side.SELL and message.account_id in solar:
            message = message.model_copy(update={"energy_source": m.EnergySource.SOLAR})
        flow.append(message)
    return flow


def card_requests(day: Day, first: int, count: int) -> list[m.BridgeRequest]:
    regions, tiers = list(CARD_MINOR), list(m.PayerTier)
    programs = ("AURA_SYDNEY", "NOMAD_MONTHLY", None)
    out = []
    for i in range(first, first + count):
        region = regions[i % len(regions)]
        request_id = f"card-{day.names.token}-{i:02d}"
        day.cards.append(request_id)
        out.append(card_payment(FX_DAY, request_id, day.names.payers[i % 4], CARD_MINOR[region] + 37 * i,
                                REGION_CURRENCY[region], region, tiers[i % len(tiers)], programs[i % 3]))  # fmt: skip
    return out


def cards_with_a_bridge_kill(day: Day) -> None:
    """Card payments; the bridge SIGKILLed once the provider has paid a seeded number of the first ones."""
    day.kafka.produce_messages(BRIDGE_REQUESTS, card_requests(day, 0, FIRST_CARDS))
    first = {key for r in day.cards for key in provider_keys(r)}
    k = day.rng.randint(1, FIRST_CARDS // 2)
    deadline = time.monotonic() + 90
    while (paid := sum(p["idempotency_key"] in first for p in day.sim.payouts())) < k:
        assert time.monotonic() < deadline, f"the provider paid {paid} of the first card payments"
        time.sleep(0.05)
    day.bridge.kill()
    day.kills["bridge_after_card_payouts"] = paid
    day.bridge.start(timeout_s=120)
    day.kafka.produce_messages(BRIDGE_REQUESTS, card_requests(day, FIRST_CARDS, 2 * len(CARD_MINOR) - FIRST_CARDS))


def kill_the_payouts_service(day: Day) -> None:
    """SIGKILL once a seeded number of payouts have results (the threshold's and the declined one come first)."""
    k = day.rng.randint(1, 2)
    day.wait_results(f"{k} results", lambda rs: len(rs) >= k)
    day.payouts.kill()
    day.kills["payouts_after_results"] = len(day.results())
    day.payouts.start(timeout_s=120)


def a_schedule_due_at_once(day: Day) -> None:
    """A DAILY rule whose time has passed on the service's clock (ten minutes ahead): 300 of the 400 K-AUS."""
    n = day.names
    day.platform.mirrored(n.h_day, 400 * K)
    due = datetime.now(UTC) + timedelta(minutes=2)
    day.rule(n.r_day, n.h_day, trigger_type="SCHEDULE", schedule_type="DAILY", payout_currency="EUR",
             schedule_time_utc=due.strftime("%H:%M"), max_payout_per_tx_kaus_units=300 * K)  # fmt: skip
    day.rules[n.r_day]["payout_id"] = f"{n.r_day}:D{due.date().isoformat()}"


def unstake_and_stake_again(day: Day) -> None:
    """p1 unstaked (no lock, no unbonding: released at the ledger's next staking command, the stake of p3)."""
    n, now = day.names, datetime.now(UTC)
    day.commands([m.Unstake(command_id=f"un-p1-{n.token}", position_id=f"p1-{n.token}", account_id=n.h_stake,
                            occurred_at=now),
                  m.Stake(command_id=f"p3-{n.token}", account_id=n.h_stake, amount_kaus_units=STAKES["p3"],
                          occurred_at=now)])  # fmt: skip


def wait_for_the_outcomes(day: Day) -> None:
    """Every card payment answered; the threshold twice, the schedule, the declined payout; the KYC wait; and a
    DIVIDEND payout for the node and for the staker (the first epoch the trades' fees reach)."""
    n = day.names
    expected = {f"{n.r_thr}:T0", f"{n.r_thr}:T1", f"{n.r_fail}:T0", day.rules[n.r_day]["payout_id"]}
    day.wait_results(
        "the threshold, schedule and declined payouts", lambda rs: expected <= {r["payout_id"] for r in rs}
    )
    until(
        "the KYC-pending holder waiting",
        lambda: any(v["account_id"] == n.h_kyc for v in values(day.kafka, PAYOUT_WAITING)),
    )
    until("an answer to every card payment", lambda: set(day.cards) <= bridge_answers(day.kafka).keys())
    until("a dividend payout of both rules", lambda: {n.r_node, n.r_stake} <= day.dividends_paid().keys(), 200)


def a_second_dividend_epoch(day: Day) -> None:
    """The rest of the order flow, then a DIVIDEND payout of both rules in a later epoch: the pool carried over."""
    rules, before = (day.names.r_node, day.names.r_stake), day.dividends_paid()
    day.kafka.produce_messages(ENERGY_ORDERS, order_flow(day, ORDERS // 2, ORDERS - ORDERS // 2))

    def later() -> bool:
        paid = day.dividends_paid()
        return all(paid[r] - before[r] for r in rules)

    until("a dividend payout of both rules in a later epoch", later, 200)


def stop_quietly(day: Day) -> None:
    """DIVIDEND rules off; once the service has nothing in flight it stops, then the bridge once every request is
    answered and no hold is open, then the ledger (restarted with its timer off until a marker deposit is applied:
    every command before it, a declaration its timer appended included, is then applied)."""
    n = day.names
    for rule_id in (n.r_node, n.r_stake):
        fields = {k: v for k, v in day.rules[rule_id].items() if k != "account"}
        at = day.rule(rule_id, day.rules[rule_id]["account"], **{**fields, "is_active": False})
        day.platform.read_past(PAYOUT_RULES, at)

    def idle(s: dict[str, Any]) -> bool:
        return (
            not s["sent"] and not s["pending"] and all(a["in_flight"] is None for a in s["book"]["accounts"].values())
        )

    day.platform.wait_state("nothing in flight", idle)
    requested = {r["payout_id"] for r in values(day.kafka, PAYOUT_REQUESTS)}
    day.wait_results("a result for every payout requested", lambda rs: requested <= {r["payout_id"] for r in rs})
    day.payouts.stop()
    asked = {r["request_id"] for r in values(day.kafka, BRIDGE_REQUESTS)}

    def settled() -> bool:
        answered = asked <= bridge_answers(day.kafka).keys()
        return answered and not LedgerFold.of(values(day.kafka, LEDGER_TRANSFERS)).open_holds()

    until("every bridge request answered and no hold open", settled)
    day.bridge.stop()
    day.ledger.stop()
    day.ledger.extra_env["NEXUS_DIVIDEND_TIMER_EVERY_S"] = "0"
    day.ledger.start(timeout_s=120)
    marker = f"dep-{n.marker}"
    day.commands(
        [m.Deposit(command_id=marker, account_id=n.marker, amount_kaus_units=1, occurred_at=datetime.now(UTC))]
    )
    until("the marker deposit applied", lambda: marker in LedgerFold.of(values(day.kafka, LEDGER_TRANSFERS)).transfers)
    day.ledger.stop()


def collect(day: Day) -> Seen:
    k = day.kafka
    return Seen(
        names=day.names,
        fold=LedgerFold.of(values(k, LEDGER_TRANSFERS)),
        commands=values(k, LEDGER_COMMANDS),
        answers=bridge_answers(k),
        cards=list(day.cards),
        payout_requests=values(k, PAYOUT_REQUESTS),
        results=values(k, PAYOUT_RESULTS),
        waiting=values(k, PAYOUT_WAITING),
        declared=values(k, DIVIDENDS_DECLARED),
        settlements=values(k, ENERGY_SETTLEMENTS),
        sim_payouts=day.sim.payouts(),
        kills=dict(day.kills),
    )


# --------------------------------------------------------------------------- the checks


def settled_trades(seen: Seen) -> dict[str, dict[str, Any]]:
    return {s["trade_id"]: s for s in seen.settlements if s["status"] == "SETTLED"}


def deposits_sent(seen: Seen) -> int:
    """Σ DEPOSIT commands, each command id once (a re-sent deposit is applied once)."""
    return sum({c["command_id"]: c["amount_kaus_units"] for c in seen.commands if c["type"] == "DEPOSIT"}.values())


def test_every_asset_sums_to_zero_and_no_holder_is_negative(seen: Seen) -> None:
    fold = seen.fold
    assert fold.conflicts == []  # a transfer id the ledger wrote again carried the same movement
    for asset in (KAUS, CARBON):
        balances = fold.accounts(asset)
        assert balances and sum(balances.values()) == 0, asset  # double entry
        negative = {a: u for a, u in balances.items() if u < 0 and (asset, a) not in MAY_BE_NEGATIVE}
        assert negative == {}, asset
    carbon = fold.accounts(CARBON)
    minted = sum(s["carbon_credits_minted_milli"] for s in settled_trades(seen).values())
    assert minted > 0 and -carbon[SYS_CARBON] == minted  # every milli-credit minted to a solar seller, none else
    assert fold.open_holds() == set()


def test_kaus_kept_is_deposits_plus_rewards_minus_what_left_as_fiat(seen: Seen) -> None:
    balances, n = seen.fold.accounts(KAUS), seen.names
    staked = {a: u for a, u in balances.items() if a.startswith("staked:")}
    platform = {a: balances.get(a, 0) for a in PLATFORM}
    holders = {a: u for a, u in balances.items() if a not in {SYS_MINT, SETTLEMENT, *ISSUANCE, *PLATFORM, *staked}}
    assert holders.keys() == n.holders  # no account the test cannot name holds K-AUS
    cards = seen.completed_cards()
    deposits = deposits_sent(seen)
    rewards = sum(a["cashback_kaus_units"] + a["ecosystem_bonus_kaus_units"] for a in cards)
    card_kaus = sum(a["kaus_debited_units"] for a in cards)
    payout_kaus = sum(r["kaus_debited_units"] for r in seen.paid().values())
    kept = sum(holders.values()) + sum(staked.values()) + sum(platform.values())
    assert kept == deposits + rewards - card_kaus - payout_kaus
    # term by term: minted, issued, captured, and what the platform keeps
    assert -balances[SYS_MINT] == deposits
    assert -sum(balances.get(a, 0) for a in ISSUANCE) == rewards > 0
    assert balances[SETTLEMENT] == card_kaus + payout_kaus and card_kaus > 0 and payout_kaus > 0
    fees = sum(s["fee_kaus_units"] for s in settled_trades(seen).values())
    declared = sum({d["dividend_id"]: d["amount_kaus_units"] for d in seen.declared}.values())
    assert sum(platform.values()) == fees - declared and declared > 0
    assert staked == {staked_account_id(n.h_stake): STAKES["p2"] + STAKES["p3"]}  # p1 released


def test_each_card_payment_is_answered_alike_and_paid_once(seen: Seen) -> None:
    fold = seen.fold
    assert set(seen.cards) <= seen.answers.keys()
    for request_id in seen.cards:
        first, *again = seen.answers[request_id]
        keys = ("topic", "kaus_debited_units", "amount_minor", "cashback_kaus_units", "reason_code")
        assert all([a.get(k) for k in keys] == [first.get(k) for k in keys] for a in again), request_id
        tx = bridge_tx_id_for(request_id)
        if first["topic"].endswith("completed"):
            [paid] = seen.at_provider(request_id)
            assert (paid["amount_minor"], paid["currency"]) == (first["amount_minor"], first["currency"])
            assert fold.moved("CARD_PAYMENT", "CAPTURE", tx) == first["kaus_debited_units"]
            assert fold.moved("CARD_PAYMENT", "CASHBACK", tx) == first["cashback_kaus_units"]
            assert fold.moved("CARD_PAYMENT", "BONUS", tx) == first["ecosystem_bonus_kaus_units"]
        else:
            assert seen.at_provider(request_id) == [] and fold.moved("CARD_PAYMENT", "CAPTURE", tx) == 0


def test_payout_captures_are_the_paid_results_each_paid_once(seen: Seen) -> None:
    fold = seen.fold
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in seen.results:
        by_id.setdefault(r["payout_id"], []).append(r)
    assert all(r == rs[0] for rs in by_id.values() for r in rs)  # a result reported again is the same result
    assert {r["payout_id"] for r in seen.payout_requests} == by_id.keys()  # every payout requested has its result
    paid, failed = seen.paid(), seen.failed()
    assert fold.moved("PAYOUT", "CAPTURE") == sum(r["kaus_debited_units"] for r in paid.values())
    for payout_id, r in paid.items():
        [capture] = fold.legs("PAYOUT", "CAPTURE", payout_id)
        assert (capture["kind"], capture["amount_units"]) == ("POST_PENDING", r["kaus_debited_units"])
        [at_provider] = seen.at_provider(payout_id)  # one payout per idempotency key
        assert (at_provider["amount_minor"], at_provider["currency"]) == (r["amount_minor"], r["currency"])
    assert failed
    for payout_id in failed:
        holds = {t["transfer_id"] for t in fold.legs("PAYOUT", "HOLD", payout_id)}
        released = {t["pending_id"] for t in fold.legs("PAYOUT", "RELEASE", payout_id) if t["kind"] == "VOID_PENDING"}
        assert holds and holds == released, payout_id
        assert fold.legs("PAYOUT", "CAPTURE", payout_id) == [] and seen.at_provider(payout_id) == []
    assert fold.open_holds() == set()


def test_each_paid_payout_is_its_kaus_at_its_rate(seen: Seen) -> None:
    for r in seen.paid().values():
        units, rate, currency = r["kaus_debited_units"], Decimal(r["rate"]), Currency(r["currency"])
        # The bridge pays a payout's K-AUS rounded down (never more than they are worth); domain.fx.kaus_to_minor
        # rounds half-even, so it is the same or one minor unit more.
        assert r["amount_minor"] == kaus_to_minor_floor(units, rate, currency) > 0, r
        assert kaus_to_minor(units, rate, currency) - r["amount_minor"] in (0, 1), r


def test_each_declared_epoch_conserves_its_pool(seen: Seen) -> None:
    """In the ledger's command order: the pool is what trades put in since the last declaration plus what it
    carried; each declaration splits it (half per source, pro rata within) and carries the floors."""
    n, fold = seen.names, seen.fold
    nodes = [(("ENERGY_NODE", n.nodes[k]), w) for k, w in NODE_WEIGHTS.items()]
    pool, applied, epochs = 0, set(), []
    for c in seen.commands:
        if c["command_id"] in applied:
            continue  # a command sent again is applied once
        applied.add(c["command_id"])
        if c["type"] == "SETTLE_TRADE":
            pool += fold.moved("TRADE", "DIVIDEND_POOL", c["command_id"])
        elif c["type"] == "DECLARE_DIVIDENDS":
            legs = {
                t["credit_account_id"]: t["amount_units"] for t in fold.legs("DIVIDEND", "DIVIDEND", c["command_id"])
            }
            stakers = [(("STAKING", n.h_stake), 1)] if n.h_stake in legs else []  # the only staker: weight irrelevant
            expected = allocate_by_source(pool, nodes + stakers, DEFAULT_SOURCE_SHARES_BPS)
            assert legs == {s.key[1]: s.amount_units for s in expected.shares}, c["command_id"]
            assert sum(legs.values()) + expected.carried_units == pool  # Σ declared + carried = pool
            epochs.append((c["command_id"], pool, sum(legs.values()), bool(stakers)))
            pool = expected.carried_units
    assert pool == fold.balance(SYS_DIVIDENDS)  # what the last one carried, plus fees since
    assert sum(bool(declared) for _, _, declared, _ in epochs) >= 2, epochs  # the pool carried into a later epoch
    assert any(declared and staker for _, _, declared, staker in epochs), epochs  # an epoch paid both sources
    assert all(e.endswith("-1m") for e, *_ in epochs)  # declared by the timer, one-minute epochs
    legs = {t["transfer_id"]: t["amount_units"] for t in fold.legs("DIVIDEND", "DIVIDEND") if t["amount_units"]}
    assert {d["dividend_id"]: d["amount_kaus_units"] for d in seen.declared} == legs


def test_the_day_had_every_kind_of_traffic(seen: Seen) -> None:
    """What the identities above were checked on (so that they cannot hold for want of traffic)."""
    n, fold = seen.names, seen.fold
    assert len(settled_trades(seen)) >= 20
    cards = seen.completed_cards()
    assert sum(a["cashback_kaus_units"] > 0 for a in cards) and sum(a["ecosystem_bonus_kaus_units"] > 0 for a in cards)
    staking = Counter(t["reference"]["leg"] for t in fold.legs("STAKING", "STAKE") + fold.legs("STAKING", "UNSTAKE"))
    assert staking == {"STAKE": 3, "UNSTAKE": 1}
    paid = seen.paid()
    assert paid[f"{n.r_thr}:T0"]["kaus_debited_units"] == 1_300 * K + 7  # the excess over keep-minimum
    assert paid[f"{n.r_thr}:T1"]["kaus_debited_units"] == 1_100 * K
    [day] = [r for pid, r in paid.items() if pid.startswith(f"{n.r_day}:D")]
    assert day["kaus_debited_units"] == 300 * K  # capped
    assert {pid.split(":V")[0] for pid in paid if ":V" in pid} == {n.r_node, n.r_stake}
    assert seen.failed()[f"{n.r_fail}:T0"]["reason_code"] == "PROVIDER_DECLINED"  # voided, as the test above shows
    triggers = {r["trigger_type"] for r in seen.payout_requests}
    assert triggers == {"THRESHOLD", "SCHEDULE", "DIVIDEND"}
    assert {(w["account_id"], w["reason_code"]) for w in seen.waiting} == {(n.h_kyc, "KYC_PENDING")}
    assert all(r["account_id"] != n.h_kyc for r in seen.payout_requests)
    left = {a: fold.balance(a) for a in (n.h_thr, n.h_day, n.h_fail, n.h_kyc)}
    assert left == {n.h_thr: 200 * K, n.h_day: 100 * K, n.h_fail: 80 * K, n.h_kyc: 250 * K}
    assert seen.kills.keys() == {"bridge_after_card_payouts", "payouts_after_results"}
