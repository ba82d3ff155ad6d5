"""The leader-kill drill (issue 20 item 1): SIGKILL the broker leading the busiest input partition of the P2P flow
while trades flow through a real plain worker on a local 3-node cluster.

RTO is the time from the SIGKILL to the first settlement (the ledger's produce time) of a trade that went through
the killed partition and whose order was sent after the kill: the pipeline took new input end to end again,
through the new leader. Settlements of trades in flight, or of markets whose partitions never stopped, do not count.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException

from contracts import models as m
from contracts.topics import ENERGY_ORDERS, ENERGY_SETTLEMENTS, ENERGY_TRADES, LEDGER_COMMANDS, LEDGER_TRANSFERS
from devtools.drills.flow import reference_run, seeded_flow
from devtools.drills.io import create_topics, send_acked
from devtools.drills.tally import market_partitions, tally, wait_settled
from devtools.drills.traffic import Traffic
from devtools.drills.worker import Supervisor, WorkerProcess, p2p_worker
from infra.kafka.broker import LocalKafka, find_free_ports
from infra.kafka.cluster import LocalKafkaCluster
from infra.kafka.mirror import probe_consumer
from streams.kafka.clients import watermarks

INPUT_TOPICS = (ENERGY_ORDERS, LEDGER_COMMANDS)
FLOW_TOPICS = (ENERGY_ORDERS, LEDGER_COMMANDS, ENERGY_TRADES, ENERGY_SETTLEMENTS, LEDGER_TRANSFERS)
# Three JVMs and the worker share a 2-core machine with other work: modest heaps (the default is 512 MB).
HEAP_MB = 384
# The order producer replaces a client that has not had a batch acknowledged for this long (see Traffic): well past
# a failover (under 30 s measured on a loaded machine), well inside the RTO bound the tests assert.
RESEND_AFTER_S = 30.0


@dataclass
class DrillFigures:
    """What one leader-kill drill measured, and what its reconciliation needs (its window, accounts, markets)."""

    killed_node: int
    busiest_partition: str
    orders: int
    trades_expected: int
    settled: int
    lost: int
    duplicated: int  # records beyond one per id on energy.trades, energy.settlements, ledger.transfers
    conflicts: int  # an id written again with other content
    balances_exact: bool
    conserved: bool
    rto_s: float
    rejoin_s: float
    send_s: float
    worker_restarts: int = 0  # the worker exited and its supervisor started it again
    resends: int = 0  # the order producer gave up on a stuck batch and re-sent what the cluster lacked
    acked_lost: int = 0  # orders the cluster acknowledged and then did not have
    led: list[str] = field(default_factory=list)  # the partitions the killed node led
    window_s: tuple[float, float] = (0.0, 0.0)  # wall clock: deposits sent .. every trade settled
    accounts: list[str] = field(default_factory=list)
    markets: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"killed node {self.killed_node} (leader of {self.busiest_partition}, {len(self.led)} partitions of the "
            f"flow): RTO {self.rto_s:.2f} s, rejoined the ISR in {self.rejoin_s:.1f} s; {self.orders} orders in "
            f"{self.send_s:.1f} s, {self.trades_expected} trades, {self.settled} settled, {self.lost} lost, "
            f"{self.duplicated} duplicated, {self.conflicts} conflicting; worker restarts {self.worker_restarts}, "
            f"producer resends {self.resends}, acknowledged orders lost {self.acked_lost}; "
            f"balances exact: {self.balances_exact}, K-AUS conserved: {self.conserved}"
        )


def busiest_input_partition(bootstrap: str) -> tuple[str, int]:
    """The input partition holding the most records (the ledger's single partition, in this flow)."""
    consumer = probe_consumer(bootstrap, "drill-probe")
    try:
        sizes = {}
        for topic in INPUT_TOPICS:
            for p in consumer.list_topics(topic.name, timeout=10).topics[topic.name].partitions:
                low, high = watermarks(consumer, topic.name, p, 10)
                sizes[(topic.name, p)] = high - low
        return max(sizes, key=lambda k: sizes[k])
    finally:
        consumer.close()


def kill_busiest_leader(cluster: LocalKafkaCluster) -> tuple[tuple[str, int], int, list[str], float]:
    """SIGKILL the leader of the busiest input partition: (that partition, the node killed, the flow's partitions
    it led, when it was killed)."""
    topic, partition = busiest_input_partition(cluster.bootstrap)
    victim = cluster.leader_of(topic, partition)
    led = [f"{s.topic}[{s.partition}]" for s in cluster.partitions(t.name for t in FLOW_TOPICS) if s.leader == victim]
    killed_at = time.time()
    assert cluster.kill(victim) is not None
    return (topic, partition), victim, led, killed_at


def create_flow_topics(cluster: LocalKafkaCluster) -> None:
    """The platform's topics, as its start makes them, each of the flow's partitions checked to be on every node: a
    topic made with fewer copies stops taking writes when a node holding one is killed, and the drill would measure
    that instead of a failover."""
    create_topics(cluster.bootstrap)
    deadline = time.monotonic() + 30.0
    while True:
        try:  # the broker answering may not know a topic just made yet
            states = cluster.partitions(t.name for t in FLOW_TOPICS)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    short = [s for s in states if len(s.replicas) < cluster.size]
    assert not short, f"partitions made with fewer than {cluster.size} copies: {short[:5]}"


def note_failure(exc: BaseException, cluster: LocalKafkaCluster, worker: WorkerProcess) -> None:
    """What to read first when a kill drill fails: the flow's partitions whose failover is not over (led by no
    running node, or a running replica out of sync), and the end of the worker's log."""
    try:
        running = set(cluster.running())
        states = cluster.partitions(t.name for t in FLOW_TOPICS)
        moving = [s for s in states if s.leader not in running or (set(s.replicas) & running) - set(s.isr)]
        shown = [f"{s.topic}[{s.partition}] leader={s.leader} isr={list(s.isr)}" for s in moving]
        exc.add_note(f"nodes running {sorted(running)}; partitions whose failover is not over: {shown or 'none'}")
    except Exception as describe_error:  # a cluster too far gone to describe says so itself
        exc.add_note(f"the cluster could not describe the flow's partitions: {describe_error!r}")
    for node in cluster.nodes:
        exc.add_note(f"node {node.node_id}'s failover lines (ISR, fencing, quorum):\n{failover_lines(node.server_log)}")
        if node.is_running():
            exc.add_note(f"node {node.node_id}'s replica fetchers now:\n{fetcher_threads(node)}")
    exc.add_note(f"the worker's log ends:\n{worker.log_text(since_start=False)[-4000:]}")


def fetcher_threads(node: LocalKafka, frames: int = 6) -> str:
    """The node's replica fetcher threads (state, top frames), every blocked thread and any deadlock the JVM
    reports, from a thread dump (``jcmd``) saved beside its log: why survivors stopped replicating each other."""
    pid = node.pid
    if pid is None:
        return "(not running)"
    try:
        dump = subprocess.run(["jcmd", str(pid), "Thread.print"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no thread dump: {exc!r})"
    saved = node.server_log.parent / f"threads-{int(time.time())}.txt"
    saved.write_text(dump)
    lines, shown = dump.splitlines(), []
    for i, line in enumerate(lines):
        blocked = line.startswith('"') and "BLOCKED" in "".join(lines[i + 1 : i + 2])
        if line.startswith('"ReplicaFetcherThread') or blocked:
            shown += lines[i : i + frames]
        elif "deadlock" in line:
            shown.append(line)
    return "\n".join([*shown, f"(whole dump: {saved})"])


FAILOVER_MARKS = ("ISR", "encing broker", "transition to", "ERROR")


def failover_lines(server_log: Path, lines: int = 25) -> str:
    """The last ISR changes, fencings, quorum transitions and errors of one node's log (infra/kafka/log4j.properties
    logs them at INFO), without the reconnect warnings that fill it while a node is down."""
    try:
        text = server_log.read_text(errors="replace")  # at most 10 MB: the appender rolls over there
    except OSError as exc:
        return f"(unreadable: {exc})"
    found = [line for line in text.splitlines() if any(mark in line for mark in FAILOVER_MARKS)]
    return "\n".join(found[-lines:]) or "(none)"


def worker_for(bootstrap: str, workdir: Path, run_id: str) -> WorkerProcess:
    return p2p_worker(bootstrap, f"nexus-dr-{run_id}", workdir / "worker", *find_free_ports(2))


def run_leader_kill_drill(
    cluster: LocalKafkaCluster,
    workdir: Path,
    run_id: str,
    *,
    orders: int = 4_000,
    batch: int = 50,
    every_s: float = 0.25,
    kill_after_s: float = 5.0,
    settle_timeout_s: float = 240.0,
) -> DrillFigures:
    """One drill on a running cluster: start the worker, send the orders, SIGKILL the leader of the busiest input
    partition ``kill_after_s`` into the traffic, wait for every trade's settlement, restart the broker and wait
    until it is back in the ISR of every partition of the flow; return the figures (the caller asserts them)."""
    deposits, commands = seeded_flow(run_id, orders)
    expected = reference_run(deposits, commands)
    markets = {c.market_id for c in commands}
    accounts = {d.account_id for d in deposits}
    create_flow_topics(cluster)
    supervisor = Supervisor(worker_for(cluster.bootstrap, workdir, run_id))
    supervisor.worker.start()
    supervisor.start()
    try:
        began = time.time()
        send_acked(cluster.bootstrap, LEDGER_COMMANDS, deposits)
        traffic = Traffic(
            cluster.bootstrap, commands, batch, every_s,
            client_log=workdir / "traffic-client.log", resend_after_s=RESEND_AFTER_S,
        )  # fmt: skip
        traffic.start()
        time.sleep(kill_after_s)
        (topic, partition), victim, led, killed_at = kill_busiest_leader(cluster)
        traffic.finish(settle_timeout_s)
        wait_settled(cluster.bootstrap, expected[0], markets, settle_timeout_s)
        on = market_partitions(cluster.bootstrap, markets)

        def through_killed(trade: m.Trade) -> bool:  # every trade is settled through the ledger's one partition
            return topic != ENERGY_ORDERS.name or on.get(trade.market_id) == partition

        figures = tally(cluster.bootstrap, expected, markets, accounts, traffic.sent_at, killed_at, through_killed)
        ended = time.time()
        restarted_at = time.monotonic()
        cluster.node(victim).start(timeout_s=120)
        cluster.wait_in_sync(victim, [t.name for t in FLOW_TOPICS])
        return DrillFigures(
            killed_node=victim,
            busiest_partition=f"{topic}[{partition}]",
            orders=len(commands),
            rejoin_s=time.monotonic() - restarted_at,
            send_s=traffic.finished - traffic.started,
            led=led,
            worker_restarts=supervisor.restarts,
            resends=traffic.resends,
            acked_lost=len(traffic.lost_acked_s),
            window_s=(began, ended),
            accounts=sorted(accounts),
            markets=sorted(markets),
            **figures._asdict(),
        )
    except BaseException as exc:
        note_failure(exc, cluster, supervisor.worker)
        raise
    finally:
        supervisor.close()
