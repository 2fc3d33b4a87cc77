"""kubedbt under the faults of a real Airflow deployment, with dbt running for minutes.

Each test triggers a DAG run through Airflow's REST API, injects a fault into a real process (a
SIGKILLed triggerer or worker, a stopped triggerer, a restarted scheduler, a task cleared or marked
failed by a person) while dbt runs in the cluster, and then checks what the cluster went through
(the recorder saw every Job and pod) and what Airflow reported.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from tests import cluster_ops
from tests.airflow.client import AirflowClient
from tests.deployment.conftest import component, kill_worker
from tests.deployment.recorder import Recorder, Seen, epoch
from tests.deployment.webhook import holding_first_configmap

from kubedbt.core import naming

DEFERRED = "kubedbt_fault_deferred"
SYNC = "kubedbt_fault_sync"
TASK = "build"
STARTUP_TIMEOUT = 20  # the DAGs' startup_timeout
GRACE = 15  # the DAGs' termination_grace_period
NODES = 28  # dbt build of the example project


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def start(airflow: AirflowClient, dag_id: str, namespace: str, slow_seconds: int) -> str:
    airflow.wait_for_dag(dag_id, timeout=120)
    airflow.set_paused(dag_id, paused=False)
    return airflow.trigger(dag_id, conf={"namespace": namespace, "slow_seconds": slow_seconds})


def assert_one_job_never_deleted(recorder: Recorder, dag_id: str, run_id: str) -> Seen:
    found = recorder.jobs_of(dag_id, run_id)
    assert len(found) == 1, [j.obj["metadata"]["name"] for j in found]
    assert found[0].deleted_at is None, "the run's Job was deleted"
    return found[0]


def restart_api_server(outage: float) -> float:
    """SIGKILL the cluster's kube-apiserver, and after `outage` seconds bring it back; return how
    long it was gone."""
    killed = time.time()
    cluster_ops.kill_api_server()
    time.sleep(outage)
    cluster_ops.start_api_server()
    return time.time() - killed


def crash_and_restart(name: str) -> float:
    """SIGKILL an Airflow component, start it again 3 s later as a supervisor would, and return
    how long it was gone (until healthy again)."""
    killed = time.time()
    component("kill", name)
    time.sleep(3)
    component("start", name)
    return time.time() - killed


def assert_succeeded_in_one_try(
    airflow: AirflowClient, recorder: Recorder, dag_id: str, run_id: str
) -> dict[str, Any]:
    run: dict[str, Any] = airflow.wait_for_dag_run(dag_id, run_id, timeout=400)
    assert run["state"] == "success"
    assert airflow.task_instance(dag_id, run_id, TASK)["try_number"] == 1
    assert_one_job_never_deleted(recorder, dag_id, run_id)
    return run


def assert_adopted_by_a_later_try(
    airflow: AirflowClient,
    recorder: Recorder,
    run_id: str,
    killed_at: float,
    measured: Callable[[str], None],
) -> Seen:
    """The sync DAG's run succeeded in a later try that watched the killed try's Job to its end."""
    run = airflow.wait_for_dag_run(SYNC, run_id, timeout=600)
    assert run["state"] == "success"
    ti = airflow.task_instance(SYNC, run_id, TASK)
    last_try = ti["try_number"]
    assert last_try >= 2
    measured(
        f"try {last_try} started {epoch(ti['start_date']) - killed_at:.0f} s after the SIGKILL "
        f"and adopted try 1's Job; success {epoch(run['end_date']) - killed_at:.0f} s after it"
    )
    job = assert_one_job_never_deleted(recorder, SYNC, run_id)
    assert recorder.overlapping_dbt(SYNC, run_id) == []
    log = airflow.task_log(SYNC, run_id, TASK, last_try)
    assert "adopting it instead of starting dbt a second time" in log
    assert_summary(airflow, SYNC, run_id)
    return job


def assert_summary(airflow: AirflowClient, dag_id: str, run_id: str) -> None:
    summary = airflow.xcom(dag_id, run_id, TASK, "return_value")
    assert sum(summary["counts"].values()) == NODES, summary


def test_triggerer_sigkilled_after_startup_timeout_keeps_the_run(
    airflow: AirflowClient, namespace: str, recorder: Recorder, measured: Callable[[str], None]
) -> None:
    run_id = start(airflow, DEFERRED, namespace, slow_seconds=100)
    airflow.wait_for_task_state(DEFERRED, run_id, TASK, {"deferred"}, timeout=180)
    wait_for("dbt to run", lambda: recorder.dbt_running(DEFERRED, run_id), 120)
    (job,) = recorder.jobs_of(DEFERRED, run_id)
    created = job.obj["metadata"]["creationTimestamp"]
    # Past the startup deadline, counted from the Job's creation, before the triggerer dies.
    time.sleep(max(0.0, STARTUP_TIMEOUT + 5 - (time.time() - epoch(created))))
    killed_at = time.time() - epoch(created)
    gone = crash_and_restart("triggerer")

    run = assert_succeeded_in_one_try(airflow, recorder, DEFERRED, run_id)
    assert_summary(airflow, DEFERRED, run_id)
    ((_, started, ended),) = recorder.dbt_intervals(DEFERRED, run_id)
    assert ended - started > 90, "dbt must outlast every client timeout for this test to count"
    measured(
        f"triggerer SIGKILLed {killed_at:.0f} s after the Job's creation, healthy again "
        f"{gone:.1f} s later; dbt ran {ended - started:.0f} s; success in try 1 "
        f"{epoch(run['end_date']) - ended:.1f} s after dbt ended; 1 Job, never deleted"
    )
    log = airflow.task_log(DEFERRED, run_id, TASK, 1)
    assert "startup_timeout" not in log
    assert "retrying in" not in log, "a watch failed while the run was followed"


def test_triggerer_down_longer_than_the_run_reports_it_afterwards(
    airflow: AirflowClient, namespace: str, recorder: Recorder, measured: Callable[[str], None]
) -> None:
    run_id = start(airflow, DEFERRED, namespace, slow_seconds=0)
    airflow.wait_for_task_state(DEFERRED, run_id, TASK, {"deferred"}, timeout=180)
    stopped = time.time()
    component("stop", "triggerer")
    try:
        wait_for(
            "the Job to complete while no triggerer runs",
            lambda: any(_complete(j.obj) for j in recorder.jobs_of(DEFERRED, run_id)),
            240,
        )
        time.sleep(STARTUP_TIMEOUT)  # every deadline of the run has passed too
    finally:
        component("start", "triggerer")
    back = time.time()

    run = airflow.wait_for_dag_run(DEFERRED, run_id, timeout=300)

    assert run["state"] == "success"
    assert_one_job_never_deleted(recorder, DEFERRED, run_id)
    assert_summary(airflow, DEFERRED, run_id)
    measured(
        f"triggerer down {back - stopped:.0f} s, the run's Job finished while it was; "
        f"success with the summary {epoch(run['end_date']) - back:.1f} s after it was back"
    )


def test_worker_sigkilled_mid_run_in_sync_mode_is_adopted_by_the_next_try(
    airflow: AirflowClient, namespace: str, recorder: Recorder, measured: Callable[[str], None]
) -> None:
    run_id = start(airflow, SYNC, namespace, slow_seconds=75)
    airflow.wait_for_task_state(SYNC, run_id, TASK, {"running"}, timeout=180)
    wait_for("dbt to run", lambda: recorder.dbt_running(SYNC, run_id), 120)
    ti = airflow.task_instance(SYNC, run_id, TASK)
    killed_at = time.time()
    kill_worker(ti["id"])

    job = assert_adopted_by_a_later_try(airflow, recorder, run_id, killed_at, measured)
    assert job.obj["metadata"]["annotations"]["kubedbt.io/try-number"] == "1"


def test_worker_sigkilled_between_job_and_configmap_is_adopted_with_its_configmap(
    airflow: AirflowClient,
    namespace: str,
    recorder: Recorder,
    api_client: client.ApiClient,
    measured: Callable[[str], None],
) -> None:
    run_id = f"launch-{uuid.uuid4().hex[:8]}"  # a valid label value, for the webhook's selector
    with holding_first_configmap(api_client, namespace, {"kubedbt.io/run-id": run_id}) as hold:
        airflow.wait_for_dag(SYNC, timeout=120)
        airflow.set_paused(SYNC, paused=False)
        airflow.trigger(SYNC, conf={"namespace": namespace, "slow_seconds": 75}, run_id=run_id)
        assert hold.held.wait(180), "the launch never reached the ConfigMap"
        # The Job exists (its ConfigMap is the request being held); the recorder sees it soon.
        (job,) = wait_for("the recorder to see the Job", lambda: recorder.jobs_of(SYNC, run_id), 30)
        ti = airflow.task_instance(SYNC, run_id, TASK)
        killed_at = time.time()
        kill_worker(ti["id"])
        hold.release()

    kept = assert_adopted_by_a_later_try(airflow, recorder, run_id, killed_at, measured)
    assert kept.obj["metadata"]["uid"] == job.obj["metadata"]["uid"]
    # The adopting try gave the orphaned Job its ConfigMap, and the sidecar filled it.
    configmap = client.CoreV1Api(api_client).read_namespaced_config_map(
        job.obj["metadata"]["name"] + "-results", namespace
    )
    assert configmap.metadata.annotations["kubedbt.io/upload-status"] == "uploaded"


def test_scheduler_restarted_while_deferred_completes(
    airflow: AirflowClient, namespace: str, recorder: Recorder, measured: Callable[[str], None]
) -> None:
    run_id = start(airflow, DEFERRED, namespace, slow_seconds=30)
    airflow.wait_for_task_state(DEFERRED, run_id, TASK, {"deferred"}, timeout=180)
    gone = crash_and_restart("scheduler")

    run = assert_succeeded_in_one_try(airflow, recorder, DEFERRED, run_id)
    measured(
        f"scheduler SIGKILLed while deferred, healthy again {gone:.1f} s later; success in "
        f"try 1, {epoch(run['end_date']) - epoch(run['start_date']):.0f} s for the whole run"
    )


@pytest.mark.parametrize("action", ["mark_failed", "clear"])
def test_a_person_stopping_a_deferred_task_stops_its_run(
    airflow: AirflowClient,
    namespace: str,
    recorder: Recorder,
    action: str,
    measured: Callable[[str], None],
) -> None:
    run_id = start(airflow, DEFERRED, namespace, slow_seconds=600)
    airflow.wait_for_task_state(DEFERRED, run_id, TASK, {"deferred"}, timeout=180)
    wait_for("dbt to run", lambda: recorder.dbt_running(DEFERRED, run_id), 120)
    (first,) = recorder.jobs_of(DEFERRED, run_id)
    uid = first.obj["metadata"]["uid"]
    acted = time.time()
    if action == "mark_failed":
        airflow.set_task_state(DEFERRED, run_id, TASK, "failed")
    else:
        airflow.clear_task(DEFERRED, run_id, TASK)

    def stopped(job_uid: str) -> bool:
        """The run's pod is gone and its Job failed; or, after a clear, the next try (of a new
        DAG run key) deleted the Job as one from before the clear."""
        job = recorder.jobs[job_uid]
        pods = [p for p in recorder.pods_of(DEFERRED, run_id) if _owned_by(p, job_uid)]
        ended = _failed(job.obj) or job.deleted_at is not None
        return ended and all(p.deleted_at for p in pods)

    # slow_seconds busy-waits inside dbt's Jinja, which SIGINT cannot cut short: dbt is
    # interrupted at once, and its pod goes at the end of the grace period.
    wait_for("the run to be stopped", lambda: stopped(uid), GRACE + 30)
    job = recorder.jobs[uid]
    assert job.obj["metadata"]["annotations"][naming.STOP_REASON_ANNOTATION] == "task-killed"
    if action == "mark_failed":
        assert job.deleted_at is None, "a stopped run's Job is kept for kubectl and the next try"
    took = max(p.deleted_at or 0 for p in recorder.pods_of(DEFERRED, run_id) if _owned_by(p, uid))
    assert took - acted < GRACE + 20
    kept = "kept, failed" if job.deleted_at is None else "deleted by the next try"
    measured(
        f"the run stopped and its pod gone {took - acted:.1f} s after the request (grace period "
        f"{GRACE} s); the Job {kept}"
    )
    if action == "clear":
        # The cleared task runs again as a new try, which must not start beside the old one.
        wait_for("the next try's dbt", lambda: recorder.dbt_running(DEFERRED, run_id), 180)
        assert recorder.overlapping_dbt(DEFERRED, run_id) == []
        airflow.set_task_state(DEFERRED, run_id, TASK, "failed")
        wait_for(
            "every run of the task to be stopped",
            lambda: all(
                stopped(j.obj["metadata"]["uid"]) for j in recorder.jobs_of(DEFERRED, run_id)
            ),
            GRACE + 30,
        )


def _failed(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)


def _complete(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)


def _owned_by(pod: Seen, uid: str) -> bool:
    owners = pod.obj["metadata"].get("ownerReferences") or []
    return any(o.get("uid") == uid for o in owners)


def test_job_deleted_by_hand_ends_the_run_at_once(
    airflow: AirflowClient,
    namespace: str,
    recorder: Recorder,
    api_client: client.ApiClient,
    measured: Callable[[str], None],
) -> None:
    run_id = start(airflow, DEFERRED, namespace, slow_seconds=600)
    airflow.wait_for_task_state(DEFERRED, run_id, TASK, {"deferred"}, timeout=180)
    wait_for("dbt to run", lambda: recorder.dbt_running(DEFERRED, run_id), 120)
    (job,) = recorder.jobs_of(DEFERRED, run_id)
    deleted = time.time()
    # What `kubectl delete job` does: background propagation, the pods go after the Job.
    client.BatchV1Api(api_client).delete_namespaced_job(
        job.obj["metadata"]["name"], namespace, propagation_policy="Background"
    )

    run = airflow.wait_for_dag_run(DEFERRED, run_id, timeout=120)

    assert run["state"] == "failed"
    ti = airflow.task_instance(DEFERRED, run_id, TASK)
    assert ti["try_number"] == 1, "a deliberate deletion is terminal: no retry"
    outcome = airflow.xcom(DEFERRED, run_id, TASK, "outcome")
    assert outcome["kind"] == "job_deleted", outcome
    assert epoch(ti["end_date"]) - deleted < 30
    measured(f"the task failed as job_deleted {epoch(ti['end_date']) - deleted:.1f} s after")


def test_kubernetes_api_server_sigkilled_mid_run_is_followed_through(
    airflow: AirflowClient, namespace: str, recorder: Recorder, measured: Callable[[str], None]
) -> None:
    run_id = start(airflow, DEFERRED, namespace, slow_seconds=60)
    airflow.wait_for_task_state(DEFERRED, run_id, TASK, {"deferred"}, timeout=180)
    wait_for("dbt to run", lambda: recorder.dbt_running(DEFERRED, run_id), 120)
    down = restart_api_server(outage=8)

    run = assert_succeeded_in_one_try(airflow, recorder, DEFERRED, run_id)
    assert_summary(airflow, DEFERRED, run_id)
    log = airflow.task_log(DEFERRED, run_id, TASK, 1)
    assert "retrying in" in log, "the outage must have been seen for this test to count"
    measured(
        f"kube-apiserver SIGKILLed and back after {down:.0f} s; the watches reconnected and "
        f"the run succeeded in try 1 ({epoch(run['end_date']) - epoch(run['start_date']):.0f} s)"
    )
