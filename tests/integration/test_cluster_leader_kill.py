"""Disaster-recovery drill on the local 3-broker cluster (issue 20 items 1 and 3): SIGKILL the broker leading the
busiest input partition while P2P trades flow through a real worker; nothing is lost or applied twice, K-AUS is
conserved exactly, settlements flow again within the RTO bound, the killed broker rejoins the ISR, and the
reconciliation of the drill's window ties out (spec §9.2 step 4).

The flow is the plain runtime's matching + ledger (``python -m streams.p2p``) fed a seeded order stream, because
its money invariant is the cleanest there is: the trades and every account's balance must equal a clean in-process
run of the same commands. The drill itself is ``devtools/drills/leader_kill.py``; ``bench/bench_dr_leader_kill.py``
runs it in full (longer traffic, several runs, the median RTO).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.drills.leader_kill import HEAP_MB, run_leader_kill_drill
from infra.kafka.broker import JARS_DIR, MARKER_NAME
from infra.kafka.cluster import LocalKafkaCluster
from tests.support.recon_check import reconcile_drill

pytestmark = pytest.mark.slow

# After the kill, the controller waits for the dead broker's session to expire (4 s on the local cluster) before it
# moves the leaderships; the clients then find the new leaders (metadata refresh, retries with backoff). On this
# shared, loaded 2-core machine the whole chain measured well under 30 s; 45 s leaves room for a busy moment
# without hiding a failover that does not happen (then nothing settles until the broker is back).
RTO_BOUND_S = 45.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    """Its own 3-node cluster (the session broker is single-node and shared): free ports, data in a tmp dir."""
    if not (JARS_DIR / MARKER_NAME).exists() and os.system("command -v mvn >/dev/null") != 0:
        pytest.skip("Kafka jars are not cached and mvn is not installed to fetch them")
    cluster = LocalKafkaCluster.on_free_ports(tmp_path_factory.mktemp("cluster"), heap_mb=HEAP_MB)
    cluster.start(timeout_s=180)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(600)
def test_killing_the_busiest_partitions_leader_loses_and_duplicates_nothing(
    cluster: LocalKafkaCluster, run_id: str, tmp_path: Path
) -> None:
    figures = run_leader_kill_drill(cluster, tmp_path, run_id, orders=3_000, batch=40, every_s=0.25, kill_after_s=4)
    print(figures.summary())
    assert figures.trades_expected > 300, "the seeded flow must trade enough to be a real test"
    assert (figures.lost, figures.conflicts, figures.acked_lost) == (0, 0, 0), figures.summary()
    # A restarted worker replays and repeats outputs, identical ones (by design: docs/state-and-recovery.md);
    # without a restart the failover itself must repeat nothing.
    assert figures.duplicated == 0 or figures.worker_restarts > 0, figures.summary()
    assert figures.settled == figures.trades_expected
    assert figures.balances_exact and figures.conserved, figures.summary()
    assert figures.rto_s < RTO_BOUND_S, figures.summary()
    assert figures.busiest_partition in figures.led
    tie_out = reconcile_drill(cluster.bootstrap, figures, tmp_path / "recon.duckdb")
    tie_out.assert_exact()
    assert tie_out.settlements == figures.trades_expected, tie_out
