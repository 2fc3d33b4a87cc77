"""The chart installed on the real local cluster: helm test, the launcher's rights, uninstall.

Each release gets a fresh namespace that enforces the "restricted" Pod Security Standard, so the
helm test pod also proves it is restricted. The launcher's rights are exercised with a token of
the chart's kubedbt-launcher ServiceAccount, through a client that knows nothing else.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from tests.conftest import admin_kubeconfig
from tests.helm.conftest import CHART, Helm

pytestmark = pytest.mark.cluster

DEFAULT_KUBECTL = "/var/lib/kubedbt-cluster/bin/kubectl"
# Built by tests/cluster/images.sh and imported into the node; nothing can be pulled.
TEST_IMAGE = "kubedbt/base:bookworm"

RUN_DEFAULTS = {
    "image": "kubedbt/dbt:dev",
    "image_pull_policy": "IfNotPresent",
    "container_resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
}
# Everything the chart can create, so that install, helm test and uninstall cover all of it. The
# quota limits requests: the helm test pod sets its own and the LimitRange fills in the rest.
VALUES: dict[str, Any] = {
    "launcher": {"createServiceAccount": True},
    "defaults": {"enabled": True, **RUN_DEFAULTS},
    "quota": {"enabled": True, "hard": {"count/jobs.batch": "5", "requests.cpu": "2"}},
    "limitRange": {"enabled": True},
    "helmTest": {"image": TEST_IMAGE, "imagePullPolicy": "IfNotPresent"},
}


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    notes: str


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    api: client.ApiClient
    helm: Helm

    def helm_run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.helm.run(*args, stdin=stdin, check=check, timeout=180, env=self.env)

    @property
    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig)}

    @contextmanager
    def release(self, values: dict[str, Any]) -> Iterator[Release]:
        """A fresh restricted namespace with the chart installed; both gone afterwards."""
        suffix = uuid.uuid4().hex[:8]
        name, namespace = f"kubedbt-{suffix}", f"kubedbt-helm-{suffix}"
        core = client.CoreV1Api(self.api)
        labels = {"pod-security.kubernetes.io/enforce": "restricted"}
        core.create_namespace(client.V1Namespace(metadata={"name": namespace, "labels": labels}))
        try:
            installed = self.helm_run(
                "install", name, str(CHART), "--namespace", namespace, "--wait", "--values", "-",
                stdin=json.dumps(values),
            )  # fmt: skip
            yield Release(name, namespace, installed.stdout)
        finally:
            self.helm_run("uninstall", name, "--namespace", namespace, "--wait", check=False)
            core.delete_namespace(namespace)

    def helm_test(self, release: Release) -> subprocess.CompletedProcess[str]:
        return self.helm_run(
            "test", release.name, "--namespace", release.namespace, "--timeout", "120s",
            check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(helm: Helm) -> Iterator[Cluster]:
    kubeconfig = admin_kubeconfig()
    api = new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Cluster(kubeconfig, api, helm)
    finally:
        api.close()


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    with cluster.release(VALUES) as installed:
        yield installed


@pytest.fixture(scope="module")
def launcher(
    cluster: Cluster, release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[client.ApiClient]:
    """An API client holding nothing but a token of the kubedbt-launcher ServiceAccount."""
    token = subprocess.run(
        [os.environ.get("KUBECTL", DEFAULT_KUBECTL), "create", "token",
         "kubedbt-launcher", "-n", release.namespace, "--duration", "10m"],
        capture_output=True, text=True, check=True, timeout=30,
        env={**os.environ, **cluster.env},
    ).stdout.strip()  # fmt: skip
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    (entry,) = kubeconfig["clusters"]
    ca = tmp_path_factory.mktemp("launcher") / "ca.crt"
    ca.write_bytes(base64.b64decode(entry["cluster"]["certificate-authority-data"]))

    configuration = client.Configuration()
    configuration.host = entry["cluster"]["server"]
    configuration.ssl_ca_cert = str(ca)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    api = client.ApiClient(configuration)
    try:
        # Refusals only mean something if the server sees the launcher, not an anonymous caller.
        review = client.AuthenticationV1Api(api).create_self_subject_review({})
        user = f"system:serviceaccount:{release.namespace}:kubedbt-launcher"
        assert review.status.user_info.username == user
        yield api
    finally:
        api.close()


def test_install_notes_show_how_to_look_at_runs(release: Release) -> None:
    ns = release.namespace
    for command in [
        f"kubectl -n {ns} get jobs -l app.kubernetes.io/name=kubedbt "
        "-L kubedbt.io/dag-id,kubedbt.io/task-id,kubedbt.io/try-number",
        f"kubectl -n {ns} logs job/<job> -c dbt",
        f"kubectl -n {ns} get configmap <job>-results -o jsonpath='{{.data.summary\\.json}}'",
        f"kubectl -n {ns} create token kubedbt-launcher",
        f"helm test {release.name} -n {ns}",
    ]:
        assert command in release.notes


def test_helm_test_passes_and_cleans_up(cluster: Cluster, release: Release) -> None:
    result = cluster.helm_test(release)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # The probe's own report, printed by helm (hook-output-log-policy).
    for check in [
        "ok   patch the results ConfigMap of its own run",
        "ok   patch another run's results ConfigMap (refused)",
        "ok   read another run's results ConfigMap (refused)",
        "ok   patch kubedbt-defaults (refused)",
        "ok   read kubedbt-defaults (refused)",
        "ok   list Secrets (refused)",
        "ok   exec into its own pod (refused)",
    ]:
        assert check in output
    assert "all checks passed" in output
    core = client.CoreV1Api(cluster.api)
    assert not names(core.list_namespaced_pod(release.namespace))
    assert names(core.list_namespaced_config_map(release.namespace)) == {
        "kube-root-ca.crt",
        "kubedbt-defaults",
    }


def test_helm_test_fails_without_the_upload_right_and_reruns(cluster: Cluster) -> None:
    """The probe can fail; a rerun replaces the failed pod; uninstall then leaves nothing."""
    with cluster.release(VALUES) as release:
        rbac = client.RbacAuthorizationV1Api(cluster.api)
        binding = f"{release.name}-results-uploader"
        rbac.delete_namespaced_role_binding(binding, release.namespace)

        failed = cluster.helm_test(release)
        assert failed.returncode != 0
        assert "FAIL patch the results ConfigMap of its own run" in failed.stderr
        assert "ok   list Secrets (refused)" in failed.stderr

        # An upgrade puts the binding back; the next test replaces the failed pod and passes.
        cluster.helm_run(
            "upgrade", release.name, str(CHART), "--namespace", release.namespace,
            "--reuse-values", "--wait",
        )  # fmt: skip
        passed = cluster.helm_test(release)
        assert passed.returncode == 0, passed.stdout + passed.stderr

        cluster.helm_run("uninstall", release.name, "--namespace", release.namespace, "--wait")
        assert inventory(cluster.api, release.namespace) == {
            "ServiceAccount": {"default"},
            "ConfigMap": {"kube-root-ca.crt"},
            "Role": set(),
            "RoleBinding": set(),
            "Pod": set(),
            "Job": set(),
            "ResourceQuota": set(),
            "LimitRange": set(),
            "Secret": set(),
        }
        # The admission policy and its binding are cluster-scoped: uninstall removes them too.
        admission = client.AdmissionregistrationV1Api(cluster.api)
        scope = f"{release.name}-{release.namespace}-results-scope"
        assert scope not in names(admission.list_validating_admission_policy())
        assert scope not in names(admission.list_validating_admission_policy_binding())


def test_launcher_runs_jobs_and_their_results(launcher: client.ApiClient, release: Release) -> None:
    ns = release.namespace
    batch, core = client.BatchV1Api(launcher), client.CoreV1Api(launcher)
    name = "launcher-probe"

    created = batch.create_namespaced_job(ns, suspended_job(name))
    assert batch.read_namespaced_job(name, ns).metadata.uid == created.metadata.uid
    assert names(batch.list_namespaced_job(ns, field_selector=f"metadata.name={name}")) == {name}
    assert opens_a_watch(batch.list_namespaced_job, ns)

    # Owned by the Job, as kubedbt creates it, so deleting the Job takes it too.
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": created.metadata.uid}
    configmap = {
        "metadata": {"name": f"{name}-results", "ownerReferences": [owner]},
        "data": {"status": "pending"},
    }
    core.create_namespaced_config_map(ns, configmap)
    assert core.read_namespaced_config_map(f"{name}-results", ns).data == {"status": "pending"}
    # How the trigger waits for the sidecar's upload: a watch of the runs' ConfigMaps.
    assert opens_a_watch(
        core.list_namespaced_config_map, ns, field_selector=f"metadata.name={name}-results"
    )
    defaults = core.read_namespaced_config_map("kubedbt-defaults", ns).data["defaults.yaml"]
    assert yaml.safe_load(defaults) == {**RUN_DEFAULTS, "service_account_name": "dbt"}

    core.list_namespaced_pod(ns, label_selector=f"job-name={name}")
    assert opens_a_watch(core.list_namespaced_pod, ns)
    core.list_namespaced_event(ns)
    assert may(launcher, ns, verb="get", resource="pods", subresource="log")
    # The profile Secret rendered from profile_conn_id: created, never read back.
    assert may(launcher, ns, verb="create", resource="secrets")

    batch.delete_namespaced_job(name, ns, propagation_policy="Background")


@pytest.mark.parametrize(
    "attempt",
    [
        lambda api, ns: client.CoreV1Api(api).list_namespaced_secret(ns),
        lambda api, ns: client.CoreV1Api(api).read_namespaced_secret("anything", ns),
        lambda api, ns: client.CoreV1Api(api).list_namespaced_secret(
            ns, watch=True, timeout_seconds=1, _preload_content=False
        ),
        lambda api, ns: client.CoreV1Api(api).delete_namespaced_secret(
            "anything", ns, dry_run="All"
        ),
        lambda api, ns: client.CoreV1Api(api).create_namespaced_pod(ns, bare_pod()),
        lambda api, ns: client.RbacAuthorizationV1Api(api).list_namespaced_role(ns),
        lambda api, ns: client.CoreV1Api(api).list_namespaced_config_map("default"),
        # What the launcher no longer holds: the sidecar writes results, the garbage collector
        # deletes them, and nothing reads single pods or watches events.
        # As dry runs: should the refusal regress, kubedbt-defaults stays as it is.
        lambda api, ns: client.CoreV1Api(api).patch_namespaced_config_map(
            "kubedbt-defaults", ns, {"data": {"x": "y"}}, dry_run="All"
        ),
        lambda api, ns: client.CoreV1Api(api).delete_namespaced_config_map(
            "kubedbt-defaults", ns, dry_run="All"
        ),
        lambda api, ns: client.CoreV1Api(api).read_namespaced_pod("anything", ns),
        lambda api, ns: client.CoreV1Api(api).list_namespaced_event(
            ns, watch=True, timeout_seconds=1, _preload_content=False
        ),
    ],
    ids=[
        "list-secrets",
        "read-secret",
        "watch-secrets",
        "delete-secret",
        "create-pod",
        "list-roles",
        "other-namespace",
        "patch-configmap",
        "delete-configmap",
        "get-pod",
        "watch-events",
    ],
)
def test_launcher_is_refused(
    launcher: client.ApiClient,
    release: Release,
    attempt: Callable[[client.ApiClient, str], Any],
) -> None:
    with pytest.raises(ApiException) as refused:
        attempt(launcher, release.namespace)
    assert refused.value.status == 403


def names(listing: Any) -> set[str]:
    return {item.metadata.name for item in listing.items}


def opens_a_watch(list_method: Callable[..., Any], namespace: str, **selectors: str) -> bool:
    """Whether a watch request is accepted (its response starts; the stream is not read)."""
    response = list_method(
        namespace, watch=True, timeout_seconds=1, _preload_content=False, **selectors
    )
    try:
        return bool(response.status == 200)
    finally:
        response.close()  # do not wait for the server's timeout
        response.release_conn()


def may(api: client.ApiClient, namespace: str, **attributes: str) -> bool:
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"namespace": namespace, **attributes}}}
    )
    return bool(review.status.allowed)


def inventory(api: client.ApiClient, namespace: str) -> dict[str, set[str]]:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    return {
        "ServiceAccount": names(core.list_namespaced_service_account(namespace)),
        "ConfigMap": names(core.list_namespaced_config_map(namespace)),
        "Role": names(rbac.list_namespaced_role(namespace)),
        "RoleBinding": names(rbac.list_namespaced_role_binding(namespace)),
        "Pod": names(core.list_namespaced_pod(namespace)),
        "Job": names(client.BatchV1Api(api).list_namespaced_job(namespace)),
        "ResourceQuota": names(core.list_namespaced_resource_quota(namespace)),
        "LimitRange": names(core.list_namespaced_limit_range(namespace)),
        "Secret": names(core.list_namespaced_secret(namespace)),
    }


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def bare_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "launcher-direct-pod"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": TEST_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ]
        },
    }


def suspended_job(name: str) -> dict[str, Any]:
    """A Job that never starts a pod: the launcher's rights, not the node, are under test."""
    pod = bare_pod()
    pod["spec"]["restartPolicy"] = "Never"
    return {
        "metadata": {"name": name},
        "spec": {"suspend": True, "backoffLimit": 0, "template": {"spec": pod["spec"]}},
    }
