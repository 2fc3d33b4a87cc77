"""DbtJobTrigger: watches one run from the triggerer and yields one typed event.

Its arguments live in a frozen dataclass, TriggerArgs; serialize() is derived from it, so what the
operator hands over and what the triggerer rebuilds cannot drift apart. Every trigger of one
connection and namespace in a triggerer shares one informer (kubedbt.io.informer: one list+watch
of kubedbt's Jobs, pods and ConfigMaps, one API client), so a thousand waiting runs cost three
streams. It classifies the outcome itself and sends back only what the worker needs: the
outcome, the summary and the log tail.

While it waits it writes the sidecar's tally of dbt's log to the task log (ProgressLog), so a
two-hour build is not silent until its end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

from kubedbt.airflow.events import RunEvent, error_event, run_event
from kubedbt.core.errors import KubedbtError
from kubedbt.core.live import LineGate, Snapshot, progress_line
from kubedbt.io.api_errors import KubeApiError, describe
from kubedbt.io.informer import NamespaceInformer, shared_informer
from kubedbt.io.kube import RunClient
from kubedbt.io.retry import RetryPolicy
from kubedbt.io.watch import RunRef, WatchLimits, WatchResult, watch_run

# Seconds on_kill waits to learn whether the task is still deferred before stopping the run.
STATE_LOOKUP_TIMEOUT = 3.0
# Seconds on_kill holds out against the triggerer's repeated cancels while it stops the run
# (Airflow's own bound on on_kill, [triggerer] on_kill_timeout, is 30 s by default).
ON_KILL_BUDGET = 20.0
# Progress lines: at most one per PROGRESS_INTERVAL seconds when the tally changes, and one per
# PROGRESS_HEARTBEAT while a node runs on without a change; PROGRESS_TICK is how often a change
# held back by the interval is looked at again.
PROGRESS_INTERVAL = 30.0
PROGRESS_HEARTBEAT = 300.0
PROGRESS_TICK = 5.0


class _InfoLog(Protocol):
    def info(self, msg: str, /, *args: Any) -> Any: ...


class ProgressLog:
    """Writes the run's progress to the task log, at a bounded rate.

    update() takes each new tally from the watch; tick() writes a line when LineGate says one is
    due, so a change held back by the interval is written at the next tick, not lost.
    """

    def __init__(
        self,
        log: _InfoLog,
        *,
        gate: LineGate | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log
        self.gate = gate or LineGate(interval=PROGRESS_INTERVAL, heartbeat=PROGRESS_HEARTBEAT)
        self.clock = clock
        self.latest: Snapshot | None = None
        self.command = "dbt"

    def update(self, snapshot: Snapshot, command: str) -> None:
        """A new tally from the watch (watch_run's on_progress)."""
        self.latest, self.command = snapshot, command
        self.tick()

    def tick(self) -> None:
        """Write a line if one is due now."""
        now = self.clock()
        if self.latest is not None and self.gate.due(self.latest, now):
            self.log.info("%s", progress_line(self.latest, now, command=self.command))

    async def ticking(self) -> None:
        """Tick until cancelled (run() cancels it when the watch ends)."""
        while True:  # bounded by the watch: run() cancels this task in a finally
            await asyncio.sleep(PROGRESS_TICK)
            self.tick()


@dataclass(frozen=True)
class ConnectionArgs:
    """How to reach the cluster: the cncf-kubernetes connection and its per-task overrides."""

    kubernetes_conn_id: str | None = "kubernetes_default"
    cluster_context: str | None = None
    config_file: str | None = None
    in_cluster: bool | None = None

    def async_hook(self) -> AsyncKubernetesHook:
        """The provider's async hook for this connection."""
        # The async hook reads the kubeconfig path from the connection's extras only, so a
        # per-task config_file is handed over as the extras (it replaces the connection's).
        extras = {"kube_config_path": self.config_file} if self.config_file else None
        return AsyncKubernetesHook(
            conn_id=self.kubernetes_conn_id,
            cluster_context=self.cluster_context,
            in_cluster=self.in_cluster,
            connection_extras=extras,
        )

    def informer(
        self, namespace: str, policy: RetryPolicy
    ) -> AbstractAsyncContextManager[NamespaceInformer]:
        """The shared informer of this process for `namespace` on this connection.

        Each (re)connection builds a fresh hook, so a 401 reloads the credentials.
        """
        return shared_informer(self, namespace, lambda: self.async_hook().get_conn(), policy=policy)


@dataclass(frozen=True)
class TriggerArgs:
    """Everything DbtJobTrigger needs, as plain serialisable values."""

    run: RunRef
    limits: WatchLimits
    memory_limit: str | None = None
    connection: ConnectionArgs = field(default_factory=ConnectionArgs)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def to_kwargs(self) -> dict[str, Any]:
        """Plain JSON-able keyword arguments (nested dataclasses become dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> TriggerArgs:
        """The inverse of to_kwargs (limits a newer kubedbt dropped are ignored)."""
        known = {f.name for f in dataclasses.fields(WatchLimits)}
        return cls(
            run=RunRef(**kwargs["run"]),
            limits=WatchLimits(**{k: v for k, v in kwargs["limits"].items() if k in known}),
            memory_limit=kwargs.get("memory_limit"),
            connection=ConnectionArgs(**kwargs.get("connection", {})),
            retry=RetryPolicy(**kwargs.get("retry", {})),
        )


class DbtJobTrigger(BaseTrigger):
    """Waits for a kubedbt run to end and yields a RunEvent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger is unannotated
        self.args = TriggerArgs.from_kwargs(kwargs)
        # One hook for run() and on_kill(): it keeps the connection run() resolved. Resolving it
        # again in on_kill goes through the triggerer's supervisor, which Airflow 3.3.2 can stall
        # while it handles a "mark failed", and on_kill is cancelled 10 s later.
        self.hook = self.args.connection.async_hook()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments to rebuild this trigger in the triggerer."""
        return f"{type(self).__module__}.{type(self).__qualname__}", self.args.to_kwargs()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Watch the run, classify how it ended and yield exactly one event."""
        args, run = self.args, self.args.run
        event: RunEvent
        try:
            await self.hook.get_conn_extras()  # resolved now, so on_kill need not ask again
            async with args.connection.informer(run.namespace, args.retry) as informer:
                result = await self._watch(informer)
            event = run_event(run.job_name, run.namespace, result)
        except Exception as e:  # the worker decides what to do; the triggerer must not crash
            # The event's text goes to the task log and XCom: described, never repr'd. API
            # errors say all there is in one line; anything else gets its traceback.
            expected = isinstance(e, (KubeApiError, KubedbtError))
            self.log.error(
                "watching %s/%s failed: %s",
                run.namespace,
                run.job_name,
                describe(e),
                exc_info=not expected,
            )
            event = error_event(run.job_name, run.namespace, describe(e))
        yield TriggerEvent(dict(event))

    async def _watch(self, informer: NamespaceInformer) -> WatchResult:
        """watch_run, writing the run's progress to the task log while it waits."""
        progress = ProgressLog(self.log)
        ticking = asyncio.ensure_future(progress.ticking())
        try:
            return await watch_run(
                informer,
                self.args.run,
                self.args.limits,
                on_progress=progress.update,
                memory_limit=self.args.memory_limit,
            )
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)

    async def on_kill(self) -> None:
        """The task was cleared or marked while deferred: stop this try's run (RunClient.stop_run).

        dbt is interrupted, cancels its queries and writes run_results, which the sidecar uploads
        for the next try to resume; the Job is kept, failed, until its TTL.

        Airflow also cancels a trigger this way when it moves it to another triggerer; the task
        instance is then still deferred and the run must go on, so that case is left alone.

        Airflow 3.3's triggerer calls on_kill inside the trigger's cancelled task and cancels that
        task again at each of its state syncs (about once a second) until it ends; a cancel that
        lands here ends on_kill silently and the run goes on. So the stop runs as its own task,
        which on_kill waits out through those cancels (finish_despite_cancels).
        """
        await finish_despite_cancels(self._stop_unless_moved(), ON_KILL_BUDGET)

    async def _stop_unless_moved(self) -> None:
        args, run = self.args, self.args.run
        if await self._still_deferred():
            self.log.info(
                "the task is still deferred (the trigger moved to another triggerer): "
                "leaving Job %s/%s running",
                run.namespace,
                run.job_name,
            )
            return
        async with self.hook.get_conn() as api_client:
            stopped = await RunClient(api_client, args.retry).stop_run(
                run.job_name, run.namespace, "task-killed"
            )
        self.log.info(
            "Job %s/%s %s",
            run.namespace,
            run.job_name,
            "stopped: dbt is interrupted and uploads what it finished" if stopped else "was gone",
        )

    async def _still_deferred(self) -> bool:
        """Whether Airflow still has this trigger's task instance deferred (False if unknown)."""
        ti = getattr(self, "task_instance", None)
        if ti is None:  # not run by a triggerer (tests drive the trigger directly)
            return False
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        lookup = sync_to_async(RuntimeTaskInstance.get_ti_count)(
            dag_id=ti.dag_id,
            map_index=ti.map_index,
            task_ids=[ti.task_id],
            run_ids=[ti.run_id],
            states=["deferred"],
        )
        try:
            # Bounded: seen to hang while Airflow handles a "mark failed" (3.3.2).
            count = await asyncio.wait_for(lookup, STATE_LOOKUP_TIMEOUT)
        except Exception as e:  # unknown: the person's action wins, as it always did
            self.log.warning(
                "could not read the state of the task (%s); stopping the run", describe(e)
            )
            return False
        return bool(count)


async def finish_despite_cancels(work: Coroutine[Any, Any, None], budget: float) -> None:
    """Run `work` to its end even if the calling task is cancelled meanwhile, up to `budget` s.

    A cancel of the caller is absorbed (and uncancelled) while `work` goes on; past the budget
    `work` is cancelled and the caller's cancel goes on as usual. `work`'s own error is raised.
    """
    task = asyncio.ensure_future(work)
    deadline = time.monotonic() + budget
    while True:
        try:
            await asyncio.shield(task)
            return
        except asyncio.CancelledError:
            if task.done() and not task.cancelled():
                task.result()  # the work's own outcome (an error) wins over the cancel
                return
            if time.monotonic() >= deadline or task.cancelled():
                task.cancel()
                raise
            # Python 3.11+ counts a task's pending cancels; this one is absorbed.
            uncancel = getattr(asyncio.current_task(), "uncancel", None)
            if uncancel is not None:
                uncancel()
