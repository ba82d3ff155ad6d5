"""Run a real Apache Kafka broker (KRaft, combined broker+controller) for local work and tests.

One ``LocalKafka`` is one node: alone by default (a single-voter quorum, everything replicated once), or one voter
of a local replicated cluster (``voters``, ``cluster_id``; ``infra/kafka/cluster.py`` starts three of them).

No Docker and no Kafka tarball are needed: the broker jars (``org.apache.kafka:kafka_2.13``, see ``pom.xml`` beside
this file) are fetched once from Maven Central with ``mvn`` and cached under ``<repo>/.local/kafka/libs``; the broker
is then started as ``java -cp '<libs>/*' kafka.Kafka server.properties``, exactly what ``kafka-server-start.sh`` runs.

Library use::

    from infra.kafka.broker import LocalKafka

    kafka = LocalKafka(port=19092)
    kafka.start()                  # returns seconds until the broker answered a metadata request
    print(kafka.bootstrap)         # "127.0.0.1:19092"
    kafka.stop()

CLI::

    python -m infra.kafka.broker fetch | start | stop | status | wipe  [--port N --controller-port N ...]

Only the standard library is required (``rich`` is used for CLI output when importable, and
``confluent_kafka`` for the readiness probe when importable; otherwise readiness is a TCP check).
POSIX only (process groups, ``fcntl``); ``/proc`` is used, when present, to identify who holds a busy port.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.maven import file_lock, pom_hash
from infra.processes import (
    DataDirFiles,
    DataPath,
    ManagedProcess,
    cmdline,
    pid_alive,
    port_accepts,
    port_bindable,
    signal_group,
    tail_file,
)

__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_PORT",
    "JARS_DIR",
    "KAFKA_VERSION",
    "LOCAL_ROOT",
    "MARKER_NAME",
    "LocalKafka",
    "LocalKafkaError",
    "durability_properties",
    "ensure_jars",
    "find_free_ports",
    "main",
]

KAFKA_DIR = Path(__file__).resolve().parent
REPO_ROOT = KAFKA_DIR.parents[1]
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j.properties"
LOCAL_ROOT = REPO_ROOT / ".local" / "kafka"
JARS_DIR = LOCAL_ROOT / "libs"

#: Must match ``kafka.version`` in pom.xml (checked by ``ensure_jars``).
KAFKA_VERSION = "3.9.1"
DEFAULT_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093

#: Marker written into ``libs_dir`` after a successful fetch; holds the sha256 of the pom it was fetched from.
MARKER_NAME = ".fetched-from-pom.sha256"
#: JVM system property that tags our broker processes, so they can be recognised (and only they are ever killed).
PROCESS_TAG = "-Dnexusx.localkafka.port="
BROKER_MAIN_CLASS = "kafka.Kafka"
ENV_BOOTSTRAP = "NEXUS_KAFKA_BOOTSTRAP_SERVERS"


class LocalKafkaError(RuntimeError):
    """Anything that prevents fetching, starting or stopping the local broker. The message says what to do."""


_RETRY_HINT = "Retry with a larger timeout (--timeout) or read the logs."


# --------------------------------------------------------------------------------------------------------------------
# Jars
# --------------------------------------------------------------------------------------------------------------------


#: The jar that proves a fetch from ``POM`` complete (the broker's own).
BROKER_JAR = f"kafka_2.13-{KAFKA_VERSION}"


def _jars_ready(libs_dir: Path, pom: Path, main_jar: str = BROKER_JAR) -> bool:
    marker = libs_dir / MARKER_NAME
    if not marker.is_file() or marker.read_text().strip() != pom_hash(pom):
        return False
    return any(libs_dir.glob(f"{main_jar}*.jar"))


def ensure_jars(
    libs_dir: Path = JARS_DIR,
    *,
    pom: Path = POM,
    main_jar: str = BROKER_JAR,
    force: bool = False,
    quiet: bool = False,
) -> Path:
    """Return ``libs_dir`` holding the runtime jars of ``pom``, fetching them with Maven only when needed.

    ``main_jar`` (a jar name's start) must be among the fetched jars: the broker's by default; MirrorMaker 2 has
    its own pom and libs dir (``infra/kafka/mirror.py``), so changing one never invalidates the other's cache.

    The fetch runs ``mvn -q -f <pom> dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=...``
    into a temporary directory that replaces ``libs_dir`` when complete, then records the pom's sha256 in a marker
    file; later calls return at once while the pom is unchanged. Safe to call from several processes at a time.
    """
    libs_dir = Path(libs_dir).resolve()
    if not force and _jars_ready(libs_dir, pom, main_jar):
        return libs_dir
    with file_lock(libs_dir.parent / f".{libs_dir.name}.lock"):
        if not force and _jars_ready(libs_dir, pom, main_jar):  # another process fetched while we waited
            return libs_dir
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError(
                "Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka jars from Maven Central. "
                "Install it (Debian/Ubuntu: apt-get install maven) or point libs_dir at a directory of jars."
            )
        tmp = libs_dir.with_name(f"{libs_dir.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={tmp}",
        ]  # fmt: skip
        if not quiet:
            _err(f"Fetching {main_jar} and its jars from Maven Central into {libs_dir} ...")
        t0 = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        elapsed = time.monotonic() - t0
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = _tail_text((res.stdout or "") + (res.stderr or ""), 30)
            raise LocalKafkaError(
                f"Maven failed to fetch the Kafka jars (exit {res.returncode}) after {elapsed:.1f}s.\n"
                f"Command: {' '.join(cmd)}\n{tail}\n"
                "Check that Maven Central is reachable and that the version in infra/kafka/pom.xml exists."
            )
        jars = sorted(tmp.glob("*.jar"))
        if not any(j.name.startswith(main_jar) for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            raise LocalKafkaError(
                f"Maven succeeded but {main_jar}.jar is missing from the jars fetched with {pom}; "
                "KAFKA_VERSION in infra/kafka/broker.py must match kafka.version in that pom."
            )
        size_mb = sum(j.stat().st_size for j in jars) / 1e6
        (tmp / MARKER_NAME).write_text(pom_hash(pom) + "\n")
        shutil.rmtree(libs_dir, ignore_errors=True)
        tmp.rename(libs_dir)
        if not quiet:
            _err(f"Fetched {len(jars)} jars ({size_mb:.0f} MB) in {elapsed:.1f}s.")
        return libs_dir


# --------------------------------------------------------------------------------------------------------------------
# Process / port helpers
# --------------------------------------------------------------------------------------------------------------------


def find_free_ports(count: int = 2) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that are free right now (e.g. broker + controller port)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class _BrokerProc:
    """A live JVM running ``kafka.Kafka`` that this module started (recognised by its ``PROCESS_TAG``)."""

    pid: int
    port: int | None  # client port from the tag
    properties: str  # the server.properties it runs with (identifies the data dir)


def _broker_proc(pid: int) -> _BrokerProc | None:
    """Describe ``pid`` if it is one of our brokers, else None (always None without ``/proc``)."""
    args = cmdline(pid)
    if BROKER_MAIN_CLASS not in args:
        return None
    tag = next((a[len(PROCESS_TAG) :] for a in args if a.startswith(PROCESS_TAG)), None)
    if tag is None:
        return None
    i = args.index(BROKER_MAIN_CLASS)
    props = args[i + 1] if i + 1 < len(args) else ""
    return _BrokerProc(pid, int(tag) if tag.isdigit() else None, props)


def _our_brokers() -> list[_BrokerProc]:
    """All live brokers started by this module on this machine (needs ``/proc``; empty without it)."""
    found: list[_BrokerProc] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if entry.name.isdigit():
            info = _broker_proc(int(entry.name))
            if info is not None and pid_alive(info.pid):
                found.append(info)
    return found


def _listening_pid(port: int) -> int | None:
    """Best-effort owner of a LISTEN socket on ``port`` (Linux ``/proc``; None when unknown)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return int(entry.name)
        except OSError:
            continue
    return None


def _tail_text(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _random_cluster_id() -> str:
    """Same format as ``kafka-storage random-uuid``: base64url of 16 random bytes, no padding, not starting '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def durability_properties(brokers: int) -> dict[str, str]:
    """Replication settings for a cluster of ``brokers`` nodes: every partition (the group offsets and the
    transaction log too) on up to 3 of them; from 3 on, an ``acks=all`` write needs 2 in-sync copies, so one node
    may be lost without losing an acknowledged record, and an out-of-sync replica never becomes leader."""
    factor = min(3, brokers)
    min_isr = 2 if factor >= 3 else 1
    return {
        "default.replication.factor": str(factor),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(factor),
        "transaction.state.log.replication.factor": str(factor),
        "transaction.state.log.min.isr": str(min_isr),
        "unclean.leader.election.enable": "false",
    }


# --------------------------------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LocalKafka(DataDirFiles):
    """A KRaft Kafka node (broker + controller in one JVM) bound to 127.0.0.1: alone by default, or one voter of a
    local cluster when ``voters`` names every controller (node id, controller port) and ``cluster_id`` is shared.

    Layout of ``data_dir`` (default ``<repo>/.local/kafka/data-<port>``)::

        server.properties   generated on every start
        broker.pid          pid of the running JVM (also its process group id)
        kraft/              log.dirs: topic partitions, __cluster_metadata, meta.properties
        logs/server.log     log4j output (WARN, plus startup/shutdown lines)
        logs/kafka.out      JVM stdout/stderr (crashes, JVM errors)
    """

    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    data_dir: Path | None = None
    heap_mb: int = 512
    libs_dir: Path = JARS_DIR
    java: str = "java"
    #: Extra/overriding ``server.properties`` entries.
    extra_properties: dict[str, str] = field(default_factory=dict)
    #: Extra JVM options for the broker (placed before the main class).
    extra_jvm_args: tuple[str, ...] = ()
    node_id: int = 1
    #: Every controller of the quorum as (node id, controller port); empty = this node alone.
    voters: tuple[tuple[int, int], ...] = ()
    #: The KRaft cluster id its storage is formatted with (the same on every node); None = a random one.
    cluster_id: str | None = None
    _process: ManagedProcess = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.port == self.controller_port:
            raise ValueError("port and controller_port must differ")
        if self.voters and (self.node_id, self.controller_port) not in self.voters:
            raise ValueError(f"voters {self.voters} must include this node ({self.node_id}, {self.controller_port})")
        self.data_dir = Path(self.data_dir or LOCAL_ROOT / f"data-{self.port}").resolve()
        self.libs_dir = Path(self.libs_dir).resolve()
        self._process = ManagedProcess(
            f"The Kafka broker on {self.bootstrap}", self.pid_file, self.stdout_log, self._owns, LocalKafkaError
        )

    # -- paths -------------------------------------------------------------------------------------------------------

    properties_file = DataPath("server.properties")
    pid_file = DataPath("broker.pid")
    kraft_dir = DataPath("kraft")
    logs_dir = DataPath("logs")
    server_log = DataPath("server.log", under="logs_dir")
    stdout_log = DataPath("kafka.out", under="logs_dir")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- state -------------------------------------------------------------------------------------------------------

    def _owns(self, pid: int) -> bool:
        """True if ``pid`` is a broker of ours running with this instance's server.properties."""
        if not Path("/proc").is_dir():  # cannot inspect command lines: trust our pid file
            return True
        info = _broker_proc(pid)
        return info is not None and info.properties == str(self.properties_file)

    @property
    def pid(self) -> int | None:
        """Pid of the running broker for this data dir, or None.

        Found from this object (if it started the broker), else the pid file, else by scanning for a broker of ours
        started with this data dir's server.properties (e.g. after the pid file was deleted). A stale pid file (dead
        process, or a pid reused by an unrelated process) is ignored.
        """
        pid = self._process.pid
        if pid is not None:
            return pid
        for info in _our_brokers():
            if info.properties == str(self.properties_file):
                return info.pid
        return None

    def is_running(self) -> bool:
        """True while the broker JVM for this data dir/port is alive (it may still be starting up)."""
        return self.pid is not None

    def is_ready(self, timeout_s: float = 2.0) -> bool:
        """True if the broker accepts connections and (with confluent_kafka installed) answers a metadata request."""
        return port_accepts(self.port) and self._metadata_ok(timeout_s) is not False

    def _pid_on_port(self) -> int | None:
        """Any broker of ours serving this client port, whatever its data dir."""
        return next((b.pid for b in _our_brokers() if b.port == self.port), None)

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def server_properties(self) -> dict[str, str]:
        voters = self.voters or ((self.node_id, self.controller_port),)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(f"{node}@127.0.0.1:{port}" for node, port in voters),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.kraft_dir),
            "num.partitions": "1",
            # Alone: everything replicated once. In a cluster: see durability_properties.
            **durability_properties(len(voters)),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            # Fast, explicit development behaviour.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            # Small-ish retention: a dev/test broker, not an archive.
            "log.retention.hours": "24",
            "log.retention.bytes": str(256 * 1024 * 1024),
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.check.interval.ms": "60000",
            # Light on threads.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        props.update(self.extra_properties)
        return props

    def _write_properties(self) -> None:
        lines = [f"# Generated by infra/kafka/broker.py (Kafka {KAFKA_VERSION}); rewritten on every start."]
        lines += [f"{k}={v}" for k, v in self.server_properties().items()]
        self.properties_file.write_text("\n".join(lines) + "\n")

    def _jvm_base(self) -> list[str]:
        return [
            self.java,
            f"-Dlog4j.configuration=file:{LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-Djava.awt.headless=true",
            "-cp",
            f"{self.libs_dir}/*",
        ]

    def _format_storage(self) -> None:
        if (self.kraft_dir / "meta.properties").is_file():
            return
        cmd = [
            *self._jvm_base(),
            "kafka.tools.StorageTool", "format", "-t", self.cluster_id or _random_cluster_id(),
            "-c", str(self.properties_file), "-g",
        ]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if res.returncode != 0:
            raise LocalKafkaError(
                f"Formatting KRaft storage in {self.kraft_dir} failed (exit {res.returncode}):\n"
                f"{_tail_text(res.stdout + res.stderr, 30)}\n"
                f"If the directory is corrupt, wipe it: python -m infra.kafka.broker wipe --port {self.port}"
            )

    def _check_ports_free(self) -> None:
        for what, port in (("broker", self.port), ("controller", self.controller_port)):
            if port_bindable(port):
                continue
            holder = _listening_pid(port)
            info = _broker_proc(holder) if holder is not None else None
            if info is None and holder is None:  # owner unknown (no /proc access): one of ours on this port?
                info = next((b for b in _our_brokers() if b.port == port), None)
            if info is not None:
                raise LocalKafkaError(
                    f"The {what} port {port} is held by another local Kafka broker of ours (pid {info.pid}, "
                    f"client port {info.port}, config {info.properties}), not the one for data dir {self.dir}.\n"
                    f"Stop it: python -m infra.kafka.broker stop --port {info.port}   (or: kill {info.pid})"
                )
            who = f"pid {holder} ({' '.join(cmdline(holder))[:120]})" if holder else "another process"
            raise LocalKafkaError(
                f"The {what} port {port} is already in use by {who}, not by a broker of ours.\n"
                "Pick free ports, e.g.: python -m infra.kafka.broker start --port 29092 --controller-port 29093"
            )

    def start(self, timeout_s: float = 30.0, *, reuse: bool = False) -> float:
        """Start the broker and wait until it serves metadata; return the seconds taken (start() call to ready).

        Fetches jars if needed (see ``ensure_jars``), writes ``server.properties``, formats KRaft storage the
        first time, and launches the JVM in its own process group (it outlives this Python process; stop it with
        ``stop()`` here or from any other process). If this broker is already running, raises ``LocalKafkaError``,
        or with ``reuse=True`` waits for it to be ready and returns.
        """
        t0 = time.monotonic()
        running = self.pid
        if running is not None:
            if not reuse:
                raise LocalKafkaError(
                    f"A local Kafka broker is already running for {self.bootstrap} (pid {running}, data {self.dir}). "
                    f"Use it as is, or stop it first: python -m infra.kafka.broker stop --port {self.port}"
                )
            self._process.wait_ready(running, self._answers, t0 + timeout_s, self._diagnostics, _RETRY_HINT)
            return time.monotonic() - t0
        pid = self.launch()
        self.wait_ready(t0 + timeout_s, pid)  # the fetch and the format count against the timeout too
        return time.monotonic() - t0

    def launch(self) -> int:
        """Spawn the broker's JVM without waiting for it; return its pid. A node of a cluster cannot be ready
        before a majority of the voters runs, so a cluster launches every node first, then waits for each."""
        self.pid_file.unlink(missing_ok=True)  # stale: process gone or pid reused by something else
        if shutil.which(self.java) is None:
            raise LocalKafkaError(
                f"Java ('{self.java}') was not found. Kafka {KAFKA_VERSION} needs Java 11+ "
                "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless)."
            )
        self._check_ports_free()
        ensure_jars(self.libs_dir)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.kraft_dir.mkdir(parents=True, exist_ok=True)
        self._write_properties()
        self._format_storage()

        min_heap = min(256, self.heap_mb)
        cmd = [
            self.java, f"-Xms{min_heap}m", f"-Xmx{self.heap_mb}m",
            # Kafka's own kafka-run-class.sh defaults.
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            f"{PROCESS_TAG}{self.port}",
            *self.extra_jvm_args,
            *self._jvm_base()[1:],
            BROKER_MAIN_CLASS, str(self.properties_file),
        ]  # fmt: skip
        return self._process.spawn(cmd, self.dir)

    def wait_ready(self, deadline: float, pid: int) -> None:
        """Wait (until ``time.monotonic()`` reaches ``deadline``) for the launched broker ``pid`` to serve
        metadata; if it dies or the time runs out, stop it and raise ``LocalKafkaError`` with its log tail."""
        try:
            self._process.wait_ready(pid, self._answers, deadline, self._diagnostics, _RETRY_HINT)
        except BaseException:
            self._process.stop(pid=pid)
            raise

    def _answers(self, remaining_s: float) -> bool:
        return (
            port_accepts(self.port, timeout=min(0.5, remaining_s))
            and self._metadata_ok(min(2.0, max(remaining_s, 0.1))) is not False
        )

    def _metadata_ok(self, timeout_s: float) -> bool | None:
        """True/False from a real metadata request; None if confluent_kafka is not installed."""
        try:
            from confluent_kafka.admin import AdminClient  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            return None
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            md = admin.list_topics(timeout=max(timeout_s, 0.1))
            return bool(md.brokers)
        except Exception:  # KafkaException on timeout / transport errors
            return False

    def _diagnostics(self) -> str:
        parts = []
        for path in (self.server_log, self.stdout_log):
            tail = tail_file(path, 30)
            if tail:
                parts.append(f"--- last lines of {path} ---\n{tail}")
        return "\n".join(parts) or f"(no log output in {self.logs_dir})"

    def stop(self, timeout_s: float = 10.0, *, by_port: bool = False) -> bool:
        """Stop the broker: SIGTERM to its process group (clean shutdown), SIGKILL after ``timeout_s``.

        Works from any process (see ``pid``). With ``by_port=True``, a broker of ours on this client port that runs
        from another data dir is stopped too (what the CLI's ``stop --port N`` does). Idempotent: returns False if
        nothing was running. The pid file is removed in every case.
        """
        pid = self.pid
        if pid is None and by_port:
            pid = self._pid_on_port()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        return self._process.stop(timeout_s, pid=pid)

    def kill(self, timeout_s: float = 10.0) -> int | None:
        """SIGKILL the broker's process group, as a crash would (no controlled shutdown, nothing flushed); return
        the pid killed, or None if nothing was running. Its data dir stays: ``start()`` brings the node back."""
        pid = self.pid
        if pid is None:
            return None
        signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while not self._process.exited(pid):
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"{self.bootstrap}: broker pid {pid} survived SIGKILL for {timeout_s:.0f}s")
            time.sleep(0.02)
        self.pid_file.unlink(missing_ok=True)
        return pid

    def wipe(self) -> None:
        """Delete the data dir (all topics, offsets and the KRaft cluster id). Refuses while the broker runs."""
        if self.is_running():
            raise LocalKafkaError(
                f"Refusing to wipe {self.dir}: the broker is running (pid {self.pid}). Stop it first."
            )
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        """``with LocalKafka(...) as kafka:`` starts the broker (raising if it already runs) and stops it after."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


class _Out:
    def __init__(self) -> None:
        self._console: Any = None
        try:
            from rich.console import Console

            self._console = Console(stderr=False, highlight=False, soft_wrap=True)
        except ImportError:  # pragma: no cover - rich is optional
            pass

    def ok(self, msg: str) -> None:
        self._print(msg, "green")

    def warn(self, msg: str) -> None:
        self._print(msg, "yellow")

    def fail(self, msg: str) -> None:
        self._print(msg, "bold red", err=True)

    def info(self, msg: str) -> None:
        self._print(msg, None)

    def _print(self, msg: str, style: str | None, err: bool = False) -> None:
        if self._console is None:
            print(msg, file=sys.stderr if err else sys.stdout, flush=True)
            return
        from rich.markup import escape

        text = escape(msg)
        console = self._console
        if err:
            from rich.console import Console

            console = Console(stderr=True, highlight=False, soft_wrap=True)
        console.print(f"[{style}]{text}[/{style}]" if style else text)


def _status_lines(kafka: LocalKafka) -> list[tuple[str, str]]:
    pid = kafka.pid
    jars = "cached" if _jars_ready(kafka.libs_dir, POM) else "not fetched (run: python -m infra.kafka.broker fetch)"
    rows = [
        ("state", f"running (pid {pid})" if pid else "stopped"),
        ("bootstrap", kafka.bootstrap),
        ("controller", f"127.0.0.1:{kafka.controller_port}"),
        ("kafka", f"{KAFKA_VERSION} (KRaft, combined broker+controller)"),
        ("data dir", str(kafka.dir)),
        ("server log", str(kafka.server_log)),
        ("jars", f"{kafka.libs_dir} [{jars}]"),
    ]
    if pid:
        rows.insert(1, ("ready", "yes" if kafka.is_ready() else "no (starting, or not answering)"))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.kafka.broker",
        description=f"Local single-node Apache Kafka {KAFKA_VERSION} (KRaft) assembled from Maven Central.",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "fetch", "wipe"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"client port (default {DEFAULT_PORT})")
    parser.add_argument("--controller-port", type=int, default=None, help="KRaft controller port (default: --port + 1)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: <repo>/.local/kafka/data-<port>")
    parser.add_argument("--heap-mb", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait (start: 30, stop: 10)")
    parser.add_argument("--force", action="store_true", help="fetch: re-download even if cached")
    args = parser.parse_args(argv)
    out = _Out()

    controller_port = args.controller_port if args.controller_port is not None else args.port + 1
    try:
        kafka = LocalKafka(
            port=args.port, controller_port=controller_port, data_dir=args.data_dir, heap_mb=args.heap_mb
        )
        if args.command == "fetch":
            libs = ensure_jars(kafka.libs_dir, force=args.force)
            out.ok(f"Kafka {KAFKA_VERSION} jars ready in {libs} ({len(list(libs.glob('*.jar')))} jars).")
            return 0
        if args.command == "start":
            if os.environ.get(ENV_BOOTSTRAP):
                out.warn(
                    f"Note: {ENV_BOOTSTRAP}={os.environ[ENV_BOOTSTRAP]} is set, so the platform uses that cluster, "
                    "not this local broker."
                )
            pid = kafka.pid
            if pid is not None:
                out.warn(f"Already running: {kafka.bootstrap} (pid {pid}, data {kafka.dir}).")
                return 0
            secs = kafka.start(timeout_s=args.timeout or 30.0)
            out.ok(f"Kafka {KAFKA_VERSION} ready on {kafka.bootstrap} in {secs:.1f}s (pid {kafka.pid}).")
            out.info(f"  data: {kafka.dir}\n  log:  {kafka.server_log}")
            out.info(f"  stop: python -m infra.kafka.broker stop --port {kafka.port}")
            return 0
        if args.command == "stop":
            pid = kafka.pid or kafka._pid_on_port()
            if kafka.stop(timeout_s=args.timeout or 10.0, by_port=True):
                out.ok(f"Stopped Kafka on {kafka.bootstrap} (pid {pid}).")
            else:
                out.info(f"Kafka on {kafka.bootstrap} was not running.")
            return 0
        if args.command == "status":
            width = 11
            for key, value in _status_lines(kafka):
                out.info(f"{key:<{width}} {value}")
            if os.environ.get(ENV_BOOTSTRAP):
                out.info(f"{'note':<{width}} {ENV_BOOTSTRAP}={os.environ[ENV_BOOTSTRAP]} overrides the local broker")
            return 0 if kafka.is_running() else 3
        if args.command == "wipe":
            kafka.wipe()
            out.ok(f"Wiped {kafka.dir}.")
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
