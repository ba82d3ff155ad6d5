"""Issue 16 acceptance: the nightly reconciliation of the platform's own money, end to end.

A real broker, the real workers (the P2P worker: matching and the ledger; the bridge in its plain runtime) against
the provider simulator and an FX feed, then the DAG through ``airflow dags test`` for that day (its steps in the
platform's interpreter: the snapshot reads Kafka, the provider sync asks each provider's report API, PayPay's
file aside).

1. Clean traffic: P2P trades, card payments over every rail (the eight regions' primary rails, Alipay and Wise
   as fallbacks for a currency the region's rail does not pay, PayPal after the primary and Wise failed), and
   holders' auto-payouts as the auto-payout service sends them (``bridge.requests`` with ``payout``: one per payout
   provider, and one whose provider fails). The DAG reconciles today: every settlement matched automatically (each
   payout once, as a payout), no exception, the ledger tie-out exact (the critical check passed and the mart shows no
   difference; the failed payout's hold released), audit coverage 100 %, the report mailed with what was paid out.
2. Breaks at the source, five of each, on payments of their own: the provider's report drops a payout, states
   another amount, another fee, another FX rate (Stripe: its report carries a rate), reports a payout twice, books
   it after the cut-off; the platform loses results: the bridge is SIGKILLed after five providers paid and before
   it wrote their results, and stays down through the day's reconciliation (a restart after the cut-off). Every
   break is found and classified, no other exception is raised, the lost payments' holds are reported open (not
   tie-out breaks); re-running the DAG changes nothing and mails nothing.
3. The bridge restarts: the journal's recovery asks each provider about its open intent, finds the payout and
   writes the result (no second payout). The reconciliation of the affected window (today: the clock cannot move
   past the cut-off here, so the recovered results carry today's time) pairs the provider lines with them and
   auto-resolves their exceptions; the tie-out has no open hold left.
4. The next day: the open exceptions age one day; the late bookings arrive in that day's reports and pair with
   their settlements (class timing: booked on another day, beyond the grace).

The broker is the test's own (not the session's): the day's reconciliation reads every record of the day, and
other tests' traffic on a shared broker would be reconciled too. Its records are checked against their schemas at
the end, as the session broker's are. The cut-off grace is 2 minutes (default 30) so that the test may run until
23:50 UTC; closer to midnight it is skipped (its traffic would straddle two days).
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from contracts import models as m
from contracts.topics import (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    BRIDGE_SETTLEMENTS_FAILED,
    ENERGY_ORDERS,
    ENERGY_SETTLEMENTS,
    FX_RATES,
    LEDGER_COMMANDS,
)
from devtools.fx_feed import domain_quotes, fx_quotes
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import bridge_tx_id_for
from domain.fx import FxBook
from domain.money import MINOR_UNIT_EXPONENT, Currency
from domain.order_book import format_market_id
from domain.rails import PRIMARY_RAIL, RAILS, REGION_CURRENCY, Rail, Region
from domain.variance_rules import BreakClass
from tests.integration.provider_fixtures import free_port, provider_sim, sim_keys_dir  # noqa: F401  (fixtures)
from tests.integration.recon_fixtures import Inbox, pdf_text, smtp_server, table_digests
from tests.integration.recon_kafka import backdated_broker
from tests.support import schema_check
from tests.support.kafka_io import KafkaIO
from tests.support.workers import WorkerProcess
from warehouse.airflow_dev import AIRFLOW_VENV, REPO, airflow_env, dags_test, last_run_state, migrate
from warehouse.db import connect

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (AIRFLOW_VENV / "bin" / "airflow").exists(), reason="no .venv-airflow"),
]

FX_DAY = date(2026, 10, 30)  # the FX feed's fixing; its quotes are stamped now
GRACE_MINUTES = 2
FUNDS = 10**13  # K-AUS units per account
# Fiat amounts (minor units) to start from; every payment gets its own amount (no two items of a provider and
# currency within the matching tolerance of each other), and its own merchant.
BASE_MINOR = {
    Currency.KRW: 15_000,
    Currency.USD: 15_00,
    Currency.EUR: 12_00,
    Currency.JPY: 2_200,
    Currency.SGD: 20_00,
    Currency.AUD: 23_00,
    Currency.HKD: 117_00,
    Currency.AED: 55_00,
    Currency.CNY: 108_00,
    Currency.GBP: 11_90,
}
FALLBACK = {Rail.ALIPAY: (Region.HK, Currency.CNY), Rail.WISE: (Region.EU, Currency.GBP)}
REPORT_BREAKS: dict[str, tuple[Rail, ...]] = {
    "drop": (Rail.TOSS_PAYMENTS, Rail.STRIPE_SEPA, Rail.PAYPAY_BUSINESS, Rail.PAYFORT, Rail.ALIPAY),
    "amount": (Rail.STRIPE_INSTANT, Rail.STRIPE_ASIA, Rail.PAYPAY_BUSINESS, Rail.PAYFORT, Rail.WISE),
    "fee": (Rail.STRIPE_AU, Rail.STRIPE_HK, Rail.TOSS_PAYMENTS, Rail.WISE, Rail.ALIPAY),
    "fx_rate": (Rail.STRIPE_INSTANT, Rail.STRIPE_SEPA, Rail.STRIPE_ASIA, Rail.STRIPE_AU, Rail.STRIPE_HK),
    "duplicate": (Rail.TOSS_PAYMENTS, Rail.PAYPAY_BUSINESS, Rail.PAYFORT, Rail.STRIPE_INSTANT, Rail.ALIPAY),
    "late": (Rail.STRIPE_SEPA, Rail.TOSS_PAYMENTS, Rail.PAYFORT, Rail.PAYPAY_BUSINESS, Rail.WISE),
}
LOST_RAILS = (Rail.TOSS_PAYMENTS, Rail.STRIPE_SEPA, Rail.PAYPAY_BUSINESS, Rail.PAYFORT, Rail.STRIPE_HK)
# What the day's reconciliation calls each break (late: the provider's line is not in the day's report yet).
CLASS_ON_THE_DAY = {
    "drop": BreakClass.MISSING_AT_PROVIDER,
    "amount": BreakClass.AMOUNT_VARIANCE,
    "fee": BreakClass.FEE_VARIANCE,
    "fx_rate": BreakClass.FX_VARIANCE,
    "late": BreakClass.MISSING_AT_PROVIDER,
}
TRADES = 16
# Holders' auto-payouts (issue 17): (provider, currency, region, the holder's account at the provider, K-AUS units).
# The bridge pays each through its provider only; the last one's provider fails (nothing paid, its hold released).
HOLDER_PAYOUTS = (
    ("PAYPAL", Currency.USD, Region.US, "holder-{token}@example.com", 91_000_001),
    ("STRIPE", Currency.EUR, Region.EU, "acct_{token}", 87_000_003),
    ("WISE", Currency.GBP, Region.EU, "7{n}", 93_000_005),
    ("TOSS", Currency.KRW, Region.KR, "holder_{token}", 79_000_007),
)
DECLINED_PAYOUT = ("WISE", Currency.EUR, Region.EU, "8{n}", 85_000_009)
# Tie-out columns that are 0 on a clean day: no break, nothing in flight, open or refused.
TIEOUT_NOTHING = (
    "difference_kaus_units",
    "settlements_not_tied",
    "settlements_without_ledger",
    "orphan_ledger_movements",
    "in_flight_movements",
    "open_holds",
    "capture_refused",
)


@dataclass(frozen=True)
class Pay:
    """One card payment of the test and the rail it must go out on."""

    request_id: str
    region: Region
    currency: Currency
    amount_minor: int
    rail: Rail
    kind: str  # "clean", a report break kind, or "lost"
    tier: m.PayerTier
    program: str | None

    @property
    def tx(self) -> str:
        return bridge_tx_id_for(self.request_id)

    def payout(self, sim: ProviderSimProcess) -> dict[str, Any]:
        """The provider's record of this payment's payout (amounts are unique per currency in this test)."""
        [found] = [
            po for po in sim.payouts() if (po["currency"], po["amount_minor"]) == (self.currency, self.amount_minor)
        ]
        return found


@dataclass(frozen=True)
class HolderPay:
    """One holder's auto-payout of the test, sent to the bridge as the auto-payout service sends it."""

    payout_id: str
    holder: str
    provider: str
    currency: Currency
    region: Region
    account: str
    kaus_units: int
    declined: bool = False

    @property
    def tx(self) -> str:
        return bridge_tx_id_for(self.payout_id)


def holder_plan(token: str) -> list[HolderPay]:
    n = int(token, 16) % 10**9
    return [
        HolderPay(f"rule-{token}-{i}:T1", f"holder-{token}-{i}", provider, ccy, region,
                  account.format(token=token, n=n), units, declined=(i == len(HOLDER_PAYOUTS)))
        for i, (provider, ccy, region, account, units) in enumerate([*HOLDER_PAYOUTS, DECLINED_PAYOUT])
    ]  # fmt: skip


def payout_request(h: HolderPay) -> m.BridgeRequest:
    """``bridge.requests`` with ``payout``: the payer is the holder, the request id the payout id; the fiat amount
    is only the estimate at the quoted rate (the bridge pays the K-AUS' worth at its locked rate)."""
    rate = quoted_rate(h.currency)
    estimate = int(Decimal(h.kaus_units).scaleb(-6) * rate * 10 ** MINOR_UNIT_EXPONENT[h.currency])
    return m.BridgeRequest(
        request_id=h.payout_id,
        payer_account_id=h.holder,
        merchant_id=h.holder,
        amount_minor=max(1, estimate),
        currency=h.currency,
        region=h.region,
        payer_tier=m.PayerTier.BRONZE,
        quoted_rate=rate,
        requested_at=datetime.now(UTC),
        payout=m.HolderPayout.model_validate({"rule_id": h.payout_id.split(":")[0], "provider": h.provider,
                                              "payout_account": h.account, "amount_kaus_units": h.kaus_units}),
    )  # fmt: skip


def plan(token: str) -> list[Pay]:
    """Clean payments over every rail, then five for each break kind and five whose result is lost."""
    counter = itertools.count()
    tiers = list(m.PayerTier)

    def pay(kind: str, rail: Rail, region: Region | None = None, currency: Currency | None = None) -> Pay:
        i = next(counter)
        if region is None:
            region, currency = FALLBACK[rail] if rail in FALLBACK else (RAILS[rail].region, None)
        assert region is not None
        ccy = currency or REGION_CURRENCY[region]
        return Pay(f"card-{token}-{kind}-{i:03d}", region, ccy, BASE_MINOR[ccy] + 37 * i, rail, kind,
                   tiers[i % len(tiers)], "AURA_SYDNEY" if i % 3 == 0 else None)  # fmt: skip

    clean = [pay("clean", PRIMARY_RAIL[r]) for r in Region for _ in range(3)]
    clean += [pay("clean", Rail.ALIPAY, Region.US, Currency.CNY), pay("clean", Rail.ALIPAY)]
    clean += [pay("clean", Rail.WISE, Region.AU, Currency.GBP), pay("clean", Rail.WISE)]
    broken = [pay(kind, rail) for kind, rails in REPORT_BREAKS.items() for rail in rails]
    return clean + broken + [pay("lost", rail) for rail in LOST_RAILS]


class FxFeed:
    """Fresh quotes from the three sources every 0.5 s (the bridge refuses quotes older than 10 s)."""

    def __init__(self, kafka: KafkaIO) -> None:
        self.kafka = kafka
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.6)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.kafka.produce_messages(FX_RATES, fx_quotes(FX_DAY, 0, datetime.now(UTC)))
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def quoted_rate(ccy: Currency) -> Decimal:
    now = time.time_ns() // 1_000_000
    return FxBook().with_quotes(domain_quotes(FX_DAY, 0, now)).combined_rate(ccy, now).rate


def request(p: Pay, payer: str) -> m.BridgeRequest:
    return m.BridgeRequest(
        request_id=p.request_id,
        payer_account_id=payer,
        merchant_id=f"merchant-{p.request_id}",
        merchant_program=p.program,
        amount_minor=p.amount_minor,
        currency=p.currency,
        region=p.region,
        payer_tier=p.tier,
        quoted_rate=quoted_rate(p.currency),
        requested_at=datetime.now(UTC),
    )


def answers(kafka: KafkaIO, request_ids: set[str], timeout_s: float = 90) -> dict[str, dict[str, Any]]:
    """The first answer (completed or failed) to each request, once all have one."""
    found: dict[str, dict[str, Any]] = {}

    def seen(_: Any) -> bool:
        for topic in (BRIDGE_SETTLEMENTS_COMPLETED, BRIDGE_SETTLEMENTS_FAILED):
            for r in kafka.read_all(topic):
                v = json.loads(r.value or b"{}")
                if v.get("request_id") in request_ids and not v["repeat"]:
                    found.setdefault(v["request_id"], {"topic": topic.name, **v})
        return request_ids <= found.keys()

    kafka.wait_for(BRIDGE_SETTLEMENTS_COMPLETED, seen, timeout_s=timeout_s, poll_s=1.0)
    return found


def p2p_orders(token: str, accounts: list[str]) -> list[m.SubmitOrder]:
    """Crossing limit orders in two markets whose gates are open for hours: ``TRADES`` trades."""
    hour_ms = 3_600_000
    delivery = (time.time_ns() // 1_000_000 // hour_ms + 3) * hour_ms
    markets = [format_market_id(delivery, f"KR-{token.upper()}"), format_market_id(delivery, f"AU-{token.upper()}")]
    orders = []
    for i in range(TRADES):
        for side, account in ((m.Side.SELL, accounts[i % 4]), (m.Side.BUY, accounts[4 + i % 4])):
            orders.append(
                m.SubmitOrder(
                    order_id=f"o-{token}-{i}-{side.value}",
                    market_id=markets[i % 2],
                    account_id=account,
                    side=side,
                    order_type=m.OrderType.LIMIT,
                    price_units_per_kwh=150_000 + 1_000 * (i % 3),
                    quantity_wh=100 * (1 + i % 5),
                    energy_source=m.EnergySource.SOLAR if side is m.Side.SELL else None,
                    submitted_at=datetime.now(UTC),
                )
            )
    return orders


@dataclass
class Day:
    """The platform, the reconciliation's environment, and what each DAG run left (``seen``, by stage)."""

    kafka: KafkaIO
    sim: ProviderSimProcess
    bridge: WorkerProcess
    fx: FxFeed
    env: dict[str, str]
    home: Path
    inbox: Inbox
    day: date
    pays: list[Pay]
    token: str
    holders: list[HolderPay] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    def of(self, kind: str) -> list[Pay]:
        return [p for p in self.pays if p.kind == kind]

    def submit(self, pays: list[Pay]) -> dict[str, dict[str, Any]]:
        self.kafka.produce_messages(BRIDGE_REQUESTS, [request(p, f"payer-{self.token}-{p.region}") for p in pays])
        got = answers(self.kafka, {p.request_id for p in pays})
        self.results.update(got)
        return got

    def paid_out(self) -> list[HolderPay]:
        return [h for h in self.holders if not h.declined]

    def submit_payouts(self, holders: list[HolderPay]) -> dict[str, dict[str, Any]]:
        self.kafka.produce_messages(BRIDGE_REQUESTS, [payout_request(h) for h in holders])
        got = answers(self.kafka, {h.payout_id for h in holders})
        self.results.update(got)
        return got

    def reconcile(self, day: date, stage: str) -> dict[str, Any]:
        """``airflow dags test`` for the logical date that reconciles ``day``; what the warehouse holds after."""
        self.sim.statements(self.home / "statements", day.isoformat())  # PayPay's file (it has no report API)
        started = time.monotonic()
        proc = dags_test((day + timedelta(days=1)).isoformat(), self.env)
        state = last_run_state(self.env)
        output = self.home / f"dags-test-{stage}.log"  # the whole output: the assertion shows only its end
        output.write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0 and state == "success", (
            stage,
            state,
            str(output),
            (proc.stdout + proc.stderr)[-6000:],
        )
        seen = observe(self.warehouse, day) | {"seconds": round(time.monotonic() - started, 1)}
        seen["mails"] = len(self.inbox.pdf_attachments())
        self.seen[stage] = seen
        print(f"recon e2e: {stage} ({day}): dags test {seen['seconds']} s")  # shown with -s
        return seen


def observe(path: Path, day: date) -> dict[str, Any]:
    cutoff = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    con = connect(path, read_only=True)
    try:

        def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
            cur = con.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

        [run] = rows("SELECT * FROM recon_runs WHERE recon_date = $d", d=day)
        tie = rows(
            "SELECT sum(COLUMNS(* EXCLUDE (day, currency))) FROM mart_ledger_tieout_as_of($c, $g)"
            " WHERE day = $d OR currency = 'UNKNOWN'",
            c=cutoff,
            g=timedelta(minutes=GRACE_MINUTES),
            d=day,
        )[0]
        return {
            "run": run,
            "tieout": {k: int(v or 0) for k, v in tie.items()},
            "exceptions": {r["exception_id"]: r for r in rows("SELECT * FROM recon_exceptions")},
            "results": rows("SELECT * FROM recon_results WHERE recon_date = $d", d=day),
            "lines": rows("SELECT * FROM stg_provider_lines WHERE statement_date = $d", d=day),
            "dq_failed": rows("SELECT * FROM dq_results WHERE recon_date = $d AND NOT success", d=day),
            "audit": rows(
                "SELECT count(*) AS n, count(*) FILTER (WHERE has_audit) AS audited FROM fct_settlements"
                " WHERE settled_date = $d AND status = 'completed'",
                d=day,
            )[0],
            "settled": rows(
                "SELECT kind, rail, count(*) AS n FROM fct_settlements WHERE settled_date = $d AND status = 'completed'"
                " GROUP BY ALL",
                d=day,
            ),
            "payouts": rows(
                "SELECT f.settlement_id, f.status, f.provider, list_sort(list(l.leg)) AS legs FROM fct_settlements f"
                " LEFT JOIN stg_ledger_transfers l"
                " ON l.settlement_kind = 'PAYOUT' AND l.settlement_ref = f.settlement_id"
                " WHERE f.kind = 'payout' GROUP BY ALL"
            ),
            "digests": table_digests(path),
        }
    finally:
        con.close()


def open_exceptions(seen: dict[str, Any]) -> dict[str, str]:
    return {k: e["break_class"] for k, e in seen["exceptions"].items() if e["state"] == "open"}


# --------------------------------------------------------------------------- the day


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, provider_sim: ProviderSimProcess, sim_keys_dir: Path
) -> Iterator[Day]:
    """The platform on a broker of its own, clean traffic over every rail, and the DAG run on it."""
    now = datetime.now(UTC)
    if datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now < timedelta(minutes=10):
        pytest.skip("less than 10 minutes to midnight UTC: the test's traffic would straddle two recon days")
    tmp = tmp_path_factory.mktemp("recon-e2e")
    token = uuid.uuid4().hex[:8]
    provider_sim.reset()
    with backdated_broker(tmp / "kafka") as bootstrap, smtp_server() as (smtp_port, inbox):
        kafka = KafkaIO(bootstrap)
        fx = FxFeed(kafka)
        fx.start()
        provider_env = {
            "NEXUS_PROVIDER_SIM_URL": provider_sim.url,
            "NEXUS_PROVIDER_KEYS_DIR": str(sim_keys_dir),
            "NEXUS_PROVIDER_TRANSPORT": "aiohttp",
        }
        workers = [
            WorkerProcess(bootstrap, f"nexus-e2e-p2p-{token}", tmp / "workers", free_port(), free_port(),
                          {"NEXUS_AGENTS": "matching,settlement"}, module="streams.p2p"),
            WorkerProcess(bootstrap, f"nexus-e2e-bridge-{token}", tmp / "workers", free_port(), free_port(),
                          {**provider_env, "NEXUS_PROVIDER_TIMEOUT_MS": "120000"}, module="streams.bridge.loop"),
        ]  # fmt: skip
        home = tmp / "recon"
        airflow_home = REPO / ".local" / "airflow" / "recon-e2e"
        shutil.rmtree(airflow_home, ignore_errors=True)
        env = airflow_env(
            airflow_home,
            {
                **provider_env,
                "NEXUS_RECON_HOME": str(home),
                "NEXUS_RECON_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "NEXUS_RECON_SMTP_HOST": "127.0.0.1",
                "NEXUS_RECON_SMTP_PORT": str(smtp_port),
                "NEXUS_RECON_ALERT_ON_CRITICAL": "false",
                # today's day has not ended: run each step at once (the sensors would wait for tomorrow's slots)
                "NEXUS_RECON_WAIT_FOR_SCHEDULE": "false",
                "NEXUS_RECON_CUTOFF_GRACE_MINUTES": str(GRACE_MINUTES),
            },
        )
        try:
            for worker in workers:
                worker.start(wait=False)
            migrate(env)
            for worker in workers:
                worker.wait_ready()
            day = Day(kafka, provider_sim, workers[1], fx, env, home, inbox, now.date(), plan(token), token,
                      holder_plan(token))  # fmt: skip
            clean_traffic(day)
            day.reconcile(day.day, "clean")
            yield day
        finally:
            fx.stop()
            for worker in workers:
                worker.stop()
            schema_check.verify(bootstrap, "the reconciliation e2e broker")  # every record the platform wrote


def clean_traffic(day: Day) -> None:
    kafka, token = day.kafka, day.token
    traders = [f"trader-{token}-{i}" for i in range(8)]
    payers = [f"payer-{token}-{r}" for r in Region]
    holders = [h.holder for h in day.holders]
    kafka.produce_messages(
        LEDGER_COMMANDS,
        [m.Deposit(command_id=f"dep-{a}", account_id=a, amount_kaus_units=FUNDS, occurred_at=datetime.now(UTC))
         for a in traders + payers + holders],
    )  # fmt: skip
    # PayPal: the fallback of last resort, taken once the region's primary and Wise failed for this payment
    paypal = Pay(f"card-{token}-paypal", Region.US, Currency.USD, 14_99, Rail.PAYPAL, "clean", m.PayerTier.GOLD, None)
    day.pays.append(paypal)
    day.sim.configure({"STRIPE_INSTANT": {"fail_next": 1}, "WISE": {"fail_next": 1}})
    [answer] = day.submit([paypal]).values()
    assert (answer["rail"], answer["rail_substitution_reason"]) == ("PAYPAL", "PRIMARY_FAILED"), answer
    # the day's trades and card payments, at once
    kafka.produce_messages(ENERGY_ORDERS, p2p_orders(token, traders))
    results = day.submit([p for p in day.of("clean") if p is not paypal])
    assert all(r["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name for r in results.values()), results
    assert {p.request_id: results[p.request_id]["rail"] for p in day.of("clean") if p is not paypal} == {
        p.request_id: p.rail.value for p in day.of("clean") if p is not paypal
    }
    holder_payouts(day)
    kafka.wait_for(
        ENERGY_SETTLEMENTS,
        lambda rs: sum(json.loads(r.value or b"{}").get("buyer_account_id", "") in traders for r in rs) >= TRADES,
    )


def holder_payouts(day: Day) -> None:
    """Holders' payouts through the bridge: each through its own provider, exactly its K-AUS debited, no reward;
    then one whose provider fails (a payout does not fail over): it fails, its hold is released."""
    paid = day.submit_payouts(day.paid_out())
    for h in day.paid_out():
        r = paid[h.payout_id]
        assert r["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name and r["payout_id"] == h.payout_id, r
        assert RAILS[Rail(r["rail"])].provider.value == h.provider and r["kaus_debited_units"] == h.kaus_units, r
        assert r["cashback_kaus_units"] == r["ecosystem_bonus_kaus_units"] == 0, r
    [declined] = [h for h in day.holders if h.declined]
    day.sim.configure({"WISE": {"fail_next": 1}})
    [r] = day.submit_payouts([declined]).values()
    assert r["topic"] == BRIDGE_SETTLEMENTS_FAILED.name and r["payout_id"] == declined.payout_id, r


def test_clean_traffic_over_every_rail_reconciles_automatically(platform: Day) -> None:
    seen = platform.seen["clean"]
    run, tie = seen["run"], seen["tieout"]
    cards, paid = platform.of("clean"), platform.paid_out()
    assert {p.rail for p in cards} == set(Rail)  # every rail: the eight primaries and the three fallbacks
    n = len(cards) + len(paid)  # card payments and holders' payouts, each against its provider's report
    assert (run["settlements"], run["auto_matched"], run["exceptions"], run["pending"]) == (n, n, 0, 0)
    assert run["automatic_match_rate"] == 1 and run["exception_rate"] == 0 and run["audit_trail_coverage"] == 1
    assert json.loads(run["breaks_by_class"]) == dict.fromkeys(BreakClass, 0)
    assert seen["exceptions"] == {} and seen["dq_failed"] == []
    settled = {(r["kind"], r["rail"]): r["n"] for r in seen["settled"]}
    assert settled[("trade", "KAUS_LEDGER")] == TRADES
    assert sum(n for (kind, _), n in settled.items() if kind == "bridge") == len(cards)
    assert sum(n for (kind, _), n in settled.items() if kind == "payout") == len(paid)  # each payout once
    # the ledger moved exactly the K-AUS of every settlement, leg by leg; nothing open, in flight or orphaned
    assert tie["settlements"] == n + TRADES and tie["settlement_kaus_units"] == tie["ledger_kaus_units"] > 0
    assert {k: tie[k] for k in TIEOUT_NOTHING} == dict.fromkeys(TIEOUT_NOTHING, 0)
    assert (tie["payouts"], tie["payout_kaus_units"]) == (len(paid), sum(h.kaus_units for h in paid))
    # a payout's K-AUS held then captured under its own reference; the declined one's hold released
    payouts = {r["settlement_id"]: (r["status"], r["provider"], r["legs"]) for r in seen["payouts"]}
    assert payouts == {
        h.payout_id: ("failed", h.provider, ["HOLD", "RELEASE"]) if h.declined else
        ("completed", h.provider, ["CAPTURE", "HOLD"]) for h in platform.holders
    }  # fmt: skip
    assert seen["audit"]["n"] == seen["audit"]["audited"] == n + TRADES
    assert {ln["provider"] for ln in seen["lines"]} == {p.value for p in m.Provider}  # every provider reported
    [(name, pdf)] = platform.inbox.pdf_attachments()
    assert name == f"recon-{platform.day}.pdf"
    text = pdf_text(pdf)
    assert f"{n} settlements decided, {n} matched automatically, 0 exceptions raised" in text
    assert f"Paid out to holders: {len(paid)} payouts" in text and "Paid out (holders)" in text


# --------------------------------------------------------------------------- breaks at the source


@pytest.fixture(scope="module")
def broken(platform: Day) -> Day:
    """The break payments, their reports made wrong, five results lost; the DAG on the day (twice), the bridge's
    recovery and the window's reconciliation, then the next day."""
    day = platform
    broken_pays = [p for p in day.pays if p.kind in REPORT_BREAKS]
    results = day.submit(broken_pays)
    assert all(r["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name and r["rail"] == p.rail.value
               for p in broken_pays for r in (results[p.request_id],)), results  # fmt: skip
    lose_results(day)
    day.fx.stop()  # nothing writes to the day's topics any more until the recovery
    for p in broken_pays:
        r = results[p.request_id]
        value = {"amount": p.amount_minor - 7, "fee": r["provider_fee_minor"] + 3}.get(p.kind)
        if p.kind == "fx_rate":
            value = f"{(Decimal(r['rate']) * Decimal('1.002')).quantize(Decimal('0.000001'))}"
        day.sim.report_break(p.payout(day.sim)["provider_reference"], p.kind, value)
    day.reconcile(day.day, "breaks")
    day.reconcile(day.day, "rerun")
    payouts = len(day.sim.payouts())
    day.fx.start()
    day.bridge.extra_env["NEXUS_PROVIDER_TIMEOUT_MS"] = "5000"
    day.bridge.start()  # the journal's recovery: each open intent resolved with its provider
    recovered = answers(day.kafka, {p.request_id for p in day.of("lost")})
    day.fx.stop()
    day.results.update(recovered)
    day.seen["recovery"] = {"payouts_before": payouts, "payouts_after": len(day.sim.payouts()), "answers": recovered}
    day.reconcile(day.day, "recovered")
    day.reconcile(day.day + timedelta(days=1), "next_day")
    return day


def lose_results(day: Day) -> None:
    """Five payouts made, their answers never back (the providers hang), the bridge SIGKILLed meanwhile."""
    lost = day.of("lost")
    day.sim.configure({p.rail.value: {"timeout_next": 1, "hang_ms": 90_000} for p in lost})
    day.kafka.produce_messages(BRIDGE_REQUESTS, [request(p, f"payer-{day.token}-{p.region}") for p in lost])
    keys = {(p.currency.value, p.amount_minor) for p in lost}
    deadline = time.monotonic() + 60
    while keys - {(po["currency"], po["amount_minor"]) for po in day.sim.payouts()}:
        assert time.monotonic() < deadline, "the providers never saw the payouts"
        time.sleep(0.2)
    day.bridge.kill()


def test_every_break_at_the_source_is_found_and_classified(broken: Day) -> None:
    seen = broken.seen["breaks"]
    expected = {f"S:{p.request_id}": CLASS_ON_THE_DAY[p.kind].value for p in broken.pays if p.kind in CLASS_ON_THE_DAY}
    lines: dict[str, list[str]] = {}
    for ln in seen["lines"]:
        lines.setdefault(ln["provider_reference"], []).append(ln["line_id"])
    for p in broken.of("lost"):  # the provider paid, the platform has no result: the line is ours to explain
        [line_id] = lines[p.payout(broken.sim)["provider_reference"]]
        expected[f"L:{line_id}"] = BreakClass.MISSING_INTERNALLY.value
    pairs = {(r["settlement_id"], r["line_id"]): r for r in seen["results"]}
    for p in broken.of("duplicate"):  # reported twice: one line matches the settlement, the other is the break
        both = lines[p.payout(broken.sim)["provider_reference"]]
        [paid] = [lid for lid in both if pairs.get((p.request_id, lid), {}).get("outcome") == "matched"]
        [dup] = [lid for lid in both if lid != paid]
        expected[f"L:{dup}"] = BreakClass.DUPLICATE.value
    assert open_exceptions(seen) == expected  # every one found and classified, no other exception
    assert Counter(expected.values()) == {
        "missing_at_provider": 10, "amount_variance": 5, "fee_variance": 5, "fx_variance": 5, "duplicate": 5,
        "missing_internally": 5,
    }  # fmt: skip
    run = seen["run"]
    clean = len(broken.of("clean")) + len(broken.paid_out())
    decided = clean + sum(len(r) for r in REPORT_BREAKS.values())  # the lost have no settlement
    matched = clean + len(broken.of("duplicate"))  # a duplicated report still pays the settlement
    assert (run["settlements"], run["auto_matched"], run["exceptions"], run["pending"]) == (decided, matched, 35, 0)
    assert json.loads(run["breaks_by_class"]) == {c.value: Counter(expected.values())[c.value] for c in BreakClass}
    assert run["audit_trail_coverage"] == 1 and seen["dq_failed"] == []
    # the lost payments' K-AUS is held, not moved: reported open at the cut-off, not a tie-out break
    tie = seen["tieout"]
    assert (tie["open_holds"], tie["difference_kaus_units"], tie["settlements_not_tied"]) == (5, 0, 0)
    assert (tie["orphan_ledger_movements"], tie["settlements_without_ledger"]) == (0, 0)
    assert seen["mails"] == 2
    text = pdf_text(broken.inbox.pdf_attachments()[1][1])
    assert "Open holds at the cut-off: 5," in text and "Movements in flight: 0," in text
    assert all(f"{p.tx}:hold" in text for p in broken.of("lost"))


def test_rerunning_the_dag_changes_nothing(broken: Day) -> None:
    first, again = broken.seen["breaks"], broken.seen["rerun"]
    assert again["digests"] == first["digests"]
    assert again["mails"] == first["mails"] == 2  # the same PDF: archived, not mailed again


def test_the_recovered_results_tie_out_the_window(broken: Day) -> None:
    recovery, seen, before = broken.seen["recovery"], broken.seen["recovered"], broken.seen["breaks"]
    assert recovery["payouts_after"] == recovery["payouts_before"]  # resolved with the providers, not paid again
    assert all(a["topic"] == BRIDGE_SETTLEMENTS_COMPLETED.name for a in recovery["answers"].values())
    lost_lines = {k for k, v in open_exceptions(before).items() if v == BreakClass.MISSING_INTERNALLY.value}
    assert len(lost_lines) == 5
    states = {k: seen["exceptions"][k]["state"] for k in lost_lines}
    assert states == dict.fromkeys(lost_lines, "corrected")  # paired with the recovered settlements
    assert open_exceptions(seen) == {k: v for k, v in open_exceptions(before).items() if k not in lost_lines}
    run = seen["run"]
    assert (run["settlements"], run["auto_matched"], run["exceptions"]) == (
        before["run"]["settlements"] + 5,
        before["run"]["auto_matched"] + 5,
        30,
    )
    tie = seen["tieout"]
    assert (tie["open_holds"], tie["difference_kaus_units"], tie["settlements_not_tied"]) == (0, 0, 0)
    assert tie["settlements"] == before["tieout"]["settlements"] + 5 and seen["dq_failed"] == []


def test_the_next_day_ages_the_open_ones_and_pairs_the_late_bookings(broken: Day) -> None:
    seen, before = broken.seen["next_day"], broken.seen["recovered"]
    still_open = open_exceptions(before)
    late = {f"S:{p.request_id}" for p in broken.of("late")}
    assert open_exceptions(seen) == {k: BreakClass.TIMING.value if k in late else v for k, v in still_open.items()}
    assert {k: seen["exceptions"][k]["age_days"] for k in still_open} == dict.fromkeys(still_open, 1)
    # the late ones were booked at 01:00 the next day: on that day's report, paired with their settlements
    late_rows = [r for r in seen["results"] if f"S:{r['settlement_id']}" in late]
    assert len(late_rows) == 5 and all(r["line_id"] and r["tier"] == "reference" for r in late_rows), late_rows
    assert {ln["booked_at"].astimezone(UTC).time().isoformat() for ln in seen["lines"]} == {"01:00:00"}
    dropped = {f"S:{p.request_id}" for p in broken.of("drop")}
    assert {k for k, v in open_exceptions(seen).items() if v == BreakClass.MISSING_AT_PROVIDER.value} == dropped
    assert seen["dq_failed"] == [] and seen["mails"] == 4
    names = [name for name, _ in broken.inbox.pdf_attachments()]
    assert names == [f"recon-{broken.day}.pdf"] * 3 + [f"recon-{broken.day + timedelta(days=1)}.pdf"]
