"""The Faust application: one app object, registry topics bound to it, the dead-letter path.

Agents live in ``streams/agents/*.py``; each only decodes (``streams.ingress``), calls
the domain core and emits. Values travel as raw bytes so that validation errors are
ours to catch (Faust's own deserialisation would crash the agent on a bad record).
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.types import TP

from contracts.topics import PLATFORM_DEADLETTERS, TOPICS, Topic
from streams import ingress
from streams.settings import Settings, get_settings

log = logging.getLogger("nexus.app")


def make_app(settings: Settings) -> faust.App:
    datadir = settings.data_dir / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    broker = ";".join(f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(","))
    return faust.App(
        settings.app_id,
        broker=broker,
        store="memory://",
        # Registry topics are created by streams.topic_admin; Faust still declares its own internal ones.
        topic_replication_factor=settings.topic_replication_factor,
        topic_partitions=4,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=2,
        broker_commit_interval=0.5,
        consumer_group_instance_id=settings.worker_instance_id,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=1.0,
        stream_buffer_maxsize=8192,
        web_enabled=True,
        web_host="127.0.0.1",
        web_port=settings.worker_web_port,
        web_in_thread=False,
        logging_config=None,
        datadir=str(datadir),
    )


settings = get_settings()
app = make_app(settings)
_faust_topics: dict[str, faust.TopicT] = {}


def faust_topic(topic: Topic) -> faust.TopicT:
    """The Faust handle of a registry topic (raw bytes in and out)."""
    handle = _faust_topics.get(topic.name)
    if handle is None:
        handle = app.topic(
            topic.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions_override or topic.partitions,
            allow_empty=True,
        )
        _faust_topics[topic.name] = handle
    return handle


async def emit(topic: Topic, message: Any) -> Any:
    """Serialise via the registry and send; returns the delivery future (await it for the ack)."""
    return await faust_topic(topic).send(key=topic.key_of(message), value=topic.encode(message))


async def send_dead_letter(event: faust.EventT, reason: ingress.Rejected) -> Any:
    message = event.message
    letter = ingress.dead_letter(
        ingress.Origin(message.topic, message.partition, message.offset), message.key, message.value, reason
    )
    log.warning("dead-lettered %s[%s]@%s: %s", message.topic, message.partition, message.offset, reason.reason)
    return await emit(PLATFORM_DEADLETTERS, letter)


def decode(topic: Topic, event: faust.EventT) -> Any | ingress.Rejected:
    message = event.message
    return ingress.validate(topic, message.key, message.value, settings.max_ingress_message_bytes)


def tp_of(event: faust.EventT) -> TP:
    return event.message.tp


__all__ = ["TOPICS", "app", "decode", "emit", "faust_topic", "make_app", "send_dead_letter", "settings"]
