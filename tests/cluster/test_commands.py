"""docs generate, debug, clone and show, each run in the real images on the local cluster.

Each run is created through the chart's launcher identity and waited for with DbtJobTrigger.run(),
as the triggerer would (tests/cluster/test_failures.py's helpers); its outcome, what `kubectl dbt
describe` judges from the same objects, the results ConfigMap, `kubectl dbt results` and, with
artifacts_url, the object store are then checked. The warehouse is a real PostgreSQL that
`dbt build` filled once (a "prod" schema, its artifacts uploaded to a real S3 server): its
manifest is the state `dbt clone` clones from, mounted from a ConfigMap, and its relations are
what `docs generate` catalogues and `show` previews.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubedbt.cli.main import main as kubectl_dbt
from kubedbt.core import naming, results
from kubedbt.core.artifacts import run_folder
from kubedbt.core.report import summary_lines
from tests.cluster.test_failures import _described, _outcome
from tests.cluster.test_tracking import Run
from tests.conftest import (
    admin_kubeconfig,
    launcher_token,
    namespace_with_chart,
    node_address,
    write_kubeconfig,
)
from tests.objectstore import ObjectStore, running_object_store
from tests.unit.dbt_runs import load_with_dbt
from tests.unit.test_command_output import _dbt_catalog_load
from tests.warehouse import Warehouse

pytestmark = pytest.mark.cluster

PREFIX = "kubedbt/commands"
SECRET = "artifacts"
STATE = "/prod-state"
# The example's one source lives in DuckDB's `system` database, which PostgreSQL cannot read.
NOT_ON_POSTGRES = "source:loader"
# The relations `dbt build` makes, by resource type.
RELATIONS = {
    "model": ("customers", "orders", "stg_customers", "stg_orders", "stg_payments"),
    "seed": ("raw_customers", "raw_orders", "raw_payments"),
}


@pytest.fixture(scope="module")
def store(api_client: client.ApiClient) -> Iterator[ObjectStore]:
    with running_object_store(node_address(api_client)) as running:
        yield running


@dataclass(frozen=True)
class Cluster:
    """A namespace with the chart, runs made through its launcher identity."""

    api: client.ApiClient
    namespace: str
    kubeconfig: Path
    store: ObjectStore
    warehouse: Warehouse

    def run(self, command: str, *, schema: str | None = None, **spec: Any) -> Run:
        run = Run(self.kubeconfig, self.namespace, slow_seconds=0)
        if schema is not None:  # the example's postgres target, on that schema
            spec = {"target": "postgres", "env_vars": self.warehouse.env(schema), **spec}
        run.spec = dataclasses.replace(run.spec, command=command, vars={}, **spec)
        return run

    def stored(self, run: Run) -> dict[str, Any]:
        """The run's results ConfigMap, as the API returns it."""
        core = client.CoreV1Api(self.api)
        name = naming.results_configmap_name(run.identity)
        configmap: dict[str, Any] = self.api.sanitize_for_serialization(
            core.read_namespaced_config_map(name, self.namespace)
        )
        return configmap

    def described(self, run: Run) -> tuple[str | None, str]:
        """The kind and reason `kubectl dbt describe` judges the run by."""
        return _described(self.api, run)

    def results_text(self, run: Run, capsys: pytest.CaptureFixture[str]) -> str:
        """What `kubectl dbt results` prints of the run."""
        capsys.readouterr()
        cli = ["-n", self.namespace, "--kubeconfig", str(admin_kubeconfig()), "results"]
        assert kubectl_dbt([*cli, run.job_name]) == 0
        return capsys.readouterr().out


@pytest.fixture(scope="module")
def cluster(
    api_client: client.ApiClient,
    store: ObjectStore,
    warehouse: Warehouse,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    with namespace_with_chart(
        api_client, "kubedbt-commands", "launcher.createServiceAccount=true"
    ) as namespace:
        secret = client.V1Secret(metadata=client.V1ObjectMeta(name=SECRET), string_data=store.env())
        client.CoreV1Api(api_client).create_namespaced_secret(namespace, secret)
        kubeconfig = tmp_path_factory.mktemp("commands") / "launcher.kubeconfig"
        write_kubeconfig(kubeconfig, api_client, namespace, launcher_token(api_client, namespace))
        yield Cluster(api_client, namespace, kubeconfig, store, warehouse)


def _artifacts(cluster: Cluster) -> dict[str, Any]:
    return {"artifacts_url": cluster.store.url(PREFIX), "artifacts_secret": SECRET}


@dataclass(frozen=True)
class Prod:
    """The schema `dbt build` filled, and the manifest it left in the object store."""

    schema: str
    manifest: bytes


@pytest.fixture(scope="module")
def prod(cluster: Cluster) -> Prod:
    schema = f"prod_{uuid.uuid4().hex[:8]}"
    run = cluster.run("build", schema=schema, **_artifacts(cluster))
    event, _ = _outcome(run)
    assert event["status"] == "success", event
    folder = f"{PREFIX}/{run_folder(run.identity)}/"
    return Prod(schema, gzip.decompress(cluster.store.get(folder + "manifest.json.gz")))


def test_docs_generate_reports_and_uploads_the_catalog(
    cluster: Cluster, prod: Prod, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cluster.run(
        "docs generate", schema=prod.schema, exclude=NOT_ON_POSTGRES, **_artifacts(cluster)
    )
    event, _ = _outcome(run)
    assert (event["status"], event["kind"]) == ("success", "success"), event
    # The operator's return value is the event's summary.
    summary = event["summary"]
    assert summary["command"] == "docs generate"
    assert summary["catalog"]["nodes"] == 8
    assert summary["catalog"]["errors"] == []
    # The ConfigMap keeps the catalog whole, the object store has it too: dbt's loader reads both.
    decoded = results.decode(cluster.stored(run))
    assert (decoded.status, decoded.upload_error) == ("uploaded", None)
    assert decoded.catalog is not None
    assert set(decoded.catalog["nodes"]) == {
        f"{kind}.jaffle_shop.{name}" for kind, names in RELATIONS.items() for name in names
    }
    assert all(t["metadata"]["schema"] == prod.schema for t in decoded.catalog["nodes"].values())
    record = summary["artifacts"]
    assert record["error"] is None, record
    assert "catalog.json.gz" in {o["name"] for o in record["objects"]}
    folder = f"{PREFIX}/{run_folder(run.identity)}/"
    stored = gzip.decompress(cluster.store.get(folder + "catalog.json.gz"))
    assert json.loads(stored) == decoded.catalog
    (tmp_path / "catalog.json").write_bytes(stored)
    assert _dbt_catalog_load(tmp_path / "catalog.json") == [8]
    columns = summary["catalog"]["columns"]
    assert f"Catalog: 8 nodes, 0 sources, {columns} columns" in cluster.results_text(run, capsys)
    assert cluster.described(run)[0] == "success"


def test_a_catalog_error_is_reported_with_the_catalog(
    cluster: Cluster, prod: Prod, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example's DuckDB-only source makes dbt 1.11 exit 1 on PostgreSQL, catalog written.
    run = cluster.run("docs generate", schema=prod.schema)
    event, _ = _outcome(run)
    assert event["status"] == "failed", event
    catalog = event["summary"]["catalog"]
    assert catalog["nodes"] == 8
    (error,) = catalog["errors"]
    assert "Cross-db references not allowed in postgres (system vs warehouse)" in error
    assert event["kind"] == "dbt_error"
    assert event["reason"] == (
        "dbt docs generate could not read every relation's catalog: Runtime Error: ERROR: "
        "Cross-db references not allowed in postgres (system vs warehouse)"
    )
    text = cluster.results_text(run, capsys)
    assert "Catalog errors:" in text
    assert "Cross-db references not allowed" in text
    assert cluster.described(run)[0] == event["kind"]


def test_debug_passes_on_the_images_own_profile(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cluster.run("debug")
    event, _ = _outcome(run)
    assert (event["status"], event["kind"]) == ("success", "success"), event
    summary = event["summary"]
    assert (summary["command"], summary["debug"]) == ("debug", {"passed": True, "failed": []})
    decoded = results.decode(cluster.stored(run))
    assert (decoded.status, decoded.run_results, decoded.log_events) == ("uploaded", None, [])
    assert ": all checks passed" in cluster.results_text(run, capsys)
    assert cluster.described(run)[0] == "success"


def test_debug_connects_to_the_warehouse(cluster: Cluster) -> None:
    run = cluster.run("debug", schema="public")
    event, _ = _outcome(run)
    assert (event["status"], event["summary"]["debug"]["passed"]) == ("success", True), event


def test_debug_against_a_closed_port_says_why(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**cluster.warehouse.env("public"), "POSTGRES_PORT": "1"}  # nothing listens there
    run = cluster.run("debug", target="postgres", env_vars=env)
    event, _ = _outcome(run)
    assert (event["status"], event["kind"], event["retryable"]) == (
        "failed",
        "warehouse_unreachable",
        True,
    ), event
    assert "Connection refused" in event["reason"]
    assert cluster.warehouse.password not in json.dumps(event)
    (failed,) = event["summary"]["debug"]["failed"]
    assert failed.startswith("dbt was unable to connect to the specified database.")
    text = cluster.results_text(run, capsys)
    assert "Failed checks:\n  dbt was unable to connect to the specified database." in text
    assert cluster.warehouse.password not in text
    assert cluster.described(run) == (event["kind"], event["reason"])


def test_debug_with_a_target_the_profile_lacks_names_it(cluster: Cluster) -> None:
    run = cluster.run("debug", target="nope")
    event, _ = _outcome(run)
    assert event["status"] == "failed", event
    (failed,) = event["summary"]["debug"]["failed"]
    assert "The profile 'jaffle_shop' does not have a target named 'nope'" in failed
    assert "does not have a target named 'nope'" in event["reason"]
    assert cluster.described(run) == (event["kind"], event["reason"])


def test_show_reports_the_previewed_rows(cluster: Cluster, prod: Prod) -> None:
    run = cluster.run("show", schema=prod.schema, select="customers")
    event, _ = _outcome(run)
    assert (event["status"], event["kind"]) == ("success", "success"), event
    (preview,) = event["summary"]["previews"]
    assert preview["unique_id"] == "model.jaffle_shop.customers"
    assert (len(preview["rows"]), preview["rows_omitted"]) == (5, 0)  # dbt's default --limit
    in_warehouse = {
        row[0]: row[1:]
        for row in cluster.warehouse.query(
            f"select customer_id, first_name, last_name from {prod.schema}.customers"
        )
    }
    for row in preview["rows"]:
        assert in_warehouse[row["customer_id"]] == (row["first_name"], row["last_name"])
    lines = summary_lines(event["summary"])
    assert "Preview of model.jaffle_shop.customers (5 rows):" in lines


def test_show_previews_an_inline_query(cluster: Cluster, prod: Prod) -> None:
    query = "select order_id, status from {{ ref('orders') }} order by order_id"
    run = cluster.run("show", schema=prod.schema, inline=query, dbt_flags=["--limit", "3"])
    event, _ = _outcome(run)
    assert event["status"] == "success", event
    (preview,) = event["summary"]["previews"]
    expected = cluster.warehouse.query(
        f"select order_id, status from {prod.schema}.orders order by order_id limit 3"
    )
    assert [(r["order_id"], r["status"]) for r in preview["rows"]] == expected
    assert preview["unique_id"] == "sql_operation.jaffle_shop.inline_query"


def test_clone_makes_the_prod_relations_in_its_own_schema(
    cluster: Cluster, prod: Prod, tmp_path: Path
) -> None:
    # The state: the manifest of prod's build, from its artifacts, on a ConfigMap volume.
    name = f"prod-manifest-{uuid.uuid4().hex[:6]}"
    configmap = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name), data={"manifest.json": prod.manifest.decode()}
    )
    client.CoreV1Api(cluster.api).create_namespaced_config_map(cluster.namespace, configmap)
    schema = f"dev_{uuid.uuid4().hex[:8]}"
    run = cluster.run(
        "clone",
        schema=schema,
        state=STATE,
        volumes=[{"name": "prod-state", "configMap": {"name": name}}],
        volume_mounts=[{"name": "prod-state", "mountPath": STATE, "readOnly": True}],
    )
    event, _ = _outcome(run)
    assert (event["status"], event["kind"]) == ("success", "success"), event
    summary = event["summary"]
    assert (summary["command"], summary["counts"]) == ("clone", {"success": 8})
    relations = cluster.warehouse.query(
        "select table_name, table_type from information_schema.tables where table_schema = %s"
        " order by table_name",
        schema,
    )
    # PostgreSQL cannot clone a table: each relation is a view of prod's.
    assert relations == [(name, "VIEW") for name in sorted(sum(RELATIONS.values(), ()))]
    counted = cluster.warehouse.query(
        f"select (select count(*) from {schema}.customers), "
        f"(select count(*) from {prod.schema}.customers)"
    )
    assert counted[0][0] == counted[0][1] > 0
    decoded = results.decode(cluster.stored(run))
    assert decoded.run_results is not None
    (tmp_path / "run_results.json").write_text(json.dumps(decoded.run_results))
    assert load_with_dbt(tmp_path / "run_results.json") == [8]
