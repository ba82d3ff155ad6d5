"""Alert rule engine (spec §5.2): windows, thresholds, fingerprints, firing/resolved transitions, dedupe.

Pure: standard library only, no I/O, and no clock — every call that depends on time takes ``now``.
The Faust agent (``streams/alerting/agent.py``) turns registry messages into *observations*, feeds
them in, calls ``evaluate(now)`` and ships what comes out to Alertmanager.

Rules come from a TOML file (``streams/alerting/rules.toml``) so a threshold, a window, a severity or
a channel changes without a code change. Two kinds of signal feed them:

* **samples** — one value at one event time (a settlement's duration, a failure, an FX quote). A
  windowed rule aggregates the samples whose time is inside ``(now - window, now]`` (later ones
  count too: producer clocks drift), per ``group_by`` labels: ``max``, ``count`` or ``spread``
  (``(max - min) / min``, for FX slippage).
* **entities** — a keyed fact with a reference time that can be replaced or removed (an HSM key and
  its expiry, a pending multi-sig request and its creation time). Each entity is its own alert:
  ``time_left`` = reference - now, ``age`` = now - reference. Updates carry a version; an older
  version never overwrites a newer one, so replays and bootstraps are idempotent.

An alert's identity is its ``fingerprint``: a hash of the rule name and its group labels (or the
entity key) — stable across restarts and processes. ``evaluate`` returns transitions (a newly
firing alert, a resolve when the condition clears) exactly once, plus *reposts*: alerts still
firing that have not been sent for ``repost_every`` (Alertmanager forgets an alert that is not
re-sent within its ``resolve_timeout``). Samples carrying an id are counted once per window, so an
at-least-once redelivery does not inflate a count.
"""

from __future__ import annotations

import hashlib
import operator
import re
import tomllib
from bisect import bisect_right, insort
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

# --------------------------------------------------------------------------------------------- vocabulary

SEVERITIES = ("info", "warning", "critical")
CHANNELS = ("slack", "pagerduty", "email", "sms")
ESCALATIONS = ("immediate", "L1", "L2", "L3")

Unit = Literal["duration", "ratio", "count", "rate"]
Kind = Literal["sample", "entity"]


@dataclass(frozen=True)
class Signal:
    """What the shell feeds the engine under one name; rules refer to it by that name."""

    name: str
    kind: Kind
    unit: Unit  # samples: the unit of the value; entities: "duration" (their reference is a time)
    labels: tuple[str, ...]
    description: str


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal(
            "settlement_duration",
            "sample",
            "duration",
            ("flow", "region", "currency", "rail"),
            "end-to-end duration of one completed settlement (bridge or P2P), in seconds",
        ),
        Signal(
            "settlement",
            "sample",
            "count",
            ("flow", "status", "region", "currency"),
            "one settlement attempt, completed or failed (volume)",
        ),
        Signal(
            "settlement_failed",
            "sample",
            "count",
            ("flow", "region", "currency", "phase", "reason_code", "rail"),
            "one failed settlement",
        ),
        Signal("fx_rate", "sample", "rate", ("pair", "source"), "one FX quote (value: the rate)"),
        Signal(
            "key_expiry",
            "entity",
            "duration",
            ("key_id", "key_label", "algorithm"),
            "an HSM key; reference time: when it expires",
        ),
        Signal(
            "multisig_pending",
            "entity",
            "duration",
            ("request_id", "required_signers", "signatures"),
            "a multi-sig request while PENDING; reference time: when it was created",
        ),
    )
}

# aggregate -> (signal kind it applies to, unit of its result; None = the signal's own unit)
AGGREGATES: dict[str, tuple[Kind, Unit | None]] = {
    "max": ("sample", None),
    "count": ("sample", "count"),
    "spread": ("sample", "ratio"),
    "age": ("entity", "duration"),
    "time_left": ("entity", "duration"),
}

OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class RuleConfigError(ValueError):
    """The rules file is wrong; the message names the rule and the field and says what is allowed."""


# --------------------------------------------------------------------------------------------- quantities

_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|%)?\s*$")


def parse_quantity(value: object) -> tuple[Decimal, Unit]:
    """``"1000ms"`` -> (1.000 s, duration), ``"0.5%"`` -> (0.005, ratio), ``5000`` -> (5000, count).

    Durations come back in seconds. A bare number is a count (or a rate, for FX rules).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | Decimal):
        return Decimal(value), "count"
    if not isinstance(value, str):
        raise ValueError(f"not a quantity: {value!r}")
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"not a quantity: {value!r} (examples: 1000ms, 2h, 7d, 0.5%, 5000)")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix is None:
        return number, "count"
    if suffix == "%":
        return number / 100, "ratio"
    return number * _DURATION_UNITS[suffix], "duration"


def parse_duration(value: object) -> Decimal:
    """A duration in seconds, e.g. ``"5m"`` -> 300."""
    amount, unit = parse_quantity(value)
    if unit != "duration":
        raise ValueError(f"not a duration: {value!r} (examples: 250ms, 30s, 5m, 2h, 7d)")
    return amount


def format_quantity(value: Decimal, unit: Unit) -> str:
    """Human text for a value: ``1001 ms``, ``2h 0m 1s``, ``0.51%``, ``5001``."""
    if unit == "duration":
        negative, seconds = value < 0, abs(value)
        if seconds < 10:
            text = f"{(seconds * 1000).quantize(Decimal(1))} ms"
        elif seconds < 60:
            text = f"{seconds.quantize(Decimal('0.1'))} s"
        else:
            whole = int(seconds)
            days, rest = divmod(whole, 86400)
            hours, rest = divmod(rest, 3600)
            minutes, secs = divmod(rest, 60)
            parts = [f"{days}d"] if days else []
            parts += [f"{hours}h", f"{minutes}m"] if days or hours else [f"{minutes}m"]
            parts += [] if days else [f"{secs}s"]
            text = " ".join(parts)
        return f"-{text}" if negative else text
    if unit == "ratio":
        return f"{(value * 100).quantize(Decimal('0.0001')).normalize():f}%"
    return f"{value.normalize():f}"


# --------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    name: str
    signal: str
    aggregate: str
    op: str
    threshold: Decimal
    unit: Unit
    window_s: Decimal | None  # windowed (sample) rules only
    group_by: tuple[str, ...]
    severity: str
    channel: str
    escalation: str
    summary: str
    threshold_text: str
    window_text: str
    detail_by: tuple[str, ...] = ()
    description: str = ""

    @property
    def kind(self) -> Kind:
        return SIGNALS[self.signal].kind

    def crosses(self, value: Decimal) -> bool:
        return OPS[self.op](value, self.threshold)


@dataclass(frozen=True)
class RulesConfig:
    rules: tuple[Rule, ...]
    evaluate_every_s: Decimal = Decimal(1)
    repost_every_s: Decimal = Decimal(60)

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RULE_KEYS = {
    "name",
    "signal",
    "aggregate",
    "op",
    "threshold",
    "window",
    "group_by",
    "severity",
    "channel",
    "escalation",
    "summary",
    "detail_by",
    "description",
}


def _rule(raw: Mapping[str, Any], index: int) -> Rule:
    where = f"rules[{index}]" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RuleConfigError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_RULE_KEYS))}"
        )
    name = _need(raw, where, "name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleConfigError(f"{where}: name must be an identifier such as SettlementDelay, got {name!r}")
    signal_name = _one_of(raw, where, "signal", SIGNALS)
    signal = SIGNALS[signal_name]
    aggregate = _one_of(raw, where, "aggregate", AGGREGATES)
    agg_kind, agg_unit = AGGREGATES[aggregate]
    if agg_kind != signal.kind:
        fitting = [a for a, (k, _) in AGGREGATES.items() if k == signal.kind]
        raise RuleConfigError(
            f"{where}: aggregate {aggregate!r} does not apply to {signal.kind} signal "
            f"{signal_name!r}; use one of {', '.join(fitting)}"
        )
    unit: Unit = agg_unit or signal.unit
    op = _one_of(raw, where, "op", OPS)
    raw_threshold = _need(raw, where, "threshold")
    threshold = _rule_threshold(raw_threshold, where, unit, f"{aggregate} of {signal_name}")
    window_s, window_text = _rule_window(raw, where, signal)
    group_by, detail_by = _rule_labels(raw, where, signal)
    summary = raw.get("summary", "{rule}: {value} (threshold {threshold})")
    if not isinstance(summary, str):
        raise RuleConfigError(f"{where}: summary must be a string")
    return Rule(
        name=name,
        signal=signal_name,
        aggregate=aggregate,
        op=op,
        threshold=threshold,
        unit=unit,
        window_s=window_s,
        group_by=group_by,
        severity=_one_of(raw, where, "severity", SEVERITIES),
        channel=_one_of(raw, where, "channel", CHANNELS),
        escalation=_one_of(raw, where, "escalation", ESCALATIONS),
        summary=summary,
        threshold_text=str(raw_threshold),
        window_text=window_text,
        detail_by=detail_by,
        description=str(raw.get("description", "")),
    )


def _need(raw: Mapping[str, Any], where: str, key: str) -> Any:
    if key not in raw:
        raise RuleConfigError(f"{where}: missing '{key}'")
    return raw[key]


def _one_of(raw: Mapping[str, Any], where: str, key: str, allowed: Iterable[str]) -> str:
    value = _need(raw, where, key)
    allowed = tuple(allowed)
    if value not in allowed:
        raise RuleConfigError(f"{where}: {key} = {value!r}; allowed: {', '.join(allowed)}")
    return str(value)


def _rule_threshold(raw_threshold: object, where: str, unit: Unit, measured: str) -> Decimal:
    """The threshold in the unit of what the rule measures (a bare number also passes as a rate)."""
    try:
        threshold, threshold_unit = parse_quantity(raw_threshold)
    except ValueError as exc:
        raise RuleConfigError(f"{where}: threshold: {exc}") from None
    if threshold_unit != unit and not (unit == "rate" and threshold_unit == "count"):
        example = {"duration": '"1000ms" or "2h"', "ratio": '"0.5%"', "count": "5000", "rate": '"1.25"'}[unit]
        raise RuleConfigError(
            f"{where}: threshold {raw_threshold!r} is a {threshold_unit} but {measured} is a {unit}; "
            f"write it like {example}"
        )
    return threshold


def _rule_window(raw: Mapping[str, Any], where: str, signal: Signal) -> tuple[Decimal | None, str]:
    """Sample rules need a positive window; entity rules must not have one."""
    if signal.kind == "sample":
        window_text = str(_need(raw, where, "window"))
        try:
            window_s = parse_duration(window_text)
        except ValueError as exc:
            raise RuleConfigError(f"{where}: window: {exc}") from None
        if window_s <= 0:
            raise RuleConfigError(f"{where}: window must be positive")
        return window_s, window_text
    if "window" in raw:
        raise RuleConfigError(f"{where}: entity rules have no window (each {signal.name} is judged on its own)")
    return None, ""


def _rule_labels(raw: Mapping[str, Any], where: str, signal: Signal) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(group_by, detail_by): labels the signal carries; entity rules are grouped by their key only."""
    group_by = tuple(raw.get("group_by", ()))
    detail_by = tuple(raw.get("detail_by", ()))
    for key, labels in (("group_by", group_by), ("detail_by", detail_by)):
        bad = [label for label in labels if label not in signal.labels]
        if bad:
            raise RuleConfigError(f"{where}: {key} {bad} not labels of {signal.name}; it has {list(signal.labels)}")
    if signal.kind == "entity" and group_by:
        raise RuleConfigError(f"{where}: entity rules are grouped by their key; remove group_by")
    return group_by, detail_by


def load_rules(text: str) -> RulesConfig:
    """Parse and validate a rules file (TOML text). Raises RuleConfigError naming what is wrong."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise RuleConfigError(f"rules file is not valid TOML: {exc}") from None
    unknown = set(data) - {"engine", "rules"}
    if unknown:
        raise RuleConfigError(f"unknown top-level table(s): {', '.join(sorted(unknown))}; expected [engine], [[rules]]")
    engine = data.get("engine", {})
    try:
        evaluate_every = parse_duration(engine.get("evaluate_every", "1s"))
        repost_every = parse_duration(engine.get("repost_every", "1m"))
    except ValueError as exc:
        raise RuleConfigError(f"[engine]: {exc}") from None
    raw_rules = data.get("rules", [])
    if not raw_rules:
        raise RuleConfigError("no [[rules]] defined")
    rules = tuple(_rule(raw, i) for i, raw in enumerate(raw_rules))
    names = [r.name for r in rules]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuleConfigError(f"duplicate rule name(s): {', '.join(sorted(duplicates))}")
    return RulesConfig(rules=rules, evaluate_every_s=evaluate_every, repost_every_s=repost_every)


# --------------------------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class Sample:
    """One value of a sample signal at an event time. ``id`` (optional) makes it count once per window."""

    signal: str
    at: datetime
    value: Decimal = Decimal(1)
    labels: Mapping[str, str] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Entity:
    """Upsert (``reference`` set) or removal (``reference`` None) of a keyed fact, at ``version``."""

    signal: str
    key: str
    version: datetime
    reference: datetime | None
    labels: Mapping[str, str] = field(default_factory=dict)


Observation = Sample | Entity


@dataclass(frozen=True)
class Notice:
    """An alert as the engine sees it: firing (``ends_at`` None) or resolved."""

    fingerprint: str
    rule: str
    firing: bool
    severity: str
    channel: str
    escalation: str
    labels: Mapping[str, str]
    value: str
    summary: str
    starts_at: datetime
    ends_at: datetime | None = None


@dataclass(frozen=True)
class Evaluation:
    changes: list[Notice]  # newly firing and newly resolved: send and record these
    reposts: list[Notice]  # still firing, not sent for repost_every: send again (keeps Alertmanager's copy alive)

    @property
    def to_send(self) -> list[Notice]:
        return self.changes + self.reposts


def fingerprint(rule: str, identity: Iterable[tuple[str, str]]) -> str:
    """Stable id of one alert: sha256 over the rule and its identity labels, first 16 hex digits."""
    text = rule + "\x1f" + "\x1f".join(f"{k}={v}" for k, v in sorted(identity))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- engine


@dataclass
class _Firing:
    notice: Notice
    last_sent: datetime


@dataclass
class _EntityState:
    version: datetime
    reference: datetime | None
    labels: Mapping[str, str]


class _SampleWindow:
    """Samples of one signal ordered by event time, deduplicated by id while retained."""

    def __init__(self) -> None:
        self._items: list[tuple[datetime, int, Sample]] = []
        self._ids: dict[str, datetime] = {}
        self._seq = 0

    def add(self, sample: Sample) -> bool:
        if sample.id is not None:
            if sample.id in self._ids:
                return False
            self._ids[sample.id] = sample.at
        self._seq += 1
        insort(self._items, (sample.at, self._seq, sample))
        return True

    def prune(self, cutoff: datetime) -> None:
        """Forget samples at or before ``cutoff`` (and their ids)."""
        cut = bisect_right(self._items, cutoff, key=lambda item: item[0])
        if cut:
            for _at, _seq, sample in self._items[:cut]:
                if sample.id is not None:
                    self._ids.pop(sample.id, None)
            del self._items[:cut]

    def since(self, cutoff: datetime) -> list[Sample]:
        """Samples strictly after ``cutoff``."""
        start = bisect_right(self._items, cutoff, key=lambda item: item[0])
        return [item[2] for item in self._items[start:]]

    def __len__(self) -> int:
        return len(self._items)


def _breakdown(samples: list[Sample], labels: tuple[str, ...], top: int = 3) -> str:
    parts = []
    for label in labels:
        counts = Counter(s.labels.get(label, "") for s in samples)
        shown = ", ".join(f"{value or '-'} {n}" for value, n in counts.most_common(top))
        more = f", +{len(counts) - top} more" if len(counts) > top else ""
        parts.append(f"{label}: {shown}{more}")
    return "; ".join(parts)


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"


class AlertEngine:
    """Holds windows, entities and firing alerts; ``observe`` and ``evaluate(now)`` are its whole API."""

    #: removed entities are remembered (to reject stale replays) for this long after their version
    TOMBSTONE_TTL = timedelta(days=30)

    def __init__(self, config: RulesConfig) -> None:
        self.config = config
        self._windows: dict[str, _SampleWindow] = {}
        self._retention: dict[str, timedelta] = {}
        for rule in config.rules:
            if rule.window_s is not None:
                span = timedelta(seconds=float(rule.window_s))
                self._retention[rule.signal] = max(self._retention.get(rule.signal, span), span)
        self._entities: dict[str, dict[str, _EntityState]] = {}
        self._firing: dict[str, _Firing] = {}
        self.observed = 0
        self.duplicates = 0

    # -- input

    def observe(self, observation: Observation) -> bool:
        """Take one observation; False if it was a duplicate, stale, or no rule uses its signal."""
        if isinstance(observation, Sample):
            if observation.signal not in self._retention:
                return False
            window = self._windows.setdefault(observation.signal, _SampleWindow())
            if not window.add(observation):
                self.duplicates += 1
                return False
            self.observed += 1
            return True
        entities = self._entities.setdefault(observation.signal, {})
        current = entities.get(observation.key)
        if current is not None and observation.version < current.version:
            self.duplicates += 1
            return False
        entities[observation.key] = _EntityState(observation.version, observation.reference, dict(observation.labels))
        self.observed += 1
        return True

    def observe_all(self, observations: Iterable[Observation]) -> int:
        return sum(1 for o in observations if self.observe(o))

    # -- evaluation

    def _sample_groups(self, rule: Rule, now: datetime) -> dict[tuple[str, ...], tuple[Decimal, list[Sample]]]:
        assert rule.window_s is not None
        window = self._windows.get(rule.signal)
        if window is None:
            return {}
        grouped: dict[tuple[str, ...], list[Sample]] = {}
        for sample in window.since(now - timedelta(seconds=float(rule.window_s))):
            grouped.setdefault(tuple(sample.labels.get(k, "") for k in rule.group_by), []).append(sample)
        out: dict[tuple[str, ...], tuple[Decimal, list[Sample]]] = {}
        for key, samples in grouped.items():
            if rule.aggregate == "count":
                value = Decimal(len(samples))
            elif rule.aggregate == "max":
                value = max(s.value for s in samples)
            else:  # spread
                low, high = min(s.value for s in samples), max(s.value for s in samples)
                if low <= 0:
                    continue
                value = (high - low) / low
            out[key] = (value, samples)
        return out

    def _evaluate_rule(self, rule: Rule, now: datetime) -> dict[str, tuple[dict[str, str], Decimal, str]]:
        """fingerprint -> (labels, value, details) for every group/entity whose condition holds."""
        crossing: dict[str, tuple[dict[str, str], Decimal, str]] = {}
        if rule.kind == "sample":
            for key, (value, samples) in self._sample_groups(rule, now).items():
                if rule.crosses(value):
                    labels = dict(zip(rule.group_by, key, strict=True))
                    details = _breakdown(samples, rule.detail_by) if rule.detail_by else ""
                    crossing[fingerprint(rule.name, labels.items())] = (labels, value, details)
            return crossing
        for entity_key, state in self._entities.get(rule.signal, {}).items():
            if state.reference is None:
                continue
            delta = (now - state.reference) if rule.aggregate == "age" else (state.reference - now)
            value = Decimal(str(delta.total_seconds()))
            if rule.crosses(value):
                crossing[fingerprint(rule.name, [("key", entity_key)])] = (dict(state.labels), value, "")
        return crossing

    def _notice(
        self, rule: Rule, fp: str, labels: dict[str, str], value: Decimal, details: str, starts_at: datetime
    ) -> Notice:
        value_text = format_quantity(value, rule.unit)
        fields = _Fields(labels)
        fields.update(
            rule=rule.name, value=value_text, threshold=rule.threshold_text, window=rule.window_text, details=details
        )
        summary = rule.summary.format_map(fields)
        if details and "{details}" not in rule.summary:
            summary = f"{summary} ({details})"
        return Notice(
            fingerprint=fp,
            rule=rule.name,
            firing=True,
            severity=rule.severity,
            channel=rule.channel,
            escalation=rule.escalation,
            labels={**labels, "escalation": rule.escalation},
            value=value_text,
            summary=summary,
            starts_at=starts_at,
        )

    def evaluate(self, now: datetime) -> Evaluation:
        """Judge every rule at ``now``: transitions (each exactly once) and reposts due."""
        self._prune(now)
        changes: list[Notice] = []
        reposts: list[Notice] = []
        repost_after = timedelta(seconds=float(self.config.repost_every_s))
        for rule in self.config.rules:
            crossing = self._evaluate_rule(rule, now)
            for fp, (labels, value, details) in crossing.items():
                current = self._firing.get(fp)
                if current is None:
                    notice = self._notice(rule, fp, labels, value, details, starts_at=now)
                    self._firing[fp] = _Firing(notice, last_sent=now)
                    changes.append(notice)
                    continue
                current.notice = self._notice(rule, fp, labels, value, details, starts_at=current.notice.starts_at)
                if now - current.last_sent >= repost_after:
                    current.last_sent = now
                    reposts.append(current.notice)
            for fp in [fp for fp, f in self._firing.items() if f.notice.rule == rule.name and fp not in crossing]:
                ended = self._firing.pop(fp).notice
                changes.append(replace(ended, firing=False, ends_at=now))
        return Evaluation(changes, reposts)

    def _prune(self, now: datetime) -> None:
        for signal, window in self._windows.items():
            window.prune(now - self._retention[signal])
        stale = now - self.TOMBSTONE_TTL
        for entities in self._entities.values():
            for key in [k for k, s in entities.items() if s.reference is None and s.version < stale]:
                del entities[key]

    # -- introspection

    def firing(self) -> list[Notice]:
        return [f.notice for f in self._firing.values()]

    def stats(self) -> dict[str, Any]:
        return {
            "observed": self.observed,
            "duplicates": self.duplicates,
            "window_samples": {s: len(w) for s, w in self._windows.items()},
            "entities": {s: sum(1 for e in es.values() if e.reference is not None) for s, es in self._entities.items()},
            "firing": sorted(f.notice.fingerprint for f in self._firing.values()),
        }


__all__ = [
    "AGGREGATES",
    "CHANNELS",
    "ESCALATIONS",
    "OPS",
    "SEVERITIES",
    "SIGNALS",
    "AlertEngine",
    "Entity",
    "Evaluation",
    "Notice",
    "Observation",
    "Rule",
    "RuleConfigError",
    "RulesConfig",
    "Sample",
    "Signal",
    "fingerprint",
    "format_quantity",
    "load_rules",
    "parse_duration",
    "parse_quantity",
]
