"""DAGs the fault tests trigger on the real Airflow deployment (make airflow-up).

The dag-processor parses this file, so nothing here can come from a test's environment: the
namespace and how long dbt runs come from the DAG run's conf. `slow_seconds` keeps dbt inside the
customers model for that long, so a run lasts as long as a test needs (minutes, longer than any
client timeout). Jobs are kept after success so a test can check that the one it watched was never
deleted or recreated; the grace period is short so that a deleted run's pod goes within seconds.
The warehouse DAGs run against a real PostgreSQL, for the tests of stopping a run.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

COMMON = {
    "command": "build",
    "vars": {"slow_seconds": "{{ dag_run.conf.get('slow_seconds', 0) }}"},
    "namespace": "{{ dag_run.conf['namespace'] }}",
    "image": "kubedbt/dbt:dev",
    "sidecar_image": "kubedbt/sidecar:dev",
    "image_pull_policy": "IfNotPresent",
    "service_account_name": "dbt",
    "startup_timeout": 20,
    "termination_grace_period": 15,
    "on_finish_action": "keep_job",
    "retries": 2,
    "retry_delay": datetime.timedelta(seconds=0),
}


def _dag(dag_id: str) -> DAG:
    return DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2026, 1, 1),
        render_template_as_native_obj=True,
        catchup=False,
        tags=["kubedbt-tests"],
    )


with _dag("kubedbt_fault_deferred"):
    DbtJobOperator(task_id="build", deferrable=True, **COMMON)

with _dag("kubedbt_fault_sync"):
    DbtJobOperator(task_id="build", deferrable=False, **COMMON)

# Against a real PostgreSQL warehouse (tests/warehouse.py), whose address and password the tests
# put in the namespace's Secret "warehouse"; `warehouse_sleep_seconds` holds it with pg_sleep.
WAREHOUSE = {
    **COMMON,
    "target": "postgres",
    "vars": {"warehouse_sleep_seconds": "{{ dag_run.conf.get('warehouse_sleep_seconds', 0) }}"},
    "env_from": [{"secretRef": {"name": "warehouse"}}],
    "retries": 0,
}

with _dag("kubedbt_fault_warehouse_deferred"):
    DbtJobOperator(task_id="build", deferrable=True, **WAREHOUSE)

with _dag("kubedbt_fault_warehouse_sync"):
    DbtJobOperator(task_id="build", deferrable=False, **WAREHOUSE)

with _dag("kubedbt_fault_warehouse_timeout"):
    # Stopped by kubedbt 70 - 15 (grace) - 10 = 45 s after its Job's creation.
    DbtJobOperator(
        task_id="build",
        deferrable=True,
        execution_timeout=datetime.timedelta(seconds=70),
        **WAREHOUSE,
    )
