"""`kubectl dbt describe RUN`: how a run ended and why, judged as the operator judges it.

The evidence is what kubedbt.io.watch reads (the Job, its pods by the run's instance label, the
results ConfigMap, the Events of the Job and its pods) and the judgement is the watch's own:
kubedbt.core.progress.judge, with the limits the operator recorded on the Job. So a run the
watch would still wait for has no outcome yet, and one it would end (an image that does not
exist, a start past startup_timeout) shows the outcome the task gets. The retryable column is the
default one: a DAG can still change it with the operator's retryable_failures.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kubedbt.cli.cluster import Cluster
from kubedbt.cli.results import decode_results
from kubedbt.cli.run_info import RunInfo, live_progress, parse_time
from kubedbt.cli.table import FIELD_WIDTH, age, field
from kubedbt.core.classify import Outcome, event_lines
from kubedbt.core.live import progress_line
from kubedbt.core.progress import RunProgress, judge
from kubedbt.core.report import summary_lines


def outcome_of(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    configmap: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    *,
    now: datetime.datetime,
) -> Outcome | None:
    """The outcome the operator's watch reports for this run at `now` (None: it still waits)."""
    progress = RunProgress.for_job(job)
    progress.listed("job", [dict(job)])
    progress.listed("pod", [dict(p) for p in pods])
    progress.listed("configmap", [dict(configmap)] if configmap is not None else [])
    results = decode_results(configmap) if configmap is not None else None
    return judge(progress, now.timestamp(), results=results, events=events)


def describe_lines(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    configmap: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]] = (),
    *,
    now: datetime.datetime,
) -> list[str]:
    """Everything `kubectl dbt describe` prints about one run."""
    run = RunInfo.from_job(job)
    results = decode_results(configmap) if configmap is not None else None
    upload = f"upload status {results.status}" if results else "not found"
    lines = [
        field("Name", run.name),
        field("Namespace", run.namespace),
        field("DAG", run.dag_id),
        field("Task", run.task),
        field("Run", run.run_id),
        field("Try", run.try_number),
        field("Status", run.status),
        field("Age", age(run.created, now)),
        field("Command", run.command or "<unknown>"),
        field("Results", f"ConfigMap {run.results_configmap}, {upload}"),
    ]
    snapshot = live_progress(configmap)
    if snapshot is not None:
        # Without the command: the Command line above names it.
        lines.append(field("Progress", progress_line(snapshot, now.timestamp(), command="")))
    if results is not None and results.summary is not None:
        lines.append(field("Summary", summary_lines(results.summary)[0]))
    lines += ["", *outcome_lines(outcome_of(job, pods, configmap, events, now=now), run)]
    lines += ["", *pod_lines(pods, now=now)]
    warnings = event_lines(events)
    if warnings:
        lines += ["", "Events (warnings, oldest first):", *(f"  {line}" for line in warnings)]
    where = f"{run.name} -n {run.namespace}"
    lines += ["", field("See also", f"kubectl dbt logs {where}")]
    if results is not None and results.summary is not None:
        lines.append(" " * FIELD_WIDTH + f"kubectl dbt results {where}")
    return lines


def outcome_lines(outcome: Outcome | None, run: RunInfo) -> list[str]:
    """The classification: kind, retryable, reason, fix, exit code and the evidence behind it.

    The fix is there when kubedbt recognises a misconfiguration (kubedbt.core.diagnose).
    """
    if outcome is None:
        return [field("Outcome", f"none yet (the run is {run.status.lower()})")]
    finished = run.status in ("Succeeded", "Failed")
    title = "Outcome:" if finished else "Outcome (the watch ends the run here; its Job has not):"
    lines = [
        title,
        f"  Kind:       {outcome.kind}",
        f"  Retryable:  {'yes' if outcome.retryable else 'no'}",
        f"  Reason:     {outcome.reason}",
        *([f"  Fix:        {outcome.fix}"] if outcome.fix else []),
        f"  Exit code:  {'none' if outcome.exit_code is None else outcome.exit_code}",
    ]
    if outcome.evidence:
        lines.append("  Evidence:")
        lines += [f"    {' '.join(item.split())}" for item in outcome.evidence]
    return lines


def pod_lines(pods: Sequence[Mapping[str, Any]], *, now: datetime.datetime) -> list[str]:
    """Each pod, newest first: phase, age, what got in its way, and each container's state."""
    if not pods:
        return [field("Pods", "none (not created yet, or removed with the Job's pods)")]
    lines = ["Pods:"]
    newest = sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp")), reverse=True)
    for pod in newest:
        status = pod.get("status") or {}
        reason = f" ({status['reason']})" if status.get("reason") else ""
        created = parse_time(pod["metadata"].get("creationTimestamp"))
        lines.append(
            f"  {pod['metadata']['name']}   {status.get('phase', 'Unknown')}{reason}"
            f"   {age(created, now)}"
        )
        lines += [f"    {line}" for line in _condition_lines(status)]
        lines += [f"    {line}" for line in _container_lines(pod, now=now)]
    return lines


def _condition_lines(status: Mapping[str, Any]) -> list[str]:
    lines = []
    for condition in status.get("conditions") or []:
        kind, value = condition.get("type"), condition.get("status")
        if (kind == "PodScheduled" and value == "False") or (
            kind == "DisruptionTarget" and value == "True"
        ):
            detail = f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
            lines.append(f"{kind}={value}: {' '.join(detail.split())}")
    return lines


def _container_lines(pod: Mapping[str, Any], *, now: datetime.datetime) -> list[str]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    names = [("init " + c["name"], c["name"]) for c in spec.get("initContainers") or []]
    names += [(c["name"], c["name"]) for c in spec.get("containers") or []]
    reported = {
        s.get("name"): s
        for s in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
    }
    width = max((len(label) for label, _ in names), default=0)
    return [
        f"{label:<{width}}   {container_state(reported.get(name), now=now)}"
        for label, name in names
    ]


def container_state(status: Mapping[str, Any] | None, *, now: datetime.datetime) -> str:
    """A container's state on one line: running, waiting (why) or terminated (how)."""
    state = (status or {}).get("state") or {}
    if "running" in state:
        started = parse_time((state["running"] or {}).get("startedAt"))
        return f"running, started {age(started, now)} ago"
    if "terminated" in state:
        ended = state["terminated"] or {}
        reason = ended.get("reason") or "Terminated"
        signal = f", signal {ended['signal']}" if ended.get("signal") else ""
        return f"terminated: {reason}, exit code {ended.get('exitCode')}{signal}"
    if "waiting" in state:
        waiting = state["waiting"] or {}
        detail = f"{waiting.get('reason', '')}: {waiting.get('message', '')}".strip(": ")
        return f"waiting: {' '.join(detail.split()) or 'no reason given'}"
    return "no state reported yet"


async def describe_run(cluster: Cluster, wanted: str, *, now: datetime.datetime) -> int:
    """Gather a run's evidence, classify it and print the lot."""
    job = await cluster.find_run(wanted)
    run = RunInfo.from_job(job)
    pods = await cluster.pods(run.name)
    configmap = await cluster.configmap(run.results_configmap)
    events = await cluster.events(run.name, [p["metadata"]["name"] for p in pods])
    for line in describe_lines(job, pods, configmap, events, now=now):
        print(line)
    return 0
