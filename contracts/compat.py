"""The contract's version, its released schema sets, and the check that a change keeps the compatibility policy.

Policy (contracts/COMPATIBILITY.md): a topic upstream systems produce may only *loosen* (everything a producer
could send before is still accepted); a topic the platform writes may only *add* optional fields (everything a
consumer could rely on before still holds). `breaking_changes` finds what breaks either rule between two sets
of published schemas; tests/unit/test_contract_compat.py runs it against the last released set.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
VERSION_FILE = HERE / "VERSION"
RELEASED_DIR = HERE / "released"
_SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")

Schema = dict[str, Any]


def parse_version(text: str) -> tuple[int, int, int]:
    match = _SEMVER.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a semantic version MAJOR.MINOR.PATCH")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def contract_version() -> str:
    text = VERSION_FILE.read_text().strip()
    parse_version(text)
    return text


def released_versions(root: Path = RELEASED_DIR) -> list[str]:
    """The released versions, oldest first."""
    found = [p.name for p in root.iterdir() if p.is_dir() and _SEMVER.match(p.name)] if root.exists() else []
    return sorted(found, key=parse_version)


def load_set(directory: Path) -> dict[str, Schema]:
    """Topic name -> schema, from a directory of `<topic>.schema.json` files."""
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in directory.glob("*.schema.json")}


def release(documents: Mapping[str, str], version: str, root: Path = RELEASED_DIR) -> Path:
    """Write the schema set of `version` (rerunnable: the directory is replaced by the current documents).

    Only the version in contracts/VERSION is cut; a version already merged is never cut again (the policy's
    promise), which is why the command takes no version argument.
    """
    parse_version(version)
    target = root / version
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name, text in documents.items():
        (target / name).write_text(text)
    return target


# ----------------------------------------------------------------------------- the compatibility check


@dataclass(frozen=True)
class Alternative:
    label: str  # the $defs name it came from, else its JSON type (or "const:<value>")
    node: Schema


class _Walk:
    """Compares an old and a new schema of one topic; `upstream` selects the producers' rule, else the readers'."""

    def __init__(self, topic: str, old_root: Schema, new_root: Schema, upstream: bool) -> None:
        self.topic = topic
        self.old_root, self.new_root = old_root, new_root
        self.upstream = upstream
        self.issues: list[str] = []
        self._seen: set[tuple[int, int]] = set()

    def issue(self, path: str, text: str) -> None:
        self.issues.append(f"{self.topic}: {path or '<value>'}: {text}")

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        if (id(old), id(new)) in self._seen:
            return
        self._seen.add((id(old), id(new)))
        olds = {a.label: a.node for a in alternatives(old, self.old_root)}
        news = {a.label: a.node for a in alternatives(new, self.new_root)}
        if len(olds) == len(news) == 1 and olds.keys() != news.keys():
            self.issue(path, f"retyped from {next(iter(olds))} to {next(iter(news))}")
            return
        # Producers: whatever shape was accepted still is. Readers: no shape appears that they never saw.
        must_keep, may_not_add = (olds, news) if self.upstream else (news, olds)
        for label in must_keep:
            if label not in may_not_add:
                verb = "no longer accepts" if self.upstream else "may now carry"
                self.issue(path, f"{verb} {label}")
        for label in olds.keys() & news.keys():
            self.compare_one(olds[label], news[label], path)

    def compare_one(self, old: Schema, new: Schema, path: str) -> None:
        if old.get("type") != new.get("type") and "type" in old and "type" in new:
            self.issue(path, f"retyped from {old['type']} to {new['type']}")
            return
        if ("const" in old or "const" in new) and old.get("const") != new.get("const"):
            self.issue(path, f"const changed from {old.get('const')!r} to {new.get('const')!r}")
        self.compare_enum(old, new, path)
        for low, high, what in (
            ("minimum", "maximum", ""),
            ("minLength", "maxLength", "length "),
            ("minItems", "maxItems", "items "),
        ):
            self.compare_range(_range(old, low, high), _range(new, low, high), path, what)
        for keyword in ("pattern", "format", "formatMinimum"):
            self.compare_keyword(old, new, path, keyword)
        self.compare_object(old, new, path)
        for keyword in ("items", "propertyNames"):
            if isinstance(old.get(keyword), dict) and isinstance(new.get(keyword), dict):
                self.compare(old[keyword], new[keyword], f"{path}[{keyword}]")
        if isinstance(old.get("additionalProperties"), dict) and isinstance(new.get("additionalProperties"), dict):
            self.compare(old["additionalProperties"], new["additionalProperties"], f"{path}{{*}}")

    def compare_enum(self, old: Schema, new: Schema, path: str) -> None:
        old_enum, new_enum = old.get("enum"), new.get("enum")
        if self.upstream:
            if new_enum is not None and (old_enum is None or set(old_enum) - set(new_enum)):
                gone = sorted(set(old_enum or []) - set(new_enum)) or "values outside the new list"
                self.issue(path, f"enum no longer accepts {gone}")
        elif old_enum is not None and new_enum is None:
            self.issue(path, "is no longer restricted to a list of values")
        # A value added to an answer's enum (a new reason code, status, rail) is a minor change: readers treat a
        # value they do not know as the policy says.

    def compare_range(self, old: tuple[Any, Any], new: tuple[Any, Any], path: str, what: str) -> None:
        (old_low, old_high), (new_low, new_high) = old, new
        # Producers: the new range must contain the old. Readers: the old range must contain the new.
        inner_low, outer_low = (old_low, new_low) if self.upstream else (new_low, old_low)
        inner_high, outer_high = (old_high, new_high) if self.upstream else (new_high, old_high)
        word = "tightened" if self.upstream else "widened"
        if outer_low is not None and (inner_low is None or outer_low > inner_low):
            self.issue(path, f"lower {what}bound {word}: {old_low} -> {new_low}")
        if outer_high is not None and (inner_high is None or outer_high < inner_high):
            self.issue(path, f"upper {what}bound {word}: {old_high} -> {new_high}")

    def compare_keyword(self, old: Schema, new: Schema, path: str, keyword: str) -> None:
        before, after = old.get(keyword), new.get(keyword)
        if before == after:
            return
        # A constraint cannot be proved looser than another: a changed one breaks. Dropping one only loosens
        # (fine for producers), adding one only tightens (fine for readers).
        if self.upstream and after is not None:
            self.issue(path, f"{keyword} {'added' if before is None else 'changed'}: {after!r}")
        if not self.upstream and before is not None:
            self.issue(path, f"{keyword} {'dropped' if after is None else 'changed'}: {after!r}")

    def compare_object(self, old: Schema, new: Schema, path: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        for name in old_props:
            if name not in new_props:
                self.issue(path, f"property {name!r} removed")
        for name in old_props.keys() & new_props.keys():
            self.compare(old_props[name], new_props[name], f"{path}.{name}" if path else name)
        if self.upstream:
            for name in sorted(new_required - old_required):
                self.issue(path, f"{name!r} is now required")
            closed = old.get("additionalProperties") is not False and new.get("additionalProperties") is False
            if closed and ("properties" in old or "properties" in new):
                self.issue(path, "no longer accepts other properties")
        else:
            for name in sorted(old_required - new_required):
                self.issue(path, f"{name!r} is no longer always present")
            for name in sorted(new_required - old_props.keys()):
                self.issue(path, f"new field {name!r} is required (new fields must be optional)")


def _range(node: Schema, low_key: str, high_key: str) -> tuple[Any, Any]:
    """Inclusive (low, high) of a node; exclusive integer bounds moved in by one."""
    low, high = node.get(low_key), node.get(high_key)
    if low_key == "minimum" and "exclusiveMinimum" in node:
        bound = node["exclusiveMinimum"] + 1
        low = bound if low is None else max(low, bound)
    if high_key == "maximum" and "exclusiveMaximum" in node:
        bound = node["exclusiveMaximum"] - 1
        high = bound if high is None else min(high, bound)
    return low, high


def resolve(node: Schema, root: Schema) -> tuple[str | None, Schema]:
    """Follow `$ref`s into the root's `$defs`; returns the last definition name and the node."""
    name = None
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = root["$defs"][name]
    return name, node


def alternatives(node: Schema, root: Schema) -> Iterator[Alternative]:
    """The shapes a node admits: its `anyOf` / `oneOf` options (flattened), each labelled, else itself."""
    name, node = resolve(node, root)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        for option in options:
            yield from alternatives(option, root)
        return
    if name is not None:
        yield Alternative(name, node)
    elif "const" in node and "type" not in node:
        yield Alternative(f"const:{node['const']!r}", node)
    elif isinstance(node.get("type"), list):
        for kind in node["type"]:
            yield Alternative(kind, {**node, "type": kind})
    else:
        yield Alternative(str(node.get("type", "any")), node)


def breaking_changes(old: Mapping[str, Schema], new: Mapping[str, Schema]) -> list[str]:
    """Every change from `old` to `new` (topic -> published schema) that breaks the compatibility policy."""
    issues: list[str] = []
    for topic in sorted(old):
        if topic not in new:
            issues.append(f"{topic}: topic removed")
            continue
        before, after = old[topic], new[topic]
        meta_before, meta_after = before.get("x-topic", {}), after.get("x-topic", {})
        if meta_before.get("key") != meta_after.get("key"):
            issues.append(f"{topic}: key changed from {meta_before.get('key')!r} to {meta_after.get('key')!r}")
        if is_upstream(before) != is_upstream(after):
            issues.append(f"{topic}: changed who produces it (upstream {is_upstream(before)} -> {is_upstream(after)})")
            continue
        walk = _Walk(topic, before, after, is_upstream(before))
        walk.compare(before, after, "")
        issues.extend(walk.issues)
    return issues


def is_upstream(schema: Schema) -> bool:
    return bool(schema.get("x-topic", {}).get("upstream", False))
