"""kubedbt's metrics and the on_warning policy, on the real Airflow deployment.

`kubedbt_metrics` (tests/deployment/dags/kubedbt_metrics.py) runs dbt three times through the
real scheduler, worker and triggerer. Airflow's Stats sends to the deployment's StatsD listener
(tests/airflow/statsd_sink.py), which writes each line it receives to statsd.log; the metrics read
there must agree with what the cluster recorded (the Jobs are kept) and with the XCom summaries.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from tests.airflow.client import AirflowClient

from kubedbt.core import naming, results

pytestmark = pytest.mark.cluster

DAG_ID = "kubedbt_metrics"
STATSD_LOG = Path(os.environ.get("KUBEDBT_STATE", "/var/lib/kubedbt-cluster")) / "airflow"
STATSD_LOG = STATSD_LOG / "statsd.log"
WARNED = "test.jaffle_shop.assert_every_customer_has_ordered"


@dataclass(frozen=True)
class Line:
    """One StatsD line as the deployment writes it: name,tag=value,...:value|type."""

    name: str
    tags: dict[str, str]
    value: float
    type: str


def parse(line: str) -> Line:
    head, _, tail = line.rpartition(":")
    value, _, kind = tail.partition("|")
    name, *pairs = head.split(",")
    tags = dict(pair.split("=", 1) for pair in pairs)
    return Line(name, tags, float(value), kind)


@dataclass
class Run:
    """The DAG run: its id, and what statsd.log received while it ran."""

    run_id: str
    lines: list[Line]

    def of(self, task_id: str, name: str) -> list[Line]:
        return [
            line
            for line in self.lines
            if line.name == f"airflow.kubedbt.{name}" and line.tags.get("task_id") == task_id
        ]


@pytest.fixture(scope="module")
def dag_run(airflow: AirflowClient, namespace: str) -> Run:
    assert STATSD_LOG.exists(), f"no {STATSD_LOG}: the deployment predates its StatsD listener"
    start = STATSD_LOG.stat().st_size
    airflow.wait_for_dag(DAG_ID, timeout=120)
    airflow.set_paused(DAG_ID, paused=False)
    run_id = airflow.trigger(DAG_ID, conf={"namespace": namespace})
    airflow.wait_for_dag_run(DAG_ID, run_id, states=("success", "failed"), timeout=600)
    with STATSD_LOG.open("rb") as log:
        log.seek(start)
        received = log.read().decode().splitlines()
    ours = [
        parse(line)
        for line in received
        if line.startswith("airflow.kubedbt.") and f"namespace={namespace}" in line
    ]
    return Run(run_id, ours)


def _job(api_client: client.ApiClient, namespace: str, run_id: str, task_id: str) -> Any:
    batch = client.BatchV1Api(api_client)
    selector = f"{naming.LABEL_PREFIX}dag-id={DAG_ID},{naming.LABEL_PREFIX}task-id={task_id}"
    jobs = [
        job
        for job in batch.list_namespaced_job(namespace, label_selector=selector).items
        if job.metadata.annotations[naming.LABEL_PREFIX + "run-id"] == run_id
    ]
    assert len(jobs) == 1, [j.metadata.name for j in jobs]
    return jobs[0]


def _dbt_state(api_client: client.ApiClient, namespace: str, job: Any) -> Any:
    core = client.CoreV1Api(api_client)
    selector = f"{naming.INSTANCE_LABEL}={job.metadata.name}"
    (pod,) = core.list_namespaced_pod(namespace, label_selector=selector).items
    (dbt,) = [s for s in pod.status.container_statuses if s.name == naming.DBT_CONTAINER]
    return dbt.state.terminated


def _ms(start: datetime.datetime, end: datetime.datetime) -> float:
    return (end - start).total_seconds() * 1000


def test_a_run_reports_its_timings_nodes_outcome_and_size(
    airflow: AirflowClient, api_client: client.ApiClient, namespace: str, dag_run: Run
) -> None:
    ti = airflow.task_instance(DAG_ID, dag_run.run_id, "build")
    assert ti["state"] == "success"
    summary = airflow.xcom(DAG_ID, dag_run.run_id, "build")
    common = {"dag_id": DAG_ID, "task_id": "build", "namespace": namespace, "command": "build"}

    job = _job(api_client, namespace, dag_run.run_id, "build")
    dbt = _dbt_state(api_client, namespace, job)
    (duration,) = dag_run.of("build", "run.duration")
    (queued,) = dag_run.of("build", "run.queue_to_start")
    assert (duration.type, duration.tags) == ("ms", common)
    # The same timestamps the cluster recorded, to the second it records them in.
    assert duration.value == _ms(dbt.started_at, dbt.finished_at)
    assert queued.value == _ms(job.metadata.creation_timestamp, dbt.started_at)
    job_took = _ms(job.metadata.creation_timestamp, job.status.completion_time)
    assert 0 < duration.value + queued.value <= job_took
    assert duration.value >= summary["elapsed_time"] * 1000 - 1000

    nodes = {line.tags["status"]: line.value for line in dag_run.of("build", "nodes")}
    assert nodes == summary["counts"]
    assert sum(nodes.values()) == summary["nodes"] == 28
    assert all(line.type == "c" for line in dag_run.of("build", "nodes"))

    (outcome,) = dag_run.of("build", "outcome")
    assert outcome.tags == {**common, "status": "success", "kind": "success", "retryable": "false"}
    assert (outcome.value, outcome.type) == (1, "c")

    (size,) = dag_run.of("build", "results.bytes")
    configmap = client.CoreV1Api(api_client).read_namespaced_config_map(
        job.metadata.name + naming.RESULTS_SUFFIX, namespace
    )
    stored = results.stored_size(api_client.sanitize_for_serialization(configmap))
    assert (size.value, size.type) == (stored, "g")
    assert 0 < size.value < results.CONFIGMAP_LIMIT
    assert dag_run.of("build", "retries") == []  # one try


def test_on_warning_log_succeeds_and_lists_the_warned_node(
    airflow: AirflowClient, api_client: client.ApiClient, namespace: str, dag_run: Run
) -> None:
    ti = airflow.task_instance(DAG_ID, dag_run.run_id, "warned_log")
    assert ti["state"] == "success"
    summary = airflow.xcom(DAG_ID, dag_run.run_id, "warned_log")
    assert summary["counts"]["warn"] == 1
    (warning,) = summary["warnings"]
    assert warning == {"unique_id": WARNED, "message": "Got 6 results, configured to warn if != 0"}
    log = airflow.task_log(DAG_ID, dag_run.run_id, "warned_log", 1)
    assert "Warned nodes:" in log
    assert f"warn   {WARNED}: Got 6 results, configured to warn if != 0" in log

    nodes = {line.tags["status"]: line.value for line in dag_run.of("warned_log", "nodes")}
    assert nodes == summary["counts"]
    (outcome,) = dag_run.of("warned_log", "outcome")
    assert (outcome.tags["status"], outcome.tags["kind"]) == ("success", "success")
    # Waited in the worker (sync): its timings come from the same evidence.
    job = _job(api_client, namespace, dag_run.run_id, "warned_log")
    dbt = _dbt_state(api_client, namespace, job)
    (duration,) = dag_run.of("warned_log", "run.duration")
    assert duration.value == _ms(dbt.started_at, dbt.finished_at)


def test_on_warning_fail_fails_without_a_retry_naming_the_node(
    airflow: AirflowClient, api_client: client.ApiClient, dag_run: Run
) -> None:
    ti = airflow.task_instance(DAG_ID, dag_run.run_id, "warned_fail")
    # retries=2, yet one try: a warnings failure is terminal.
    assert (ti["state"], ti["try_number"]) == ("failed", 1)
    log = airflow.task_log(DAG_ID, dag_run.run_id, "warned_fail", 1)
    assert f"1 node warned: {WARNED}, and on_warning is 'fail'" in log
    assert "AirflowFailException" in log
    assert f"warn   {WARNED}" in log
    outcome = airflow.xcom(DAG_ID, dag_run.run_id, "warned_fail", key="outcome")
    assert (outcome["kind"], outcome["retryable"]) == ("warnings", False)
    summary = airflow.xcom(DAG_ID, dag_run.run_id, "warned_fail", key="summary")
    assert [w["unique_id"] for w in summary["warnings"]] == [WARNED]

    (metric,) = dag_run.of("warned_fail", "outcome")
    assert (metric.tags["status"], metric.tags["kind"]) == ("failed", "warnings")
    assert metric.tags["retryable"] == "false"
    assert dag_run.of("warned_fail", "retries") == []
