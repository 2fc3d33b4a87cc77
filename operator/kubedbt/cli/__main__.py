"""`python -m kubedbt.cli`, the same as `kubectl dbt`."""

from kubedbt.cli.main import entry

entry()
