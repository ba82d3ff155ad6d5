"""The chaos soak's seeded plan: the mixed traffic and the faults, both decided by the seed before anything runs.

The same seed gives the same events in the same order and the same faults at the same event positions (which
worker, which broker, how long it stays down), so a failing soak is replayed with ``--seed``. What a seed cannot
fix is the machine's timing: where in a worker's work a SIGKILL lands depends on how far it had got.

Traffic, one contract message per event:

* ORDER: the seeded P2P order flow (``devtools.order_flow``) over six markets and 24 funded traders; its trades
  and the traders' balances are those of a clean in-process run of the same commands;
* DEPOSIT: K-AUS minted into one of eight depositor accounts (each its own command id);
* CARD: a card payment over the bridge (``devtools.card_flow``: the spec's region mix, every rail) from one of the
  funded card payers;
* PAYOUT: a deposit into a payout holder's account, which has a verified KYC status and a THRESHOLD rule: the
  payouts service pays the excess over the keep-minimum through the bridge (deposits that land while a payout is in
  flight are paid by the next one).

Faults: SIGKILLs of the workers at seeded positions (round robin over the workers, in a seeded order, so each gets
its share), and broker restarts spread over the run, one per stretch, each a SIGKILL or a SIGTERM of a seeded node.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from contracts import models as m
from contracts.bridge_codec import request_from_payment
from contracts.topics import BRIDGE_REQUESTS, ENERGY_ORDERS, LEDGER_COMMANDS, Topic
from devtools.card_flow import card_payments
from devtools.order_flow import generate_orders
from streams.p2p.matching import to_message

FX_DAY = date(2026, 10, 30)  # the ECB day the FX feed replays (devtools.card_flow quotes from it too)
K = 1_000_000  # K-AUS units per K-AUS
FUNDS_UNITS = 10**15  # per trader and per card payer: nobody runs out, so matching and the ledger are order-free
TRADERS = 24
PAYERS = 40
DEPOSITORS = 8
HOLDERS = 12
THRESHOLD_UNITS = 100 * K
KEEP_MINIMUM_UNITS = 20 * K
#: Payout holders' rails: (provider, currency, payout account made from the holder's index).
PAYOUT_RAILS = (("STRIPE", "USD", "acct_chaos{i:04d}"), ("STRIPE", "EUR", "acct_chaos{i:04d}"),
                ("WISE", "GBP", "7{i:08d}"), ("TOSS", "KRW", "holder_chaos{i}"))  # fmt: skip
#: Logical time of the order flow (the matching engine's gates follow the orders' own timestamps).
ORDERS_START = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


class Kind(StrEnum):
    ORDER = "ORDER"
    DEPOSIT = "DEPOSIT"
    CARD = "CARD"
    PAYOUT = "PAYOUT"


#: Default share of each kind, in percent (the order flow is the bulk, as in production).
DEFAULT_MIX: dict[Kind, int] = {Kind.ORDER: 82, Kind.DEPOSIT: 6, Kind.CARD: 10, Kind.PAYOUT: 2}


class Event(NamedTuple):
    position: int
    kind: Kind
    topic: Topic
    message: Any  # a contract model of the topic


class Names(NamedTuple):
    """Accounts and markets of one run; ``tag`` keeps two runs on one cluster apart."""

    tag: str

    @property
    def traders(self) -> list[str]:
        return [f"chaos-{self.tag}-trader-{i:02d}" for i in range(TRADERS)]

    @property
    def payers(self) -> list[str]:
        return [f"chaos-{self.tag}-payer-{i:02d}" for i in range(PAYERS)]

    @property
    def depositors(self) -> list[str]:
        return [f"chaos-{self.tag}-depositor-{i}" for i in range(DEPOSITORS)]

    @property
    def holders(self) -> list[str]:
        return [f"chaos-{self.tag}-holder-{i:02d}" for i in range(HOLDERS)]

    @property
    def markets(self) -> list[str]:
        return [f"2026-11-24T{hour:02d}:00Z/C{self.tag.upper()}" for hour in range(10, 16)]

    def rule_id(self, holder: str) -> str:
        return f"rule-{holder}"

    @property
    def people(self) -> set[str]:
        """Every account of a person or business the run funds: the only ones that may hold K-AUS."""
        return {*self.traders, *self.payers, *self.depositors, *self.holders}


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Everything the run sends: the funding and the rules first (``setup``), then ``events`` in order."""

    seed: int
    names: Names
    funding: list[m.Deposit]
    kyc: list[m.KycStatusChanged]
    rules: list[m.AutoPayoutRule]
    events: list[Event]

    def counts(self) -> dict[Kind, int]:
        found = dict.fromkeys(Kind, 0)
        for e in self.events:
            found[e.kind] += 1
        return found

    def of(self, kind: Kind) -> list[Any]:
        return [e.message for e in self.events if e.kind is kind]

    @property
    def trader_funding(self) -> list[m.Deposit]:
        traders = set(self.names.traders)
        return [d for d in self.funding if d.account_id in traders]


def plan_traffic(seed: int, events: int, tag: str, mix: dict[Kind, int] | None = None) -> Traffic:
    """The seeded traffic of ``events`` events (kinds drawn with ``mix``'s weights)."""
    assert events > 0
    mix = mix or DEFAULT_MIX
    rng = random.Random(f"{seed}:traffic")
    kinds = rng.choices(list(mix), weights=list(mix.values()), k=events)
    count = {k: kinds.count(k) for k in Kind}
    names = Names(tag)
    at = datetime.now(UTC)
    orders = iter(_orders(seed, count[Kind.ORDER], names))
    cards = iter(_cards(seed, count[Kind.CARD], names, at))
    out: list[Event] = []
    for index, kind in enumerate(kinds):
        if kind is Kind.ORDER:
            out.append(Event(index, kind, ENERGY_ORDERS, next(orders)))
        elif kind is Kind.CARD:
            out.append(Event(index, kind, BRIDGE_REQUESTS, next(cards)))
        else:
            accounts = names.depositors if kind is Kind.DEPOSIT else names.holders
            units = rng.randint(1, 500) * K + rng.randint(0, K - 1)
            deposit = m.Deposit(command_id=f"chaos-{tag}-{kind.lower()}-{index}", account_id=rng.choice(accounts),
                                amount_kaus_units=units, occurred_at=at)  # fmt: skip
            out.append(Event(index, kind, LEDGER_COMMANDS, deposit))
    funded = [*names.traders, *names.payers]
    funding = [m.Deposit(command_id=f"chaos-{tag}-funds-{a}", account_id=a, amount_kaus_units=FUNDS_UNITS,
                         occurred_at=ORDERS_START) for a in funded]  # fmt: skip
    kyc = [
        m.KycStatusChanged(account_id=h, status="VERIFIED", provider="SUMSUB", applicant_id=f"app-{h}",
                           event_id=f"evt-{h}", occurred_at=at)
        for h in names.holders
    ]  # fmt: skip
    return Traffic(seed, names, funding, kyc, _rules(names), out)


def _orders(seed: int, n: int, names: Names) -> list[m.SubmitOrder | m.CancelOrder | m.AmendOrder]:
    start_ms = int(ORDERS_START.timestamp() * 1000) + 60_000
    return [to_message(c) for c in generate_orders(seed, n, names.markets, names.traders, start_ms=start_ms)]


def _cards(seed: int, n: int, names: Names, at: datetime) -> list[m.BridgeRequest]:
    now_ms = int(at.timestamp() * 1000)
    payments = card_payments(n, seed=seed, day=FX_DAY, now_ms=now_ms, payers=PAYERS, prefix=f"chaos-{names.tag}")
    payers = names.payers
    # card_flow names its payers acct-payer-<k>: this run's own payers instead, k kept
    return [
        request_from_payment(dataclasses.replace(p, payer_account_id=payers[int(p.payer_account_id.rsplit("-")[-1])]))
        for p in payments
    ]


def _rules(names: Names) -> list[m.AutoPayoutRule]:
    rules = []
    for i, holder in enumerate(names.holders):
        provider, currency, account = PAYOUT_RAILS[i % len(PAYOUT_RAILS)]
        rules.append(
            m.AutoPayoutRule.model_validate(
                {
                    "rule_id": names.rule_id(holder),
                    "account_id": holder,
                    "trigger_type": "THRESHOLD",
                    "threshold_kaus_units": THRESHOLD_UNITS,
                    "keep_minimum_kaus_units": KEEP_MINIMUM_UNITS,
                    "payout_provider": provider,
                    "payout_currency": currency,
                    "payout_account": account.format(i=i),
                    "max_payout_per_tx_kaus_units": 100_000 * K,
                }
            )
        )
    return rules


# --------------------------------------------------------------------------------------------------------------------
# faults


class FaultKind(StrEnum):
    KILL_WORKER = "KILL_WORKER"  # SIGKILL the worker's process group; its supervisor starts it again
    RESTART_BROKER = "RESTART_BROKER"  # stop one node (SIGKILL or SIGTERM), start it, wait until it is in the ISR


class Fault(NamedTuple):
    at_event: int  # once this many events are sent
    kind: FaultKind
    target: str  # the worker's name, or the node id
    how: str = "SIGKILL"  # a broker is SIGKILLed or stopped with SIGTERM (a controlled shutdown)
    down_s: float = 0.0  # how long a broker stays down


#: Faults start after the first events and end before the last ones (the end of the run is for the outcomes).
FAULTS_FROM, FAULTS_TO = 0.03, 0.92


def plan_faults(
    seed: int, events: int, kills: int, broker_restarts: int, workers: Sequence[str], nodes: Sequence[int]
) -> list[Fault]:
    """``kills`` worker SIGKILLs and ``broker_restarts`` broker restarts at seeded event positions, in order."""
    assert kills >= 0 and broker_restarts >= 0 and workers and nodes
    rng = random.Random(f"{seed}:faults")
    low, high = int(events * FAULTS_FROM), max(int(events * FAULTS_FROM) + 1, int(events * FAULTS_TO))
    order = list(workers)
    rng.shuffle(order)
    faults = [Fault(rng.randrange(low, high), FaultKind.KILL_WORKER, order[i % len(order)]) for i in range(kills)]
    # One broker restart per stretch, in its first half: the node is back in the ISR before the next one.
    stretch = (high - low) / max(1, broker_restarts)
    for i in range(broker_restarts):
        at = low + int(stretch * i + rng.uniform(0, stretch / 2))
        how = rng.choice(("SIGKILL", "SIGTERM"))
        faults.append(Fault(at, FaultKind.RESTART_BROKER, str(rng.choice(list(nodes))), how, rng.uniform(2.0, 8.0)))
    return sorted(faults, key=lambda f: (f.at_event, f.kind, f.target))
