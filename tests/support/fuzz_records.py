"""Hypothesis strategies for upstream records: valid values built from the published JSON Schemas
(contracts/schemas/*.json, what producer teams read), and the mutations a careless or hostile producer sends.

`from_schema` covers the JSON Schema subset the contracts use ($ref, oneOf/anyOf, const, enum, object,
string with pattern/length/date-time, integer bounds, boolean, null, array). `overrides` replaces the
strategy of a property by name wherever it appears, so a test can draw ids and accounts from small pools and
make records meet each other (the same order, hold or account), which random ids almost never do.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from contracts.topics import Topic

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
Strategy = st.SearchStrategy[Any]

BASE_TIME = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (14, 0), (-14, 0), (5, 30), (-3, -30))]


@cache
def schema_text(topic_name: str) -> str:
    return (SCHEMA_DIR / f"{topic_name}.schema.json").read_text()


def schema_of(topic: Topic) -> dict[str, Any]:
    return json.loads(schema_text(topic.name))  # type: ignore[no-any-return]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# Any instant datetime can hold, in any offset a producer may use (the extremes are where conversions overflow).
any_timestamp: Strategy = st.builds(
    lambda naive, tz: iso(naive.replace(tzinfo=tz)),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
    st.sampled_from(OFFSETS),
)


def _utc_at_least(text: str, earliest: datetime) -> bool:
    try:
        return datetime.fromisoformat(text).astimezone(UTC) >= earliest
    except OverflowError:  # not an instant in UTC at all
        return False


# Around one trading morning, so orders meet, holds expire and commands order themselves in time.
near_timestamp: Strategy = st.builds(
    lambda seconds, tz: iso((BASE_TIME + timedelta(seconds=seconds)).astimezone(tz)),
    st.integers(-3_600, 3_600),
    st.sampled_from(OFFSETS[:1] * 3 + OFFSETS),
)


def _integer(node: dict[str, Any]) -> Strategy:
    low = node.get("minimum")
    if "exclusiveMinimum" in node:
        low = node["exclusiveMinimum"] + 1
    high = node.get("maximum")
    if "exclusiveMaximum" in node:
        high = node["exclusiveMaximum"] - 1
    edges = [v for v in (low, high) if v is not None]
    return st.one_of(st.integers(low, high), st.sampled_from(edges)) if edges else st.integers()


def _string(node: dict[str, Any]) -> Strategy:
    if node.get("format") == "date-time":
        earliest = datetime.fromisoformat(node.get("formatMinimum", "0001-01-01T00:00:00+00:00"))
        return any_timestamp.filter(lambda text: _utc_at_least(text, earliest))
    low, high = node.get("minLength", 0), node.get("maxLength")
    if "pattern" in node:
        pattern = node["pattern"]
        text = st.from_regex(pattern, fullmatch=True)
        return text.filter(lambda s: low <= len(s) <= (high if high is not None else len(s)))
    return st.text(min_size=low, max_size=high if high is not None else 40)


def from_schema(node: dict[str, Any], root: dict[str, Any], overrides: dict[str, Strategy] | None = None) -> Strategy:
    """Values valid under `node` (a JSON Schema in `root`), field strategies replaced by name from `overrides`."""
    overrides = overrides or {}
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: from_schema(root["$defs"][name], root, overrides))
    for union in ("oneOf", "anyOf"):
        if union in node:
            return st.one_of([from_schema(option, root, overrides) for option in node[union]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties")
        if properties is None:  # a map, e.g. labels
            values = from_schema(node.get("additionalProperties") or {"type": "string"}, root, overrides)
            return st.dictionaries(st.text(max_size=10), values, max_size=3)
        required = set(node.get("required", ()))

        def field(name: str, sub: dict[str, Any]) -> Strategy:
            return overrides[name] if name in overrides else from_schema(sub, root, overrides)

        # A discriminator (`const` with a default) is sent always: the platform needs it to pick the message.
        sent = {n for n, sub in properties.items() if n in required or "const" in sub}
        return st.fixed_dictionaries(
            {n: field(n, sub) for n, sub in properties.items() if n in sent},
            optional={n: field(n, sub) for n, sub in properties.items() if n not in sent},
        )
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return _integer(node)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(node.get("items", {}), root, overrides), max_size=min(node.get("maxItems", 3), 3))
    raise AssertionError(f"schema construct not covered: {sorted(node)}")


def valid_values(topic: Topic, overrides: dict[str, Strategy] | None = None) -> Strategy:
    schema = schema_of(topic)
    return from_schema(schema, schema, overrides)


# ----------------------------------------------------------------------------- mutations

# Text a producer's bug or an attacker may put in a string field.
NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x1b[31mred",
    "line\nbreak",
    "\u202eevil",  # right-to-left override
    "\u200b",  # zero-width space
    "a\u200db",  # zero-width joiner
    "\ufeffbom",
    "é",
    "e\u0301",  # combining accent
    "😀",
    "\U0010ffff",
    "x" * 129,
    "x" * 70_000,
    "null",
    "../../etc/passwd",
    "0.15",
    "1e400",
]
# Numbers at and beyond every bound: zero, negatives, 2^31/2^53/2^63/2^64 edges, 19+ digits, floats.
NASTY_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    -(2**63),
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**18,
    10**18 + 1,
    10**19,
    -(10**40),
    10**40,
    0.5,
    -0.0,
    1e308,
    True,
    False,
]
# JSON number tokens Python's json module writes but JSON does not allow, and edge spellings.
NUMBER_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0", b"1.0", b"1E2", b"0x10", b"01", b"9" * 4_400]
LEAVES: Strategy = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.sampled_from(NASTY_NUMBERS),
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
# Surrogates (lone halves), private-use and control characters: JSON escapes of text Python cannot encode as UTF-8.
ESCAPES = [b"\\ud800", b"\\udfff", b"\\udbff\\udfff", b"\\u0000", b"\\u001f", b"\\ue000", b"\\u202e", b"\\u200b"]
RAW_BYTES = [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00"]


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    """The bytes of `valid` damaged one way: a field dropped, added, retyped; the text broken; nesting, size."""
    names = sorted(valid)
    how = draw(
        st.sampled_from(
            [
                "drop",
                "extra",
                "retype",
                "token",
                "escape",
                "raw_bytes",
                "deep",
                "duplicate",
                "truncate",
                "wrap",
                "oversize",
            ]
        )
    )
    value = dict(valid)
    if how == "drop" and names:
        del value[draw(st.sampled_from(names))]
    elif how == "extra":
        value[draw(st.sampled_from(["colour", "", "TYPE", "amount", "__proto__", "\u202e"]))] = draw(LEAVES)
    elif how == "retype" and names:
        value[draw(st.sampled_from(names))] = draw(LEAVES)
    elif how == "deep" and names:
        levels = draw(st.sampled_from([2, 64, 255, 256, 1_000, 10_000]))
        field = draw(st.sampled_from(names))
        opener, core, closer = draw(st.sampled_from([(b"[", b"", b"]"), (b'{"a":', b"1", b"}")]))
        text = encode({**value, field: "@@"})
        return text.replace(b'"@@"', opener * levels + core + closer * levels, 1)
    elif names and how in ("token", "escape", "raw_bytes"):
        field = draw(st.sampled_from(names))
        text = encode({**value, field: "@@"})
        if how == "token":
            return text.replace(b'"@@"', draw(st.sampled_from(NUMBER_TOKENS)), 1)
        if how == "escape":
            return text.replace(b"@@", b"x" + draw(st.sampled_from(ESCAPES)), 1)
        return text.replace(b"@@", draw(st.sampled_from(RAW_BYTES)), 1)
    elif how == "duplicate" and names:
        field = draw(st.sampled_from(names))
        again = json.dumps({field: draw(st.one_of(LEAVES, st.just(value[field])))})[1:-1].encode()
        text = encode(value)
        return text[:-1] + b", " + again + b"}" if draw(st.booleans()) else b"{" + again + b", " + text[1:]
    elif how == "truncate":
        text = encode(value)
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif how == "wrap":
        return draw(st.sampled_from([encode([value]), encode(json.dumps(value)), b"null", b"true", b"0", b"[]", b'""']))
    elif how == "oversize":
        value["pad" if draw(st.booleans()) else draw(st.sampled_from(names or ["pad"]))] = "x" * draw(
            st.sampled_from([64 * 1024 - 200, 64 * 1024, 64 * 1024 + 1, 200_000])
        )
    return encode(value)


def wrong_key(valid: dict[str, Any], key_field: str) -> Strategy:
    """Keys a producer gets wrong: none, empty, another value's, differently encoded, with spaces."""
    right = str(valid.get(key_field, ""))
    return st.sampled_from(
        [None, b"", b"other", right.upper().encode(), (right + " ").encode(), right.encode("utf-16"), b"\xff"]
    ).filter(lambda k: k != right.encode())


@st.composite
def records(draw: st.DrawFn, topic: Topic, values: Strategy) -> tuple[bytes | None, bytes | None, str]:
    """(key, value, how it was made): mostly valid records, the rest damaged in value or key, or garbage."""
    valid = draw(values)
    right_key = str(valid.get(topic.key_field, "")).encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(["valid"] * 5 + ["mutated"] * 3 + ["wrong_key", "garbage"]))
    if kind == "valid":
        return right_key, encode(valid), kind
    if kind == "mutated":
        return right_key, draw(mutated(valid)), kind
    if kind == "wrong_key":
        return draw(wrong_key(valid, topic.key_field)), encode(valid), kind
    garbage = draw(st.one_of(st.binary(max_size=64), st.just(b""), st.none(), st.sampled_from(RAW_BYTES)))
    return right_key, garbage, kind
