"""Killing a task stops its own run, and only that one: deferred (the trigger's on_kill, which
the triggerer calls when a user clears or marks the task) and in sync mode (the operator's). The
run is stopped, not deleted: its pod goes (dbt is interrupted), its Job stays, failed, with the
results for the next try (tests/cluster/test_cancellation.py checks those on a real warehouse)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.airflow import DbtJobOperator, DbtJobTrigger
from kubedbt.airflow.trigger import ConnectionArgs, TriggerArgs
from kubedbt.core import naming
from kubedbt.io.kube import RunClient
from kubedbt.io.watch import RunRef, WatchLimits

pytestmark = pytest.mark.cluster


def _spec(namespace: str) -> DbtRunSpec:
    return DbtRunSpec(
        command="build",
        vars={"slow_seconds": 300},
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        namespace=namespace,
        service_account_name="dbt",
        # dbt's busy wait in Jinja outlasts its SIGINT; do not wait a minute for the kill.
        termination_grace_period=5,
    )


def _connection(kubeconfig: Path) -> ConnectionArgs:
    return ConnectionArgs(kubernetes_conn_id=None, config_file=str(kubeconfig))


async def _create(kubeconfig: Path, spec: DbtRunSpec, identity: RunIdentity) -> str:
    async with _connection(kubeconfig).async_hook().get_conn() as api_client:
        created = await RunClient(api_client).create_run(
            render_job(spec, identity), render_results_configmap(spec, identity)
        )
    return created.job_name


def _wait_running(api_client: client.ApiClient, namespace: str, job_name: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={job_name}"
        )
        statuses = [s for p in pods.items for s in p.status.container_statuses or []]
        if any(s.name == "dbt" and s.state.running for s in statuses):
            return
        time.sleep(1)
    pytest.fail(f"{job_name} did not start within 120s")


def _job_names(api_client: client.ApiClient, namespace: str) -> set[str]:
    return {
        j.metadata.name for j in client.BatchV1Api(api_client).list_namespaced_job(namespace).items
    }


def _wait_stopped(api_client: client.ApiClient, namespace: str, job_name: str) -> None:
    """Until the run's pod is gone and its Job, kept, has failed with kubedbt's stop reason."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={job_name}"
        )
        job = client.BatchV1Api(api_client).read_namespaced_job(job_name, namespace)
        failed = any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])
        if failed and not pods.items:
            reason = job.metadata.annotations[naming.STOP_REASON_ANNOTATION]
            assert reason == "task-killed"
            return
        time.sleep(1)
    pytest.fail(f"{job_name} was not stopped within 120s")


def test_on_kill_while_deferred_stops_this_try_only(
    api_client: client.ApiClient, namespace: str, launcher_kubeconfig: Path
) -> None:
    spec = _spec(namespace)
    run_id = f"manual__{uuid.uuid4().hex}"
    first, second = (
        RunIdentity("kill", "build", run_id, try_number=1),
        RunIdentity("kill", "build", run_id, try_number=2),
    )
    first_job = asyncio.run(_create(launcher_kubeconfig, spec, first))
    second_job = asyncio.run(_create(launcher_kubeconfig, spec, second))
    _wait_running(api_client, namespace, second_job)
    args = TriggerArgs(
        run=RunRef(
            job_name=second_job,
            namespace=namespace,
            configmap_name=naming.results_configmap_name(second),
            selector=naming.selector_labels(second),
        ),
        limits=WatchLimits(startup_timeout=120),
        connection=_connection(launcher_kubeconfig),
    )
    trigger = DbtJobTrigger(**args.to_kwargs())

    async def trigger_task() -> None:
        # Airflow 3.3's TriggerRunner.run_trigger: on a user's clear or mark the task running
        # run() is cancelled, and on_kill() runs inside it.
        try:
            await trigger.run().__anext__()
        except asyncio.CancelledError:
            await trigger.on_kill()
            raise

    async def deferred_then_killed() -> None:
        task = asyncio.ensure_future(trigger_task())
        await asyncio.sleep(3)
        assert not task.done(), "the run is still going: the trigger must still be waiting"
        # The triggerer cancels the task again at each state sync (about once a second) until
        # it ends; here every 10 ms, so on_kill meets a cancel before its patch is done.
        while not task.done():
            task.cancel("__airflow_user_action__")
            await asyncio.sleep(0.01)

    asyncio.run(deferred_then_killed())
    _wait_stopped(api_client, namespace, second_job)
    assert first_job in _job_names(api_client, namespace), "another try's Job must stay"
    first = client.BatchV1Api(api_client).read_namespaced_job(first_job, namespace)
    assert naming.STOP_REASON_ANNOTATION not in (first.metadata.annotations or {})
    assert not first.status.conditions, "another try's run must go on"


def test_on_kill_in_sync_mode_stops_the_run(
    api_client: client.ApiClient, namespace: str, launcher_kubeconfig: Path
) -> None:
    spec = _spec(namespace)
    identity = RunIdentity("kill_sync", "build", f"manual__{uuid.uuid4().hex}")
    job_name = asyncio.run(_create(launcher_kubeconfig, spec, identity))
    _wait_running(api_client, namespace, job_name)
    operator = DbtJobOperator(
        task_id="build",
        command="build",
        image="kubedbt/dbt:dev",
        kubernetes_conn_id=None,
        config_file=str(launcher_kubeconfig),
        deferrable=False,
    )
    operator._running = (job_name, namespace)  # what execute() records once the Job exists
    operator.on_kill()
    _wait_stopped(api_client, namespace, job_name)
