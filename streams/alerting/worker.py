"""Run a Faust worker with only the monitoring/alerting agent (``streams.alerting.agent``).

    python -m streams.alerting.worker        (settings from NEXUS_* environment, like streams.worker)

The all-in-one ``python -m streams.worker`` loads this agent too. A separate, single-replica
deployment keeps monitoring alive when settlement workers misbehave and gives the windowed rules
every partition (NEXUS_APP_ID must then differ from the settlement workers', e.g. nexus-alerting).
"""

from __future__ import annotations

import sys

from streams import worker


def main() -> int:
    return worker.main("alerting")


if __name__ == "__main__":
    sys.exit(main())
