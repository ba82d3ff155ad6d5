"""librdkafka (confluent-kafka) client settings shared by every producer and consumer we create.

Why a module: librdkafka leaves Nagle's algorithm on by default. On a request/response path such as
ours (produce -> ack, fetch -> records) Nagle holds small segments back until the previous one is
acknowledged, and with delayed ACKs that costs up to ~40 ms per hop. Every client built from here
disables it; aiokafka (Faust's client) already sets TCP_NODELAY through asyncio.
"""

from __future__ import annotations

from typing import Any

LOW_LATENCY: dict[str, Any] = {"socket.nagle.disable": True}


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all producer with a short linger: outputs of one batch travel together."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 2,
        "batch.size": 512 * 1024,
        **LOW_LATENCY,
    }
    config.update({key.replace("_", "."): value for key, value in overrides.items()})
    return config


def consumer_config(bootstrap: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Manual-commit consumer: callers commit only after their outputs are acknowledged."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        **LOW_LATENCY,
    }
    config.update({key.replace("_", "."): value for key, value in overrides.items()})
    return config
