"""The wire format of `platform.deadletters.payloads`: one gzip member per stored original key or value.

A dead letter keeps at most a prefix of what it rejected; the whole bytes are stored once, compressed, as the
value of a record keyed by the letter's reference (``<source topic>:<partition>:<offset>:<key|value>``). The
member is a standard gzip file (``gunzip`` reads it) whose header names the reference (FNAME), so a record copied
out of the topic still says what it is. Compression happens here, not in the Kafka client: the platform's
producers keep librdkafka's default per-record limit, and a payload is stored only if its compressed record
fits the topic (`PLATFORM_DEADLETTER_PAYLOADS.max_message_bytes`).
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

# Bounds decompression (an operator's fetch) as well as compression: nothing larger is ever stored.
ORIGINAL_BYTES_MAX = 64 * 1024 * 1024
_CHUNK_BYTES = 1024 * 1024
_LEVEL = 6
_MAGIC = b"\x1f\x8b\x08"  # gzip, deflate
_FNAME = 0x08
_OS_UNKNOWN = 255


class Payload(NamedTuple):
    """Whole original bytes a dead letter could only keep a prefix of; `ref` is the record key."""

    ref: str
    data: bytes


class PayloadError(ValueError):
    """Bytes that are not a payload record this codec wrote."""


def payload_ref(topic: str, partition: int, offset: int, part: str) -> str:
    assert part in ("key", "value"), part
    return f"{topic}:{partition}:{offset}:{part}"


def encode(payload: Payload, size_bytes_max: int | None = None) -> bytes | None:
    """The gzip member of `payload`; None once it is longer than `size_bytes_max` (compression stops there, so
    incompressible input costs about `size_bytes_max` of work, not its whole length)."""
    ref = payload.ref.encode("latin-1")
    assert b"\x00" not in ref and len(payload.data) <= ORIGINAL_BYTES_MAX, payload.ref
    parts = [_MAGIC, bytes([_FNAME]), b"\x00\x00\x00\x00", b"\x00", bytes([_OS_UNKNOWN]), ref, b"\x00"]
    size = sum(len(p) for p in parts) + 8
    deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    view = memoryview(payload.data)
    for start in range(0, len(view), _CHUNK_BYTES):
        parts.append(deflate.compress(view[start : start + _CHUNK_BYTES]))
        size += len(parts[-1])
        if size_bytes_max is not None and size > size_bytes_max:
            return None
    parts.append(deflate.flush())
    parts.append(struct.pack("<II", zlib.crc32(payload.data), len(payload.data) & 0xFFFFFFFF))
    wire = b"".join(parts)
    return None if size_bytes_max is not None and len(wire) > size_bytes_max else wire


def decode(wire: bytes) -> Payload:
    """The payload a record's value holds (raises PayloadError on anything this codec did not write)."""
    wire = bytes(wire)
    if len(wire) < 18 or wire[:3] != _MAGIC or wire[3] != _FNAME:
        raise PayloadError("not a dead-letter payload (gzip with the reference as its name)")
    end = wire.find(b"\x00", 10)
    if end < 0:
        raise PayloadError("payload header has no end")
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflate.decompress(wire[end + 1 : -8], ORIGINAL_BYTES_MAX + 1)
    except zlib.error as exc:
        raise PayloadError(f"payload does not inflate: {exc}") from exc
    crc, size = struct.unpack("<II", wire[-8:])
    if len(data) > ORIGINAL_BYTES_MAX or not inflate.eof or zlib.crc32(data) != crc or len(data) != size:
        raise PayloadError("payload is damaged (length or CRC differs)")
    return Payload(wire[10:end].decode("latin-1"), data)


__all__ = ["ORIGINAL_BYTES_MAX", "Payload", "PayloadError", "decode", "encode", "payload_ref"]
