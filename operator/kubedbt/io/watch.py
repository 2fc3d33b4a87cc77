"""Watching one run to its end and collecting the evidence the classifier needs.

Two watches run side by side on one API client: the run's pods (by label selector) and its Job (by
name). Each starts from a list, resumes from the last resourceVersion after a disconnect, relists
on 410 Gone and backs off on errors. There is no status polling: the loop sleeps on the event
queue until either an event arrives or the next deadline is due. What the observations mean (over,
timed out, deleted, or keep waiting) is decided by the pure RunProgress in kubedbt.core.progress.

The run is over when the Job reaches Complete or Failed. With a native sidecar that is also when the
results have been uploaded (the pod only finishes once the sidecar has exited), so the pods are
read once more for their final state and the ConfigMap is read, waiting at most results_timeout
for a straggling upload. A few cases end earlier: an image that can never be pulled, a start stuck
past startup_timeout, the execution deadline, and the Job being deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from kubernetes_asyncio.client import ApiException

from kubedbt.core import results as results_codec
from kubedbt.core.classify import DBT_CONTAINER, Evidence
from kubedbt.core.progress import Ending, RunProgress, dbt_started_in
from kubedbt.io.kube import JSON, RunClient, label_selector
from kubedbt.io.retry import is_retryable

log = logging.getLogger(__name__)

WATCH_SECONDS: Final = 240
BACKOFF_MAX: Final = 30.0
Kind = Literal["job", "pod"]
# What the watches hand the loop: ("job" | "pod", "LIST", [objects]) after each (re)list, then
# ("job" | "pod", ADDED | MODIFIED | DELETED, object) for each event.
Observation = tuple[Kind, str, Any]


@dataclass(frozen=True)
class RunRef:
    """Which run to watch."""

    job_name: str
    namespace: str
    configmap_name: str
    selector: Mapping[str, str]


@dataclass(frozen=True)
class WatchLimits:
    """How long each phase of a run may take.

    startup_timeout counts from the creation of the Job or of its newest pod, as the cluster
    recorded it; execution_deadline is the task's own deadline, in epoch seconds.
    """

    startup_timeout: float
    execution_deadline: float | None = None
    results_timeout: float = 60.0
    log_tail_lines: int = 50


@dataclass(frozen=True)
class WatchResult:
    """The evidence of a finished run, and the last lines dbt printed."""

    evidence: Evidence
    log_tail: str | None
    pod_name: str | None


LogSink = Callable[[str], Awaitable[None] | None]
_TIMED_OUT: Final[dict[Ending, Literal["startup", "execution"]]] = {
    "startup": "startup",
    "execution": "execution",
}


async def watch_run(
    client: RunClient,
    run: RunRef,
    limits: WatchLimits,
    *,
    on_log: LogSink | None = None,
    memory_limit: str | None = None,
    clock: Callable[[], float] = time.time,
) -> WatchResult:
    """Follow a run until it ends or a deadline passes, then collect its evidence."""
    watcher = _RunWatch(client, run, limits, on_log, clock)
    ending = await watcher.until_done()
    progress = watcher.progress
    run_results = None
    if ending == "finished":
        # The Job's condition can arrive before the pod's last update: read the pods once more.
        pods, _ = await client.list_pods(run.namespace, run.selector)
        progress.listed("pod", pods)
        run_results = await read_results(client, run, limits.results_timeout, clock=clock)
    pod = progress.newest_pod
    pod_name = (pod or {}).get("metadata", {}).get("name")
    tail = None
    if pod_name and progress.ever_started and ending != "job_deleted":
        tail = await client.log_tail(pod_name, run.namespace, DBT_CONTAINER, limits.log_tail_lines)
    evidence = Evidence(
        job=progress.job,
        pods=list(progress.pods.values()),
        results=run_results,
        timed_out=_TIMED_OUT.get(ending),
        memory_limit=memory_limit,
        job_deleted=ending == "job_deleted",
    )
    return WatchResult(evidence=evidence, log_tail=tail, pod_name=pod_name)


class _RunWatch:
    """The two watches of one run and the loop that consumes their events."""

    def __init__(
        self,
        client: RunClient,
        run: RunRef,
        limits: WatchLimits,
        on_log: LogSink | None,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.run = run
        self.on_log = on_log
        self.clock = clock
        self.progress = RunProgress(limits.startup_timeout, limits.execution_deadline)
        self.queue: asyncio.Queue[Observation] = asyncio.Queue()
        self.followers: dict[str, asyncio.Future[None]] = {}

    async def until_done(self) -> Ending:
        """Consume events until the progress says the run is over, and how."""
        run, client = self.run, self.client
        pods = {"label_selector": label_selector(run.selector)}
        job = {"field_selector": f"metadata.name={run.job_name}"}
        watchers: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(
                _follow(
                    self.queue, "pod", client, client.core.list_namespaced_pod, run.namespace, pods
                )
            ),
            asyncio.ensure_future(
                _follow(
                    self.queue, "job", client, client.batch.list_namespaced_job, run.namespace, job
                )
            ),
        }
        try:
            return await self._consume(watchers)
        finally:
            tasks = [*watchers, *self.followers.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _consume(self, watchers: set[asyncio.Future[Any]]) -> Ending:
        # Bounded: every decision either ends the run or names when to decide again, and a run
        # without deadlines ends with its Job (or its deletion), which the watches report.
        while True:
            now = self.clock()
            decision = self.progress.decide(now)
            if decision.ending is not None:
                return decision.ending
            wait = None if decision.wake_at is None else max(0.0, decision.wake_at - now)
            getter: asyncio.Future[Observation] = asyncio.ensure_future(self.queue.get())
            done, _ = await asyncio.wait(
                {getter, *watchers}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                for watcher in watchers & done:
                    watcher.result()  # a watch gave up on a terminal error: raise it
                continue
            kind, event_type, payload = getter.result()
            if event_type == "LIST":
                self.progress.listed(kind, payload)
            else:
                self.progress.changed(kind, event_type, payload)
            if kind == "pod":
                self._follow_logs()

    def _follow_logs(self) -> None:
        """Stream the log of every pod in which dbt has started, once each (sync mode only)."""
        if self.on_log is None:
            return
        for name, pod in self.progress.pods.items():
            if name in self.followers or (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if dbt_started_in(pod):
                self.followers[name] = asyncio.ensure_future(
                    _stream_log(self.client, name, self.run.namespace, self.on_log)
                )


async def _follow(
    queue: asyncio.Queue[Observation],
    kind: Kind,
    client: RunClient,
    list_method: Any,
    namespace: str,
    selectors: dict[str, str],
) -> None:
    """Feed `queue` with one list and then the events of one watch, for as long as it may run."""
    resource_version: str | None = None
    failures = 0
    # Bounded by the caller: watch_run cancels this task when the run ends or a deadline passes.
    while True:
        try:
            if resource_version is None:
                items, resource_version = await client.list_objects(
                    list_method, namespace, **selectors
                )
                queue.put_nowait((kind, "LIST", items))
                failures = 0
            events = client.watch(
                list_method,
                namespace,
                resource_version=resource_version,
                timeout_seconds=WATCH_SECONDS,
                **selectors,
            )
            async for event_type, obj in events:
                resource_version = obj["metadata"]["resourceVersion"]
                failures = 0  # the stream works: a later error starts the backoff afresh
                if event_type != "BOOKMARK":
                    queue.put_nowait((kind, event_type, obj))
        except ApiException as e:
            if e.status == 410:  # our resourceVersion is too old: start over from a fresh list
                resource_version = None
                continue
            if not is_retryable(e):
                raise
            failures += 1
        except Exception as e:
            if not is_retryable(e):
                raise
            failures += 1
        if failures:
            delay = min(BACKOFF_MAX, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
            log.warning("watching %ss failed %d time(s); retrying in %.1fs", kind, failures, delay)
            await asyncio.sleep(delay)


async def _stream_log(client: RunClient, pod: str, namespace: str, on_log: LogSink) -> None:
    try:
        async for line in client.follow_log(pod, namespace, DBT_CONTAINER):
            result = on_log(line)
            if result is not None:
                await result
    except Exception as e:  # the log is a courtesy; the run's outcome does not depend on it
        log.warning("stopped following the log of %s: %s", pod, e)


async def read_results(
    client: RunClient, run: RunRef, timeout: float, *, clock: Callable[[], float] = time.time
) -> results_codec.RunResults | None:
    """The run's decoded ConfigMap, waiting up to `timeout` seconds for the upload to land."""
    deadline = clock() + timeout
    configmap = await client.read_configmap(run.configmap_name, run.namespace)
    while configmap is not None and results_codec.decode(configmap).status == "pending":
        remaining = deadline - clock()
        if remaining <= 0:
            break
        configmap = await _next_version(client, run, configmap, remaining)
    return results_codec.decode(configmap) if configmap is not None else None


async def _next_version(
    client: RunClient, run: RunRef, configmap: JSON, timeout: float
) -> JSON | None:
    """The ConfigMap's next version, or the same one when nothing changes within `timeout`."""
    async for event_type, obj in client.watch(
        client.core.list_namespaced_config_map,
        run.namespace,
        resource_version=configmap["metadata"]["resourceVersion"],
        timeout_seconds=max(1, round(timeout)),
        field_selector=f"metadata.name={run.configmap_name}",
    ):
        if event_type == "DELETED":
            return None
        if event_type == "MODIFIED":
            return obj
    return configmap
