"""Stopping a run the way dbt wants to be stopped, on the real cluster with a real warehouse.

dbt runs the example project against a real PostgreSQL (tests/warehouse.py); `customers` holds
the warehouse with `pg_sleep(600)` in a pre-hook, as a long model would. Each test stops the run
one way (what on_kill does, the execution timeout, the Job's activeDeadlineSeconds, an eviction)
while that statement runs, and checks from outside: the statement is gone from pg_stat_activity
within the grace period, the results ConfigMap holds run_results that dbt's own loader reads (the
nodes that finished as they ended, `customers` as cancelled, the nodes never reached as skipped),
and the run is judged as a person would be told. After the eviction, the next try's `dbt retry`
resumes from those results and reruns exactly the unfinished nodes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.airflow.trigger import ConnectionArgs
from kubedbt.core import naming, results
from kubedbt.core.classify import Evidence, Outcome, classify
from kubedbt.core.progress import RunProgress, judge
from kubedbt.io.kube import RunClient
from kubedbt.io.launch import launch_run
from kubedbt.io.retry import RetryPolicy
from kubedbt.io.watch import RunRef, WatchLimits, watch_run
from tests.conftest import namespace_with_chart
from tests.warehouse import Warehouse, wait_until

pytestmark = pytest.mark.cluster

REPO = Path(__file__).parents[2]
DBT_PYTHON = REPO / ".venv-dbt" / "bin" / "python"
GRACE = 30
SLEEP = "pg_sleep(600)"
# The example project's nodes (28), and those downstream of `customers` in `dbt build`.
NODES = 28
AFTER_CUSTOMERS = {
    "test.jaffle_shop.not_null_customers_customer_id.5c9bf9911d",
    "test.jaffle_shop.unique_customers_customer_id.c5af1ff4b1",
}


@pytest.fixture(scope="module")
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    with namespace_with_chart(api_client, "kubedbt-cancel") as name:
        yield name


@pytest.fixture(scope="module")
def pods_seen(api_client: client.ApiClient, namespace: str) -> Iterator[dict[str, Any]]:
    """Each pod's last state in the namespace, from a watch, as the run's informer keeps it: a pod
    the Job controller deletes (activeDeadlineSeconds) leaves its final state, dbt's exit code,
    in its DELETED event, which a list polled afterwards misses once the pod is gone (on kind
    within a second)."""
    seen: dict[str, Any] = {}
    stopped = threading.Event()
    serialize = api_client.sanitize_for_serialization

    def follow() -> None:
        core, version = client.CoreV1Api(api_client), None
        while not stopped.is_set():
            try:
                for event in watch.Watch().stream(
                    core.list_namespaced_pod,
                    namespace,
                    resource_version=version,
                    timeout_seconds=10,
                ):
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    seen[pod.metadata.name] = serialize(pod)
            except client.ApiException as e:
                if e.status != 410:
                    raise
                version = None  # compacted: start again from a fresh list

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    yield seen
    stopped.set()
    thread.join(timeout=20)


def _spec(namespace: str, warehouse: Warehouse, **overrides: Any) -> DbtRunSpec:
    schema = f"s_{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "command": "build",
        "target": "postgres",
        "vars": {"warehouse_sleep_seconds": 600},
        "image": "kubedbt/dbt:dev",
        "sidecar_image": "kubedbt/sidecar:dev",
        "image_pull_policy": "IfNotPresent",
        "namespace": namespace,
        "service_account_name": "dbt",
        "env_vars": warehouse.env(schema),
        "termination_grace_period": GRACE,
        **overrides,
    }
    return DbtRunSpec(**values)


def _identity(test: str, try_number: int = 1, run_id: str | None = None) -> RunIdentity:
    return RunIdentity(
        "cancel", test, run_id or f"manual__{uuid.uuid4().hex[:8]}", try_number=try_number
    )


def _client_of(kubeconfig: Path) -> Any:
    return ConnectionArgs(kubernetes_conn_id=None, config_file=str(kubeconfig)).async_hook()


async def _create(kubeconfig: Path, spec: DbtRunSpec, identity: RunIdentity) -> str:
    async with _client_of(kubeconfig).get_conn() as api_client:
        created = await RunClient(api_client).create_run(
            render_job(spec, identity), render_results_configmap(spec, identity)
        )
    return created.job_name


def _wait_sleeping(warehouse: Warehouse, job_name: str) -> None:
    """Until dbt holds the warehouse with the long statement (so it is mid-run)."""
    if wait_until(lambda: warehouse.running(SLEEP), 240) is None:
        pytest.fail(f"{job_name}: dbt never reached the pg_sleep statement")


def _seconds_until_query_gone(warehouse: Warehouse, since: float, within: float = GRACE) -> float:
    took = wait_until(lambda: not warehouse.running(SLEEP), within + 10, interval=0.1)
    assert took is not None, "the statement outlived the grace period: dbt was not interrupted"
    return time.monotonic() - since


def _finished(
    api_client: client.ApiClient, namespace: str, job_name: str, pods_seen: dict[str, Any]
) -> dict[str, Any]:
    """The Job once it failed and its upload is marked, with its pods and ConfigMap."""
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    name = job_name + naming.RESULTS_SUFFIX

    def done() -> bool:
        job = batch.read_namespaced_job(job_name, namespace)
        failed = any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or [])
        annotations = core.read_namespaced_config_map(name, namespace).metadata.annotations
        return failed and annotations.get(results.UPLOAD_STATUS) != "pending"

    assert wait_until(done, GRACE + 60, interval=0.5) is not None, f"{job_name} did not end"
    time.sleep(2)  # the watch's last events of the pods
    serialize = api_client.sanitize_for_serialization
    instance = "app.kubernetes.io/instance"
    return {
        "job": serialize(batch.read_namespaced_job(job_name, namespace)),
        "pods": [
            p for p in list(pods_seen.values()) if p["metadata"]["labels"].get(instance) == job_name
        ],
        "configmap": serialize(core.read_namespaced_config_map(name, namespace)),
    }


def _judged(ended: dict[str, Any]) -> tuple[Outcome, results.RunResults]:
    """The outcome `kubectl dbt describe` shows, and the results the ConfigMap holds."""
    decoded = results.decode(ended["configmap"])
    progress = RunProgress.for_job(ended["job"])
    progress.listed("job", [ended["job"]])
    progress.listed("pod", ended["pods"])
    progress.listed("configmap", [ended["configmap"]])
    outcome = judge(progress, time.time(), results=decoded)
    assert outcome is not None, "a failed Job with its upload marked is over"
    return outcome, decoded


def _statuses(decoded: results.RunResults) -> dict[str, str]:
    assert decoded.run_results is not None, decoded.upload_error
    return {r["unique_id"]: r["status"] for r in decoded.run_results["results"]}


def _loads_in_dbt(run_results: dict[str, Any], tmp_path: Path) -> None:
    """dbt's own artifact loader (the one `dbt retry --state` uses) reads the completed file."""
    path = tmp_path / "run_results.json"
    path.write_text(json.dumps(run_results))
    subprocess.run(
        [str(DBT_PYTHON), "-c",
         "import sys, pathlib; from dbt.contracts.state import load_result_state; "
         "assert load_result_state(pathlib.Path(sys.argv[1])) is not None", str(path)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _check_partial_results(decoded: results.RunResults, tmp_path: Path) -> dict[str, str]:
    statuses = _statuses(decoded)
    assert len(statuses) == NODES, "every selected node is accounted for"
    assert statuses["model.jaffle_shop.customers"] == "error"
    assert statuses["seed.jaffle_shop.raw_customers"] == "success"
    for unique_id in AFTER_CUSTOMERS:
        assert statuses[unique_id] == "skipped"
    assert set(statuses.values()) <= {"success", "pass", "error", "skipped"}
    assert decoded.summary is not None
    interruption = decoded.summary["interruption"]
    assert interruption is not None
    # Whatever ran beside customers on dbt's other threads was cut short with it.
    assert "model.jaffle_shop.customers" in interruption["cancelled"]
    assert interruption["cancelled_count"] == list(statuses.values()).count("error")
    assert interruption["not_started"] == list(statuses.values()).count("skipped")
    assert interruption["selection_known"] is True
    assert decoded.run_results is not None
    _loads_in_dbt(decoded.run_results, tmp_path)
    return statuses


def test_a_stopped_run_cancels_its_query_and_keeps_what_finished(
    api_client: client.ApiClient,
    namespace: str,
    pods_seen: dict[str, Any],
    kubeconfig: Path,
    warehouse: Warehouse,
    tmp_path: Path,
    measured: Callable[[str], None],
) -> None:
    """What on_kill does (sync and deferred): RunClient.stop_run, then nothing more."""
    spec = _spec(namespace, warehouse)
    job_name = asyncio.run(_create(kubeconfig, spec, _identity("killed")))
    _wait_sleeping(warehouse, job_name)

    async def stop() -> bool:
        async with _client_of(kubeconfig).get_conn() as api_client:
            return await RunClient(api_client).stop_run(job_name, namespace, "task-killed")

    asked = time.monotonic()
    assert asyncio.run(stop())
    gone = _seconds_until_query_gone(warehouse, asked)
    ended = _finished(api_client, namespace, job_name, pods_seen)
    outcome, decoded = _judged(ended)
    assert outcome.kind == "cancelled", outcome
    assert outcome.retryable
    assert "the Airflow task was stopped" in outcome.reason
    assert "model.jaffle_shop.customers" in outcome.reason
    statuses = _check_partial_results(decoded, tmp_path)
    assert len(ended["pods"]) == 1, "a stopped run starts no new pod"
    measured(
        f"statement gone from pg_stat_activity {gone:.1f} s after the stop "
        f"(grace period {GRACE} s); {sum(s == 'success' for s in statuses.values())} nodes "
        f"success, {sum(s == 'pass' for s in statuses.values())} pass, "
        f"{sum(s == 'error' for s in statuses.values())} cancelled, "
        f"{sum(s == 'skipped' for s in statuses.values())} skipped; {outcome.reason}"
    )


def test_active_deadline_seconds_interrupts_dbt(
    api_client: client.ApiClient,
    namespace: str,
    pods_seen: dict[str, Any],
    kubeconfig: Path,
    warehouse: Warehouse,
    tmp_path: Path,
    measured: Callable[[str], None],
) -> None:
    spec = _spec(namespace, warehouse, active_deadline_seconds=45)
    job_name = asyncio.run(_create(kubeconfig, spec, _identity("deadline")))
    _wait_sleeping(warehouse, job_name)
    waiting = time.monotonic()
    # The deadline counts from the Job's start; dbt holds the statement until then.
    gone = _seconds_until_query_gone(warehouse, waiting, within=45 + GRACE)
    outcome, decoded = _judged(_finished(api_client, namespace, job_name, pods_seen))
    assert outcome.kind == "cancelled", outcome
    assert "activeDeadlineSeconds" in outcome.reason
    _check_partial_results(decoded, tmp_path)
    measured(f"the deadline stopped dbt; statement gone {gone:.1f} s into the wait")


def test_the_execution_timeout_stops_dbt_and_reports_what_finished(
    api_client: client.ApiClient,
    namespace: str,
    pods_seen: dict[str, Any],
    kubeconfig: Path,
    warehouse: Warehouse,
    tmp_path: Path,
    measured: Callable[[str], None],
) -> None:
    """The watch (the trigger's and the sync operator's) stops the run at the execution timeout
    and waits for its end, so the task reports `cancelled` with the partial results."""
    spec = _spec(namespace, warehouse)
    identity = _identity("timeout")
    job_name = asyncio.run(_create(kubeconfig, spec, identity))
    run = RunRef(
        job_name=job_name,
        namespace=namespace,
        configmap_name=naming.results_configmap_name(identity),
        selector=naming.selector_labels(identity),
    )
    connection = ConnectionArgs(kubernetes_conn_id=None, config_file=str(kubeconfig))

    async def watch() -> Evidence:
        async with connection.informer(namespace, RetryPolicy()) as informer:
            result = await watch_run(
                informer, run, WatchLimits(startup_timeout=120, execution_timeout=75)
            )
        return result.evidence

    started = time.monotonic()
    evidence = asyncio.run(watch())
    took = time.monotonic() - started
    outcome = classify(evidence)
    assert outcome.kind == "cancelled", outcome
    assert "execution_timeout" in outcome.reason
    assert not warehouse.running(SLEEP)
    ended = _finished(api_client, namespace, job_name, pods_seen)
    _check_partial_results(results.decode(ended["configmap"]), tmp_path)
    measured(f"execution timeout 75 s: the watch reported cancelled after {took:.0f} s")


def test_an_evicted_run_is_resumed_by_dbt_retry(
    api_client: client.ApiClient,
    namespace: str,
    pods_seen: dict[str, Any],
    kubeconfig: Path,
    warehouse: Warehouse,
    tmp_path: Path,
    measured: Callable[[str], None],
) -> None:
    spec = _spec(namespace, warehouse)
    first = _identity("evicted")
    job_name = asyncio.run(_create(kubeconfig, spec, first))
    _wait_sleeping(warehouse, job_name)
    core = client.CoreV1Api(api_client)
    (pod,) = core.list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/instance={job_name}"
    ).items
    evicted = time.monotonic()
    core.create_namespaced_pod_eviction(
        pod.metadata.name,
        namespace,
        {"metadata": {"name": pod.metadata.name, "namespace": namespace}},
    )
    gone = _seconds_until_query_gone(warehouse, evicted)
    ended = _finished(api_client, namespace, job_name, pods_seen)
    outcome, decoded = _judged(ended)
    assert outcome.kind == "disrupted", outcome
    assert outcome.retryable
    assert len(ended["pods"]) == 1, "the Job must not start the command over in a new pod"
    unfinished = {u for u, s in _check_partial_results(decoded, tmp_path).items() if s in
                  ("error", "skipped")}  # fmt: skip

    # The next try, as the operator launches it: it resumes from the evicted try's results.
    second = RunIdentity("cancel", first.task_id, first.run_id, try_number=2)
    # Same schema; the sleep off (dbt retry takes --vars from the try that runs it).
    quick = _spec(namespace, warehouse, vars={"warehouse_sleep_seconds": 0}, env_vars=spec.env_vars)

    async def resume() -> str:
        async with _client_of(kubeconfig).get_conn() as api_client:
            launched = await launch_run(
                RunClient(api_client), quick, second, resume=True, log=_Log()
            )
        assert launched.state_from == naming.results_configmap_name(first)
        return launched.run.job_name

    second_job = asyncio.run(resume())
    batch = client.BatchV1Api(api_client)

    def complete() -> bool:
        conditions = batch.read_namespaced_job(second_job, namespace).status.conditions or []
        return any(c.type == "Complete" and c.status == "True" for c in conditions)

    assert wait_until(complete, 240, interval=1) is not None, "the dbt retry try did not succeed"
    configmap = core.read_namespaced_config_map(second_job + naming.RESULTS_SUFFIX, namespace)
    retried = _statuses(results.decode(api_client.sanitize_for_serialization(configmap)))
    assert set(retried) == unfinished, "dbt retry reruns exactly what the evicted try left"
    assert set(retried.values()) <= {"success", "pass"}
    measured(
        f"eviction: statement gone {gone:.1f} s after it; the next try's dbt retry reran the "
        f"{len(unfinished)} unfinished nodes of {NODES} and succeeded"
    )


class _Log:
    """The task log launch_run writes to, as the test output."""

    def info(self, message: str, *args: Any) -> None:
        print(message % args)

    def warning(self, message: str, *args: Any) -> None:
        print(message % args)
