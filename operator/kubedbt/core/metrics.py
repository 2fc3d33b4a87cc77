"""The metrics a run reports, as data: names, types, values and tags, decided from its facts.

kubedbt.airflow.metrics sends them through Airflow's Stats, so they reach whatever Airflow is
configured for (StatsD, Datadog's DogStatsD, OpenTelemetry). Every name is under `kubedbt.`;
tags are bounded: the DAG, the task, the namespace, the dbt command and small enumerations
(status, kind, retryable, mode), never a run id, a try number or a node id, so a series per
task is all a backend keeps. The README lists them.

Timings come from what the cluster recorded (the Job's creation, the dbt container's start and
end), not from a clock here: they are whole seconds, as Kubernetes stores them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Literal, TypedDict

from kubedbt.core.naming import DBT_CONTAINER
from kubedbt.core.progress import job_end
from kubedbt.core.timestamps import epoch_seconds

MetricType = Literal["count", "timing", "gauge"]

PREFIX: Final = "kubedbt"
RUN_DURATION: Final = f"{PREFIX}.run.duration"
QUEUE_TO_START: Final = f"{PREFIX}.run.queue_to_start"
NODES: Final = f"{PREFIX}.nodes"
OUTCOME: Final = f"{PREFIX}.outcome"
RETRIES: Final = f"{PREFIX}.retries"
RESULTS_BYTES: Final = f"{PREFIX}.results.bytes"
# What Airflow's StatsD name check lets through; a tag value with anything else (a space in
# "source freshness") would have the whole metric dropped when tags ride in the name.
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")
# Bounds a tag value's length; Airflow drops a name (with its tags) past 250 characters.
MAX_TAG_CHARS: Final = 100


@dataclass(frozen=True)
class Metric:
    """One metric to send: a counter increment, a timing, or a gauge's value."""

    name: str
    type: MetricType
    value: float
    tags: Mapping[str, str]


class RunTimings(TypedDict):
    """How long a run waited to start and how long dbt ran, in seconds (None: not known)."""

    queue_to_start: float | None
    duration: float | None


@dataclass(frozen=True)
class MetricTags:
    """The tags every metric of a run carries."""

    dag_id: str
    task_id: str
    namespace: str
    command: str | None

    def as_dict(self) -> dict[str, str]:
        """The tags, with values Airflow's name checks accept."""
        tags = {"dag_id": self.dag_id, "task_id": self.task_id, "namespace": self.namespace}
        if self.command:
            tags["command"] = self.command
        return {key: tag_value(value) for key, value in tags.items()}


@dataclass(frozen=True)
class RunFacts:
    """What the metrics of a finished run are made of."""

    status: str
    kind: str | None
    retryable: bool
    counts: Mapping[str, int]
    timings: RunTimings | None
    results_bytes: int | None


def tag_value(value: str) -> str:
    """A tag value StatsD carries whole: unsafe characters as `_`, at most MAX_TAG_CHARS."""
    return _UNSAFE.sub("_", value)[:MAX_TAG_CHARS] or "_"


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return end - start


def _dbt_runs(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The dbt container's states in a pod that say when it started: now and before a restart."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == DBT_CONTAINER:
            states = [status.get("state") or {}, status.get("lastState") or {}]
            return [s.get("running") or s.get("terminated") or {} for s in states]
    return []


def run_timings(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> RunTimings:
    """From the Job's creation to dbt's first start, and from that start to dbt's end.

    A Job may have replaced a pod (a disruption): the wait ends at the first start of dbt in any
    of them, and the run ends when the dbt container of the newest pod ended (else when the Job
    did). A run that never started dbt has no duration and no queue_to_start.
    """
    starts = [
        started
        for pod in pods
        for state in _dbt_runs(pod)
        if (started := epoch_seconds(state.get("startedAt"))) is not None
    ]
    first_start = min(starts, default=None)
    ended = None
    if pods:
        newest = max(pods, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp")))
        runs = _dbt_runs(newest)
        ended = epoch_seconds(runs[0].get("finishedAt")) if runs else None
    if ended is None and job is not None:
        ended = job_end(job)
    created = epoch_seconds(((job or {}).get("metadata") or {}).get("creationTimestamp"))
    return {
        "queue_to_start": _seconds(created, first_start),
        "duration": _seconds(first_start, ended),
    }


def run_metrics(facts: RunFacts, tags: MetricTags) -> list[Metric]:
    """The metrics of a finished run: its timings, its nodes by status, its outcome, its size."""
    common = tags.as_dict()
    found: list[Metric] = []
    timings = facts.timings or {"queue_to_start": None, "duration": None}
    for name, seconds in (
        (RUN_DURATION, timings["duration"]),
        (QUEUE_TO_START, timings["queue_to_start"]),
    ):
        if seconds is not None:
            found.append(Metric(name, "timing", seconds * 1000, common))
    for status, count in sorted(facts.counts.items()):
        if count > 0:
            found.append(Metric(NODES, "count", count, {**common, "status": tag_value(status)}))
    outcome = {
        **common,
        "status": facts.status,
        # None: the watch itself could not finish (the API stayed unreachable).
        "kind": facts.kind or "watch_error",
        "retryable": "true" if facts.retryable else "false",
    }
    found.append(Metric(OUTCOME, "count", 1, outcome))
    if facts.results_bytes is not None:
        found.append(Metric(RESULTS_BYTES, "gauge", facts.results_bytes, common))
    return found


def retry_metrics(
    tags: MetricTags, *, try_number: int, resumed: bool, adopted: bool
) -> list[Metric]:
    """A try after the first that started dbt again: resuming (`dbt retry`) or rerunning it all.

    A try that adopted a Job (its worker restarted, or an earlier try's Job still runs) started
    nothing, so it is no retry.
    """
    if try_number <= 1 or adopted:
        return []
    mode = "resume" if resumed else "rerun"
    return [Metric(RETRIES, "count", 1, {**tags.as_dict(), "mode": mode})]


def as_timedelta(metric: Metric) -> timedelta:
    """A timing metric's value (milliseconds) as the timedelta every Stats backend takes."""
    return timedelta(milliseconds=metric.value)
