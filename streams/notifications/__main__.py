"""``python -m streams.notifications``: the holder notifier (``streams.notifications.loop``)."""

import sys

from streams.notifications.loop import main

sys.exit(main())
