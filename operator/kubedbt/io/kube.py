"""The Kubernetes calls kubedbt makes, over one async API client, each under the retry policy.

Objects come back as the API's JSON (camelCase dicts), the shape the pure layer reads, so nothing
above this module touches client models.

Every failed request leaves this module as a KubeApiError (kubedbt.io.api_errors): still an
ApiException with its `.status`, but without the response's headers and body, which may echo
what was submitted (env values), and never chained to the raw error.

Creating a run is idempotent: a 409 on the Job means this very try's Job exists already (a worker
restarted) and is adopted; a failure between the Job and its ConfigMap (or its profile Secret)
deletes the Job again, so no half-created run is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import math
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from kubedbt.core import naming
from kubedbt.core.errors import RetryableError, TerminalError
from kubedbt.core.manifests import ConfigMapManifest, JobManifest, SecretManifest
from kubedbt.core.render import owned_by_job
from kubedbt.io.api_errors import (
    KubeApiError,
    describe,
    from_response,
    from_status_event,
    sanitized,
    submitted_secrets,
)
from kubedbt.io.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    async_retrying,
    is_retryable,
    retry_after,
    status_of,
)

log = logging.getLogger(__name__)

JSON = dict[str, Any]
# Streams get a connect timeout and a read timeout, never a total one: the cncf provider's client
# gives every request without `_request_timeout` 60 s in all, which cuts every watch and log
# follow of a longer run. A watch's read timeout outlasts its server-side timeout; a log follow
# may be silent for as long as a model runs, and is cancelled when the run ends.
CONNECT_TIMEOUT = 10.0
WATCH_READ_MARGIN = 30.0
# Probe an idle stream after 30 s, every 10 s, and give up after 3 unanswered probes.
KEEPALIVE_OPTIONS = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
# How much of a stream's error response is read for its Status.
ERROR_BODY_BYTES = 64 * 1024
# A log tail is evidence only, served by the pod's kubelet through the API server: it gets this
# many seconds in all, retries included, and each attempt LOG_TAIL_ATTEMPT, so a kubelet that does
# not answer (its node lost) holds a run's outcome back by seconds, not the policy's two minutes.
LOG_TAIL_BUDGET = 15.0
LOG_TAIL_ATTEMPT = 10.0
# How long a results ConfigMap left by a deleted Job of the same name may take to be collected.
STALE_CONFIGMAP_WAIT = 60.0
# Attempts at creating a profile Secret while a deleted Job's is collected (backoff capped at 5 s:
# more than STALE_CONFIGMAP_WAIT needs; the deadline ends the wait first).
SECRET_STALE_ATTEMPTS = 20


@dataclass(frozen=True)
class CreatedRun:
    """The Job of a run as it exists in the cluster."""

    job_name: str
    namespace: str
    uid: str
    adopted: bool


class RunClient:
    """Kubernetes operations on runs, sharing one ApiClient (one connection pool) per caller."""

    def __init__(self, api_client: client.ApiClient, policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.api_client = api_client
        self.policy = policy
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    async def call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` on the API, under the retry policy.

        A failure is raised as a KubeApiError, with the env values of the submitted object
        redacted from what little of the server's message it keeps.
        """

        # The client's methods are plain functions returning a coroutine; tenacity must await
        # a coroutine function to retry the request itself.
        async def attempt() -> Any:
            return await method(*args, **kwargs)

        try:
            return await async_retrying(self.policy)(attempt)
        except client.ApiException as e:
            error = sanitized(e, submitted_secrets(args, kwargs))
        raise error from None  # outside the handler: the raw error is not even the context

    async def call_json(self, method: Any, *args: Any, **kwargs: Any) -> JSON:
        """`method(*args, **kwargs)` under the retry policy, its body as the API's JSON.

        No client models are built: a list of a thousand pods decoded into models and back
        costs the event loop seconds; as JSON it costs milliseconds.
        """

        async def attempt() -> JSON:
            response = await method(*args, _preload_content=False, **kwargs)
            try:
                body = await response.read()
                if not 200 <= response.status < 300:
                    raise _error_of(response, body, submitted_secrets(args, kwargs))
                result: JSON = json.loads(body)
                return result
            finally:
                response.release()

        return await async_retrying(self.policy)(attempt)

    def to_json(self, model: Any) -> JSON:
        """A client model as the API's JSON."""
        result: JSON = self.api_client.sanitize_for_serialization(model)
        return result

    # --- runs ---

    async def create_run(
        self,
        job: JobManifest,
        configmap: ConfigMapManifest,
        secret: SecretManifest | None = None,
    ) -> CreatedRun:
        """Create the Job, then its profile Secret (if any) and ConfigMap owned by it.

        All are adopted if this try exists already.
        """
        namespace = job["metadata"]["namespace"]
        name = job["metadata"]["name"]
        adopted = False
        try:
            created = await self.call(self.batch.create_namespaced_job, namespace, job)
        except client.ApiException as e:
            if e.status != 409:
                raise _api_error(f"creating Job {namespace}/{name}", e) from None
            created = await self.call(self.batch.read_namespaced_job, name, namespace)
            _check_same_try(self.to_json(created), job)
            adopted = True
            log.info("Job %s/%s exists already: adopting it", namespace, name)
        uid = created.metadata.uid
        try:
            # The Secret first: the pod cannot start without it (FailedMount, with the kubelet's
            # growing backoff), while the ConfigMap may wait out an older Job's for a minute.
            if secret is not None:
                await self.ensure_profile_secret(secret, name, uid, adopted=adopted)
            await self.ensure_results_configmap(configmap, name, uid)
        except Exception:
            if not adopted:
                await self.delete_job(name, namespace)
            raise
        return CreatedRun(job_name=name, namespace=namespace, uid=uid, adopted=adopted)

    async def ensure_results_configmap(
        self, configmap: ConfigMapManifest, job_name: str, job_uid: str
    ) -> None:
        """Create the run's results ConfigMap owned by its Job, unless that exists already.

        One of the same name owned by another Job (a deleted one, whose garbage collection has
        not caught up) is waited out: the sidecar must not upload into something about to vanish.
        The garbage collector removes it once it sees its owner gone, within seconds, so the
        launcher needs no right to delete ConfigMaps.
        """
        namespace = configmap["metadata"]["namespace"]
        name = configmap["metadata"]["name"]
        owned = owned_by_job(configmap, job_name, job_uid)
        for _ in range(2):
            try:
                await self.call(self.core.create_namespaced_config_map, namespace, owned)
                return
            except client.ApiException as e:
                if e.status != 409:
                    raise _api_error(f"creating ConfigMap {namespace}/{name}", e) from None
            existing = await self.read_configmap(name, namespace)
            owners = ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
            if any(owner.get("uid") == job_uid for owner in owners):
                return
            if existing is not None and not owners:
                # Orphaned (its Job deleted with --cascade=orphan, or made by hand): no garbage
                # collection will come, and the launcher may not delete ConfigMaps.
                raise TerminalError(
                    f"ConfigMap {namespace}/{name} exists and belongs to no Job; kubedbt will not "
                    f"upload into it. Remove it: kubectl -n {namespace} delete configmap {name}"
                )
            log.info(
                "ConfigMap %s/%s belongs to an older Job: waiting for its garbage collection",
                namespace,
                name,
            )
            deadline = time.monotonic() + STALE_CONFIGMAP_WAIT
            selectors = {"field_selector": f"metadata.name={name}"}
            method = self.core.list_namespaced_config_map
            if not await self._until_empty(method, namespace, deadline, selectors):
                break
        raise RetryableError(
            f"ConfigMap {namespace}/{name} of an older Job of the same name is still there "
            f"after {STALE_CONFIGMAP_WAIT:.0f}s; is the garbage collector running?"
        )

    async def ensure_profile_secret(
        self, secret: SecretManifest, job_name: str, job_uid: str, *, adopted: bool
    ) -> None:
        """Create the run's profile Secret owned by its Job, unless that exists already.

        The launcher may create Secrets but not read them, so a 409 cannot be checked against
        the owner. For an adopted Job it is this Job's Secret (created before its worker died).
        For a new Job it is the Secret of a deleted Job of the same name that the garbage
        collector has not reached yet: creating is tried again until that is gone.

        Each attempt is a single request, retried here rather than by the retry policy: a create
        that failed ambiguously (connection lost, timeout, 5xx) may have landed, and a 409 after
        one of those is this Job's own Secret, not a stale one to wait out.
        """
        namespace = secret["metadata"]["namespace"]
        name = secret["metadata"]["name"]
        owned = owned_by_job(secret, job_name, job_uid)
        once = RunClient(self.api_client, RetryPolicy(attempts=1, deadline=self.policy.deadline))
        started = time.monotonic()
        stale_deadline = started + STALE_CONFIGMAP_WAIT
        error_deadline = started + self.policy.deadline
        failures = 0
        maybe_landed = False
        delay = self.policy.backoff_min
        # Bounded twice: by the attempts and by the deadlines checked before every sleep.
        for _ in range(self.policy.attempts + SECRET_STALE_ATTEMPTS):
            try:
                await once.call(self.core.create_namespaced_secret, namespace, owned)
                return
            except Exception as e:
                status = status_of(e)
                if status == 409 and (adopted or maybe_landed):
                    if maybe_landed:
                        log.info("Secret %s/%s: an earlier attempt created it", namespace, name)
                    return
                if status != 409:
                    failures += 1
                    wait = max(delay, retry_after(e) or 0.0)
                    if (
                        not is_retryable(e)
                        or failures >= self.policy.attempts
                        or time.monotonic() + wait > error_deadline
                    ):
                        if isinstance(e, client.ApiException):
                            raise _api_error(f"creating Secret {namespace}/{name}", e) from None
                        raise  # a connection error, as the retry policy would have let it out
                    # Lost on the way back, or failed after storing: it may have landed.
                    maybe_landed = maybe_landed or status is None or status >= 500
                    log.info(
                        "creating Secret %s/%s failed (%s): trying again",
                        namespace,
                        name,
                        status or type(e).__name__,
                    )
                else:
                    wait = delay
                    if time.monotonic() + wait > stale_deadline:
                        break
                    log.info(
                        "Secret %s/%s belongs to an older Job: waiting for its removal",
                        namespace,
                        name,
                    )
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)
        raise RetryableError(
            f"Secret {namespace}/{name} of an older Job of the same name is still there "
            f"after {STALE_CONFIGMAP_WAIT:.0f}s; is the garbage collector running?"
        )

    async def delete_job(self, name: str, namespace: str) -> bool:
        """Delete a Job and, in the foreground, its pods; False when it was gone already."""
        try:
            await self.call(
                self.batch.delete_namespaced_job,
                name,
                namespace,
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
            )
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise _api_error(f"deleting Job {namespace}/{name}", e) from None
        return True

    async def stop_run(
        self, name: str, namespace: str, reason: str, at: float | None = None
    ) -> bool:
        """Stop a run the way dbt wants to be stopped, keeping its Job and results; False if gone.

        One patch: the reason and time as annotations, and an activeDeadlineSeconds the Job has
        already passed. The Job controller then deletes the pod with its grace period (the
        launcher passes SIGTERM on to dbt as SIGINT, dbt cancels its queries and writes
        run_results, the sidecar uploads them) and marks the Job failed, so no new pod starts
        and the Job's TTL applies. The next try finds the results and resumes from them. `at`:
        when the stop was decided (epoch seconds; now by default).
        """
        when = datetime.datetime.fromtimestamp(
            time.time() if at is None else at, datetime.timezone.utc
        )
        body = {
            "metadata": {
                "annotations": {
                    naming.STOP_REASON_ANNOTATION: reason,
                    naming.STOP_REQUESTED_ANNOTATION: when.isoformat(timespec="seconds"),
                }
            },
            "spec": {"activeDeadlineSeconds": 1},
        }
        try:
            await self.call(
                self.batch.patch_namespaced_job,
                name,
                namespace,
                body,
                _content_type="application/merge-patch+json",
            )
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise _api_error(f"stopping Job {namespace}/{name}", e) from None
        return True

    async def wait_gone(self, job_name: str, namespace: str, timeout: float) -> bool:
        """Wait until a Job and every pod of it are gone; False when `timeout` passes first.

        A Job deleted in the background disappears before its pods do, and those pods may still
        be running dbt, so both are waited for.
        """
        deadline = time.monotonic() + timeout
        pods = {"label_selector": f"{naming.INSTANCE_LABEL}={job_name}"}
        job = {"field_selector": f"metadata.name={job_name}"}
        for method, selectors in (
            (self.batch.list_namespaced_job, job),
            (self.core.list_namespaced_pod, pods),
        ):
            if not await self._until_empty(method, namespace, deadline, selectors):
                return False
        return True

    async def _until_empty(
        self, method: Any, namespace: str, deadline: float, selectors: dict[str, str]
    ) -> bool:
        items, version = await self.list_objects(method, namespace, **selectors)
        remaining = {item["metadata"]["name"] for item in items}
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                events = self.watch(
                    method,
                    namespace,
                    resource_version=version,
                    timeout_seconds=max(1, math.ceil(left)),
                    **selectors,
                )
                async with contextlib.aclosing(events):  # the break must release the stream
                    async for event_type, obj in events:
                        version = obj["metadata"]["resourceVersion"]
                        if event_type == "DELETED":
                            remaining.discard(obj["metadata"]["name"])
                        elif event_type == "ADDED":
                            remaining.add(obj["metadata"]["name"])
                        if not remaining:
                            break
            except client.ApiException as e:
                if e.status != 410:
                    raise _api_error(f"watching {namespace}", e) from None
                items, version = await self.list_objects(method, namespace, **selectors)
                remaining = {item["metadata"]["name"] for item in items}
        return True

    async def read_job(self, name: str, namespace: str) -> JSON | None:
        """The Job, or None when it does not exist."""
        return await self._read(self.batch.read_namespaced_job, name, namespace)

    async def read_configmap(self, name: str, namespace: str) -> JSON | None:
        """A ConfigMap, or None when it does not exist."""
        return await self._read(self.core.read_namespaced_config_map, name, namespace)

    async def _read(self, method: Any, name: str, namespace: str) -> JSON | None:
        try:
            return await self.call_json(method, name, namespace)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise _api_error(f"reading {namespace}/{name}", e) from None

    async def patch_configmap(
        self, name: str, namespace: str, body: JSON, timeout: tuple[float, float]
    ) -> None:
        """Merge `body` into a ConfigMap (a JSON merge patch: null removes a key)."""
        await self.call(
            self.core.patch_namespaced_config_map,
            name,
            namespace,
            body,
            _content_type="application/merge-patch+json",
            _request_timeout=timeout,
        )

    async def list_objects(
        self, method: Any, namespace: str, **selectors: str
    ) -> tuple[list[JSON], str]:
        """The objects a list call returns, and the list's resourceVersion to watch from."""
        listing = await self.call_json(method, namespace, **selectors)
        return list(listing.get("items") or []), str(listing["metadata"]["resourceVersion"])

    async def list_pods(
        self, namespace: str, selector: Mapping[str, str]
    ) -> tuple[list[JSON], str]:
        """The pods matching `selector`, and the list's resourceVersion to watch from."""
        return await self.list_objects(
            self.core.list_namespaced_pod, namespace, label_selector=label_selector(selector)
        )

    async def list_run_events(self, namespace: str, job_name: str, pods: list[str]) -> list[JSON]:
        """The Events about a run's Job and its pods (one list per object, all at once)."""
        objects = [("Job", job_name), *(("Pod", name) for name in pods)]
        found = await asyncio.gather(
            *(
                self.list_objects(
                    self.core.list_namespaced_event,
                    namespace,
                    field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
                )
                for kind, name in objects
            )
        )
        return [event for events, _ in found for event in events]

    async def log_tail(self, pod: str, namespace: str, container: str, lines: int) -> str | None:
        """The last `lines` lines of a container's log, or None when it cannot be read in time."""
        bounded = RunClient(self.api_client, self.policy.within(LOG_TAIL_BUDGET))
        try:
            text = await bounded.call(
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                container=container,
                tail_lines=lines,
                _request_timeout=LOG_TAIL_ATTEMPT,
            )
        except client.ApiException as e:
            log.warning("cannot read the log of %s/%s: %s", namespace, pod, sanitized(e))
            return None
        except Exception as e:  # a timeout, a lost connection: evidence only, the run goes on
            log.warning("cannot read the log of %s/%s: %s", namespace, pod, describe(e))
            return None
        return str(text)

    async def follow_log(self, pod: str, namespace: str, container: str) -> AsyncIterator[str]:
        """The container's log, line by line, until the container ends."""
        response = await self.core.read_namespaced_pod_log(
            pod,
            namespace,
            container=container,
            follow=True,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, None),
        )
        await raise_for_status(response)
        _keep_alive(response)
        try:
            async for raw in response.content:
                yield raw.decode("utf-8", errors="replace").rstrip("\n")
        finally:
            release_stream(response)

    async def watch(
        self,
        method: Any,
        namespace: str,
        *,
        resource_version: str,
        timeout_seconds: int,
        **selectors: str,
    ) -> AsyncGenerator[tuple[str, JSON]]:
        """Events of one watch request: (type, object as JSON), ending at the server timeout.

        The stream is read as JSON lines, without building client models: a watch of every
        kubedbt object in a namespace must stay cheap. An ERROR event (410 Gone, mostly) is
        raised as the KubeApiError a failed request would have been.
        """
        response = await method(
            namespace,
            watch=True,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, timeout_seconds + WATCH_READ_MARGIN),
            **selectors,
        )
        await raise_for_status(response)
        _keep_alive(response)
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") in ("ERROR", None):  # a Status: 410 Gone, mostly
                    raise from_status_event(event.get("object") or event)
                yield event["type"], event["object"]
        finally:
            release_stream(response)


async def raise_for_status(response: Any) -> None:
    """A streamed response that is not a 2xx, raised as the KubeApiError it would have been."""
    if 200 <= response.status < 300:
        return
    try:
        body = await asyncio.wait_for(_read_at_most(response, ERROR_BODY_BYTES), CONNECT_TIMEOUT)
    except Exception:  # a broken or slow error body: the status alone, then
        body = b""
    finally:
        release_stream(response)
    raise _error_of(response, body)


async def _read_at_most(response: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _error_of(response: Any, body: bytes, secrets: Sequence[str] = ()) -> KubeApiError:
    """The KubeApiError of a response that is not a 2xx, from its status line and body."""
    retry_after = response.headers.get("Retry-After") if response.headers else None
    return from_response(response.status, response.reason, body, secrets, retry_after=retry_after)


def release_stream(response: Any) -> None:
    """Release a streamed response; one left before its end has its connection aborted.

    Released unread, aiohttp closes the connection politely: TLS then waits for the server's
    close_notify, which an API server still serving the stream is slow to send, and an event
    loop that ends meanwhile leaves the socket open (Python 3.11). A stream read to its end
    goes back to the pool as usual.
    """
    content = getattr(response, "content", None)
    if content is not None and not content.at_eof():
        transport = getattr(response.connection, "transport", None)
        if transport is not None:
            transport.abort()
    response.release()


def _keep_alive(response: Any) -> None:
    """TCP keepalive on a stream's socket, so a dead peer is noticed between events."""
    connection = getattr(response, "connection", None)
    transport = getattr(connection, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE_OPTIONS:
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def label_selector(labels: Mapping[str, str]) -> str:
    """A label selector string matching all of `labels`."""
    return ",".join(f"{key}={value}" for key, value in labels.items())


def _check_same_try(existing: JSON, wanted: JobManifest) -> None:
    """A 409 is only adoptable when the existing Job is the same try of the same task."""
    have = (existing.get("metadata") or {}).get("annotations") or {}
    want = wanted["metadata"]["annotations"]
    keys = [
        naming.LABEL_PREFIX + k for k in ("dag-id", "task-id", "run-id", "map-index", "try-number")
    ]
    if naming.DAG_RUN_KEY_ANNOTATION in have:  # Jobs from before kubedbt recorded it have none
        keys.append(naming.DAG_RUN_KEY_ANNOTATION)
    if any(have.get(k) != want.get(k) for k in keys):
        where = f"{wanted['metadata']['namespace']}/{wanted['metadata']['name']}"
        raise TerminalError(
            f"Job {where} exists but belongs to another task instance; refusing to adopt it"
        )


def _api_error(action: str, error: client.ApiException) -> Exception:
    """A kubedbt error saying what failed, in the sanitized words of a KubeApiError.

    Raise it `from None`: the chain is printed with the traceback.
    """
    status = status_of(error)
    text = f"{action} failed: {sanitized(error)}"
    return (
        RetryableError(text)
        if status is None or status >= 500 or status == 429
        else TerminalError(text)
    )
