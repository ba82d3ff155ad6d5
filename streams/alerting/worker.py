"""Run a Faust worker with only the monitoring/alerting agent (``streams.alerting.agent``).

    python -m streams.alerting.worker        (settings from NEXUS_* environment, like streams.worker)

The all-in-one ``python -m streams.worker`` loads this agent too. A separate, single-replica
deployment keeps monitoring alive when settlement workers misbehave and gives the windowed rules
every partition (NEXUS_APP_ID must then differ from the settlement workers', e.g. nexus-alerting).
"""

from __future__ import annotations

import logging
import sys

from faust.worker import Worker


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from streams.kafka.faust_app import app, settings
    from streams.kafka.topic_admin import ensure_topics

    created = ensure_topics(settings)
    if created:
        logging.info("created topics: %s", ", ".join(sorted(created)))
    import streams.alerting.agent  # noqa: F401  (registers the agent, timers and web views)

    worker = Worker(app, loglevel="INFO", redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
