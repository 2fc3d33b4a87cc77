"""make demo, once the chart is installed: the example DAGs run by the real Airflow deployment.

Everything goes through Airflow's REST API, as it would for a person at the UI. Two runs start
side by side: jaffle_shop (unpausing it makes the scheduler start its latest @daily run; on a
later demo, when that run exists already, one is triggered by hand), which succeeds, and
jaffle_shop_failing, whose data test fails on purpose. Both Jobs are kept, so the kubectl
commands printed at the end have a good run and a failed one to show.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.airflow.client import AirflowClient  # noqa: E402

from kubedbt.core.report import summary_lines  # noqa: E402

DAG_ID = "jaffle_shop"
FAILING_DAG_ID = "jaffle_shop_failing"
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
    return trigger(api, DAG_ID)


def trigger(api: AirflowClient, dag_id: str) -> str:
    """A run of the DAG triggered now (unpaused first: a paused DAG's runs never start)."""
    api.wait_for_dag(dag_id, timeout=180)
    if api.dag(dag_id)["is_paused"]:
        api.set_paused(dag_id, paused=False)
    run_id = api.trigger(dag_id, logical_date=datetime.datetime.now(datetime.timezone.utc))
    say(f"triggered {dag_id} run {run_id}")
    return run_id


def job_of(api: AirflowClient, dag_id: str, run_id: str) -> str:
    """The name of the Job the run's task launched (its XCom `job_name`)."""
    return str(api.xcom(dag_id, run_id, TASK_ID, "job_name"))


def failed_lines(api: AirflowClient, run_id: str) -> list[str]:
    """What the failing run reported: its outcome (kind and reason) and its summary."""
    outcome: dict[str, Any] = api.xcom(FAILING_DAG_ID, run_id, TASK_ID, "outcome")
    lines = [f"Outcome: {outcome['kind']} (retryable: {'yes' if outcome['retryable'] else 'no'})"]
    lines.append(f"Reason:  {outcome['reason']}")
    if outcome.get("fix"):
        lines.append(f"Fix:     {outcome['fix']}")
    return lines + summary_lines(api.xcom(FAILING_DAG_ID, run_id, TASK_ID, "summary"))


def kubectl_lines(good: str, failed: str) -> list[str]:
    """The commands that show both runs, ready to paste."""
    where = f"kubectl dbt -n {NAMESPACE}"
    return [
        f"  export PATH={REPO}/.venv/bin:{STATE}/bin:$PATH KUBECONFIG={STATE}/admin.kubeconfig",
        f"  {where} runs",
        f"  {where} describe {good}",
        f"  {where} results {good}",
        f"  {where} logs {good} --tail 20",
        f"  {where} describe {failed}",
        f"  {where} results {failed}",
    ]


def main() -> int:
    """Run the demo; 0 when the good run succeeded and the failing one failed as it should."""
    api = AirflowClient()
    run_id = start_run(api)
    failing_id = trigger(api, FAILING_DAG_ID)
    say(f"waiting for {DAG_ID} run {run_id} (dbt build on DuckDB, deferred to the triggerer)")
    say(f"and for {FAILING_DAG_ID} run {failing_id} (the same build with a failing data test)")
    run = api.wait_for_dag_run(DAG_ID, run_id, timeout=900)
    failing = api.wait_for_dag_run(FAILING_DAG_ID, failing_id, timeout=900)
    if run["state"] != "success" or failing["state"] != "failed":
        for dag_id, this in ((DAG_ID, run), (FAILING_DAG_ID, failing)):
            ti = api.task_instance(dag_id, this["dag_run_id"], TASK_ID)
            log = api.task_log(dag_id, this["dag_run_id"], TASK_ID, ti["try_number"])
            say(f"{dag_id} ended {this['state']}; the end of its task log:\n" + log[-6000:])
        return 1
    good, failed = job_of(api, DAG_ID, run_id), job_of(api, FAILING_DAG_ID, failing_id)
    print(f"\nJob: {NAMESPACE}/{good}")
    print("\n".join(summary_lines(api.xcom(DAG_ID, run_id, TASK_ID, "return_value"))))
    print(f"\nJob: {NAMESPACE}/{failed}  (jaffle_shop_failing: fails on purpose, var fail_test)")
    print("\n".join(failed_lines(api, failing_id)))
    print(
        f"\nAirflow UI: {api.base_url}/dags/{DAG_ID}/runs/{run_id}  (every user is admin; no login)"
    )
    print('Both Jobs are kept (the good one by on_finish_action="keep_job"); look at them:')
    print("\n".join(kubectl_lines(good, failed)))
    print(
        f"Airflow's logs: {STATE}/airflow/logs; make airflow-down stops it, "
        "make cluster-down stops all."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
