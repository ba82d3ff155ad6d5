"""``python -m streams.kyc``: the KYC webhook receiver (``streams.kyc.receiver``)."""

import sys

from streams.kyc.receiver import main

sys.exit(main())
