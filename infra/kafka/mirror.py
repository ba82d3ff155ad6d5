"""MirrorMaker 2 between two local Kafka clusters: a standby region that receives every topic continuously.

Kafka's own ``connect-mirror`` (``infra/kafka/mirror/pom.xml``, jars cached under ``.local/kafka/mirror-libs``) in
dedicated mode: ``java -cp '<mirror-libs>/*' org.apache.kafka.connect.mirror.MirrorMaker mm2.properties``, the
properties written by ``mirror_properties`` on every start. One direction at a time (``source`` -> ``target``):
topic names stay the same on the target (``IdentityReplicationPolicy``), so a worker moves with one setting, and
identity replication cannot tell a record that came back round, so both directions at once would loop.

What is mirrored: every topic but MM2's and Connect's own and ``__*`` (the platform's registry topics and Faust's
internal ones), read committed (aborted transactional records are not copied), their configs too (a compacted
topic stays compacted). Consumer groups: MM2 checkpoints each group's offsets (every second) and writes the
translated offsets into the target's groups while those have no members, so workers started on the target resume
near where they were. The translation is per topic and not atomic across topics; ``infra/kafka/failover.py``
rewinds by a replay window before the workers start (docs/disaster-recovery.md).

Library use::

    mirror = LocalMirror(source_bootstrap=primary.bootstrap, target_bootstrap=standby.bootstrap,
                         target_size=1, data_dir=tmp_path / "mm2")
    mirror.start()                       # seconds until every source topic exists on the target
    mirror.wait_caught_up(timeout_s=60)  # every partition's last committed record is on the target
    mirror.stop()

CLI::

    python -m infra.kafka.mirror fetch | start | stop | status  [--source B --target B --reverse ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from domain.replication import Tail
from infra.kafka.broker import LOCAL_ROOT, LocalKafkaError, _Out, ensure_jars
from infra.processes import DataDirFiles, DataPath, ManagedProcess, cmdline_matches, tail_file

__all__ = [
    "CHECKPOINTS_SUFFIX",
    "MIRROR_LIBS_DIR",
    "LocalMirror",
    "decode_checkpoint_key",
    "lagging_partitions",
    "main",
    "mirror_properties",
    "mirrored",
    "mirrored_partitions",
    "probe_consumer",
    "read_tails",
]

MIRROR_DIR = Path(__file__).resolve().parent / "mirror"
MIRROR_POM = MIRROR_DIR / "pom.xml"
MIRROR_LOG4J = MIRROR_DIR / "log4j.properties"
MIRROR_LIBS_DIR = LOCAL_ROOT / "mirror-libs"
MIRROR_JAR = "connect-mirror-3.9.1"
MAIN_CLASS = "org.apache.kafka.connect.mirror.MirrorMaker"
PROCESS_TAG = "-Dnexusx.mirror="
#: Where MM2 puts the translated offsets of the source's groups, on the target: ``<source alias>.checkpoints.internal``.
CHECKPOINTS_SUFFIX = ".checkpoints.internal"
#: Not mirrored: Kafka's own (``__consumer_offsets``, ``__transaction_state``), MM2's and Connect's internal topics.
TOPICS_EXCLUDED = (r"__.*", r".*[\-\.]internal", r".*\.replica", "heartbeats", r"mm2-.*", r"connect-.*")
GROUPS_EXCLUDED = (r"console-consumer-.*", r"connect-.*", r"__.*")
#: The aliases the platform's two regions go by in MM2's configuration and topic names.
PRIMARY, STANDBY = "primary", "standby"
DEFAULT_HEAP_MB = 384
#: Each partition's tail read for the caught-up check: enough to step over a few transaction markers.
TAIL_RECORDS = 16
ADMIN_TIMEOUT_S = 10.0
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # one uncompressed record MM2 copies; the brokers still bound what they accept


def mirror_properties(
    source: tuple[str, str], target: tuple[str, str], target_size: int, *, sync_interval_s: int = 1
) -> dict[str, str]:
    """MM2's dedicated-mode configuration for one direction: (alias, bootstrap) of the source and the target, and
    the target's number of brokers (replication of what MM2 creates there, as the platform's topics get)."""
    (src, src_bootstrap), (dst, dst_bootstrap) = source, target
    replicas = str(min(3, target_size))
    flow = f"{src}->{dst}"
    return {
        "clusters": f"{src}, {dst}",
        f"{src}.bootstrap.servers": src_bootstrap,
        f"{dst}.bootstrap.servers": dst_bootstrap,
        f"{flow}.enabled": "true",
        f"{dst}->{src}.enabled": "false",
        # Same names on both sides: a worker moves with NEXUS_KAFKA_BOOTSTRAP_SERVERS alone.
        "replication.policy.class": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        "topics": ".*",
        "topics.exclude": ", ".join(TOPICS_EXCLUDED),
        "groups": ".*",
        "groups.exclude": ", ".join(GROUPS_EXCLUDED),
        "sync.topic.configs.enabled": "true",
        "sync.topic.acls.enabled": "false",
        "refresh.topics.interval.seconds": "2",
        "refresh.groups.interval.seconds": "2",
        # Aborted transactional records (the audit log's producer is transactional) are never copied.
        f"{src}.consumer.isolation.level": "read_committed",
        "source.consumer.isolation.level": "read_committed",
        # Offset translation: a sync at least every 10 records, checkpoints and group syncs every second.
        "emit.checkpoints.enabled": "true",
        "emit.checkpoints.interval.seconds": str(sync_interval_s),
        "sync.group.offsets.enabled": "true",
        "sync.group.offsets.interval.seconds": str(sync_interval_s),
        "offset.lag.max": "10",
        # The offset syncs live on the target: translation must not depend on the region that died.
        "offset-syncs.topic.location": "target",
        "emit.heartbeats.enabled": "true",
        "emit.heartbeats.interval.seconds": "1",
        "replication.factor": replicas,
        "checkpoints.topic.replication.factor": replicas,
        "heartbeats.topic.replication.factor": replicas,
        "offset-syncs.topic.replication.factor": replicas,
        "offset.storage.replication.factor": replicas,
        "config.storage.replication.factor": replicas,
        "status.storage.replication.factor": replicas,
        # The producers writing to the target take the target cluster's client settings ({alias}.producer.*; a
        # "{source}->{target}.producer." prefix is not read for them).
        f"{dst}.producer.enable.idempotence": "true",
        f"{dst}.producer.acks": "all",
        # MM2 re-batches what it copies, uncompressed by default: a record the source took compressed (the demo's
        # 3 MB gzip order, under the 1 MB limit as a batch) exceeded the producer's 1 MB request and killed the
        # task. Compressed again, with room for one such record per request.
        f"{dst}.producer.compression.type": "lz4",
        f"{dst}.producer.max.request.size": str(MAX_REQUEST_BYTES),
        "tasks.max": "2",
        "dedicated.mode.enable.internal.rest": "false",
        "plugin.discovery": "service_load",  # every Connect plugin on the class path declares itself: no scan
    }


def mirrored(topic: str) -> bool:
    """True for a topic MM2 copies (``mirror_properties``'s filter)."""
    return not any(re.fullmatch(pattern, topic) for pattern in TOPICS_EXCLUDED)


def decode_checkpoint_key(key: bytes) -> tuple[str, str, int]:
    """(group, topic, partition) of a record on ``<source>.checkpoints.internal``: MM2's ``Checkpoint`` key is the
    group and the topic (each an int16 length and UTF-8 bytes), then the partition (int32); the version header is
    in the value."""
    pos, parts = 0, []
    for _ in range(2):
        (size,) = struct.unpack_from(">h", key, pos)
        if size < 0 or pos + 2 + size > len(key):
            raise ValueError(f"not a checkpoint key: {key[:60]!r}")
        parts.append(key[pos + 2 : pos + 2 + size].decode())
        pos += 2 + size
    (partition,) = struct.unpack_from(">i", key, pos)
    return parts[0], parts[1], partition


def lagging_partitions(
    source: dict[tuple[str, int], Tail | None], target: dict[tuple[str, int], list[Tail]]
) -> list[tuple[str, int]]:
    """The source partitions whose last committed record is not yet among the target partition's last records
    (a partition without records on the source is never behind)."""
    behind = []
    for tp, last in sorted(source.items()):
        if last is not None and last not in target.get(tp, []):
            behind.append(tp)
    return behind


# --------------------------------------------------------------------------------------------------------------------
# Reading both sides
# --------------------------------------------------------------------------------------------------------------------


def mirrored_partitions(bootstrap: str, timeout_s: float) -> list[tuple[str, int]]:
    meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout_s)
    return sorted((name, p) for name, t in meta.topics.items() if mirrored(name) for p in t.partitions)


def probe_consumer(bootstrap: str, purpose: str, **config: object) -> Consumer:
    """A consumer for ``assign()`` reads only: a group of its own that never commits, librdkafka's log quiet."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"nexus-{purpose}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "log_level": 0,
            **config,
        }
    )


def read_tails(
    bootstrap: str, partitions: Iterable[tuple[str, int]], timeout_s: float
) -> dict[tuple[str, int], list[Tail]]:
    """The last committed records (up to ``TAIL_RECORDS``) of each partition, oldest first; [] for an empty one."""
    consumer = probe_consumer(bootstrap, "mirror-probe", **{"isolation.level": "read_committed"})
    try:
        tails: dict[tuple[str, int], list[Tail]] = {}
        wanted: dict[tuple[str, int], int] = {}
        assign = []
        for topic, partition in partitions:
            tails[(topic, partition)] = []
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
                continue  # deleted since it was listed: nothing to compare
            if high > low:
                wanted[(topic, partition)] = high
                assign.append(TopicPartition(topic, partition, max(low, high - TAIL_RECORDS)))
        consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while wanted and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.2):
                name, index, offset = msg.topic(), msg.partition(), msg.offset()
                if msg.error() or name is None or index is None or offset is None:
                    continue
                tails[(name, index)].append(Tail(msg.timestamp()[1], msg.key(), msg.value()))
                if offset >= wanted.get((name, index), 0) - 1:
                    wanted.pop((name, index), None)
            # A partition ending in transaction markers never hands out its last offset: its position tells.
            for tp in consumer.position([TopicPartition(t, p) for t, p in list(wanted)]):
                if tp.offset >= wanted[(tp.topic, tp.partition)]:
                    wanted.pop((tp.topic, tp.partition), None)
        return tails
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LocalMirror(DataDirFiles):
    """One MirrorMaker 2 process copying ``source_bootstrap``'s topics and group offsets to ``target_bootstrap``.

    Layout of ``data_dir`` (default ``<repo>/.local/kafka/mirror``): ``mm2.properties`` (written on every start),
    ``mirror.pid``, ``logs/mirror.log`` (log4j, WARN and MM2's lifecycle) and ``logs/mirror.out`` (JVM output).
    """

    source_bootstrap: str
    target_bootstrap: str
    target_size: int = 1
    source_alias: str = PRIMARY
    target_alias: str = STANDBY
    data_dir: Path | None = None
    heap_mb: int = DEFAULT_HEAP_MB
    libs_dir: Path = MIRROR_LIBS_DIR
    java: str = "java"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir or LOCAL_ROOT / "mirror").resolve()
        self.libs_dir = Path(self.libs_dir).resolve()
        self._process = ManagedProcess(
            f"MirrorMaker 2 ({self.source_alias} -> {self.target_alias})",
            self.pid_file,
            self.stdout_log,
            lambda pid: cmdline_matches(pid, lambda args: f"{PROCESS_TAG}{self.dir}" in args),
            LocalKafkaError,
        )

    properties_file = DataPath("mm2.properties")
    pid_file = DataPath("mirror.pid")
    logs_dir = DataPath("logs")
    log_file = DataPath("mirror.log", under="logs_dir")
    stdout_log = DataPath("mirror.out", under="logs_dir")

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def checkpoints_topic(self) -> str:
        return f"{self.source_alias}{CHECKPOINTS_SUFFIX}"

    def properties(self) -> dict[str, str]:
        return mirror_properties(
            (self.source_alias, self.source_bootstrap), (self.target_alias, self.target_bootstrap), self.target_size
        )

    def start(self, timeout_s: float = 120.0) -> float:
        """Start MM2 and wait until every topic of the source exists on the target; return the seconds taken."""
        if self.pid is not None:
            raise LocalKafkaError(
                f"{self._process.name} already runs (pid {self.pid}, data {self.dir}). "
                f"Stop it first: python -m infra.kafka.mirror stop --data-dir {self.dir}"
            )
        if shutil.which(self.java) is None:
            raise LocalKafkaError(f"Java ('{self.java}') was not found; MirrorMaker 2 needs Java 11+.")
        ensure_jars(self.libs_dir, pom=MIRROR_POM, main_jar=MIRROR_JAR)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        lines = ["# Generated by infra/kafka/mirror.py; rewritten on every start."]
        self.properties_file.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in self.properties().items())]))
        cmd = [
            self.java, f"-Xms{min(128, self.heap_mb)}m", f"-Xmx{self.heap_mb}m", f"{PROCESS_TAG}{self.dir}",
            f"-Dlog4j.configuration=file:{MIRROR_LOG4J}", f"-Dmirror.logs.dir={self.logs_dir}",
            "-Djava.awt.headless=true", "-cp", f"{self.libs_dir}/*", MAIN_CLASS, str(self.properties_file),
            "--clusters", self.target_alias,  # only the herder writing to the target: no reverse heartbeats
        ]  # fmt: skip
        return self._process.start(
            cmd, self._topics_created, timeout_s, self.dir, diagnostics=self._diagnostics,
            hint="MM2 has not created the source's topics on the target; read its log.",
        )  # fmt: skip

    def _topics_created(self, remaining_s: float) -> bool:
        try:
            wanted = {t for t, _p in mirrored_partitions(self.source_bootstrap, min(5.0, remaining_s))}
            have = {t for t, _p in mirrored_partitions(self.target_bootstrap, min(5.0, remaining_s))}
        except Exception:  # a cluster not answering yet
            time.sleep(0.5)
            return False
        if not wanted <= have:
            time.sleep(0.5)
            return False
        return True

    def _diagnostics(self) -> str:
        parts = [f"--- last lines of {p} ---\n{tail_file(p, 30)}" for p in (self.log_file, self.stdout_log)]
        return "\n".join(parts)

    def lagging(self, timeout_s: float = ADMIN_TIMEOUT_S) -> list[tuple[str, int]]:
        """The source partitions whose last committed record the target does not have yet."""
        partitions = mirrored_partitions(self.source_bootstrap, timeout_s)
        source = {tp: (tail[-1] if tail else None) for tp, tail in read_tails(
            self.source_bootstrap, partitions, timeout_s).items()}  # fmt: skip
        return lagging_partitions(source, read_tails(self.target_bootstrap, partitions, timeout_s))

    def wait_caught_up(self, timeout_s: float = 120.0) -> float:
        """Wait until the target holds every source partition's last committed record; return the seconds."""
        t0, behind = time.monotonic(), []
        while time.monotonic() - t0 < timeout_s:
            try:
                behind = self.lagging()
            except Exception as exc:  # a partition without a leader for a moment: ask again
                behind = [(f"({exc})", -1)]
            if not behind:
                return time.monotonic() - t0
            time.sleep(1.0)
        shown = ", ".join(f"{t}[{p}]" for t, p in behind[:6])
        raise LocalKafkaError(
            f"{self._process.name}: the target is still behind after {timeout_s:.0f} s on {shown}. "
            f"Is MM2 running (python -m infra.kafka.mirror status)? Read {self.log_file}."
        )

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM (MM2 commits its offsets and stops its connectors), SIGKILL after ``timeout_s``."""
        return self._process.stop(timeout_s)


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------

DEFAULT_PRIMARY = "127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096"  # python -m infra.kafka.cluster start
DEFAULT_STANDBY = "127.0.0.1:39092"  # make standby: one node on --base-port 39092


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.kafka.mirror", description="MirrorMaker 2 from the primary region to the standby."
    )
    parser.add_argument("command", choices=["fetch", "start", "stop", "status", "lag"])
    parser.add_argument("--primary", default=os.environ.get("NEXUS_PRIMARY_BOOTSTRAP", DEFAULT_PRIMARY))
    parser.add_argument("--standby", default=os.environ.get("NEXUS_STANDBY_BOOTSTRAP", DEFAULT_STANDBY))
    parser.add_argument("--reverse", action="store_true", help="standby -> primary (failback)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: .local/kafka/mirror")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    out = _Out()
    source, target = (STANDBY, PRIMARY) if args.reverse else (PRIMARY, STANDBY)
    bootstraps = {PRIMARY: args.primary, STANDBY: args.standby}
    mirror = LocalMirror(
        bootstraps[source], bootstraps[target], len(bootstraps[target].split(",")), source, target, args.data_dir
    )
    try:
        if args.command == "fetch":
            libs = ensure_jars(mirror.libs_dir, pom=MIRROR_POM, main_jar=MIRROR_JAR)
            out.ok(f"MirrorMaker 2 jars ready in {libs} ({len(list(libs.glob('*.jar')))} jars).")
        elif args.command == "start":
            secs = mirror.start(timeout_s=args.timeout)
            out.ok(
                f"MirrorMaker 2 {source} -> {target} running (pid {mirror.pid}); topics on the target in {secs:.1f}s."
            )
            out.info(f"  log: {mirror.log_file}\n  stop: python -m infra.kafka.mirror stop")
        elif args.command == "stop":
            out.ok("Stopped MirrorMaker 2." if mirror.stop() else "MirrorMaker 2 was not running.")
        elif args.command == "status":
            state = f"running (pid {mirror.pid})" if mirror.is_running() else "stopped"
            out.info(f"mirror     {state}, data {mirror.dir}")
            return 0 if mirror.is_running() else 3
        elif args.command == "lag":
            behind = mirror.lagging()
            out.ok("caught up: the target has every partition's last record") if not behind else out.warn(
                f"{len(behind)} partitions behind: " + ", ".join(f"{t}[{p}]" for t, p in behind[:10])
            )
            return 0 if not behind else 3
        return 0
    except LocalKafkaError as exc:
        out.fail(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        out.fail("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
