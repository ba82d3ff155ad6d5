"""``python -m streams.bridge``: the bridge on a plain confluent-kafka consumer (``streams.bridge.loop``)."""

import sys

from streams.bridge.loop import main

sys.exit(main())
