"""The helm binary and the chart, shared by the chart's offline and cluster tests.

helm is the one built by tests/cluster/up.sh unless ``HELM`` names another. Without it the tests
are skipped with the reason, unless ``KUBEDBT_REQUIRE_CLUSTER`` is set (CI): then they fail.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import unavailable

CHART = Path(__file__).parents[2] / "helm" / "kubedbt"
DEFAULT_HELM = "/var/lib/kubedbt-cluster/bin/helm"


@dataclass(frozen=True)
class Helm:
    """Runs the helm binary; a failure that was not asked for fails the test with helm's output."""

    binary: str

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"helm {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}",
                pytrace=False,
            )
        return result


@pytest.fixture(scope="session")
def helm() -> Helm:
    binary = os.environ.get("HELM", DEFAULT_HELM)
    if not Path(binary).is_file():
        unavailable(f"no helm binary at {binary} (set HELM, or build it with make cluster-up)")
    return Helm(binary)
