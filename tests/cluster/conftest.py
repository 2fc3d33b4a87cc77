"""Fixtures shared by the cluster tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import launcher_token, node_address, write_kubeconfig
from tests.warehouse import Warehouse, running_warehouse


@pytest.fixture(scope="module")
def warehouse(api_client: client.ApiClient) -> Iterator[Warehouse]:
    """A throwaway PostgreSQL on the node's address, for the test modules that need one."""
    with running_warehouse(node_address(api_client)) as running:
        yield running


@pytest.fixture
def kubeconfig(api_client: client.ApiClient, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig holding a token of the chart's launcher in the test module's `namespace`:
    what Airflow gets, not cluster-admin."""
    path = tmp_path / "launcher.kubeconfig"
    write_kubeconfig(path, api_client, namespace, launcher_token(api_client, namespace))
    return path
