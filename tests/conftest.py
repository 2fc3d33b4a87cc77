"""Options shared by every test folder."""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config

# Tests that import Airflow in this process must not write to ~/airflow; DAG runs in subprocesses
# get their own AIRFLOW_HOME (tests/e2e/conftest.py).
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kubedbt-airflow-"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite the golden manifests under tests/unit/golden from the current renderer",
    )


DEFAULT_KUBECONFIG = "/var/lib/kubedbt-cluster/admin.kubeconfig"


def unavailable(reason: str) -> NoReturn:
    """Skip for want of the local cluster or its tools; fail instead under KUBEDBT_REQUIRE_CLUSTER
    (make test sets it), where a missing cluster is an error, not a reason to test less."""
    if os.environ.get("KUBEDBT_REQUIRE_CLUSTER"):
        pytest.fail(f"{reason}; KUBEDBT_REQUIRE_CLUSTER is set", pytrace=False)
    pytest.skip(reason)


def admin_kubeconfig() -> Path:
    """The local cluster's admin kubeconfig (KUBECONFIG, else the path make cluster-up prints)."""
    path = Path(os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG))
    if not path.is_file():
        unavailable(f"no local cluster: {path} does not exist (make cluster-up)")
    return path


@pytest.fixture(scope="session")
def api_client() -> Iterator[ApiClient]:
    """One API client for the session, authenticated as the cluster admin."""
    api = new_client_from_config(config_file=str(admin_kubeconfig()))
    try:
        yield api
    finally:
        api.close()


CHART = Path(__file__).parents[1] / "helm" / "kubedbt"
HELM = os.environ.get("HELM", "/var/lib/kubedbt-cluster/bin/helm")


@contextmanager
def namespace_with_chart(api_client: ApiClient, prefix: str, *values: str) -> Iterator[str]:
    """A fresh namespace with the helm chart installed (each of `values` is a --set), deleted
    afterwards with everything in it. The release is uninstalled first: its admission policy and
    binding are cluster-scoped and would outlive the namespace."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    helm = [HELM, "--namespace", name, "--kubeconfig", str(admin_kubeconfig())]
    try:
        settings = [arg for value in values for arg in ("--set", value)]
        subprocess.run(
            [*helm, "install", "kubedbt", str(CHART), *settings],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        yield name
    finally:
        subprocess.run(
            [*helm, "uninstall", "kubedbt", "--ignore-not-found"],
            check=False, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        core.delete_namespace(name)


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect garbage after each test, so a socket or transport a test left open is reported
    (as an error, by filterwarnings) on that test, not on whichever test the collector next
    happens to run in."""
    yield
    gc.collect()


# Figures the cluster and fault tests measured, printed at the end of the session.
FIGURES: list[str] = []


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Note a figure the test measured; all of them are printed at the end of the session."""

    def note(text: str) -> None:
        FIGURES.append(f"{request.node.name}: {text}")

    return note


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("what the tests measured")
        for line in FIGURES:
            terminalreporter.write_line(line)


def launcher_token(api_client: ApiClient, namespace: str, **spec: Any) -> str:
    """A token of the chart's launcher ServiceAccount (2 h unless `spec` says otherwise)."""
    request = {"spec": {"expirationSeconds": 7200, **spec}}
    response = client.CoreV1Api(api_client).create_namespaced_service_account_token(
        "kubedbt-launcher", namespace, request
    )
    return str(response.status.token)


def node_address(api_client: ApiClient) -> str:
    """The address pods reach this machine at: this machine's own address on its route to the node.

    On the local cluster the node is this machine, so that is the node's InternalIP; on kind it is
    the kind network's gateway, this machine's side of the node container's network.
    """
    (node,) = client.CoreV1Api(api_client).list_node().items
    internal = next(str(a.address) for a in node.status.addresses if a.type == "InternalIP")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((internal, 9))  # UDP: picks the route and source address, sends nothing
        return str(probe.getsockname()[0])


def write_kubeconfig(path: Path, api_client: ApiClient, namespace: str, token: str) -> None:
    """A kubeconfig at `path` for the local cluster, authenticating with `token`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": api_client.configuration.host,
                    "certificate-authority": api_client.configuration.ssl_ca_cert,
                },
            }
        ],
        "users": [{"name": "kubedbt-launcher", "user": {"token": token}}],
        "contexts": [
            {
                "name": "launcher",
                "context": {"cluster": "local", "user": "kubedbt-launcher", "namespace": namespace},
            }
        ],
        "current-context": "launcher",
    }
    path.write_text(json.dumps(config))
