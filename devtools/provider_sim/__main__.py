import sys

from devtools.provider_sim.launcher import main

sys.exit(main())
