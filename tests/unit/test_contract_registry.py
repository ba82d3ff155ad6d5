"""Who writes and who reads each topic (the registry's producers / consumers, the AsyncAPI operations) is what the
code does: each component's modules name exactly the topics declared for it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from contracts import topics as t
from contracts.topics import TOPICS, Component, Topic
from streams.p2p.processors import ROLES

ROOT = Path(__file__).resolve().parents[2]
# Where each platform component names the topics it writes or reads.
COMPONENT_MODULES: dict[Component, tuple[str, ...]] = {
    Component.MATCHING: ("streams/p2p/matching.py",),
    Component.LEDGER: ("streams/p2p/ledger.py",),
    Component.BRIDGE: (
        "streams/bridge/service.py",
        "streams/bridge/loop.py",
        "streams/bridge/agent.py",
        "streams/bridge/ledger_client.py",
        "streams/bridge/fx_listener.py",
        "streams/bridge/journal.py",
    ),
    Component.PAYOUTS: (
        "streams/payouts/service.py",
        "streams/payouts/loop.py",
        "streams/kyc/receiver.py",
        "streams/bridge/fx_listener.py",
    ),
    Component.NOTIFIER: ("streams/notifications/notifier.py", "streams/notifications/loop.py"),
    Component.SECURITY: ("streams/security/governance.py", "streams/security/keys.py", "streams/security/audit_log.py"),
    Component.MONITORING: ("streams/alerting/agent.py",),
    Component.DASHBOARD: ("dashboards/source.py",),
    Component.WAREHOUSE: ("warehouse/snapshot_loader.py", "warehouse/corrections.py", "warehouse/outbox.py"),
    Component.OPERATORS: ("streams/cli.py",),
    Component.API: ("streams/api/app.py", "streams/api/follower.py"),
    Component.STATUS: ("streams/status/observe.py",),
}
# The processors' roles: the input topic each shared driver consumes for a component.
ROLE_COMPONENT = {"matching": Component.MATCHING, "settlement": Component.LEDGER}
# Dead letters are written through streams.kafka.ingress by every component that validates its input.
DEAD_LETTER_TOPICS = {t.PLATFORM_DEADLETTERS.name, t.PLATFORM_DEADLETTER_PAYLOADS.name}
CONSTANT_OF: dict[str, str] = {
    name: value.name for name, value in vars(t).items() if isinstance(value, Topic) and name.isupper()
}


def named_topics(path: str) -> set[str]:
    """The registry topics a module names (by constant), except the whole registry (`TOPICS`)."""
    tree = ast.parse((ROOT / path).read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    return {CONSTANT_OF[name] for name in names if name in CONSTANT_OF}


def declared(component: Component) -> set[str]:
    return {x.name for x in TOPICS.values() if component in x.producers or component in x.consumers}


@pytest.mark.parametrize("component", list(COMPONENT_MODULES), ids=str)
def test_a_components_modules_name_the_topics_declared_for_it(component: Component) -> None:
    named = set().union(*(named_topics(path) for path in COMPONENT_MODULES[component]))
    named |= {topic.name for role, topic in ROLES.items() if ROLE_COMPONENT[role] is component}
    assert named - DEAD_LETTER_TOPICS == declared(component) - DEAD_LETTER_TOPICS


def writes_dead_letters(component: Component) -> bool:
    """Its modules write dead letters (the shared RecordProcessor does it for the processors' roles)."""
    if component in ROLE_COMPONENT.values():
        return "dead_letter_outputs" in (ROOT / "streams/kafka/processor.py").read_text()
    return any("dead_letter_outputs" in (ROOT / path).read_text() for path in COMPONENT_MODULES[component])


def test_the_components_that_write_dead_letters_are_declared() -> None:
    writers = {c for c in COMPONENT_MODULES if writes_dead_letters(c)}
    assert writers == {
        Component.MATCHING,
        Component.LEDGER,
        Component.BRIDGE,
        Component.PAYOUTS,
        Component.NOTIFIER,
        Component.SECURITY,
        Component.MONITORING,
    }
    for name in DEAD_LETTER_TOPICS:
        assert set(TOPICS[name].producers) == writers, name


def test_upstream_topics_are_the_ones_outside_systems_produce() -> None:
    for x in TOPICS.values():
        assert x.upstream == (Component.UPSTREAM in x.producers), x.name
        assert x.producers or x.consumers, f"{x.name}: nobody writes or reads it"


def test_dedup_fields_are_required_fields_of_the_value() -> None:
    """A consumer can always build a record's identity: every field of it is in every message of the topic."""
    for x in TOPICS.values():
        if isinstance(x, t.PayloadTopic):
            continue
        schema = x.json_schema()
        members = (
            [schema["$defs"][o["$ref"].rsplit("/", 1)[-1]] for o in schema["oneOf"]] if "oneOf" in schema else [schema]
        )
        for member in members:
            assert set(x.identity) <= set(member["required"]), (x.name, x.identity)
