"""Whole-primary failover drill, full (issue 20 items 2 and 3): a 3-node primary and a 1-node standby fed by
MirrorMaker 2; every primary node SIGKILLed during P2P traffic through a real plain worker; a watcher fails over
once the primary has not answered for --down-after-s; then failback to the wiped primary. Prints RTO and RPO
(records, seconds) median/min/max over the runs, lost/duplicated/conflicting records, the balances, and whether the
reconciliation of each run's window ties out on the standby and, after failback, on the primary.

    .venv/bin/python bench/bench_dr_failover.py [--runs 3] [--orders 6000] [--rate 400] [--kill-after-s 10]

Each run starts fresh clusters (free ports, a temporary data dir). The drill is ``devtools/drills/failover.py`` (the
suite runs a reduced one, ``tests/integration/test_standby_failover.py``); figures go to docs/disaster-recovery.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devtools.drills.failover import FailoverFigures, run_failover_drill
from devtools.drills.leader_kill import HEAP_MB
from infra.kafka.cluster import LocalKafkaCluster
from tests.support.recon_check import reconcile_drill

BATCH = 50


def _ties_out(bootstrap: str, figures: FailoverFigures, db: Path) -> bool:
    tie_out = reconcile_drill(bootstrap, figures, db)
    try:
        tie_out.assert_exact()
    except AssertionError as exc:
        print(f"  reconciliation does not tie out on {bootstrap}: {exc}", flush=True)
        return False
    return True


def one_run(args: argparse.Namespace, root: Path) -> tuple[FailoverFigures, bool]:
    primary = LocalKafkaCluster.on_free_ports(root / "primary", heap_mb=HEAP_MB)
    standby = LocalKafkaCluster.on_free_ports(root / "standby", size=1, heap_mb=HEAP_MB)
    print(f"  primary of 3 ready in {primary.start(timeout_s=180):.1f} s, standby in {standby.start(180):.1f} s")
    try:
        figures = run_failover_drill(
            primary, standby, root, uuid.uuid4().hex[:8],
            orders=args.orders, failback_orders=args.failback_orders, batch=BATCH, every_s=BATCH / args.rate,
            kill_after_s=args.kill_after_s, down_after_s=args.down_after_s,
        )  # fmt: skip
        tied = _ties_out(standby.bootstrap, figures, root / "standby.duckdb")
        tied = _ties_out(primary.bootstrap, figures, root / "primary.duckdb") and tied
        return figures, tied
    finally:
        primary.stop()
        standby.stop()


def _spread(values: list[float], unit: str) -> str:
    return f"p50 {statistics.median(values):.1f} {unit} (min {min(values):.1f}, max {max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--orders", type=int, default=6_000)
    parser.add_argument("--failback-orders", type=int, default=600)
    parser.add_argument("--rate", type=float, default=400.0, help="orders per second sent")
    parser.add_argument("--kill-after-s", type=float, default=10.0)
    parser.add_argument("--down-after-s", type=float, default=3.0)
    args = parser.parse_args()
    runs: list[FailoverFigures] = []
    ties: list[bool] = []
    t0 = time.monotonic()
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", flush=True)
        with tempfile.TemporaryDirectory(prefix="dr-failover-") as tmp:
            figures, tied = one_run(args, Path(tmp))
        print(f"  {figures.summary()}\n  reconciliation ties out (standby, primary): {tied}", flush=True)
        runs.append(figures)
        ties.append(tied)
    tallies = [f.tally for f in runs]
    backs = [f.failback.tally for f in runs if f.failback is not None]
    print(
        f"\nwhole-primary failover drill, {len(runs)} runs, {args.orders} orders each at {args.rate:.0f}/s, kill "
        f"after {args.kill_after_s:.0f} s, down after {args.down_after_s:.0f} s "
        f"({time.monotonic() - t0:.0f} s in all)\n"
        f"  RTO {_spread([t.rto_s for t in tallies], 's')}\n"
        f"    detection {_spread([f.detect_s for f in runs], 's')}, switch {_spread([f.switch_s for f in runs], 's')}\n"
        f"  RPO {_spread([float(f.rpo_records) for f in runs], 'records')}, {_spread([f.rpo_s for f in runs], 's')}\n"
        f"  re-sent {sum(f.resent for f in runs)}, replayed {sum(f.records_replayed for f in runs)} records\n"
        f"  trades {sum(t.trades_expected for t in tallies)}, settled {sum(t.settled for t in tallies)}, "
        f"lost {sum(t.lost for t in tallies)}, duplicated (identical copies) {sum(t.duplicated for t in tallies)}, "
        f"conflicting {sum(t.conflicts for t in tallies)}, worker restarts {sum(f.worker_restarts for f in runs)}\n"
        f"  balances exact in every run: {all(t.balances_exact for t in tallies)}; "
        f"K-AUS conserved in every run: {all(t.conserved for t in tallies)}\n"
        f"  failback: caught up {_spread([f.failback.caught_up_s for f in runs if f.failback], 's')}, workers "
        f"down {_spread([f.failback.downtime_s for f in runs if f.failback], 's')}; lost {sum(t.lost for t in backs)}, "
        f"conflicting {sum(t.conflicts for t in backs)}, balances exact {all(t.balances_exact for t in backs)}\n"
        f"  reconciliation ties out in every run: {all(ties)}"
    )
    ok = all(t.lost == t.conflicts == 0 and t.balances_exact and t.conserved for t in [*tallies, *backs])
    return 0 if ok and all(ties) else 1


if __name__ == "__main__":
    sys.exit(main())
