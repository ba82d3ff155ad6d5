"""Confluent's wire format at ingress: a value may be framed as magic byte 0, a 4-byte big-endian schema id, then the
JSON (what Confluent's JSON Schema serializer writes). Plain JSON never starts with byte 0, so both are accepted.

The header is stripped and the JSON after it validated against the topic's contract exactly as plain JSON: the
contract model decides what the topic accepts, whatever schema id the producer's serializer used. The id is never
looked up (no registry at ingress): validation stays a pure function of the record's bytes, which a restarted worker
relies on when it replays its partitions through it (streams/kafka/partition_log.py) to rebuild its state.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC_BYTE = b"\x00"
HEADER_BYTES = 5  # the magic byte and the schema id


@dataclass(frozen=True, slots=True)
class Refused:
    code: str
    reason: str


def frame(schema_id: int, payload: bytes) -> bytes:
    """`payload` framed as Confluent's serializers do (tests and demo producers)."""
    return MAGIC_BYTE + schema_id.to_bytes(4, "big") + payload


def unwrap(topic: str, value: bytes) -> bytes | Refused:
    """The JSON of `value`: itself when plain, what follows the header when framed."""
    if not value.startswith(MAGIC_BYTE):
        return value
    if len(value) <= HEADER_BYTES:
        return Refused(
            "MALFORMED_JSON",
            f"{topic}: value starts with byte 0, a Confluent wire-format header (magic byte 0 and a 4-byte schema id), "
            f"but has {len(value)} bytes: no JSON after the 5-byte header",
        )
    return value[HEADER_BYTES:]


__all__ = ["HEADER_BYTES", "MAGIC_BYTE", "Refused", "frame", "unwrap"]
