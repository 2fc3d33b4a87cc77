"""What a run produced, where people look for it, on the real Airflow deployment.

`kubedbt_lineage` (tests/deployment/dags/kubedbt_lineage.py) builds the example project on a real
PostgreSQL and copies its artifacts to a real S3 server (MinIO), then runs the marts again. The
test checks, as each reader would see it: the artifacts in the store and the return value that
points at them; the OpenLineage events the provider wrote (validated against the OpenLineage
spec); the asset events Airflow recorded, and the downstream DAG the scheduler started on one of
them; the task's extra links through the REST API.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from kubernetes import client
from tests.airflow.client import AirflowClient
from tests.conftest import node_address
from tests.objectstore import ObjectStore, running_object_store
from tests.openlineage_spec import validate_event
from tests.warehouse import Warehouse, running_warehouse, wait_until

from kubedbt.core.artifacts import INDEX_OBJECT

pytestmark = pytest.mark.cluster

DAG_ID = "kubedbt_lineage"
DOWNSTREAM = "kubedbt_lineage_downstream"
WAREHOUSE_URI = "postgres://warehouse.kubedbt.test:5432"
EVENTS = Path(os.environ.get("KUBEDBT_STATE", "/var/lib/kubedbt-cluster")) / "airflow"
BUILT = {  # what `dbt build` writes: seeds and models (tests write nothing)
    "raw_customers",
    "raw_orders",
    "raw_payments",
    "stg_customers",
    "stg_orders",
    "stg_payments",
    "customers",
    "orders",
}


@pytest.fixture(scope="module")
def store(api_client: client.ApiClient, namespace: str) -> Iterator[ObjectStore]:
    with running_object_store(node_address(api_client)) as running:
        secret = {"metadata": {"name": "artifacts"}, "stringData": running.env()}
        client.CoreV1Api(api_client).create_namespaced_secret(namespace, secret)
        yield running
        client.CoreV1Api(api_client).delete_namespaced_secret("artifacts", namespace)


@pytest.fixture(scope="module")
def warehouse(api_client: client.ApiClient, namespace: str) -> Iterator[Warehouse]:
    with running_warehouse(node_address(api_client)) as running:
        secret = {"metadata": {"name": "lineage-warehouse"}, "stringData": running.env("lineage")}
        client.CoreV1Api(api_client).create_namespaced_secret(namespace, secret)
        yield running
        client.CoreV1Api(api_client).delete_namespaced_secret("lineage-warehouse", namespace)


def _openlineage_events(run_id: str) -> list[dict[str, Any]]:
    path = EVENTS / "openlineage.jsonl"
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e["job"]["name"].startswith(f"{DAG_ID}.") and _of_run(e, run_id)]


def _of_run(event: dict[str, Any], run_id: str) -> bool:
    # The provider names the DAG run in facets whose shape varies by version; its id is unique.
    return run_id in json.dumps(event["run"])


def _relations(datasets: list[dict[str, Any]]) -> set[str]:
    assert all(d["namespace"] == WAREHOUSE_URI for d in datasets), datasets
    return {d["name"].removeprefix("warehouse.lineage.") for d in datasets}


def test_a_run_s_artifacts_lineage_assets_and_links(
    airflow: AirflowClient, namespace: str, store: ObjectStore, warehouse: Warehouse
) -> None:
    airflow.wait_for_dag(DAG_ID, timeout=120)
    airflow.wait_for_dag(DOWNSTREAM, timeout=120)
    airflow.set_paused(DOWNSTREAM, paused=False)
    before = {run["dag_run_id"] for run in airflow.dag_runs(DOWNSTREAM)}
    airflow.set_paused(DAG_ID, paused=False)
    run_id = airflow.trigger(DAG_ID, conf={"namespace": namespace})
    run = airflow.wait_for_dag_run(DAG_ID, run_id, states=("success", "failed"), timeout=600)
    assert run["state"] == "success", airflow.task_log(DAG_ID, run_id, "build")

    # The return value points at the artifacts, which are in the store under the run's folder.
    summary = airflow.xcom(DAG_ID, run_id, "build")
    record = summary["artifacts"]
    assert record["error"] is None, record
    folder = record["url"].removeprefix(f"s3://{store.bucket}/")
    assert folder.startswith(f"deployment/{DAG_ID}/build/")
    assert folder.endswith("/try-1/")
    keys = store.keys(folder)
    assert {k.removeprefix(folder) for k in keys} >= {
        "manifest.json.gz",
        "run_results.json.gz",
        "dbt.log.gz",
        "target.tar.gz",
        INDEX_OBJECT,
    }
    assert all(key.startswith("deployment/") for key in store.keys(prefix=""))

    # Asset events: one per relation `dbt build` wrote, through the task's alias.
    events = airflow.asset_events(source_dag_id=DAG_ID, source_run_id=run_id)
    built = {e["uri"] for e in events if e["source_task_id"] == "build"}
    assert built == {f"{WAREHOUSE_URI}/warehouse/lineage/{name}" for name in BUILT}
    assert all(e["extra"]["dbt_invocation_id"] for e in events)
    # ... and the scheduler started the DAG scheduled on customers.
    started = wait_until(
        lambda: {r["dag_run_id"] for r in airflow.dag_runs(DOWNSTREAM)} - before, 90
    )
    assert started is not None, "the customers asset event started no downstream run"

    # OpenLineage: the provider's events for both tasks, valid against the spec.
    def completed() -> list[dict[str, Any]]:
        return [e for e in _openlineage_events(run_id) if e["eventType"] == "COMPLETE"]

    assert wait_until(lambda: len(completed()) >= 2, 60) is not None, _openlineage_events(run_id)
    by_task = {e["job"]["name"].removeprefix(f"{DAG_ID}."): e for e in completed()}
    for event in _openlineage_events(run_id):
        validate_event(event)
    build, marts = by_task["build"], by_task["marts"]
    assert _relations(build["outputs"]) == BUILT
    assert _relations(build["inputs"]) == set()
    assert _relations(marts["outputs"]) == {"customers", "orders"}
    assert _relations(marts["inputs"]) == {"stg_customers", "stg_orders", "stg_payments"}
    tags = {t["key"]: t["value"] for t in build["run"]["facets"]["tags"]["tags"]}
    assert tags["dbt.invocation_id"] == summary["invocation_id"]
    assert tags["kubernetes.job"].startswith(f"{namespace}/dbt-kubedbt-lineage-build-")

    # The task's extra links, as the UI gets them.
    links = airflow.links(DAG_ID, run_id, "build")
    job_name = tags["kubernetes.job"].split("/", 1)[1]
    assert links["Kubernetes Job"] == (
        f"https://dashboard.example.com/#/job/{namespace}/{job_name}"
    )
    assert links["dbt artifacts"] == (
        f"https://minio.example.com/browser/{store.bucket}/{quote(folder)}"
    )
    assert links["dbt docs"] == "https://docs.example.com/jaffle_shop/"
