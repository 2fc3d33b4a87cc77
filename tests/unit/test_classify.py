"""The classifier on Job, pod and ConfigMap statuses recorded from the real cluster.

The files under fixtures/status were written by `python -m tests.cluster.record_fixtures`: one
Job per scenario, rendered by kubedbt itself, with the dbt and sidecar images. Evidence is built
the way kubedbt.io.watch builds it: the results ConfigMap is decoded only when the run ended
(no watcher timeout) and the sidecar got to write it, and memory_limit is the dbt container's
limit, as the operator passes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

import pytest

from kubedbt.core.classify import (
    DBT_CONTAINER,
    RETRYABLE,
    Evidence,
    OutcomeKind,
    classify,
    container_status,
    latest_pod,
)
from kubedbt.core.results import UPLOAD_STATUS, decode

FIXTURES = Path(__file__).parent / "fixtures" / "status"
SCENARIOS = (
    "success",
    "test_failure",
    "model_error",
    "parse_error",
    "oom_killed",
    "image_pull",
    "invalid_image",
    "unschedulable",
    "missing_secret",
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


PodChoice = Literal["all", "disrupted"]


def evidence(
    name: str,
    *,
    timed_out: Literal["startup", "execution"] | None = None,
    pods: PodChoice = "all",
) -> Evidence:
    """What the watcher would hand the classifier for a recorded scenario.

    pods="disrupted" keeps only the disrupted pod: the run as it stood when that pod ended, before
    the Job created its replacement.
    """
    data = recorded(name)
    chosen = data["pods"] if pods == "all" else [p for p in data["pods"] if disrupted(p)]
    assert chosen, f"{name}: no pod to judge by"
    configmap = data["configmap"]
    results = None
    if timed_out is None and upload_status(configmap) != "pending":
        results = decode(configmap)
    return Evidence(
        job=data["job"],
        pods=tuple(chosen),
        results=results,
        timed_out=timed_out,
        memory_limit=memory_limit(data["job"]),
    )


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
        pods.append(described + (" DisruptionTarget" if disrupted(pod) else ""))
    return (terminal[0] if terminal else None), pods, upload_status(data["configmap"])


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
    ],
)
def test_recording_shows_its_scenario(
    name: str, expected: tuple[str | None, list[str], str]
) -> None:
    # Guards the fixtures: a re-recording that missed its state of interest fails here first.
    assert summary(name) == expected


# --- the outcome of each recorded scenario ---


@dataclass(frozen=True)
class Case:
    """One recorded scenario, the evidence drawn from it, and the outcome it must lead to."""

    fixture: str
    kind: OutcomeKind
    retryable: bool
    exit_code: int | None
    words: tuple[str, ...]
    timed_out: Literal["startup", "execution"] | None = None
    pods: PodChoice = "all"


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
    case("image_pull", "image_pull", "image_pull_failed", True, None, ("ErrImagePull",)),
    case(
        "image_pull-startup",
        "image_pull",
        "startup_timeout",
        True,
        None,
        ("startup_timeout", "ErrImagePull"),
        timed_out="startup",
    ),
    case("invalid_image", "invalid_image", "image_invalid", False, None, ("must be lowercase",)),
    case(
        "unschedulable-startup",
        "unschedulable",
        "startup_timeout",
        True,
        None,
        ("Unschedulable",),
        timed_out="startup",
    ),
    case(
        "missing_secret",
        "missing_secret",
        "container_config_error",
        False,
        None,
        ("does-not-exist",),
    ),
    case(
        "missing_secret-startup",
        "missing_secret",
        "startup_timeout",
        True,
        None,
        ("CreateContainerConfigError",),
        timed_out="startup",
    ),
    case(
        "evicted-pod",
        "evicted",
        "disrupted",
        True,
        None,
        ("EvictionByEvictionAPI",),
        pods="disrupted",
    ),
    case("evicted-and-replaced", "evicted", "disrupted", True, None, ("EvictionByEvictionAPI",)),
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
    outcome = classify(evidence(case.fixture, timed_out=case.timed_out, pods=case.pods))

    assert (outcome.kind, outcome.retryable, outcome.exit_code) == (
        case.kind,
        case.retryable,
        case.exit_code,
    ), outcome.reason
    for word in case.words:
        assert word in outcome.reason
    assert outcome.succeeded is (case.kind == "success")


@pytest.mark.parametrize("name", ["image_pull", "invalid_image", "missing_secret", "unschedulable"])
def test_execution_timeout_wins_over_the_pod_state(name: str) -> None:
    outcome = classify(evidence(name, timed_out="execution"))

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
