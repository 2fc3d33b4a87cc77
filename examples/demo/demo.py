"""make demo, once the chart is installed: the example DAG run by the real Airflow deployment.

Everything goes through Airflow's REST API, as it would for a person at the UI: the DAG is
unpaused (the scheduler then starts its latest @daily run; on a later demo, when that run exists
already, a run is triggered by hand), the run is waited for, and the task's return value (the run
summary) is printed with the addresses and kubectl commands that show the run.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.airflow.client import AirflowClient  # noqa: E402

from kubedbt.core.report import summary_lines  # noqa: E402

DAG_ID = "jaffle_shop"
TASK_ID = "dbt_build"
NAMESPACE = "kubedbt-demo"
STATE = "/var/lib/kubedbt-cluster"


def say(text: str) -> None:
    """A progress line on stderr, so stdout is the result."""
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def start_run(api: AirflowClient) -> str:
    """The run the scheduler starts on unpausing the DAG, or one triggered by hand."""
    api.wait_for_dag(DAG_ID, timeout=180)
    if api.dag(DAG_ID)["is_paused"]:
        api.set_paused(DAG_ID, paused=False)
        say("unpaused jaffle_shop; waiting for the scheduler to start its latest @daily run")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = api.dag_runs(DAG_ID)
            if runs:
                return str(runs[0]["dag_run_id"])
            time.sleep(1)
    run_id = api.trigger(DAG_ID, logical_date=datetime.datetime.now(datetime.timezone.utc))
    say(f"triggered {run_id}")
    return run_id


def main() -> int:
    """Run the demo; 0 when the run succeeded."""
    api = AirflowClient()
    run_id = start_run(api)
    say(f"waiting for {DAG_ID} run {run_id} (dbt build on DuckDB, deferred to the triggerer)")
    run = api.wait_for_dag_run(DAG_ID, run_id, timeout=900)
    ti = api.task_instance(DAG_ID, run_id, TASK_ID)
    if run["state"] != "success":
        log = api.task_log(DAG_ID, run_id, TASK_ID, ti["try_number"])
        say(f"the run ended {run['state']}; the end of its task log:\n" + log[-6000:])
        return 1
    job = api.xcom(DAG_ID, run_id, TASK_ID, "job_name")
    print(f"\nJob: {NAMESPACE}/{job}")
    print("\n".join(summary_lines(api.xcom(DAG_ID, run_id, TASK_ID, "return_value"))))
    print(
        f"""
Airflow UI: {api.base_url}/dags/{DAG_ID}/runs/{run_id}  (every user is admin; no login)
The run's Job is kept (on_finish_action="keep_job"); look at it with kubectl:
  export PATH={REPO}/.venv/bin:{STATE}/bin:$PATH KUBECONFIG={STATE}/admin.kubeconfig
  kubectl dbt -n {NAMESPACE} runs
  kubectl dbt -n {NAMESPACE} describe {job}
  kubectl dbt -n {NAMESPACE} results {job}
  kubectl dbt -n {NAMESPACE} logs {job} --tail 20
Airflow's logs: {STATE}/airflow/logs; make airflow-down stops it, make cluster-down stops all."""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
