"""Losing the group coordinator (docs/disaster-recovery.md "What the drill found"): SIGKILL the broker that
coordinates the plain P2P worker's consumer group while trades flow, on the local 3-node cluster.

The worker must ride the coordinator's move out: it never exits (its supervisor restarts nothing), and nothing is
lost, repeated or conflicting against the clean in-process run, balances exact, K-AUS conserved. Twice: with the
cluster's 4 s broker session (``infra.kafka.cluster.FAILOVER_PROPERTIES``) and with Kafka's default 9 s, after
which the coordinator moves only once the dead node is fenced. What made the worker exit here, each seen in a run:

* its group session (10 s then) ran out before the coordinator moved: librdkafka rejoined and fenced itself
  (``FENCED_INSTANCE_ID``, fatal; the next commit failed ``_FATAL``). The plain loops' static members now have a
  session longer than a coordinator's move (``NEXUS_STATIC_SESSION_TIMEOUT_S``, 30 s).
* the consumer-lag gauge's Admin API request to the dead coordinator aborted the process inside librdkafka
  (``rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0' failed``); the gauge now reads committed
  offsets through a consumer (``streams/ops/metrics.py``). The worker here measures lag every second so that such
  a request meets the kill.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from contracts.topics import LEDGER_COMMANDS
from devtools.drills.flow import reference_run, seeded_flow
from devtools.drills.io import send_acked
from devtools.drills.leader_kill import HEAP_MB, RESEND_AFTER_S, create_flow_topics, note_failure
from devtools.drills.tally import tally, wait_settled
from devtools.drills.traffic import Traffic
from devtools.drills.worker import Supervisor, p2p_worker
from infra.kafka.broker import JARS_DIR, MARKER_NAME, find_free_ports
from infra.kafka.cluster import LocalKafkaCluster

pytestmark = pytest.mark.slow

ORDERS = 3_000
SETTLE_TIMEOUT_S = 240.0


def group_coordinator(bootstrap: str, group_id: str, timeout_s: float = 30.0) -> int:
    """The node coordinating ``group_id`` now (retried: the group may still be forming, a coordinator moving)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = admin.describe_consumer_groups([group_id], request_timeout=10)[group_id].result(timeout=15)
            if found.coordinator is not None and found.members:
                return int(found.coordinator.id)
        except Exception:  # COORDINATOR_NOT_AVAILABLE and the like while it moves: ask again
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group_id} has no members after {timeout_s:.0f} s")
        time.sleep(1)


# Kafka's default 9 s broker session: the harder case (the coordinator moves later) and the one that showed both
# causes; the cluster's own 4 s session passed the same test too (docs/state-and-recovery.md) and is left out of
# the suite to keep it under its time budget (a cluster start and a drill: about 90 s).
@pytest.fixture(scope="module", params=["9000"], ids=["broker-session-9s"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    """Its own 3-node cluster (the session broker is single-node and shared): free ports, data in a tmp dir, with
    Kafka's default broker session (a cluster run without our override)."""
    if not (JARS_DIR / MARKER_NAME).exists() and os.system("command -v mvn >/dev/null") != 0:
        pytest.skip("Kafka jars are not cached and mvn is not installed to fetch them")
    session = {"broker.session.timeout.ms": request.param}
    if request.param == "9000":
        session["broker.heartbeat.interval.ms"] = "2000"  # Kafka's default with it
    cluster = LocalKafkaCluster.on_free_ports(
        tmp_path_factory.mktemp("cluster"), heap_mb=HEAP_MB, extra_properties=session
    )
    cluster.start(timeout_s=180)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(600)
def test_killing_the_group_coordinator_is_ridden_out_without_a_restart(
    cluster: LocalKafkaCluster, run_id: str, tmp_path: Path
) -> None:
    deposits, commands = seeded_flow(run_id, ORDERS, tag="C")
    expected = reference_run(deposits, commands)
    markets, accounts = {c.market_id for c in commands}, {d.account_id for d in deposits}
    create_flow_topics(cluster)
    # The drills' worker, measuring its consumer lag every second (the default is every 15 s).
    worker = p2p_worker(
        cluster.bootstrap, f"nexus-coord-{run_id}", tmp_path / "worker", *find_free_ports(2),
        NEXUS_METRICS_LAG_INTERVAL_S="1",
    )  # fmt: skip
    supervisor = Supervisor(worker)
    worker.start()
    supervisor.start()
    try:
        send_acked(cluster.bootstrap, LEDGER_COMMANDS, deposits)
        traffic = Traffic(
            cluster.bootstrap, commands, batch=40, every_s=0.25,
            client_log=tmp_path / "traffic-client.log", resend_after_s=RESEND_AFTER_S,
        )  # fmt: skip
        traffic.start()
        time.sleep(4)  # mid-traffic: the worker is matching and settling
        group = f"{worker.app_id}-plain"  # streams.kafka.commits.client_configs
        coordinator = group_coordinator(cluster.bootstrap, group)
        killed_at = time.time()
        assert cluster.kill(coordinator) is not None
        traffic.finish(SETTLE_TIMEOUT_S)
        wait_settled(cluster.bootstrap, expected[0], markets, SETTLE_TIMEOUT_S)  # then a second for late copies
        figures = tally(cluster.bootstrap, expected, markets, accounts, traffic.sent_at, killed_at)
        moved_to = group_coordinator(cluster.bootstrap, group)
        summary = (
            f"coordinator {coordinator} killed, now {moved_to}; worker starts {worker.starts}, restarts "
            f"{supervisor.restarts}; producer resends {traffic.resends}; {figures}"
        )
        print(summary)
        assert moved_to != coordinator
        assert supervisor.restarts == 0 and worker.proc is not None and worker.proc.poll() is None, summary
        assert figures.trades_expected > 300, "the seeded flow must trade enough to be a real test"
        assert (figures.lost, figures.duplicated, figures.conflicts, len(traffic.lost_acked_s)) == (0, 0, 0, 0), summary
        assert figures.settled == figures.trades_expected and figures.balances_exact and figures.conserved, summary
    except BaseException as exc:
        note_failure(exc, cluster, worker)  # with every start's output
        raise
    finally:
        supervisor.close()
