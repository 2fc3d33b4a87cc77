"""Artifact storage on the real cluster, against a real S3 server (MinIO on the node's address).

Each run's sidecar copies target/ and dbt.log to s3://<bucket>/<prefix>/<dag>/<task>/<run>/try-<n>/
with the credentials of a Secret only it sees. Checked from outside with a second S3 client
(boto3): what landed, that dbt's own loader reads it, that nothing was written outside the run's
folder; `kubectl dbt artifacts` lists and downloads it. Also: an upload while the pod is
terminating (a stopped run against a real PostgreSQL), and a store that is down, which changes the
run's outcome in nothing but the record of the failed upload.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.airflow.trigger import ConnectionArgs
from kubedbt.cli.main import main as kubectl_dbt
from kubedbt.core import naming, results
from kubedbt.core.artifacts import INDEX_OBJECT, run_folder, run_url
from kubedbt.core.report import summary_lines
from kubedbt.io.kube import RunClient
from tests.conftest import admin_kubeconfig, namespace_with_chart, node_address
from tests.objectstore import ObjectStore, running_object_store
from tests.unit.dbt_runs import load_with_dbt
from tests.warehouse import Warehouse, wait_until

pytestmark = pytest.mark.cluster

PREFIX = "kubedbt/prod"
SECRET = "artifacts"
GRACE = 30
NODES = 28
UPLOADED = {
    "manifest.json.gz",
    "run_results.json.gz",
    "graph_summary.json.gz",
    "semantic_manifest.json.gz",
    "dbt.log.gz",
    "target.tar.gz",
    "lineage.json.gz",
}


@pytest.fixture(scope="module")
def store(api_client: client.ApiClient) -> Iterator[ObjectStore]:
    with running_object_store(node_address(api_client)) as running:
        yield running


@pytest.fixture(scope="module")
def namespace(api_client: client.ApiClient, store: ObjectStore) -> Iterator[str]:
    with namespace_with_chart(api_client, "kubedbt-artifacts") as name:
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name=SECRET), string_data=store.env())
        client.CoreV1Api(api_client).create_namespaced_secret(name, secret)
        yield name


def _spec(namespace: str, store: ObjectStore, **overrides: Any) -> DbtRunSpec:
    values: dict[str, Any] = {
        "command": "build",
        "image": "kubedbt/dbt:dev",
        "sidecar_image": "kubedbt/sidecar:dev",
        "image_pull_policy": "IfNotPresent",
        "namespace": namespace,
        "service_account_name": "dbt",
        "artifacts_url": store.url(PREFIX),
        "artifacts_secret": SECRET,
        "termination_grace_period": GRACE,
        **overrides,
    }
    return DbtRunSpec(**values)


def _identity(test: str) -> RunIdentity:
    # A run id with characters a key must not carry as they are.
    return RunIdentity(
        "artifacts", test, f"manual__2026-11-23T10:00:00+00:00/{uuid.uuid4().hex[:6]}"
    )


async def _create(spec: DbtRunSpec, identity: RunIdentity) -> str:
    hook = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
    async with hook.async_hook().get_conn() as api_client:
        created = await RunClient(api_client).create_run(
            render_job(spec, identity), render_results_configmap(spec, identity)
        )
    return created.job_name


def _ended(api_client: client.ApiClient, namespace: str, job_name: str) -> tuple[str, Any]:
    """Wait for the Job's end and its upload; its last condition and the decoded ConfigMap."""
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    name = job_name + naming.RESULTS_SUFFIX
    ended: list[str] = []

    def done() -> bool:
        job = batch.read_namespaced_job(job_name, namespace)
        conditions = [
            c.type for c in job.status.conditions or [] if c.status == "True"
        ]  # fmt: skip
        annotations = core.read_namespaced_config_map(name, namespace).metadata.annotations
        ended[:] = [c for c in conditions if c in ("Complete", "Failed")]
        return bool(ended) and annotations.get(results.UPLOAD_STATUS) != "pending"

    assert wait_until(done, 300, interval=0.5) is not None, f"{job_name} did not end"
    configmap = api_client.sanitize_for_serialization(
        core.read_namespaced_config_map(name, namespace)
    )
    return ended[0], results.decode(configmap)


def _folder(identity: RunIdentity) -> str:
    return f"{PREFIX}/{run_folder(identity)}/"


def test_a_run_copies_its_artifacts_under_its_own_folder(
    api_client: client.ApiClient,
    namespace: str,
    store: ObjectStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec, identity = _spec(namespace, store), _identity("copied")
    job_name = asyncio.run(_create(spec, identity))
    condition, decoded = _ended(api_client, namespace, job_name)
    assert condition == "Complete"
    record = decoded.summary["artifacts"]
    assert record["error"] is None, record
    assert record["url"] == run_url(store.url(PREFIX), identity)
    assert {o["name"] for o in record["objects"]} == UPLOADED

    # Nothing outside the run's folder; the index last, naming every object with its size.
    folder = _folder(identity)
    keys = store.keys()
    assert keys, "nothing was uploaded"
    assert all(key.startswith(folder) for key in keys), keys
    assert sorted(keys) == sorted(folder + name for name in [*UPLOADED, INDEX_OBJECT])
    index = json.loads(store.get(folder + INDEX_OBJECT))
    assert index == {"objects": record["objects"], "complete": True}

    manifest = json.loads(gzip.decompress(store.get(folder + "manifest.json.gz")))
    assert "model.jaffle_shop.customers" in manifest["nodes"]
    (tmp_path / "run_results.json").write_bytes(
        gzip.decompress(store.get(folder + "run_results.json.gz"))
    )
    assert load_with_dbt(tmp_path / "run_results.json") == [NODES]
    with tarfile.open(fileobj=io.BytesIO(store.get(folder + "target.tar.gz"))) as archive:
        assert "compiled/jaffle_shop/models/marts/customers.sql" in archive.getnames()
    log = gzip.decompress(store.get(folder + "dbt.log.gz")).decode()
    assert '"name": "CommandCompleted"' in log or '"CommandCompleted"' in log
    # The lineage digest went to the ConfigMap as well as to the store.
    assert decoded.lineage is not None

    # Only the uploader sees the store's credentials.
    job = client.BatchV1Api(api_client).read_namespaced_job(job_name, namespace)
    pod = job.spec.template.spec
    (dbt,) = [c for c in pod.containers if c.name == "dbt"]
    assert not dbt.env_from
    assert not [e for e in dbt.env or [] if e.name.startswith("AWS_")]
    (uploader,) = [c for c in pod.init_containers if c.name == naming.SIDECAR_CONTAINER]
    assert [e.secret_ref.name for e in uploader.env_from] == [SECRET]
    # ... and it exits 0 after talking to the store (obstore's threads must not abort the exit).
    (ran,) = (
        client.CoreV1Api(api_client)
        .list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
        .items
    )
    (status,) = [
        s for s in ran.status.init_container_statuses if s.name == naming.SIDECAR_CONTAINER
    ]
    assert status.state.terminated.exit_code == 0, status.state

    # kubectl dbt artifacts, with this machine's credentials for the store.
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    cli = ["-n", namespace, "--kubeconfig", str(admin_kubeconfig()), "artifacts", job_name]
    assert kubectl_dbt(cli) == 0
    listed = capsys.readouterr().out
    assert record["url"] in listed
    assert all(name in listed for name in UPLOADED)
    into = tmp_path / "downloaded"
    assert kubectl_dbt([*cli, "--download", str(into)]) == 0
    assert load_with_dbt(into / "run_results.json") == [NODES]
    assert json.loads((into / "manifest.json").read_text())["nodes"] == manifest["nodes"]
    assert (into / "compiled/jaffle_shop/models/marts/customers.sql").is_file()
    assert (into / "logs" / "dbt.log").read_text() == log


def test_a_terminating_pod_uploads_what_dbt_left(
    api_client: client.ApiClient, namespace: str, store: ObjectStore, warehouse: Warehouse
) -> None:
    spec = _spec(
        namespace,
        store,
        target="postgres",
        vars={"warehouse_sleep_seconds": 600},
        env_vars=warehouse.env(f"s_{uuid.uuid4().hex[:8]}"),
    )
    identity = _identity("terminating")
    job_name = asyncio.run(_create(spec, identity))
    if wait_until(lambda: warehouse.running("pg_sleep(600)"), 240) is None:
        pytest.fail(f"{job_name}: dbt never reached the pg_sleep statement")

    async def stop() -> bool:
        hook = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
        async with hook.async_hook().get_conn() as api:
            return await RunClient(api).stop_run(job_name, namespace, "task-killed")

    stopped = time.monotonic()
    assert asyncio.run(stop())
    condition, decoded = _ended(api_client, namespace, job_name)
    took = time.monotonic() - stopped
    assert condition == "Failed"
    assert took < GRACE, f"the pod took {took:.1f}s, past its grace period"
    record = decoded.summary["artifacts"]
    assert record["error"] is None, record
    folder = _folder(identity)
    assert INDEX_OBJECT in [key.removeprefix(folder) for key in store.keys(folder)]
    # What dbt wrote as it stopped: the interrupted model among its results.
    stored = json.loads(gzip.decompress(store.get(folder + "run_results.json.gz")))
    statuses = {r["unique_id"]: r["status"] for r in stored["results"]}
    assert statuses.get("model.jaffle_shop.customers") in ("error", None)
    assert 0 < len(statuses) < NODES
    assert decoded.summary["interruption"] is not None


def test_a_store_that_is_down_changes_nothing_but_the_record(
    api_client: client.ApiClient, namespace: str, store: ObjectStore
) -> None:
    identity = _identity("store-down")
    store.stop()
    try:
        job_name = asyncio.run(_create(_spec(namespace, store), identity))
        condition, decoded = _ended(api_client, namespace, job_name)
    finally:
        store.start()
    # dbt's outcome and the results ConfigMap are what they would have been.
    assert condition == "Complete"
    assert decoded.status == "uploaded"
    assert decoded.summary["nodes"] == NODES
    assert decoded.run_results is not None
    record = decoded.summary["artifacts"]
    assert record["error"], record
    assert record["objects"] == []
    assert record["seconds"] < GRACE
    assert store.secret_key not in record["error"]
    assert store.keys(_folder(identity)) == []
    # The task log's summary says where the upload went and why it stopped short.
    lines = summary_lines(decoded.summary)
    assert any(line.startswith("Artifacts: s3://") for line in lines)
    assert any("the upload stopped short" in line for line in lines)
