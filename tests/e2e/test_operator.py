"""DbtJobOperator end to end: real Airflow, real cluster, real dbt in the real images."""

from __future__ import annotations

import datetime
import subprocess
import time
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import CHART, HELM, admin_kubeconfig
from tests.e2e.conftest import DagRun, DagRunner

pytestmark = pytest.mark.cluster


def _jobs(api_client: client.ApiClient, namespace: str) -> list[Any]:
    return list(client.BatchV1Api(api_client).list_namespaced_job(namespace).items)


def _no_jobs_left(api_client: client.ApiClient, namespace: str, timeout: float = 90) -> bool:
    """Whether the namespace's Jobs are gone within `timeout`: a Foreground delete keeps the Job
    until its pods have stopped, and dbt, as PID 1, only stops at the grace period's end."""
    deadline = time.monotonic() + timeout
    while _jobs(api_client, namespace):
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def _pods(api_client: client.ApiClient, namespace: str) -> list[Any]:
    return list(client.CoreV1Api(api_client).list_namespaced_pod(namespace).items)


def _failure(run: DagRun) -> dict[str, Any]:
    outcome = run.xcom.get("outcome")
    assert outcome, f"no outcome in XCom:\n{run.output[-5000:]}"
    return dict(outcome)


def test_success_puts_the_summary_in_xcom(
    dag_runner: DagRunner, api_client: client.ApiClient
) -> None:
    run = dag_runner.run("dbt_build")
    assert run.task["state"] == "success", run.output[-5000:]
    summary = run.xcom["return_value"]
    assert summary["nodes"] == 28
    assert set(summary["counts"]) <= {"success", "pass"}
    assert run.xcom["job_name"].startswith("dbt-dbt-build-build-")
    assert run.xcom["kubectl"].endswith(f"job/{run.xcom['job_name']} -c dbt")
    assert "run_results" not in run.xcom, "full run_results only on request"
    # on_finish_action=delete_succeeded_job (the default) removed the Job.
    assert _no_jobs_left(api_client, dag_runner.namespace)


def test_sync_mode_streams_dbt_log(dag_runner: DagRunner) -> None:
    run = dag_runner.run("dbt_build_sync")
    assert run.task["state"] == "success", run.output[-5000:]
    assert "[dbt] " in run.output
    assert "Completed successfully" in run.output


def test_data_test_failure_is_terminal(dag_runner: DagRunner, api_client: client.ApiClient) -> None:
    run = dag_runner.run("dbt_build", conf={"vars": {"fail_test": True}})
    assert run.task["state"] == "failed"
    assert run.task["try_number"] == 1, "a failing data test must not be retried"
    outcome = _failure(run)
    assert outcome["kind"] == "tests_failed"
    assert outcome["retryable"] is False
    assert "assert_order_amount_matches_payments" in outcome["reason"]
    # The failed Job stays for debugging (and for a failed_nodes retry).
    (job,) = _jobs(api_client, dag_runner.namespace)
    assert job.status.failed == 1


def test_parse_error_is_terminal_and_not_retried_in_cluster(
    dag_runner: DagRunner, api_client: client.ApiClient
) -> None:
    run = dag_runner.run("dbt_build", conf={"vars": {"fail_parse": True}})
    assert run.task["state"] == "failed"
    assert run.task["try_number"] == 1
    outcome = _failure(run)
    assert outcome["kind"] == "dbt_error"
    assert "fail_parse is set" in outcome["reason"]
    (job,) = _jobs(api_client, dag_runner.namespace)
    reasons = {c.reason for c in job.status.conditions if c.status == "True"}
    assert "PodFailurePolicy" in reasons
    assert len(_pods(api_client, dag_runner.namespace)) == 1, "no in-cluster retry"


def test_warehouse_down_is_retryable(dag_runner: DagRunner) -> None:
    run = dag_runner.run("dbt_postgres_down")
    assert run.task["state"] == "failed"
    assert run.task["try_number"] == 2, run.output[-8000:]
    outcome = _failure(run)
    assert outcome["kind"] == "warehouse_unreachable"
    assert outcome["retryable"] is True
    assert "e2e-password-never-logged" not in run.output


def test_oom_killed_says_to_raise_the_limit(dag_runner: DagRunner) -> None:
    run = dag_runner.run("dbt_oom")
    assert run.task["state"] == "failed"
    outcome = _failure(run)
    assert outcome["kind"] == "oom_killed"
    assert "container_resources.limits.memory (now 300Mi)" in outcome["reason"]
    assert run.task["try_number"] == 1


def test_pull_failure_is_reported_at_startup_timeout(
    dag_runner: DagRunner, api_client: client.ApiClient
) -> None:
    run = dag_runner.run("dbt_bad_image")  # docker.io cannot be resolved here: a transient error
    assert run.task["state"] == "failed"
    outcome = _failure(run)
    assert (outcome["kind"], outcome["retryable"]) == ("image_pull_failed", True)
    assert "ErrImagePull" in outcome["reason"] or "ImagePullBackOff" in outcome["reason"]
    assert _no_jobs_left(api_client, dag_runner.namespace), "an abandoned run's Job is deleted"


def test_invalid_image_fails_at_once(dag_runner: DagRunner) -> None:
    run = dag_runner.run("dbt_invalid_image")
    assert run.task["state"] == "failed"
    assert run.task["try_number"] == 1
    assert _failure(run)["kind"] == "image_invalid"


def test_unschedulable_pod_reaches_startup_timeout(dag_runner: DagRunner) -> None:
    run = dag_runner.run("dbt_unschedulable")
    assert run.task["state"] == "failed"
    outcome = _failure(run)
    assert outcome["kind"] == "startup_timeout"
    assert "Unschedulable" in outcome["reason"]


def test_failed_nodes_retry_reruns_only_what_failed(
    dag_runner: DagRunner, api_client: client.ApiClient
) -> None:
    warehouse = dag_runner.workdir / "warehouse"
    warehouse.mkdir(mode=0o777)
    warehouse.chmod(0o777)
    run = dag_runner.run("dbt_retry_failed_nodes")
    assert run.task["state"] == "success", run.output[-6000:]
    assert run.task["try_number"] == 2
    rerun = {r["unique_id"] for r in run.xcom["run_results"]["results"]}
    assert "model.jaffle_shop.orders" in rerun
    assert "seed.jaffle_shop.raw_customers" not in rerun, "seeds succeeded on try 1"
    assert 0 < len(rerun) < 28
    (first_try,) = _jobs(api_client, dag_runner.namespace)
    assert first_try.metadata.labels["kubedbt.io/try-number"] == "1"
    assert "dbt retry" in run.output


def test_concurrent_runs_read_only_their_own_results(dag_runner: DagRunner) -> None:
    day = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    processes = {
        f"run-{i}": dag_runner.start(
            "dbt_build_marked",
            conf={"marker": f"run-{i}"},
            logical_date=(day + datetime.timedelta(days=i)).isoformat(),
        )
        for i in range(5)
    }
    runs = {marker: dag_runner.finish(p) for marker, p in processes.items()}
    assert len({r.report["run_id"] for r in runs.values()}) == 5
    assert len({r.xcom["job_name"] for r in runs.values()}) == 5
    for marker, run in runs.items():
        assert run.task["state"] == "success", run.output[-4000:]
        assert run.xcom["run_results"]["args"]["vars"] == {"marker": marker}
        assert (
            run.xcom["return_value"]["invocation_id"]
            == run.xcom["run_results"]["metadata"]["invocation_id"]
        )


def test_namespace_defaults_fill_what_the_dag_leaves_out(dag_runner: DagRunner) -> None:
    defaults = {
        "defaults.enabled": "true",
        "defaults.image": "kubedbt/dbt:dev",
        "defaults.sidecar_image": "kubedbt/sidecar:dev",
        "defaults.image_pull_policy": "IfNotPresent",
    }
    settings = [arg for key, value in defaults.items() for arg in ("--set", f"{key}={value}")]
    subprocess.run(
        [HELM, "upgrade", "kubedbt", str(CHART), "--namespace", dag_runner.namespace,
         "--reuse-values", *settings, "--kubeconfig", str(admin_kubeconfig())],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    run = dag_runner.run("dbt_namespace_defaults")
    assert run.task["state"] == "success", run.output[-5000:]
    assert run.xcom["return_value"]["nodes"] == 28


def test_execution_timeout_stops_the_run(
    dag_runner: DagRunner, api_client: client.ApiClient
) -> None:
    run = dag_runner.run("dbt_execution_timeout")
    assert run.task["state"] == "failed", run.output[-5000:]
    assert _failure(run)["kind"] == "execution_timeout"
    assert _no_jobs_left(api_client, dag_runner.namespace), "the timed-out run's Job is deleted"
