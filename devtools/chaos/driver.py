"""The chaos soak's moving parts: a supervisor that starts a worker again whenever it exits, the traffic sender and
the fault runner that carries out the seeded plan (``devtools/chaos/plan.py``) while the traffic flows.

Workers and the cluster are whatever the caller runs (``tests/support/workers.py`` and
``infra/kafka/cluster.py``), seen through the small protocols below.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from confluent_kafka import Producer

from devtools.chaos.plan import Event, Fault, FaultKind
from devtools.drills.worker import READY_MARK
from streams.kafka.clients import producer_config

#: A worker that keeps exiting on its own is a finding, not something to restart for ever.
UNPLANNED_RESTARTS_MAX = 20
READY_TIMEOUT_S = 180.0  # a worker restarted on a loaded machine, catching up on a busy cluster
FLUSH_TIMEOUT_S = 300.0  # the sender's acks through a broker restart (the producer retries; it never duplicates)


class Worker(Protocol):
    proc: subprocess.Popen[bytes] | None

    def start(self, wait: bool = True, timeout_s: float = 90.0) -> None: ...

    def kill(self) -> None: ...

    def log_text(self, since_start: bool = True) -> str: ...


class Node(Protocol):
    def kill(self) -> int | None: ...

    def stop(self, timeout_s: float = 20.0) -> bool: ...

    def start(self, timeout_s: float = 90.0) -> float: ...


class Cluster(Protocol):
    def node(self, node_id: int) -> Node: ...

    def wait_in_sync(self, node_id: int, topics: Iterable[str], timeout_s: float = 120.0) -> float: ...


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Supervisor(threading.Thread):
    """Starts each worker again whenever it exits (systemd's Restart=always, a Kubernetes Deployment), counting the
    starts after a planned SIGKILL apart from those after an exit of its own (a worker exits by design on errors it
    cannot go on from, streams/kafka/clients.py ``must_exit``: a broker restart may cause one)."""

    def __init__(self, workers: Mapping[str, Worker]) -> None:
        super().__init__(name="chaos-supervisor", daemon=True)
        self.workers = workers
        self.lock = threading.Lock()  # a planned kill and the restart it causes are counted together
        self.planned: Counter[str] = Counter()  # kills the fault runner made, not restarted yet
        self.restarts_after_kill: Counter[str] = Counter()
        self.unplanned_exits: Counter[str] = Counter()
        self.peak_rss_mb: dict[str, float] = dict.fromkeys(workers, 0.0)
        self.done = threading.Event()

    def kill(self, name: str) -> None:
        with self.lock:
            self.workers[name].kill()
            self.planned[name] += 1

    def run(self) -> None:
        sampled = 0.0
        while not self.done.wait(0.2):
            if time.monotonic() - sampled > 2.0:
                sampled = time.monotonic()
                self._sample_rss()
            with self.lock:
                for name, worker in self.workers.items():
                    if worker.proc is None or worker.proc.poll() is None:
                        continue
                    if self.planned[name]:
                        self.planned[name] -= 1
                        self.restarts_after_kill[name] += 1
                    elif self.unplanned_exits[name] < UNPLANNED_RESTARTS_MAX:
                        self.unplanned_exits[name] += 1
                    else:
                        continue  # left down: the soak's outcome wait reports what it did not do
                    worker.start(wait=False)

    def _sample_rss(self) -> None:
        for name, worker in self.workers.items():
            if worker.proc is not None and worker.proc.poll() is None:
                self.peak_rss_mb[name] = max(self.peak_rss_mb[name], peak_rss_mb(worker.proc.pid))

    def stop(self) -> None:
        self.done.set()
        self.join(10)
        self._sample_rss()


def is_ready(worker: Worker) -> bool:
    return worker.proc is not None and worker.proc.poll() is None and READY_MARK in worker.log_text()


class Sender(threading.Thread):
    """Sends the events in order, ``batch`` at a time at ``rate_per_s``; ``sent`` counts the acknowledged ones."""

    def __init__(self, bootstrap: str, events: Sequence[Event], rate_per_s: float, batch: int = 50) -> None:
        super().__init__(name="chaos-sender", daemon=True)
        self.events, self.rate_per_s, self.batch = events, rate_per_s, batch
        self.producer = Producer(producer_config(bootstrap, linger_ms=5))
        self.sent = 0
        self.errors: list[str] = []
        self.started = self.finished = 0.0
        self.stopping = threading.Event()

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.errors.append(str(err))

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            for i in range(0, len(self.events), self.batch):
                if self.stopping.is_set():
                    break
                time.sleep(max(0.0, self.started + i / self.rate_per_s - time.monotonic()))
                chunk = self.events[i : i + self.batch]
                for e in chunk:
                    self.producer.produce(
                        e.topic.name, key=e.topic.key_of(e.message), value=e.topic.encode(e.message),
                        on_delivery=self._delivered,
                    )  # fmt: skip
                left = self.producer.flush(FLUSH_TIMEOUT_S)
                if left:
                    self.errors.append(f"{left} records not acknowledged in {FLUSH_TIMEOUT_S:.0f} s")
                    break
                self.sent = i + len(chunk)
        except Exception as exc:  # reported with the soak's figures
            self.errors.append(repr(exc))
        self.finished = time.monotonic()

    @property
    def send_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started


@dataclass
class FaultDone:
    fault: Fault
    at_s: float  # seconds into the run
    note: str


class FaultRunner(threading.Thread):
    """Carries out the faults in order, each once ``sent()`` has reached its event: a worker is SIGKILLed only once
    it is ready again after its previous start; a broker restart returns once the node is back in the ISR of every
    partition of ``topics`` (so the next broker fault never finds only one in-sync copy)."""

    def __init__(
        self,
        faults: Sequence[Fault],
        sent: Callable[[], int],
        supervisor: Supervisor,
        cluster: Cluster,
        topics: Sequence[str],
    ) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.faults, self.sent, self.supervisor, self.cluster, self.topics = faults, sent, supervisor, cluster, topics
        self.done_faults: list[FaultDone] = []
        self.error: str | None = None
        self.started = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            for fault in self.faults:
                while self.sent() < fault.at_event:
                    if self.stopping.wait(0.05):
                        return
                note = self._kill(fault) if fault.kind is FaultKind.KILL_WORKER else self._restart_broker(fault)
                self.done_faults.append(FaultDone(fault, time.monotonic() - self.started, note))
        except Exception as exc:  # reported with the soak's figures
            self.error = f"{exc!r}"

    def _kill(self, fault: Fault) -> str:
        worker = self.supervisor.workers[fault.target]
        waited = time.monotonic()
        while not is_ready(worker):
            if time.monotonic() - waited > READY_TIMEOUT_S:
                raise TimeoutError(f"{fault.target} not ready {READY_TIMEOUT_S:.0f} s after its last start")
            time.sleep(0.1)
        self.supervisor.kill(fault.target)
        return f"SIGKILL {fault.target} (waited {time.monotonic() - waited:.1f} s for it to be ready)"

    def _restart_broker(self, fault: Fault) -> str:
        node_id = int(fault.target)
        node = self.cluster.node(node_id)
        if fault.how == "SIGKILL":
            node.kill()
        else:
            node.stop()
        time.sleep(fault.down_s)
        node.start(timeout_s=180)
        rejoin_s = self.cluster.wait_in_sync(node_id, self.topics, timeout_s=300)
        return f"{fault.how} node {node_id}, down {fault.down_s:.1f} s, in the ISR again {rejoin_s:.1f} s after start"
