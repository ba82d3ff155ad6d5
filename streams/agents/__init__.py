"""Agent modules; importing this package registers every agent on ``streams.app.app``."""

from __future__ import annotations

import importlib

AGENT_MODULES = (
    "streams.agents.matching",
    "streams.agents.settlement",
    "streams.agents.bridge",
    "streams.agents.alerting",
)


def load_agents() -> list[str]:
    loaded = []
    for name in AGENT_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        loaded.append(name)
    return loaded
