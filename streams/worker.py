"""Start the Faust worker: create registry topics, load agents, run until SIGTERM/SIGINT.

python -m streams.worker            (settings from NEXUS_* environment)
"""

from __future__ import annotations

import logging
import sys

from faust.worker import Worker

from streams.agents import load_agents
from streams.app import app, settings
from streams.gc_policy import HeapPolicy
from streams.topic_admin import ensure_topics


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
