"""Misconfigurations a new user runs into, each a real dbt run in the real image, told with the fix.

Each test starts a run as tests/cluster/test_failures.py does (the chart's launcher identity, the
kubedbt/dbt:dev and kubedbt/sidecar:dev images, waited for with DbtJobTrigger.run()) and checks
the trigger's event: the kind stays what dbt's exit code says (terminal), the reason states dbt's
own error on one line, and the fix (kubedbt.core.diagnose) names what to change. `kubectl dbt
describe`, reading the same objects afterwards, shows the same reason and fix.

The project with a packages.yml is the image's profile and a dbt_project.yml in a ConfigMap,
mounted read-only where the image's projects are: dbt sees a project whose packages were never
installed, as in an image built without `dbt deps`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from kubedbt.cli.describe import describe_lines
from kubedbt.core import naming
from tests.cluster.test_failures import _outcome
from tests.cluster.test_tracking import Run
from tests.conftest import launcher_token, namespace_with_chart, write_kubeconfig

pytestmark = pytest.mark.cluster

PROJECT = "/usr/app/jaffle_shop"
PACKAGES_PROJECT = "/usr/app/with_packages"
PACKAGES_CONFIGMAP = "project-with-packages"


@dataclass(frozen=True)
class Misconfig:
    """A run's spec, and what its outcome must say."""

    spec: dict[str, Any]
    reason: str
    fix: tuple[str, ...]
    kind: str = "dbt_error"
    exit_code: int = 2
    command: str = "build"


def _env(**values: str) -> tuple[dict[str, str], ...]:
    return tuple({"name": k, "value": v} for k, v in values.items())


WRITE = ("under /kubedbt", "uid 1000", "DuckDB `path` in profiles.yml", "env_vars")
CASES = {
    # The issue's own case: the profile's DuckDB database next to the read-only project.
    "duckdb database in the project": Misconfig(
        {"env_vars": _env(DBT_DUCKDB_PATH=f"{PROJECT}/jaffle_shop.duckdb")},
        f'dbt could not run: IO Error: Cannot open file "{PROJECT}/jaffle_shop.duckdb": '
        "Permission denied",
        (f"dbt cannot write {PROJECT}/jaffle_shop.duckdb (Permission denied)", *WRITE),
    ),
    "duckdb database on a read-only root filesystem": Misconfig(
        {
            "env_vars": _env(DBT_DUCKDB_PATH="/tmp/warehouse.duckdb"),
            "container_security_context": {"readOnlyRootFilesystem": True},
        },
        'dbt could not run: IO Error: Cannot open file "/tmp/warehouse.duckdb": '
        "Read-only file system",
        ("dbt cannot write /tmp/warehouse.duckdb (Read-only file system)", *WRITE),
    ),
    "a profile that does not exist": Misconfig(
        {"profile": "nosuch"},
        "dbt could not run: Runtime Error: Could not find profile named 'nosuch'",
        ("Set the `profile` parameter", "profiles_dir", "profile_conn_id"),
    ),
    "a target the profile does not have": Misconfig(
        {"target": "nosuch"},
        "dbt could not run: Runtime Error: The profile 'jaffle_shop' does not have a target named "
        "'nosuch'. The valid target names for this profile are: duckdb, postgres",
        ("Set the `target` parameter to one of its targets (duckdb, postgres)",),
    ),
    "an env var the profile reads and the pod does not set": Misconfig(
        {"target": "postgres"},
        "dbt could not run: Parsing Error: Env var required but not provided: 'POSTGRES_HOST'",
        (
            "reads the env var POSTGRES_HOST with env_var()",
            "Set POSTGRES_HOST with env_vars",
            "secretRef",
        ),
    ),
    "packages that were never installed": Misconfig(
        {
            "project_dir": PACKAGES_PROJECT,
            "volumes": ({"name": "project", "configMap": {"name": PACKAGES_CONFIGMAP}},),
            "volume_mounts": (
                {"name": "project", "mountPath": PACKAGES_PROJECT, "readOnly": True},
            ),
        },
        "dbt could not run: Compilation Error: dbt found 1 package(s) specified in packages.yml, "
        'but only 0 package(s) installed in dbt_packages. Run "dbt deps" to install package '
        "dependencies.",
        ("packages.yml", "RUN dbt deps", "Dockerfile", "dbt_packages/"),
    ),
    # dbt debug writes no run_results and exits 1: its failed check is the error.
    "dbt debug on a database in the project": Misconfig(
        {"env_vars": _env(DBT_DUCKDB_PATH=f"{PROJECT}/jaffle_shop.duckdb")},
        "dbt debug failed: dbt was unable to connect to the specified database: IO Error: Cannot "
        f'open file "{PROJECT}/jaffle_shop.duckdb": Permission denied',
        (f"dbt cannot write {PROJECT}/jaffle_shop.duckdb (Permission denied)", *WRITE),
        kind="dbt_error",
        exit_code=1,
        command="debug",
    ),
}

# A project with a hub package: dbt checks that packages are installed before anything else.
PACKAGES_FILES = {
    "dbt_project.yml": "name: with_packages\nversion: '1.0'\nconfig-version: 2\n"
    "profile: jaffle_shop\n",
    "packages.yml": "packages:\n  - package: dbt-labs/dbt_utils\n    version: 1.3.0\n",
}


@pytest.fixture(scope="module")
def namespace(
    api_client: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any]]:
    """A namespace with the chart and the packages project, and the launcher's kubeconfig."""
    with namespace_with_chart(
        api_client, "kubedbt-misconfig", "launcher.createServiceAccount=true"
    ) as name:
        client.CoreV1Api(api_client).create_namespaced_config_map(
            name, {"metadata": {"name": PACKAGES_CONFIGMAP}, "data": PACKAGES_FILES}
        )
        kubeconfig = tmp_path_factory.mktemp("misconfig") / "launcher.kubeconfig"
        write_kubeconfig(kubeconfig, api_client, name, launcher_token(api_client, name))
        yield name, kubeconfig


def described(api_client: client.ApiClient, run: Run) -> list[str]:
    """What `kubectl dbt describe` prints of the run, from what the cluster holds now."""
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    as_json = api_client.sanitize_for_serialization
    job = as_json(batch.read_namespaced_job(run.job_name, run.namespace))
    selector = f"{naming.INSTANCE_LABEL}={run.job_name}"
    pods = as_json(core.list_namespaced_pod(run.namespace, label_selector=selector).items)
    configmap = as_json(
        core.read_namespaced_config_map(naming.results_configmap_name(run.identity), run.namespace)
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    return describe_lines(job, pods, configmap, [], now=now)


@pytest.mark.parametrize("case", list(CASES))
def test_a_misconfiguration_is_stated_and_explained_with_the_fix(
    api_client: client.ApiClient, namespace: tuple[str, Any], case: str
) -> None:
    expected = CASES[case]
    name, kubeconfig = namespace
    run = Run(kubeconfig, name, slow_seconds=0)
    run.spec = dataclasses.replace(run.spec, command=expected.command, vars={}, **expected.spec)
    event, _ = _outcome(run)

    assert (event["kind"], event["retryable"], event["exit_code"]) == (
        expected.kind,
        False,
        expected.exit_code,
    ), event["reason"]
    assert event["reason"] == expected.reason
    fix = event["fix"]
    assert fix is not None, event["reason"]
    for words in expected.fix:
        assert words in fix

    lines = described(api_client, run)
    assert f"  Reason:     {expected.reason}" in lines
    assert f"  Fix:        {fix}" in lines
