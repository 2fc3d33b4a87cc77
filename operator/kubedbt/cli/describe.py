"""`kubectl dbt describe RUN`: how a run ended and why, judged as the operator judges it.

The evidence is gathered the way kubedbt.io.watch gathers it once a run is over (the Job, its pods
by the run's instance label, the decoded results ConfigMap, the dbt container's memory limit) and
classified by kubedbt.core.classify. The outcome is the default one: a DAG can still make a kind
retryable or not with the operator's retryable_failures. A run that has not finished has no outcome
yet, unless its pod already shows why it cannot start (an image that cannot be pulled, say).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from kubedbt.cli.cluster import Cluster
from kubedbt.cli.results import decode_results
from kubedbt.cli.run_info import RunInfo, memory_limit, parse_time
from kubedbt.cli.table import FIELD_WIDTH, age, field
from kubedbt.core.classify import Evidence, Outcome, classify
from kubedbt.core.report import summary_lines
from kubedbt.core.results import RunResults


def evidence_of(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], results: RunResults | None
) -> Evidence:
    """The classifier's input for a run, as the operator builds it after the run ended."""
    return Evidence(job=job, pods=tuple(pods), results=results, memory_limit=memory_limit(job))


def describe_lines(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    results: RunResults | None,
    *,
    now: datetime.datetime,
) -> list[str]:
    """Everything `kubectl dbt describe` prints about one run."""
    run = RunInfo.from_job(job)
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
    if results is not None and results.summary is not None:
        lines.append(field("Summary", summary_lines(results.summary)[0]))
    lines += ["", *outcome_lines(classify(evidence_of(job, pods, results)), run)]
    lines += ["", *pod_lines(pods, now=now)]
    where = f"{run.name} -n {run.namespace}"
    lines += ["", field("See also", f"kubectl dbt logs {where}")]
    if results is not None and results.summary is not None:
        lines.append(" " * FIELD_WIDTH + f"kubectl dbt results {where}")
    return lines


def outcome_lines(outcome: Outcome, run: RunInfo) -> list[str]:
    """The classification: kind, retryable, reason, exit code and the evidence behind it."""
    finished = run.status in ("Succeeded", "Failed")
    if not finished and outcome.kind == "unknown":
        return [field("Outcome", f"none yet (the run is {run.status.lower()})")]
    title = "Outcome:" if finished else "Outcome so far (the run has not finished):"
    lines = [
        title,
        f"  Kind:       {outcome.kind}",
        f"  Retryable:  {'yes' if outcome.retryable else 'no'}",
        f"  Reason:     {outcome.reason}",
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
    results = decode_results(configmap) if configmap is not None else None
    for line in describe_lines(job, pods, results, now=now):
        print(line)
    return 0
