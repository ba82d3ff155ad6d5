import sys

from infra.provider_sim.launcher import main

sys.exit(main())
