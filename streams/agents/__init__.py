"""Agent modules; importing this package registers every agent on ``streams.app.app``."""

from __future__ import annotations

import importlib

AGENT_MODULES = (
    "streams.agents.matching",
    "streams.agents.settlement",
    "streams.agents.bridge",
    "streams.agents.alerting",
)


def load_agents(only: str = "") -> list[str]:
    """Import agent modules; `only` is a comma-separated list of short names ("matching,settlement")."""
    wanted = {f"streams.agents.{n.strip()}" for n in only.split(",") if n.strip()}
    unknown = wanted - set(AGENT_MODULES)
    if unknown:
        raise ValueError(
            f"unknown agents {sorted(unknown)}; choose from {[n.rsplit('.', 1)[1] for n in AGENT_MODULES]}"
        )
    loaded = []
    for name in AGENT_MODULES:
        if wanted and name not in wanted:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        loaded.append(name)
    return loaded
