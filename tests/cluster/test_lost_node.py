"""A run whose node is lost: its kubelet no longer answers, so its log cannot be read.

The log tail is the last evidence the watch gathers before it returns a run's outcome, and the API
server reads it from the pod's kubelet. Here the kubelet is a socket on this machine that accepts
connections and never answers, registered as a Node, with a pod bound to it: the API server's
request hangs as it would toward a node that went away mid-run.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from kubedbt.airflow.trigger import ConnectionArgs
from kubedbt.core.render import DBT_CONTAINER
from kubedbt.io.kube import LOG_TAIL_ATTEMPT, LOG_TAIL_BUDGET, RunClient
from tests.conftest import admin_kubeconfig, node_address

pytestmark = pytest.mark.cluster


class SilentKubelet:
    """A TCP listener that accepts every connection and never sends a byte."""

    def __init__(self, address: str) -> None:
        self.server = socket.create_server((address, 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def pod_on_lost_node(api_client: client.ApiClient) -> Iterator[tuple[str, str, SilentKubelet]]:
    core = client.CoreV1Api(api_client)
    address = node_address(api_client)
    kubelet = SilentKubelet(address)
    suffix = uuid.uuid4().hex[:8]
    node, namespace = f"kubedbt-lost-{suffix}", f"kubedbt-lost-{suffix}"
    core.create_node(
        {
            "metadata": {"name": node},
            # Nothing else may land here: the node has no kubelet to run it.
            "spec": {"taints": [{"key": "kubedbt.io/lost", "effect": "NoSchedule"}]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": address}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
            },
        }
    )
    core.create_namespace({"metadata": {"name": namespace}})
    pod = {
        "metadata": {"name": "dbt"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": DBT_CONTAINER, "image": "kubedbt/dbt:dev"}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    try:
        yield namespace, "dbt", kubelet
    finally:
        kubelet.close()
        core.delete_namespaced_pod("dbt", namespace, grace_period_seconds=0)
        core.delete_namespace(namespace)
        core.delete_node(node)


def test_a_kubelet_that_never_answers_costs_the_log_tail_only(
    pod_on_lost_node: tuple[str, str, SilentKubelet],
) -> None:
    namespace, pod, kubelet = pod_on_lost_node

    async def read_tail() -> str | None:
        hook = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
        async with hook.async_hook().get_conn() as api:
            return await RunClient(api).log_tail(pod, namespace, DBT_CONTAINER, 50)

    started = time.monotonic()
    tail = asyncio.run(read_tail())
    took = time.monotonic() - started
    assert kubelet.connections, "the API server never came to the node's kubelet"
    assert tail is None
    # One attempt may begin just before the budget ends; the retry policy alone allows 120 s.
    assert took < LOG_TAIL_BUDGET + LOG_TAIL_ATTEMPT + 5, f"the log tail took {took:.1f}s"
    print(f"\nlog tail given up after {took:.1f}s, {len(kubelet.connections)} connection(s)")
