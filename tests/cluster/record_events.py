"""Record what a run's subscription observes on the real cluster, for the state machine's tests.

    KUBEDBT_REQUIRE_CLUSTER=1 .venv/bin/python -m tests.cluster.record_events [NAME...]

Each scenario starts a real run (the dbt and sidecar images, jaffle_shop), subscribes to it through
kubedbt's own NamespaceInformer, does to it what the scenario says (nothing, delete its Job,
suspend it, evict its pod) and writes every observation, with the second it arrived at, to
tests/unit/fixtures/events/NAME.json. tests/unit/test_progress_replay.py replays them through
RunProgress with a fake clock. Objects lose managedFields and most of their spec, which nothing
in the decision reads, to keep the files small.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.config import new_client_from_config

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.airflow.trigger import ConnectionArgs
from kubedbt.core import naming
from kubedbt.core.progress import RunProgress
from kubedbt.io.informer import NamespaceInformer
from kubedbt.io.kube import RunClient
from tests.conftest import admin_kubeconfig, namespace_with_chart

OUT = Path(__file__).parents[1] / "unit" / "fixtures" / "events"
Action = Callable[[client.ApiClient, str, str], Awaitable[None]]


async def _nothing(api: client.ApiClient, namespace: str, job: str) -> None:
    return None


async def _delete_job(api: client.ApiClient, namespace: str, job: str) -> None:
    client.BatchV1Api(api).delete_namespaced_job(job, namespace, propagation_policy="Background")


async def _suspend(api: client.ApiClient, namespace: str, job: str) -> None:
    client.BatchV1Api(api).patch_namespaced_job(job, namespace, {"spec": {"suspend": True}})


async def _evict(api: client.ApiClient, namespace: str, job: str) -> None:
    core = client.CoreV1Api(api)
    (pod,) = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    eviction = {"metadata": {"name": pod.metadata.name, "namespace": namespace}}
    core.create_namespaced_pod_eviction(pod.metadata.name, namespace, eviction)


# name: (dbt's busy seconds, what to do once dbt runs, seconds to go on observing afterwards)
SCENARIOS: dict[str, tuple[int, Action, float]] = {
    "success": (5, _nothing, 120),
    "job_deleted": (120, _delete_job, 10),
    "suspended": (120, _suspend, 20),
    "evicted": (20, _evict, 150),
}


def _trim(obj: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    obj = json.loads(json.dumps(obj))
    obj.get("metadata", {}).pop("managedFields", None)
    spec = obj.get("spec")
    if isinstance(spec, dict):
        obj["spec"] = {k: v for k, v in spec.items() if k in ("suspend", "nodeName")}
    obj.pop("data", None)
    obj.pop("binaryData", None)
    return obj


async def record(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    slow, action, after = SCENARIOS[name]
    spec = DbtRunSpec(
        command="build",
        vars={"slow_seconds": slow},
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        namespace=namespace,
        service_account_name="dbt",
        termination_grace_period=5,
    )
    identity = RunIdentity(dag_id="record", task_id=name, run_id=uuid.uuid4().hex[:8])
    job = naming.job_name(identity)
    connection = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
    # Created first, as the operator does before it defers: the informer lists the run.
    async with connection.async_hook().get_conn() as api_client:
        await RunClient(api_client).create_run(
            render_job(spec, identity), render_results_configmap(spec, identity)
        )
    informer = NamespaceInformer(lambda: connection.async_hook().get_conn(), namespace)
    await informer.start()
    observations: list[list[Any]] = []
    try:
        with informer.subscribe(job) as subscription:
            progress = RunProgress(startup_timeout=600)
            acted: float | None = None
            while acted is None or time.time() < acted + after:
                observation = await subscription.next(1.0)
                if observation is not None:
                    kind, event_type, payload = observation
                    progress.observe(kind, event_type, payload)
                    listed = event_type == "LIST"
                    trimmed = [_trim(o) for o in payload] if listed else _trim(payload)
                    observations.append([round(time.time(), 3), kind, event_type, trimmed])
                if acted is None and progress.dbt_started:
                    await asyncio.sleep(3)
                    await action(api, namespace, job)
                    acted = time.time()
    finally:
        await informer.stop()
    return {"scenario": name, "dbt_seconds": slow, "observations": observations}


def main(names: list[str]) -> None:
    api = new_client_from_config(str(admin_kubeconfig()))
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or list(SCENARIOS):
        with namespace_with_chart(api, "kubedbt-record") as namespace:
            recorded = asyncio.run(record(api, namespace, name))
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        print(f"{path}: {len(recorded['observations'])} observations")


if __name__ == "__main__":
    main(sys.argv[1:])
