"""Stopping a task on the real Airflow deployment: dbt's warehouse query must not outlive it.

dbt runs against a real PostgreSQL (tests/warehouse.py) and holds it with `pg_sleep(600)` in the
customers model. A person marks the task failed through the REST API (deferred: the triggerer's
on_kill; sync: the supervisor's SIGTERM to the task runner, whose on_kill runs), or the task's
execution_timeout comes. The tests watch pg_stat_activity as a DBA would, then check what the run
left: one Job, kept and failed, never replaced; results uploaded with the unfinished nodes; the
outcome `cancelled`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from tests.airflow.client import AirflowClient
from tests.conftest import node_address
from tests.deployment.recorder import Recorder, epoch
from tests.warehouse import Warehouse, running_warehouse, wait_until

from kubedbt.core import naming, results
from kubedbt.core.progress import RunProgress, judge

pytestmark = pytest.mark.cluster

DEFERRED = "kubedbt_fault_warehouse_deferred"
SYNC = "kubedbt_fault_warehouse_sync"
TIMEOUT = "kubedbt_fault_warehouse_timeout"
TASK = "build"
GRACE = 15  # the DAGs' termination_grace_period
SLEEP = "pg_sleep(600)"
# How long Airflow takes to act on "mark failed": the worker's supervisor learns it at its next
# heartbeat (5 s), the triggerer at its next loop and after on_kill's 3 s state lookup.
NOTICE = 10


@pytest.fixture(scope="module")
def warehouse(api_client: client.ApiClient, namespace: str) -> Iterator[Warehouse]:
    with running_warehouse(node_address(api_client)) as running:
        secret = {
            "metadata": {"name": "warehouse"},
            "stringData": running.env("faults"),
        }
        client.CoreV1Api(api_client).create_namespaced_secret(namespace, secret)
        yield running


def _start(airflow: AirflowClient, dag_id: str, namespace: str) -> str:
    airflow.wait_for_dag(dag_id, timeout=120)
    airflow.set_paused(dag_id, paused=False)
    conf = {"namespace": namespace, "warehouse_sleep_seconds": 600}
    return airflow.trigger(dag_id, conf=conf)


def _ended_run(
    api_client: client.ApiClient, namespace: str, recorder: Recorder, dag_id: str, run_id: str
) -> tuple[Any, results.RunResults]:
    """The run's one Job once it failed with its upload marked, judged; and its results."""
    core = client.CoreV1Api(api_client)
    (job,) = recorder.jobs_of(dag_id, run_id)
    name = job.obj["metadata"]["name"]

    def ended() -> bool:
        seen = recorder.jobs[job.obj["metadata"]["uid"]].obj
        failed = any(
            c["type"] == "Failed" and c["status"] == "True"
            for c in (seen.get("status") or {}).get("conditions") or []
        )
        configmap = core.read_namespaced_config_map(name + naming.RESULTS_SUFFIX, namespace)
        return failed and configmap.metadata.annotations.get(results.UPLOAD_STATUS) != "pending"

    assert wait_until(ended, GRACE + 60, interval=0.5) is not None, f"{name} did not end"
    seen = recorder.jobs[job.obj["metadata"]["uid"]]
    assert seen.deleted_at is None, "a stopped run's Job is kept for the next try and kubectl"
    configmap = api_client.sanitize_for_serialization(
        core.read_namespaced_config_map(name + naming.RESULTS_SUFFIX, namespace)
    )
    decoded = results.decode(configmap)
    progress = RunProgress.for_job(seen.obj)
    progress.listed("job", [seen.obj])
    progress.listed("pod", [p.obj for p in recorder.pods_of(dag_id, run_id)])
    progress.listed("configmap", [configmap])
    return judge(progress, time.time(), results=decoded), decoded


def _check_interrupted(decoded: results.RunResults) -> str:
    assert decoded.summary is not None, decoded.upload_error
    interruption = decoded.summary["interruption"]
    assert interruption is not None
    assert "model.jaffle_shop.customers" in interruption["cancelled"]
    assert interruption["selection_known"]
    assert decoded.summary["nodes"] == 28
    cancelled, not_started = interruption["cancelled_count"], interruption["not_started"]
    finished = decoded.summary["nodes"] - cancelled - not_started
    return f"{finished} finished, {cancelled} cancelled, {not_started} not started"


@pytest.mark.parametrize("dag_id", [DEFERRED, SYNC])
def test_marking_a_running_task_failed_cancels_its_warehouse_query(
    airflow: AirflowClient,
    api_client: client.ApiClient,
    namespace: str,
    recorder: Recorder,
    warehouse: Warehouse,
    dag_id: str,
    measured: Callable[[str], None],
) -> None:
    run_id = _start(airflow, dag_id, namespace)
    assert wait_until(lambda: warehouse.running(SLEEP), 300) is not None, "dbt never got there"
    marked = time.monotonic()
    airflow.set_task_state(dag_id, run_id, TASK, "failed")
    gone = wait_until(lambda: not warehouse.running(SLEEP), NOTICE + GRACE + 30, interval=0.1)
    assert gone is not None, "the statement outlived the task by more than the grace period"
    took = time.monotonic() - marked
    assert took < NOTICE + GRACE
    outcome, decoded = _ended_run(api_client, namespace, recorder, dag_id, run_id)
    assert outcome is not None
    assert outcome.kind == "cancelled", outcome
    assert "the Airflow task was stopped" in outcome.reason
    counts = _check_interrupted(decoded)
    assert len(recorder.pods_of(dag_id, run_id)) == 1, "no pod replaced the stopped one"
    measured(
        f"{'deferred' if dag_id == DEFERRED else 'sync'}: marked failed, the pg_sleep statement "
        f"gone from pg_stat_activity {took:.1f} s later; {counts}"
    )


def test_the_execution_timeout_reports_cancelled_with_what_finished(
    airflow: AirflowClient,
    api_client: client.ApiClient,
    namespace: str,
    recorder: Recorder,
    warehouse: Warehouse,
    measured: Callable[[str], None],
) -> None:
    run_id = _start(airflow, TIMEOUT, namespace)
    assert wait_until(lambda: warehouse.running(SLEEP), 300) is not None, "dbt never got there"
    ti = airflow.wait_for_task_state(TIMEOUT, run_id, TASK, {"failed"}, timeout=180)
    assert not warehouse.running(SLEEP)
    outcome = airflow.xcom(TIMEOUT, run_id, TASK, key="outcome")
    assert outcome["kind"] == "cancelled", outcome
    assert "execution_timeout" in outcome["reason"]
    log = airflow.task_log(TIMEOUT, run_id, TASK, try_number=1)
    assert "dbt build was interrupted" in log
    assert "cancelled while running: model.jaffle_shop.customers" in log
    _, decoded = _ended_run(api_client, namespace, recorder, TIMEOUT, run_id)
    counts = _check_interrupted(decoded)
    (job,) = recorder.jobs_of(TIMEOUT, run_id)
    created = epoch(job.obj["metadata"]["creationTimestamp"])
    measured(
        f"execution_timeout 70 s: the task failed as cancelled "
        f"{epoch(ti['end_date']) - created:.0f} s after its Job's creation; {counts}"
    )
