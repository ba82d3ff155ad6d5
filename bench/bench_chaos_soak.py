"""Chaos soak, full (issue 20 item 4): 100,000 seeded mixed events (energy orders, deposits, card payments,
THRESHOLD payouts) through the P2P worker, the bridge and the payouts service on a fresh local 3-node cluster,
while the workers are SIGKILLed 20 times and brokers restarted 3 times; prints the counts and exits 1 on any
violation (lost, duplicated, conflicting, a hold left open, K-AUS not conserved, a fault not carried out).

    .venv/bin/python bench/bench_chaos_soak.py [--seed N] [--events 100000] [--kills 20] [--broker-restarts 3]
                                               [--rate 300] [--settle-timeout-s 900]

The same seed replays the same traffic and the same faults at the same event positions. The soak itself is
``tests/support/chaos_soak.py`` (the suite runs a reduced one: ``tests/integration/test_chaos_soak.py``); what
each check computes and the figures: ``docs/chaos-soak.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from devtools.drills.leader_kill import HEAP_MB
from devtools.provider_sim.launcher import ProviderSimProcess
from infra.kafka.broker import find_free_ports
from infra.kafka.cluster import LocalKafkaCluster
from tests.support.chaos_soak import SoakSettings, run_soak

DEFAULT_SEED = 20261206


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=int(os.environ.get("NEXUS_CHAOS_SEED", DEFAULT_SEED)))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--broker-restarts", type=int, default=3)
    parser.add_argument("--rate", type=float, default=300.0, help="events per second sent")
    parser.add_argument("--settle-timeout-s", type=float, default=900.0)
    parser.add_argument("--bridge-runtime", choices=["plain", "faust"], default="plain")
    parser.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it (worker logs)")
    args = parser.parse_args()
    settings = SoakSettings(
        args.seed, args.events, args.kills, args.broker_restarts, args.rate, args.settle_timeout_s, args.bridge_runtime
    )
    console = Console()
    console.print(f"chaos soak, seed {args.seed} (replay: --seed {args.seed}), bridge {args.bridge_runtime}; "
                  f"load {os.getloadavg()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="chaos-soak-") as tmp:
        root = Path(tmp) if args.keep is None else args.keep
        root.mkdir(parents=True, exist_ok=True)
        cluster = LocalKafkaCluster.on_free_ports(root / "cluster", heap_mb=HEAP_MB)
        keys = root / "provider-keys"
        sim = ProviderSimProcess(
            port=find_free_ports(1)[0], state_dir=root / "sim", env={"NEXUS_PROVIDER_KEYS_DIR": str(keys)}
        )
        console.print(f"cluster of 3 ready in {cluster.start(timeout_s=180):.1f} s")
        sim.start()
        try:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console,
            ) as bars:  # fmt: skip
                tasks: dict[str, TaskID] = {}

                def progress(phase: str, done: int, total: int) -> None:
                    if phase not in tasks:
                        tasks[phase] = bars.add_task(phase, total=total)
                    bars.update(tasks[phase], completed=done)

                soak = run_soak(cluster, sim, keys, root / "workers", settings, progress)
        finally:
            sim.stop()
            cluster.stop()
    report = soak.report
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"load at the end {os.getloadavg()}")
    violations = report.violations()
    for v in violations:
        console.print(f"[red]VIOLATION[/red] {v}", highlight=False)
    console.print("[green]no violation[/green]" if not violations else f"[red]{len(violations)} violations[/red]")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
