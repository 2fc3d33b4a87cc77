"""Watching one run to its end and collecting the evidence the classifier needs.

The run's Job, pods and results ConfigMap come from the process's shared NamespaceInformer (one
list+watch per kind and namespace, kubedbt.io.informer); this module subscribes to the run's
share of it and feeds each observation to the pure RunProgress (kubedbt.core.progress), which
says whether the run is over and when a deadline next falls due. The loop sleeps on the
subscription until either an observation arrives or that deadline comes: no polling.

The run is over when the Job reaches Complete or Failed and the sidecar has marked its upload
(or results_timeout has passed since). The pods are then read once more for their final state,
the ConfigMap for the results and the Events as evidence; the outcome is judged, and only a run
that did not succeed has the last lines of dbt's log read, as only then are they shown. A few
cases end earlier: an image that can never be pulled, a start stuck past startup_timeout, a Job
suspended or a pod stuck terminating for as long, and the Job being deleted. At the execution
timeout the watch stops the run (dbt is interrupted and uploads what it finished) and watches it
end.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kubedbt.core import results as results_codec
from kubedbt.core.classify import Evidence, Outcome, classify
from kubedbt.core.live import Snapshot
from kubedbt.core.naming import DBT_CONTAINER
from kubedbt.core.progress import Ending, RunProgress, dbt_started_in
from kubedbt.core.render import ANNOTATION_COMMAND
from kubedbt.io.api_errors import describe
from kubedbt.io.informer import NamespaceInformer, Subscription
from kubedbt.io.kube import JSON, RunClient

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RunRef:
    """Which run to watch."""

    job_name: str
    namespace: str
    configmap_name: str
    selector: Mapping[str, str]


@dataclass(frozen=True)
class WatchLimits:
    """How long each phase of a run may take, in seconds.

    startup_timeout counts from the creation of the Job or of its newest pod, as the cluster
    recorded it; execution_timeout from the Job's creation; results_timeout from the Job's end.
    """

    startup_timeout: float
    execution_timeout: float | None = None
    results_timeout: float = 60.0
    log_tail_lines: int = 50


@dataclass(frozen=True)
class WatchResult:
    """The evidence of a finished run, its outcome, and the last lines dbt printed.

    log_tail: read only when the outcome is not a success (None otherwise), as only then is it
    shown.
    """

    evidence: Evidence
    outcome: Outcome
    log_tail: str | None
    pod_name: str | None


LogSink = Callable[[str], Awaitable[None] | None]
# The sidecar's tally, and the dbt command it counts (`dbt build`, for a log line).
ProgressSink = Callable[[Snapshot, str], None]


async def watch_run(
    informer: NamespaceInformer,
    run: RunRef,
    limits: WatchLimits,
    *,
    on_log: LogSink | None = None,
    on_progress: ProgressSink | None = None,
    memory_limit: str | None = None,
    clock: Callable[[], float] = time.time,
) -> WatchResult:
    """Follow a run until it ends or a deadline passes, then collect its evidence and judge it.

    on_progress: called with the sidecar's tally of dbt's log each time a different one is seen
    (kubedbt.core.live); an exception it raises is logged, never the watch's end.
    """
    progress = RunProgress(
        startup_timeout=limits.startup_timeout,
        execution_timeout=limits.execution_timeout,
        results_timeout=limits.results_timeout,
    )
    logs = _LogFollower(informer, run.namespace, on_log)
    try:
        with informer.subscribe(run.job_name) as subscription:
            ending = await _until_done(
                subscription, progress, clock, logs, run, _ProgressNotifier(on_progress)
            )
    finally:
        await logs.stop()
    pod = progress.newest_pod
    pod_name = str((pod or {}).get("metadata", {}).get("name") or "") or None
    finished = ending == "finished"
    # The Job's condition can arrive before the pod's last update: the pods are read once more,
    # with the results and the Events of the Job and its pods, all at once.
    async with informer.lease() as client:
        listed, configmap, events = await asyncio.gather(
            _if(finished, lambda: client.list_pods(run.namespace, run.selector)),
            _if(finished, lambda: client.read_configmap(run.configmap_name, run.namespace)),
            _events(client, run, list(progress.pods)),
        )
        if listed is not None:
            progress.listed("pod", listed[0])
        evidence = progress.evidence(
            ending,
            # The watch judges from the summary and the log digest: run_results stays packed.
            results=(
                results_codec.decode(configmap, artifacts=False) if configmap is not None else None
            ),
            events=events,
            memory_limit=memory_limit,
        )
        outcome = classify(evidence)
        # dbt's last lines are shown only for a run that did not succeed, so only such a run reads
        # them: one request fewer per success, and a success never waits on a lost node's kubelet.
        show_log = (
            not outcome.succeeded
            and pod_name is not None
            and progress.ever_started
            and ending != "job_deleted"
        )
        tail = await _if(
            show_log,
            lambda: client.log_tail(
                str(pod_name), run.namespace, DBT_CONTAINER, limits.log_tail_lines
            ),
        )
    return WatchResult(evidence=evidence, outcome=outcome, log_tail=tail, pod_name=pod_name)


async def _events(client: RunClient, run: RunRef, pods: list[str]) -> list[JSON]:
    """The Events of the run's Job and pods: evidence only, so a refusal costs nothing but them."""
    try:
        return await client.list_run_events(run.namespace, run.job_name, pods)
    except Exception as e:  # the outcome does not depend on them
        log.warning("could not read the Events of %s: %s", run.job_name, describe(e))
        return []


async def _if(condition: bool, read: Callable[[], Awaitable[T]]) -> T | None:
    return await read() if condition else None


async def _until_done(
    subscription: Subscription,
    progress: RunProgress,
    clock: Callable[[], float],
    logs: _LogFollower,
    run: RunRef,
    notify: _ProgressNotifier,
) -> Ending:
    """Feed observations to the progress until it says the run is over, and how.

    A Job missing from the first snapshot is read once more before that counts as deleted: a
    shared informer's cache can lag a Job created a moment ago (the trigger of a run that just
    deferred subscribes within milliseconds).
    """
    # Bounded: every decision either ends the run or names when to decide again, and a run
    # without deadlines ends with its Job (or its deletion), which the informer reports.
    while True:
        now = clock()
        decision = progress.decide(now)
        if decision.ending is not None:
            return decision.ending
        if decision.stop:
            await _stop(subscription.informer, run, now)
            progress.stop_sent_at = now
            continue
        wait = None if decision.wake_at is None else max(0.0, decision.wake_at - now)
        observation = await subscription.next(wait)
        if observation is None:
            continue
        kind, event_type, payload = observation
        if kind == "job" and event_type == "LIST" and not payload and progress.job is None:
            async with subscription.informer.lease() as client:
                job = await client.read_job(run.job_name, run.namespace)
            payload = [job] if job is not None else []
        progress.observe(kind, event_type, payload)
        if kind == "pod":
            logs.follow(progress.pods)
        elif kind == "configmap":
            notify(progress.live, progress.job)


async def _stop(informer: NamespaceInformer, run: RunRef, now: float) -> None:
    """Stop the run at the execution timeout, so dbt reports what it finished before Airflow's."""
    log.warning(
        "the execution timeout is near: stopping %s/%s (dbt is interrupted, cancels its queries "
        "and writes the results of what it finished)",
        run.namespace,
        run.job_name,
    )
    async with informer.lease() as client:
        try:
            await client.stop_run(run.job_name, run.namespace, "execution-timeout", now)
        except Exception as e:  # an older chart's Role without jobs patch, say
            log.warning("could not stop %s (%s): deleting it instead", run.job_name, describe(e))
            await client.delete_job(run.job_name, run.namespace)


class _ProgressNotifier:
    """Hands each new tally to the caller's on_progress, once per distinct tally."""

    def __init__(self, sink: ProgressSink | None) -> None:
        self.sink = sink
        self.last: Snapshot | None = None

    def __call__(self, snapshot: Snapshot | None, job: JSON | None) -> None:
        if self.sink is None or snapshot is None or snapshot == self.last:
            return
        self.last = snapshot
        try:
            self.sink(snapshot, command_name(job))
        except Exception as e:  # progress is a courtesy; the run's outcome does not depend on it
            log.warning("on_progress failed: %s", describe(e))


def command_name(job: Mapping[str, Any] | None) -> str:
    """`dbt build`: the command the Job runs, without its options (which can hold vars)."""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    try:
        words = shlex.split(str(annotations.get(ANNOTATION_COMMAND) or ""))
    except ValueError:
        words = []
    name = list(itertools.takewhile(lambda word: not word.startswith("-"), words))[:3]
    return " ".join(name) or "dbt"


class _LogFollower:
    """Streams the log of every pod in which dbt has started, once each (sync mode only)."""

    def __init__(self, informer: NamespaceInformer, namespace: str, on_log: LogSink | None):
        self.informer = informer
        self.namespace = namespace
        self.on_log = on_log
        self.tasks: dict[str, asyncio.Future[None]] = {}

    def follow(self, pods: Mapping[str, JSON]) -> None:
        if self.on_log is None:
            return
        for name, pod in pods.items():
            gone = (pod.get("metadata") or {}).get("deletionTimestamp")
            if name in self.tasks or gone or not dbt_started_in(pod):
                continue
            self.tasks[name] = asyncio.ensure_future(
                _stream_log(self.informer, name, self.namespace, self.on_log)
            )

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


async def _stream_log(
    informer: NamespaceInformer, pod: str, namespace: str, on_log: LogSink
) -> None:
    try:
        async with informer.lease() as client:
            async for line in client.follow_log(pod, namespace, DBT_CONTAINER):
                result = on_log(line)
                if result is not None:
                    await result
    except Exception as e:  # the log is a courtesy; the run's outcome does not depend on it
        log.warning("stopped following the log of %s: %s", pod, describe(e))
