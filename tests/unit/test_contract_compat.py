"""The compatibility policy (contracts/COMPATIBILITY.md), enforced: the current schemas against the last released
set, and the checker proven to catch each kind of breaking change on synthetic schema pairs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts import compat
from contracts.topics import schema_documents

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
Schema = dict[str, Any]


def current() -> dict[str, Schema]:
    return compat.load_set(SCHEMA_DIR)


def test_the_contract_has_a_released_set_and_a_semantic_version() -> None:
    version = compat.contract_version()
    released = compat.released_versions()
    assert released, "no released schema set: run `python -m contracts release`"
    assert compat.parse_version(version) >= compat.parse_version(released[-1])


def test_no_breaking_change_since_the_last_release_without_a_major_version() -> None:
    last = compat.released_versions()[-1]
    issues = compat.breaking_changes(compat.load_set(compat.RELEASED_DIR / last), current())
    if compat.parse_version(compat.contract_version())[0] > compat.parse_version(last)[0]:
        pytest.skip(f"major version {compat.contract_version()} after {last}: breaking changes allowed")
    assert issues == [], "breaking changes (see contracts/COMPATIBILITY.md)"


def test_a_schema_change_needs_a_new_version() -> None:
    """While VERSION names a released set, the schemas are that set: a change needs a version bump (and a cut)."""
    version = compat.contract_version()
    if version not in compat.released_versions():
        pytest.skip(f"{version} is not released yet")
    released = {p.name: p.read_text() for p in (compat.RELEASED_DIR / version).glob("*.schema.json")}
    assert released == schema_documents(), (
        f"the schemas differ from released {version}: bump contracts/VERSION (minor: additive; major: breaking) "
        "and run `python -m contracts release`"
    )


def test_release_is_rerunnable(tmp_path: Path) -> None:
    documents = {"a.schema.json": "{}\n", "b.schema.json": '{"type": "object"}\n'}
    compat.release(documents, "2.1.0", tmp_path)
    compat.release({"a.schema.json": "{}\n"}, "2.1.0", tmp_path)  # re-cut: replaced, not merged
    assert sorted(p.name for p in (tmp_path / "2.1.0").iterdir()) == ["a.schema.json"]
    compat.release(documents, "2.0.0", tmp_path)
    assert compat.released_versions(tmp_path) == ["2.0.0", "2.1.0"]
    with pytest.raises(ValueError, match="semantic version"):
        compat.release(documents, "2.1", tmp_path)


def test_the_current_schemas_are_compatible_with_themselves() -> None:
    assert compat.breaking_changes(current(), current()) == []


# ----------------------------------------------------------------------------- synthetic pairs


def topic(upstream: bool, **extra: Any) -> Schema:
    """A topic schema in the published shape: an order-like upstream message or an answer."""
    schema: Schema = {
        "$defs": {
            "Side": {"enum": ["BUY", "SELL"], "type": "string"},
            "Submit": {
                "properties": {"type": {"const": "SUBMIT", "type": "string"}, "id": {"type": "string"}},
                "required": ["type", "id"],
                "type": "object",
            },
            "Cancel": {
                "properties": {"type": {"const": "CANCEL", "type": "string"}, "id": {"type": "string"}},
                "required": ["type", "id"],
                "type": "object",
            },
        },
        "properties": {
            "id": {"maxLength": 128, "minLength": 1, "pattern": "^[a-z]+$", "type": "string"},
            "amount": {"exclusiveMinimum": 0, "maximum": 1000, "type": "integer"},
            "side": {"$ref": "#/$defs/Side"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "at": {"format": "date-time", "type": "string"},
            "command": {"oneOf": [{"$ref": "#/$defs/Submit"}, {"$ref": "#/$defs/Cancel"}]},
        },
        "required": ["id", "amount", "side", "at", "command"],
        "type": "object",
        "x-topic": {"key": "id", "upstream": upstream},
    }
    if upstream:
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def props(s: Schema) -> Schema:
    return s["properties"]  # type: ignore[no-any-return]


def add_required(s: Schema, name: str) -> None:
    props(s)[name] = {"type": "string"}
    s["required"].append(name)


def make_nullable(s: Schema, name: str) -> None:
    props(s)[name] = {"anyOf": [props(s)[name], {"type": "null"}]}


def add_member(s: Schema) -> None:
    s["$defs"]["Amend"] = copy.deepcopy(s["$defs"]["Cancel"])
    props(s)["command"]["oneOf"].append({"$ref": "#/$defs/Amend"})


def close(s: Schema) -> None:
    s["$defs"]["Submit"]["additionalProperties"] = False


Change = Callable[[Schema], None]
UPSTREAM_BREAKING: list[tuple[str, Change, str]] = [
    ("property removed", lambda s: props(s).pop("note"), "property 'note' removed"),
    ("property retyped", lambda s: props(s)["amount"].update(type="string"), "retyped"),
    ("new required field", lambda s: add_required(s, "extra"), "'extra' is now required"),
    ("optional made required", lambda s: s["required"].append("note"), "'note' is now required"),
    ("enum shrunk", lambda s: s["$defs"]["Side"].update(enum=["BUY"]), "enum no longer accepts ['SELL']"),
    ("enum introduced", lambda s: props(s)["id"].update(enum=["a"]), "enum no longer accepts"),
    ("minimum raised", lambda s: props(s)["amount"].update(exclusiveMinimum=10), "lower bound tightened"),
    ("maximum lowered", lambda s: props(s)["amount"].update(maximum=999), "upper bound tightened"),
    ("maxLength added", lambda s: props(s)["note"]["anyOf"][0].update(maxLength=9), "upper length bound tightened"),
    ("maxLength lowered", lambda s: props(s)["id"].update(maxLength=64), "upper length bound tightened"),
    ("minLength raised", lambda s: props(s)["id"].update(minLength=2), "lower length bound tightened"),
    ("pattern changed", lambda s: props(s)["id"].update(pattern="^[a-z0-9]+$"), "pattern changed"),
    ("pattern added", lambda s: props(s)["note"]["anyOf"][0].update(pattern="^x"), "pattern added"),
    ("format added", lambda s: props(s)["note"]["anyOf"][0].update(format="email"), "format added"),
    ("closed to other properties", close, "no longer accepts other properties"),
    ("union member removed", lambda s: props(s)["command"]["oneOf"].pop(), "no longer accepts Cancel"),
    ("null no longer accepted", lambda s: props(s).update(note={"type": "string"}), "no longer accepts null"),
    ("const changed", lambda s: s["$defs"]["Submit"]["properties"]["type"].update(const="NEW"), "const changed"),
]  # fmt: skip
ANSWER_BREAKING: list[tuple[str, Change, str]] = [
    ("property removed", lambda s: props(s).pop("note"), "property 'note' removed"),
    ("property retyped", lambda s: props(s)["amount"].update(type="string"), "retyped"),
    ("no longer always present", lambda s: s["required"].remove("amount"), "'amount' is no longer always present"),
    ("new required field", lambda s: add_required(s, "extra"), "new field 'extra' is required"),
    ("may now be null", lambda s: make_nullable(s, "amount"), "may now carry null"),
    ("maximum raised", lambda s: props(s)["amount"].update(maximum=2000), "upper bound widened"),
    ("minimum dropped", lambda s: props(s)["amount"].pop("exclusiveMinimum"), "lower bound widened"),
    ("maxLength raised", lambda s: props(s)["id"].update(maxLength=256), "upper length bound widened"),
    ("pattern dropped", lambda s: props(s)["id"].pop("pattern"), "pattern dropped"),
    ("format changed", lambda s: props(s)["at"].update(format="date"), "format changed"),
    ("enum dropped", lambda s: s["$defs"]["Side"].pop("enum"), "no longer restricted"),
    ("union member added", add_member, "may now carry Amend"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"), [c[1:] for c in UPSTREAM_BREAKING], ids=[c[0] for c in UPSTREAM_BREAKING]
)
def test_the_checker_catches_each_breaking_change_to_an_upstream_topic(change: Change, expected: str) -> None:
    old = topic(upstream=True)
    new = copy.deepcopy(old)
    change(new)
    issues = compat.breaking_changes({"t": old}, {"t": new})
    assert any(expected in issue for issue in issues), issues


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in ANSWER_BREAKING], ids=[c[0] for c in ANSWER_BREAKING])
def test_the_checker_catches_each_breaking_change_to_an_answer_topic(change: Change, expected: str) -> None:
    old = topic(upstream=False)
    new = copy.deepcopy(old)
    change(new)
    issues = compat.breaking_changes({"t": old}, {"t": new})
    assert any(expected in issue for issue in issues), issues


UPSTREAM_ALLOWED: list[tuple[str, Change]] = [
    ("new optional field", lambda s: props(s).update(extra={"type": "string"})),
    ("enum grown", lambda s: s["$defs"]["Side"].update(enum=["BUY", "SELL", "HOLD"])),
    ("maximum raised", lambda s: props(s)["amount"].update(maximum=2000)),
    ("minimum lowered", lambda s: props(s)["amount"].update(exclusiveMinimum=-1)),
    ("pattern dropped", lambda s: props(s)["id"].pop("pattern")),
    ("required dropped", lambda s: s["required"].remove("amount")),
    ("union member added", add_member),
    ("null accepted", lambda s: make_nullable(s, "amount")),
    ("description changed", lambda s: props(s)["id"].update(description="the id")),
]  # fmt: skip
ANSWER_ALLOWED: list[tuple[str, Change]] = [
    ("new optional field", lambda s: props(s).update(extra={"type": "string"})),
    ("new reason code", lambda s: s["$defs"]["Side"].update(enum=["BUY", "SELL", "HOLD"])),
    ("maximum lowered", lambda s: props(s)["amount"].update(maximum=999)),
    ("optional made always present", lambda s: s["required"].append("note")),
    ("null no longer written", lambda s: props(s).update(note={"type": "string"})),
    ("pattern added", lambda s: props(s)["note"]["anyOf"][0].update(pattern="^x")),
]  # fmt: skip


@pytest.mark.parametrize("change", [c[1] for c in UPSTREAM_ALLOWED], ids=[c[0] for c in UPSTREAM_ALLOWED])
def test_loosening_an_upstream_topic_is_allowed(change: Change) -> None:
    old = topic(upstream=True)
    new = copy.deepcopy(old)
    change(new)
    assert compat.breaking_changes({"t": old}, {"t": new}) == []


@pytest.mark.parametrize("change", [c[1] for c in ANSWER_ALLOWED], ids=[c[0] for c in ANSWER_ALLOWED])
def test_adding_to_an_answer_topic_is_allowed(change: Change) -> None:
    old = topic(upstream=False)
    new = copy.deepcopy(old)
    change(new)
    assert compat.breaking_changes({"t": old}, {"t": new}) == []


def test_topic_level_breaks() -> None:
    old = {"t": topic(upstream=True), "u": topic(upstream=False)}
    assert compat.breaking_changes(old, {"u": old["u"]}) == ["t: topic removed"]
    assert compat.breaking_changes(old, {**old, "v": topic(upstream=False)}) == []  # a new topic is additive
    rekeyed = copy.deepcopy(old["t"])
    rekeyed["x-topic"]["key"] = "amount"
    assert compat.breaking_changes(old, {**old, "t": rekeyed}) == ["t: key changed from 'id' to 'amount'"]
    flipped = topic(upstream=False)
    assert "changed who produces it" in compat.breaking_changes(old, {**old, "t": flipped})[0]


def test_a_real_loosening_and_a_real_tightening_of_the_published_orders() -> None:
    old = current()
    looser, tighter = copy.deepcopy(old), copy.deepcopy(old)
    looser["energy.orders"]["$defs"]["SubmitOrder"]["properties"]["memo"] = {"type": "string"}
    tighter["energy.orders"]["$defs"]["SubmitOrder"]["properties"]["quantity_wh"]["maximum"] = 10**9
    assert compat.breaking_changes(old, looser) == []
    assert compat.breaking_changes(old, tighter) == [
        "energy.orders: quantity_wh: upper bound tightened: 1000000000000 -> 1000000000"
    ]
