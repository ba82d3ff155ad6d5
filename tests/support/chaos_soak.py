"""The chaos soak (issue 20 item 4), run on a 3-node cluster: the seeded mixed traffic of ``devtools/chaos/plan.py``
through the real processes — the P2P worker (``streams.p2p``: matching and the ledger), the bridge's plain runtime
(``streams.bridge.loop``) against the provider simulator, the auto-payout service (``streams.payouts``) — each under
a supervisor, while the fault runner SIGKILLs them and restarts brokers; then the checks, as a ``SoakReport``.

``tests/integration/test_chaos_soak.py`` runs a reduced soak, ``bench/bench_chaos_soak.py`` the full one;
``docs/chaos-soak.md`` says what each check computes.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from contracts.topics import (
    BRIDGE_REQUESTS,
    ENERGY_SETTLEMENTS,
    ENERGY_TRADES,
    KYC_STATUS,
    LEDGER_COMMANDS,
    LEDGER_TRANSFERS,
    PAYOUT_REQUESTS,
    PAYOUT_RESULTS,
    PAYOUT_RULES,
    TOPICS,
)
from devtools.chaos.driver import FaultRunner, Sender, Supervisor
from devtools.chaos.plan import (
    FX_DAY,
    THRESHOLD_UNITS,
    FaultKind,
    Kind,
    Traffic,
    plan_faults,
    plan_traffic,
)
from devtools.chaos.report import SoakReport
from devtools.drills.flow import reference_run
from devtools.provider_sim.launcher import ProviderSimProcess
from domain.bridge import bridge_tx_id_for
from domain.trade_settlement import SYS_DIVIDENDS, SYS_FEES, SYS_MINT
from infra.kafka.broker import find_free_ports
from infra.kafka.cluster import LocalKafkaCluster
from streams.bridge.providers.base import uuid_for_key
from tests.support.kafka_io import KafkaIO
from tests.support.money_out import KAUS, POSTED_KINDS, FxFeed, LedgerFold, bridge_answers, wait_until_served
from tests.support.workers import WorkerProcess

ISSUANCE = ("bridge:rewards", "bridge:ecosystem")  # reward accounts: they run negative by design
SETTLEMENT = "bridge:settlement"  # K-AUS that left the platform as fiat
PLATFORM = (SYS_FEES, SYS_DIVIDENDS)
MAY_BE_NEGATIVE = {SYS_MINT, *ISSUANCE}
WORKERS = ("p2p", "bridge", "payouts")
# Measured or stamped when written, not decided: a copy written again after a restart may differ in them.
TIMING_FIELDS = {"matching_duration_us", "phase_durations_us", "requested_at"}
PROVIDER_LATENCY_MS = 50
DETAILS_MAX = 20  # conflicting records shown in a report


@dataclass(frozen=True)
class SoakSettings:
    seed: int
    events: int
    kills: int
    broker_restarts: int
    rate_per_s: float = 200.0
    settle_timeout_s: float = 300.0  # after the last event: every outcome there, nothing in flight
    bridge_runtime: str = "plain"  # or "faust": the bridge agent in a Faust worker (python -m streams.worker)


def soak_workers(
    bootstrap: str, workdir: Path, tag: str, sim: ProviderSimProcess, keys: Path, bridge_runtime: str = "plain"
) -> dict[str, WorkerProcess]:
    """The three processes (not started): the ledger's epoch timer off (no dividends in this soak)."""
    provider = {"NEXUS_PROVIDER_SIM_URL": sim.url, "NEXUS_PROVIDER_KEYS_DIR": str(keys)}
    bridges = {
        "plain": ("streams.bridge.loop", provider),
        "faust": ("streams.worker", {**provider, "NEXUS_AGENTS": "bridge"}),
    }
    envs = {
        "p2p": ("streams.p2p", {"NEXUS_AGENTS": "matching,settlement", "NEXUS_DIVIDEND_TIMER_EVERY_S": "0"}),
        "bridge": bridges[bridge_runtime],
        "payouts": ("streams.payouts", {}),
    }
    workers = {}
    for name, (module, env) in envs.items():
        web_port, metrics_port = find_free_ports(2)
        workers[name] = WorkerProcess(
            bootstrap, f"nexus-chaos-{name}-{tag}", workdir / name, web_port, metrics_port, env, module=module
        )
    return workers


class Soak(NamedTuple):
    report: SoakReport
    traffic: Traffic
    sent: int  # events acknowledged by the cluster (all of them, unless the sender failed)
    seen: Seen


def run_soak(
    cluster: LocalKafkaCluster,
    sim: ProviderSimProcess,
    keys: Path,
    workdir: Path,
    settings: SoakSettings,
    progress: Callable[[str, int, int], None] | None = None,
) -> Soak:
    """One soak on a running cluster (its topics get created here); ``progress(phase, done, total)`` if given."""
    began = time.monotonic()
    tag = f"{settings.seed % 10**8:08d}"
    traffic = plan_traffic(settings.seed, settings.events, tag)
    nodes = [node.node_id for node in cluster.nodes]
    faults = plan_faults(settings.seed, settings.events, settings.kills, settings.broker_restarts, WORKERS, nodes)
    kafka = KafkaIO(cluster.bootstrap)
    kafka.ensure_topics()
    wait_until_served(cluster.bootstrap, 120)
    sim.reset()
    sim.configure({"*": {"latency_ms": PROVIDER_LATENCY_MS}})
    workers = soak_workers(cluster.bootstrap, workdir, tag, sim, keys, settings.bridge_runtime)
    for w in workers.values():
        w.start(wait=False)
    supervisor = Supervisor(workers)
    try:
        for w in workers.values():
            w.wait_ready(180)
        with FxFeed(kafka, FX_DAY):
            set_up(kafka, traffic, workers["payouts"])
            supervisor.start()
            sender = Sender(cluster.bootstrap, traffic.events, settings.rate_per_s)
            runner = FaultRunner(faults, lambda: sender.sent, supervisor, cluster, list(TOPICS))
            drive(sender, runner, progress)
            sent_at = time.monotonic()
            unfinished = wait_outcomes(kafka, traffic, sender.sent, workers["payouts"], settings, progress)
            settle_s = time.monotonic() - sent_at
            supervisor.stop()
            for name in ("payouts", "bridge", "p2p"):  # the ledger last: it applies what the others sent
                workers[name].stop(60)
            seen = read_all(kafka, sim)
    finally:
        supervisor.stop()
        for w in workers.values():
            w.stop(30)
    report = tally(traffic, sender.sent, seen)
    report.faults_planned, report.fault_error = len(faults), runner.error
    report.kills = dict(Counter(d.fault.target for d in runner.done_faults if d.fault.kind is FaultKind.KILL_WORKER))
    report.broker_restarts = [d.note for d in runner.done_faults if d.fault.kind is FaultKind.RESTART_BROKER]
    report.restarts_after_kill = dict(supervisor.restarts_after_kill)
    report.unplanned_exits = dict(supervisor.unplanned_exits)
    report.peak_rss_mb = dict(supervisor.peak_rss_mb)
    report.send_errors, report.unfinished = list(sender.errors), unfinished
    report.wall_s, report.send_s, report.settle_s = time.monotonic() - began, sender.send_s, settle_s
    return Soak(report, traffic, sender.sent, seen)


def drive(sender: Sender, runner: FaultRunner, progress: Callable[[str, int, int], None] | None) -> None:
    """Traffic and faults together, until both are done (the faults stop waiting if the sender gave up)."""
    sender.start()
    runner.start()
    while sender.is_alive() or runner.is_alive():
        if progress:
            progress("events sent", sender.sent, len(sender.events))
            progress("faults", len(runner.done_faults), len(runner.faults))
        if not sender.is_alive() and sender.sent < len(sender.events):
            runner.stopping.set()
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------------------------------
# before and after the traffic


def payouts_state(worker: WorkerProcess) -> dict[str, Any]:
    try:
        return dict(json.loads((worker.data_dir / "payouts" / "state.json").read_bytes()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def until(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"never saw {what} in {timeout_s:.0f} s"
        time.sleep(0.5)


def set_up(kafka: KafkaIO, traffic: Traffic, payouts: WorkerProcess) -> None:
    """Funding, the holders' KYC statuses and rules; returns once the payouts service has read them all."""
    kafka.produce_messages(LEDGER_COMMANDS, traffic.funding)
    for kyc in traffic.kyc:
        kafka.produce(KYC_STATUS, kyc.account_id.encode(), KYC_STATUS.encode(kyc))
    kafka.produce_messages(PAYOUT_RULES, traffic.rules)

    def read() -> bool:
        s = payouts_state(payouts)
        if not s:
            return False
        accounts, versions = s["book"]["accounts"], s["book"]["versions"]
        kyc_read = all(accounts.get(k.account_id, {}).get("kyc") == "VERIFIED" for k in traffic.kyc)
        return kyc_read and {r.rule_id for r in traffic.rules} <= set(versions)

    until("the payouts service reading the KYC statuses and the rules", read, 180)


def wait_outcomes(
    kafka: KafkaIO,
    traffic: Traffic,
    sent: int,
    payouts: WorkerProcess,
    settings: SoakSettings,
    progress: Callable[[str, int, int], None] | None,
) -> list[str]:
    """Wait (bounded) until every input sent has its outcome and nothing is in flight; return what is missing."""
    expected_trades, _ = reference_run(traffic.trader_funding, _sent(traffic, sent, Kind.ORDER))
    cards = {c.request_id for c in _sent(traffic, sent, Kind.CARD)}
    deposits = {d.command_id for d in [*traffic.funding, *_sent(traffic, sent, Kind.DEPOSIT, Kind.PAYOUT)]}
    deadline = time.monotonic() + settings.settle_timeout_s
    missing: list[str] = ["nothing read yet"]
    while missing and time.monotonic() < deadline:
        settled = {s["trade_id"] for s in kafka.values(ENERGY_SETTLEMENTS, 60) if s["status"] == "SETTLED"}
        answered = bridge_answers(kafka).keys()
        fold = LedgerFold.of(kafka.values(LEDGER_TRANSFERS, 60))
        requested = {r["payout_id"] for r in kafka.values(PAYOUT_REQUESTS)}
        resulted = {r["payout_id"] for r in kafka.values(PAYOUT_RESULTS)}
        state = payouts_state(payouts)
        idle = bool(state) and not state["sent"] and not state["pending"]
        idle = idle and all(a["in_flight"] is None for a in state["book"]["accounts"].values())
        asked = {r["request_id"] for r in kafka.values(BRIDGE_REQUESTS)}
        missing = [
            f"{what}: {n}"
            for what, n in (
                ("trades not settled", len(expected_trades.keys() - settled)),
                ("card payments not answered", len(cards - answered)),
                ("bridge requests not answered", len(asked - answered)),
                ("deposits not applied", len(deposits - fold.transfers.keys())),
                ("payout requests without a result", len(requested - resulted)),
                ("holds open", len(fold.open_holds())),
                ("payouts service not idle", 0 if idle else 1),
            )
            if n
        ]
        if progress:
            progress("outcomes", 7 - len(missing), 7)
        if missing:
            time.sleep(3)
    return missing


@dataclass
class Seen:
    """What the soak left on the cluster and at the provider, read once every process had stopped."""

    transfers: list[dict[str, Any]]
    trades: list[dict[str, Any]]
    settlements: list[dict[str, Any]]
    answers: dict[str, list[dict[str, Any]]]
    payout_requests: list[dict[str, Any]]
    payout_results: list[dict[str, Any]]
    sim_payouts: list[dict[str, Any]]


def read_all(kafka: KafkaIO, sim: ProviderSimProcess) -> Seen:
    return Seen(
        transfers=kafka.values(LEDGER_TRANSFERS, 60),
        trades=kafka.values(ENERGY_TRADES, 60),
        settlements=kafka.values(ENERGY_SETTLEMENTS, 60),
        answers=bridge_answers(kafka),
        payout_requests=kafka.values(PAYOUT_REQUESTS),
        payout_results=kafka.values(PAYOUT_RESULTS),
        sim_payouts=sim.payouts(),
    )


def _sent(traffic: Traffic, sent: int, *kinds: Kind) -> list[Any]:
    return [e.message for e in traffic.events[:sent] if e.kind in kinds]


# --------------------------------------------------------------------------------------------------------------------
# the checks


def copies(
    records: list[dict[str, Any]], key: str, details: list[str] | None = None
) -> tuple[dict[str, dict[str, Any]], int, int]:
    """Each id's first record, the identical copies beyond it and the ids that came with a different record (what
    differed goes to ``details``)."""
    first: dict[str, dict[str, Any]] = {}
    again = 0
    differing: set[str] = set()
    for r in records:
        kept = {k: v for k, v in r.items() if k not in TIMING_FIELDS}
        prior = first.setdefault(r[key], kept)
        if prior is kept:
            continue
        if prior == kept:
            again += 1
            continue
        differing.add(r[key])
        if details is not None and len(details) < DETAILS_MAX:
            changed = {
                k: (prior.get(k), kept.get(k)) for k in prior.keys() | kept.keys() if prior.get(k) != kept.get(k)
            }
            details.append(f"{key} {r[key]}: {changed}")
    return first, again, len(differing)


def tally(traffic: Traffic, sent: int, seen: Seen) -> SoakReport:
    """Every check, as counts (``SoakReport.violations`` says which broke)."""
    names = traffic.names
    events = Counter(str(e.kind) for e in traffic.events[:sent])
    report = SoakReport(seed=traffic.seed, events={k.value: events[k.value] for k in Kind})
    fold = LedgerFold.of(seen.transfers)
    report.conflicts["ledger.transfers"] = len(fold.conflicts)
    report.conflict_details += [f"transfer_id {i}" for i in fold.conflicts[:DETAILS_MAX]]
    report.reemitted["ledger.transfers"] = len(seen.transfers) - len(fold.transfers) - len(fold.conflicts)
    refs = references(fold)
    fees = check_trades(report, traffic, sent, seen, fold)
    check_deposits(report, traffic, sent, refs)
    cards = check_cards(report, traffic, sent, seen, refs)
    paid = check_payouts(report, traffic, seen, fold, refs)
    settled_keys = {k for rid in [*(c["request_id"] for c in cards), *paid] for k in provider_keys(rid)}
    report.duplicated["provider payouts of no settlement"] = sum(
        p["idempotency_key"] not in settled_keys for p in seen.sim_payouts
    )
    report.holds_open = len(fold.open_holds())
    balances = fold.accounts(KAUS)
    report.negative_accounts = sorted(a for a, u in balances.items() if u < 0 and a not in MAY_BE_NEGATIVE)
    staked = sum(u for a, u in balances.items() if a.startswith("staked:"))
    special = {SYS_MINT, SETTLEMENT, *ISSUANCE, *PLATFORM}
    holders = {a: u for a, u in balances.items() if a not in special and not a.startswith("staked:")}
    report.unnamed_accounts = sorted(a for a, u in holders.items() if u and a not in names.people)
    deposits = [*traffic.funding, *_sent(traffic, sent, Kind.DEPOSIT, Kind.PAYOUT)]
    report.kaus = {
        "holders": sum(holders.values()),
        "staked": staked,
        "platform": sum(balances.get(a, 0) for a in PLATFORM),
        "deposits": sum({d.command_id: d.amount_kaus_units for d in deposits}.values()),
        "rewards": sum(c["cashback_kaus_units"] + c["ecosystem_bonus_kaus_units"] for c in cards),
        "captured": sum(c["kaus_debited_units"] for c in cards) + sum(p["kaus_debited_units"] for p in paid.values()),
        # term by term, each from the ledger's side
        "minted": -balances.get(SYS_MINT, 0),
        "issued": -sum(balances.get(a, 0) for a in ISSUANCE),
        "settlement_account": balances.get(SETTLEMENT, 0),
        "trade_fees": fees,
    }
    return report


def references(fold: LedgerFold) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Transfers by their reference (kind, id, leg): one pass instead of a scan per lookup."""
    found: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for t in fold.transfers.values():
        ref = t.get("reference") or {}
        found[(ref.get("kind", ""), ref.get("id", ""), ref.get("leg", ""))].append(t)
    return found


def moved(refs: dict[tuple[str, str, str], list[dict[str, Any]]], kind: str, ref_id: str, leg: str) -> int:
    return sum(t["amount_units"] for t in refs.get((kind, ref_id, leg), []) if t["kind"] in POSTED_KINDS)


def provider_keys(request_id: str) -> set[str]:
    """The provider's idempotency keys of one settlement: the bridge tx id, or Wise's UUID of it."""
    tx = bridge_tx_id_for(request_id)
    return {tx, uuid_for_key(tx)}


def check_trades(report: SoakReport, traffic: Traffic, sent: int, seen: Seen, fold: LedgerFold) -> int:
    """Trades and settlements against the clean in-process run; the traders' balances exact. Returns the fees."""
    expected, balances = reference_run(traffic.trader_funding, _sent(traffic, sent, Kind.ORDER))
    markets = set(traffic.names.markets)
    trades, report.reemitted["energy.trades"], report.conflicts["energy.trades"] = copies(
        [t for t in seen.trades if t["market_id"] in markets], "trade_id", report.conflict_details
    )
    settlements, report.reemitted["energy.settlements"], report.conflicts["energy.settlements"] = copies(
        [s for s in seen.settlements if s["market_id"] in markets], "trade_id", report.conflict_details
    )
    settled = {i: s for i, s in settlements.items() if s["status"] == "SETTLED"}
    report.lost["trades"] = len(expected.keys() - settled.keys())
    report.duplicated["trades not in the clean run"] = len(trades.keys() ^ expected.keys())
    report.outcomes["trades settled"] = len(settled)
    report.balances_exact = all(fold.balance(a) == balances[a] for a in traffic.names.traders)
    return sum(s["fee_kaus_units"] for s in settled.values())


def check_deposits(
    report: SoakReport, traffic: Traffic, sent: int, refs: dict[tuple[str, str, str], list[dict[str, Any]]]
) -> None:
    """Each deposit sent is minted once, for its amount."""
    lost = twice = 0
    deposits = [*traffic.funding, *_sent(traffic, sent, Kind.DEPOSIT, Kind.PAYOUT)]
    for d in deposits:
        legs = refs.get(("DEPOSIT", d.command_id, "DEPOSIT"), [])
        lost += not legs
        twice += len(legs) > 1 or (len(legs) == 1 and legs[0]["amount_units"] != d.amount_kaus_units)
    report.lost["deposits"], report.duplicated["deposits"] = lost, twice
    report.outcomes["deposits applied"] = len(deposits) - lost


def check_cards(
    report: SoakReport,
    traffic: Traffic,
    sent: int,
    seen: Seen,
    refs: dict[tuple[str, str, str], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """One answer per card payment (copies identical); a completed one paid once at the provider and captured for
    its K-AUS, a failed one never paid nor captured. Returns the completed answers."""
    keys = ("topic", "kaus_debited_units", "amount_minor", "currency", "cashback_kaus_units",
            "ecosystem_bonus_kaus_units", "reason_code")  # fmt: skip
    by_key = Counter(p["idempotency_key"] for p in seen.sim_payouts)
    completed, lost, again, conflicting, twice, failed = [], 0, 0, 0, 0, 0
    for request in _sent(traffic, sent, Kind.CARD):
        answers = seen.answers.get(request.request_id, [])
        if not answers:
            lost += 1
            continue
        first = answers[0]
        distinct = {tuple(a.get(k) for k in keys) for a in answers}
        again += len(answers) - 1
        conflicting += len(distinct) > 1
        at_provider = sum(by_key[k] for k in provider_keys(request.request_id))
        tx = bridge_tx_id_for(request.request_id)
        captured = moved(refs, "CARD_PAYMENT", tx, "CAPTURE")
        if first["topic"].endswith("completed"):
            completed.append(first)
            twice += at_provider > 1
            lost += at_provider == 0
            conflicting += captured != first["kaus_debited_units"]
            conflicting += moved(refs, "CARD_PAYMENT", tx, "CASHBACK") != first["cashback_kaus_units"]
        else:
            failed += 1
            report.failed(f"card {first.get('reason_code')}", first.get("reason", ""))
            twice += at_provider > 0 or captured > 0
    report.lost["card answers"], report.reemitted["card answers"] = lost, again
    report.conflicts["card answers"], report.duplicated["card payments paid twice"] = conflicting, twice
    report.outcomes["cards completed"], report.outcomes["cards failed"] = len(completed), failed
    return completed


def check_payouts(
    report: SoakReport,
    traffic: Traffic,
    seen: Seen,
    fold: LedgerFold,
    refs: dict[tuple[str, str, str], list[dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """One result per payout request; PAID paid once at the provider and captured for its K-AUS, FAILED never paid;
    no holder left above its threshold (a trigger lost) unless a payout of theirs failed. Returns the PAID ones."""
    requests, report.reemitted["payouts.requests"], report.conflicts["payouts.requests"] = copies(
        seen.payout_requests, "payout_id", report.conflict_details
    )
    results, report.reemitted["payouts.results"], report.conflicts["payouts.results"] = copies(
        seen.payout_results, "payout_id", report.conflict_details
    )
    by_key = Counter(p["idempotency_key"] for p in seen.sim_payouts)
    paid = {i: r for i, r in results.items() if r["status"] == "PAID"}
    failed = {i: r for i, r in results.items() if r["status"] != "PAID"}
    twice = lost = 0
    for payout_id, r in results.items():
        at_provider = sum(by_key[k] for k in provider_keys(payout_id))
        captured = moved(refs, "PAYOUT", payout_id, "CAPTURE")
        if payout_id in paid:
            twice += at_provider > 1 or captured != r["kaus_debited_units"]
            lost += at_provider == 0
        else:
            report.failed(f"payout {r.get('reason_code')}", r.get("reason", ""))
            twice += at_provider > 0 or captured > 0
    failed_holders = {requests[i]["account_id"] for i in failed if i in requests}
    above = [h for h in traffic.names.holders if fold.balance(h) > THRESHOLD_UNITS and h not in failed_holders]
    report.lost["payout results"] = len(requests.keys() - results.keys()) + lost
    report.lost["payout triggers"] = len(above)
    report.duplicated["payouts paid twice"] = twice
    report.outcomes["payouts paid"], report.outcomes["payouts failed"] = len(paid), len(failed)
    return paid
