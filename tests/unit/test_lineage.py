"""The lineage digest from what dbt really wrote, its names, and the events built from it.

The example project's `dbt build` runs (tests/unit/conftest.py) have no ephemeral model and read
no source, so one more project, the example plus ephemeral models over a source and a model,
is built here, and then one model of it alone, as a DAG selecting a part of a project does.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors
from jsonschema import ValidationError
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.generated import error_message_run, job_type_job, processing_engine_run
from openlineage.client.serde import Serde

from kubedbt.airflow.lineage import emit_asset_events, emit_run_assets, operator_lineage
from kubedbt.core import lineage, warehouse
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.json_stream import json_members
from kubedbt.core.lineage import LineageDigest
from kubedbt.core.unpacking import UnreadableError
from kubedbt.core.warehouse import DatasetId
from tests.openlineage_spec import validate_event
from tests.unit.dbt_runs import DbtRun, copy_example, invoke

P = "jaffle_shop"
SEEDS = [f"seed.{P}.raw_{name}" for name in ("customers", "orders", "payments")]
STAGING = [f"model.{P}.stg_{name}" for name in ("customers", "orders", "payments")]
MARTS = [f"model.{P}.customers", f"model.{P}.orders"]
SOURCE = f"source.{P}.loader.schemata"
REPORT = f"model.{P}.schema_report"
DUCKDB = "duckdb:///data/jaffle.duckdb"

# Ephemeral models: one over a source, a chain of two over a model, and a table reading both.
EXTRA_MODELS = {
    "staging/int_schemata.sql": "{{ config(materialized='ephemeral') }}\n"
    "select schema_name from {{ source('loader', 'schemata') }}",
    "marts/int_payment_totals.sql": "{{ config(materialized='ephemeral') }}\n"
    "select order_id, sum(amount) as total from {{ ref('stg_payments') }} group by order_id",
    "marts/int_paid_orders.sql": "{{ config(materialized='ephemeral') }}\n"
    "select order_id from {{ ref('int_payment_totals') }} where total > 0",
    "marts/schema_report.sql": "{{ config(materialized='table', alias='schema_report_v1') }}\n"
    "select (select count(*) from {{ ref('int_schemata') }}) as schemas, count(*) as paid\n"
    "from {{ ref('int_paid_orders') }}",
}


@dataclass(frozen=True)
class Artifacts:
    """What one real dbt invocation wrote, read as the sidecar reads it."""

    run: DbtRun
    statuses: dict[str, str]
    digest: LineageDigest


def _artifacts(run: DbtRun) -> Artifacts:
    assert run.exit_code in (0, 1), run.stdout[-3000:]
    with (run.target_path / "run_results.json").open() as stream:
        statuses = lineage.run_statuses(json_members(stream))
    with (run.target_path / "manifest.json").open() as stream:
        digest = lineage.extract(json_members(stream, objects=lineage.STREAMED), statuses)
    return Artifacts(run, statuses, digest)


@pytest.fixture(scope="module")
def built(dbt_runs: dict[str, DbtRun]) -> dict[str, Artifacts]:
    return {name: _artifacts(dbt_runs[name]) for name in ("success", "fail_model", "fail_test")}


@pytest.fixture(scope="module")
def ephemeral(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artifacts]:
    """The example plus EXTRA_MODELS, built, then its report rebuilt alone on the same warehouse."""
    base = tmp_path_factory.mktemp("dbt-lineage")
    project = copy_example(base)
    for path, sql in EXTRA_MODELS.items():
        (project / "models" / path).write_text(sql + "\n")
    # Both write to base/target: each is read before the next runs.
    built = {"build": _artifacts(invoke(project, base, "build"))}
    built["run_report"] = _artifacts(invoke(project, base, "run", "--select", "schema_report"))
    return built


# --- the digest -----------------------------------------------------------------------------------


def test_a_build_keeps_every_relation_with_its_status_and_parents(
    built: dict[str, Artifacts],
) -> None:
    digest = built["success"].digest
    run_results = json.loads((built["success"].run.target_path / "run_results.json").read_text())
    assert digest["version"] == lineage.DIGEST_VERSION
    assert digest["adapter_type"] == "duckdb"
    assert digest["project"] == P
    assert digest["dbt_version"] == run_results["metadata"]["dbt_version"]
    assert digest["invocation_id"] == run_results["metadata"]["invocation_id"]
    # Tests ran too (the statuses hold them) but are no nodes: they write nothing.
    assert any(unique_id.startswith("test.") for unique_id in built["success"].statuses)
    assert sorted(digest["nodes"]) == sorted(SEEDS + STAGING + MARTS)
    assert {node["status"] for node in digest["nodes"].values()} == {"success"}
    assert digest["nodes"][f"model.{P}.stg_orders"] == {
        "type": "model",
        "database": "warehouse",
        "schema": "main",
        "name": "stg_orders",
        "status": "success",
        "parents": [f"seed.{P}.raw_orders"],
    }
    assert sorted(digest["nodes"][f"model.{P}.customers"]["parents"]) == sorted(STAGING)
    assert digest["nodes"][f"seed.{P}.raw_orders"]["type"] == "seed"


def test_a_failed_model_is_kept_with_its_status_and_its_skipped_tests_read_nothing(
    built: dict[str, Artifacts],
) -> None:
    artifacts = built["fail_model"]
    assert artifacts.statuses[f"model.{P}.orders"] == "error"
    assert "skipped" in artifacts.statuses.values()
    nodes = artifacts.digest["nodes"]
    assert nodes[f"model.{P}.orders"]["status"] == "error"
    assert sorted(nodes) == sorted(SEEDS + STAGING + MARTS)
    assert sorted(lineage.written(artifacts.digest)) == sorted(
        SEEDS + STAGING + [f"model.{P}.customers"]
    )


def test_ephemeral_models_are_no_nodes_and_are_resolved_to_their_parents(
    ephemeral: dict[str, Artifacts],
) -> None:
    artifacts = ephemeral["build"]
    # dbt does not execute ephemeral models: they are compiled into the SQL of their children.
    assert not any("int_" in unique_id for unique_id in artifacts.statuses)
    nodes = artifacts.digest["nodes"]
    assert not any("int_" in unique_id for unique_id in nodes)
    assert sorted(nodes[REPORT]["parents"]) == sorted([SOURCE, f"model.{P}.stg_payments"])
    assert nodes[REPORT]["name"] == "schema_report_v1"  # the alias: the relation's name
    assert nodes[SOURCE] == {
        "type": "source",
        "database": "system",
        "schema": "information_schema",
        "name": "schemata",
        "status": None,
        "parents": [],
    }


def test_a_partial_run_keeps_the_relations_it_read_without_a_status(
    ephemeral: dict[str, Artifacts],
) -> None:
    digest = ephemeral["run_report"].digest
    assert ephemeral["run_report"].statuses == {REPORT: "success"}
    assert {unique_id: node["status"] for unique_id, node in digest["nodes"].items()} == {
        REPORT: "success",
        SOURCE: None,
        f"model.{P}.stg_payments": None,
    }
    # Parents of a relation only read are not followed: the run did not read them.
    assert digest["nodes"][f"model.{P}.stg_payments"]["parents"] == []


def test_statuses_of_commands_that_build_nothing_count_for_nothing() -> None:
    results = [{"unique_id": f"model.{P}.orders", "status": "success"}]
    for which, expected in [
        ("build", {f"model.{P}.orders": "success"}),
        ("retry", {f"model.{P}.orders": "success"}),
        ("compile", {}),
        ("run-operation", {}),
    ]:
        members = [("results", iter(results)), ("args", {"which": which})]
        assert lineage.run_statuses(members) == expected, which
    # sources.json (dbt source freshness) has no args.
    assert lineage.run_statuses([("results", iter(results))]) == {f"model.{P}.orders": "success"}


def test_the_digest_is_small_and_reads_back(built: dict[str, Artifacts]) -> None:
    digest = built["success"].digest
    text = json.dumps(digest, separators=(",", ":"))
    manifest = (built["success"].run.target_path / "manifest.json").stat().st_size
    assert len(gzip.compress(text.encode())) < 1000 < manifest / 100
    assert lineage.parse_digest(json.loads(text)) == digest


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.pop("nodes"), "lineage.nodes is missing"),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d["nodes"][SEEDS[0]].update(type="test"), "type is not one of"),
        (lambda d: d["nodes"][SEEDS[0]].update(parents="x"), "parents is a string"),
    ],
)
def test_a_digest_that_is_not_one_is_refused(
    built: dict[str, Artifacts], change: Any, problem: str
) -> None:
    digest = json.loads(json.dumps(built["success"].digest))
    change(digest)
    with pytest.raises(UnreadableError, match=problem):
        lineage.parse_digest(digest)


class _Counting(io.StringIO):
    """A text stream that remembers how much has been read of it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.read_so_far = 0

    def read(self, size: int | None = -1) -> str:
        text = super().read(size)
        self.read_so_far += len(text)
        return text


def test_the_manifest_is_read_one_node_at_a_time(built: dict[str, Artifacts]) -> None:
    text = (built["success"].run.target_path / "manifest.json").read_text()
    stream = _Counting(text)
    for key, value in json_members(stream, read_chars=4096, objects=lineage.STREAMED):
        if key == "nodes":
            assert isinstance(value, Iterator)
            unique_id, node = next(value)
            assert node["unique_id"] == unique_id
            # One node (and a read or two past it) is all that was read of the nodes.
            assert stream.read_so_far < text.index(unique_id) + len(json.dumps(node)) + 3 * 4096
            break
    else:
        pytest.fail("the manifest's nodes were never yielded")


def test_extracting_costs_far_less_memory_than_loading_the_manifest(
    built: dict[str, Artifacts],
) -> None:
    path = built["success"].run.target_path / "manifest.json"
    statuses = built["success"].statuses

    def peak(read: Any) -> int:
        tracemalloc.start()
        try:
            with path.open() as stream:
                read(stream)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(lambda s: lineage.extract(json_members(s, objects=lineage.STREAMED), statuses))
    loaded = peak(json.load)
    assert streamed * 3 < loaded, (streamed, loaded)


# --- names ----------------------------------------------------------------------------------------


def _as(digest: LineageDigest, adapter_type: str) -> LineageDigest:
    """The same relations as if a warehouse of another adapter held them."""
    return {**digest, "adapter_type": adapter_type}


@pytest.mark.parametrize(
    ("adapter_type", "warehouse_uri", "namespace", "asset_base"),
    [
        ("postgres", "postgres://warehouse.data:5432", "postgres://warehouse.data:5432", None),
        ("postgres", "postgresql://Warehouse.Data", "postgres://warehouse.data:5432", None),
        (
            "redshift",
            "redshift://cluster.eu-west-1:5439",
            "redshift://cluster.eu-west-1:5439",
            None,
        ),
        ("snowflake", "snowflake://myorg-myaccount", "snowflake://myorg-myaccount", None),
        ("trino", "trino://trino.svc:8443", "trino://trino.svc:8443", None),
        ("sqlserver", "mssql://sql.svc", "mssql://sql.svc:1433", None),
        ("duckdb", DUCKDB, DUCKDB, None),
        ("bigquery", "bigquery", "bigquery", "bigquery://"),
        ("bigquery", None, "bigquery", "bigquery://"),
    ],
)
def test_datasets_and_assets_follow_each_adapters_convention(
    built: dict[str, Artifacts],
    adapter_type: str,
    warehouse_uri: str | None,
    namespace: str,
    asset_base: str | None,
) -> None:
    digest = _as(built["fail_model"].digest, adapter_type)
    datasets = warehouse.openlineage_datasets(digest, warehouse_uri)
    assert datasets.reason is None
    assert datasets.inputs == ()  # the build made every relation it read
    assert DatasetId(namespace, "warehouse.main.customers") in datasets.outputs
    assert DatasetId(namespace, "warehouse.main.orders") not in datasets.outputs  # it failed
    assert len(datasets.outputs) == 7
    uris = warehouse.asset_uris(digest, warehouse_uri)
    assert uris.reason is None
    base = asset_base or namespace + "/"
    assert f"{base}warehouse/main/customers" in uris.uris
    assert len(uris.uris) == 7
    # What every provider's sanitize_uri checks: an authority, then database/schema/table.
    for uri in uris.uris:
        assert uri.removeprefix(base).count("/") == 2


def test_inputs_are_the_relations_read_and_not_built(ephemeral: dict[str, Artifacts]) -> None:
    build = warehouse.openlineage_datasets(ephemeral["build"].digest, DUCKDB)
    assert build.inputs == (DatasetId(DUCKDB, "system.information_schema.schemata"),)
    assert DatasetId(DUCKDB, "warehouse.main.schema_report_v1") in build.outputs
    alone = warehouse.openlineage_datasets(ephemeral["run_report"].digest, DUCKDB)
    assert alone.inputs == (
        DatasetId(DUCKDB, "system.information_schema.schemata"),
        DatasetId(DUCKDB, "warehouse.main.stg_payments"),
    )
    assert alone.outputs == (DatasetId(DUCKDB, "warehouse.main.schema_report_v1"),)
    assert warehouse.asset_uris(ephemeral["run_report"].digest, DUCKDB).uris == (
        f"{DUCKDB}/warehouse/main/schema_report_v1",
    )


def test_without_a_right_address_there_are_no_names_but_a_reason(
    built: dict[str, Artifacts],
) -> None:
    digest = built["success"].digest
    for warehouse_uri, reason in [
        (None, "warehouse_uri is not set"),
        ("postgres://warehouse.data", "a postgres address but dbt ran the duckdb adapter"),
    ]:
        datasets = warehouse.openlineage_datasets(digest, warehouse_uri)
        assert (datasets.inputs, datasets.outputs) == ((), ())
        assert datasets.reason is not None
        assert reason in datasets.reason
        uris = warehouse.asset_uris(digest, warehouse_uri)
        assert uris.uris == ()
        assert uris.reason == datasets.reason
    athena = warehouse.asset_uris(
        _as(digest, "athena"), "awsathena://athena.eu-west-1.amazonaws.com"
    )
    assert athena.uris == ()
    assert athena.reason == "Airflow has no Asset URI convention for athena"


def test_asset_uris_percent_encode_each_part(built: dict[str, Artifacts]) -> None:
    digest = json.loads(json.dumps(_as(built["success"].digest, "postgres")))
    digest["nodes"][f"model.{P}.orders"]["name"] = "order lines/v2"
    uris = warehouse.asset_uris(digest, "postgres://warehouse.data:5432").uris
    encoded = "postgres://warehouse.data:5432/warehouse/main/order%20lines%2Fv2"
    assert encoded in uris
    assert Asset(encoded).uri == encoded  # Airflow keeps it as it is


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("postgres://admin:hunter2@warehouse.data:5432", "must not hold credentials"),
        ("postgres://admin@warehouse.data", "must not hold credentials"),
        ("mysql://warehouse.data:3306", "scheme 'mysql' is not supported"),
        ("warehouse.data:5432", "must be a URI"),
        ("postgres://warehouse.data:5432/analytics", "the database, schema and table"),
        ("postgres://warehouse.data:5432?password=hunter2", "no query or fragment"),
        ("postgres://warehouse.data:0", "port 0"),
        ("postgres://warehouse.data:99999", "not a valid URI"),
        ("postgres://", "address only"),
        ("postgres://ware house", "no spaces"),
        (" bigquery", "no spaces"),
        ("snowflake://myorg-myaccount:443", "takes no port"),
        ("awsathena://athena.example.com", "Athena's regional endpoint"),
        ("bigquery://my-project", "always 'bigquery'"),
        ("duckdb://data/jaffle.duckdb", "absolute path"),
        ("duckdb:///", "absolute path"),
        ("", "expected a string"),
        (5432, "expected a string"),
    ],
)
def test_a_bad_warehouse_uri_is_refused_naming_the_parameter(value: object, problem: str) -> None:
    with pytest.raises(InvalidSpecError, match=problem) as raised:
        warehouse.check_warehouse_uri("warehouse_uri", value)
    assert raised.value.parameter == "warehouse_uri"
    assert "hunter2" not in str(raised.value)
    assert "admin" not in str(raised.value)


def test_a_valid_warehouse_uri_is_normalised() -> None:
    check = warehouse.check_warehouse_uri
    assert check("warehouse_uri", None) is None
    assert (
        check("warehouse_uri", "POSTGRESQL://Warehouse.Data/") == "postgres://warehouse.data:5432"
    )
    assert check("warehouse_uri", "trino://[::1]") == "trino://[::1]:8080"
    assert check("warehouse_uri", "duckdb:///data/jaffle.duckdb/") == DUCKDB
    assert check("warehouse_uri", "BigQuery") == "bigquery"
    endpoint = "redshift://examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com"
    assert check("warehouse_uri", endpoint) == "redshift://examplecluster.us-west-2:5439"


# --- Airflow: OpenLineage and assets --------------------------------------------------------------


def _event(lineage_: Any, state: RunState) -> dict[str, Any]:
    """A task's RunEvent as the OpenLineage provider's adapter builds it around OperatorLineage."""
    run_facets = {
        **lineage_.run_facets,
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version="3.3.2", name="Airflow", openlineageAdapterVersion="2.20.3"
        ),
    }
    if state == RunState.FAIL:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message="dbt build failed", programmingLanguage="python"
        )
    job_type = job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="AIRFLOW", jobType="TASK"
    )
    event = RunEvent(
        eventType=state,
        eventTime="2026-11-23T21:35:10.314343+00:00",
        run=Run(runId=str(uuid.uuid4()), facets=run_facets),
        job=Job(namespace="default", name="daily.dbt_build", facets={"jobType": job_type}),
        inputs=lineage_.inputs,
        outputs=lineage_.outputs,
        producer="https://github.com/apache/airflow/tree/providers-openlineage/2.20.3",
    )
    document: dict[str, Any] = Serde.to_dict(event)
    return document


@pytest.mark.parametrize(("run", "state"), [("build", RunState.COMPLETE), ("build", RunState.FAIL)])
def test_operator_lineage_makes_events_the_spec_accepts(
    ephemeral: dict[str, Artifacts], run: str, state: RunState
) -> None:
    digest = ephemeral[run].digest
    found = operator_lineage(digest, DUCKDB, job_name="kubedbt-abc", namespace="analytics")
    assert found is not None
    event = _event(found, state)
    validate_event(event)
    outputs = {(d["namespace"], d["name"]) for d in event["outputs"]}
    assert (DUCKDB, "warehouse.main.schema_report_v1") in outputs
    assert event["inputs"][0]["facets"]["dataSource"]["uri"] == DUCKDB
    tags = {tag["key"]: tag["value"] for tag in event["run"]["facets"]["tags"]["tags"]}
    assert tags["kubernetes.job"] == "analytics/kubedbt-abc"
    assert tags["dbt.invocation_id"] == digest["invocation_id"]
    assert tags["dbt.adapter"] == "duckdb"


def test_operator_lineage_without_a_digest_or_names_still_tags_the_job(
    built: dict[str, Artifacts], caplog: pytest.LogCaptureFixture
) -> None:
    for digest in (None, built["success"].digest):
        found = operator_lineage(digest, None, job_name="kubedbt-abc", namespace="analytics")
        assert found is not None
        assert (found.inputs, found.outputs) == ([], [])
        validate_event(_event(found, RunState.COMPLETE))
    assert "warehouse_uri is not set" in caplog.text
    bigquery = operator_lineage(
        _as(built["success"].digest, "bigquery"), None, job_name="j", namespace="n"
    )
    assert bigquery is not None
    event = _event(bigquery, RunState.COMPLETE)
    validate_event(event)  # the datasource facet of "bigquery" has no uri: it is not one
    assert "uri" not in event["outputs"][0]["facets"]["dataSource"]


def test_operator_lineage_is_none_without_the_provider(
    built: dict[str, Artifacts], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    found = operator_lineage(built["success"].digest, DUCKDB, job_name="j", namespace="n")
    assert found is None


def _valid_event(ephemeral: dict[str, Artifacts]) -> dict[str, Any]:
    found = operator_lineage(ephemeral["build"].digest, DUCKDB, job_name="j", namespace="n")
    return _event(found, RunState.COMPLETE)


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda e: e["run"].update(runId="not-a-uuid"), "is not a 'uuid'"),
        (lambda e: e.update(eventTime="yesterday"), "is not a 'date-time'"),
        (lambda e: e["outputs"][0].pop("name"), "'name' is a required property"),
        (lambda e: e["run"]["facets"]["tags"].update(tags="x"), "is not of type 'array'"),
        (lambda e: e["run"]["facets"]["tags"].pop("_producer"), "'_producer' is a required"),
        (
            lambda e: e["run"]["facets"].update(other=e["run"]["facets"]["tags"]),
            "defines facets \\['tags'\\], not 'other'",
        ),
        (
            lambda e: e["run"]["facets"]["tags"].update(
                _schemaURL="https://openlineage.io/spec/facets/9-9-9/TagsRunFacet.json"
            ),
            "no vendored schema",
        ),
        (lambda e: e["inputs"][0]["facets"]["dataSource"].update(uri="not a uri"), "'uri'"),
    ],
)
def test_the_spec_check_fails_a_bad_event(
    ephemeral: dict[str, Artifacts], spoil: Any, problem: str
) -> None:
    event = _valid_event(ephemeral)
    validate_event(event)
    spoil(event)
    with pytest.raises(ValidationError, match=problem):
        validate_event(event)


def test_asset_events_go_to_the_alias(ephemeral: dict[str, Artifacts]) -> None:
    uris = warehouse.asset_uris(ephemeral["build"].digest, DUCKDB).uris
    outlet_events = OutletEventAccessors()
    context: Any = {"outlet_events": outlet_events}
    extra = {"dbt_invocation_id": "abc"}
    assert emit_asset_events(context, uris, "kubedbt/daily/dbt_build", extra=extra) == len(uris)
    events = outlet_events[AssetAlias("kubedbt/daily/dbt_build")].asset_alias_events
    assert [event.dest_asset_key.name for event in events] == list(uris)
    assert {event.source_alias_name for event in events} == {"kubedbt/daily/dbt_build"}
    assert all(event.extra == extra for event in events)
    assert len(uris) == 9  # 3 seeds, 5 models and the report


def test_a_runs_assets_are_emitted_or_the_reason_is_told(ephemeral: dict[str, Artifacts]) -> None:
    digest = ephemeral["run_report"].digest
    outlet_events = OutletEventAccessors()
    context: Any = {"outlet_events": outlet_events}
    assert emit_run_assets(context, digest, DUCKDB, "a") == "1 asset events on alias 'a'"
    (event,) = outlet_events[AssetAlias("a")].asset_alias_events
    assert event.dest_asset_key.name == f"{DUCKDB}/warehouse/main/schema_report_v1"
    assert event.extra == {"dbt_invocation_id": digest["invocation_id"]}
    assert emit_run_assets(context, digest, None, "b") == (
        "no asset events: warehouse_uri is not set, so the duckdb relations have no name"
    )
    assert "no lineage digest" in emit_run_assets(context, None, DUCKDB, "b")
    assert outlet_events[AssetAlias("b")].asset_alias_events == []
