"""A dbt profile from an Airflow connection, on the real Airflow deployment.

The postgres connection is defined in Airflow through its REST API, as a person would under
Admin > Connections; `kubedbt_profiles` (tests/deployment/dags/kubedbt_profiles.py) names only
the connection id. dbt builds the example project on a real PostgreSQL with it, and the
connection's password shows nowhere a person or another process could read it: not in the task
log, the XCom return value, the rendered template fields, the Job or its pod.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client
from tests.airflow.client import AirflowClient
from tests.conftest import node_address
from tests.warehouse import Warehouse, running_warehouse

from kubedbt.core import naming

pytestmark = pytest.mark.cluster

DAG_ID = "kubedbt_profiles"
CONN_ID = "kubedbt_profiles_warehouse"


@pytest.fixture(scope="module")
def warehouse(api_client: client.ApiClient, airflow: AirflowClient) -> Iterator[Warehouse]:
    with running_warehouse(node_address(api_client)) as running:
        airflow.set_connection(
            CONN_ID,
            "postgres",
            host=running.host,
            port=running.port,
            login=running.user,
            password=running.password,
            schema=running.database,
            extra={"sslmode": "disable"},
        )
        try:
            yield running
        finally:
            airflow.delete_connection(CONN_ID)


def test_dbt_runs_on_the_airflow_connection_and_its_password_shows_nowhere(
    airflow: AirflowClient, api_client: client.ApiClient, namespace: str, warehouse: Warehouse
) -> None:
    airflow.wait_for_dag(DAG_ID, timeout=120)
    airflow.set_paused(DAG_ID, paused=False)
    run_id = airflow.trigger(DAG_ID, conf={"namespace": namespace, "target": "airflow_ci"})
    run = airflow.wait_for_dag_run(DAG_ID, run_id, states=("success", "failed"), timeout=600)
    log = airflow.task_log(DAG_ID, run_id, "build", 1)
    assert run["state"] == "success", log

    # dbt built in the schema profile_args named, on the target the template rendered.
    tables = warehouse.query(
        "select table_name from information_schema.tables where table_schema = 'profiles'"
    )
    assert {"customers", "orders"} <= {row[0] for row in tables}

    ti = airflow.task_instance(DAG_ID, run_id, "build")
    rendered = ti.get("rendered_fields") or {}
    assert rendered.get("profile_conn_id") == CONN_ID
    assert rendered.get("profile_target") == "airflow_ci"
    xcom = airflow.xcom(DAG_ID, run_id, "build")

    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    jobs = batch.list_namespaced_job(
        namespace, label_selector=f"{naming.LABEL_PREFIX}dag-id={DAG_ID}"
    ).items
    (job,) = [j for j in jobs if j.metadata.annotations[naming.LABEL_PREFIX + "run-id"] == run_id]
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"{naming.INSTANCE_LABEL}={job.metadata.name}"
    ).items
    command = job.metadata.annotations[naming.LABEL_PREFIX + "dbt-command"]
    assert "--target airflow_ci --profile kubedbt --profiles-dir /kubedbt-profile" in command
    serialize = api_client.sanitize_for_serialization
    seen = {
        "task log": log,
        "xcom": json.dumps(xcom),
        "rendered fields": json.dumps(rendered),
        "task instance": json.dumps(ti),
        "job": json.dumps(serialize(job)),
        "pods": json.dumps(serialize(pods)),
    }
    for where, text in seen.items():
        assert warehouse.password not in text, f"the connection's password is in the {where}"
    # The Secret holds it, owned by the Job: the one place it is meant to be.
    secret = core.read_namespaced_secret(job.metadata.name + naming.PROFILE_SUFFIX, namespace)
    assert secret.metadata.owner_references[0].uid == job.metadata.uid
    batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background")
