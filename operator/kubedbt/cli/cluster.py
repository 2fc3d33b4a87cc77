"""The cluster as the plugin sees it: one async API client per invocation, over kubedbt's RunClient.

Reads go through RunClient and its retry policy, with a policy short enough for a terminal (a few
attempts within seconds, not the operator's two minutes). The listing and log calls RunClient has no
method for use its API objects under the same policy. Every API failure leaves this module as a
CliError that says what was being done, the HTTP status and what RunClient keeps of the API
server's answer (kubedbt.io.api_errors: never a message that may repeat submitted values).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Final

import aiohttp
from kubernetes_asyncio import config
from kubernetes_asyncio.client import ApiException

from kubedbt.cli.context import KubeTarget
from kubedbt.cli.errors import CliError
from kubedbt.cli.run_info import INSTANCE_LABEL, KUBEDBT_SELECTOR, pick_run
from kubedbt.core.errors import KubedbtError
from kubedbt.core.naming import DBT_CONTAINER
from kubedbt.io.api_errors import sanitized
from kubedbt.io.kube import JSON, RunClient, raise_for_status, release_stream
from kubedbt.io.retry import RetryPolicy

CLI_POLICY: Final = RetryPolicy(attempts=3, backoff_min=0.5, backoff_max=2.0, deadline=15.0)
# (connect, read) seconds for one request; a followed log only bounds the connect.
REQUEST_TIMEOUT: Final = (10.0, 60.0)
FOLLOW_TIMEOUT: Final = aiohttp.ClientTimeout(connect=10.0, sock_connect=10.0)


class Cluster:
    """The calls the plugin makes, in one namespace (or all of them, for listing)."""

    def __init__(self, client: RunClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    async def list_runs(self, *, all_namespaces: bool, selector: str | None = None) -> list[JSON]:
        """The Jobs of kubedbt runs, in the namespace or in all, narrowed by a label selector."""
        labels = ",".join(filter(None, [KUBEDBT_SELECTOR, selector]))
        batch = self.client.batch
        where = "all namespaces" if all_namespaces else f'namespace "{self.namespace}"'
        with api_errors(f"listing Jobs in {where}"):
            if all_namespaces:
                listing = await self.client.call(
                    batch.list_job_for_all_namespaces,
                    label_selector=labels,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            else:
                listing = await self.client.call(
                    batch.list_namespaced_job,
                    self.namespace,
                    label_selector=labels,
                    _request_timeout=REQUEST_TIMEOUT,
                )
        return [self.client.to_json(job) for job in listing.items]

    async def find_run(self, wanted: str) -> JSON:
        """The run's Job, by name or by a prefix only one run's name starts with."""
        jobs = await self.list_runs(all_namespaces=False)
        return dict(pick_run(jobs, wanted, self.namespace))

    async def pods(self, job_name: str) -> list[JSON]:
        """The run's pods, as the operator selects them."""
        with api_errors(f"listing the pods of {job_name}"):
            pods, _ = await self.client.list_pods(self.namespace, {INSTANCE_LABEL: job_name})
        return pods

    async def events(self, job_name: str, pods: list[str]) -> list[JSON]:
        """The Events of the run's Job and pods."""
        with api_errors(f"listing the Events of {job_name} and its pods"):
            return await self.client.list_run_events(self.namespace, job_name, pods)

    async def configmap(self, name: str) -> JSON | None:
        """A ConfigMap in the namespace, or None when it does not exist."""
        with api_errors(f"reading ConfigMap {name}"):
            return await self.client.read_configmap(name, self.namespace)

    async def log(self, pod: str, *, tail: int | None) -> str:
        """The dbt container's log, or its last `tail` lines."""
        with api_errors(f"reading the log of pod {pod}"):
            text = await self.client.call(
                self.client.core.read_namespaced_pod_log,
                pod,
                self.namespace,
                container=DBT_CONTAINER,
                tail_lines=tail,
                _request_timeout=REQUEST_TIMEOUT,
            )
        return str(text)

    async def follow_log(self, pod: str, *, tail: int | None) -> AsyncIterator[str]:
        """The dbt container's log line by line (from the last `tail` lines) until it ends."""
        with api_errors(f"following the log of pod {pod}"):
            response = await self.client.call(
                self.client.core.read_namespaced_pod_log,
                pod,
                self.namespace,
                container=DBT_CONTAINER,
                follow=True,
                tail_lines=tail,
                _preload_content=False,
                _request_timeout=FOLLOW_TIMEOUT,
            )
            await raise_for_status(response)  # unread, a refusal's Status would print as the log
        try:
            async for raw in response.content:
                yield raw.decode("utf-8", errors="replace").rstrip("\n")
        finally:
            release_stream(response)


@asynccontextmanager
async def connect(target: KubeTarget) -> AsyncIterator[Cluster]:
    """One API client for the whole command, closed when it ends."""
    try:
        api_client = await config.new_client_from_config(
            config_file=str(target.kubeconfig), context=target.context, persist_config=False
        )
    except (config.ConfigException, KeyError, ValueError, OSError) as e:
        raise CliError(
            f"cannot use context {target.context!r} of kubeconfig {target.kubeconfig}: {e}"
        ) from e
    async with api_client:
        try:
            yield Cluster(RunClient(api_client, CLI_POLICY), target.namespace)
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            where = target.server or f"context {target.context}"
            detail = " ".join(str(e).split()) or type(e).__name__
            raise CliError(f"cannot reach the cluster at {where}: {detail}") from e


@contextmanager
def api_errors(action: str) -> Iterator[None]:
    """Turn an API error raised inside into a CliError naming `action` and the sanitized error."""
    try:
        yield
    except ApiException as e:
        error = CliError(describe_api_error(action, e))
    except KubedbtError as e:
        # RunClient's own errors raise `from None` over the (sanitized) API error they wrap.
        wrapped = e.__cause__ or e.__context__
        if isinstance(wrapped, ApiException):
            error = CliError(describe_api_error(action, wrapped))
        else:
            error = CliError(f"{action} failed: {e}")
    else:
        return
    raise error from None


def describe_api_error(action: str, error: ApiException) -> str:
    """`<action> failed: <status> <reason>: [<Status reason, object>] <message>`, on one line.

    The message only where it cannot repeat what was submitted (kubedbt.io.api_errors).
    """
    return f"{action} failed: {sanitized(error)}"
