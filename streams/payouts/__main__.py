"""``python -m streams.payouts``: the auto-payout service (``streams.payouts.loop``)."""

import sys

from streams.payouts.loop import main

sys.exit(main())
