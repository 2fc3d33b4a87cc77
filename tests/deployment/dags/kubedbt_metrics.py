"""DAG of tests/deployment/test_metrics.py: kubedbt's metrics through Stats, and on_warning.

The deployment sends Airflow's metrics to a StatsD listener (tests/airflow/airflow.sh), so what
these tasks emit lands in statsd.log. `build` is a plain successful run; the other two switch on
the example project's test of severity warn (`warn_test`): with on_warning="log" the run succeeds
and lists the warned node, with "fail" it fails without a retry although retries allow two. One
waits in the worker (sync), the others in the triggerer, so both paths report timings. Jobs are
kept for the test to compare the metrics with their timestamps and ConfigMaps.
"""

from __future__ import annotations

import datetime

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

COMMON = {
    "command": "build",
    "namespace": "{{ dag_run.conf['namespace'] }}",
    "image": "kubedbt/dbt:dev",
    "sidecar_image": "kubedbt/sidecar:dev",
    "image_pull_policy": "IfNotPresent",
    "service_account_name": "dbt",
    "on_finish_action": "keep_job",
    "retries": 2,
    "retry_delay": datetime.timedelta(seconds=0),
}
WARNED = {**COMMON, "vars": {"warn_test": True}}

with DAG(
    "kubedbt_metrics",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=2,
    tags=["kubedbt-tests"],
):
    DbtJobOperator(task_id="build", deferrable=True, **COMMON)
    DbtJobOperator(task_id="warned_log", deferrable=False, on_warning="log", **WARNED)
    DbtJobOperator(task_id="warned_fail", deferrable=True, on_warning="fail", **WARNED)
