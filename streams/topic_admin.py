"""Create every registry topic on the cluster (idempotent), before workers start."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

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
