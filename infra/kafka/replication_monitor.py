"""The standby region's replication delay as a Prometheus gauge, so a stalled MirrorMaker 2 pages someone.

MM2 can stop copying without stopping (a task failed on a record it could not write, the standby's disk full,
the network between regions gone); the primary runs on and nothing else notices until a failover loses more than
the RPO. Every ``interval_s`` this reads the last records of each mirrored partition on both regions and feeds
:class:`domain.replication.ReplicationDelay`; ``nexus_standby_replication_delay_seconds{topic,partition}`` is the
age of the oldest record the standby lacks. Prometheus alerts on it (``NexusStandbyReplicationBehind``,
infra/prometheus/rules.py; docs/runbooks/NexusStandbyReplicationBehind.md).

    python -m infra.kafka.replication_monitor --primary B --standby B --port 9470   (make standby-monitor)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from domain.replication import ReplicationDelay, Tail
from infra.kafka.broker import _Out
from infra.kafka.mirror import ADMIN_TIMEOUT_S, DEFAULT_PRIMARY, DEFAULT_STANDBY, mirrored_partitions, read_tails
from streams.ops import health, metrics

log = logging.getLogger("nexus.replication")

INTERVAL_S = 5.0
DEFAULT_PORT = 9470

Partition = tuple[str, int]


def read_primary(bootstrap: str, timeout_s: float) -> dict[Partition, Tail | None]:
    """Each mirrored partition's last committed record on the primary (None: empty)."""
    tails = read_tails(bootstrap, mirrored_partitions(bootstrap, timeout_s), timeout_s)
    return {tp: (records[-1] if records else None) for tp, records in tails.items()}


def read_standby(bootstrap: str, wanted: Sequence[Partition], timeout_s: float) -> dict[Partition, list[Tail]]:
    """The last records of the wanted partitions on the standby; [] for one it does not have yet."""
    present = set(mirrored_partitions(bootstrap, timeout_s))
    tails = read_tails(bootstrap, [tp for tp in wanted if tp in present], timeout_s)
    return {tp: tails.get(tp, []) for tp in wanted}


@dataclass
class ReplicationMonitor:
    """Probes both regions every ``interval_s`` in a daemon thread; ``max_delay_s`` is the worst partition's."""

    primary: str
    standby: str
    interval_s: float = INTERVAL_S
    timeout_s: float = ADMIN_TIMEOUT_S
    tracker: ReplicationDelay[Partition] = field(default_factory=ReplicationDelay)
    clock: Callable[[], float] = time.time  # wall seconds: the delay is an age
    delays: dict[Partition, float] = field(default_factory=dict)
    probes: int = 0
    worst_delay_s: float = 0.0  # the worst partition's delay over every probe so far
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def max_delay_s(self) -> float:
        return max(self.delays.values(), default=0.0)

    def probe(self) -> dict[Partition, float]:
        """One probe of both regions; the primary unreadable raises (no delay can be measured without it)."""
        primary = read_primary(self.primary, self.timeout_s)
        try:
            standby: dict[Partition, list[Tail]] | None = read_standby(self.standby, list(primary), self.timeout_s)
            self.error = None
        except Exception as exc:  # the standby unreadable: nothing counts as replicated, the delay grows
            standby, self.error = None, f"standby {self.standby} unreadable: {exc}"
            log.warning("%s", self.error)
        self.delays = self.tracker.observe(self.clock(), primary, standby)
        for (topic, partition), delay in self.delays.items():
            metrics.STANDBY_DELAY.labels(topic, str(partition)).set(round(delay, 3))
        self.probes += 1
        self.worst_delay_s = max(self.worst_delay_s, self.max_delay_s)
        return self.delays

    def start(self) -> ReplicationMonitor:
        assert self._thread is None, "started twice"
        self._thread = threading.Thread(target=self._run, name="replication-monitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe()
            except Exception as exc:  # the primary down: a failover's business, not this gauge's
                self.error = f"primary {self.primary} unreadable: {exc}"
                log.warning("%s", self.error)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout_s * 3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.kafka.replication_monitor", description="Serve the standby's replication delay."
    )
    parser.add_argument("--primary", default=os.environ.get("NEXUS_PRIMARY_BOOTSTRAP", DEFAULT_PRIMARY))
    parser.add_argument("--standby", default=os.environ.get("NEXUS_STANDBY_BOOTSTRAP", DEFAULT_STANDBY))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="/metrics and /healthz")
    parser.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between probes")
    args = parser.parse_args(argv)
    out = _Out()
    ops = health.start_endpoint("replication-monitor", args.port)
    ops.stale_after_s = None
    monitor = ReplicationMonitor(args.primary, args.standby, args.interval).start()
    out.info(f"{args.primary} -> {args.standby}: delay on http://127.0.0.1:{ops.port}/metrics every {args.interval} s")
    try:
        while True:
            time.sleep(args.interval)
            worst = max(monitor.delays.items(), key=lambda kv: kv[1], default=None)
            shown = f"{worst[0][0]}[{worst[0][1]}] {worst[1]:.1f} s" if worst else "no partition yet"
            out.info(f"probe {monitor.probes}: worst {shown}" + (f" ({monitor.error})" if monitor.error else ""))
    except KeyboardInterrupt:
        monitor.stop()
        return 0


if __name__ == "__main__":
    sys.exit(main())
