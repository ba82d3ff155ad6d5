"""The Faust worker's composition root: settings, topics, the app and the agents of the roles asked for.

python -m streams.worker            (settings from NEXUS_*; NEXUS_AGENTS picks roles, empty = all)
"""

from __future__ import annotations

import importlib
import logging
import sys

import faust
from faust.worker import Worker

from streams.kafka.faust_app import make_app
from streams.kafka.gc_policy import HeapPolicy
from streams.kafka.topic_admin import ensure_topics, replication
from streams.ops import health, logs
from streams.settings import Settings, get_settings, pick_roles

# A role is the "module:function" that adds its agents, timers and pages to the app: function(app, settings).
ROLE_MODULES = {
    "matching": "streams.p2p.agents:register_matching",
    "settlement": "streams.p2p.agents:register_settlement",
    "bridge": "streams.bridge.agent:register",
    "alerting": "streams.alerting.agent:register",
}


def roles_of(agents: str) -> list[str]:
    return pick_roles(agents, list(ROLE_MODULES), "Faust worker")


def bootstrap(settings: Settings, roles: list[str]) -> faust.App:
    """The app with the agents of `roles` registered (and the GC policy's timer)."""
    app = make_app(settings)
    for role in roles:
        module, function = ROLE_MODULES[role].split(":")
        getattr(importlib.import_module(module), function)(app, settings)
    if settings.gc_freeze_interval_s:
        heap = HeapPolicy.from_settings(settings)

        async def collect_and_freeze() -> None:
            heap.tick()

        app.timer(settings.gc_freeze_interval_s, name="nexus.gc_policy")(collect_and_freeze)
        heap.start()
    return app


def main(agents: str | None = None) -> int:
    settings = get_settings()
    logs.setup(settings)
    created = ensure_topics(settings)
    if created:
        logging.info("created topics: %s", ", ".join(sorted(created)))
    if settings.topic_replication_factor is None:  # Faust creates its own internal topics: as many copies as ours
        settings = settings.model_copy(update={"topic_replication_factor": replication(settings).factor})
    roles = roles_of(settings.agents if agents is None else agents)
    app = bootstrap(settings, roles)
    ops = health.start(settings, f"faust:{','.join(roles)}", [] if "alerting" in roles else [settings.app_id])

    async def heartbeat() -> None:  # the event loop's liveness: a blocked loop stops beating
        ops.beat()

    app.timer(1.0, name="nexus.ops.heartbeat")(heartbeat)
    logging.info("agents loaded: %s", ", ".join(roles))
    worker = Worker(app, loglevel="INFO", redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
