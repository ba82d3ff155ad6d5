"""Move the platform's workers between the primary region and the standby, and back (spec §9.2).

MirrorMaker 2 (``infra/kafka/mirror.py``) copies every topic to the standby and translates the consumer groups'
offsets there, topic by topic: an input can be mirrored and its group offset translated while the outputs the
primary made from it are not mirrored yet. So a failover **replays**: before the workers start on the standby,
every platform group is rewound to the first offsets at or after (its last checkpoint − the replay window). The
workers are deterministic folds (docs/state-and-recovery.md): they rebuild silently up to those offsets, then
re-emit the window's outputs under the same ids, and every consumer applies an id once.

The steps (docs/runbooks/failover.md is the on-call procedure)::

    to-standby   1 circuit breaker: the primary must not answer (--force overrides; then stop its workers first)
                 2 stop the mirror (nothing may write the standby's groups any more)
                 3 the standby's platform groups must have no members (no worker started there yet)
                 4 rewind each platform group by the replay window from its last checkpoint
                 5 redirect: write NEXUS_KAFKA_BOOTSTRAP_SERVERS=<standby> to the active-region file
    prepare-failback   wipe the old primary (its un-mirrored tail diverged), start it, mirror standby -> primary,
                       wait until it has every record (the workers keep running on the standby)
    to-primary   the same five steps the other way (workers stopped first; the mirror is caught up, then stopped)
    watch        probe the primary; once it has not answered for --down-after-s, run to-standby

CLI::

    python -m infra.kafka.failover status | to-standby | prepare-failback | to-primary | watch  [options]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.kafka.broker import LOCAL_ROOT, LocalKafkaError, _Out
from infra.kafka.cluster import LocalKafkaCluster
from infra.kafka.mirror import (
    CHECKPOINTS_SUFFIX,
    DEFAULT_PRIMARY,
    DEFAULT_STANDBY,
    PRIMARY,
    STANDBY,
    LocalMirror,
    decode_checkpoint_key,
    probe_consumer,
)

__all__ = [
    "ACTIVE_REGION_FILE",
    "REPLAY_WINDOW_S",
    "DownDetector",
    "FailoverError",
    "Region",
    "Rewind",
    "SwitchReport",
    "main",
    "platform_group",
    "platform_groups",
    "prepare_failback",
    "rewind_offsets",
    "switch",
    "wait_groups_synced",
]

#: How far back the workers replay from a group's last checkpoint: longer than the mirror's lag and the workers'
#: commit lag put together, so every output the primary made but did not mirror is made again.
REPLAY_WINDOW_S = 60.0
#: What the workers are started with after a switch (a deployment reads it; the drill does too).
ACTIVE_REGION_FILE = LOCAL_ROOT / "active-region.env"
ENV_BOOTSTRAP = "NEXUS_KAFKA_BOOTSTRAP_SERVERS"
PROBE_TIMEOUT_S = 2.0
#: A stopped worker's static membership lasts its session (NEXUS_BROKER_SESSION_TIMEOUT_S, 10 s), plus room.
MEMBERS_GONE_S = 40.0
#: MM2's clean stop commits to the source, which a dead region never answers: a short wait, then SIGKILL.
MIRROR_STOP_S = 5.0
CHECKPOINT_INTERVAL_S = 1.0  # mirror_properties' sync_interval_s
ADMIN_TIMEOUT_S = 15.0


class FailoverError(LocalKafkaError):
    """A step that cannot go on; the message says what the operator does next."""


# --------------------------------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------------------------------


def platform_group(group_id: str, app_id: str) -> bool:
    """The platform's consumer groups are named after ``NEXUS_APP_ID``: Faust's is the app id itself, the plain
    loops' and the services' ``<app id>-<role>`` (streams/kafka/commits.py)."""
    return group_id == app_id or group_id.startswith(f"{app_id}-")


def rewind_offsets(
    committed: dict[tuple[str, int], int], at_time: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Each committed position moved back to the first record at or after the replay start (``at_time``; -1 when
    there is none: the end), never forward: a group behind the window keeps its own, earlier, offset."""
    moved = {}
    for tp, offset in committed.items():
        start = at_time.get(tp, -1)
        start = ends.get(tp, offset) if start < 0 else start
        moved[tp] = min(offset, start)
    return moved


class DownDetector:
    """Declares a region down once every probe for ``down_after_s`` failed: one slow answer on a busy machine is
    not an outage, and a flapping region is never failed over from."""

    def __init__(self, down_after_s: float) -> None:
        self.down_after_s = down_after_s
        self.failing_since: float | None = None

    def observe(self, answered: bool, now: float) -> bool:
        if answered:
            self.failing_since = None
            return False
        if self.failing_since is None:
            self.failing_since = now
        return now - self.failing_since >= self.down_after_s


@dataclass(frozen=True)
class Rewind:
    """One group's move: how many records per partition it will replay, and the checkpoint it counted from."""

    group: str
    checkpoint_ms: int | None  # None: MM2 never checkpointed it; replayed from the beginning
    offsets: dict[tuple[str, int], int]
    records_back: int


@dataclass
class Region:
    """One side: a name, its bootstrap, and (locally) its cluster, so failback can wipe and start it."""

    name: str
    bootstrap: str
    cluster: LocalKafkaCluster | None = None

    def answers(self, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
        try:
            return bool(_admin(self.bootstrap).list_topics(timeout=timeout_s).brokers)
        except KafkaException:
            return False


@dataclass
class SwitchReport:
    """What a switch did, for the operator and the drill."""

    to: Region
    rewinds: list[Rewind] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps_s: dict[str, float] = field(default_factory=dict)

    @property
    def records_replayed(self) -> int:
        return sum(r.records_back for r in self.rewinds)


# --------------------------------------------------------------------------------------------------------------------
# Kafka reads and writes
# --------------------------------------------------------------------------------------------------------------------


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def platform_groups(bootstrap: str, app_id: str) -> dict[str, int]:
    """The platform's groups on a cluster and their member counts."""
    admin = _admin(bootstrap)
    listed = admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S).result(timeout=ADMIN_TIMEOUT_S)
    names = [g.group_id for g in listed.valid if platform_group(g.group_id, app_id)]
    if not names:
        return {}
    described = admin.describe_consumer_groups(names, request_timeout=ADMIN_TIMEOUT_S)
    return {name: len(f.result(timeout=ADMIN_TIMEOUT_S).members) for name, f in described.items()}


def wait_groups_empty(bootstrap: str, app_id: str, timeout_s: float = MEMBERS_GONE_S) -> dict[str, int]:
    """Wait until the platform's groups have no members; return those that still have some. A stopped worker's
    static member (``group.instance.id``) stays in its group until its session times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        busy = {g: n for g, n in platform_groups(bootstrap, app_id).items() if n}
        if not busy or time.monotonic() > deadline:
            return busy
        time.sleep(0.5)


def last_checkpoints(bootstrap: str, topic: str, groups: Iterable[str]) -> dict[str, int]:
    """When MM2 last checkpointed each group (the newest record time on ``topic`` for it, ms)."""
    wanted, found = set(groups), dict[str, int]()
    consumer = probe_consumer(bootstrap, "failover")
    try:
        meta = consumer.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=ADMIN_TIMEOUT_S)
            for p in meta.partitions
        }
        left = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in left])
        deadline = time.monotonic() + ADMIN_TIMEOUT_S * 4
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                key, partition, offset = msg.key(), msg.partition(), msg.offset()
                if msg.error() or key is None or partition is None or offset is None:
                    continue
                group = decode_checkpoint_key(key)[0]
                if group in wanted:
                    found[group] = max(found.get(group, 0), msg.timestamp()[1])
                if offset >= ends[partition][1] - 1:
                    left.discard(partition)
        return found
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = _admin(bootstrap)
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=ADMIN_TIMEOUT_S)
    result = futures[group].result(timeout=ADMIN_TIMEOUT_S)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def plan_rewind(bootstrap: str, group: str, checkpoint_ms: int | None, window_s: float) -> Rewind:
    """Where ``group`` must restart from: its committed offsets moved back to ``checkpoint_ms − window_s``."""
    committed = committed_offsets(bootstrap, group)
    consumer = probe_consumer(bootstrap, "failover")
    try:
        ends, starts = {}, {}
        for tp in committed:
            starts[tp], ends[tp] = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=ADMIN_TIMEOUT_S)
        if checkpoint_ms is None:
            at_time = starts  # never checkpointed: replay everything (slower, still exact)
        else:
            since_ms = int(checkpoint_ms - window_s * 1000)
            asked = [TopicPartition(t, p, since_ms) for t, p in committed]
            found = consumer.offsets_for_times(asked, timeout=ADMIN_TIMEOUT_S) if asked else []
            at_time = {(tp.topic, tp.partition): tp.offset for tp in found}
    finally:
        consumer.close()
    offsets = rewind_offsets(committed, at_time, ends)
    back = sum(committed[tp] - offsets[tp] for tp in committed)
    return Rewind(group, checkpoint_ms, offsets, back)


def apply_rewind(bootstrap: str, rewind: Rewind) -> None:
    partitions = [TopicPartition(t, p, offset) for (t, p), offset in sorted(rewind.offsets.items())]
    if not partitions:
        return
    admin = _admin(bootstrap)  # the client must outlive its futures
    futures = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(rewind.group, partitions)], request_timeout=ADMIN_TIMEOUT_S
    )
    futures[rewind.group].result(timeout=ADMIN_TIMEOUT_S)


# --------------------------------------------------------------------------------------------------------------------
# The switch
# --------------------------------------------------------------------------------------------------------------------

Progress = Callable[[str], None]


def switch(
    source: Region,
    target: Region,
    app_id: str,
    *,
    mirror: LocalMirror | None,
    window_s: float = REPLAY_WINDOW_S,
    force: bool = False,
    active_file: Path | None = ACTIVE_REGION_FILE,
    progress: Progress = lambda _step: None,
) -> SwitchReport:
    """Make ``target`` the active region for ``app_id``'s workers (started by the caller afterwards)."""
    report, t0 = SwitchReport(target), time.monotonic()

    def done(step: str) -> None:
        nonlocal t0
        report.steps_s[step] = time.monotonic() - t0
        progress(step)
        t0 = time.monotonic()

    if not target.answers():
        raise FailoverError(
            f"the {target.name} region ({target.bootstrap}) does not answer either: nothing to move to. Check it "
            "(python -m infra.kafka.failover status) and run this again once it answers."
        )
    if source.answers():
        if not force:
            raise FailoverError(
                f"the {source.name} region ({source.bootstrap}) still answers: moving now would run two regions at "
                "once. Stop its workers first and pass --force, or wait until it is really down."
            )
        busy = wait_groups_empty(source.bootstrap, app_id)
        if busy:
            raise FailoverError(f"workers still run on the {source.name} region ({busy}): stop them first.")
    done("circuit breaker: the old region is out")
    if mirror is not None:
        mirror.stop(timeout_s=MIRROR_STOP_S)
    done("mirror stopped")
    busy = wait_groups_empty(target.bootstrap, app_id)
    groups = platform_groups(target.bootstrap, app_id)
    if busy:
        raise FailoverError(
            f"groups with members on the {target.name} region: {busy}. Stop the workers running there "
            "(two workers of one group in two regions would split its partitions), then run this again."
        )
    if not groups:  # the workers will read from the beginning: a full replay, slower and still exact
        report.warnings.append(
            f"no group of app id {app_id!r} on the {target.name} region (MM2 never synced one; is the app id the "
            "workers' NEXUS_APP_ID?): the workers will replay every topic from the beginning"
        )
    checkpoints = last_checkpoints(target.bootstrap, f"{source.name}{CHECKPOINTS_SUFFIX}", groups)
    done("groups found")
    for group in sorted(groups):
        rewind = plan_rewind(target.bootstrap, group, checkpoints.get(group), window_s)
        apply_rewind(target.bootstrap, rewind)
        report.rewinds.append(rewind)
    done("groups rewound by the replay window")
    if active_file is not None:
        active_file.parent.mkdir(parents=True, exist_ok=True)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        active_file.write_text(f"# active region: {target.name}, switched {when}\n{ENV_BOOTSTRAP}={target.bootstrap}\n")
    done("redirected: workers start with the new bootstrap")
    return report


def prepare_failback(
    old: Region, active: Region, *, mirror_dir: Path, progress: Progress = lambda _step: None
) -> LocalMirror:
    """Wipe the old region (its un-mirrored tail diverged from the active one), start it empty, mirror the active
    region into it and wait until it holds every record; the mirror keeps running until ``switch`` stops it."""
    if old.cluster is None:
        raise FailoverError(
            f"the {old.name} region is not a local cluster: wipe and restart it with its own tooling, then start "
            "the mirror into it (python -m infra.kafka.mirror start --reverse)"
        )
    old.cluster.stop()
    old.cluster.wipe()
    old.cluster.start(timeout_s=180)
    progress(f"{old.name} wiped and started empty")
    mirror = LocalMirror(active.bootstrap, old.bootstrap, old.cluster.size, active.name, old.name, data_dir=mirror_dir)
    mirror.start(timeout_s=180)
    progress(f"mirror {active.name} -> {old.name} running")
    mirror.wait_caught_up(timeout_s=300)
    progress(f"{old.name} caught up")
    return mirror


def wait_groups_synced(mirror: LocalMirror, app_id: str, stopped_ms: int, timeout_s: float = 60.0) -> None:
    """Wait until MM2 has checkpointed every platform group of the source, and three checkpoint intervals have
    passed since the workers stopped (``stopped_ms``), so their last commits are translated too. MM2 checkpoints a
    group only when its offsets move, so a checkpoint older than the stop is the newest there will be."""
    deadline = time.monotonic() + timeout_s
    groups = set(platform_groups(mirror.source_bootstrap, app_id))
    missing = groups
    while time.monotonic() < deadline:
        seen = last_checkpoints(mirror.target_bootstrap, mirror.checkpoints_topic, groups)
        missing = groups - seen.keys()
        if not missing and time.time() * 1000 - stopped_ms >= 3 * CHECKPOINT_INTERVAL_S * 1000:
            return
        time.sleep(1.0)
    raise FailoverError(
        f"MM2 has not checkpointed {sorted(missing)} in {timeout_s:.0f} s. Is the mirror running "
        f"(python -m infra.kafka.mirror status --reverse)? Read {mirror.log_file}."
    )


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------


def _regions(args: argparse.Namespace) -> tuple[Region, Region]:
    primary = Region(PRIMARY, args.primary)
    if args.primary == DEFAULT_PRIMARY:
        primary.cluster = LocalKafkaCluster()
    return primary, Region(STANDBY, args.standby)


def _status(primary: Region, standby: Region, app_id: str, out: _Out) -> int:
    for region in (primary, standby):
        up = region.answers()
        out.info(f"{region.name:<8} {region.bootstrap}  {'answers' if up else 'DOWN'}")
        if up:
            out.info(f"         groups of {app_id}: {platform_groups(region.bootstrap, app_id) or 'none'}")
    active = (
        ACTIVE_REGION_FILE.read_text().strip().splitlines()[-1] if ACTIVE_REGION_FILE.exists() else "(never switched)"
    )
    out.info(f"active   {active}")
    return 0


def _run_switch(source: Region, target: Region, args: argparse.Namespace, mirror: LocalMirror, out: _Out) -> int:
    from rich.progress import Progress as RichProgress

    with RichProgress(transient=False) as bar:
        task = bar.add_task(f"failover to {target.name}", total=5)

        def step(name: str) -> None:
            bar.advance(task)
            bar.console.print(f"  [green]done[/green] {name}")

        report = switch(
            source, target, args.app_id, mirror=mirror, window_s=args.window_s, force=args.force, progress=step
        )
    for rewind in report.rewinds:
        out.info(f"  {rewind.group}: {rewind.records_back} records to replay")
    for warning in report.warnings:
        out.warn(f"  note: {warning}")
    out.ok(f"{target.name} is active. Start the workers with {ENV_BOOTSTRAP}={target.bootstrap}")
    out.info(f"  (written to {ACTIVE_REGION_FILE}); then reconcile the window: docs/runbooks/failover.md step 6")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.kafka.failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["status", "to-standby", "prepare-failback", "to-primary", "watch"])
    parser.add_argument("--primary", default=os.environ.get("NEXUS_PRIMARY_BOOTSTRAP", DEFAULT_PRIMARY))
    parser.add_argument("--standby", default=os.environ.get("NEXUS_STANDBY_BOOTSTRAP", DEFAULT_STANDBY))
    parser.add_argument("--app-id", default=os.environ.get("NEXUS_APP_ID", "nexus-settlement"))
    parser.add_argument("--window-s", type=float, default=REPLAY_WINDOW_S, help="replay window (seconds)")
    parser.add_argument("--down-after-s", type=float, default=5.0, help="watch: primary unreachable this long")
    parser.add_argument("--force", action="store_true", help="switch although the old region still answers")
    args = parser.parse_args(argv)
    out = _Out()
    primary, standby = _regions(args)
    forward = LocalMirror(primary.bootstrap, standby.bootstrap, len(standby.bootstrap.split(",")))
    reverse_dir = LOCAL_ROOT / "mirror-failback"
    reverse = LocalMirror(
        standby.bootstrap, primary.bootstrap, len(primary.bootstrap.split(",")), STANDBY, PRIMARY, data_dir=reverse_dir
    )
    try:
        if args.command == "status":
            return _status(primary, standby, args.app_id, out)
        if args.command == "to-standby":
            return _run_switch(primary, standby, args, forward, out)
        if args.command == "to-primary":
            reverse.wait_caught_up(timeout_s=120)
            wait_groups_synced(reverse, args.app_id, int(time.time() * 1000))
            args.force = True  # the standby answers by design: what must hold is that its workers stopped
            return _run_switch(standby, primary, args, reverse, out)
        if args.command == "prepare-failback":
            prepare_failback(primary, standby, mirror_dir=reverse_dir, progress=lambda s: out.ok(f"  done {s}"))
            out.ok("The primary holds every record. Next: stop the workers, then run: failover to-primary")
            return 0
        detector = DownDetector(args.down_after_s)
        out.info(f"watching {primary.bootstrap}: failover after {args.down_after_s:.0f} s without an answer")
        while not detector.observe(primary.answers(), time.monotonic()):
            time.sleep(0.5)
        out.warn(f"the primary has not answered for {args.down_after_s:.0f} s: failing over")
        return _run_switch(primary, standby, args, forward, out)
    except LocalKafkaError as exc:
        out.fail(f"error: {exc}")
        return 1
    except (KafkaException, TimeoutError) as exc:
        out.fail(f"error: a cluster did not answer in time ({exc!r}); check both with: failover status, then retry")
        return 1
    except KeyboardInterrupt:
        out.fail("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
