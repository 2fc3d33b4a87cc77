"""The real dbt image and the real sidecar fill the results ConfigMap in a real pod.

The run's artifacts volume is swapped for a hostPath here (test only), a directory this machine and
the node share ($KUBEDBT_STATE/shared: on kind a mount into the node), so the test can read what
dbt wrote on the node and compare it with what the sidecar uploaded, or put there what dbt would
write for a project larger than a test can build.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.core import results
from kubedbt.core.live import PROGRESS_ANNOTATION, parse_snapshot
from kubedbt.core.render import ARTIFACTS_VOLUME, DBT_CONTAINER, SIDECAR_CONTAINER, owned_by_job
from tests import cluster_ops
from tests.unit.dbt_runs import load_with_dbt
from tests.unit.scaled_project import write_run_results

pytestmark = pytest.mark.cluster


@pytest.fixture
def artifacts() -> Iterator[Path]:
    """The run's artifacts directory, a hostPath on the node."""
    with cluster_ops.node_dir("sidecar") as path:
        yield path


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = f"kubedbt-sidecar-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_service_account(name, {"metadata": {"name": "dbt"}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def _allow_upload(api_client: client.ApiClient, namespace: str) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "upload"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "upload"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upload"},
            "subjects": [{"kind": "ServiceAccount", "name": "dbt", "namespace": namespace}],
        },
    )


def _run(
    api_client: client.ApiClient,
    namespace: str,
    artifacts: Path,
    *,
    adjust: Callable[[dict[str, Any]], None] | None = None,
    **spec_values: Any,
) -> tuple[str, dict[str, Any]]:
    """Run one Job to its end; return its final condition and its ConfigMap as JSON.

    `adjust` may change the rendered pod spec (test only) before the Job is created.
    """
    artifacts.mkdir(mode=0o777, parents=True, exist_ok=True)
    artifacts.chmod(0o777)
    spec = DbtRunSpec(
        command="build",
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        namespace=namespace,
        service_account_name="dbt",
        **spec_values,
    )
    identity = RunIdentity("sidecar_test", "build", f"manual__{uuid.uuid4().hex}")
    job = render_job(spec, identity)
    pod = job["spec"]["template"]["spec"]
    pod["volumes"] = [
        {"name": ARTIFACTS_VOLUME, "hostPath": {"path": str(artifacts), "type": "Directory"}}
        if v["name"] == ARTIFACTS_VOLUME
        else v
        for v in pod["volumes"]
    ]
    if adjust is not None:
        adjust(pod)
    created = client.BatchV1Api(api_client).create_namespaced_job(namespace, job)
    configmap = owned_by_job(
        render_results_configmap(spec, identity), created.metadata.name, created.metadata.uid
    )
    client.CoreV1Api(api_client).create_namespaced_config_map(namespace, configmap)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = client.BatchV1Api(api_client).read_namespaced_job(created.metadata.name, namespace)
        done = [
            c.type
            for c in status.status.conditions or []
            if c.type in ("Complete", "Failed") and c.status == "True"
        ]
        if done:
            read = client.CoreV1Api(api_client).read_namespaced_config_map(
                configmap["metadata"]["name"], namespace
            )
            return done[0], api_client.sanitize_for_serialization(read)
        time.sleep(1)
    pytest.fail(f"Job {created.metadata.name} did not finish within 240s")


def test_uploaded_results_equal_what_dbt_wrote(
    api_client: client.ApiClient, namespace: str, artifacts: Path
) -> None:
    _allow_upload(api_client, namespace)
    condition, configmap = _run(api_client, namespace, artifacts)
    assert condition == "Complete"
    decoded = results.decode(configmap)
    assert decoded.status == "uploaded"
    written = json.loads((artifacts / "target" / "run_results.json").read_text())
    assert decoded.run_results == written
    assert decoded.summary is not None
    assert decoded.summary["nodes"] == len(written["results"]) == 28
    # The final tally of dbt's log comes with the results (kubedbt.core.live).
    final = parse_snapshot(configmap["metadata"]["annotations"][PROGRESS_ANNOTATION])
    assert final is not None
    assert final.done == {"success": 8, "pass": 20}
    assert final.total == 28
    assert final.running_count == 0


def test_parse_error_uploads_the_digest_only(
    api_client: client.ApiClient, namespace: str, artifacts: Path
) -> None:
    _allow_upload(api_client, namespace)
    condition, configmap = _run(api_client, namespace, artifacts, vars={"fail_parse": True})
    assert condition == "Failed"
    decoded = results.decode(configmap)
    assert decoded.status == "no-results"
    assert PROGRESS_ANNOTATION not in configmap["metadata"]["annotations"]  # no node ran
    assert decoded.run_results is None
    assert any("fail_parse is set" in e["message"] for e in decoded.log_events)


def test_a_failed_upload_never_changes_the_outcome(
    api_client: client.ApiClient, namespace: str, artifacts: Path
) -> None:
    # No Role: the sidecar is forbidden to patch, dbt still succeeds and so does the Job.
    condition, configmap = _run(api_client, namespace, artifacts)
    assert condition == "Complete"
    assert results.decode(configmap).status == "pending"


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    return found


def _with_prewritten_results(pod: dict[str, Any]) -> None:
    """dbt exits at once and writes nothing: the run_results the sidecar uploads are the ones the
    test put in the artifacts directory. The sidecar gets 128Mi, as a DAG could give it."""
    dbt = _container(pod, DBT_CONTAINER)
    dbt["command"], dbt["args"] = ["true"], []
    _container(pod, SIDECAR_CONTAINER)["resources"] = {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"memory": "128Mi"},
    }


def test_fifty_megabytes_of_run_results_upload_within_128mi(
    api_client: client.ApiClient, namespace: str, artifacts: Path, tmp_path: Path
) -> None:
    _allow_upload(api_client, namespace)
    (artifacts / "target").mkdir(parents=True)
    written = artifacts / "target" / "run_results.json"
    nodes = write_run_results(written, size=50 * 2**20)
    for path in (artifacts, artifacts / "target"):
        path.chmod(0o755)
    written.chmod(0o644)

    condition, configmap = _run(api_client, namespace, artifacts, adjust=_with_prewritten_results)

    core = client.CoreV1Api(api_client)
    (pod,) = core.list_namespaced_pod(namespace).items
    (spec,) = [c for c in pod.spec.init_containers if c.name == SIDECAR_CONTAINER]
    assert spec.resources.limits["memory"] == "128Mi"
    (uploader,) = [s for s in pod.status.init_container_statuses if s.name == SIDECAR_CONTAINER]
    log = core.read_namespaced_pod_log(
        pod.metadata.name, namespace, container=SIDECAR_CONTAINER, _preload_content=False
    ).data.decode()
    assert uploader.restart_count == 0, log
    assert uploader.state.terminated is not None, uploader.state
    assert uploader.state.terminated.reason != "OOMKilled", log
    assert uploader.state.terminated.exit_code == 0, log
    assert condition == "Complete"
    decoded = results.decode(configmap)
    assert decoded.status == "uploaded", decoded.upload_error
    assert decoded.summary is not None
    assert decoded.summary["nodes"] == nodes
    assert decoded.run_results is not None
    assert "run_results" not in decoded.summary["dropped"]
    uploaded = tmp_path / "uploaded.json"
    uploaded.write_text(json.dumps(decoded.run_results))
    assert load_with_dbt(uploaded) == [len(decoded.run_results["results"])]
    size = results.payload_size(configmap["data"], configmap["binaryData"])
    finished = [line for line in log.splitlines() if "upload finished" in line]
    print(f"\n{nodes} nodes: {finished}, {size} bytes, dropped {decoded.summary['dropped']}")
