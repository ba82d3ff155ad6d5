"""Leader-kill drill, full (issue 20 item 3): SIGKILL the broker leading the busiest input partition of the P2P flow
while trades flow through a real plain worker on a fresh local 3-node cluster; print the RTO over the runs
(p50, min, max), the records lost and duplicated, how long the killed broker took to rejoin the ISR, and whether the
reconciliation of each run's window ties out (spec §9.2 step 4).

    .venv/bin/python bench/bench_dr_leader_kill.py [--runs 3] [--orders 8000] [--rate 400] [--kill-after-s 8]

Each run starts its own cluster (free ports, a temporary data dir) so that one run's leaderships and group
coordinators do not decide the next one's. The drill itself is ``devtools/drills/leader_kill.py`` (the suite runs a
reduced one, ``tests/integration/test_cluster_leader_kill.py``); figures go to ``docs/disaster-recovery.md``.
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


from devtools.drills.leader_kill import HEAP_MB, DrillFigures, run_leader_kill_drill
from infra.kafka.cluster import LocalKafkaCluster
from tests.support.recon_check import reconcile_drill

BATCH = 50


def one_run(args: argparse.Namespace, root: Path) -> tuple[DrillFigures, bool]:
    """One drill on a fresh cluster, and whether its window's reconciliation ties out exactly."""
    cluster = LocalKafkaCluster.on_free_ports(root / "cluster", heap_mb=HEAP_MB)
    started_s = cluster.start(timeout_s=180)
    print(f"  cluster of 3 ready in {started_s:.1f} s", flush=True)
    try:
        figures = run_leader_kill_drill(
            cluster,
            root,
            uuid.uuid4().hex[:8],
            orders=args.orders,
            batch=BATCH,
            every_s=BATCH / args.rate,
            kill_after_s=args.kill_after_s,
        )
        tie_out = reconcile_drill(cluster.bootstrap, figures, root / "recon.duckdb")
        try:
            tie_out.assert_exact()
        except AssertionError as exc:
            print(f"  reconciliation does not tie out: {exc}", flush=True)
            return figures, False
        return figures, tie_out.settlements == figures.trades_expected
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--orders", type=int, default=8_000)
    parser.add_argument("--rate", type=float, default=400.0, help="orders per second sent")
    parser.add_argument("--kill-after-s", type=float, default=8.0)
    args = parser.parse_args()
    runs: list[DrillFigures] = []
    ties: list[bool] = []
    t0 = time.monotonic()
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", flush=True)
        with tempfile.TemporaryDirectory(prefix="dr-leader-kill-") as tmp:
            figures, tied = one_run(args, Path(tmp))
        print(f"  {figures.summary()}; reconciliation ties out: {tied}", flush=True)
        runs.append(figures)
        ties.append(tied)
    rto = [f.rto_s for f in runs]
    rejoin = [f.rejoin_s for f in runs]
    print(
        f"\nleader-kill drill, {len(runs)} runs, {args.orders} orders each at {args.rate:.0f}/s, kill after "
        f"{args.kill_after_s:.0f} s ({time.monotonic() - t0:.0f} s in all)\n"
        f"  RTO p50 {statistics.median(rto):.2f} s (min {min(rto):.2f}, max {max(rto):.2f})\n"
        f"  rejoin ISR p50 {statistics.median(rejoin):.1f} s (min {min(rejoin):.1f}, max {max(rejoin):.1f})\n"
        f"  trades {sum(f.trades_expected for f in runs)}, settled {sum(f.settled for f in runs)}, "
        f"lost {sum(f.lost for f in runs)}, duplicated {sum(f.duplicated for f in runs)}, "
        f"conflicting {sum(f.conflicts for f in runs)}, worker restarts {sum(f.worker_restarts for f in runs)}\n"
        f"  balances exact in every run: {all(f.balances_exact for f in runs)}; "
        f"K-AUS conserved in every run: {all(f.conserved for f in runs)}\n"
        f"  killed: {', '.join(f'node {f.killed_node} ({f.busiest_partition})' for f in runs)}\n"
        f"  reconciliation of the window ties out in every run: {all(ties)}"
    )
    ok = all(f.lost == f.duplicated == f.conflicts == 0 and f.balances_exact and f.conserved for f in runs)
    ok = ok and all(ties)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
