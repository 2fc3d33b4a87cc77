"""What a new try does about its task instance's existing Jobs (kubedbt.core.tries).

Jobs are rendered by kubedbt itself, so their labels and annotations are the real ones; their
status is set the way the Job controller sets it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.core.naming import dag_run_key, task_instance_selector
from kubedbt.core.tries import (
    LaunchPlan,
    TryJob,
    plan_launch,
    resumable,
    try_jobs,
    why_not_resume,
)
from tests.unit.dbt_runs import DBT, DbtRun, run_dbt

SPEC = DbtRunSpec(command="build", image="kubedbt/dbt:dev", namespace="analytics")
STARTED = dag_run_key("2026-11-23T03:00:00.123456+00:00", 0)
RESTARTED = dag_run_key("2026-11-23T05:00:00.654321+00:00", 0)  # deleted and triggered again
CLEARED = dag_run_key("2026-11-23T03:00:00.123456+00:00", 1)  # same start, a task cleared


def identity(try_number: int, started: str | None = STARTED, **kwargs: Any) -> RunIdentity:
    return RunIdentity(
        "daily", "dbt_build", "manual__1", try_number=try_number, dag_run_key=started,
        **kwargs,
    )  # fmt: skip


def job(
    try_number: int, *, started: str | None = STARTED, finished: bool = False, **kwargs: Any
) -> dict[str, Any]:
    rendered: dict[str, Any] = dict(render_job(SPEC, identity(try_number, started, **kwargs)))
    if finished:
        rendered["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    return rendered


def plan(try_number: int, *jobs: dict[str, Any]) -> LaunchPlan:
    me = identity(try_number)
    return plan_launch(me, try_jobs(me, jobs))


def test_first_try_on_a_clean_namespace_just_creates() -> None:
    assert plan(1) == LaunchPlan()


def test_an_earlier_try_still_running_is_adopted() -> None:
    running = job(1)
    result = plan(2, running)
    assert result.adopt is not None
    assert result.adopt.name == running["metadata"]["name"]
    assert result.must_wait == ()


def test_finished_earlier_tries_are_left_alone() -> None:
    assert plan(3, job(1, finished=True), job(2, finished=True)) == LaunchPlan()


def test_only_the_newest_running_earlier_try_is_adopted_the_older_is_stopped() -> None:
    first, second = job(1), job(2)
    result = plan(3, first, second)
    assert result.adopt is not None
    assert result.adopt.try_number == 2
    assert result.stop == (first["metadata"]["name"],)


@pytest.mark.parametrize("earlier", [RESTARTED, CLEARED])
def test_a_running_job_of_another_start_of_the_dag_run_is_stopped_not_adopted(earlier: str) -> None:
    stale = job(1, started=earlier)
    result = plan(2, stale)
    assert result.adopt is None
    assert result.stop == (stale["metadata"]["name"],)


def test_dag_run_key_tells_starts_apart() -> None:
    assert len({STARTED, RESTARTED, CLEARED}) == 3
    assert dag_run_key(None, None) == dag_run_key(None, 0)


def test_this_tries_name_held_by_another_dag_run_is_freed() -> None:
    stale = job(1, started=RESTARTED, finished=True)
    assert plan(1, stale).stop == (stale["metadata"]["name"],)


def test_this_tries_own_job_is_left_for_the_create_to_adopt() -> None:
    assert plan(1, job(1)) == LaunchPlan()


def test_a_job_being_deleted_is_waited_for() -> None:
    deleting = job(1)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-23T03:05:00Z"
    result = plan(2, deleting)
    assert result.adopt is None
    assert result.wait_for == (deleting["metadata"]["name"],)


def test_jobs_of_other_task_instances_do_not_count() -> None:
    other_map_index = job(1, map_index=3)
    other_run = render_job(SPEC, RunIdentity("daily", "dbt_build", "manual__2"))
    me = identity(2)
    assert try_jobs(me, [other_map_index, dict(other_run)]) == []


def test_try_jobs_reads_try_and_dag_run() -> None:
    (found,) = try_jobs(identity(2), [job(1, finished=True)])
    assert found == TryJob(
        name=job(1)["metadata"]["name"],
        try_number=1,
        dag_run_key=STARTED,
        finished=True,
        terminating=False,
    )


@pytest.mark.parametrize(
    ("mine", "expected"),
    [
        (identity(1), "kubedbt.io/run-id=manual__1,!kubedbt.io/map-index"),
        (identity(1, map_index=4), "kubedbt.io/run-id=manual__1,kubedbt.io/map-index=4"),
    ],
)
def test_task_instance_selector(mine: RunIdentity, expected: str) -> None:
    selector = task_instance_selector(mine)
    assert selector.startswith("app.kubernetes.io/name=kubedbt,kubedbt.io/dag-id=daily,")
    assert selector.endswith(expected)
    assert "try-number" not in selector


def test_resumable_is_newest_earlier_try_of_this_dag_run() -> None:
    configmaps = [
        dict(render_results_configmap(SPEC, identity(n, started)))
        for n, started in [(1, STARTED), (2, STARTED), (3, STARTED), (2, RESTARTED)]
    ]
    found = resumable(identity(3), configmaps)
    assert [c["metadata"]["annotations"]["kubedbt.io/try-number"] for c in found] == ["2", "1"]
    assert {c["metadata"]["annotations"]["kubedbt.io/dag-run-key"] for c in found} == {STARTED}


# --- whether an earlier try's run_results can be resumed, on what real dbt wrote ---


@pytest.fixture(scope="module")
def nothing_ran(tmp_path_factory: pytest.TempPathFactory) -> DbtRun:
    """A build whose selection matches nothing: dbt exits 0 with run_results of no node."""
    if not DBT.exists():
        pytest.fail(f"no dbt at {DBT}: run `make dbt-venv` (make test-unit does)")
    work = tmp_path_factory.mktemp("nothing")
    return run_dbt(work, "nothing", "build", "--select", "no_such_model")


def test_run_results_of_no_node_are_not_resumed(nothing_ran: DbtRun, tmp_path: Path) -> None:
    written = json.loads((nothing_ran.target_path / "run_results.json").read_text())
    assert (nothing_ran.exit_code, written["results"]) == (0, [])
    assert why_not_resume(written) == "its run_results record no node that ran"
    # Why: dbt retry cannot resume them; the try would fail although the full command may not.
    state = tmp_path / "state"
    state.mkdir()
    (state / "run_results.json").write_text(json.dumps(written))
    retried = run_dbt(tmp_path, "retry", "retry", "--state", str(state))
    assert retried.exit_code == 2
    assert "Could not find previous run" in retried.stdout


def test_run_results_where_every_node_succeeded_are_not_resumed(
    dbt_runs: dict[str, DbtRun],
) -> None:
    passed = json.loads((dbt_runs["success"].target_path / "run_results.json").read_text())
    assert why_not_resume(passed) == "its run_results record no node for dbt retry to rerun"


def test_run_results_with_failed_nodes_are_resumed(dbt_runs: dict[str, DbtRun]) -> None:
    failed = json.loads((dbt_runs["fail_model"].target_path / "run_results.json").read_text())
    assert why_not_resume(failed) is None
    assert why_not_resume(None) == "it left no run_results"
