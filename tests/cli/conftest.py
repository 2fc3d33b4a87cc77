"""Fixtures of the kubectl plugin's tests: a namespace with two finished runs on the local cluster.

The runs are real: rendered by kubedbt, created with RunClient over the async client (no Airflow),
run by the kubedbt/dbt:dev and kubedbt/sidecar:dev images: try 1 of a task instance fails a data
test (vars fail_test), try 2 succeeds, and another task's run cannot parse the project (vars
fail_parse: dbt exits 2 and writes no run_results). They are created once per session; the
commands then run in-process, with main([...]), against them.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.cli.main import main
from kubedbt.cli.run_info import job_status
from kubedbt.core.results import decode
from kubedbt.io.kube import RunClient

DEFAULT_KUBECONFIG = "/var/lib/kubedbt-cluster/admin.kubeconfig"
RUN_DEADLINE = 240.0
DAG_ID = "cli_test"
TASK_ID = "dbt_build"
PARSE_TASK_ID = "dbt_parse"


def kubeconfig_path() -> Path:
    """The admin kubeconfig of the local cluster; skip (or fail in CI) without one."""
    path = Path(os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG))
    if not path.is_file():
        reason = f"no local cluster: {path} does not exist (make cluster-up)"
        if os.environ.get("KUBEDBT_REQUIRE_CLUSTER"):
            pytest.fail(f"{reason}; KUBEDBT_REQUIRE_CLUSTER is set", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    return kubeconfig_path()


@dataclass(frozen=True)
class Output:
    """What one `kubectl dbt` invocation returned and printed."""

    code: int
    out: str
    err: str


Invoke = Callable[..., Output]


@pytest.fixture
def kubectl_dbt(capsys: pytest.CaptureFixture[str]) -> Invoke:
    """Run `kubectl dbt ARGS...` in this process and capture what it printed."""

    def invoke(*args: str) -> Output:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Output(code, captured.out, captured.err)

    return invoke


@dataclass(frozen=True)
class FinishedRuns:
    """The Job names of three finished runs of one DAG run, created in this order."""

    namespace: str
    run_id: str
    failed: str  # dbt_build try 1: a data test failed
    succeeded: str  # dbt_build try 2
    parse_error: str  # dbt_parse try 1: no run_results


def _spec(namespace: str, **overrides: object) -> DbtRunSpec:
    return DbtRunSpec.from_mapping(
        {
            "command": "build",
            "image": "kubedbt/dbt:dev",
            "sidecar_image": "kubedbt/sidecar:dev",
            "image_pull_policy": "IfNotPresent",
            "namespace": namespace,
            "service_account_name": "dbt",
            **overrides,
        }
    )


async def _prepare_namespace(api: client.ApiClient, name: str) -> None:
    """The namespace, the ServiceAccount of the dbt pods, the sidecar's right to its ConfigMap."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    await core.create_namespace({"metadata": {"name": name}})
    await core.create_namespaced_service_account(name, {"metadata": {"name": "dbt"}})
    await rbac.create_namespaced_role(
        name,
        {
            "metadata": {"name": "kubedbt-sidecar"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}],
        },
    )
    await rbac.create_namespaced_role_binding(
        name,
        {
            "metadata": {"name": "kubedbt-sidecar"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "kubedbt-sidecar",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "dbt", "namespace": name}],
        },
    )


async def _wait_finished(runs: RunClient, namespace: str, job_name: str, deadline: float) -> None:
    """Until the Job has finished and the sidecar's upload has landed, or the deadline passes."""
    while time.monotonic() < deadline:
        job = await runs.read_job(job_name, namespace)
        configmap = await runs.read_configmap(f"{job_name}-results", namespace)
        finished = job is not None and job_status(job) in ("Succeeded", "Failed")
        if finished and configmap is not None and decode(configmap).status != "pending":
            return
        await asyncio.sleep(2)
    pytest.fail(f"{namespace}/{job_name} did not finish within {RUN_DEADLINE:g}s")


async def _create_runs(kubeconfig: Path, namespace: str) -> FinishedRuns:
    run_id = f"scheduled__2026-11-01T00:00:00+00:00-{uuid.uuid4().hex[:6]}"
    runs_to_create = (
        (_spec(namespace, vars={"fail_test": True}), RunIdentity(DAG_ID, TASK_ID, run_id)),
        (_spec(namespace), RunIdentity(DAG_ID, TASK_ID, run_id, try_number=2)),
        (_spec(namespace, vars={"fail_parse": True}), RunIdentity(DAG_ID, PARSE_TASK_ID, run_id)),
    )
    async with await config.new_client_from_config(config_file=str(kubeconfig)) as api:
        await _prepare_namespace(api, namespace)
        runs = RunClient(api)
        names = []
        for spec, identity in runs_to_create:
            created = await runs.create_run(
                render_job(spec, identity), render_results_configmap(spec, identity)
            )
            names.append(created.job_name)
            await asyncio.sleep(1.1)  # distinct creation seconds: a defined newest-first order
        deadline = time.monotonic() + RUN_DEADLINE
        for name in names:
            await _wait_finished(runs, namespace, name, deadline)
    failed, succeeded, parse_error = names
    return FinishedRuns(namespace, run_id, failed, succeeded, parse_error)


async def _delete_namespace(kubeconfig: Path, namespace: str) -> None:
    async with await config.new_client_from_config(config_file=str(kubeconfig)) as api:
        try:
            await client.CoreV1Api(api).delete_namespace(namespace)
        except client.ApiException as e:
            if e.status != 404:  # 404: creating it failed, and that error is the one to see
                raise


@pytest.fixture(scope="session")
def finished_runs(kubeconfig: Path) -> Iterator[FinishedRuns]:
    namespace = f"kubedbt-cli-{uuid.uuid4().hex[:8]}"
    try:
        yield asyncio.run(_create_runs(kubeconfig, namespace))
    finally:
        asyncio.run(_delete_namespace(kubeconfig, namespace))


@pytest.fixture
def on_cluster(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KUBECONFIG pointing at the local cluster, as a user's shell would have it."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return kubeconfig
