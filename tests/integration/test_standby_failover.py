"""Whole-primary failover drill, reduced (issue 20 items 2 and 3): MirrorMaker 2 feeds a standby region; every node
of the primary is SIGKILLed during P2P traffic through a real plain worker; a watcher runs the failover once the
primary has not answered for 3 s; the worker moves and the traffic re-sends what the standby lacks. Nothing money
is lost after the replay, nothing conflicts, balances equal the clean run's, the window reconciles on the standby.
Then failback: the old primary wiped, mirrored from the standby, the worker moved back, more orders; the same holds
on the primary over the whole flow. ``bench/bench_dr_failover.py`` runs the full drill (a 3-node primary).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.drills.failover import run_failover_drill
from infra.kafka.broker import JARS_DIR, MARKER_NAME
from infra.kafka.cluster import LocalKafkaCluster
from tests.support.recon_check import reconcile_drill

pytestmark = pytest.mark.slow

HEAP_MB = 384
# Spec §9.1: RTO < 5 min; the aim is under 60 s: detection (3 s), the switch, the worker's rebuild from the
# mirrored topics and the re-send, on a loaded 2-core machine with other clusters running beside.
RTO_BOUND_S = 60.0


def _cluster(root: Path) -> LocalKafkaCluster:
    return LocalKafkaCluster.on_free_ports(root, size=1, heap_mb=HEAP_MB)


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafkaCluster, LocalKafkaCluster]]:
    """A one-node primary and a one-node standby of their own (the session broker is shared)."""
    if not (JARS_DIR / MARKER_NAME).exists() and os.system("command -v mvn >/dev/null") != 0:
        pytest.skip("Kafka jars are not cached and mvn is not installed to fetch them")
    primary, standby = _cluster(tmp_path_factory.mktemp("primary")), _cluster(tmp_path_factory.mktemp("standby"))
    primary.start(timeout_s=180)
    standby.start(timeout_s=180)
    try:
        yield primary, standby
    finally:
        primary.stop()
        standby.stop()


@pytest.mark.timeout(420)
def test_losing_the_whole_primary_fails_over_to_the_standby_and_back(
    regions: tuple[LocalKafkaCluster, LocalKafkaCluster], run_id: str, tmp_path: Path
) -> None:
    primary, standby = regions
    figures = run_failover_drill(
        primary, standby, tmp_path, run_id, orders=1_600, failback_orders=200, batch=40, every_s=0.25, kill_after_s=6
    )
    print(figures.summary())
    t = figures.tally
    assert t.trades_expected > 200, "the seeded flow must trade enough to be a real test"
    assert (t.lost, t.conflicts, t.settled) == (0, 0, t.trades_expected), figures.summary()
    assert t.balances_exact and t.conserved, figures.summary()
    assert t.rto_s < RTO_BOUND_S, figures.summary()
    assert figures.rpo_records <= figures.resent, "every order the standby lacked was re-sent"
    reconcile_drill(standby.bootstrap, figures, tmp_path / "standby.duckdb").assert_exact()
    assert figures.failback is not None
    back = figures.failback.tally
    assert (back.lost, back.conflicts, back.settled) == (0, 0, back.trades_expected), figures.summary()
    assert back.trades_expected > t.trades_expected and back.balances_exact and back.conserved, figures.summary()
    reconcile_drill(primary.bootstrap, figures, tmp_path / "primary.duckdb").assert_exact()
