"""Fixtures shared by the cluster tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import launcher_token, write_kubeconfig


@pytest.fixture
def kubeconfig(api_client: client.ApiClient, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig holding a token of the chart's launcher in the test module's `namespace`:
    what Airflow gets, not cluster-admin."""
    path = tmp_path / "launcher.kubeconfig"
    write_kubeconfig(path, api_client, namespace, launcher_token(api_client, namespace))
    return path
