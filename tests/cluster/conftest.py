"""Shared setup of the tests that run against the real local cluster.

The cluster comes from ``tests/cluster/up.sh``; its admin kubeconfig is read from ``KUBECONFIG``,
defaulting to the path up.sh prints. Without that file the tests are skipped with the reason,
unless ``KUBEDBT_REQUIRE_CLUSTER`` is set (CI), where a missing cluster must fail the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config

DEFAULT_KUBECONFIG = "/var/lib/kubedbt-cluster/admin.kubeconfig"


@pytest.fixture(scope="session")
def api_client() -> Iterator[ApiClient]:
    """One API client for the session, authenticated as the cluster admin."""
    path = Path(os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG))
    if not path.is_file():
        reason = f"no local cluster: {path} does not exist (start one with tests/cluster/up.sh)"
        if os.environ.get("KUBEDBT_REQUIRE_CLUSTER"):
            pytest.fail(f"{reason}; KUBEDBT_REQUIRE_CLUSTER is set", pytrace=False)
        pytest.skip(reason)
    api = new_client_from_config(config_file=str(path))
    try:
        yield api
    finally:
        api.close()
