"""Profiles from Airflow connections, on the real cluster against a real PostgreSQL.

The connection's fields are rendered to profiles.yml, launch_run creates the try's Secret with the
launcher's own token (create on secrets, nothing more), and the example image's dbt runs on it:
no env var, no profiles.yml in the image is involved. The Secret is owned by the Job, mounted by
the dbt container alone and collected with the Job; the Job and its pod hold no password; a Secret
that cannot be created leaves no Job behind, and the API server's refusal, even one quoting the
Secret's data, reaches nobody.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubedbt import DbtRunSpec, RunIdentity
from kubedbt.airflow.trigger import ConnectionArgs
from kubedbt.core import naming
from kubedbt.core.errors import KubedbtError
from kubedbt.core.naming import DBT_CONTAINER
from kubedbt.core.profiles import ConnectionFields, Profile, profile_spec, render_profile
from kubedbt.core.render import render_job
from kubedbt.io.kube import RunClient
from kubedbt.io.launch import Launched, launch_run
from tests.conftest import namespace_with_chart
from tests.warehouse import Warehouse, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    with namespace_with_chart(api_client, "kubedbt-profile") as name:
        yield name


def _spec(namespace: str) -> DbtRunSpec:
    # No target, no profiles_dir, no warehouse env: everything dbt connects with is the profile.
    return DbtRunSpec(
        command="build",
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        namespace=namespace,
        service_account_name="dbt",
        termination_grace_period=30,
    )


def _profile(warehouse: Warehouse, schema: str, target: str = "ci") -> Profile:
    fields = ConnectionFields(
        conn_id="warehouse",
        conn_type="postgres",
        host=warehouse.host,
        port=warehouse.port,
        login=warehouse.user,
        password=warehouse.password,
        schema=warehouse.database,
    )
    return render_profile(fields, target=target, args={"schema": schema, "threads": 2})


def _identity(test: str) -> RunIdentity:
    return RunIdentity("profiles", test, f"manual__{uuid.uuid4().hex[:8]}")


async def _launch(
    kubeconfig: Path, spec: DbtRunSpec, identity: RunIdentity, profile: Profile
) -> Launched:
    """launch_run as the operator calls it, with the launcher's kubeconfig."""
    hook = ConnectionArgs(kubernetes_conn_id=None, config_file=str(kubeconfig)).async_hook()
    async with hook.get_conn() as api_client:
        return await launch_run(
            RunClient(api_client), spec, identity, resume=False, log=_Log(), profile=profile
        )


def _secret_or_none(core: client.CoreV1Api, name: str, namespace: str) -> Any:
    try:
        return core.read_namespaced_secret(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def test_dbt_runs_on_a_profile_secret_owned_by_its_job(
    api_client: client.ApiClient,
    namespace: str,
    warehouse: Warehouse,
    kubeconfig: Path,
    measured: Any,
) -> None:
    schema = f"p_{uuid.uuid4().hex[:8]}"
    profile = _profile(warehouse, schema)
    identity = _identity("owned")
    started = time.monotonic()
    launched = asyncio.run(_launch(kubeconfig, _spec(namespace), identity, profile))
    job_name = launched.run.job_name
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)

    def ended() -> bool:
        conditions = batch.read_namespaced_job(job_name, namespace).status.conditions or []
        return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)

    assert wait_until(ended, 300, interval=1) is not None, f"{job_name} did not end"
    took = time.monotonic() - started
    job = batch.read_namespaced_job(job_name, namespace)
    pods = core.list_namespaced_pod(namespace, label_selector=f"{naming.INSTANCE_LABEL}={job_name}")
    (pod,) = pods.items
    assert job.status.succeeded == 1, core.read_namespaced_pod_log(
        pod.metadata.name, namespace, container=DBT_CONTAINER, tail_lines=30
    )
    # dbt built in the schema only the profile named: it connected with the profile's password.
    tables = warehouse.query(
        "select table_name from information_schema.tables where table_schema = %s", schema
    )
    assert {"stg_customers", "customers"} <= {row[0] for row in tables}

    secret_name = naming.profile_secret_name(identity)
    secret = core.read_namespaced_secret(secret_name, namespace)
    assert secret.type == "Opaque"
    assert base64.b64decode(secret.data["profiles.yml"]).decode() == profile.text
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", job_name, job.metadata.uid)

    serialize = api_client.sanitize_for_serialization
    for manifest in (serialize(job), serialize(pod)):
        text = json.dumps(manifest)
        assert warehouse.password not in text
        assert "profiles.yml" in text  # the volume's item: the check above looked at the pod
    pod_spec = serialize(pod)["spec"]
    mounting = [
        container["name"]
        for container in pod_spec["containers"] + pod_spec["initContainers"]
        if any(m["name"] == "kubedbt-profile" for m in container.get("volumeMounts", []))
    ]
    assert mounting == [DBT_CONTAINER]

    batch.delete_namespaced_job(job_name, namespace, propagation_policy="Background")
    gone = wait_until(lambda: _secret_or_none(core, secret_name, namespace) is None, 60)
    assert gone is not None, "the profile Secret outlived its Job"
    measured(f"dbt build on a profile Secret: {took:.1f} s; Secret collected {gone:.1f} s after")


def _wait_for_success(api_client: client.ApiClient, job_name: str, namespace: str) -> Any:
    """The Job once it ended; the test fails with dbt's log tail unless it succeeded."""
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)

    def ended() -> bool:
        conditions = batch.read_namespaced_job(job_name, namespace).status.conditions or []
        return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)

    assert wait_until(ended, 300, interval=1) is not None, f"{job_name} did not end"
    job = batch.read_namespaced_job(job_name, namespace)
    pods = core.list_namespaced_pod(namespace, label_selector=f"{naming.INSTANCE_LABEL}={job_name}")
    logs = [
        core.read_namespaced_pod_log(
            p.metadata.name, namespace, container=DBT_CONTAINER, tail_lines=30
        )
        for p in pods.items
        if p.status.phase in ("Succeeded", "Failed")
    ]
    assert job.status.succeeded == 1, logs
    return job


def test_an_adopted_job_without_its_secret_gets_it_under_its_own_target(
    api_client: client.ApiClient,
    namespace: str,
    warehouse: Warehouse,
    kubeconfig: Path,
    measured: Any,
) -> None:
    """Try 1's worker died between its Job and its Secret; try 2 adopts the Job and creates it.

    Try 2's profile_target differs (it is templated): the Secret must still hold the target that
    try 1's dbt was started with, or dbt finds no such target.
    """
    schema = f"a_{uuid.uuid4().hex[:8]}"
    first = _identity("adopted")
    spec = profile_spec(_spec(namespace), _profile(warehouse, schema, target="ci"))
    secret_name = naming.profile_secret_name(first)
    job = render_job(spec, first, profile_secret=secret_name)
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(namespace, job)  # ... and the worker dies here
    started = time.monotonic()
    second = first.with_try(2)
    changed = _profile(warehouse, schema, target="renamed")
    launched = asyncio.run(_launch(kubeconfig, _spec(namespace), second, changed))
    job_name = naming.job_name(first)
    assert (launched.run.job_name, launched.run.adopted, launched.adopted_try) == (
        job_name,
        True,
        1,
    )
    created = _wait_for_success(api_client, job_name, namespace)
    took = time.monotonic() - started
    tables = warehouse.query(
        "select table_name from information_schema.tables where table_schema = %s", schema
    )
    assert {"stg_customers", "customers"} <= {row[0] for row in tables}
    secret = core.read_namespaced_secret(secret_name, namespace)
    assert secret.immutable is True
    text = base64.b64decode(secret.data["profiles.yml"]).decode()
    assert "target: ci" in text
    assert "renamed" not in text
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", job_name, created.metadata.uid)
    assert naming.profile_secret_name(second) != secret_name  # try 2 made no Secret of its own
    assert _secret_or_none(core, naming.profile_secret_name(second), namespace) is None
    batch.delete_namespaced_job(job_name, namespace, propagation_policy="Background")
    measured(f"adopted Job given its Secret, dbt build done: {took:.1f} s")


def test_a_new_job_waits_out_an_older_jobs_secret_of_the_same_name(
    api_client: client.ApiClient,
    namespace: str,
    warehouse: Warehouse,
    kubeconfig: Path,
    measured: Any,
) -> None:
    """A deleted Job's Secret of the same name, still terminating, is waited out; then this
    Job's own is created (the launcher cannot read Secrets, so the 409 is all it sees)."""
    identity = _identity("stale")
    secret_name = naming.profile_secret_name(identity)
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    gone_owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": naming.job_name(identity),
        "uid": str(uuid.uuid4()),
    }
    # A finalizer holds the deleted Secret for HOLD seconds: a garbage collector being slow.
    stale = {
        "metadata": {
            "name": secret_name,
            "ownerReferences": [gone_owner],
            "finalizers": ["kubedbt.io/test-hold"],
        },
        "stringData": {"profiles.yml": "stale: true"},
    }
    core.create_namespaced_secret(namespace, stale)
    core.delete_namespaced_secret(secret_name, namespace)
    release = threading.Timer(
        HOLD,
        core.patch_namespaced_secret,
        (secret_name, namespace, {"metadata": {"finalizers": None}}),
    )
    started = time.monotonic()
    release.start()
    try:
        launched = asyncio.run(
            _launch(kubeconfig, _spec(namespace), identity, _profile(warehouse, "never"))
        )
    finally:
        release.join()
    took = time.monotonic() - started
    assert not launched.run.adopted
    assert took >= HOLD
    secret = core.read_namespaced_secret(secret_name, namespace)
    (owner,) = secret.metadata.owner_references
    assert owner.uid == launched.run.uid
    assert "stale" not in base64.b64decode(secret.data["profiles.yml"]).decode()
    batch.delete_namespaced_job(launched.run.job_name, namespace, propagation_policy="Background")
    measured(f"launch waited out a terminating Secret held {HOLD:.0f} s: {took:.1f} s")


HOLD = 4.0


POLICY_MESSAGE = "'kubedbt test refuses: ' + string(object.data['profiles.yml'])"


def test_a_refused_secret_leaves_no_job_and_quotes_nothing(
    api_client: client.ApiClient, namespace: str, warehouse: Warehouse, kubeconfig: Path
) -> None:
    """An admission policy refuses the Secret with a 403 that quotes its whole profiles.yml."""
    policy = f"kubedbt-test-refuse-profile-{uuid.uuid4().hex[:8]}"
    admission = client.AdmissionregistrationV1Api(api_client)
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["secrets"],
                            "operations": ["CREATE"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "false",
                        "reason": "Forbidden",
                        "messageExpression": POLICY_MESSAGE,
                    }
                ],
            },
        }
    )
    try:
        admission.create_validating_admission_policy_binding(
            {
                "metadata": {"name": policy},
                "spec": {
                    "policyName": policy,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        }
                    },
                },
            }
        )
        _refused_without_a_trace(api_client, namespace, warehouse, kubeconfig)
    finally:
        admission.delete_validating_admission_policy_binding(policy)
        admission.delete_validating_admission_policy(policy)


def _refused_without_a_trace(
    api_client: client.ApiClient, namespace: str, warehouse: Warehouse, kubeconfig: Path
) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    probe = {"metadata": {"name": "probe"}, "stringData": {"profiles.yml": "x: 1"}}

    def refusing() -> bool:
        try:
            core.create_namespaced_secret(namespace, probe, dry_run="All")
        except ApiException as e:
            return bool(e.status == 403)
        return False

    assert wait_until(refusing, 30, interval=0.5) is not None, "the policy never took effect"
    profile = _profile(warehouse, "never")
    identity = _identity("refused")
    with pytest.raises(KubedbtError) as caught:
        asyncio.run(_launch(kubeconfig, _spec(namespace), identity, profile))
    message = str(caught.value)
    assert "403" in message
    assert "ValidatingAdmissionPolicy" in message
    assert "kubedbt test refuses: ***" in message  # the policy's message, its quote redacted
    assert warehouse.password not in message
    assert warehouse.host not in message  # the whole profile, folded onto one line, is redacted
    job_name = naming.job_name(identity)

    def no_job() -> bool:
        return not batch.list_namespaced_job(
            namespace, field_selector=f"metadata.name={job_name}"
        ).items

    assert wait_until(no_job, 60) is not None, "the Job outlived its refused Secret"


class _Log:
    def info(self, message: str, *args: Any) -> None:
        print(message % args)

    def warning(self, message: str, *args: Any) -> None:
        print(message % args)
