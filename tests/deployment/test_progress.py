"""Live progress in the task log of a deferred task, on the real Airflow deployment.

`kubedbt_progress` (tests/deployment/dags/kubedbt_progress.py) builds the example project with the
customers model held for SLOW_SECONDS. While the task is still deferred, the task log (what a DAG
author reads in the UI, through the REST API) already says how far dbt got and which node it is
running; at the end the task succeeds, having written a bounded number of progress lines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from tests.airflow.client import AirflowClient

pytestmark = pytest.mark.cluster

DAG_ID = "kubedbt_progress"
TASK = "build"
SLOW_SECONDS = 150
# dbt build: 9 of 28 nodes done (6 success, 3 pass), running model.jaffle_shop.customers for 1m02s
PROGRESS = re.compile(
    r"dbt build: (\d+) of 28 nodes done \([^)]*\), running model\.jaffle_shop\.customers for \S+"
)


def test_the_task_log_shows_progress_while_deferred(
    airflow: AirflowClient, namespace: str, measured: Callable[[str], None]
) -> None:
    airflow.wait_for_dag(DAG_ID, timeout=120)
    airflow.set_paused(DAG_ID, paused=False)
    run_id = airflow.trigger(DAG_ID, conf={"namespace": namespace, "slow_seconds": SLOW_SECONDS})
    airflow.wait_for_task_state(DAG_ID, run_id, TASK, ["deferred"], timeout=180)
    deferred_at = time.monotonic()

    seen: list[str] = []
    deadline = time.monotonic() + SLOW_SECONDS
    while time.monotonic() < deadline and not seen:
        seen = PROGRESS.findall(airflow.task_log(DAG_ID, run_id, TASK, 1))
        if not seen:
            time.sleep(5)
    state = airflow.task_instance(DAG_ID, run_id, TASK)["state"]
    assert seen, airflow.task_log(DAG_ID, run_id, TASK, 1)[-3000:]
    assert state == "deferred", "the progress line must come while dbt runs, not at the end"
    first_seen = time.monotonic() - deferred_at

    run = airflow.wait_for_dag_run(DAG_ID, run_id, timeout=SLOW_SECONDS + 300)
    assert run["state"] == "success", run
    log = airflow.task_log(DAG_ID, run_id, TASK, 1)
    lines = [line for line in log.splitlines() if "nodes done" in line]
    done = [int(n) for n in PROGRESS.findall(log)]
    assert done == sorted(done), lines
    # At most one line per 30 s, plus the first: a 150 s model gives a handful, not hundreds.
    assert 1 <= len(lines) <= (SLOW_SECONDS + 60) / 30 + 2, lines
    measured(
        f"first progress line {first_seen:.0f} s after the task deferred; "
        f"{len(lines)} progress lines over a {SLOW_SECONDS} s model"
    )
