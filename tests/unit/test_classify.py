"""The classifier on Job, pod, ConfigMap and Event statuses recorded from the real cluster.

The files under fixtures/status were written by `python -m tests.cluster.record_fixtures`: one
Job per scenario, rendered by kubedbt itself, with the dbt and sidecar images. Each scenario is
judged the way the watch and `kubectl dbt describe` judge a run (kubedbt.core.progress.judge):
the recorded objects are listed into a RunProgress, which decides at a given moment whether the
run is over and how, and only then is the evidence classified. So a kind that the watch never
reaches cannot pass here either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import pytest

from kubedbt.core import naming
from kubedbt.core.classify import (
    RETRYABLE,
    Evidence,
    Outcome,
    OutcomeKind,
    classify,
    container_status,
    event_lines,
    latest_pod,
)
from kubedbt.core.naming import DBT_CONTAINER
from kubedbt.core.progress import RunProgress, judge, timestamp
from kubedbt.core.results import UPLOAD_STATUS, decode

FIXTURES = Path(__file__).parent / "fixtures" / "status"
SCENARIOS = (
    "success",
    "test_failure",
    "model_error",
    "parse_error",
    "oom_killed",
    "image_pull",
    "image_not_found",
    "sidecar_image_not_found",
    "invalid_image",
    "unschedulable",
    "missing_secret",
    "no_dbt_in_image",
    "restore_failed",
    "warehouse_unreachable",
    "results_missing",
    "sidecar_oom",
    "sources_stale",
    "sources_warn",
    "evicted",
    "deadline_exceeded",
    "deleted",
)


@cache
def _recorded(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def recorded(name: str) -> dict[str, Any]:
    """A fresh copy of one scenario's recorded Job, pods and ConfigMap."""
    data: dict[str, Any] = json.loads(_recorded(name))
    return data


def upload_status(configmap: dict[str, Any]) -> str:
    return str(configmap["metadata"]["annotations"][UPLOAD_STATUS])


def memory_limit(job: dict[str, Any]) -> str | None:
    (dbt,) = (c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "dbt")
    limit = ((dbt.get("resources") or {}).get("limits") or {}).get("memory")
    return None if limit is None else str(limit)


def disrupted(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "DisruptionTarget" and c["status"] == "True" for c in conditions)


# --- the recordings show what they are named after ---


def summary(name: str) -> tuple[str | None, list[str], str]:
    """The Job's terminal condition, each pod's dbt state and disruption, the upload status."""
    data = recorded(name)
    terminal = [
        f"{c['type']}/{c['reason']}"
        for c in data["job"]["status"].get("conditions") or []
        if c["type"] in ("Complete", "Failed") and c["status"] == "True"
    ]
    pods = []
    for pod in data["pods"]:
        state = (container_status(pod, DBT_CONTAINER) or {}).get("state") or {}
        if "terminated" in state:
            described = "terminated/{reason}/{exitCode}".format(**state["terminated"])
        elif "waiting" in state:
            described = f"waiting/{state['waiting']['reason']}"
        elif "running" in state:
            described = "running"
        else:
            scheduled = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
            described = "no-status/PodScheduled={status}/{reason}".format(**scheduled[0])
        pods.append(described + (" DisruptionTarget" if disrupted(pod) else "") + _init(pod))
    return (terminal[0] if terminal else None), pods, upload_status(data["configmap"])


def _init(pod: dict[str, Any]) -> str:
    """The init containers that did not simply start (or, restore-state, complete)."""
    notes = []
    for status in pod["status"].get("initContainerStatuses") or []:
        state = status.get("state") or {}
        last = (status.get("lastState") or {}).get("terminated")
        if "waiting" in state and state["waiting"]["reason"] != "PodInitializing":
            notes.append(f" {status['name']}=waiting/{state['waiting']['reason']}")
        elif "terminated" in state and state["terminated"]["exitCode"] != 0:
            notes.append(f" {status['name']}=terminated/{state['terminated']['exitCode']}")
        elif last:
            notes.append(f" {status['name']}=restarted/{last['reason']}")
    return "".join(notes)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("success", ("Complete/CompletionsReached", ["terminated/Completed/0"], "uploaded")),
        ("test_failure", ("Failed/PodFailurePolicy", ["terminated/Error/1"], "uploaded")),
        ("model_error", ("Failed/PodFailurePolicy", ["terminated/Error/1"], "uploaded")),
        ("parse_error", ("Failed/PodFailurePolicy", ["terminated/Error/2"], "no-results")),
        (
            "oom_killed",
            ("Failed/BackoffLimitExceeded", ["terminated/OOMKilled/137"], "no-results"),
        ),
        ("image_pull", (None, ["waiting/ErrImagePull"], "pending")),
        ("invalid_image", (None, ["waiting/InvalidImageName"], "pending")),
        ("unschedulable", (None, ["no-status/PodScheduled=False/Unschedulable"], "pending")),
        ("missing_secret", (None, ["waiting/CreateContainerConfigError"], "pending")),
        (
            "evicted",
            (None, ["terminated/Error/137 DisruptionTarget", "running"], "no-results"),
        ),
        (
            "deadline_exceeded",
            ("Failed/DeadlineExceeded", ["terminated/Error/137"], "no-results"),
        ),
        ("deleted", ("Failed/BackoffLimitExceeded", ["terminated/Error/137"], "no-results")),
        ("image_not_found", (None, ["waiting/ErrImagePull"], "pending")),
        (
            "sidecar_image_not_found",
            (None, ["waiting/PodInitializing results-uploader=waiting/ErrImagePull"], "pending"),
        ),
        (
            "no_dbt_in_image",
            ("Failed/BackoffLimitExceeded", ["terminated/StartError/128"], "no-results"),
        ),
        (
            "restore_failed",
            (
                "Failed/BackoffLimitExceeded",
                ["waiting/PodInitializing restore-state=terminated/1"],
                "pending",
            ),
        ),
        (
            "warehouse_unreachable",
            ("Failed/PodFailurePolicy", ["terminated/Error/2"], "no-results"),
        ),
        ("results_missing", ("Failed/PodFailurePolicy", ["terminated/Error/1"], "pending")),
        (
            "sidecar_oom",
            (
                "Failed/PodFailurePolicy",
                ["terminated/Error/1 results-uploader=terminated/137"],
                "pending",
            ),
        ),
        ("sources_stale", ("Failed/PodFailurePolicy", ["terminated/Error/1"], "uploaded")),
        ("sources_warn", ("Complete/CompletionsReached", ["terminated/Completed/0"], "uploaded")),
    ],
)
def test_recording_shows_its_scenario(
    name: str, expected: tuple[str | None, list[str], str]
) -> None:
    # Guards the fixtures: a re-recording that missed its state of interest fails here first.
    assert summary(name) == expected


# --- the outcome of each recorded scenario, judged as the watch judges it ---

# When the run is judged: the moment its recording ended, or just past a deadline the watch keeps.
At = Literal["recorded", "startup", "execution"]
STARTUP_TIMEOUT = 300.0
EXECUTION_TIMEOUT = 3600.0


def judged(name: str, at: At) -> Outcome | None:
    """What the watch reports for a recorded scenario at `at` (None: it would still wait)."""
    data = recorded(name)
    progress = RunProgress(startup_timeout=STARTUP_TIMEOUT, execution_timeout=EXECUTION_TIMEOUT)
    progress.listed("job", [data["job"]])
    progress.listed("pod", data["pods"])
    progress.listed("configmap", [data["configmap"]])
    created = timestamp(data["job"], "creationTimestamp")
    assert created is not None
    now = {
        "recorded": float(data["recorded_at"]),
        "startup": created + STARTUP_TIMEOUT + 1,
        "execution": created + EXECUTION_TIMEOUT + 1,
    }[at]
    configmap = data["configmap"]
    results = decode(configmap) if upload_status(configmap) != "pending" else None
    return judge(progress, now, results=results, events=data["events"])


@dataclass(frozen=True)
class Case:
    """One recorded scenario, when it is judged, and the outcome it must lead to."""

    fixture: str
    kind: OutcomeKind
    retryable: bool
    exit_code: int | None
    words: tuple[str, ...]
    at: At = "recorded"


def case(name: str, *args: Any, **kwargs: Any) -> Any:
    return pytest.param(Case(*args, **kwargs), id=name)


CASES = [
    case("success", "success", "success", False, 0, ("dbt succeeded",)),
    case(
        "test_failure",
        "test_failure",
        "tests_failed",
        False,
        1,
        ("1 data test(s) failed", "assert_order_amount_matches_payments"),
    ),
    case(
        "model_error",
        "model_error",
        "nodes_errored",
        False,
        1,
        ("1 dbt node(s) errored", "model.jaffle_shop.orders"),
    ),
    case("parse_error", "parse_error", "dbt_error", False, 2, ("fail_parse is set",)),
    case(
        "oom_killed",
        "oom_killed",
        "oom_killed",
        False,
        137,
        ("OOMKilled", "container_resources.limits.memory (now 300Mi)"),
    ),
    # A registry that is down: waited for, then reported as a pull failure (retryable).
    case(
        "image_pull-startup",
        "image_pull",
        "image_pull_failed",
        True,
        None,
        ("ErrImagePull", "connection refused", "events: "),
        at="startup",
    ),
    # A tag the registry does not have: over at once, whichever container's image it is.
    case("image_not_found", "image_not_found", "image_invalid", False, None, ("not found",)),
    case(
        "sidecar_image_not_found",
        "sidecar_image_not_found",
        "image_invalid",
        False,
        None,
        ("image of kubedbt's results-uploader does not exist", "sidecar:no-such-tag"),
    ),
    case("invalid_image", "invalid_image", "image_invalid", False, None, ("must be lowercase",)),
    case(
        "unschedulable-startup",
        "unschedulable",
        "startup_timeout",
        True,
        None,
        ("Unschedulable", "FailedScheduling"),
        at="startup",
    ),
    case(
        "missing_secret",
        "missing_secret",
        "container_config_error",
        False,
        None,
        ('secret "does-not-exist" not found',),
    ),
    case(
        "no_dbt_in_image",
        "no_dbt_in_image",
        "container_start_failed",
        False,
        128,
        ("executable file not found",),
    ),
    case(
        "restore_failed",
        "restore_failed",
        "init_failed",
        False,
        1,
        ("restoring the earlier try's run_results", "retry_strategy='full'"),
    ),
    case(
        "sources_stale",
        "sources_stale",
        "sources_stale",
        False,
        1,
        ("1 source(s) are stale", "source.jaffle_shop.loader.schemata", "error_after 24 hour"),
    ),
    case("sources_warn", "sources_warn", "success", False, 0, ("dbt succeeded",)),
    case(
        "warehouse_unreachable",
        "warehouse_unreachable",
        "warehouse_unreachable",
        True,
        2,
        ("could not reach the warehouse", "Connection refused"),
    ),
    case(
        "results_missing",
        "results_missing",
        "results_missing",
        True,
        1,
        ("dbt exited 1 but its results were not uploaded",),
    ),
    case(
        "sidecar_oom",
        "sidecar_oom",
        "sidecar_failed",
        False,
        1,
        ("OOMKilled", "sidecar_resources.limits.memory (now 24Mi)"),
    ),
    case(
        "deadline_exceeded",
        "deadline_exceeded",
        "deadline_exceeded",
        False,
        None,
        ("activeDeadlineSeconds",),
    ),
    case("deleted", "deleted", "killed", True, 137, ("exit code 137",)),
]


@pytest.mark.parametrize("case", CASES)
def test_outcome(case: Case) -> None:
    outcome = judged(case.fixture, case.at)

    assert outcome is not None, "the watch would still be waiting"
    assert (outcome.kind, outcome.retryable, outcome.exit_code) == (
        case.kind,
        case.retryable,
        case.exit_code,
    ), outcome.reason
    for word in case.words:
        assert word in outcome.reason
    assert outcome.succeeded is (case.kind == "success")


@pytest.mark.parametrize("case", CASES)
def test_the_reason_is_one_line_and_no_fix_is_offered_for_what_is_not_a_misconfiguration(
    case: Case,
) -> None:
    # None of these recordings is a misconfiguration kubedbt recognises (tests/unit/test_diagnose.py
    # has those); their reasons state the error on one line, never a traceback's head.
    outcome = judged(case.fixture, case.at)
    assert outcome is not None
    assert "\n" not in outcome.reason
    assert "Traceback" not in outcome.reason
    assert outcome.fix is None


def test_a_parse_error_states_dbts_error_on_one_line() -> None:
    outcome = judged("parse_error", "recorded")
    assert outcome is not None
    assert outcome.reason == (
        "dbt could not run: Compilation Error in model orders (models/marts/orders.sql): kubedbt "
        "fault injection: fail_parse is set > in macro fail_parse_if_requested (macros/faults.sql) "
        "> called by model orders (models/marts/orders.sql)"
    )


@pytest.mark.parametrize("name", ["image_pull", "unschedulable"])
def test_what_may_still_start_is_waited_for_until_startup_timeout(name: str) -> None:
    assert judged(name, "recorded") is None


def test_the_pod_of_an_eviction_alone_is_disrupted() -> None:
    # The run as it stood when the evicted pod ended, before the Job created its replacement.
    data = recorded("evicted")
    pods = tuple(p for p in data["pods"] if disrupted(p))
    outcome = classify(Evidence(job=data["job"], pods=pods))
    assert (outcome.kind, outcome.retryable) == ("disrupted", True)


def test_an_eviction_whose_replacement_never_starts_is_a_disruption() -> None:
    # An eviction alone never ends a run: the Job replaces the pod (its podFailurePolicy ignores
    # disruptions). When the replacement cannot start either, the disruption is what is reported.
    evicted, stuck = recorded("evicted"), recorded("unschedulable")
    old = next(p for p in evicted["pods"] if disrupted(p))
    old = {**old, "metadata": {**old["metadata"], "creationTimestamp": "2000-01-01T00:00:00Z"}}
    progress = RunProgress(startup_timeout=STARTUP_TIMEOUT)
    progress.listed("job", [stuck["job"]])
    progress.listed("pod", [old, *stuck["pods"]])
    progress.listed("configmap", [stuck["configmap"]])
    created = timestamp(stuck["pods"][-1], "creationTimestamp")
    assert created is not None
    outcome = judge(progress, created + STARTUP_TIMEOUT + 1)
    assert outcome is not None
    assert (outcome.kind, outcome.retryable) == ("disrupted", True)
    assert "EvictionByEvictionAPI" in outcome.reason
    assert "Unschedulable" in outcome.reason


def test_an_old_disruption_does_not_hide_an_oom_kill_of_the_newest_pod() -> None:
    evicted, oom = recorded("evicted"), recorded("oom_killed")
    old = next(p for p in evicted["pods"] if disrupted(p))
    newest = {**oom["pods"][-1], "metadata": {**oom["pods"][-1]["metadata"]}}
    newest["metadata"]["creationTimestamp"] = "2999-01-01T00:00:00Z"
    outcome = classify(Evidence(job=oom["job"], pods=(old, newest)))
    assert outcome.kind == "oom_killed", outcome.reason


@pytest.mark.parametrize("name", ["image_pull", "unschedulable"])
def test_execution_timeout_wins_over_the_pod_state(name: str) -> None:
    outcome = classify(
        Evidence(job=recorded(name)["job"], pods=recorded(name)["pods"], timed_out="execution")
    )

    assert (outcome.kind, outcome.retryable) == ("execution_timeout", True)
    assert "execution_timeout" in outcome.reason


def test_newest_pod_is_the_replacement_after_an_eviction() -> None:
    pods = recorded("evicted")["pods"]

    newest = latest_pod(pods)

    assert newest is not None
    assert [disrupted(p) for p in pods] == [True, False]
    assert newest["metadata"]["name"] == pods[1]["metadata"]["name"]
    assert latest_pod(list(reversed(pods))) == newest


def test_every_fixture_is_recorded() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(SCENARIOS)


def test_every_outcome_kind_has_a_retry_decision() -> None:
    kinds = get_args(OutcomeKind)

    assert len(set(kinds)) == len(kinds)
    assert set(RETRYABLE) == set(kinds)
    assert all(isinstance(RETRYABLE[kind], bool) for kind in kinds)


def test_an_admission_refusal_in_an_event_keeps_who_refused_not_what_it_said() -> None:
    """A pod refused by a policy that echoes its env values leaves them in the Job's event."""
    refused = (
        "Error creating: pods \"dbt-x-abcde\" is forbidden: ValidatingAdmissionPolicy 'echo' "
        "with binding 'echo' denied request: env WAREHOUSE_PASSWORD=hunter2-secret"
    )
    quota = 'Error creating: pods "dbt-x-abcde" is forbidden: exceeded quota: q, requested: cpu=2'
    events = [
        {"type": "Warning", "reason": "FailedCreate", "message": m, "count": 1,
         "involvedObject": {"kind": "Job", "name": "dbt-x"}}
        for m in (refused, quota)
    ]  # fmt: skip
    lines = event_lines(events)
    assert "hunter2-secret" not in " ".join(lines)
    assert "ValidatingAdmissionPolicy 'echo' with binding 'echo' denied request" in lines[0]
    assert "message withheld" in lines[0]
    assert lines[1] == f"Job/dbt-x: FailedCreate: {quota}"


def _stopped(job: dict[str, Any], reason: str = "task-killed") -> dict[str, Any]:
    """The Job as kubedbt's stop leaves it (RunClient.stop_run)."""
    annotations = job["metadata"].setdefault("annotations", {})
    annotations[naming.STOP_REASON_ANNOTATION] = reason
    annotations[naming.STOP_REQUESTED_ANNOTATION] = "2026-11-23T18:00:00+00:00"
    return job


@pytest.mark.parametrize(
    ("name", "kind"),
    [("oom_killed", "oom_killed"), ("model_error", "nodes_errored"), ("success", "success")],
)
def test_a_stop_after_dbt_ended_on_its_own_keeps_dbts_verdict(name: str, kind: str) -> None:
    # on_kill or the execution timeout can patch a Job whose dbt had already ended.
    data = recorded(name)
    configmap = data.get("configmap")
    results_read = decode(configmap) if configmap else None
    evidence = Evidence(job=_stopped(data["job"]), pods=data["pods"], results=results_read)
    assert classify(evidence).kind == kind


@pytest.mark.parametrize("name", ["unschedulable", "image_pull"])
def test_a_stop_before_dbt_started_is_a_cancellation(name: str) -> None:
    data = recorded(name)
    outcome = classify(Evidence(job=_stopped(data["job"]), pods=data["pods"]))
    assert outcome.kind == "cancelled"
    assert outcome.reason.endswith("before dbt started")
    assert "the Airflow task was stopped" in outcome.reason
