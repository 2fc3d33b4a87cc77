"""Each run's pod may write only its own results, on the real cluster with the chart installed.

Two real runs, A and B, in one namespace. From inside A's results-uploader container, with the
token the kubelet mounted for it, the test sends the requests a compromised or malicious pod
would: a patch of B's results ConfigMap (which B's next try would trust for `dbt retry`) and of
kubedbt-defaults (which sets the image of every run that leaves it unset). The chart's admission
policy refuses both; A's patch of its own ConfigMap passes, and both runs still succeed with their
own results.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.stream import stream

from kubedbt.core import naming
from kubedbt.core.errors import TerminalError
from kubedbt.core.results import UPLOAD_STATUS
from tests.cluster.test_tracking import Run, _informer_of, dbt_running
from tests.conftest import namespace_with_chart

pytestmark = pytest.mark.cluster

# Runs inside the uploader's container (its image has python3): one merge patch per argument,
# each printed as a JSON line with the HTTP status and the API server's message.
PATCHER = """
import json, os, ssl, sys, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read().strip()
namespace = open(sa + "/namespace").read().strip()
context = ssl.create_default_context(cafile=sa + "/ca.crt")
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
server = "https://%s:%s" % (host, port)
for name in sys.argv[1:]:
    body = json.dumps({"metadata": {"annotations": {"forged-by": os.environ["HOSTNAME"]}}})
    request = urllib.request.Request(
        "%s/api/v1/namespaces/%s/configmaps/%s" % (server, namespace, name), data=body.encode(),
        method="PATCH", headers={"Authorization": "Bearer " + token,
                                 "Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            print(json.dumps({"name": name, "status": response.status, "message": ""}))
    except urllib.error.HTTPError as e:
        print(json.dumps({"name": name, "status": e.code, "message": json.load(e).get("message")}))
"""


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    with namespace_with_chart(
        api_client,
        "kubedbt-scope",
        "launcher.createServiceAccount=true",
        "defaults.enabled=true",
        "defaults.image=kubedbt/dbt:dev",
    ) as name:
        yield name


def _pod_of(api_client: client.ApiClient, run: Run) -> str:
    pods = client.CoreV1Api(api_client).list_namespaced_pod(
        run.namespace, label_selector=f"{naming.INSTANCE_LABEL}={run.job_name}"
    )
    (pod,) = pods.items
    return str(pod.metadata.name)


def _exec(
    api_client: client.ApiClient, namespace: str, pod: str, container: str, *command: str
) -> str:
    """What `command` printed (stdout and stderr) in a container of the pod."""
    session = stream(
        client.CoreV1Api(api_client).connect_get_namespaced_pod_exec, pod, namespace,
        container=container, command=list(command), stderr=True, stdout=True, stdin=False,
        tty=False, _preload_content=False,
    )  # fmt: skip
    try:
        session.run_forever(timeout=60)
        return str(session.read_stdout()) + str(session.read_stderr())
    finally:
        session.close()
        # websocket-client's close() leaves the socket open once the server has closed the
        # stream (the command ended); shutdown() closes it in any state.
        session.sock.shutdown()


def _annotations(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    configmap = client.CoreV1Api(api_client).read_namespaced_config_map(name, namespace)
    return dict(configmap.metadata.annotations or {})


def test_a_run_pod_cannot_write_another_runs_results(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    a, b = (Run(kubeconfig, namespace, slow_seconds=20) for _ in range(2))
    assert a.job_name != b.job_name
    own, other = (naming.results_configmap_name(r.identity) for r in (a, b))

    async def scenario() -> list[dict[str, Any]]:
        # Held open by the test, so it is closed before the loop is (as in test_tracking).
        async with _informer_of(a):
            for run in (a, b):
                await run.create()
            await dbt_running(api_client, a)
            pod = _pod_of(api_client, a)
            # The dbt container holds no token at all: only the uploader can even try.
            listing = _exec(
                api_client, namespace, pod, "dbt", "ls", "/var/run/secrets/kubernetes.io"
            )
            assert "No such file or directory" in listing
            output = _exec(
                api_client, namespace, pod, naming.SIDECAR_CONTAINER,
                "python3", "-c", PATCHER, other, "kubedbt-defaults", own,
            )  # fmt: skip
            attempts = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
            ends = await asyncio.gather(a.wait(), b.wait())
            assert [event["kind"] for event, _ in ends] == ["success", "success"]
            return attempts

    attempts = asyncio.run(scenario())
    by_name = {attempt["name"]: attempt for attempt in attempts}
    pod = f"pod {a.job_name}-"
    for refused in (other, "kubedbt-defaults"):
        assert by_name[refused]["status"] == 403, attempts
        message = by_name[refused]["message"]
        assert pod in message, message
        assert f"may write only ConfigMap {own}" in message, message
        assert "forged-by" not in _annotations(api_client, namespace, refused)
    assert by_name[own]["status"] == 200, attempts
    # The genuine uploads went through the same policy.
    mine, theirs = (_annotations(api_client, namespace, name) for name in (own, other))
    assert mine["forged-by"].startswith(f"{a.job_name}-")
    assert mine[UPLOAD_STATUS] == theirs[UPLOAD_STATUS] == "uploaded"


def test_a_token_not_bound_to_a_pod_writes_nothing(
    api_client: client.ApiClient, namespace: str
) -> None:
    """`kubectl create token dbt` gives the ServiceAccount's rights without a pod: refused."""
    core = client.CoreV1Api(api_client)
    name = f"scope-{uuid.uuid4().hex[:6]}-results"
    core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    token = core.create_namespaced_service_account_token(
        "dbt", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    configuration = client.Configuration()
    configuration.host = api_client.configuration.host
    configuration.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    with client.ApiClient(configuration) as unbound:
        configmaps = client.CoreV1Api(unbound)
        # The API server enforces a new policy within a second or two of its creation.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                configmaps.patch_namespaced_config_map(
                    name, namespace, {"data": {"forged": "yes"}}, dry_run="All"
                )
            except client.ApiException as e:
                if e.status == 403:
                    break
                raise
            time.sleep(0.2)
        with pytest.raises(client.ApiException) as refused:
            configmaps.patch_namespaced_config_map(name, namespace, {"data": {"forged": "yes"}})
    assert refused.value.status == 403
    assert "only a run pod's bound token" in str(refused.value.body)
    assert not core.read_namespaced_config_map(name, namespace).data


def test_a_results_configmap_left_by_a_deleted_job_is_waited_out(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path, measured: Any
) -> None:
    """The launcher may not delete ConfigMaps: one of the same name whose Job is gone (the Job
    was deleted and the try started again) is left to the garbage collector, then replaced.

    A finalizer holds the stale ConfigMap for HOLD seconds, as a busy garbage collector would."""
    hold = 3.0
    core = client.CoreV1Api(api_client)
    run = Run(kubeconfig, namespace, slow_seconds=0)
    name = naming.results_configmap_name(run.identity)
    gone = {"apiVersion": "batch/v1", "kind": "Job", "name": run.job_name, "uid": str(uuid.uuid4())}
    metadata = {"name": name, "ownerReferences": [gone], "finalizers": ["kubedbt.io/test-hold"]}
    core.create_namespaced_config_map(namespace, {"metadata": metadata, "data": {"stale": "yes"}})

    async def scenario() -> tuple[str, float]:
        async with _informer_of(run):
            started = time.monotonic()
            creating = asyncio.ensure_future(run.create())
            await asyncio.sleep(hold)
            assert not creating.done()
            core.patch_namespaced_config_map(name, namespace, {"metadata": {"finalizers": None}})
            uid = await creating
            waited = time.monotonic() - started
            event, _ = await run.wait()
            assert event["kind"] == "success", event
            return uid, waited

    uid, waited = asyncio.run(scenario())
    configmap = core.read_namespaced_config_map(name, namespace)
    assert [owner.uid for owner in configmap.metadata.owner_references] == [uid]
    assert "stale" not in (configmap.data or {})
    assert waited >= hold
    measured(f"run created {waited - hold:.2f}s after its stale ConfigMap was released")


def test_a_results_configmap_of_no_job_is_named_not_deleted(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    """An orphaned one (its Job deleted with --cascade=orphan) never goes away by itself: the
    run fails at once saying how to remove it, and leaves no Job behind."""
    run = Run(kubeconfig, namespace, slow_seconds=0)
    name = naming.results_configmap_name(run.identity)
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
    with pytest.raises(TerminalError) as refused:
        asyncio.run(run.create())
    assert f"kubectl -n {namespace} delete configmap {name}" in str(refused.value)
    jobs = client.BatchV1Api(api_client).list_namespaced_job(namespace)
    assert [
        job.metadata.name for job in jobs.items if job.metadata.deletion_timestamp is None
    ] == []
    assert core.read_namespaced_config_map(name, namespace).metadata.name == name
