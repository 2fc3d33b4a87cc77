"""The plugin runs with the package's core dependencies: no Airflow, no sync Kubernetes client."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from kubedbt.cli.main import main
code = main(["render", "-f", "-"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("airflow", "kubernetes"))
print(code, loaded, file=sys.stderr)
"""


def test_the_plugin_loads_neither_airflow_nor_the_sync_client() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK],
        input="command: build\nimage: kubedbt/dbt:dev\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr.strip().splitlines()[-1] == "0 []", done.stderr
    assert "kind: Job" in done.stdout
