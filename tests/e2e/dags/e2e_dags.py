"""The DAGs the end-to-end tests run through Airflow against the local cluster.

Every DAG runs the example project in the real dbt image (kubedbt/dbt:dev) with the real sidecar.
The namespace, the node IP and the images come from the environment the test sets.
"""

from __future__ import annotations

import datetime
import os

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

NAMESPACE = os.environ.get("KUBEDBT_E2E_NAMESPACE", "default")
NODE_IP = os.environ.get("KUBEDBT_E2E_NODE_IP", "127.0.0.1")
HOST_DIR = os.environ.get("KUBEDBT_E2E_HOST_DIR", "/tmp/kubedbt-e2e")
COMMON = {
    "image": os.environ.get("KUBEDBT_DBT_IMAGE", "kubedbt/dbt:dev"),
    "sidecar_image": os.environ.get("KUBEDBT_SIDECAR_IMAGE", "kubedbt/sidecar:dev"),
    "image_pull_policy": "IfNotPresent",
    "namespace": NAMESPACE,
    "service_account_name": "dbt",
    "deferrable": True,
    "startup_timeout": 120,
    "retry_delay": datetime.timedelta(seconds=0),
}


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2026, 1, 1),
        render_template_as_native_obj=True,
        catchup=False,
    )


dags: dict[str, DAG] = {}

with _dag("dbt_build") as dag:
    # vars come from the run's conf, so one DAG covers success and every dbt-level failure.
    DbtJobOperator(
        task_id="build",
        command="build",
        vars="{{ dag_run.conf.get('vars', {}) }}",
        retries=2,
        **COMMON,
    )
    dags[dag.dag_id] = dag

with _dag("dbt_duckdb_in_project") as dag:
    # A new user's first mistake: the profile puts the DuckDB file next to the read-only project.
    DbtJobOperator(
        task_id="build",
        command="build",
        env_vars={"DBT_DUCKDB_PATH": "/usr/app/jaffle_shop/jaffle_shop.duckdb"},
        retries=2,
        **COMMON,
    )
    dags[dag.dag_id] = dag

with _dag("dbt_build_sync") as dag:
    DbtJobOperator(task_id="build", command="build", **{**COMMON, "deferrable": False})
    dags[dag.dag_id] = dag

with _dag("dbt_build_marked") as dag:
    # Concurrent runs: each marks its run with a var and reads its own run_results back.
    DbtJobOperator(
        task_id="build",
        command="build",
        vars={"marker": "{{ dag_run.conf['marker'] }}"},
        push_run_results=True,
        **COMMON,
    )
    dags[dag.dag_id] = dag

with _dag("dbt_postgres_down") as dag:
    # The warehouse is down: nothing listens on the Postgres port of the node.
    DbtJobOperator(
        task_id="build",
        command="build",
        target="postgres",
        env_vars={
            "POSTGRES_HOST": NODE_IP,
            "POSTGRES_PORT": os.environ.get("KUBEDBT_E2E_DEAD_PORT", "5999"),
            "POSTGRES_USER": "dbt",
            "POSTGRES_PASSWORD": "e2e-password-never-logged",
            "POSTGRES_DB": "warehouse",
        },
        retries=1,
        **COMMON,
    )
    dags[dag.dag_id] = dag

with _dag("dbt_oom") as dag:
    DbtJobOperator(
        task_id="build",
        command="build",
        select=["+customers"],
        vars={"memory_hog": True, "memory_hog_mb": 1024},
        dbt_flags=["--indirect-selection", "cautious"],
        container_resources={"limits": {"memory": "300Mi"}},
        retries=2,
        **COMMON,
    )
    dags[dag.dag_id] = dag

with _dag("dbt_bad_image") as dag:
    DbtJobOperator(
        task_id="build",
        command="build",
        **{**COMMON, "image": "kubedbt/no-such-image:dev", "startup_timeout": 25},
    )
    dags[dag.dag_id] = dag

with _dag("dbt_invalid_image") as dag:
    DbtJobOperator(
        task_id="build",
        command="build",
        retries=2,
        **{**COMMON, "image": "Kubedbt/Invalid:Name"},
    )
    dags[dag.dag_id] = dag

with _dag("dbt_unschedulable") as dag:
    DbtJobOperator(
        task_id="build",
        command="build",
        node_selector={"kubedbt.io/no-such-node": "true"},
        **{**COMMON, "startup_timeout": 20},
    )
    dags[dag.dag_id] = dag

with _dag("dbt_retry_failed_nodes") as dag:
    # The warehouse outlives the try (a hostPath DuckDB), so try 2 can resume where try 1 failed.
    # Try 1 fails one model; try 2 runs `dbt retry` with the fault switched off.
    DbtJobOperator(
        task_id="build",
        command="build",
        vars={"fail_model": "{{ ti.try_number == 1 }}"},
        env_vars={"DBT_DUCKDB_PATH": "/warehouse/warehouse.duckdb"},
        volumes=[
            {
                "name": "warehouse",
                "hostPath": {"path": f"{HOST_DIR}/warehouse", "type": "DirectoryOrCreate"},
            }
        ],
        volume_mounts=[{"name": "warehouse", "mountPath": "/warehouse"}],
        retryable_failures={"nodes_errored": True},
        push_run_results=True,
        retries=1,
        **COMMON,
    )
    dags[dag.dag_id] = dag

with _dag("dbt_namespace_defaults") as dag:
    # No image, sidecar image, pull policy or ServiceAccount: the chart's kubedbt-defaults has them.
    DbtJobOperator(
        task_id="build",
        command="build",
        namespace=NAMESPACE,
        deferrable=True,
        startup_timeout=120,
    )
    dags[dag.dag_id] = dag

with _dag("dbt_execution_timeout") as dag:
    DbtJobOperator(
        task_id="build",
        command="build",
        vars={"slow_seconds": 300},
        termination_grace_period=5,
        execution_timeout=datetime.timedelta(seconds=45),
        **COMMON,
    )
    dags[dag.dag_id] = dag
