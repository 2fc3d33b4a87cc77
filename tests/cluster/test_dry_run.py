"""Every golden manifest is accepted by a real API server (server-side dry run).

fieldValidation=Strict makes the API server refuse any field it does not know or that appears
twice, so this is a field-by-field check of the renderer against batch/v1 Job, core/v1 PodSpec
(native sidecars included) and podFailurePolicy as the server defines them.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

from kubedbt import render_job, render_results_configmap
from kubedbt.core import naming
from kubedbt.core.profiles import (
    ConnectionFields,
    profile_spec,
    render_profile,
    render_profile_secret,
)
from kubedbt.core.render import owned_by_job, retry_spec
from tests.unit.golden_cases import CASES

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = f"kubedbt-dry-run-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_manifests_pass_a_server_side_dry_run(
    api_client: client.ApiClient, namespace: str, case: str
) -> None:
    spec, identity = CASES[case]
    spec = dataclasses.replace(spec, namespace=namespace)
    job = render_job(spec, identity)
    created = client.BatchV1Api(api_client).create_namespaced_job(
        namespace, job, dry_run="All", field_validation="Strict"
    )
    # Defaulting happened, nothing was dropped: the API knows every field kubedbt sets.
    pod = created.spec.template.spec
    assert [c.name for c in pod.init_containers] == ["install-launcher", "results-uploader"]
    assert pod.init_containers[1].restart_policy == "Always"
    assert pod.containers[0].command == ["/kubedbt-launcher/kubedbt-launch"]
    rules = created.spec.pod_failure_policy.rules
    assert rules[0].on_exit_codes.values == [1, 2, 130]
    assert (rules[1].action, rules[1].on_pod_conditions[0].type) == ("Ignore", "DisruptionTarget")
    configmap = owned_by_job(render_results_configmap(spec, identity), job["metadata"]["name"], "x")
    configmap["metadata"]["ownerReferences"][0]["uid"] = str(uuid.uuid4())
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace, configmap, dry_run="All", field_validation="Strict"
    )


def test_retry_manifest_passes_a_server_side_dry_run(
    api_client: client.ApiClient, namespace: str
) -> None:
    spec, identity = CASES["minimal"]
    spec = retry_spec(dataclasses.replace(spec, namespace=namespace))
    job = render_job(spec, identity, state_from="dbt-previous-try-results")
    created = client.BatchV1Api(api_client).create_namespaced_job(
        namespace, job, dry_run="All", field_validation="Strict"
    )
    names = [c.name for c in created.spec.template.spec.init_containers]
    assert names == ["install-launcher", "restore-state", "results-uploader"]
    args = created.spec.template.spec.containers[0].args
    assert args[args.index("--") + 1 :][:4] == ["dbt", "retry", "--state", "/kubedbt/state"]


def test_profile_secret_and_its_mount_pass_a_server_side_dry_run(
    api_client: client.ApiClient, namespace: str
) -> None:
    spec, identity = CASES["minimal"]
    fields = ConnectionFields(conn_id="w", conn_type="duckdb", host="/data/w.duckdb")
    profile = render_profile(fields, target="ci")
    spec = profile_spec(dataclasses.replace(spec, namespace=namespace), profile)
    secret = render_profile_secret(spec, identity, profile)
    job = render_job(spec, identity, profile_secret=secret["metadata"]["name"])
    created = client.BatchV1Api(api_client).create_namespaced_job(
        namespace, job, dry_run="All", field_validation="Strict"
    )
    volume = next(v for v in created.spec.template.spec.volumes if v.name == "kubedbt-profile")
    assert (volume.secret.secret_name, volume.secret.default_mode) == (
        naming.profile_secret_name(identity),
        0o440,
    )
    owned = owned_by_job(secret, job["metadata"]["name"], str(uuid.uuid4()))
    stored = client.CoreV1Api(api_client).create_namespaced_secret(
        namespace, owned, dry_run="All", field_validation="Strict"
    )
    assert stored.type == "Opaque"
    assert set(stored.data) == {"profiles.yml"}
