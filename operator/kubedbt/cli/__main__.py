"""`python -m kubedbt.cli`, the same as `kubectl dbt`."""

import sys

from kubedbt.cli.main import main

sys.exit(main())
