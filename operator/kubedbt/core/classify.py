"""Classifying how a run ended: success, or a failure kind that is retryable or terminal.

The evidence is what Kubernetes and dbt left behind: the Job's conditions, the pods' phase,
reason and conditions, the dbt container's state (exit code, OOMKilled, waiting reasons), dbt's
run_results statuses and the error events of its JSON log. Everything comes in as the API's JSON
(camelCase dicts), so the function is pure and its tests use statuses recorded from a real cluster.

Order matters: a decision the watcher already made (startup or execution timeout) comes first,
then what happened to the pod from outside (disruption, deadline, OOM), then what dbt said.
The table of kinds is in the README.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubedbt.core.errors import shorten
from kubedbt.core.results import FAILED_STATUSES, RunResults

OutcomeKind = Literal[
    "success",
    "tests_failed",
    "nodes_errored",
    "dbt_error",
    "warehouse_unreachable",
    "oom_killed",
    "disrupted",
    "image_invalid",
    "image_pull_failed",
    "container_config_error",
    "container_start_failed",
    "startup_timeout",
    "execution_timeout",
    "deadline_exceeded",
    "results_missing",
    "killed",
    "job_deleted",
    "unknown",
]

# Whether another try may succeed, by kind. The operator lets a DAG override any of these.
RETRYABLE: Final[dict[OutcomeKind, bool]] = {
    "success": False,
    "tests_failed": False,
    "nodes_errored": False,
    "dbt_error": False,
    "warehouse_unreachable": True,
    "oom_killed": False,
    "disrupted": True,
    "image_invalid": False,
    "image_pull_failed": True,
    "container_config_error": False,
    "container_start_failed": False,
    "startup_timeout": True,
    "execution_timeout": True,
    "deadline_exceeded": False,
    "results_missing": True,
    "killed": True,
    "job_deleted": False,
    "unknown": True,
}

DBT_CONTAINER: Final = "dbt"
# Exit codes dbt itself chooses; anything else means it was killed or could not run.
DBT_EXIT_CODES: Final = (0, 1, 2)
DISRUPTION_REASONS: Final = frozenset(
    {"Evicted", "Preempting", "NodeLost", "NodeShutdown", "Terminated"}
)
# What drivers and dbt adapters say when the warehouse cannot be reached. Matched case-insensitively
# against dbt's error events and node messages.
CONNECTION_PATTERNS: Final = (
    r"could not connect to server",
    r"connection to server at .* failed",
    r"connection refused",
    r"could not translate host name",
    r"name or service not known",
    r"temporary failure in name resolution",
    r"timeout expired",
    r"connection timed out",
    r"server closed the connection unexpectedly",
    r"failed to connect",
    r"network is unreachable",
    r"no route to host",
)
_CONNECTION = re.compile("|".join(CONNECTION_PATTERNS), re.IGNORECASE)
_NOT_FOUND = re.compile(r"not found|manifest unknown|repository does not exist|404", re.IGNORECASE)


# Deadlines the watch enforces itself (kubedbt.core.progress), ending the run before the Job.
TimedOut = Literal["startup", "execution", "suspended", "terminating"]


@dataclass(frozen=True)
class Evidence:
    """Everything the classifier looks at, as the watcher collected it."""

    job: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    results: RunResults | None = None
    timed_out: TimedOut | None = None
    memory_limit: str | None = None
    job_deleted: bool = False


@dataclass(frozen=True)
class Outcome:
    """How a run ended, in a person's words."""

    kind: OutcomeKind
    retryable: bool
    reason: str
    exit_code: int | None = None
    evidence: tuple[str, ...] = field(default=())

    @property
    def succeeded(self) -> bool:
        """Whether the run succeeded."""
        return self.kind == "success"


def _outcome(
    kind: OutcomeKind, reason: str, *, exit_code: int | None = None, evidence: Sequence[str] = ()
) -> Outcome:
    return Outcome(kind, RETRYABLE[kind], reason, exit_code, tuple(evidence))


def classify(evidence: Evidence) -> Outcome:
    """The outcome of a run from its evidence."""
    pod = latest_pod(evidence.pods)
    dbt = container_status(pod, DBT_CONTAINER) if pod else None
    if evidence.timed_out is not None:
        return _timed_out(evidence.timed_out, pod, dbt)
    if evidence.job_deleted:
        return _job_deleted(dbt)
    # What happened from outside comes before dbt's exit code: an evicted or timed-out pod ends
    # with dbt killed (137), which says nothing about dbt itself.
    deadline = _job_condition(evidence.job, "DeadlineExceeded")
    if deadline is not None and _dbt_exit_code(dbt) not in DBT_EXIT_CODES:
        return _outcome("deadline_exceeded", f"the Job's activeDeadlineSeconds passed: {deadline}")
    disruption = next(filter(None, (_disruption(p) for p in _newest_first(evidence.pods))), None)
    if disruption is not None and _dbt_exit_code(dbt) not in DBT_EXIT_CODES:
        return _outcome("disrupted", f"the pod was disrupted: {disruption}", evidence=[disruption])
    if _terminated(dbt):
        assert dbt is not None
        return _from_termination(dbt["state"]["terminated"], evidence)
    waiting = _waiting(dbt)
    if waiting is not None:
        return _from_waiting(*waiting)
    if dbt is not None and (dbt.get("state") or {}).get("running"):
        return _outcome("unknown", "the watch ended while dbt was still running")
    return _outcome("unknown", "the run ended before the dbt container reported a state")


def _newest_first(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(pods, key=_created, reverse=True)


def _created(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _dbt_exit_code(status: Mapping[str, Any] | None) -> int | None:
    terminated = ((status or {}).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    return code if isinstance(code, int) else None


def latest_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recently created pod (a Job replaces pods lost to disruptions)."""
    return max(pods, key=_created) if pods else None


def container_status(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The status of container `name` in `pod`, if the kubelet reported one."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == name:
            return status  # type: ignore[no-any-return]
    return None


def _terminated(status: Mapping[str, Any] | None) -> bool:
    return bool(status and (status.get("state") or {}).get("terminated"))


def _waiting(status: Mapping[str, Any] | None) -> tuple[str, str] | None:
    waiting = (status or {}).get("state", {}).get("waiting") if status else None
    if not waiting:
        return None
    return str(waiting.get("reason") or ""), str(waiting.get("message") or "")


def _disruption(pod: Mapping[str, Any] | None) -> str | None:
    if pod is None:
        return None
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return f"{condition.get('reason')}: {condition.get('message', '')}".strip(": ")
    if status.get("reason") in DISRUPTION_REASONS:
        return f"{status.get('reason')}: {status.get('message', '')}".strip(": ")
    return None


def _job_condition(job: Mapping[str, Any] | None, reason: str) -> str | None:
    """The message of a true Failed (or, before it, FailureTarget) condition with `reason`."""
    for condition in ((job or {}).get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") in ("Failed", "FailureTarget")
            and condition.get("status") == "True"
            and condition.get("reason") == reason
        ):
            return str(condition.get("message") or reason)
    return None


def _unschedulable(pod: Mapping[str, Any] | None) -> str | None:
    for condition in ((pod or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason')}: {condition.get('message', '')}"
    return None


def _timed_out(which: str, pod: Mapping[str, Any] | None, dbt: Mapping[str, Any] | None) -> Outcome:
    if which == "execution":
        return _outcome(
            "execution_timeout", "the task's execution_timeout passed while dbt was running"
        )
    if which == "suspended":
        return _outcome(
            "startup_timeout", "the Job stayed suspended for longer than startup_timeout"
        )
    if which == "terminating":
        name = ((pod or {}).get("metadata") or {}).get("name", "the pod")
        return _outcome(
            "disrupted",
            f"{name} stayed terminating for longer than startup_timeout (its node may be gone)",
        )
    stuck = _unschedulable(pod)
    waiting = _waiting(dbt)
    if stuck is None and waiting is not None:
        stuck = f"{waiting[0]}: {waiting[1]}".strip(": ")
    detail = stuck or "the pod never started"
    return _outcome(
        "startup_timeout", f"dbt did not start within startup_timeout ({detail})", evidence=[detail]
    )


def _job_deleted(dbt: Mapping[str, Any] | None) -> Outcome:
    # Somebody stopped the run on purpose (kubectl delete, the namespace going away): another try
    # would undo that, so it is terminal unless the DAG says otherwise.
    code = _dbt_exit_code(dbt)
    where = "before dbt started" if dbt is None or _waiting(dbt) else "while dbt was running"
    if code is not None:
        where = f"after dbt exited with code {code}"
    return _outcome(
        "job_deleted",
        f"the Job was deleted {where} (by hand, with its namespace, or by its ttl)",
        exit_code=code,
    )


def _from_waiting(reason: str, message: str) -> Outcome:
    evidence = [f"{reason}: {message}".strip(": ")]
    if reason == "InvalidImageName":
        return _outcome("image_invalid", f"the image name is invalid: {message}", evidence=evidence)
    if reason in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"):
        if reason == "ErrImageNeverPull" or _NOT_FOUND.search(message):
            return _outcome(
                "image_invalid", f"the image cannot be pulled: {message}", evidence=evidence
            )
        return _outcome(
            "image_pull_failed",
            f"pulling the image failed ({reason}): {message}",
            evidence=evidence,
        )
    if reason in ("CreateContainerConfigError", "CreateContainerError"):
        return _outcome(
            "container_config_error",
            f"the container cannot be created: {message}",
            evidence=evidence,
        )
    return _outcome(
        "unknown",
        f"the dbt container is stuck waiting: {reason} {message}".strip(),
        evidence=evidence,
    )


def _from_termination(terminated: Mapping[str, Any], evidence: Evidence) -> Outcome:
    code = terminated.get("exitCode")
    reason = str(terminated.get("reason") or "")
    message = str(terminated.get("message") or "")
    if reason == "OOMKilled":
        limit = f" (now {evidence.memory_limit})" if evidence.memory_limit else ""
        return _outcome(
            "oom_killed",
            "dbt ran out of memory and was OOMKilled: raise "
            f"container_resources.limits.memory{limit} or lower threads",
            exit_code=code,
        )
    if reason in ("ContainerCannotRun", "StartError"):
        return _outcome(
            "container_start_failed",
            f"the dbt container could not start: {message}",
            exit_code=code,
        )
    if code == 0:
        return _outcome("success", "dbt succeeded", exit_code=0)
    if code in (1, 2):
        return _from_dbt(code, evidence.results, message)
    if code in (137, 143):
        return _outcome("killed", f"dbt was killed by a signal (exit code {code})", exit_code=code)
    return _outcome(
        "unknown", f"dbt exited with code {code}: {_first_line(message)}", exit_code=code
    )


def _from_dbt(code: int, results: RunResults | None, termination_message: str) -> Outcome:
    messages = _dbt_messages(results)
    connection = next((m for m in messages if _CONNECTION.search(m)), None)
    if connection is not None:
        return _outcome(
            "warehouse_unreachable",
            f"dbt could not reach the warehouse: {_first_line(connection)}",
            exit_code=code,
            evidence=[connection],
        )
    if code == 2:
        detail = messages[-1] if messages else termination_message
        return _outcome(
            "dbt_error",
            f"dbt could not run: {_first_line(detail)}",
            exit_code=2,
            evidence=messages[-3:],
        )
    summary = results.summary if results else None
    if summary is None:
        return _outcome(
            "results_missing",
            "dbt exited 1 but its results were not uploaded",
            exit_code=1,
            evidence=messages[-3:],
        )
    failures = summary["failures"]
    errored = [f for f in failures if f["status"] in ("error", "runtime error")]
    failed = [f for f in failures if f["status"] == "fail"]
    lines = [f"{f['unique_id']}: {f['status']}: {_first_line(f['message'])}" for f in failures[:10]]
    if errored:
        first = errored[0]
        return _outcome(
            "nodes_errored",
            f"{len(errored)} dbt node(s) errored, first {first['unique_id']}: "
            + _first_line(first["message"]),
            exit_code=1,
            evidence=lines,
        )
    if failed:
        names = ", ".join(f["unique_id"] for f in failed[:3])
        return _outcome(
            "tests_failed",
            f"{len(failed)} data test(s) failed: {names}",
            exit_code=1,
            evidence=lines,
        )
    return _outcome(
        "nodes_errored", "dbt exited 1 without a failed node in its results", exit_code=1
    )


def _dbt_messages(results: RunResults | None) -> list[str]:
    if results is None:
        return []
    messages = [event["message"] for event in results.log_events]
    if results.summary is not None:
        messages += [
            f["message"] for f in results.summary["failures"] if f["status"] in FAILED_STATUSES
        ]
    return [m for m in messages if m]


def _first_line(text: str) -> str:
    """`text` on one line, cut to a readable length."""
    return shorten(" ".join(text.split()), 300)
