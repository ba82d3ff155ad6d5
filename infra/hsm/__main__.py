"""``python -m infra.hsm``: on a fresh machine, the SoftHSM2 dev token and the platform's keys (idempotent: keys that
exist are kept). The same as ``python -m streams.security.keys init``; the key manager also does it at start."""

import sys

from streams.security.keys import main

sys.exit(main(["init", *sys.argv[1:]]))
