"""Confluent's wire format at ingress: a value may be framed as magic byte 0, a 4-byte big-endian schema id, then the
JSON (what Confluent's JSON Schema serializer writes). Plain JSON never starts with byte 0, so both are accepted.

A framed value is accepted when its schema id is a registered version of the topic's subject (`<topic>-value`, the
serializer's default naming); the JSON after the header is then validated like any other value. The registry is
asked once per id (answers kept, bounded), so this is the one place ingress may do I/O.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

MAGIC_BYTE = b"\x00"
HEADER_BYTES = 5
UNKNOWN_SCHEMA_ID = "UNKNOWN_SCHEMA_ID"
SCHEMA_NOT_FOUND = 40403  # the Confluent API's error_code for an id it does not know

#: The subjects a schema id is registered under (empty when the registry does not know the id).
SubjectsOf = Callable[[int], frozenset[str]]


class SchemaRegistryUnavailable(RuntimeError):
    """The registry could not answer: the record is not the producer's fault and may be sent again later."""


@dataclass(frozen=True, slots=True)
class Refused:
    code: str
    reason: str


def subject(topic: str) -> str:
    """The subject a topic's values are registered under (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def frame(schema_id: int, payload: bytes) -> bytes:
    """`payload` framed as Confluent's serializers do (tests and demo producers)."""
    return MAGIC_BYTE + schema_id.to_bytes(4, "big") + payload


class SchemaIds:
    """Which subjects each schema id belongs to, asked of the registry once per id and kept (at most `max_ids`).

    An id that did not belong to a subject is asked again after `recheck_s`: it may have been registered under
    that subject since (the same schema registered for a second topic keeps its id)."""

    def __init__(
        self,
        subjects_of: SubjectsOf,
        max_ids: int = 1024,
        recheck_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subjects_of = subjects_of
        self._max_ids = max_ids
        self._recheck_s = recheck_s
        self._clock = clock
        self._known: OrderedDict[int, tuple[frozenset[str], float]] = OrderedDict()
        self._lock = threading.Lock()

    def registered(self, schema_id: int, subject_name: str) -> bool:
        with self._lock:
            hit = self._known.get(schema_id)
            if hit is not None:
                self._known.move_to_end(schema_id)
        if hit is not None and (subject_name in hit[0] or self._clock() - hit[1] < self._recheck_s):
            return subject_name in hit[0]
        subjects = self._subjects_of(schema_id)  # outside the lock: one slow answer must not stall other ids
        with self._lock:
            self._known[schema_id] = (subjects, self._clock())
            self._known.move_to_end(schema_id)
            while len(self._known) > self._max_ids:
                self._known.popitem(last=False)
        return subject_name in subjects


def registry_lookup(base_url: str, timeout_s: float = 2.0) -> SubjectsOf:
    """`SubjectsOf` over a Confluent-compatible REST API at `base_url` (GET /schemas/ids/{id}/versions)."""
    base = base_url.rstrip("/")

    def subjects_of(schema_id: int) -> frozenset[str]:
        url = f"{base}/schemas/ids/{schema_id}/versions"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                versions = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and _error_code(exc) == SCHEMA_NOT_FOUND:
                return frozenset()  # any other 404 is a wrong URL, not an unknown id
            raise SchemaRegistryUnavailable(
                f"schema registry {base}: HTTP {exc.code} for schema id {schema_id}"
            ) from exc
        except (OSError, ValueError) as exc:
            raise SchemaRegistryUnavailable(f"schema registry {base} unreachable: {exc}") from exc
        return frozenset(str(v["subject"]) for v in versions if isinstance(v, dict) and "subject" in v)

    return subjects_of


def _error_code(exc: urllib.error.HTTPError) -> object:
    try:
        return json.loads(exc.read()).get("error_code")
    except (OSError, ValueError, AttributeError):
        return None


@lru_cache(maxsize=1)
def configured_ids() -> SchemaIds | None:
    """The platform's schema ids, from the setting schema_registry_url (None when no registry is configured)."""
    from streams.settings import get_settings

    url = get_settings().schema_registry_url
    return SchemaIds(registry_lookup(url)) if url else None


def unwrap(topic: str, value: bytes, ids: SchemaIds | None) -> bytes | Refused:
    """The JSON of `value`: itself when plain, after the header when framed with a schema id of the topic's subject
    (`ids` None: no registry, so no id is known). Raises SchemaRegistryUnavailable when the registry cannot answer."""
    if not value.startswith(MAGIC_BYTE):
        return value
    if len(value) < HEADER_BYTES:
        return Refused("MALFORMED_JSON", f"{topic}: value starts with byte 0 but is shorter than a 5-byte header")
    schema_id = int.from_bytes(value[1:HEADER_BYTES], "big")
    framed = f"{topic}: value framed with schema id {schema_id} (Confluent wire format)"
    if ids is None:
        return Refused(UNKNOWN_SCHEMA_ID, f"{framed}, but this platform has no schema registry; send plain JSON")
    if not ids.registered(schema_id, subject(topic)):
        return Refused(UNKNOWN_SCHEMA_ID, f"{framed} is not a registered version of subject {subject(topic)}")
    return value[HEADER_BYTES:]


__all__ = [
    "Refused",
    "SchemaIds",
    "SchemaRegistryUnavailable",
    "configured_ids",
    "frame",
    "registry_lookup",
    "subject",
    "unwrap",
]
