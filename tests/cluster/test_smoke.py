"""Smoke tests of the local cluster: the behaviours kubedbt relies on, checked on a real node.

They guard the cluster scripts rather than kubedbt: if one fails, the cluster (container runtime,
pod network, RBAC, kube-proxy) is broken and kubedbt's own cluster tests would mislead. Each test
gets a fresh namespace, deleted afterwards. Every wait has a deadline and, when it expires,
reports what the namespace's pods were doing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

# Built by tests/cluster/images.sh and imported into the node; nothing can be pulled.
TEST_IMAGE = "kubedbt/base:bookworm"

T = TypeVar("T")

# Runs in a pod with only the standard library: calls the apiserver the way an in-cluster client
# does (service-account token, cluster CA, the kubernetes Service through kube-proxy) and prints
# the HTTP status of a merge patch to the ConfigMap named in argv[1].
PATCH_CONFIGMAP = """
import json, os, ssl, sys, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
namespace = open(f"{sa}/namespace").read()
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
request = urllib.request.Request(
    f"https://{host}:{port}/api/v1/namespaces/{namespace}/configmaps/{sys.argv[1]}",
    data=json.dumps({"data": {"patched-by": "pod"}}).encode(),
    method="PATCH",
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"},
)
context = ssl.create_default_context(cafile=f"{sa}/ca.crt")
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        print(f"status={response.status}")
except urllib.error.HTTPError as e:
    print(f"status={e.code}")
"""


def eventually(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Call ``probe`` once a second until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result is not None:
            return result
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class SmokeCluster:
    """The API groups the smoke tests use, bound to the test's namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)

    def create_job(self, name: str, command: list[str], *, memory_limit: str | None = None) -> None:
        """Run ``command`` once in the test image: no retries, so a failure is final."""
        container: dict[str, Any] = {
            "name": "main",
            "image": TEST_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": command,
        }
        if memory_limit is not None:
            limits = {"memory": memory_limit}
            container["resources"] = {"limits": limits, "requests": limits}
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [container]},
                },
            },
        }
        self.batch.create_namespaced_job(self.namespace, job)

    def wait_for_job(self, name: str, *, timeout: float = 120) -> str:
        """Wait until the Job is finished; returns the condition type, Complete or Failed."""

        def finished() -> str | None:
            job = self.batch.read_namespaced_job_status(name, self.namespace)
            for condition in job.status.conditions or []:
                if condition.type in ("Complete", "Failed") and condition.status == "True":
                    return str(condition.type)
            return None

        return self.within(timeout, f"Job {name} to finish", finished)

    def job_pod(self, name: str) -> client.V1Pod:
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=f"batch.kubernetes.io/job-name={name}"
        ).items
        assert len(pods) == 1, f"expected one pod for Job {name}, found {len(pods)}"
        return pods[0]

    def log(self, pod: client.V1Pod) -> str:
        # Raw bytes: some client versions hand back str(bytes) ("b'...'") for logs.
        response = self.core.read_namespaced_pod_log(
            pod.metadata.name, self.namespace, _preload_content=False
        )
        return str(response.data.decode())

    def within(self, timeout: float, what: str, probe: Callable[[], T | None]) -> T:
        """:func:`eventually`, with the namespace's pods and events in the timeout message."""
        try:
            return eventually(probe, timeout=timeout, what=what)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.describe()}") from e

    def describe(self) -> str:
        lines = [f"pods in {self.namespace}:"]
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            lines.append(f"  {pod.metadata.name}: {pod.status.phase}")
            for status in pod.status.container_statuses or []:
                lines.append(f"    {status.name}: {status.state}")
        lines.append("events:")
        for event in self.core.list_namespaced_event(self.namespace).items:
            lines.append(f"  {event.involved_object.name}: {event.reason}: {event.message}")
        return "\n".join(lines)


@pytest.fixture
def cluster(api_client: client.ApiClient) -> Iterator[SmokeCluster]:
    """A fresh namespace, usable once its default ServiceAccount exists (pods need it)."""
    core = client.CoreV1Api(api_client)
    metadata = {
        "generateName": "kubedbt-smoke-",
        "labels": {"app.kubernetes.io/part-of": "kubedbt"},
    }
    namespace = core.create_namespace({"metadata": metadata}).metadata.name

    def default_service_account() -> bool | None:
        accounts = core.list_namespaced_service_account(
            namespace, field_selector="metadata.name=default"
        )
        return True if accounts.items else None

    try:
        eventually(default_service_account, timeout=60, what=f"ServiceAccount {namespace}/default")
        yield SmokeCluster(api_client, namespace)
    finally:
        try:
            core.delete_namespace(namespace)
        except ApiException as e:
            if e.status != 404:
                raise


def test_job_completes_and_its_log_is_readable(cluster: SmokeCluster) -> None:
    cluster.create_job("hello", ["sh", "-c", "echo hello from kubedbt"])

    assert cluster.wait_for_job("hello") == "Complete"
    assert cluster.log(cluster.job_pod("hello")) == "hello from kubedbt\n"


def test_exit_code_is_reported_and_job_fails(cluster: SmokeCluster) -> None:
    cluster.create_job("exit3", ["sh", "-c", "exit 3"])

    assert cluster.wait_for_job("exit3") == "Failed"
    (status,) = cluster.job_pod("exit3").status.container_statuses
    assert status.state.terminated.exit_code == 3


def test_memory_limit_overrun_is_reported_as_oomkilled(cluster: SmokeCluster) -> None:
    # Multiplying bytes writes every page, so the memory is really charged to the container.
    cluster.create_job(
        "oom", ["python3", "-c", "x = b'x' * (512 * 1024 * 1024)"], memory_limit="64Mi"
    )

    assert cluster.wait_for_job("oom") == "Failed"
    (status,) = cluster.job_pod("oom").status.container_statuses
    assert status.state.terminated.reason == "OOMKilled"


@pytest.mark.parametrize(("granted", "expected_status"), [(True, 200), (False, 403)])
def test_in_cluster_client_is_bound_by_rbac(
    cluster: SmokeCluster, granted: bool, expected_status: int
) -> None:
    ns = cluster.namespace
    cluster.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "target"}, "data": {"patched-by": "nobody"}}
    )
    if granted:
        rule = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["target"]}
        cluster.rbac.create_namespaced_role(
            ns, {"metadata": {"name": "patcher"}, "rules": [rule | {"verbs": ["get", "patch"]}]}
        )
        cluster.rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": "patcher"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "patcher",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
            },
        )

    cluster.create_job("patch", ["python3", "-c", PATCH_CONFIGMAP, "target"])

    assert cluster.wait_for_job("patch") == "Complete"
    assert cluster.log(cluster.job_pod("patch")) == f"status={expected_status}\n"
    data = cluster.core.read_namespaced_config_map("target", ns).data
    assert data == {"patched-by": "pod" if granted else "nobody"}, json.dumps(data)


def test_missing_image_is_reported_as_pull_error(cluster: SmokeCluster) -> None:
    # .invalid never resolves, so the pull fails at once instead of waiting on a registry.
    cluster.core.create_namespaced_pod(
        cluster.namespace,
        {
            "metadata": {"name": "missing-image"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "kubedbt.invalid/does-not-exist:1",
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
            },
        },
    )

    def pull_error() -> str | None:
        pod = cluster.core.read_namespaced_pod_status("missing-image", cluster.namespace)
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting
            if waiting is not None and waiting.reason in ("ErrImagePull", "ImagePullBackOff"):
                return str(waiting.reason)
        return None

    assert cluster.within(60, "an image pull error", pull_error) in (
        "ErrImagePull",
        "ImagePullBackOff",
    )
