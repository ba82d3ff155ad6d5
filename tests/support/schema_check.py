"""Every record the platform wrote, checked against the committed JSON Schema with a standard validator.

contracts/README.md promises a consumer that each record on a topic validates against
`contracts/schemas/<topic>.schema.json` and that its key is the value's key field. The integration suite holds the
platform to that on real output: before its broker stops (tests/conftest.py, the alerting stack's fixture) it reads
every topic the platform writes and validates each record with `jsonschema` (draft 2020-12, formats checked), not
with our own models, so a schema that says something the platform does not do is caught.

Upstream topics are not checked (tests put bad input there on purpose; the ingress answers it), nor the payload
topic (gzip bytes, not JSON). A test that writes junk to a platform topic on purpose marks those records with
`BAD_INPUT_HEADER`; they are counted apart, and nothing else is exempt.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from contracts.topics import TOPICS, PayloadTopic, Topic, closed_schema
from streams.kafka.clients import watermarks
from tests.support.kafka_io import BAD_INPUT_HEADER

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
ERROR_CHARS = 300  # of one record's first error, in the failure list
LISTED_PER_TOPIC = 8  # invalid records listed per topic in a failure; the rest are counted
READ_TIMEOUT_S = 300.0

Offsets = Mapping[tuple[str, int], int]


def checked_topics() -> list[Topic]:
    """The topics only the platform writes, with JSON values."""
    return [t for t in TOPICS.values() if not t.upstream and not isinstance(t, PayloadTopic)]


# RFC 3339 date-time (JSON Schema's "date-time"). jsonschema checks that format only with the optional
# rfc3339-validator installed, which the platform's lock does not carry: the same rule, here.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_date_time(text: object) -> bool:
    if not isinstance(text, str):
        return True  # a format constrains strings only; the type keyword speaks for the rest
    if _RFC3339.match(text) is None:
        return False
    datetime.fromisoformat(text.upper())  # ValueError on a month 13, a day 32, an hour 24
    return True


def format_checker() -> FormatChecker:
    checker = FormatChecker()
    checker.checks("date-time", raises=ValueError)(_rfc3339_date_time)
    return checker


def describe(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(the value)"
    text = f"{where}: {error.message}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


@dataclass(frozen=True)
class RecordChecker:
    """One topic's published schema, and the JSON property that must equal the record key."""

    topic: str
    validator: Draft202012Validator
    key_property: str

    @classmethod
    def for_topic(cls, topic: Topic, schemas_dir: Path = SCHEMAS_DIR) -> RecordChecker:
        # Closed: readers may ignore fields they do not know, but the platform writes exactly its version's.
        schema = closed_schema(json.loads((schemas_dir / f"{topic.name}.schema.json").read_text()))
        Draft202012Validator.check_schema(schema)
        key = schema["x-topic"]["key"]
        properties = schema.get("properties", {})
        if key not in properties:  # a camelCase topic (audit.records): the key field's name on the wire
            model_field = getattr(topic.value_type, "model_fields", {}).get(key)
            key = (model_field and (model_field.serialization_alias or model_field.alias)) or key
        assert key in properties, f"{topic.name}: key {key!r} is not a property of its schema"
        return cls(topic.name, Draft202012Validator(schema, format_checker=format_checker()), key)

    def check(self, key: bytes | None, value: bytes | None) -> str | None:
        """The first thing wrong with the record (None: it is what the contract says)."""
        if not value:
            return "the record has no value"
        try:
            document = json.loads(value)
        except ValueError as error:  # UnicodeDecodeError is a ValueError
            return f"not UTF-8 JSON: {error}"
        if not self.validator.is_valid(document):
            first = best_match(self.validator.iter_errors(document))
            assert first is not None
            return describe(first)
        expected = document[self.key_property]  # required by the schema
        if not isinstance(expected, str) or key != expected.encode():
            return f"record key {key!r} is not the value's {self.key_property} {expected!r}"
        return None


def marked_bad_input(headers: Sequence[tuple[str, str | bytes | None]] | None) -> bool:
    return BAD_INPUT_HEADER in (headers or [])


@dataclass(frozen=True)
class WrittenRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None


@dataclass(frozen=True)
class Violation:
    topic: str
    partition: int
    offset: int
    error: str

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}: {self.error}"


@dataclass
class Report:
    label: str
    validated: Counter[str] = field(default_factory=Counter)
    exempted: Counter[str] = field(default_factory=Counter)  # marked bad input
    violations: list[Violation] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)  # partitions not read to their end in time
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(self.violations or self.unread)

    def summary(self) -> str:
        total = sum(self.validated.values())
        per_topic = ", ".join(f"{topic} {n:,}" for topic, n in sorted(self.validated.items()))
        text = f"{self.label}: {total:,} records validated in {self.seconds:.1f} s ({per_topic or 'none'})"
        if self.exempted:
            text += "; exempt as marked bad input: " + ", ".join(f"{t} {n}" for t, n in sorted(self.exempted.items()))
        if self.failed:
            text += f"; {len(self.violations):,} invalid, {len(self.unread)} partitions unread"
        return text

    def failure_text(self) -> str:
        lines = [
            f"Records on the platform's topics ({self.label}) do not match the published JSON Schemas "
            "(contracts/schemas/<topic>.schema.json, jsonschema Draft 2020-12 with formats) — topic[partition]@offset: "
            "first error:"
        ]
        by_topic: dict[str, list[Violation]] = {}
        for violation in self.violations:
            by_topic.setdefault(violation.topic, []).append(violation)
        for topic, violations in sorted(by_topic.items()):
            lines += [f"  {v}" for v in violations[:LISTED_PER_TOPIC]]
            if len(violations) > LISTED_PER_TOPIC:
                lines.append(f"  … and {len(violations) - LISTED_PER_TOPIC:,} more invalid records on {topic}")
        lines += [f"  not read to its end within {READ_TIMEOUT_S:.0f} s: {p}" for p in self.unread]
        return "\n".join(lines)


def end_offsets(bootstrap: str, timeout_s: float = 30.0) -> dict[tuple[str, int], int]:
    """The current end of every checked topic's partitions (a topic not made yet: absent, so read from 0)."""
    consumer = _consumer(bootstrap)
    try:
        marks = _watermarks(consumer, [t.name for t in checked_topics()], timeout_s)
        return {where: high for where, (_low, high) in marks.items()}
    finally:
        consumer.close()


def read_records(
    bootstrap: str, topics: list[str], start: Offsets | None = None, timeout_s: float = READ_TIMEOUT_S
) -> Iterator[WrittenRecord | str]:
    """Every record of `topics` from `start` (default: the beginning) to the end they have now; a partition not
    read to its end in `timeout_s` is yielded as its name."""
    consumer = _consumer(bootstrap)
    try:
        pending: dict[tuple[str, int], int] = {}  # partition -> its end offset
        assignment = []
        for (topic, partition), (low, high) in _watermarks(consumer, topics, 30.0).items():
            begin = max(low, (start or {}).get((topic, partition), 0))
            if begin < high:
                pending[(topic, partition)] = high
                assignment.append(TopicPartition(topic, partition, begin))
        if assignment:
            consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=1.0)
            for msg in batch:
                topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
                where = (topic, partition)
                if msg.error() or where not in pending or offset >= pending[where]:
                    continue
                raw = msg.headers() or []
                pairs = raw.items() if isinstance(raw, dict) else raw
                headers = [(k, v if isinstance(v, bytes) else b"") for k, v in pairs]
                yield WrittenRecord(topic, partition, offset, msg.key(), msg.value(), headers)
                if offset >= pending[where] - 1:
                    del pending[where]
            if not batch:  # the last offsets may be no record (a transaction marker, compacted away)
                for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                    if tp.offset >= pending[(tp.topic, tp.partition)]:
                        del pending[(tp.topic, tp.partition)]
        yield from (f"{topic}[{partition}]" for topic, partition in sorted(pending))
    finally:
        consumer.close()


def check_cluster(bootstrap: str, label: str, start: Offsets | None = None) -> Report:
    started = time.monotonic()
    checkers = {t.name: RecordChecker.for_topic(t) for t in checked_topics()}
    report = Report(label)
    for record in read_records(bootstrap, list(checkers), start):
        if isinstance(record, str):
            report.unread.append(record)
        elif marked_bad_input(record.headers):
            report.exempted[record.topic] += 1
        else:
            report.validated[record.topic] += 1
            error = checkers[record.topic].check(record.key, record.value)
            if error is not None:
                report.violations.append(Violation(record.topic, record.partition, record.offset, error))
    report.seconds = time.monotonic() - started
    return report


REPORTS: list[Report] = []  # this session's, for the terminal summary


def verify(bootstrap: str, label: str, start: Offsets | None = None) -> Report:
    """Check the cluster and fail (as a pytest failure listing the records) if any record breaks its schema."""
    report = check_cluster(bootstrap, label, start)
    REPORTS.append(report)
    if report.failed:
        pytest.fail(report.failure_text(), pytrace=False)
    return report


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "nexus-test-schema-check",  # never commits: assign() and no auto commit
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
        }
    )


def _watermarks(consumer: Consumer, topics: list[str], timeout_s: float) -> dict[tuple[str, int], tuple[int, int]]:
    existing = consumer.list_topics(timeout=timeout_s).topics
    marks: dict[tuple[str, int], tuple[int, int]] = {}
    for topic in topics:
        if topic not in existing:
            continue
        for partition in existing[topic].partitions:
            marks[(topic, partition)] = watermarks(consumer, topic, partition, timeout_s)
    return marks
