"""DbtJobOperator end to end: real Airflow, real cluster, real dbt in the real images."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import subprocess
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubedbt import RunIdentity
from kubedbt.airflow import DbtJobOperator
from tests.conftest import CHART, HELM, admin_kubeconfig
from tests.e2e import conftest as e2e_conftest
from tests.e2e.conftest import DagRun, DagRunner
from tests.unit import record_api_errors

pytestmark = pytest.mark.cluster


def _jobs(api_client: client.ApiClient, namespace: str) -> list[Any]:
    return list(client.BatchV1Api(api_client).list_namespaced_job(namespace).items)


def _no_jobs_left(api_client: client.ApiClient, namespace: str, timeout: float = 90) -> bool:
    """Whether the namespace's Jobs are gone within `timeout`: a Foreground delete keeps the Job
    until its pods have stopped."""
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


def test_a_misconfiguration_fails_with_dbts_error_and_the_fix(dag_runner: DagRunner) -> None:
    run = dag_runner.run("dbt_duckdb_in_project")
    assert run.task["state"] == "failed"
    assert run.task["try_number"] == 1, "a misconfiguration must not be retried"
    outcome = _failure(run)
    assert outcome["kind"] == "dbt_error"
    assert outcome["reason"] == (
        'dbt could not run: IO Error: Cannot open file "/usr/app/jaffle_shop/jaffle_shop.duckdb":'
        " Permission denied"
    )
    fix = outcome["fix"]
    assert fix.startswith("dbt cannot write /usr/app/jaffle_shop/jaffle_shop.duckdb"), fix
    assert "path: /kubedbt/" in fix, fix
    # The task log has it, and the failure Airflow records carries it on its own line.
    assert f"Fix: {fix}" in run.output, run.output[-5000:]


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
    warehouse = dag_runner.host_dir / "warehouse"
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
    # kubedbt stopped dbt (SIGINT) 15 s before the timeout and reported what it had finished.
    outcome = _failure(run)
    assert outcome["kind"] == "cancelled", outcome
    assert "execution_timeout" in outcome["reason"]
    (job,) = _jobs(api_client, dag_runner.namespace)
    assert job.metadata.annotations["kubedbt.io/stop-reason"] == "execution-timeout"
    assert any(c.type == "Failed" for c in job.status.conditions or []), "kept, failed"


# --- a refusal that repeats the Job's env values reaches no log, XCom or traceback ---

# The message repeats every literal env value of the Job's containers, as an admission webhook
# that echoes what it refused might.
REFUSED_DAG = """
import datetime
import os

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

with DAG("dbt_refused", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
    DbtJobOperator(
        task_id="build",
        command="build",
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        namespace=os.environ["KUBEDBT_E2E_NAMESPACE"],
        service_account_name="dbt",
        deferrable=True,
        env_vars={
            "WAREHOUSE_PASSWORD": os.environ["KUBEDBT_E2E_PASSWORD"],
            "WAREHOUSE_ACCOUNT": os.environ["KUBEDBT_E2E_ACCOUNT"],
        },
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
    )
"""


@dataclasses.dataclass(frozen=True)
class EchoingPolicy:
    name: str
    status: int


def _install_echoing_policy(
    api_client: client.ApiClient, namespace: str, name: str, reason: str | None
) -> None:
    admission = client.AdmissionregistrationV1Api(api_client)
    policy, binding = record_api_errors.echoing_policy(name, namespace, reason)
    admission.create_validating_admission_policy(policy)
    admission.create_validating_admission_policy_binding(binding)


def _until_enforced(api_client: client.ApiClient, namespace: str, timeout: float = 30) -> None:
    """A new policy takes a moment to be enforced: dry-run a Job until it is refused."""
    probe = {
        "metadata": {"name": "probe"},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            }
        },
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.BatchV1Api(api_client).create_namespaced_job(namespace, probe, dry_run="All")
        except ApiException as e:
            if e.status in (403, 422):
                return
            raise
        time.sleep(0.5)
    pytest.fail(f"the ValidatingAdmissionPolicy was not enforced within {timeout:.0f}s")


@pytest.fixture(params=[("Forbidden", 403), (None, 422)], ids=["403", "422"])
def echoing_policy(
    request: pytest.FixtureRequest, api_client: client.ApiClient, namespace: str
) -> Iterator[EchoingPolicy]:
    """A ValidatingAdmissionPolicy, bound to the test's namespace only, that refuses every Job
    with a message repeating its env values: as 403 Forbidden (kubedbt keeps the message, with
    the values redacted) or as the default 422 Invalid (kubedbt withholds the message)."""
    reason, status = request.param
    name = f"{namespace}-echo"
    admission = client.AdmissionregistrationV1Api(api_client)
    try:
        _install_echoing_policy(api_client, namespace, name, reason)
        _until_enforced(api_client, namespace)
        yield EchoingPolicy(name, status)
    finally:  # cluster-wide objects: the namespace's deletion does not take them along
        for delete in (
            admission.delete_validating_admission_policy_binding,
            admission.delete_validating_admission_policy,
        ):
            with contextlib.suppress(ApiException):
                delete(name)


def _assert_refusal_named(text: str, policy: EchoingPolicy, namespace: str) -> None:
    assert f"creating Job {namespace}/dbt-" in text
    if policy.status == 403:
        assert "failed: 403 Forbidden: [Forbidden jobs.batch/dbt-" in text
        assert f"ValidatingAdmissionPolicy '{policy.name}' with binding '{policy.name}'" in text
        assert "denied request: refused; env: false,false,***,***" in text
    else:
        assert "failed: 422 Unprocessable Entity: [Invalid jobs.batch/dbt-" in text
        assert f"refused by ValidatingAdmissionPolicy '{policy.name}'" in text


def test_a_refusal_echoing_env_values_leaks_none_of_them(
    echoing_policy: EchoingPolicy,
    namespace: str,
    launcher_kubeconfig: Path,
    dag_runner: DagRunner,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    password, account = (f"kubedbt-secret-{uuid.uuid4().hex}" for _ in range(2))
    secrets = (password, account, "HTTP response", "Audit-Id")
    env_vars = {"WAREHOUSE_PASSWORD": password, "WAREHOUSE_ACCOUNT": account}

    # In this process: the exception the operator raises, its chain and its traceback.
    caplog.set_level(logging.DEBUG)
    operator = DbtJobOperator(
        task_id="build",
        command="build",
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        namespace=namespace,
        service_account_name="dbt",
        env_vars=env_vars,
        kubernetes_conn_id=None,
        config_file=str(launcher_kubeconfig),
    )
    identity = RunIdentity("refused", "build", f"manual__{uuid.uuid4().hex}")
    with pytest.raises(AirflowFailException) as caught:
        operator._run_async(operator._launch(operator._spec_values(), identity))
    error = caught.value
    rendered = "".join(traceback.format_exception(error))
    printed = capfd.readouterr()
    seen = [rendered, caplog.text, printed.out, printed.err, str(error), repr(error)]
    for text in seen:
        for secret in secrets:
            assert secret not in text
    assert (error.__cause__, error.__context__) == (None, None), "no chain to hold the raw one"
    _assert_refusal_named(str(error), echoing_policy, namespace)

    # Through Airflow: the task log, and XCom.
    dag_file = tmp_path / "refused_dag" / "refused_dag.py"
    dag_file.parent.mkdir()
    dag_file.write_text(REFUSED_DAG)
    monkeypatch.setattr(e2e_conftest, "DAGS", dag_file)
    monkeypatch.setenv("KUBEDBT_E2E_PASSWORD", password)
    monkeypatch.setenv("KUBEDBT_E2E_ACCOUNT", account)
    run = dag_runner.run("dbt_refused")
    assert run.task["state"] == "failed", run.output[-5000:]
    assert run.task["try_number"] == 1, "a refusal is terminal"
    for secret in secrets:
        assert secret not in run.output
        assert secret not in json.dumps(run.report)
    _assert_refusal_named(run.output, echoing_policy, namespace)
