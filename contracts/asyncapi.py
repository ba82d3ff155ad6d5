"""The AsyncAPI 3.0 document of the whole API, generated from the topic registry: contracts/asyncapi.json.

Channels are the topics (address = topic name; key, partitions, cleanup, retention and size in the Kafka
bindings), each with one message whose payload is the topic's published JSON Schema (referenced, not copied:
`schemas/<topic>.schema.json` next to this document), and operations say which component sends and which
receives each channel. JSON, not YAML: the platform's environment has no YAML library, and every AsyncAPI tool
reads JSON.
"""

from __future__ import annotations

import json
from typing import Any

from contracts.compat import contract_version
from contracts.examples import EXAMPLES, MORE_EXAMPLES
from contracts.topics import TOPICS, Component, PayloadTopic, Topic
from streams.settings import Settings

FILE_NAME = "asyncapi.json"
ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMA_FORMAT = "application/schema+json;version=2020-12"

DESCRIPTION = (
    "Kafka topics of the NEXUS-X settlement platform: what upstream systems produce (orders, card payments, FX "
    "quotes, ledger commands, payout rules, governance facts) and what the platform answers. Every message is one "
    "UTF-8 JSON object (except platform.deadletters.payloads: gzip bytes) whose schema is the channel's message "
    "payload (JSON Schema 2020-12); the record key is the UTF-8 text of the value's key field (`x-key`). Rules, "
    "reason codes and reading semantics: README.md; how the contract changes: COMPATIBILITY.md. Each operation is "
    "one component sending to or receiving from a channel; `upstream` is every system outside the platform."
)


def render() -> str:
    return json.dumps(document(), indent=2) + "\n"


def document() -> dict[str, Any]:
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:nexus-x:settlement-platform",
        "info": {
            "title": "NEXUS-X message contracts",
            "version": contract_version(),
            "description": DESCRIPTION,
            "tags": [{"name": str(c), "description": c.description} for c in Component],
        },
        "defaultContentType": "application/json",
        "servers": {"local": _local_server()},
        "channels": {t.name: channel(t) for t in TOPICS.values()},
        "operations": {op_id: op for t in TOPICS.values() for op_id, op in operations(t)},
        "components": {"messages": {t.name: message(t) for t in TOPICS.values()}},
    }


def _local_server() -> dict[str, Any]:
    port = Settings.model_fields["kafka_port"].default
    return {
        "host": f"127.0.0.1:{port}",
        "protocol": "kafka",
        "description": "The single-node broker `make run` starts (infra/kafka); set NEXUS_KAFKA_BOOTSTRAP_SERVERS "
        "to use another cluster.",
    }


def channel(t: Topic) -> dict[str, Any]:
    # The broker's topic configuration as the platform creates it (Topic.topic_config); the per-record limit the
    # ingress enforces is lower: x-max-value-bytes.
    config: dict[str, Any] = {
        name: value.split(",") if name == "cleanup.policy" else int(value) if value.lstrip("-").isdigit() else value
        for name, value in t.topic_config().items()
    }
    spec: dict[str, Any] = {
        "address": t.name,
        "title": t.name,
        "description": t.description,
        "messages": {t.name: {"$ref": f"#/components/messages/{t.name}"}},
        "bindings": {
            "kafka": {
                "topic": t.name,
                "partitions": t.partitions,
                "topicConfiguration": config,
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "x-key": t.key_field,
        "x-max-value-bytes": t.max_message_bytes,
        "x-dedup-key": list(t.identity),
        "x-upstream": t.upstream,
        "x-producers": [str(c) for c in t.producers],
        "x-consumers": [str(c) for c in t.consumers],
    }
    if t.fixed_partitions:
        spec["x-partitions-fixed"] = True
    if t.copartitioned_with:
        spec["x-partitions-same-as"] = t.copartitioned_with
    return spec


def operations(t: Topic) -> list[tuple[str, dict[str, Any]]]:
    ops = []
    for action, components in (("send", t.producers), ("receive", t.consumers)):
        for component in components:
            ops.append(
                (
                    f"{component}.{action}.{t.name}",
                    {
                        "action": action,
                        "channel": {"$ref": f"#/channels/{t.name}"},
                        "messages": [{"$ref": f"#/channels/{t.name}/messages/{t.name}"}],
                        "title": f"{component} {'writes' if action == 'send' else 'reads'} {t.name}",
                        "tags": [{"name": str(component)}],
                    },
                )
            )
    return ops


def message(t: Topic) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "name": t.name,
        "title": f"{t.name} value",
        "summary": t.description,
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"the UTF-8 text of the value's `{t.key_field}`"},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    if isinstance(t, PayloadTopic):
        msg["contentType"] = "application/gzip"
        msg["payload"] = t.value_schema()
        msg["bindings"]["kafka"]["key"]["description"] = "the dead letter's value_ref or key_ref"
        return msg
    msg["contentType"] = "application/json"
    msg["payload"] = {"schemaFormat": SCHEMA_FORMAT, "schema": {"$ref": f"schemas/{t.name}.schema.json"}}
    examples = [EXAMPLES[t.name], *MORE_EXAMPLES.get(t.name, ())]
    msg["examples"] = [
        {"name": f"example-{i}", "payload": json.loads(t.encode(e))} for i, e in enumerate(examples, start=1)
    ]
    return msg
