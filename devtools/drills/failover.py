"""The whole-primary drill (issue 20 items 2 and 3): SIGKILL every node of the primary region during traffic, fail
over to the standby that MirrorMaker 2 feeds, and back.

The "operator" is a watcher (``DownDetector``): once the primary has not answered for ``down_after_s`` it runs the
failover (``infra.kafka.failover.switch``: circuit breaker, mirror stopped, groups rewound by the replay window,
redirect), then the worker moves (a fresh data dir: state outside Kafka is rebuilt from the mirrored topics) and
the traffic re-sends what the standby lacks. Figures:

- RPO: orders the primary acknowledged that the standby did not have when the failover started (count, and
  seconds: the kill − the earliest acknowledgement of a missing one); after the replay no money record is lost.
- RTO: the kill -> the first settlement on the standby of a trade whose later order was sent after the kill
  (detection, the switch, the worker's rebuild and the re-send all count).
- Failback: the old primary wiped, mirrored from the standby until it holds every record, the worker stopped, the
  switch back, the worker started on the primary, more orders; the same tally there over the whole flow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from contracts.topics import LEDGER_COMMANDS
from devtools.drills.flow import reference_run, seeded_flow
from devtools.drills.io import create_topics, send_acked, wait_until
from devtools.drills.leader_kill import worker_for
from devtools.drills.tally import Tally, tally, wait_settled
from devtools.drills.traffic import Traffic
from devtools.drills.worker import Supervisor
from infra.kafka.cluster import LocalKafkaCluster
from infra.kafka.failover import (
    PRIMARY,
    STANDBY,
    DownDetector,
    Region,
    SwitchReport,
    platform_groups,
    prepare_failback,
    switch,
    wait_groups_synced,
)
from infra.kafka.mirror import LocalMirror

PROBE_EVERY_S = 0.5


@dataclass
class FailbackFigures:
    caught_up_s: float  # the wiped primary started, mirrored, holding every record
    downtime_s: float  # the worker stopped on the standby -> started on the primary
    records_replayed: int
    tally: Tally


@dataclass
class FailoverFigures:
    primary_nodes: int
    orders: int
    tally: Tally
    rpo_records: int  # acknowledged by the primary, not on the standby when the failover started
    rpo_s: float  # the kill -> the earliest acknowledgement of such a record (0: none)
    detect_s: float  # the kill -> the watcher declared the primary down
    switch_s: float  # the failover script's run
    resent: int  # orders the traffic re-sent to the standby (all it lacked)
    records_replayed: int  # records the rewound groups read again
    worker_restarts: int
    window_s: tuple[float, float] = (0.0, 0.0)  # wall clock: deposits sent .. every trade settled on the standby
    accounts: list[str] = field(default_factory=list)
    markets: list[str] = field(default_factory=list)
    failback: FailbackFigures | None = None

    def summary(self) -> str:
        t = self.tally
        text = (
            f"{self.primary_nodes}-node primary killed: RTO {t.rto_s:.1f} s (detected {self.detect_s:.1f} s, switch "
            f"{self.switch_s:.1f} s), RPO {self.rpo_records} records / {self.rpo_s:.1f} s, re-sent {self.resent}, "
            f"replayed {self.records_replayed}; {self.orders} orders, {t.trades_expected} trades, {t.settled} "
            f"settled, {t.lost} lost, {t.duplicated} duplicated, {t.conflicts} conflicting; balances exact: "
            f"{t.balances_exact}, conserved: {t.conserved}; worker restarts {self.worker_restarts}"
        )
        if self.failback is not None:
            b = self.failback
            text += (
                f"\n  failback: primary caught up in {b.caught_up_s:.1f} s, workers down {b.downtime_s:.1f} s, "
                f"{b.tally.trades_expected} trades, {b.tally.lost} lost, {b.tally.conflicts} conflicting, balances "
                f"exact: {b.tally.balances_exact}, conserved: {b.tally.conserved}"
            )
        return text


def kill_all(cluster: LocalKafkaCluster) -> float:
    """SIGKILL every node (a region lost at once); return when the first one died."""
    killed_at = time.time()
    for node in cluster.nodes:
        cluster.kill(node.node_id)
    return killed_at


def run_failover_drill(
    primary: LocalKafkaCluster,
    standby: LocalKafkaCluster,
    workdir: Path,
    run_id: str,
    *,
    orders: int = 3_000,
    failback_orders: int = 0,
    batch: int = 40,
    every_s: float = 0.25,
    kill_after_s: float = 8.0,
    down_after_s: float = 3.0,
    window_s: float = 60.0,
    settle_timeout_s: float = 240.0,
) -> FailoverFigures:
    """One drill on two running clusters (the standby empty); the caller asserts the figures and reconciles."""
    deposits, commands = seeded_flow(run_id, orders + failback_orders)
    first = commands[:orders]
    expected = reference_run(deposits, first)
    markets, accounts = {c.market_id for c in commands}, {d.account_id for d in deposits}
    create_topics(primary.bootstrap)
    mirror = LocalMirror(primary.bootstrap, standby.bootstrap, standby.size, data_dir=workdir / "mm2")
    mirror.start(timeout_s=180)
    mirrors, supervisor = [mirror], Supervisor(worker_for(primary.bootstrap, workdir, run_id))
    supervisor.worker.start()
    supervisor.start()
    try:
        began = time.time()
        send_acked(primary.bootstrap, LEDGER_COMMANDS, deposits)
        app_id = supervisor.worker.app_id  # a standby in its steady state: MM2 syncs the worker's group
        wait_until(lambda: bool(platform_groups(standby.bootstrap, app_id)), 180, "the group synced to the standby")
        traffic = Traffic(primary.bootstrap, first, batch, every_s, window_s)
        traffic.start()
        time.sleep(kill_after_s)
        killed_at = kill_all(primary)
        detected_at, report = watch_and_switch(
            primary, standby, supervisor.worker.app_id, mirror, workdir, down_after_s, window_s
        )
        switched_at = time.time()
        traffic.redirect(standby.bootstrap)
        move_worker(supervisor, standby.bootstrap, workdir / "worker-standby")
        traffic.finish(settle_timeout_s)
        wait_settled(standby.bootstrap, expected[0], markets, settle_timeout_s)
        figures = FailoverFigures(
            primary_nodes=primary.size,
            orders=len(first),
            tally=tally(standby.bootstrap, expected, markets, accounts, traffic.sent_at, killed_at),
            rpo_records=len(traffic.lost_acked_s),
            rpo_s=max(0.0, killed_at - min(traffic.lost_acked_s.values(), default=killed_at)),  # acked while dying: 0
            detect_s=detected_at - killed_at,
            switch_s=switched_at - detected_at,
            resent=len(traffic.missing_at_redirect),
            records_replayed=report.records_replayed,
            worker_restarts=supervisor.restarts,
            window_s=(began, time.time()),
            accounts=sorted(accounts),
            markets=sorted(markets),
        )
        if failback_orders:
            figures.failback = _failback(
                primary, standby, supervisor, workdir, mirrors, (deposits, commands, orders, batch, every_s, window_s)
            )
        return figures
    finally:
        supervisor.close()
        for m in mirrors:
            m.stop()


def watch_and_switch(
    primary: LocalKafkaCluster,
    standby: LocalKafkaCluster,
    app_id: str,
    mirror: LocalMirror,
    workdir: Path,
    down_after_s: float,
    window_s: float,
) -> tuple[float, SwitchReport]:
    """The drill's operator: probe the primary until it has not answered for ``down_after_s``, then fail over;
    return when it declared the primary down, and what the switch did."""
    detector, old, new = (
        DownDetector(down_after_s),
        Region(PRIMARY, primary.bootstrap),
        Region(STANDBY, standby.bootstrap),
    )
    while not detector.observe(old.answers(timeout_s=PROBE_EVERY_S), time.monotonic()):
        time.sleep(PROBE_EVERY_S)
    detected_at = time.time()
    active_file = workdir / "active-region.env"
    return detected_at, switch(old, new, app_id, mirror=mirror, window_s=window_s, active_file=active_file)


def move_worker(supervisor: Supervisor, bootstrap: str, data_dir: Path) -> None:
    """Stop the worker and start it on another region with an empty data dir: its state outside Kafka (ledger
    snapshots, the id store) belongs to the old region's offsets and is rebuilt from the mirrored topics."""
    supervisor.paused.set()
    supervisor.worker.stop(timeout_s=5)
    supervisor.worker.bootstrap, supervisor.worker.data_dir = bootstrap, data_dir
    supervisor.worker.start(wait=False)
    supervisor.paused.clear()


def _failback(
    primary: LocalKafkaCluster,
    standby: LocalKafkaCluster,
    supervisor: Supervisor,
    workdir: Path,
    mirrors: list[LocalMirror],
    flow: tuple,  # type: ignore[type-arg]
) -> FailbackFigures:
    deposits, commands, orders, batch, every_s, window_s = flow
    old, active = Region(PRIMARY, primary.bootstrap, primary), Region(STANDBY, standby.bootstrap)
    t0 = time.monotonic()
    back = prepare_failback(old, active, mirror_dir=workdir / "mm2-back")
    mirrors.append(back)
    caught_up_s = time.monotonic() - t0
    stopped = time.monotonic()
    supervisor.paused.set()
    supervisor.worker.stop()
    stopped_ms = int(time.time() * 1000)
    back.wait_caught_up(timeout_s=120)
    wait_groups_synced(back, supervisor.worker.app_id, stopped_ms)
    report = switch(
        active,
        old,
        supervisor.worker.app_id,
        mirror=back,
        window_s=window_s,
        force=True,
        active_file=workdir / "active-region.env",
    )
    move_worker(supervisor, primary.bootstrap, workdir / "worker-primary-again")
    supervisor.worker.wait_ready()
    downtime_s = time.monotonic() - stopped
    later = Traffic(primary.bootstrap, commands[orders:], batch, every_s, window_s)
    later.run()  # in this thread: nothing fails any more
    assert later.error is None, f"the traffic failed: {later.error!r}"
    expected = reference_run(deposits, commands)
    markets, accounts = {c.market_id for c in commands}, {d.account_id for d in deposits}
    wait_settled(primary.bootstrap, expected[0], markets, 240)
    return FailbackFigures(
        caught_up_s=caught_up_s,
        downtime_s=downtime_s,
        records_replayed=report.records_replayed,
        tally=tally(primary.bootstrap, expected, markets, accounts, later.sent_at, 0.0),
    )
