"""Run a replicated 3-node Apache Kafka cluster (KRaft) on this machine, from the same Maven Central jars.

Each node is a ``LocalKafka`` (``infra/kafka/broker.py``): one JVM that is broker and controller, bound to
127.0.0.1, with its own ports and data dir; the three form the controller quorum (3 voters) and share one
cluster id. Topic defaults follow ``durability_properties``: replication factor 3, ``min.insync.replicas=2``
(the group offsets and the transaction log too), no unclean leader election. What that guarantees, and the
leader-kill drill run on it, is in ``docs/disaster-recovery.md``.

Library use::

    from infra.kafka.cluster import LocalKafkaCluster

    cluster = LocalKafkaCluster(base_port=29092, data_root=tmp_path / "cluster")
    cluster.start()                      # seconds until every node serves metadata and sees all three
    cluster.bootstrap                    # "127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096"
    cluster.kill(cluster.leader_of("ledger.commands", 0))   # SIGKILL one node
    cluster.node(2).start()              # it comes back with its data and catches up
    cluster.stop()

CLI::

    python -m infra.kafka.cluster start | stop | status | wipe  [--base-port N --size N --heap-mb N ...]

The platform runs on it with one setting: ``NEXUS_KAFKA_BOOTSTRAP_SERVERS=<bootstrap>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from infra.kafka.broker import (
    ENV_BOOTSTRAP,
    JARS_DIR,
    KAFKA_VERSION,
    LOCAL_ROOT,
    LocalKafka,
    LocalKafkaError,
    _Out,
    _random_cluster_id,
    find_free_ports,
)

__all__ = ["DEFAULT_BASE_PORT", "LocalKafkaCluster", "PartitionState", "main"]

#: Node n (1-based) listens on base + 2(n-1) for clients and the next port for the controller quorum.
DEFAULT_BASE_PORT = 29092
DEFAULT_SIZE = 3
DEFAULT_HEAP_MB = 384  # three JVMs on a development machine; a real broker wants GiBs (cluster/README.md)
CLUSTER_ID_FILE = "cluster.id"
#: How fast the controller fences a node that stopped heartbeating, and so moves its leaderships (Kafka's defaults:
#: 9 s session, 2 s heartbeats). Well below the consumers' group sessions (the plain loops' 30 s static session,
#: NEXUS_STATIC_SESSION_TIMEOUT_S; Faust's 10 s, NEXUS_BROKER_SESSION_TIMEOUT_S), so a crashed group coordinator is
#: replaced before they expire; 4 s still rides out a GC pause or a busy moment without fencing a live node.
FAILOVER_PROPERTIES = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "1000"}
ADMIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionState:
    """One partition as the controller sees it: its leader (-1: none), its replicas and its in-sync replicas."""

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclass
class LocalKafkaCluster:
    """``size`` combined broker+controller nodes on 127.0.0.1 forming one KRaft cluster.

    Layout of ``data_root`` (default ``<repo>/.local/kafka/cluster``): ``cluster.id`` (the KRaft cluster id, made
    on the first start, kept so a restarted node rejoins its cluster) and ``node-<n>/`` (each node's
    ``LocalKafka`` data dir).
    """

    size: int = DEFAULT_SIZE
    base_port: int = DEFAULT_BASE_PORT
    #: Explicit (client port, controller port) per node; default: consecutive pairs from ``base_port``.
    ports: Sequence[tuple[int, int]] = ()
    data_root: Path = LOCAL_ROOT / "cluster"
    heap_mb: int = DEFAULT_HEAP_MB
    libs_dir: Path = JARS_DIR
    #: Extra/overriding ``server.properties`` entries, the same on every node.
    extra_properties: dict[str, str] = field(default_factory=dict)
    nodes: list[LocalKafka] = field(init=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a cluster has at least one node")
        ports = list(self.ports) or [(self.base_port + 2 * i, self.base_port + 2 * i + 1) for i in range(self.size)]
        if len(ports) != self.size:
            raise ValueError(f"{len(ports)} port pairs for {self.size} nodes")
        self.data_root = Path(self.data_root).resolve()
        voters = tuple((i + 1, controller) for i, (_client, controller) in enumerate(ports))
        cluster_id = self._cluster_id()
        self.nodes = [
            LocalKafka(
                port=client,
                controller_port=controller,
                data_dir=self.data_root / f"node-{i + 1}",
                heap_mb=self.heap_mb,
                libs_dir=self.libs_dir,
                extra_properties={**FAILOVER_PROPERTIES, **self.extra_properties},
                node_id=i + 1,
                voters=voters,
                cluster_id=cluster_id,
            )
            for i, (client, controller) in enumerate(ports)
        ]

    @classmethod
    def on_free_ports(cls, data_root: Path, size: int = DEFAULT_SIZE, **kwargs: Any) -> LocalKafkaCluster:
        """A cluster on ports free right now: a drill, a test or a bench beside another one never clashes."""
        free = find_free_ports(2 * size)
        ports = [(free[2 * i], free[2 * i + 1]) for i in range(size)]
        return cls(size=size, ports=ports, data_root=data_root, **kwargs)

    def _cluster_id(self) -> str:
        path = self.data_root / CLUSTER_ID_FILE
        try:
            return path.read_text().strip()
        except OSError:
            return _random_cluster_id()  # written by the first start()

    # -- state -------------------------------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def running(self) -> list[int]:
        """Node ids whose JVM is alive."""
        return [node.node_id for node in self.nodes if node.is_running()]

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def brokers_seen(self, timeout_s: float = ADMIN_TIMEOUT_S) -> set[int]:
        """Broker ids the cluster's metadata lists (registered and not fenced)."""
        return set(self.admin().list_topics(timeout=timeout_s).brokers)

    def partitions(self, topics: Iterable[str], timeout_s: float = ADMIN_TIMEOUT_S) -> list[PartitionState]:
        """Leader, replicas and ISR of every partition of ``topics``, as the controller describes them now."""
        names, admin = list(topics), self.admin()  # the client must outlive its futures
        found = admin.describe_topics(TopicCollection(names), request_timeout=timeout_s)
        states = []
        for name, future in found.items():
            for p in future.result(timeout=timeout_s).partitions:
                leader = p.leader.id if p.leader is not None else -1
                states.append(
                    PartitionState(name, p.id, leader, tuple(r.id for r in p.replicas), tuple(r.id for r in p.isr))
                )
        return sorted(states, key=lambda s: (s.topic, s.partition))

    def leader_of(self, topic: str, partition: int) -> int:
        [state] = [s for s in self.partitions([topic]) if s.partition == partition]
        return state.leader

    def wait_in_sync(self, node_id: int, topics: Iterable[str], timeout_s: float = 120.0) -> float:
        """Wait until ``node_id`` is in the ISR of every partition of ``topics`` it replicates; return the seconds
        waited. A restarted node first catches up from the leaders, then the controller adds it back."""
        names, t0 = list(topics), time.monotonic()
        behind: list[PartitionState] = []
        while time.monotonic() - t0 < timeout_s:
            try:
                states = self.partitions(names)
            except Exception:  # a controller moving or a node starting: ask again
                time.sleep(0.5)
                continue
            behind = [s for s in states if node_id in s.replicas and node_id not in s.isr]
            if not behind:
                return time.monotonic() - t0
            time.sleep(0.25)
        shown = ", ".join(f"{s.topic}[{s.partition}] isr={list(s.isr)}" for s in behind[:5])
        raise LocalKafkaError(f"node {node_id} not back in sync after {timeout_s:.0f}s: {shown}")

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> float:
        """Start every node that is not running and wait until each serves metadata and the cluster lists all
        of them; return the seconds taken. Nodes are launched together: none can be ready before a majority of
        the quorum runs. If one fails, the nodes this call launched are stopped again."""
        t0 = time.monotonic()
        self.data_root.mkdir(parents=True, exist_ok=True)
        id_file = self.data_root / CLUSTER_ID_FILE
        if not id_file.exists():
            id_file.write_text(f"{self.nodes[0].cluster_id}\n")
        launched: list[tuple[LocalKafka, int]] = []
        try:
            for node in self.nodes:
                if not node.is_running():
                    launched.append((node, node.launch()))
            for node, pid in launched:
                node.wait_ready(t0 + timeout_s, pid)
            self._wait_brokers(t0 + timeout_s)
        except BaseException:
            for node, _pid in launched:
                node.stop()
            raise
        return time.monotonic() - t0

    def _wait_brokers(self, deadline: float) -> None:
        wanted = {node.node_id for node in self.nodes}
        seen: set[int] = set()
        while time.monotonic() < deadline:
            try:
                seen = self.brokers_seen(timeout_s=max(0.5, min(5.0, deadline - time.monotonic())))
            except Exception:
                seen = set()
            if seen >= wanted:
                return
            time.sleep(0.1)
        raise LocalKafkaError(f"the cluster lists brokers {sorted(seen)}, not all of {sorted(wanted)}, in time")

    def kill(self, node_id: int) -> int | None:
        """SIGKILL one node (a crash: no controlled shutdown); return its pid, None if it was not running."""
        return self.node(node_id).kill()

    def stop(self, timeout_s: float = 20.0) -> list[int]:
        """Stop every node at once (SIGTERM, SIGKILL after ``timeout_s``) and return the ids that were running.

        Together, not one by one: a node's controlled shutdown asks the active controller, and stopping the
        quorum one node at a time leaves the last ones without a majority to answer them."""
        stopped: list[int] = []
        errors: list[BaseException] = []

        def stop_one(node: LocalKafka) -> None:
            try:
                if node.stop(timeout_s):
                    stopped.append(node.node_id)
            except BaseException as exc:  # reported after the other nodes are stopped too
                errors.append(exc)

        threads = [threading.Thread(target=stop_one, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return sorted(stopped)

    def wipe(self) -> None:
        """Delete every node's data and the cluster id. Refuses while a node runs."""
        if self.running():
            raise LocalKafkaError(f"Refusing to wipe {self.data_root}: nodes {self.running()} run. Stop them first.")
        for node in self.nodes:
            node.wipe()
        (self.data_root / CLUSTER_ID_FILE).unlink(missing_ok=True)

    def __enter__(self) -> LocalKafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def _status(cluster: LocalKafkaCluster, out: _Out) -> int:
    running = set(cluster.running())
    out.info(f"kafka      {KAFKA_VERSION} (KRaft), {cluster.size} combined broker+controller nodes")
    out.info(f"data       {cluster.data_root}")
    for node in cluster.nodes:
        state = f"running (pid {node.pid})" if node.node_id in running else "stopped"
        out.info(f"node {node.node_id}     {node.bootstrap}  controller :{node.controller_port}  {state}")
    if running:
        try:
            seen = sorted(cluster.brokers_seen())
            out.info(f"brokers    {seen} in the cluster's metadata")
        except Exception as exc:
            out.warn(f"brokers    no metadata answer: {exc}")
    out.info(f"bootstrap  {ENV_BOOTSTRAP}={cluster.bootstrap}")
    return 0 if len(running) == cluster.size else 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.kafka.cluster",
        description=f"A local replicated Apache Kafka {KAFKA_VERSION} cluster (KRaft) from Maven Central jars.",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "wipe"])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"nodes (default {DEFAULT_SIZE})")
    parser.add_argument(
        "--base-port", type=int, default=DEFAULT_BASE_PORT,
        help=f"node n: client port base+2(n-1), controller port the next one (default {DEFAULT_BASE_PORT})",
    )  # fmt: skip
    parser.add_argument("--data-root", type=Path, default=LOCAL_ROOT / "cluster")
    parser.add_argument("--heap-mb", type=int, default=DEFAULT_HEAP_MB, help="per node")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait (start: 120, stop: 20)")
    args = parser.parse_args(argv)
    out = _Out()
    try:
        cluster = LocalKafkaCluster(
            size=args.size, base_port=args.base_port, data_root=args.data_root, heap_mb=args.heap_mb
        )
        if args.command == "start":
            if os.environ.get(ENV_BOOTSTRAP):
                out.warn(f"Note: {ENV_BOOTSTRAP}={os.environ[ENV_BOOTSTRAP]} is set; the platform uses that.")
            secs = cluster.start(timeout_s=args.timeout or 120.0)
            out.ok(f"{cluster.size}-node Kafka {KAFKA_VERSION} cluster ready in {secs:.1f}s.")
            out.info(f"  export {ENV_BOOTSTRAP}={cluster.bootstrap}")
            out.info("  stop: python -m infra.kafka.cluster stop")
            return 0
        if args.command == "stop":
            stopped = cluster.stop(timeout_s=args.timeout or 20.0)
            out.ok(f"Stopped nodes {stopped}." if stopped else "No node was running.")
            return 0
        if args.command == "status":
            return _status(cluster, out)
        if args.command == "wipe":
            cluster.wipe()
            out.ok(f"Wiped {cluster.data_root}.")
            return 0
    except LocalKafkaError as exc:
        out.fail(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        out.fail("interrupted")
        return 130
    return 2  # pragma: no cover - argparse restricts commands


if __name__ == "__main__":
    sys.exit(main())
