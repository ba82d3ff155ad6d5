"""``python -m streams.status``: the status read model's service (``streams.status.service``)."""

import sys

from streams.status.service import main

sys.exit(main())
