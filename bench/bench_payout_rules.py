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

No Kafka, no ledger, no provider: the end-to-end payout latency belongs to the shell's benchmark.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.money import Currency
from domain.payouts import Action, AutoPayouts, KycStatus, Rule, Trigger, evaluate_thresholds
from domain.rails import Provider

K = 1_000_000
NOW = 1_772_000_000_000


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=17)
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


if __name__ == "__main__":
    main()
