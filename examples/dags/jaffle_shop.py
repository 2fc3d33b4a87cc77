"""The example DAG: dbt build of the jaffle_shop project in the kubedbt/dbt image, on DuckDB."""

import datetime

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

with DAG(
    "jaffle_shop",
    schedule="@daily",
    start_date=datetime.datetime(2026, 11, 1),
    catchup=False,
    render_template_as_native_obj=True,
    tags=["kubedbt-demo"],
):
    DbtJobOperator(
        task_id="dbt_build",
        command="build",
        vars={"run_date": "{{ ds }}"},
        image="kubedbt/dbt:dev",  # dbt, its adapters and your project
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        namespace="kubedbt-demo",
        service_account_name="dbt",  # may patch its results ConfigMap, nothing else
        container_resources={
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"memory": "1Gi"},
        },
        kubernetes_conn_id="kubernetes_default",  # in-cluster, kubeconfig or context
        deferrable=True,  # wait in the triggerer, not in a worker slot
        on_finish_action="keep_job",  # keep it for kubectl dbt (default: delete once succeeded)
        retries=2,
    )
