"""`python -m reports RESULTS_DIR`: the same report as `headbench report`."""

import sys

from reports.report import main

sys.exit(main())
