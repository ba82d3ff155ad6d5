"""python -m infra.prometheus start|stop|status|render|check (infra/prometheus/launcher.py)."""

import sys

from infra.prometheus.launcher import main

sys.exit(main())
