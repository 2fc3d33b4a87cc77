"""Run identity and state read from Jobs recorded on the real cluster (tests/unit/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubedbt.cli.errors import USAGE, CliError
from kubedbt.cli.run_info import (
    RunFilter,
    RunInfo,
    job_status,
    newest_first,
    pick_run,
)
from kubedbt.core.classify import memory_limit

RECORDED = Path(__file__).parents[1] / "unit" / "fixtures" / "status"


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize(
    ("scenario", "status"),
    [
        ("success", "Succeeded"),
        ("test_failure", "Failed"),
        ("parse_error", "Failed"),
        ("oom_killed", "Failed"),
        ("deadline_exceeded", "Failed"),
        ("image_pull", "Running"),  # the Job has an active pod; describe says why it waits
        ("unschedulable", "Running"),
        ("evicted", "Running"),  # replaced after the disruption
    ],
)
def test_status_from_recorded_jobs(scenario: str, status: str) -> None:
    assert job_status(recorded(scenario)["job"]) == status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, "Pending"),
        ({"active": 0}, "Pending"),
        ({"active": 1}, "Running"),
        # While the pods still terminate, only the Target conditions are set.
        ({"active": 1, "conditions": [{"type": "FailureTarget", "status": "True"}]}, "Failed"),
        ({"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}, "Succeeded"),
        ({"active": 1, "conditions": [{"type": "Failed", "status": "False"}]}, "Running"),
    ],
)
def test_status_from_conditions_and_active_pods(status: dict[str, Any], expected: str) -> None:
    assert job_status({"status": status}) == expected


def test_run_info_from_a_recorded_job() -> None:
    run = RunInfo.from_job(recorded("oom_killed")["job"])
    assert (run.dag_id, run.task, run.run_id, run.try_number) == (
        "record_fixtures",
        "oom_killed",
        "recorded",
        "1",
    )
    assert run.command.startswith("dbt build --select +customers")
    assert run.results_configmap == f"{run.name}-results"
    assert run.created is not None
    assert run.created.tzinfo is not None
    assert memory_limit(recorded("oom_killed")["job"], "dbt") == "300Mi"
    assert memory_limit(recorded("success")["job"], "dbt") is None
    assert memory_limit(recorded("success")["job"], "results-uploader") == "128Mi"


def _job(name: str, created: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "creationTimestamp": created,
            "annotations": {f"kubedbt.io/{k.replace('_', '-')}": v for k, v in annotations.items()},
        }
    }


def test_a_mapped_task_shows_its_index() -> None:
    run = RunInfo.from_job(_job("j", "2026-11-01T00:00:00Z", task_id="t", map_index="3"))
    assert run.task == "t[3]"


def test_newest_first_then_by_name() -> None:
    jobs = [
        _job("b", "2026-11-01T00:00:00Z"),
        _job("c", "2026-11-01T00:00:05Z"),
        _job("a", "2026-11-01T00:00:00Z"),
        _job("old", "not a time"),
    ]
    assert [r.name for r in newest_first([RunInfo.from_job(j) for j in jobs])] == [
        "c",
        "a",
        "b",
        "old",
    ]


def test_filters_match_the_original_ids_exactly() -> None:
    run = RunInfo.from_job(
        _job("j", "2026-11-01T00:00:00Z", dag_id="d", task_id="t", run_id="manual__1+2")
    )
    assert RunFilter(dag_id="d", run_id="manual__1+2").matches(run)
    assert not RunFilter(run_id="manual__1").matches(run)
    assert not RunFilter(status="Running").matches(run)
    assert RunFilter(status="Pending").matches(run)


def test_pick_a_run_by_name_or_unique_prefix() -> None:
    jobs = [_job(n, "2026-11-01T00:00:00Z") for n in ("dbt-a-t1", "dbt-a-t10", "dbt-b-t1")]
    assert pick_run(jobs, "dbt-a-t1", "ns")["metadata"]["name"] == "dbt-a-t1"  # exact wins
    assert pick_run(jobs, "dbt-b", "ns")["metadata"]["name"] == "dbt-b-t1"
    with pytest.raises(CliError, match='"dbt-a" matches 2 runs') as ambiguous:
        pick_run(jobs, "dbt-a", "ns")
    assert ambiguous.value.exit_code == USAGE
    with pytest.raises(CliError, match="list the runs with: kubectl dbt runs -n ns") as missing:
        pick_run(jobs, "dbt-c", "ns")
    assert missing.value.exit_code == 1
