"""Start the Faust worker: create registry topics, load agents, run until SIGTERM/SIGINT.

python -m streams.worker            (settings from NEXUS_* environment)
"""

from __future__ import annotations

import importlib
import logging
import sys

from faust.worker import Worker

from streams.kafka.faust_app import app, settings
from streams.kafka.gc_policy import HeapPolicy
from streams.kafka.topic_admin import ensure_topics

# A role is the Faust agent module that runs it; NEXUS_AGENTS picks a subset (empty = every role).
AGENT_MODULES = {
    "matching": "streams.p2p.matching_agent",
    "settlement": "streams.p2p.ledger_agent",
    "bridge": "streams.bridge.agent",
    "alerting": "streams.alerting.agent",
}


def load_agents(only: str = "") -> list[str]:
    """Import (and so register) the agent modules of the roles in `only` ("matching,settlement"; empty = all)."""
    wanted = [n.strip() for n in only.split(",") if n.strip()] or list(AGENT_MODULES)
    unknown = sorted(set(wanted) - set(AGENT_MODULES))
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {sorted(AGENT_MODULES)}")
    loaded = [AGENT_MODULES[name] for name in AGENT_MODULES if name in wanted]
    for module in loaded:
        importlib.import_module(module)
    return loaded


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    created = ensure_topics(settings)
    if created:
        logging.info("created topics: %s", ", ".join(sorted(created)))
    agents = load_agents(settings.agents)
    logging.info("agents loaded: %s", ", ".join(agents) or "none")
    if settings.gc_freeze_interval_s:
        heap = HeapPolicy.from_settings(settings)

        async def collect_and_freeze() -> None:
            heap.tick()

        app.timer(settings.gc_freeze_interval_s, name="nexus.gc_policy")(collect_and_freeze)
        heap.start()
    worker = Worker(app, loglevel="INFO", redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
