"""The demo's standby region (issue 20; docs/disaster-recovery.md): a one-node Kafka beside the demo's broker and
MirrorMaker 2 copying every topic and the workers' group offsets to it while the demo runs.

Once MM2 mirrors, the replication monitor (infra/kafka/replication_monitor.py) probes both regions every few
seconds; its delay gauge is served on ``NEXUS_STANDBY_MONITOR_PORT`` from the start (the demo's Prometheus scrapes
it and would page NexusStandbyReplicationBehind). At the end, while the workers still run, the demo waits until
the standby holds every partition's last committed record and counts the platform's consumer groups whose offsets
MM2 translated there: what ``make failover`` would move the workers onto. The failover itself is drilled by
tests/integration/test_standby_failover.py and bench/bench_dr_failover.py (a demo that failed over would end on
another cluster than it started).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rich.table import Table

from infra.kafka.broker import LocalKafka, LocalKafkaError
from infra.kafka.failover import platform_groups
from infra.kafka.mirror import LocalMirror
from infra.kafka.replication_monitor import ReplicationMonitor
from streams.ops import health
from streams.settings import Settings

START_TIMEOUT_S = 180.0  # MM2 on a loaded 2-core machine: a JVM, Connect's herder, then every topic created


def standby_broker(settings: Settings) -> LocalKafka:
    data_dir = settings.data_dir / "kafka" / f"standby-{settings.standby_kafka_port}"
    return LocalKafka(
        port=settings.standby_kafka_port, controller_port=settings.standby_kafka_controller_port, data_dir=data_dir
    )


def standby_mirror(settings: Settings) -> LocalMirror:
    return LocalMirror(
        source_bootstrap=settings.bootstrap_servers,
        target_bootstrap=standby_broker(settings).bootstrap,
        data_dir=settings.data_dir / "kafka" / "mirror",
    )


@dataclass
class StandbyRegion:
    """The standby broker (started at once: the demo's servers all listen before it streams) and MM2 (started in
    the background: its JVM and connectors take tens of seconds)."""

    settings: Settings
    state: str = "starting MirrorMaker 2…"
    ok: bool | None = None
    broker: LocalKafka = field(init=False)
    mirror: LocalMirror = field(init=False)
    monitor: ReplicationMonitor = field(init=False)
    ops: health.Ops = field(default_factory=lambda: health.Ops("replication-monitor", stale_after_s=None))
    _mirroring: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.broker, self.mirror = standby_broker(self.settings), standby_mirror(self.settings)
        self.monitor = ReplicationMonitor(self.mirror.source_bootstrap, self.broker.bootstrap)

    def start_broker(self) -> float:
        health.serve(self.ops, self.settings.standby_monitor_port, self.settings.metrics_host)
        return self.broker.start(timeout_s=90, reuse=True)

    def start_mirror(self) -> None:
        self.mirror.stop()  # one left over by a killed demo
        threading.Thread(target=self._start_mirror, name="standby-mirror", daemon=True).start()

    def _start_mirror(self) -> None:
        try:
            took = self.mirror.start(timeout_s=START_TIMEOUT_S)
            self.state = f"mirroring every topic to {self.broker.bootstrap} (MirrorMaker 2 up in {took:.0f} s)"
            self.monitor.start()
            self._mirroring.set()
        except LocalKafkaError as exc:
            self.fail(f"MirrorMaker 2 did not start: {str(exc).splitlines()[0]}")

    def fail(self, why: str) -> None:
        self.state, self.ok = why, False

    def finish(self, timeout_s: float = 90.0) -> None:
        """Wait (bounded) until the standby has caught up; the state says how far it got."""
        started = time.monotonic()
        if not self._mirroring.wait(timeout_s) or self.ok is False:
            if self.ok is None:
                self.fail(f"MirrorMaker 2 not mirroring after {timeout_s:.0f} s (log: {self.mirror.log_file})")
            return
        try:
            took = self.mirror.wait_caught_up(max(10.0, timeout_s - (time.monotonic() - started)))
            groups = platform_groups(self.broker.bootstrap, self.settings.app_id)
            self.monitor.stop()  # then one probe of the caught-up regions (one thread feeds the tracker)
            self.monitor.probe()
        except Exception as exc:  # behind, or the standby not answering: say so, the demo still ends
            self.fail(f"standby not caught up: {str(exc).splitlines()[0]}")
            return
        self.state = (
            f"caught up in {took:.1f} s: every partition's last committed record is on the standby, "
            f"{len(groups)} consumer groups' offsets translated; {self.delay_text()}"
        )
        self.ok = True

    def delay_text(self) -> str:
        m = self.monitor
        if not m.probes:
            return "replication delay not probed yet"
        return (
            f"replication delay {m.max_delay_s:.1f} s now, worst {m.worst_delay_s:.1f} s over {m.probes} probes "
            f"of {len(m.delays)} partitions"
        )

    def render(self) -> Table:
        table = Table(title="standby region (MirrorMaker 2)", show_header=False, expand=True)
        mark = {None: "…", True: "[green]✓[/]", False: "[red]✗[/]"}[self.ok]
        table.add_row(mark, self.state)
        if self.ok is None and self.monitor.probes:
            table.add_row("", self.delay_text())
        return table

    def stop(self) -> None:
        self.monitor.stop()
        self.ops.stop()
        self.mirror.stop()
        self.broker.stop()


def stop_standby(settings: Settings) -> list[str]:
    """What ``--stop`` found running of a standby region (left by a killed demo), stopped."""
    stopped = []
    if standby_mirror(settings).stop():
        stopped.append("MirrorMaker 2")
    broker = standby_broker(settings)
    if broker.is_running():
        broker.stop()
        stopped.append(f"the standby Kafka broker on {broker.bootstrap}")
    return stopped
