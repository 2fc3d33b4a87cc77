"""Run one DAG through Airflow itself (dag.test) and print a JSON report of what happened.

Each run is a separate process with its own AIRFLOW_HOME (set by the caller), so several runs can
go side by side and Airflow's global state never leaks between tests. dag.test() runs deferred
tasks' triggers in-process through their serialised form, and honours retries.

    python -m tests.e2e.run_dag DAG_FILE DAG_ID [--logical-date ISO] [--conf JSON]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
from typing import Any

REPORT_PREFIX = "KUBEDBT-REPORT "
XCOM_KEYS = (
    "return_value",
    "summary",
    "outcome",
    "job_name",
    "namespace",
    "kubectl",
    "run_results",
)


def _load_dag(path: str, dag_id: str) -> Any:
    spec = importlib.util.spec_from_file_location("e2e_dag", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dags[dag_id] if hasattr(module, "dags") else module.dag


def _xcoms(dag_run: Any) -> dict[str, dict[str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    found: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
        )
        for row in rows:
            if row.key in XCOM_KEYS:
                value = XComModel.deserialize_value(row)
                found.setdefault(f"{row.task_id}:{row.map_index}", {})[row.key] = value
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_file")
    parser.add_argument("dag_id")
    parser.add_argument("--logical-date", default=None)
    parser.add_argument("--conf", default="{}")
    args = parser.parse_args()
    dag = _load_dag(args.dag_file, args.dag_id)
    logical_date = (
        datetime.datetime.fromisoformat(args.logical_date)
        if args.logical_date
        else datetime.datetime.now(datetime.timezone.utc)
    )
    dag_run = dag.test(logical_date=logical_date, run_conf=json.loads(args.conf))
    report = {
        "dag_run_state": str(dag_run.state),
        "run_id": dag_run.run_id,
        "tasks": {
            f"{ti.task_id}:{ti.map_index}": {"state": str(ti.state), "try_number": ti.try_number}
            for ti in dag_run.get_task_instances()
        },
        "xcom": _xcoms(dag_run),
    }
    print(REPORT_PREFIX + json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
