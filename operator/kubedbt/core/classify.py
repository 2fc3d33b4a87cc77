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

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubedbt.core.command_output import CatalogSummary
from kubedbt.core.diagnose import (
    Diagnosis,
    diagnose,
    hide_values,
    output_statement,
    statement,
)
from kubedbt.core.errors import shorten
from kubedbt.core.interruption import describe as describe_interruption
from kubedbt.core.naming import (
    DBT_CONTAINER,
    LAUNCHER_CONTAINER,
    RESTORE_CONTAINER,
    SIDECAR_CONTAINER,
    STOP_REASON_ANNOTATION,
    STOP_REQUESTED_ANNOTATION,
)
from kubedbt.core.results import (
    FAILED_STATUSES,
    NodeFailure,
    RunResults,
    SourceFreshness,
    Summary,
    freshness_message,
)

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
    "init_failed",
    "sidecar_failed",
    "startup_timeout",
    "execution_timeout",
    "deadline_exceeded",
    "results_missing",
    "sources_stale",
    "killed",
    "cancelled",
    "job_deleted",
    "unknown",
    # Never classified here: the operator's on_warning="fail" turns a run that succeeded with
    # warned nodes into this failure.
    "warnings",
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
    "init_failed": False,
    "sidecar_failed": False,
    "startup_timeout": True,
    "execution_timeout": True,
    "deadline_exceeded": False,
    "results_missing": True,
    "sources_stale": False,
    "killed": True,
    # Stopped from outside with what ran kept: another try resumes where it stopped.
    "cancelled": True,
    "job_deleted": False,
    "unknown": True,
    # The same nodes warn again; and `dbt retry` would rerun nothing, as they did not fail.
    "warnings": False,
}

# Exit codes dbt itself chooses; anything else means it was killed or could not run.
DBT_EXIT_CODES: Final = (0, 1, 2)
# kubedbt-launch's exit code when it interrupted dbt because the pod was stopped (128 + SIGINT),
# and its codes for a program it could not start (the shell's).
INTERRUPTED: Final = 130
NOT_STARTED: Final = {126: "is not executable", 127: "was not found in the image"}
# Why kubedbt stopped a run (the Job's kubedbt.io/stop-reason), in words.
STOP_REASONS: Final = {
    "task-killed": "the Airflow task was stopped (marked failed or cleared, or its worker asked "
    "to kill it)",
    "execution-timeout": "the task's execution_timeout was about to pass, so kubedbt stopped dbt "
    "in time to report what it finished",
}
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
# What a registry says, through containerd or docker, when the image or tag does not exist.
_NOT_FOUND = re.compile(
    r"code = NotFound|: not found|manifest unknown|repository does not exist", re.IGNORECASE
)
# Waiting reasons of a container that is about to start, not stuck.
STARTING: Final = frozenset({"PodInitializing", "ContainerCreating"})
PULLING: Final = frozenset({"ErrImagePull", "ImagePullBackOff"})
# Waiting reasons no amount of waiting fixes: the run ends at once instead of at startup_timeout.
HOPELESS: Final = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
# Events that say nothing about one run (this kubelet has no cluster DNS configured, say).
NOISE_EVENTS: Final = frozenset({"MissingClusterDNS"})
MAX_EVENTS: Final = 5
# Kinds whose cause is in Kubernetes rather than in dbt: their reason ends with the last events.
_KUBERNETES_KINDS: Final = frozenset(
    {
        "disrupted",
        "image_invalid",
        "image_pull_failed",
        "container_config_error",
        "container_start_failed",
        "init_failed",
        "sidecar_failed",
        "startup_timeout",
        "deadline_exceeded",
        "unknown",
    }
)


# Deadlines the watch enforces itself (kubedbt.core.progress), ending the run before the Job.
TimedOut = Literal["startup", "execution", "suspended", "terminating"]


@dataclass(frozen=True)
class Evidence:
    """Everything the classifier looks at, as the watcher collected it.

    events: the Kubernetes Events of the run's Job and pods (API JSON), in any order.
    """

    job: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    results: RunResults | None = None
    timed_out: TimedOut | None = None
    memory_limit: str | None = None
    job_deleted: bool = False
    events: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class Outcome:
    """How a run ended, in a person's words.

    fix: when dbt failed because of a misconfiguration kubedbt recognises (a write outside
    /kubedbt, a missing profile, target, env var, project_dir or profiles_dir, packages not
    vendored), what it is and what to change (kubedbt.core.diagnose); the reason states dbt's
    error itself, with the values its validation errors quote hidden.
    """

    kind: OutcomeKind
    retryable: bool
    reason: str
    exit_code: int | None = None
    evidence: tuple[str, ...] = field(default=())
    fix: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the run succeeded."""
        return self.kind == "success"


@dataclass(frozen=True)
class Blocked:
    """A container of the pod that waits for something other than its turn to start."""

    container: str
    reason: str
    message: str

    @property
    def hopeless(self) -> bool:
        """Whether waiting cannot help: a bad image name, a missing Secret, a tag that is gone."""
        return self.reason in HOPELESS or (self.reason in PULLING and image_not_found(self.message))

    def __str__(self) -> str:
        return f"{self.container}: {self.reason}: {self.message}".strip(": ")


def _outcome(
    kind: OutcomeKind,
    reason: str,
    *,
    exit_code: int | None = None,
    evidence: Sequence[str] = (),
    fix: str | None = None,
) -> Outcome:
    return Outcome(kind, RETRYABLE[kind], reason, exit_code, tuple(evidence), fix)


def classify(evidence: Evidence) -> Outcome:
    """The outcome of a run from its evidence, with the run's last Kubernetes events."""
    outcome = _classify(evidence)
    events = event_lines(evidence.events)
    if not events or outcome.kind not in _KUBERNETES_KINDS:
        return outcome
    return dataclasses.replace(
        outcome,
        reason=f"{outcome.reason}; events: " + "; ".join(_first_line(e) for e in events[-3:]),
        evidence=(*outcome.evidence, *(f"event {e}" for e in events)),
    )


def _classify(evidence: Evidence) -> Outcome:
    pod = latest_pod(evidence.pods)
    dbt = container_status(pod, DBT_CONTAINER) if pod else None
    if evidence.timed_out is not None:
        return _timed_out(evidence.timed_out, pod, evidence.events, evidence.pods)
    if evidence.job_deleted:
        return _job_deleted(dbt)
    # What happened from outside comes before dbt's exit code: an evicted or timed-out pod ends
    # with dbt interrupted (130) or killed (137), which says nothing about dbt itself.
    code = _dbt_exit_code(dbt)
    stopped = stop_reason(evidence.job)
    if stopped is not None and _ended_by_stop(dbt):
        return _cancelled(STOP_REASONS.get(stopped, f"kubedbt stopped it ({stopped})"), evidence)
    deadline = _job_condition(evidence.job, "DeadlineExceeded")
    if deadline is not None and code == INTERRUPTED:
        return _cancelled(f"the Job's activeDeadlineSeconds passed ({deadline})", evidence)
    if deadline is not None and code not in DBT_EXIT_CODES:
        return _outcome("deadline_exceeded", f"the Job's activeDeadlineSeconds passed: {deadline}")
    disruption = _disruption_of(evidence.pods, pod, dbt)
    if disruption is not None:
        interrupted = _interruption_text(evidence, dbt)
        detail = f"; {interrupted}" if interrupted else ""
        return _outcome(
            "disrupted",
            f"the pod was disrupted: {disruption}{detail}",
            exit_code=code,
            evidence=[disruption],
        )
    failed_init = _failed_init(pod)
    if failed_init is not None:
        return failed_init
    if _terminated(dbt):
        assert dbt is not None
        return _from_termination(dbt["state"]["terminated"], evidence, pod)
    blocked = blocked_container(pod)
    if blocked is not None:
        return _from_blocked(blocked, evidence.events)
    if dbt is not None and (dbt.get("state") or {}).get("running"):
        return _outcome("unknown", "the watch ended while dbt was still running")
    if pod is None:
        return _outcome("unknown", "no pod of the run is left to judge it by (deleted?)")
    return _outcome("unknown", "the run ended before the dbt container reported a state")


def stop_reason(job: Mapping[str, Any] | None) -> str | None:
    """Why kubedbt stopped the run (the Job's stop-reason annotation), if it did."""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    if STOP_REQUESTED_ANNOTATION not in annotations:
        return None
    return str(annotations.get(STOP_REASON_ANNOTATION) or "unknown")


def _ended_by_stop(dbt: Mapping[str, Any] | None) -> bool:
    """Whether a stop explains how dbt ended (not yet, interrupted, killed after the grace).

    Its own exit codes, an OOM kill or a failed start are its verdict, even when a stop came
    after them.
    """
    code = _dbt_exit_code(dbt)
    return code is None or code == INTERRUPTED or (code == 137 and _reason(dbt) != "OOMKilled")


def _cancelled(cause: str, evidence: Evidence) -> Outcome:
    """A run stopped from outside: the cause, then what dbt finished and left unfinished."""
    pod = latest_pod(evidence.pods)
    dbt = container_status(pod, DBT_CONTAINER) if pod else None
    code = _dbt_exit_code(dbt)
    interrupted = _interruption_text(evidence, dbt)
    if interrupted:
        return _outcome("cancelled", f"dbt was cancelled: {cause}; {interrupted}", exit_code=code)
    if dbt is None or not ((dbt.get("state") or {}).get("terminated") or dbt.get("lastState")):
        where = "before dbt started"
    else:
        where = f"and dbt ended with exit code {code}"
    return _outcome("cancelled", f"dbt was cancelled: {cause}, {where}", exit_code=code)


def _interruption_text(evidence: Evidence, dbt: Mapping[str, Any] | None) -> str:
    """What the interruption left, from the summary; else the launcher's one line; else ""."""
    summary = evidence.results.summary if evidence.results else None
    interruption = summary.get("interruption") if summary else None
    if interruption:
        assert summary is not None
        unfinished = interruption["cancelled_count"] + interruption["not_started"]
        finished = summary["nodes"] - unfinished
        return f"{finished} node(s) finished; {describe_interruption(interruption)}"
    if _dbt_exit_code(dbt) != INTERRUPTED:
        return ""
    terminated = ((dbt or {}).get("state") or {}).get("terminated") or {}
    message = _first_line(str(terminated.get("message") or ""))
    return message.removeprefix("kubedbt-launch: ") or "dbt was interrupted (exit code 130)"


def _disruption_of(
    pods: Sequence[Mapping[str, Any]],
    newest: Mapping[str, Any] | None,
    dbt: Mapping[str, Any] | None,
) -> str | None:
    """Why the run was disrupted, if that is what ended it.

    The newest pod's own disruption counts unless dbt exited on its own there; an older pod's
    only when the newest one has no verdict of dbt's (a replacement that never ran dbt, say).
    """
    if _dbt_exit_code(dbt) in DBT_EXIT_CODES or _reason(dbt) == "OOMKilled":
        return None
    own = _disruption(newest)
    if own is not None or _terminated(dbt):
        return own
    return next(filter(None, (_disruption(p) for p in _newest_first(pods))), None)


def _reason(status: Mapping[str, Any] | None) -> str:
    terminated = ((status or {}).get("state") or {}).get("terminated") or {}
    return str(terminated.get("reason") or "")


def image_not_found(message: str) -> bool:
    """Whether a pull error says the image or tag does not exist (not a transient failure)."""
    return bool(_NOT_FOUND.search(message))


def _statuses_in_start_order(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def blocked_container(pod: Mapping[str, Any] | None) -> Blocked | None:
    """The first container, in start order, that is stuck waiting (the others wait behind it).

    Init containers count: a sidecar image that cannot be pulled leaves dbt "PodInitializing".
    """
    for status in _statuses_in_start_order(pod or {}):
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if waiting and reason not in STARTING:
            return Blocked(str(status.get("name")), reason, str(waiting.get("message") or ""))
    return None


def event_lines(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The run's warning events, oldest first, one line each, repeats folded into a count."""
    latest: dict[tuple[str, str, str], tuple[str, int]] = {}
    for event in events:
        reason = str(event.get("reason") or "")
        if event.get("type") != "Warning" or reason in NOISE_EVENTS:
            continue
        involved = event.get("involvedObject") or {}
        where = f"{involved.get('kind', '')}/{involved.get('name', '')}"
        message = _without_refusal_text(" ".join(str(event.get("message") or "").split()))
        key = (where, reason, message)
        seen, count = latest.get(key, ("", 0))
        latest[key] = (max(seen, _event_time(event)), count + int(event.get("count") or 1))
    ordered = sorted(latest.items(), key=lambda item: item[1][0])
    lines = []
    for (where, reason, message), (_, count) in ordered[-MAX_EVENTS:]:
        times = f" (x{count})" if count > 1 else ""
        lines.append(f"{where}: {reason}: {message}{times}")
    return lines


# An admission policy's or webhook's refusal of a pod (the Job's FailedCreate event) may repeat
# what the pod spec holds, env values included: keep who refused, withhold what it said.
_REFUSAL: Final = re.compile(r"^(.*?\b(?:denied request|denied the request))\b.*$", re.IGNORECASE)


def _without_refusal_text(message: str) -> str:
    return _REFUSAL.sub(r"\1 (message withheld: it may repeat the pod's values)", message)


def _event_time(event: Mapping[str, Any]) -> str:
    """When an event last happened (ISO text, which sorts in time order for UTC)."""
    when = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
    return str(when or "")


def memory_limit(job: Mapping[str, Any] | None, container: str) -> str | None:
    """A container's memory limit in the Job's pod template, if it sets one."""
    template = (((job or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    for found in [*(template.get("initContainers") or []), *(template.get("containers") or [])]:
        if found.get("name") == container:
            limit = ((found.get("resources") or {}).get("limits") or {}).get("memory")
            return None if limit is None else str(limit)
    return None


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
    """The status of container (or init container) `name` in `pod`, if the kubelet reported one."""
    for status in _statuses_in_start_order(pod):
        if status.get("name") == name:
            return status
    return None


def _terminated(status: Mapping[str, Any] | None) -> bool:
    return bool(status and (status.get("state") or {}).get("terminated"))


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


def _timed_out(
    which: str,
    pod: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]] = (),
) -> Outcome:
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
    blocked = blocked_container(pod)
    if blocked is not None:
        judged = _from_blocked(blocked, events)
        if judged.kind != "unknown":
            return judged
    sidecar = _sidecar_failure(pod)
    if sidecar is not None:  # caught between two restarts rather than in CrashLoopBackOff
        return _outcome(
            "sidecar_failed",
            f"kubedbt's results uploader keeps failing ({sidecar}) and dbt did not start within "
            "startup_timeout; if it was OOMKilled, raise sidecar_resources.limits.memory",
            evidence=[f"{SIDECAR_CONTAINER}: {sidecar}"],
        )
    detail = _unschedulable(pod) or (str(blocked) if blocked else "the pod never started")
    earlier = next(
        filter(None, (_disruption(p) for p in _newest_first(pods) if p is not pod)), None
    )
    if earlier is not None:
        return _outcome(
            "disrupted",
            f"the pod was disrupted ({earlier}) and its replacement did not start within "
            f"startup_timeout ({detail})",
            evidence=[earlier, detail],
        )
    return _outcome(
        "startup_timeout", f"dbt did not start within startup_timeout ({detail})", evidence=[detail]
    )


def _job_deleted(dbt: Mapping[str, Any] | None) -> Outcome:
    # Somebody stopped the run on purpose (kubectl delete, the namespace going away): another try
    # would undo that, so it is terminal unless the DAG says otherwise.
    code = _dbt_exit_code(dbt)
    state = (dbt or {}).get("state") or {}
    where = "while dbt was running" if "running" in state else "before dbt started"
    if code is not None:
        where = f"after dbt exited with code {code}"
    return _outcome(
        "job_deleted",
        f"the Job was deleted {where} (by hand, with its namespace, or by its ttl)",
        exit_code=code,
    )


def _pull_error(blocked: Blocked, events: Sequence[Mapping[str, Any]]) -> str:
    """The registry's own words: an ImagePullBackOff hides them, the kubelet's events keep them."""
    if blocked.reason == "ErrImagePull":
        return blocked.message
    pull_failures = sorted(
        (_event_time(e), " ".join(str(e.get("message") or "").split()))
        for e in events
        if e.get("reason") == "Failed" and "pull image" in str(e.get("message") or "")
    )
    return pull_failures[-1][1] if pull_failures else blocked.message


def _from_blocked(blocked: Blocked, events: Sequence[Mapping[str, Any]]) -> Outcome:
    which = "" if blocked.container == DBT_CONTAINER else f" of kubedbt's {blocked.container}"
    evidence = [str(blocked)]
    if blocked.reason == "InvalidImageName":
        return _outcome(
            "image_invalid",
            f"the image{which} name is invalid: {blocked.message}",
            evidence=evidence,
        )
    if blocked.reason == "ErrImageNeverPull":
        return _outcome(
            "image_invalid",
            f"the image{which} is not on the node and imagePullPolicy is Never: {blocked.message}",
            evidence=evidence,
        )
    if blocked.reason in PULLING:
        error = _pull_error(blocked, events)
        if image_not_found(error):
            return _outcome(
                "image_invalid", f"the image{which} does not exist: {error}", evidence=evidence
            )
        return _outcome(
            "image_pull_failed",
            f"pulling the image{which} failed ({blocked.reason}): {error}",
            evidence=evidence,
        )
    if blocked.reason in ("CreateContainerConfigError", "CreateContainerError"):
        return _outcome(
            "container_config_error",
            f"the container {blocked.container} cannot be created: {blocked.message}",
            evidence=evidence,
        )
    if blocked.container == SIDECAR_CONTAINER and blocked.reason == "CrashLoopBackOff":
        return _outcome(
            "sidecar_failed",
            f"kubedbt's results uploader keeps crashing: {blocked.message}",
            evidence=evidence,
        )
    return _outcome("unknown", f"the container {blocked} is stuck waiting", evidence=evidence)


def _failed_init(pod: Mapping[str, Any] | None) -> Outcome | None:
    """A failed init container (install-launcher, restore-state): dbt could not start."""
    launcher = container_status(pod, LAUNCHER_CONTAINER) if pod else None
    terminated = ((launcher or {}).get("state") or {}).get("terminated") or {}
    if terminated and terminated.get("exitCode") != 0:
        code = terminated.get("exitCode")
        message = _first_line(str(terminated.get("message") or terminated.get("reason") or ""))
        return _outcome(
            "init_failed",
            f"installing kubedbt's launcher failed (exit code {code}): {message}; is "
            "sidecar_image a kubedbt sidecar image of this version?",
            exit_code=code if isinstance(code, int) else None,
        )
    restore = container_status(pod, RESTORE_CONTAINER) if pod else None
    terminated = ((restore or {}).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    if not terminated or code == 0:
        return None
    message = _first_line(str(terminated.get("message") or terminated.get("reason") or ""))
    return _outcome(
        "init_failed",
        f"restoring the earlier try's run_results for dbt retry failed (exit code {code}): "
        f"{message}; rerun with retry_strategy='full' or clear the task",
        exit_code=code if isinstance(code, int) else None,
    )


def _sidecar_failure(pod: Mapping[str, Any] | None) -> str | None:
    """How kubedbt's results uploader died, if it did (it exits 0 whatever the upload did)."""
    sidecar = container_status(pod, SIDECAR_CONTAINER) if pod else None
    for state in ((sidecar or {}).get("state"), (sidecar or {}).get("lastState")):
        terminated = (state or {}).get("terminated") or {}
        if terminated and (
            terminated.get("exitCode") != 0 or terminated.get("reason") == "OOMKilled"
        ):
            return f"{terminated.get('reason') or 'Error'}, exit code {terminated.get('exitCode')}"
    return None


def _from_termination(
    terminated: Mapping[str, Any], evidence: Evidence, pod: Mapping[str, Any] | None
) -> Outcome:
    code = terminated.get("exitCode")
    reason = str(terminated.get("reason") or "")
    message = str(terminated.get("message") or "")
    if reason == "OOMKilled":
        now = evidence.memory_limit or memory_limit(evidence.job, DBT_CONTAINER)
        limit = f" (now {now})" if now else ""
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
        outcome = _from_dbt(code, evidence.results, message)
        sidecar = _sidecar_failure(pod)
        if outcome.kind == "results_missing" and sidecar is not None:
            now = memory_limit(evidence.job, SIDECAR_CONTAINER)
            limit = f" (now {now})" if now else ""
            return _outcome(
                "sidecar_failed",
                f"dbt exited {code} and kubedbt's results uploader failed ({sidecar}), so there "
                "are no results; if it was OOMKilled, raise "
                f"sidecar_resources.limits.memory{limit}",
                exit_code=code,
                evidence=[f"{SIDECAR_CONTAINER}: {sidecar}"],
            )
        return outcome
    if code == INTERRUPTED:
        return _cancelled("its pod was stopped from outside (deleted?)", evidence)
    if code in NOT_STARTED:
        return _outcome(
            "container_start_failed",
            f"the dbt command {NOT_STARTED[code]}: {_first_line(message)}",
            exit_code=code,
        )
    if code in (137, 143):
        return _outcome("killed", f"dbt was killed by a signal (exit code {code})", exit_code=code)
    said = output_statement(message) or _first_line(message)
    return _outcome("unknown", f"dbt exited with code {code}: {said}", exit_code=code)


def _from_dbt(code: int, results: RunResults | None, termination_message: str) -> Outcome:
    """What dbt's exit code 1 or 2 means, stated in dbt's words, with the fix when known."""
    said = _dbt_said(results, termination_message)
    outcome = _judge_dbt(code, results, said, termination_message)
    return dataclasses.replace(outcome, fix=said.fix) if said and said.fix else outcome


def _dbt_said(results: RunResults | None, termination_message: str) -> Diagnosis | None:
    """The error dbt stated: in its log digest (failed debug checks included), or its output."""
    return diagnose(results.log_events if results else [], termination_message)


def _judge_dbt(
    code: int, results: RunResults | None, said: Diagnosis | None, termination_message: str
) -> Outcome:
    messages = _dbt_messages(results)
    connection = next((m for m in messages if _CONNECTION.search(m)), None)
    if connection is not None:
        return _outcome(
            "warehouse_unreachable",
            f"dbt could not reach the warehouse: {statement(connection)}",
            exit_code=code,
            evidence=[connection],
        )
    if code == 2:
        return _outcome(
            "dbt_error",
            f"dbt could not run: {said or _first_line(termination_message)}",
            exit_code=2,
            evidence=messages[-3:],
        )
    summary = results.summary if results else None
    if summary is None:
        why = f": {results.upload_error}" if results and results.upload_error else ""
        return _outcome(
            "results_missing",
            f"dbt exited 1 but its results were not uploaded{why}",
            exit_code=1,
            evidence=messages[-3:],
        )
    return _from_summary(summary, said, messages)


def _from_summary(summary: Summary, said: Diagnosis | None, messages: Sequence[str]) -> Outcome:
    """What dbt's exit code 1 means, by the summary of what it did."""
    stale = [f for f in summary.get("freshness") or [] if f["status"] == "error"]
    if stale:
        return _outcome(
            "sources_stale",
            f"{len(stale)} source(s) are stale: "
            + "; ".join(_freshness_line(f) for f in stale[:3]),
            exit_code=1,
            evidence=[_freshness_line(f) for f in stale[:10]],
        )
    failed_nodes = _from_failures(summary["failures"])
    if failed_nodes is not None:
        return failed_nodes
    catalog = _from_catalog(summary.get("catalog"))
    if catalog is not None:
        return catalog
    if said is not None:  # a command without nodes: `dbt debug` failing a check
        command = f"dbt {summary['command']}" if summary.get("command") else "dbt"
        kind: OutcomeKind = "dbt_error" if summary["nodes"] == 0 else "nodes_errored"
        return _outcome(kind, f"{command} failed: {said}", exit_code=1, evidence=messages[-3:])
    return _outcome(
        "nodes_errored", "dbt exited 1 without a failed node in its results", exit_code=1
    )


def _from_failures(failures: Sequence[NodeFailure]) -> Outcome | None:
    """Nodes that errored, else data tests that failed; None when there are neither."""
    errored = [f for f in failures if f["status"] in ("error", "runtime error")]
    failed = [f for f in failures if f["status"] == "fail"]
    lines = [f"{f['unique_id']}: {f['status']}: {_first_line(f['message'])}" for f in failures[:10]]
    if errored:
        first = errored[0]
        return _outcome(
            "nodes_errored",
            f"{len(errored)} dbt node(s) errored, first {first['unique_id']}: "
            + statement(first["message"]),
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
    return None


def _from_catalog(catalog: CatalogSummary | None) -> Outcome | None:
    """`dbt docs generate`'s catalog errors (its error event only counts them), if any."""
    if not catalog or not catalog["errors"]:
        return None
    more = len(catalog["errors"]) + catalog["errors_omitted"] - 1
    return _outcome(
        "dbt_error",
        "dbt docs generate could not read every relation's catalog: "
        + statement(catalog["errors"][0])
        + (f" (and {more} more)" if more else ""),
        exit_code=1,
        evidence=[_first_line(error) for error in catalog["errors"]],
    )


def _freshness_line(source: SourceFreshness) -> str:
    return f"{source['unique_id']}: {freshness_message(source)}"


def _dbt_messages(results: RunResults | None) -> list[str]:
    if results is None:
        return []
    messages = [event["message"] for event in results.log_events]
    if results.summary is not None:
        messages += [
            f["message"] for f in results.summary["failures"] if f["status"] in FAILED_STATUSES
        ]
    # The digest is hidden by the uploader; an older sidecar's was not, nor are node messages.
    return [hide_values(m) for m in messages if m]


def _first_line(text: str) -> str:
    """`text` on one line, cut to a readable length, with quoted values hidden."""
    return shorten(" ".join(hide_values(text).split()), 300)
