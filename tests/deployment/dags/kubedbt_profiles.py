"""DAG of tests/deployment/test_profiles.py: dbt's profile rendered from an Airflow connection.

The task names no profile, target or warehouse env var: everything dbt connects with comes from
the Airflow connection `kubedbt_profiles_warehouse` (a postgres connection the test defines
through the REST API), rendered into the try's profile Secret.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

with DAG(
    "kubedbt_profiles",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1),
    catchup=False,
    tags=["kubedbt-tests"],
):
    DbtJobOperator(
        task_id="build",
        command="build",
        namespace="{{ dag_run.conf['namespace'] }}",
        profile_conn_id="kubedbt_profiles_warehouse",
        profile_target="{{ dag_run.conf['target'] }}",
        profile_args={"schema": "profiles", "threads": 2},
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        service_account_name="dbt",
        on_finish_action="keep_job",
        deferrable=True,
    )
