"""A run that fails on purpose, so `make demo` leaves a failed run to debug beside the good one.

The same project and image as jaffle_shop.py; the var `fail_test` makes the data test
assert_order_amount_matches_payments find 40 mismatching rows. A failed data test is terminal:
the task fails at once, with no retry, and its Job stays for kubectl (on_finish_action's default
keeps failed Jobs).
"""

import datetime

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

with DAG(
    "jaffle_shop_failing",
    schedule=None,
    start_date=datetime.datetime(2026, 11, 1),
    catchup=False,
    tags=["kubedbt-demo"],
):
    DbtJobOperator(
        task_id="dbt_build",
        command="build",
        vars={"fail_test": True},
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        namespace="kubedbt-demo",
        service_account_name="dbt",
        kubernetes_conn_id="kubernetes_default",
        deferrable=True,
        retries=2,  # not used: a failed data test fails the task at once
    )
