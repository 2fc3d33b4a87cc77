"""Watching one run to its end and collecting the evidence the classifier needs.

Two watches run side by side on one API client: the run's pods (by label selector) and its Job (by
name). Each resumes from the last resourceVersion after a disconnect, relists on 410 Gone and backs
off on errors. There is no status polling: the loop sleeps on the event queue until either an event
arrives or the next deadline (startup, execution) is due.

The run is over when the Job reaches Complete or Failed. With a native sidecar that is also when the
results have been uploaded (the pod only finishes once the sidecar has exited), so the ConfigMap is
then read, waiting at most results_timeout for a straggling upload. A few cases end earlier: an
image that can never be pulled, a start stuck past startup_timeout, and the execution deadline.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubernetes_asyncio.client import ApiException

from kubedbt.core import results as results_codec
from kubedbt.core.classify import DBT_CONTAINER, Evidence, container_status, latest_pod
from kubedbt.io.kube import JSON, RunClient, label_selector
from kubedbt.io.retry import is_retryable

log = logging.getLogger(__name__)

WATCH_SECONDS: Final = 240
# Waiting reasons no amount of waiting fixes: the run ends at once instead of at startup_timeout.
HOPELESS_WAITING: Final = frozenset({"InvalidImageName", "ErrImageNeverPull"})
BACKOFF_MAX: Final = 30.0


@dataclass(frozen=True)
class RunRef:
    """Which run to watch."""

    job_name: str
    namespace: str
    configmap_name: str
    selector: Mapping[str, str]


@dataclass(frozen=True)
class WatchLimits:
    """How long each phase of a run may take. Deadlines are wall-clock epoch seconds."""

    startup_deadline: float
    execution_deadline: float | None = None
    results_timeout: float = 60.0
    log_tail_lines: int = 50


@dataclass
class RunState:
    """What the watches have seen so far."""

    job: JSON | None = None
    pods: dict[str, JSON] = field(default_factory=dict)
    started: bool = False


@dataclass(frozen=True)
class WatchResult:
    """The evidence of a finished run, and the last lines dbt printed."""

    evidence: Evidence
    log_tail: str | None
    pod_name: str | None


LogSink = Callable[[str], Awaitable[None] | None]


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
    timed_out = await watcher.until_done()
    state = watcher.state
    run_results = None
    if timed_out is None:
        run_results = await read_results(client, run, limits.results_timeout, clock=clock)
    pod = latest_pod(list(state.pods.values()))
    pod_name = (pod or {}).get("metadata", {}).get("name")
    tail = None
    if pod_name and state.started:
        tail = await client.log_tail(pod_name, run.namespace, DBT_CONTAINER, limits.log_tail_lines)
    evidence = Evidence(
        job=state.job,
        pods=list(state.pods.values()),
        results=run_results,
        timed_out=timed_out,
        memory_limit=memory_limit,
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
        self.limits = limits
        self.on_log = on_log
        self.clock = clock
        self.state = RunState()
        self.queue: asyncio.Queue[tuple[str, str, JSON]] = asyncio.Queue()
        self.followers: dict[str, asyncio.Future[None]] = {}

    async def until_done(self) -> Literal["startup", "execution"] | None:
        """Consume events until the Job finishes (None) or a deadline passes (which one)."""
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

    def _next_deadline(self) -> tuple[float, Literal["startup", "execution"]] | None:
        deadlines: list[tuple[float, Literal["startup", "execution"]]] = []
        if self.limits.execution_deadline is not None:
            deadlines.append((self.limits.execution_deadline, "execution"))
        if not self.state.started:
            deadlines.append((self.limits.startup_deadline, "startup"))
        return min(deadlines) if deadlines else None

    async def _consume(
        self, watchers: set[asyncio.Future[Any]]
    ) -> Literal["startup", "execution"] | None:
        while True:
            deadline = self._next_deadline()
            wait = None
            if deadline is not None:
                wait = deadline[0] - self.clock()
                if wait <= 0:
                    return deadline[1]
            getter: asyncio.Future[Any] = asyncio.ensure_future(self.queue.get())
            done, _ = await asyncio.wait(
                {getter, *watchers}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                for watcher in watchers & done:
                    watcher.result()  # a watch gave up on a terminal error: raise it
                continue
            kind, event_type, obj = getter.result()
            if kind == "job":
                self.state.job = obj
                if _job_finished(obj):
                    return None
            elif self._on_pod(event_type, obj):
                return None

    def _on_pod(self, event_type: str, pod: JSON) -> bool:
        """Record a pod event; True when the run can never start (an image that cannot exist)."""
        name = pod["metadata"]["name"]
        self.state.pods[name] = pod  # a DELETED pod keeps its last state as evidence
        dbt_state = (container_status(pod, DBT_CONTAINER) or {}).get("state") or {}
        if "running" in dbt_state or "terminated" in dbt_state:
            self.state.started = True
            if self.on_log is not None and name not in self.followers and event_type != "DELETED":
                self.followers[name] = asyncio.ensure_future(
                    _stream_log(self.client, name, self.run.namespace, self.on_log)
                )
        return (dbt_state.get("waiting") or {}).get("reason") in HOPELESS_WAITING


def _job_finished(job: JSON) -> bool:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return True
    return False


async def _follow(
    queue: asyncio.Queue[tuple[str, str, JSON]],
    kind: str,
    client: RunClient,
    list_method: Any,
    namespace: str,
    selectors: dict[str, str],
) -> None:
    """Feed `queue` with the events of one watch for as long as the caller lets it run."""
    resource_version: str | None = None
    failures = 0
    # Bounded by the caller: watch_run cancels this task when the run ends or a deadline passes.
    while True:
        try:
            if resource_version is None:
                items, resource_version = await client.list_objects(
                    list_method, namespace, **selectors
                )
                for item in items:
                    queue.put_nowait((kind, "ADDED", item))
            events = client.watch(
                list_method,
                namespace,
                resource_version=resource_version,
                timeout_seconds=WATCH_SECONDS,
                **selectors,
            )
            async for event_type, obj in events:
                resource_version = obj["metadata"]["resourceVersion"]
                if event_type != "BOOKMARK":
                    queue.put_nowait((kind, event_type, obj))
            failures = 0
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
