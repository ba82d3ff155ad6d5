"""Auto-payout core benchmark: THRESHOLD evaluation of 100,000 rules on a balance sweep (domain.payouts only).

    python bench/bench_payout_rules.py [--rules 100000] [--steps 8] [--seed 17]

One THRESHOLD rule per account (thresholds 100-10,000 K-AUS, keep-minimum up to the threshold, caps
50-5,000 K-AUS), every holder KYC-verified. The sweep walks each account's available balance from below
its threshold to twice it in ``--steps`` steps; every step evaluates every account once
(``AutoPayouts.evaluate``, what the shell calls on each balance change). A PAY decision is completed at
once (``on_result`` with the balance less the payout, which re-evaluates the account: a capped payout
drains the rest one transaction at a time), so the figures include the in-flight bookkeeping. Reported:

* evaluations/s over the whole sweep (untimed loop) and the latency of single evaluations p50/p95/p99
  (a second, timed pass; the timer adds ~0.1 µs);
* the stateless sweep (``evaluate_thresholds``: just the rule arithmetic) in rules/s;
* building the book and its RSS, a snapshot round trip (``to_dict`` / ``from_dict``), peak RSS of the process.

Then the same kind of sweep through the service's record processor (``streams.payouts.service.PayoutService``,
in-process, no Kafka; ``--service-steps 0`` skips it): every rule and a VERIFIED status as ``payouts.rules`` and
``kyc.status`` records, a funding deposit below each threshold, then ``--service-steps`` deposits per account as
``ledger.transfers`` records (each takes the balance up by threshold / steps; every one is an evaluation), each PAY
completed with the records the platform writes for it (the ledger's hold and capture, the bridge's completed
result), which re-evaluates the account. Only the time inside ``PayoutService.handle`` is counted (decode, ingress
validation, balance mirror, core, outputs built), not building the records. Reported: records/s by kind, the
latency of one deposit record p50/p95/p99, and one save of the service's state (``to_dict`` + JSON: what the loop
writes every ``save_every_s``).

No Kafka, no ledger, no provider: the end-to-end payout latency is bench/bench_payouts_e2e.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts import models as m
from contracts.topics import (
    BRIDGE_REQUESTS,
    BRIDGE_SETTLEMENTS_COMPLETED,
    KYC_STATUS,
    LEDGER_TRANSFERS,
    PAYOUT_RULES,
    Topic,
)
from domain.bridge import bridge_tx_id_for, kaus_to_minor_floor
from domain.fx import FxBook, Quote
from domain.ledger import Leg, SettlementKind
from domain.money import Currency
from domain.payouts import Action, AutoPayouts, KycStatus, Rule, Trigger, evaluate_thresholds
from domain.rails import Provider
from domain.timeconv import from_ms
from streams.payouts.service import PayoutService, Record
from streams.payouts.settings import PayoutSettings

K = 1_000_000
NOW = 1_772_000_000_000
RATE = Decimal("0.15")  # USD per K-AUS, the one quote the service sweep prices its payouts at
TRANSFER_PARTITIONS = 12


def make_rules(count: int, seed: int) -> list[Rule]:
    rng = random.Random(seed)
    rules = []
    for i in range(count):
        threshold = rng.randint(100, 10_000) * K
        rules.append(
            Rule(
                rule_id=f"rule-{i}",
                account_id=f"acct-{i}",
                trigger_type=Trigger.THRESHOLD,
                payout_provider=Provider.STRIPE,
                payout_currency=Currency.USD,
                payout_account=f"ba_{i}",
                max_payout_per_tx_kaus_units=rng.randint(50, 5_000) * K,
                keep_minimum_kaus_units=rng.randint(0, threshold),
                threshold_kaus_units=threshold,
            )
        )
    return rules


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000 if ordered else float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(rules: list[Rule]) -> AutoPayouts:
    book = AutoPayouts()
    for rule in rules:
        book.put_rule(rule, 1, NOW)
        book.set_kyc(rule.account_id, KycStatus.VERIFIED, 1, 0, NOW)
    return book


def sweep(book: AutoPayouts, rules: list[Rule], steps: int, *, timed: bool) -> tuple[int, int, list[int]]:
    """(evaluations, payouts, per-evaluation ns when timed)."""
    evaluations = payouts = 0
    latencies: list[int] = []
    clock = time.perf_counter_ns
    for step in range(steps + 1):
        now = NOW + step * 1_000
        for rule in rules:
            assert rule.threshold_kaus_units is not None
            available = rule.threshold_kaus_units * (step + steps // 2) // steps  # half-threshold .. 1.5x
            if timed:
                t0 = clock()
                decisions = book.evaluate(rule.account_id, available, now)
                latencies.append(clock() - t0)
            else:
                decisions = book.evaluate(rule.account_id, available, now)
            evaluations += 1
            while decisions and decisions[-1].action is Action.PAY:
                payouts += 1
                available -= decisions[-1].amount_units
                decisions = book.on_result(decisions[-1].payout_id, True, available, now)
                evaluations += 1
    return evaluations, payouts, latencies


class ServiceDriver:
    """Feeds ``PayoutService`` records as the loop would and counts the time spent inside ``handle``."""

    def __init__(self) -> None:
        book = FxBook().with_quote(Quote("NEXUS_INTERNAL", "KAUS", Currency.USD, RATE, NOW))
        self.service = PayoutService(PayoutSettings(), lambda: book)
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.busy_ns: Counter[str] = Counter()  # per kind of record
        self.count: Counter[str] = Counter()
        self.deposit_ns: list[int] = []
        self.payouts = 0
        self.outputs: Counter[str] = Counter()  # by topic: a dead letter here means the sweep measured an error

    def feed(self, kind: str, topic: Topic, value: Any, partition: int = 0) -> list[tuple[Topic, Any]]:
        raw, key = topic.encode(value), topic.key_of(value)
        offset = self.offsets[(topic.name, partition)]
        self.offsets[(topic.name, partition)] += 1
        record = Record(topic.name, partition, offset, key, raw, NOW, NOW)
        t0 = time.perf_counter_ns()
        out = self.service.handle(record)
        took = time.perf_counter_ns() - t0
        self.busy_ns[kind] += took
        self.count[kind] += 1
        if kind == "deposit":
            self.deposit_ns.append(took)
        self.outputs.update(t.name for t, _ in out)
        return out

    def move(self, label: str, debit: str, credit: str, units: int, **fields: Any) -> list[tuple[Topic, Any]]:
        transfer_id = fields.pop("transfer_id")
        transfer = m.LedgerTransfer(transfer_id=transfer_id, debit_account_id=debit, credit_account_id=credit,
                                    asset="KAUS", amount_units=units, occurred_at=from_ms(NOW), **fields)  # fmt: skip
        return self.feed(label, LEDGER_TRANSFERS, transfer, hash(transfer_id) % TRANSFER_PARTITIONS)

    def complete(self, out: list[tuple[Topic, Any]]) -> None:
        """Every PAY in ``out`` settled as the platform would write it: hold, capture, the bridge's result."""
        todo = [v for t, v in out if t is BRIDGE_REQUESTS]
        while todo:
            request = todo.pop()
            assert request.payout is not None
            self.payouts += 1
            payout_id, account, units = request.request_id, request.payer_account_id, request.payout.amount_kaus_units
            tx = bridge_tx_id_for(payout_id)
            ref = {"kind": SettlementKind.PAYOUT, "id": payout_id}
            self.move("hold", account, "bridge:settlement", units, transfer_id=f"{tx}:hold", kind="PENDING",
                      reference=m.LedgerReference(**ref, leg=Leg.HOLD))  # fmt: skip
            self.move("capture", account, "bridge:settlement", units, transfer_id=f"{tx}:post", kind="POST_PENDING",
                      pending_id=f"{tx}:hold", reference=m.LedgerReference(**ref, leg=Leg.CAPTURE))  # fmt: skip
            result = m.BridgeSettlementCompleted(
                request_id=payout_id, bridge_tx_id=tx, payer_account_id=account, merchant_id=account, region="US",
                currency="USD", amount_minor=max(1, kaus_to_minor_floor(units, RATE, Currency.USD)),
                kaus_debited_units=units, rate=RATE, rail="STRIPE_INSTANT", provider_reference=f"po_{tx[-12:]}",
                provider_fee_minor=25, cashback_kaus_units=0, ecosystem_bonus_kaus_units=0, phase_durations_ms={},
                total_duration_ms=300, completed_at=datetime.now(UTC), payout_id=payout_id,
            )  # fmt: skip
            todo += [v for t, v in self.feed("result", BRIDGE_SETTLEMENTS_COMPLETED, result) if t is BRIDGE_REQUESTS]


def wire_rule(rule: Rule) -> m.AutoPayoutRule:
    return m.AutoPayoutRule(
        rule_id=rule.rule_id,
        account_id=rule.account_id,
        trigger_type=m.PayoutTrigger.THRESHOLD,
        threshold_kaus_units=rule.threshold_kaus_units,
        payout_provider=rule.payout_provider,
        payout_currency=rule.payout_currency,
        payout_account=f"acct_{rule.account_id.removeprefix('acct-')}",
        keep_minimum_kaus_units=rule.keep_minimum_kaus_units,
        max_payout_per_tx_kaus_units=rule.max_payout_per_tx_kaus_units,
    )


def service_sweep(rules: list[Rule], steps: int) -> ServiceDriver:
    """Rules and statuses in, a funding deposit at half each threshold, then ``steps`` deposits per account."""
    d = ServiceDriver()
    for rule in rules:
        kyc = m.KycStatusChanged(account_id=rule.account_id, status="VERIFIED", provider="SUMSUB",
                                 applicant_id=f"app-{rule.account_id}", event_id=f"evt-{rule.account_id}",
                                 occurred_at=from_ms(NOW))  # fmt: skip
        d.feed("kyc", KYC_STATUS, kyc)
        d.complete(d.feed("rule", PAYOUT_RULES, wire_rule(rule)))
    for step in range(steps + 1):
        for rule in rules:
            assert rule.threshold_kaus_units is not None
            units = rule.threshold_kaus_units // 2 if step == 0 else max(1, rule.threshold_kaus_units // steps)
            d.complete(d.move("deposit", "sys:mint", rule.account_id, units, transfer_id=f"dep-{step}-{rule.rule_id}"))
    return d


def service_report(rules: list[Rule], steps: int) -> None:
    t0 = time.perf_counter()
    d = service_sweep(rules, steps)
    wall_s = time.perf_counter() - t0
    by_kind = defaultdict(float, {k: ns / 1e9 for k, ns in d.busy_ns.items()})
    total_s = sum(by_kind.values())
    print(f"service sweep: {len(rules):,} rules, {steps} deposits per account after the funding one")
    for kind, n in d.count.items():
        print(f"  {kind:8} records: {n:>10,} in {by_kind[kind]:6.2f} s = {n / by_kind[kind]:>9,.0f}/s")
    records = sum(d.count.values())
    print(
        f"  all: {records:,} records in {total_s:.2f} s inside handle = {records / total_s:,.0f} records/s "
        f"({d.payouts:,} payouts decided and completed; {wall_s:.1f} s with building the records)"
    )
    in_flight = sum(d.service.book.in_flight(r.account_id) is not None for r in rules)
    print(f"  outputs: {dict(d.outputs)}; payouts left in flight: {in_flight}")
    lat = d.deposit_ns
    print(
        f"  one deposit record (mirror + evaluation + any PAY's outputs): p50 {pct(lat, 0.50):.1f} µs, "
        f"p95 {pct(lat, 0.95):.1f} µs, p99 {pct(lat, 0.99):.1f} µs"
    )
    t0 = time.perf_counter()
    size = len(json.dumps(d.service.to_dict(), separators=(",", ":"), sort_keys=True))
    print(f"  one state save (to_dict + JSON, before the write): {time.perf_counter() - t0:.2f} s, {size / 1e6:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--service-steps", type=int, default=4, help="deposits per account in the service sweep")
    args = parser.parse_args()
    rules = make_rules(args.rules, args.seed)
    gc.collect()
    rss_rules = rss_mb()

    t0 = time.perf_counter()
    book = build(rules)
    built_s = time.perf_counter() - t0
    gc.collect()
    book_mb = rss_mb() - rss_rules

    t0 = time.perf_counter()
    evaluations, payouts, _ = sweep(book, rules, args.steps, timed=False)
    sweep_s = time.perf_counter() - t0

    timed_book = build(rules)
    _, _, latencies = sweep(timed_book, rules, args.steps, timed=True)

    balances = {r.account_id: r.threshold_kaus_units * 3 // 2 for r in rules if r.threshold_kaus_units}
    t0 = time.perf_counter()
    due = evaluate_thresholds(rules, balances.__getitem__)
    stateless_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    snapshot = book.to_dict()
    restored = AutoPayouts.from_dict(snapshot)
    snapshot_s = time.perf_counter() - t0
    assert restored.to_dict() == snapshot

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rules: {len(rules):,} (one per account), sweep steps: {args.steps + 1}")
    print(
        f"build (put_rule + set_kyc): {built_s:.2f} s ({len(rules) / built_s:,.0f} rules/s),"
        f" the book's RSS: {book_mb:,.0f} MB"
    )
    print(
        f"sweep: {evaluations:,} evaluations, {payouts:,} payouts decided and completed in {sweep_s:.2f} s"
        f" = {evaluations / sweep_s:,.0f} evaluations/s"
    )
    print(
        f"single evaluation latency: p50 {pct(latencies, 0.50):.1f} µs, p95 {pct(latencies, 0.95):.1f} µs,"
        f" p99 {pct(latencies, 0.99):.1f} µs (n={len(latencies):,})"
    )
    print(f"stateless threshold sweep: {len(rules) / stateless_s:,.0f} rules/s ({len(due):,} would pay)")
    print(f"snapshot round trip (to_dict + from_dict): {snapshot_s:.2f} s")
    print(f"peak RSS: {peak_mb:,.0f} MB (the rules, two books, a snapshot and its restored copy)")
    if args.service_steps > 0:
        del book, timed_book, snapshot, restored, latencies
        gc.collect()
        service_report(rules, args.service_steps)
        print(f"RSS now: {rss_mb():,.0f} MB (the rules and the service with its state)")


if __name__ == "__main__":
    main()
