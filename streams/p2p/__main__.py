"""The P2P market on the plain confluent-kafka runtime (the default runtime, see README "Runtimes").

python -m streams.p2p        (settings from NEXUS_*; NEXUS_AGENTS=matching or settlement runs one role)
"""

from __future__ import annotations

import sys

from streams.kafka import plain_driver
from streams.kafka.topic_admin import ensure_topics
from streams.p2p.processors import processors_for
from streams.settings import get_settings


def main() -> int:
    settings = get_settings()

    def run() -> int:
        ensure_topics(settings)
        return plain_driver.run(settings, processors_for(settings.agents, settings))

    return plain_driver.main(run)


if __name__ == "__main__":
    sys.exit(main())
