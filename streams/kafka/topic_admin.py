"""Create every registry topic on the cluster (idempotent), before workers start.

Topics some state is a fold over (``Topic.kept_forever``: the ledger's input) must never lose a record to
retention, or a rebuild would miss old deposits. An existing such topic (created before, or by hand) gets
its retention set to forever on every start: that is a correctness setting, not a tuning one.

Partition counts are tuning too, except where they are part of a topic's meaning: the ledger's input has
exactly one partition (one writer over one ordered log; a second partition would get its own ledger, with
balances split between them, and every hold would be refused), and the bridge's journal is written by
``bridge.requests``' partition numbers. ``NEXUS_TOPIC_PARTITIONS_OVERRIDE`` does not apply to the first, and
an existing topic that breaks either rule stops the start with what to change.

Replication follows the cluster (``replication_for`` of ``cluster_size``): on up to 3 brokers every partition is on
all of them, and from 3 replicas on a write with ``acks=all`` (every producer of ours) needs 2 in-sync copies, so
losing one broker loses no acknowledged record. ``NEXUS_TOPIC_REPLICATION_FACTOR`` /
``NEXUS_TOPIC_MIN_INSYNC_REPLICAS`` override it. An existing topic keeps its replicas (only a reassignment changes
them; the start logs the shortfall); one with more than the wanted ``min.insync.replicas`` gets it, one with no more
is left as it is (it could not lose a broker and still take writes).
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from contracts.topics import TOPICS, Topic
from streams.kafka.clients import raised_transient
from streams.settings import Settings

TIMEOUT_S = 30.0
ENSURE_ATTEMPTS_MAX = 10  # x ENSURE_RETRY_S: a cluster that just started settles its broker handles in seconds
ENSURE_RETRY_S = 1.0
MIN_ISR = "min.insync.replicas"
DEFAULT_FACTOR = "default.replication.factor"
REPLICAS_TOLERATING_ONE_LOSS = 3  # acks=all with 2 in sync: one broker may fail, no acknowledged write lost

log = logging.getLogger("nexus.topics")


class Replication(NamedTuple):
    factor: int
    min_insync: int


def replication_for(brokers: int, settings: Settings) -> Replication:
    """The replication the platform's topics get on a cluster of ``brokers``: the settings where they say,
    else ``min(3, brokers)`` copies and 2 of them in sync from 3 copies on (1 below: a single broker, or two
    that could not lose one without stopping writes)."""
    factor = settings.topic_replication_factor or max(1, min(REPLICAS_TOLERATING_ONE_LOSS, brokers))
    min_insync = settings.topic_min_insync_replicas or (2 if factor >= REPLICAS_TOLERATING_ONE_LOSS else 1)
    if min_insync > factor:
        raise ValueError(f"min.insync.replicas {min_insync} > replication factor {factor}: no write could succeed")
    return Replication(factor, min_insync)


def replication(settings: Settings) -> Replication:
    """``replication_for`` the cluster at ``settings.bootstrap_servers``, for clients that create topics themselves
    (Faust's changelogs)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    return replication_for(cluster_size(admin, admin.list_topics(timeout=TIMEOUT_S)), settings)


def cluster_size(admin: AdminClient, metadata: Any) -> int:
    """The brokers replication is sized for: those the metadata lists now, or the cluster's own
    ``default.replication.factor`` where that is more. A broker missing from one answer (a cluster just started,
    a broker restarting) must not leave topics with fewer copies for good: a 3-node cluster once got topics with 2,
    and losing either of their nodes stopped writes to them."""
    listed = len(metadata.brokers)
    if not listed:
        return listed
    resource = ConfigResource(ConfigResource.Type.BROKER, str(min(metadata.brokers)))
    try:
        entries = admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)
        default = int(entries[DEFAULT_FACTOR].value)
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        log.warning("%s not readable (%s); sizing replication for the %d broker(s) listed", DEFAULT_FACTOR, exc, listed)
        return listed
    return max(listed, default)


def ensure_topics(settings: Settings, topics: list[Topic] | None = None) -> list[str]:
    """Create missing topics from the registry; return the names created.

    Asked again, with a new client, after a transient error: on a cluster that just started, librdkafka retires
    its bootstrap broker handles once it learns the brokers' ids and fails requests in flight on them with
    ``_DESTROY_BROKER``. Every step is idempotent, so a retry only finishes what the first try began."""
    wanted = topics if topics is not None else list(TOPICS.values())
    created: list[str] = []
    for attempt in range(ENSURE_ATTEMPTS_MAX):
        try:
            _ensure_once(settings, wanted, created)
            return created
        except (KafkaException, RuntimeError) as exc:
            cause = exc if isinstance(exc, KafkaException) else exc.__cause__
            if not raised_transient(cause) or attempt == ENSURE_ATTEMPTS_MAX - 1:
                raise
            log.info("topics not ensured yet (%s); retrying", cause)
            time.sleep(ENSURE_RETRY_S)
    raise AssertionError("unreachable")


def _ensure_once(settings: Settings, wanted: list[Topic], created: list[str]) -> None:
    """One pass of ``ensure_topics``; appends to ``created`` as it creates, so after a retry the caller still
    learns the topics an earlier pass made."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    listed = set(metadata.topics)
    copies = replication_for(cluster_size(admin, metadata), settings)
    new = [
        NewTopic(
            t.name,
            num_partitions=t.partitions_with(settings.topic_partitions_override),
            replication_factor=copies.factor,
            config={**t.topic_config(), MIN_ISR: str(copies.min_insync)},
        )
        for t in wanted
        if t.name not in listed
    ]
    failed: list[tuple[str, Exception]] = []  # raised after every answer is in: ``created`` misses none made
    for name, future in admin.create_topics(new, operation_timeout=TIMEOUT_S).items() if new else ():
        try:
            future.result(timeout=TIMEOUT_S)
            created.append(name)
        except Exception as exc:  # TOPIC_ALREADY_EXISTS: made meanwhile, or not yet in the metadata listed above
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                failed.append((name, exc))
    if failed:
        topic, error = failed[0]
        raise RuntimeError(f"could not create topic {topic}: {error}") from error
    # Every topic this call did not create existed already, whatever the listing said: its configs are set.
    existing = [t for t in wanted if t.name not in created]
    _enforce_configs(admin, existing, _min_insync_by_topic(admin, existing, copies))
    check_partitions(admin, wanted)


def check_partitions(admin: AdminClient, topics: list[Topic]) -> None:
    """Refuse to start on a topic whose partition count breaks its meaning (see the module doc)."""
    ruled = [t for t in topics if t.fixed_partitions or t.copartitioned_with]
    if not ruled:
        return
    names = {t.name for t in ruled} | {t.copartitioned_with for t in ruled if t.copartitioned_with}
    counts = partition_counts(admin, sorted(names))
    for t in ruled:
        have = counts.get(t.name)
        if have is None:
            continue  # not on the cluster (a subset was ensured): whoever creates it creates it right
        if t.fixed_partitions and have != t.partitions:
            raise RuntimeError(
                f"topic {t.name} has {have} partitions; it must have exactly {t.partitions}: each partition "
                "would get its own single writer and its own state (for the ledger: a payer's balance in one, "
                f"their holds in another). Recreate {t.name} with {t.partitions} partition(s), moving its "
                "records over in their order (the state is a fold over them); "
                "NEXUS_TOPIC_PARTITIONS_OVERRIDE never applies to it."
            )
        lead = t.copartitioned_with
        if lead is not None and counts.get(lead) not in (None, have):
            raise RuntimeError(
                f"topic {t.name} has {have} partitions and {lead} has {counts[lead]}; they must have the same "
                f"count ({t.name} is written by {lead}'s partition numbers, and recovery reads it per partition). "
                f"Add partitions to the smaller one (kafka-topics.sh --alter --partitions N) before starting."
            )


def _min_insync_by_topic(admin: AdminClient, topics: list[Topic], copies: Replication) -> dict[str, str]:
    """``min.insync.replicas`` to set on existing topics: on those with enough replicas to honour it. One with fewer
    than wanted is logged (a reassignment adds replicas, not a config); setting 2 on a single copy would stop
    every write to it."""
    listed = admin.list_topics(timeout=TIMEOUT_S).topics
    wanted: dict[str, str] = {}
    for t in topics:
        meta = listed.get(t.name)
        if meta is None or not meta.partitions:
            continue
        have = min(len(p.replicas) for p in meta.partitions.values())
        if have < copies.factor:
            log.warning(
                "topic %s has %d replica(s), the cluster's topics want %d: reassign it "
                "(kafka-reassign-partitions.sh) to survive a broker loss",
                t.name, have, copies.factor,
            )  # fmt: skip
        if have > copies.min_insync > 1:  # one copy may be lost and writes go on
            wanted[t.name] = str(copies.min_insync)
    return wanted


def partition_counts(admin: AdminClient, names: list[str]) -> dict[str, int]:
    """Partitions per topic, for the named topics that exist."""
    listed = admin.list_topics(timeout=TIMEOUT_S).topics
    return {name: len(listed[name].partitions) for name in names if name in listed}


CORRECTNESS_CONFIGS = ("retention.ms", "retention.bytes", "message.timestamp.type", MIN_ISR)


def _enforce_configs(admin: AdminClient, topics: list[Topic], min_insync: dict[str, str]) -> None:
    """Set the configs existing topics need to be right, not only fast: retention -1 where state is a fold
    over every record (``kept_forever``), broker timestamps where a consumer bounds producers' clocks, the
    in-sync copies an acknowledged write needs (``min_insync``, by topic name)."""
    resources = []
    for t in topics:
        wanted = {k: v for k, v in t.topic_config().items() if k in CORRECTNESS_CONFIGS}
        if not t.kept_forever:
            wanted = {k: v for k, v in wanted.items() if not k.startswith("retention.")}
        if t.name in min_insync:
            wanted[MIN_ISR] = min_insync[t.name]
        if wanted:
            entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in wanted.items()]
            resources.append(ConfigResource(ConfigResource.Type.TOPIC, t.name, incremental_configs=entries))
    if not resources:
        return
    for resource, future in admin.incremental_alter_configs(resources).items():
        try:
            future.result(timeout=TIMEOUT_S)
        except Exception as exc:
            raise RuntimeError(
                f"could not set {resource.name}'s {', '.join(CORRECTNESS_CONFIGS)} as the registry says: {exc}. "
                "Its consumers rely on them (state rebuilt from the whole topic, broker timestamps); grant "
                "AlterConfigs on it or set them by hand (contracts/topics.py has the values)."
            ) from exc


def topic_id(bootstrap: str, name: str) -> str:
    """The cluster's id of a topic: it changes when the topic is deleted and created again, or on another
    cluster, so local state derived from the topic can tell that it no longer matches."""

    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.describe_topics(TopicCollection([name]), request_timeout=TIMEOUT_S).values()
    return str(future.result(timeout=TIMEOUT_S).topic_id)
