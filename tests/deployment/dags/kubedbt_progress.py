"""The DAG of the live progress test on the real Airflow deployment (tests/deployment).

The dag-processor parses this file, so the namespace and how long dbt stays in the customers
model (`slow_seconds`) come from the DAG run's conf. Deferred: the triggerer waits for the run
and writes its progress to the task log while dbt builds.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

with DAG(
    "kubedbt_progress",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1),
    render_template_as_native_obj=True,
    catchup=False,
    tags=["kubedbt-tests"],
):
    DbtJobOperator(
        task_id="build",
        deferrable=True,
        command="build",
        vars={"slow_seconds": "{{ dag_run.conf.get('slow_seconds', 0) }}"},
        namespace="{{ dag_run.conf['namespace'] }}",
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        service_account_name="dbt",
        startup_timeout=60,
        termination_grace_period=15,
        retries=0,
    )
