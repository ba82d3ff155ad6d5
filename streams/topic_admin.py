"""Create every registry topic on the cluster (idempotent), before workers start.

Topics some state is a fold over (``Topic.kept_forever``: the ledger's input) must never lose a record to
retention, or a rebuild would miss old deposits. An existing such topic (created before, or by hand) gets
its retention set to forever on every start: that is a correctness setting, not a tuning one.
"""

from __future__ import annotations

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from contracts.topics import TOPICS, Topic
from streams.settings import Settings

TIMEOUT_S = 30.0


def ensure_topics(settings: Settings, topics: list[Topic] | None = None) -> list[str]:
    """Create missing topics from the registry; return the names created."""
    wanted = topics if topics is not None else list(TOPICS.values())
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    existing = set(admin.list_topics(timeout=TIMEOUT_S).topics)
    new = [
        NewTopic(
            t.name,
            num_partitions=settings.topic_partitions_override or t.partitions,
            replication_factor=settings.topic_replication_factor,
            config=t.topic_config(),
        )
        for t in wanted
        if t.name not in existing
    ]
    _keep_forever(admin, [t for t in wanted if t.kept_forever and t.name in existing])
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=TIMEOUT_S).items():
        try:
            future.result(timeout=TIMEOUT_S)
            created.append(name)
        except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    return created


def _keep_forever(admin: AdminClient, topics: list[Topic]) -> None:
    """Set retention.ms and retention.bytes to -1 on existing topics that must keep every record."""
    if not topics:
        return
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            t.name,
            incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                for name, value in t.topic_config().items()
                if name.startswith("retention.")
            ],
        )
        for t in topics
    ]
    for resource, future in admin.incremental_alter_configs(resources).items():
        try:
            future.result(timeout=TIMEOUT_S)
        except Exception as exc:
            raise RuntimeError(
                f"could not set {resource.name} to keep every record (retention.ms=-1, retention.bytes=-1): {exc}. "
                "Its state is rebuilt from the whole topic; grant AlterConfigs on it or set them by hand."
            ) from exc
