"""``python -m streams.api``: the settlement API (``streams.api.main``)."""

import sys

from streams.api.main import main

sys.exit(main())
