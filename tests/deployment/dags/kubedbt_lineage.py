"""DAGs of tests/deployment/test_lineage.py: artifacts, OpenLineage, asset events and links.

`kubedbt_lineage` builds the example project on a real PostgreSQL (Secret "lineage-warehouse"),
copies its artifacts to a real S3 server (MinIO, Secret "artifacts" with its endpoint and keys),
then runs the marts again on what the first task built, so the second run has inputs. The
downstream DAG is scheduled on the asset of the customers model, which only the events of the
first run can trigger.
"""

from __future__ import annotations

import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset

from kubedbt.airflow import DbtJobOperator

# The warehouse as lineage names it; the tests' server listens on the node's address under it.
WAREHOUSE_URI = "postgres://warehouse.kubedbt.test:5432"
CUSTOMERS = Asset(f"{WAREHOUSE_URI}/warehouse/lineage/customers")

COMMON = {
    "namespace": "{{ dag_run.conf['namespace'] }}",
    "target": "postgres",
    "env_from": [{"secretRef": {"name": "lineage-warehouse"}}],
    "image": "kubedbt/dbt:dev",
    "sidecar_image": "kubedbt/sidecar:dev",
    "image_pull_policy": "IfNotPresent",
    "service_account_name": "dbt",
    "deferrable": True,
    "artifacts_url": "s3://kubedbt-artifacts/deployment",
    "artifacts_secret": "artifacts",
    "warehouse_uri": WAREHOUSE_URI,
    "docs_url": "https://docs.example.com/jaffle_shop/",
    "job_url_template": "https://dashboard.example.com/#/job/{namespace}/{job_name}",
    "artifacts_link_template": "https://minio.example.com/browser/{bucket}/{prefix}",
}

with DAG(
    "kubedbt_lineage",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    catchup=False,
    tags=["kubedbt-tests"],
):
    build = DbtJobOperator(task_id="build", command="build", **COMMON)
    marts = DbtJobOperator(task_id="marts", command="run", select=["marts"], **COMMON)
    build >> marts

with DAG(
    "kubedbt_lineage_downstream",
    schedule=[CUSTOMERS],
    start_date=datetime.datetime(2026, 1, 1),
    catchup=False,
    tags=["kubedbt-tests"],
):
    EmptyOperator(task_id="downstream")
