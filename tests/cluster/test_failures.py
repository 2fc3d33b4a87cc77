"""Failures reported right, and as early as the evidence allows, on the real cluster.

Each test starts a real run through the chart's launcher identity, waits for it with
DbtJobTrigger.run() as the triggerer would, and checks the kind, when it came, and that
`kubectl dbt describe`'s judgement (kubedbt.cli.describe.outcome_of) of the same objects, read
afterwards, agrees. Pull errors use the cluster's own empty registry (tests/cluster/lib.sh), where
every tag is missing, and a port where nothing listens, which fails like a registry that is down.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from kubedbt.cli.describe import outcome_of
from kubedbt.core import naming
from kubedbt.core.report import summary_lines
from kubedbt.core.results import RUN_RESULTS_KEY
from tests.cluster.record_fixtures import DOWN_REGISTRY, REGISTRY
from tests.cluster.test_tracking import Run, dbt_running
from tests.conftest import launcher_token, namespace_with_chart, write_kubeconfig

pytestmark = pytest.mark.cluster
NewRun = Callable[..., Run]


@pytest.fixture(scope="module")
def new_run(
    api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NewRun]:
    """Runs in one namespace with the chart, created through the launcher's identity."""
    with namespace_with_chart(
        api_client, "kubedbt-failures", "launcher.createServiceAccount=true"
    ) as namespace:
        kubeconfig = tmp_path_factory.mktemp("failures") / "launcher.kubeconfig"
        write_kubeconfig(kubeconfig, api_client, namespace, launcher_token(api_client, namespace))

        def new(startup_timeout: float = 120, **spec: Any) -> Run:
            run = Run(kubeconfig, namespace, slow_seconds=0, startup_timeout=startup_timeout)
            run.spec = dataclasses.replace(run.spec, **{"vars": {}, **spec})
            return run

        yield new


def _outcome(run: Run) -> tuple[dict[str, Any], float]:
    """The trigger's event, and the seconds from the Job's creation to it."""

    async def scenario() -> tuple[dict[str, Any], float]:
        await run.create()
        created = time.time()
        event, at = await run.wait()
        return event, at - created

    return asyncio.run(asyncio.wait_for(scenario(), 300))


def _described(api_client: client.ApiClient, run: Run) -> tuple[str | None, str]:
    """The kind and reason `kubectl dbt describe` judges the run by, from what it reads now."""
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)

    def as_json(obj: Any) -> Any:
        return api_client.sanitize_for_serialization(obj)

    job = as_json(batch.read_namespaced_job(run.job_name, run.namespace))
    pods = as_json(
        core.list_namespaced_pod(
            run.namespace, label_selector=f"{naming.INSTANCE_LABEL}={run.job_name}"
        ).items
    )
    events: list[Any] = []
    for kind, name in [("Job", run.job_name), *(("Pod", p["metadata"]["name"]) for p in pods)]:
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        events += as_json(core.list_namespaced_event(run.namespace, field_selector=selector).items)
    configmap = as_json(
        core.read_namespaced_config_map(naming.results_configmap_name(run.identity), run.namespace)
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    outcome = outcome_of(job, pods, configmap, events, now=now)
    return (None, "") if outcome is None else (outcome.kind, outcome.reason)


# What no amount of waiting fixes ends the run at once: (spec, kind, words in the reason).
AT_ONCE = {
    "missing Secret": (
        {"env_from": ({"secretRef": {"name": "not-created"}},)},
        "container_config_error",
        'secret "not-created" not found',
    ),
    "tag not in the registry": (
        {"image": f"{REGISTRY}/kubedbt/dbt:no-such-tag"},
        "image_invalid",
        "not found",
    ),
    "kubedbt's tag not in the registry": (
        # The first of kubedbt's containers, install-launcher, is the one that waits on it.
        {"sidecar_image": f"{REGISTRY}/kubedbt/sidecar:no-such-tag"},
        "image_invalid",
        "image of kubedbt's install-launcher does not exist",
    ),
}


@pytest.mark.parametrize("case", list(AT_ONCE))
def test_what_waiting_cannot_fix_ends_the_run_at_once(
    api_client: client.ApiClient, new_run: NewRun, case: str
) -> None:
    spec, kind, words = AT_ONCE[case]
    run = new_run(**spec)
    event, after = _outcome(run)
    assert (event["kind"], event["retryable"]) == (kind, False)
    assert words in event["reason"]
    # The kubelet takes up to about 15 s to report a config error; startup_timeout is 120 s.
    assert after < 60, f"ended {after:.0f}s after the Job's creation, not at once"
    assert _described(api_client, run)[0] == kind


def test_a_registry_that_is_down_is_waited_for_then_reported(
    api_client: client.ApiClient,
    new_run: NewRun,
) -> None:
    run = new_run(startup_timeout=20, image=f"{DOWN_REGISTRY}/kubedbt/dbt:dev")
    event, after = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("image_pull_failed", True)
    assert "connection refused" in event["reason"]
    # The kubelet's own words reach the message, from the pod's Events.
    assert "events: " in event["reason"]
    assert "Failed to pull image" in event["reason"]
    # Creation times are whole seconds: the deadline can fall up to a second before 20 s here.
    assert 19 <= after < 40, f"ended {after:.0f}s after the Job's creation, not at startup_timeout"
    kind, reason = _described(api_client, run)
    assert kind == "image_pull_failed", reason


def test_a_pod_that_cannot_schedule_says_so_with_its_events(
    api_client: client.ApiClient,
    new_run: NewRun,
) -> None:
    run = new_run(
        startup_timeout=15,
        node_selector={"kubedbt.io/no-such-node": "true"},
    )
    event, after = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("startup_timeout", True)
    assert "FailedScheduling" in event["reason"]
    assert any(line.startswith("event Pod/") for line in event["evidence"])
    assert after >= 14  # creation times are whole seconds
    assert _described(api_client, run)[0] == "startup_timeout"


def test_an_image_without_dbt_cannot_start(api_client: client.ApiClient, new_run: NewRun) -> None:
    run = new_run(image="kubedbt/sidecar:dev")  # a real image, with no dbt in it
    event, _ = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("container_start_failed", False)
    assert "executable file not found" in event["reason"]
    assert _described(api_client, run)[0] == "container_start_failed"


def test_a_state_that_cannot_be_restored_fails_without_waiting_for_results(
    api_client: client.ApiClient, new_run: NewRun
) -> None:
    run = new_run()
    corrupt = {
        "metadata": {"name": f"{run.job_name}-corrupt"},
        "binaryData": {RUN_RESULTS_KEY: base64.b64encode(b"not gzip").decode()},
    }
    client.CoreV1Api(api_client).create_namespaced_config_map(run.namespace, corrupt)
    run.state_from = corrupt["metadata"]["name"]
    event, after = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("init_failed", False)
    assert "restoring the earlier try's run_results" in event["reason"]
    assert after < 30, "the uploader never started: there is no upload to wait results_timeout for"
    assert _described(api_client, run)[0] == "init_failed"


def test_an_uploader_without_memory_is_named_when_results_are_missing(
    api_client: client.ApiClient, new_run: NewRun
) -> None:
    # 24Mi is too little for the uploader's Python: it is OOMKilled and restarted. Either, in one
    # of its short lives, the kubelet starts dbt, whose data test fails and nothing uploads it; or
    # dbt never starts within startup_timeout. Both name the uploader and the limit to raise.
    run = new_run(vars={"fail_test": True}, sidecar_resources={"limits": {"memory": "24Mi"}})
    event, _ = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("sidecar_failed", False)
    assert "OOMKilled" in event["reason"]
    assert "raise sidecar_resources.limits.memory" in event["reason"]
    # describe reads the whole Job (the watch's cache keeps no pod template), so it names the
    # limit when dbt ran.
    kind, reason = _described(api_client, run)
    assert kind == "sidecar_failed"
    if reason.startswith("dbt exited"):
        assert "sidecar_resources.limits.memory (now 24Mi)" in reason


def test_a_volume_that_cannot_mount_is_named_by_its_events(
    api_client: client.ApiClient, new_run: NewRun
) -> None:
    run = new_run(
        startup_timeout=15,
        volumes=({"name": "extra", "configMap": {"name": "not-created"}},),
        volume_mounts=({"name": "extra", "mountPath": "/extra"},),
    )
    event, _ = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("startup_timeout", True)
    assert "FailedMount" in event["reason"]
    assert 'configmap "not-created" not found' in event["reason"]


def test_stale_sources_are_named_and_terminal(
    api_client: client.ApiClient, new_run: NewRun
) -> None:
    run = new_run(command="source freshness", vars={"source_age_hours": 48})
    event, _ = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("sources_stale", False)
    assert "source.jaffle_shop.loader.schemata" in event["reason"]
    assert "max_loaded_at" in event["reason"]
    assert "error_after 24 hours" in event["reason"]
    # A run that did not succeed brings dbt's last lines, for the task log.
    assert "loader.schemata" in (event["log_tail"] or "")
    assert _described(api_client, run)[0] == "sources_stale"


def test_a_freshness_warning_succeeds_with_the_warning_in_the_summary(new_run: NewRun) -> None:
    run = new_run(command="source freshness", vars={"source_age_hours": 18})
    event, _ = _outcome(run)
    assert event["kind"] == "success"
    assert event["log_tail"] is None  # only shown for a failure, so a success does not read it
    summary = event["summary"]
    assert summary["command"] == "source freshness"
    assert summary["counts"] == {"warn": 1}
    (warned,) = summary["freshness"]
    assert (warned["unique_id"], warned["status"]) == ("source.jaffle_shop.loader.schemata", "warn")
    assert any("Sources past warn_after:" in line for line in summary_lines(summary))


def test_results_that_could_not_be_uploaded_are_missing(
    api_client: client.ApiClient, new_run: NewRun
) -> None:
    # The namespace's default ServiceAccount may not patch the results ConfigMap.
    run = new_run(vars={"fail_test": True}, service_account_name="default")
    event, after = _outcome(run)
    assert (event["kind"], event["retryable"]) == ("results_missing", True)
    assert "dbt exited 1 but its results were not uploaded" in event["reason"]
    assert after < 60, "the pod ended: its uploader has nothing left to upload, no need to wait"
    assert _described(api_client, run)[0] == "results_missing"


def _pod_of(api_client: client.ApiClient, run: Run) -> str:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        run.namespace, label_selector=f"{naming.INSTANCE_LABEL}={run.job_name}"
    )
    return str(pods.items[0].metadata.name)


def _while_dbt_runs(
    api_client: client.ApiClient, run: Run, act: Callable[[], None]
) -> dict[str, Any]:
    """The trigger's event for a run on which `act` is done once dbt is running."""

    async def scenario() -> dict[str, Any]:
        await run.create()
        waiting = asyncio.ensure_future(run.wait())
        await dbt_running(api_client, run)
        act()
        event, _ = await waiting
        return event

    return asyncio.run(asyncio.wait_for(scenario(), 400))


def test_a_pod_deleted_by_hand_is_cancelled(api_client: client.ApiClient, new_run: NewRun) -> None:
    run = new_run(vars={"slow_seconds": 120})
    core = client.CoreV1Api(api_client)
    event = _while_dbt_runs(
        api_client, run, lambda: core.delete_namespaced_pod(_pod_of(api_client, run), run.namespace)
    )
    # The launcher interrupted dbt (exit code 130): what it finished is kept for the next try.
    assert (event["kind"], event["retryable"], event["exit_code"]) == ("cancelled", True, 130)
    assert "its pod was stopped from outside" in event["reason"]
    # The watch kept the deleted pod's last state; describe, reading afterwards, finds no pod.
    kind, reason = _described(api_client, run)
    assert kind == "unknown"
    assert reason.startswith("no pod of the run is left to judge it by (deleted?)")


def test_the_jobs_deadline_is_terminal(api_client: client.ApiClient, new_run: NewRun) -> None:
    run = new_run(vars={"slow_seconds": 120}, active_deadline_seconds=20)
    event = _while_dbt_runs(api_client, run, lambda: None)
    assert (event["kind"], event["retryable"]) == ("deadline_exceeded", False)
    assert _described(api_client, run)[0] == "deadline_exceeded"


def test_an_eviction_fails_the_run_for_the_next_try_to_resume(
    api_client: client.ApiClient, new_run: NewRun
) -> None:
    # No pod replaces the evicted one: dbt was interrupted and uploaded what it finished, so the
    # next try resumes from it (tests/cluster/test_cancellation.py) instead of starting over.
    run = new_run(vars={"slow_seconds": 120}, startup_timeout=20)
    core = client.CoreV1Api(api_client)

    def evict() -> None:
        pod = _pod_of(api_client, run)
        eviction = {"metadata": {"name": pod, "namespace": run.namespace}}
        core.create_namespaced_pod_eviction(pod, run.namespace, eviction)

    event = _while_dbt_runs(api_client, run, evict)
    assert (event["kind"], event["retryable"]) == ("disrupted", True)
    assert "EvictionByEvictionAPI" in event["reason"]
    pods = core.list_namespaced_pod(
        run.namespace, label_selector=f"app.kubernetes.io/instance={run.job_name}"
    ).items
    assert len(pods) <= 1, "the Job must not start the command over in a new pod"
