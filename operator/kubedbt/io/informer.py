"""One list+watch per resource kind and namespace, shared by every run a process waits on.

client-go's informer is the model. A NamespaceInformer lists kubedbt's Jobs, pods and results
ConfigMaps of one namespace (one label selector for all three), keeps a cache of them, and then
watches each kind from the list's resourceVersion, with bookmarks, for a few minutes at a time,
resuming from the last version it saw. A 410 Gone (the version was compacted away) relists.
Each run subscribes by its Job's name and gets, in order, a snapshot of its objects after every
(re)list and then every event of them; a thousand waiting runs cost three streams, not two
thousand.

The informer holds one API client for all of it. Streams get a connect and a read timeout and
TCP keepalive, never a total timeout. A 401 (an exec-plugin or projected token that expired, a
rotated kubeconfig) opens a fresh client through `connect`, which reloads the credentials; it
never ends a run. Requests lease the client they use, and a replaced client is closed only when
its last request is done: aiohttp leaves a stream's reader waiting forever, past every timeout,
when its session is closed underneath it.

Any other error the retry policy calls retryable is retried with a backoff that resets as soon
as events flow again; one it does not (a 403: RBAC is missing) fails every subscription with
that error once it has lasted `refusal_grace`.

`shared_informer` hands out one informer per (connection, namespace, event loop), started by its
first user and stopped with its last.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final

from kubernetes_asyncio.client import ApiClient, ApiException

from kubedbt.core.naming import APP_NAME, INSTANCE_LABEL
from kubedbt.core.progress import Kind
from kubedbt.io.api_errors import describe
from kubedbt.io.kube import JSON, RunClient
from kubedbt.io.retry import DEFAULT_POLICY, RetryPolicy, is_retryable

log = logging.getLogger(__name__)

Connect = Callable[[], AbstractAsyncContextManager[ApiClient]]
# What a subscription yields: (kind, "LIST", [the run's objects]) after each (re)list, then
# (kind, ADDED | MODIFIED | DELETED, object) for each event of one of the run's objects.
Observation = tuple[Kind, str, Any]
KINDS: Final[tuple[Kind, ...]] = ("job", "pod", "configmap")
SELECTOR: Final = f"app.kubernetes.io/name={APP_NAME},{INSTANCE_LABEL}"
# What the cache keeps of a ConfigMap: enough to know whose it is and whether it is uploaded. The
# data (up to 1 MiB each) is read once, by the run that needs it.
_SPEC_KEPT: Final[dict[Kind, tuple[str, ...]]] = {
    "job": ("suspend", "activeDeadlineSeconds", "backoffLimit", "completions", "parallelism"),
    "pod": ("nodeName",),
}
_CONFIGMAP_METADATA: Final = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "labels",
    "annotations",
)


@dataclass(frozen=True)
class InformerOptions:
    """Tuning: each watch asks the server to end it after a random time in `watch_seconds`."""

    watch_seconds: tuple[int, int] = (300, 600)
    backoff_max: float = 30.0
    reconnect_attempts: int = 3
    # How long a refusal (403, 404...) is retried before it fails every run of the namespace: an
    # API server that has just restarted refuses requests until its RBAC caches have synced.
    refusal_grace: float = 60.0


@dataclass
class InformerStats:
    """What the informer did, for logs, tests and the benchmark."""

    lists: int = 0
    relists_gone: int = 0
    watch_errors: int = 0
    reconnects: int = 0
    events: int = 0


class _Client:
    """One API client, how many requests use it, and whether a newer one replaced it."""

    def __init__(self, client: RunClient, exit_stack: AsyncExitStack) -> None:
        self.client = client
        self.exit_stack = exit_stack
        self.users = 0
        self.retired = False


class Subscription:
    """The observations of one run, in order.

    Trouble with the shared streams is told to every subscription too, and logged by whoever
    consumes it: a run's log then says when its watch was interrupted, whichever run happened to
    start the informer.
    """

    def __init__(self, informer: NamespaceInformer, name: str) -> None:
        self.informer = informer
        self.name = name
        self.queue: asyncio.Queue[Observation | str] = asyncio.Queue()

    async def next(self, timeout: float | None) -> Observation | None:
        """The next observation, or None when `timeout` seconds pass without one.

        Raises the informer's error if it gave up (a terminal API error).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            item = await self._get(None if deadline is None else deadline - loop.time())
            if not isinstance(item, str):
                return item
            log.warning("%s", item)

    async def _get(self, timeout: float | None) -> Observation | str | None:
        if not self.queue.empty():
            return self.queue.get_nowait()
        self.informer.raise_failure()
        if timeout is not None and timeout <= 0:
            return None
        getter = asyncio.ensure_future(self.queue.get())
        failed = asyncio.ensure_future(self.informer.failed.wait())
        try:
            done, _ = await asyncio.wait(
                {getter, failed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in (getter, failed):
                waiter.cancel()
        if getter in done:
            return getter.result()
        self.informer.raise_failure()
        return None


class NamespaceInformer:
    """Cached, watched kubedbt Jobs, pods and results ConfigMaps of one namespace."""

    def __init__(
        self,
        connect: Connect,
        namespace: str,
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
        options: InformerOptions | None = None,
    ) -> None:
        self.connect = connect
        self.namespace = namespace
        self.policy = policy
        self.options = options or InformerOptions()
        self.stats = InformerStats()
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        # kind -> run (its Job's name) -> object name -> object
        self._cache: dict[Kind, dict[str, dict[str, JSON]]] = {kind: {} for kind in KINDS}
        self._synced: set[Kind] = set()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._client: _Client | None = None  # the current one; requests lease it
        self._clients: set[_Client] = set()  # every one still open, the current and retired
        self._generation = 0
        self._unauthorized = 0  # 401s in a row, reset once a request succeeds
        self._reconnecting = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---

    async def start(self) -> None:
        """Open the API client and start the three list+watch loops."""
        await self._open()
        # In a context of their own: the informer belongs to the process, not to whichever run
        # started it (the triggerer routes a task's logging by context).
        loop = asyncio.get_running_loop()
        self._tasks = [
            contextvars.Context().run(loop.create_task, self._reflect(kind)) for kind in KINDS
        ]

    async def stop(self) -> None:
        """Stop the loops and close the client."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for held in list(self._clients):
            await self._close(held)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[RunClient]:
        """The current client, kept open until the caller is done with it.

        A 401 may replace it meanwhile; it is closed when its last lease ends. For the
        informer's own requests and a run's one-off reads.
        """
        held = self._client
        if held is None:
            raise RuntimeError("the informer is not started")
        held.users += 1
        try:
            yield held.client
        finally:
            held.users -= 1
            if held.retired and not held.users:
                await self._close(held)

    def raise_failure(self) -> None:
        """Raise the error the informer gave up on, if it did."""
        if self.failure is not None:
            raise self.failure

    # --- subscriptions ---

    @contextlib.contextmanager
    def subscribe(self, name: str) -> Iterator[Subscription]:
        """Observe the run whose Job is `name`: a snapshot of each kind listed, then events."""
        subscription = Subscription(self, name)
        for kind in self._synced:
            objects = list(self._cache[kind].get(name, {}).values())
            subscription.queue.put_nowait((kind, "LIST", objects))
        self._subscribers.setdefault(name, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(name, set())
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(name, None)

    # --- the list+watch loop of one kind ---

    async def _reflect(self, kind: Kind) -> None:
        try:
            await self._list_and_watch(kind)
        except Exception as e:  # never die silently: every run of the namespace would wait on
            self._fail(e)

    async def _list_and_watch(self, kind: Kind) -> None:
        version: str | None = None
        failures = 0
        refused_since: float | None = None
        loop = asyncio.get_running_loop()
        # Bounded by stop(): the informer's last user cancels this task.
        while True:
            generation = self._generation
            try:
                async with self.lease() as client:
                    if version is None:
                        version = await self._list(client, kind)
                        failures = self._unauthorized = 0
                        refused_since = None
                    opened = loop.time()
                    log.debug("watching %ss in %s from %s", kind, self.namespace, version)
                    events = self._watch(client, kind, version)
                    async with contextlib.aclosing(events):
                        async for event_type, obj in events:
                            version = obj["metadata"]["resourceVersion"]
                            failures = self._unauthorized = 0  # the stream works: start afresh
                            refused_since = None
                            if event_type != "BOOKMARK":
                                self._apply(kind, event_type, obj)
                log.debug(
                    "%s watch in %s ended after %.1fs", kind, self.namespace, loop.time() - opened
                )
                if loop.time() - opened >= 1.0:
                    continue  # the server ended the watch on time: resume from `version`
                raise ConnectionError("the watch ended as soon as it started")
            except ApiException as e:
                if e.status == 410:  # our version was compacted away: start over from a list
                    self.stats.relists_gone += 1
                    log.info("%ss in %s: resourceVersion too old, relisting", kind, self.namespace)
                    version = None
                    continue
                if e.status == 401 and await self._reconnect(generation):
                    continue
                error: BaseException = e
            except Exception as e:
                error = e
            if generation != self._generation:
                continue  # the client was replaced under this request (after a 401): go again
            if not is_retryable(error):
                refused_since = loop.time() if refused_since is None else refused_since
                if loop.time() - refused_since >= self.options.refusal_grace:
                    self._fail(error)
                    return
            failures += 1
            self.stats.watch_errors += 1
            delay = min(self.options.backoff_max, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
            self._tell_everyone(
                f"watching {kind}s in {self.namespace} failed ({describe(error)}); "
                f"retrying in {delay:.1f}s ({failures} in a row)"
            )
            await asyncio.sleep(delay)

    async def _list(self, client: RunClient, kind: Kind) -> str:
        items, version = await client.list_objects(
            _method(client, kind), self.namespace, label_selector=SELECTOR
        )
        self.stats.lists += 1
        by_run: dict[str, list[JSON]] = {}
        for item in items:
            by_run.setdefault(_run_of(item) or "", []).append(_trimmed(kind, item))
        self._cache[kind] = {
            run: {obj["metadata"]["name"]: obj for obj in objects}
            for run, objects in by_run.items()
        }
        self._synced.add(kind)
        for name, subscriptions in self._subscribers.items():
            for subscription in subscriptions:
                subscription.queue.put_nowait((kind, "LIST", by_run.get(name, [])))
        return version

    def _watch(
        self, client: RunClient, kind: Kind, version: str
    ) -> AsyncGenerator[tuple[str, JSON]]:
        low, high = self.options.watch_seconds
        return client.watch(
            _method(client, kind),
            self.namespace,
            resource_version=version,
            timeout_seconds=random.randint(low, high),
            label_selector=SELECTOR,
        )

    def _apply(self, kind: Kind, event_type: str, obj: JSON) -> None:
        self.stats.events += 1
        obj = _trimmed(kind, obj)  # one copy, shared by the cache and every subscription
        run, name = _run_of(obj) or "", obj["metadata"]["name"]
        objects = self._cache[kind].setdefault(run, {})
        if event_type == "DELETED":
            objects.pop(name, None)
            if not objects:
                del self._cache[kind][run]
        else:
            objects[name] = obj
        for subscription in self._subscribers.get(run, ()):
            subscription.queue.put_nowait((kind, event_type, obj))

    # --- the client and its credentials ---

    async def _open(self) -> None:
        exit_stack = AsyncExitStack()
        api_client = await exit_stack.enter_async_context(self.connect())
        self._client = _Client(RunClient(api_client, self.policy), exit_stack)
        self._clients.add(self._client)

    async def _close(self, held: _Client) -> None:
        await held.exit_stack.aclose()
        self._clients.discard(held)

    async def _reconnect(self, generation: int) -> bool:
        """Reload credentials with a fresh client after a 401; False once that keeps failing."""
        async with self._reconnecting:
            if generation != self._generation:
                return True  # another loop reconnected already
            if self._unauthorized >= self.options.reconnect_attempts:
                return False  # fresh credentials are refused too: give up
            if self._unauthorized:
                await asyncio.sleep(min(10.0, 2.0**self._unauthorized))
            self._unauthorized += 1
            self.stats.reconnects += 1
            log.info("the API server said 401 in %s: reloading credentials", self.namespace)
            old = self._client
            try:
                await self._open()
            except Exception as e:
                log.error(
                    "could not reload the credentials for %s: %s", self.namespace, describe(e)
                )
                return False
            self._generation += 1
            if old is not None:
                # Its streams still work (a stream is authorized when it opens): each moves to
                # the new client when it ends. The last one closes it.
                old.retired = True
                if not old.users:
                    await self._close(old)
            return True

    def _tell_everyone(self, notice: str) -> None:
        log.info("%s", notice)
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.queue.put_nowait(notice)

    def _fail(self, error: BaseException) -> None:
        log.error("watching kubedbt objects in %s failed: %s", self.namespace, describe(error))
        self.failure = error
        self.failed.set()


def _method(client: RunClient, kind: Kind) -> Any:
    return {
        "job": client.batch.list_namespaced_job,
        "pod": client.core.list_namespaced_pod,
        "configmap": client.core.list_namespaced_config_map,
    }[kind]


def _run_of(obj: JSON) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    value = labels.get(INSTANCE_LABEL)
    return str(value) if value is not None else None


def _trimmed(kind: Kind, obj: JSON) -> JSON:
    """What the informer keeps and hands on: what the decision reads, the metadata and status.

    No managedFields, no pod or Job template (the bulk of each object), and only the metadata
    of a ConfigMap: its data is read once, by the run that needs it, when the run has ended.
    """
    metadata = dict(obj.get("metadata") or {})
    metadata.pop("managedFields", None)
    if kind == "configmap":
        return {"metadata": {key: metadata[key] for key in _CONFIGMAP_METADATA if key in metadata}}
    spec = obj.get("spec") or {}
    return {
        "metadata": metadata,
        "spec": {key: spec[key] for key in _SPEC_KEPT[kind] if key in spec},
        "status": obj.get("status") or {},
    }


# --- one informer per connection and namespace, shared ---


@dataclass
class _Shared:
    informer: NamespaceInformer
    started: asyncio.Future[None]
    users: int = 0


_SHARED: dict[tuple[Hashable, str, int], _Shared] = {}


@contextlib.asynccontextmanager
async def shared_informer(
    key: Hashable,
    namespace: str,
    connect: Connect,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    options: InformerOptions | None = None,
) -> AsyncIterator[NamespaceInformer]:
    """The process's informer for (`key`, `namespace`), started by its first user.

    It stops with its last user. `key` names the cluster connection; `connect` opens a client.
    """
    slot = (key, namespace, id(asyncio.get_running_loop()))
    shared = _SHARED.get(slot)
    if shared is None:
        informer = NamespaceInformer(connect, namespace, policy=policy, options=options)
        shared = _SHARED[slot] = _Shared(informer, asyncio.ensure_future(informer.start()))
    shared.users += 1
    try:
        await asyncio.shield(shared.started)
        yield shared.informer
    finally:
        shared.users -= 1
        if shared.users == 0:
            if _SHARED.get(slot) is shared:
                del _SHARED[slot]
            shared.started.cancel()  # the last user may leave while it is still starting
            await shared.informer.stop()
