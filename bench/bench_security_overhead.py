"""The security layer's cost on the High-Speed Bridge: the bridge worker's CPU per settlement with sealing off and
on, in one run on one warm broker.

    python bench/bench_security_overhead.py [--rate 200] [--seconds 20] [--burst 4000] [--payout-share 0.5]
                                            [--rounds 3] [--warm-s 90] [--payers 20000]

Everything runs on this machine, as in ``bench_bridge_kafka.py``: a fresh local broker, the provider simulator
answering at once, the ledger (``streams.p2p``), an FX feed every 0.5 s, and the bridge on its plain runtime
(``streams.bridge.loop``). The SoftHSM2 dev token and its keys are made first with ``python -m infra.hsm`` under
this run's data directory, as ``make setup`` makes them.

The requests mix card payments (``devtools.card_flow``, the spec's region mix) and holders' payouts (a ``payout``
block, Stripe / PayPal / Wise / Toss in turn, one holder each), ``--payout-share`` of them payouts. Each round
starts a fresh bridge process per mode, same consumer group (it resumes where the last one stopped):

* **before**: ``NEXUS_SEAL_MODE=off``; payouts carry the plain ``payout_account``;
* **after**: ``NEXUS_SEAL_MODE=hsm``; payouts carry ``payout_account_sealed`` (sealed here, as the payouts service
  seals it, under the token's encryption key) and only the masked account, which the bridge opens through PKCS#11
  just before the provider request.

Both modes follow ``governance.pause`` and write one audit record per settlement: the bridge has no switch for
either (the pause must not be switched off), so they are in both figures. Per mode: a short warm-up (the worker's
first HSM session and caches), an open loop at ``--rate`` for ``--seconds`` (latency p50/p95/p99) and a burst of
``--burst`` requests (settlements/s); for each, the bridge process's CPU (user + sys, ``/proc``) per settlement;
then its CPU per second with no traffic for ``IDLE_S``, and its peak RSS. ``--rounds`` alternates before/after that
many times (the VM's speed drifts between minutes); the table gives each round, the mean and the difference. Every
payout must settle (success 100%): a sealed account the bridge could not open would be declined
INVALID_PAYOUT_ACCOUNT. Failed settlements are counted by reason: a failure (NO_RAIL when a provider's circuit
breaker opens under a burst) is cheaper than a settlement, so a run with failures understates the CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer
from rich.console import Console
from rich.table import Table

from contracts import models as m
from contracts.topics import FX_RATES, LEDGER_COMMANDS
from devtools.card_flow import card_payments
from devtools.fx_feed import domain_quotes, fx_quotes
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import CardPayment, HolderPayout
from domain.cashback import PayerTier
from domain.fx import FxBook, kaus_to_minor
from domain.money import Currency
from domain.rails import Provider, Rail, payout_region
from infra.kafka.broker import LocalKafka, find_free_ports
from streams.kafka.clients import producer_config
from streams.kafka.topic_admin import ensure_topics
from streams.security.envelope import Sealer, SealSettings, mask_account, platform_sealer, seal_text
from streams.security.settings import SecuritySettings
from streams.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bridge_kafka import FX_DAY, WARM_RATE, Observer, Run, produce, summary, wait_done
from measure import cpu_s, peak_rss_mb
from workers import start_worker, stop_workers

console = Console(width=max(Console().width, 130))
PAYOUT_UNITS = 100_000_000  # 100 K-AUS per payout
PAYOUT_KINDS: tuple[tuple[Provider, Currency], ...] = (
    (Provider.STRIPE, Currency.USD),
    (Provider.PAYPAL, Currency.USD),
    (Provider.WISE, Currency.EUR),
    (Provider.TOSS, Currency.KRW),
)
MODES: dict[str, str] = {"before": "off", "after": "hsm"}  # mode: NEXUS_SEAL_MODE of the bridge
MODE_WARM_S = 5.0  # per bridge process, at WARM_RATE: its first HSM session, caches, the consumer's fetch
IDLE_S = 10.0  # after the burst: the process's CPU with no traffic (its listeners' polls, GC ticks)


def holder_account(provider: Provider, i: int) -> str:
    """A payout account of the provider's form (what the bridge checks before paying)."""
    return {
        Provider.STRIPE: f"acct_1Bench{i:012d}",
        Provider.PAYPAL: f"holder-{i}@example.com",
        Provider.WISE: str(40_000_000 + i),
        Provider.TOSS: f"sub{i:012d}",
    }[provider]


def holder_payouts(n: int, prefix: str, first_holder: int, sealer: Sealer | None, now_ms: int) -> list[CardPayment]:
    """``n`` payouts, one holder each, as the auto-payout service sends them: sealed and masked with ``sealer``, the
    plain account without one."""
    book = FxBook().with_quotes(domain_quotes(FX_DAY, 0, now_ms))
    out = []
    for k in range(n):
        provider, ccy = PAYOUT_KINDS[k % len(PAYOUT_KINDS)]
        region = payout_region(provider, ccy)
        assert region is not None, (provider, ccy)
        rate = book.combined_rate(ccy, now_ms).rate
        holder = first_holder + k
        account = holder_account(provider, holder)
        sealed = None if sealer is None else seal_text(sealer, account)
        shown = account if sealed is None else mask_account(account)
        out.append(
            CardPayment(
                request_id=f"{prefix}-payout-{k}",
                payer_account_id=f"acct-holder-{holder}",
                merchant_id=f"acct-holder-{holder}",
                merchant_program=None,
                amount_minor=max(1, kaus_to_minor(PAYOUT_UNITS, rate, ccy)),
                currency=ccy,
                region=region,
                payer_tier=PayerTier.BRONZE,
                quoted_rate=rate,
                requested_at_ms=now_ms,
                payout=HolderPayout(f"rule-{prefix}-{k}", provider, shown, PAYOUT_UNITS, sealed),
            )
        )
    return out


class Mix:
    """The requests of each run: card payments and holders' payouts interleaved (``share`` of them payouts), each
    holder paid once in the whole bench (a holder's payouts queue behind each other)."""

    def __init__(self, tag: str, share: float, payers: int) -> None:
        self.tag, self.share, self.payers = tag, share, payers
        self.next_holder = 0
        self.runs = 0

    def requests(self, n: int, sealer: Sealer | None) -> list[CardPayment]:
        self.runs += 1
        now_ms = time.time_ns() // 1_000_000
        n_payouts = round(n * self.share)
        prefix = f"r{self.runs}-{self.tag}"
        cards = card_payments(n - n_payouts, seed=self.runs, now_ms=now_ms, payers=self.payers, prefix=prefix)
        payouts = holder_payouts(n_payouts, prefix, self.next_holder, sealer, now_ms)
        self.next_holder += n_payouts
        out: list[CardPayment] = []
        for i in range(n):  # spread the payouts evenly through the run
            due = round((i + 1) * self.share) - round(i * self.share)
            out.append(payouts.pop() if due and payouts else cards.pop() if cards else payouts.pop())
        return out


def fund(producer: Producer, tag: str, payers: int, holders: int) -> None:
    """Every card payer and every holder the bench will pay out, funded once."""
    now = datetime.now(UTC)
    accounts = [f"acct-payer-{i}" for i in range(payers)] + [f"acct-holder-{i}" for i in range(holders)]
    for account in accounts:
        d = m.Deposit(command_id=f"dep-{tag}-{account}", account_id=account, amount_kaus_units=10**15, occurred_at=now)
        producer.produce(LEDGER_COMMANDS.name, key=LEDGER_COMMANDS.key_of(d), value=LEDGER_COMMANDS.encode(d))
        producer.poll(0)
    assert producer.flush(60) == 0, "deposits not delivered"


def init_hsm(env: dict[str, str], log_path: Path) -> None:
    """``python -m infra.hsm``: the dev token and its keys under this run's data directory."""
    with log_path.open("wb") as log:
        subprocess.run([sys.executable, "-m", "infra.hsm"], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


@lru_cache(maxsize=1)
def bench_sealer(data: Path) -> Sealer:
    """This process's sealer on the token ``init_hsm`` made (one PKCS#11 login per process: made once)."""
    sealer = platform_sealer(SealSettings(mode="hsm"), SecuritySettings(hsm_dir=data / "hsm"))
    assert sealer is not None
    return sealer


def timed(
    name: str, run: Run, rate: float | None, producer: Producer, observer: Observer, bridge: subprocess.Popen[bytes]
) -> dict[str, float]:
    """One run through the bridge: its figures and the bridge's CPU ms per settlement."""
    before = cpu_s(bridge.pid)
    with console.status(f"{name}: {len(run.payments)} requests…"):
        produce(producer, run, rate)
        wait_done(observer, run, 600, bridge)
    s = summary(run, observer)
    s["bridge_cpu_ms_per_settlement"] = 1000 * (cpu_s(bridge.pid) - before) / max(1, s["results"])
    payouts = [p.request_id for p in run.payments if p.payout is not None]
    paid = sum(1 for i in payouts if i in observer.results and observer.results[i][1]["ok"])
    s["payouts_paid_pct"] = 100 * paid / len(payouts) if payouts else float("nan")
    console.print(f"{name}: {s}")
    failed = Counter(v["reason_code"] for _, _, v in run.rows(observer) if not v["ok"])
    if failed:
        console.print(f"  [yellow]failed by reason:[/] {dict(failed.most_common())}")
    return s


def one_mode(
    mode: str, mix: Mix, args: argparse.Namespace, env: dict[str, str], data: Path, producer: Producer, obs: Observer
) -> dict[str, float]:
    """A fresh bridge process in ``mode``: warm-up, the paced run, the burst; its figures."""
    seal_mode = MODES[mode]
    sealer = None if seal_mode == "off" else bench_sealer(data)
    bridge_env = dict(env, NEXUS_SEAL_MODE=seal_mode, NEXUS_APP_ID=f"bs-{mix.tag}-bridge",
                      NEXUS_WORKER_INSTANCE_ID="bench-bridge")  # fmt: skip
    log_path = data / "bridge" / f"bridge-{mode}-{mix.runs}.log"
    bridge = start_worker("streams.bridge.loop", bridge_env, log_path)
    try:
        timed(f"{mode}: warm-up", Run("warm", mix.requests(int(MODE_WARM_S * WARM_RATE), sealer)), WARM_RATE,
              producer, obs, bridge)  # fmt: skip
        paced = timed(f"{mode}: {args.rate:.0f}/s", Run("paced", mix.requests(int(args.rate * args.seconds), sealer)),
                      args.rate, producer, obs, bridge)  # fmt: skip
        burst = timed(f"{mode}: burst", Run("burst", mix.requests(args.burst, sealer)), None, producer, obs, bridge)
        time.sleep(1.0)  # the burst's last acknowledgements
        idle_from = cpu_s(bridge.pid)
        time.sleep(IDLE_S)
        idle_cpu_ms_per_s = 1000 * (cpu_s(bridge.pid) - idle_from) / IDLE_S
        return {
            "settled_per_s": burst["per_s"],
            "burst_cpu_ms": burst["bridge_cpu_ms_per_settlement"],
            "paced_cpu_ms": paced["bridge_cpu_ms_per_settlement"],
            "p50_ms": paced["p50_ms"],
            "p95_ms": paced["p95_ms"],
            "p99_ms": paced["p99_ms"],
            "success_pct": min(paced["success_pct"], burst["success_pct"]),
            "payouts_paid_pct": min(paced["payouts_paid_pct"], burst["payouts_paid_pct"]),
            "peak_rss_mb": peak_rss_mb(bridge.pid),
            "idle_cpu_ms_per_s": idle_cpu_ms_per_s,
        }
    finally:
        stop_workers([bridge])


COLUMNS = (  # key, header, format
    ("settled_per_s", "burst settled/s", "{:,.0f}"),
    ("burst_cpu_ms", "CPU ms/settlement (burst)", "{:.3f}"),
    ("paced_cpu_ms", "CPU ms/settlement (paced)", "{:.3f}"),
    ("p50_ms", "p50 ms", "{:.1f}"),
    ("p95_ms", "p95 ms", "{:.1f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("idle_cpu_ms_per_s", "idle CPU ms/s", "{:.1f}"),
    ("success_pct", "settled", "{:.2f}%"),
    ("payouts_paid_pct", "payouts paid", "{:.2f}%"),
)


def report(rows: list[tuple[str, dict[str, float]]], args: argparse.Namespace) -> None:
    by_mode: dict[str, list[dict[str, float]]] = defaultdict(list)
    for mode, figures in rows:
        by_mode[mode].append(figures)
    mean = {mode: {k: sum(f[k] for f in fs) / len(fs) for k, _, _ in COLUMNS} for mode, fs in by_mode.items()}
    table = Table(
        title=f"The bridge process, security off (before) and on (after): paced {args.rate:.0f}/s for "
        f"{args.seconds:.0f} s, burst of {args.burst:,}; {args.payout_share:.0%} holder payouts"
    )
    table.add_column("run")
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for i, (mode, figures) in enumerate(rows):
        table.add_row(f"{mode} (round {i // 2 + 1})", *(fmt.format(figures[k]) for k, _, fmt in COLUMNS))
    for mode in MODES:
        table.add_row(f"[bold]{mode}, mean[/]", *(fmt.format(mean[mode][k]) for k, _, fmt in COLUMNS))
    diff = []
    for k, _, fmt in COLUMNS:
        delta, base = mean["after"][k] - mean["before"][k], mean["before"][k]
        relative = "" if k.endswith("_pct") or not base else f" ({100 * delta / base:+.1f}%)"
        diff.append(fmt.format(delta) + relative)
    table.add_row("[bold]after - before[/]", *diff)
    console.print(table)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200, help="requests/s of the paced run")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--burst", type=int, default=4_000)
    parser.add_argument("--payout-share", type=float, default=0.5, help="share of the requests that are payouts")
    parser.add_argument("--rounds", type=int, default=3, help="before/after pairs, alternated")
    parser.add_argument("--warm-s", type=float, default=90, help=f"traffic at {WARM_RATE:.0f}/s before timing")
    parser.add_argument("--payers", type=int, default=20_000)
    return parser.parse_args()


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # unwinds like Ctrl-C: the finally below stops what was started
    args = parse_args()
    assert 0 <= args.payout_share <= 1 and args.rounds >= 1
    port, controller, sim_port = find_free_ports(3)
    data = Path(tempfile.mkdtemp(prefix="bench-security-"))
    broker = LocalKafka(port=port, controller_port=controller, data_dir=data / "kafka")
    keys = data / "keys"
    sim = ProviderSimProcess(port=sim_port, state_dir=data / "sim", env={"NEXUS_PROVIDER_KEYS_DIR": str(keys)})
    ledger: list[subprocess.Popen[bytes]] = []
    stop_fx = threading.Event()
    env = dict(os.environ, NEXUS_DATA_DIR=str(data), NEXUS_PROVIDER_KEYS_DIR=str(keys), PYTHONUNBUFFERED="1",
               NEXUS_PROVIDER_TRANSPORT="lean")  # fmt: skip
    try:
        with console.status("the HSM token, the broker and the provider simulator…"):
            init_hsm(env, data / "hsm-init.log")
            broker.start(timeout_s=90)
            sim.start()
        sim.configure({rail.value: {"latency_ms": 0} for rail in Rail})
        env.update(NEXUS_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, NEXUS_PROVIDER_SIM_URL=sim.url)
        ensure_topics(Settings(kafka_bootstrap_servers=broker.bootstrap))
        producer = Producer(producer_config(broker.bootstrap, queue_buffering_max_messages=1_000_000))
        tag = uuid.uuid4().hex[:6]
        per_mode = int(MODE_WARM_S * WARM_RATE) + int(args.rate * args.seconds) + args.burst
        holders = round(args.payout_share * (per_mode * 2 * args.rounds + args.warm_s * WARM_RATE)) + 100
        with console.status(f"funding {args.payers:,} payers and {holders:,} holders…"):
            fund(producer, tag, args.payers, holders)

        def fx_feed() -> None:
            fx_producer = Producer(producer_config(broker.bootstrap))
            while not stop_fx.is_set():
                for q in fx_quotes(FX_DAY, 0, datetime.now(UTC)):
                    fx_producer.produce(FX_RATES.name, key=FX_RATES.key_of(q), value=FX_RATES.encode(q))
                fx_producer.flush(5)
                stop_fx.wait(0.5)

        threading.Thread(target=fx_feed, daemon=True).start()
        (data / "ledger").mkdir()
        (data / "bridge").mkdir()
        ledger_env = dict(env, NEXUS_AGENTS="settlement", NEXUS_APP_ID=f"bs-{tag}-ledger")
        ledger.append(start_worker("streams.p2p", ledger_env, data / "ledger" / "worker.log"))
        observer = Observer(broker.bootstrap)
        observer.start()
        observer.assigned.wait(30)
        mix = Mix(tag, args.payout_share, args.payers)
        if args.warm_s > 0:  # the broker's JIT (docs/performance.md, Method), through a bridge with sealing off
            warm_env = dict(env, NEXUS_SEAL_MODE="off", NEXUS_APP_ID=f"bs-{tag}-bridge",
                            NEXUS_WORKER_INSTANCE_ID="bench-bridge")  # fmt: skip
            bridge = start_worker("streams.bridge.loop", warm_env, data / "bridge" / "warm.log")
            try:
                timed("broker warm-up", Run("warm", mix.requests(int(args.warm_s * WARM_RATE), None)), WARM_RATE,
                      producer, observer, bridge)  # fmt: skip
            finally:
                stop_workers([bridge])
        rows = []
        for _ in range(args.rounds):
            for mode in MODES:
                rows.append((mode, one_mode(mode, mix, args, env, data, producer, observer)))
        observer.stop.set()
        report(rows, args)
        console.print(f"data (logs, token) under {data}")
        return 0
    finally:
        stop_fx.set()
        stop_workers(ledger)
        sim.stop()
        broker.stop()
        broker.wipe()


if __name__ == "__main__":
    sys.exit(main())
