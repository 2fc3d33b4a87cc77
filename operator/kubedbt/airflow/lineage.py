"""A dbt run's OpenLineage datasets and Airflow asset events, from the digest its sidecar uploaded.

Thin glue: what a run read and wrote is decided in kubedbt.core.lineage, every name in
kubedbt.core.warehouse; here they become the OpenLineage provider's OperatorLineage, which the
operator returns from its get_openlineage_facets_on_complete and _on_failure hooks, and asset
events on the AssetAlias the operator declares as an outlet (the relations a run writes are only
known once it has run, so they cannot be outlets at parse time). The OpenLineage provider is an
optional extra: it is imported only when lineage is asked for, and without it there is none
rather than an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from airflow.sdk import Asset, AssetAlias, Context

from kubedbt.core import warehouse
from kubedbt.core.lineage import LineageDigest
from kubedbt.core.warehouse import DatasetId

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import RunFacet
    from pydantic import JsonValue

log = logging.getLogger(__name__)

# TagsRunFacet's `source`: the spec's own example names dbt as "DBT CORE"; what kubedbt adds
# itself (where the run ran) comes from the integration.
DBT_SOURCE = "DBT CORE"
INTEGRATION_SOURCE = "INTEGRATION"


def operator_lineage(
    digest: LineageDigest | None,
    warehouse_uri: str | None,
    *,
    job_name: str,
    namespace: str,
) -> OperatorLineage[Dataset, RunFacet] | None:
    """The OperatorLineage of a run: its datasets, and a tags run facet naming the dbt invocation.

    `job_name` and `namespace` are the run's Kubernetes Job; `digest` is None when the sidecar
    uploaded none (dbt failed to parse, an older sidecar), which leaves only the Job's tag. None
    when the OpenLineage provider is not installed. Why a run has no datasets is logged.
    """
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
        from openlineage.client.generated import datasource_dataset, tags_run
    except ImportError:
        return None

    def dataset(found: DatasetId) -> Dataset:
        # The spec's datasource facet, as OpenLineage's dbt integration sets it: the namespace,
        # which is also its URI unless it is a bare word (BigQuery's "bigquery").
        uri = found.namespace if "://" in found.namespace else None
        source = datasource_dataset.DatasourceDatasetFacet(name=found.namespace, uri=uri)
        return Dataset(namespace=found.namespace, name=found.name, facets={"dataSource": source})

    tags = [("kubernetes.job", f"{namespace}/{job_name}", INTEGRATION_SOURCE)]
    datasets = warehouse.DatasetLineage(reason="the run uploaded no lineage digest")
    if digest is not None:
        datasets = warehouse.openlineage_datasets(digest, warehouse_uri)
        tags += [
            (key, value, DBT_SOURCE)
            for key, value in _dbt_tags(digest).items()
            if value  # a manifest without it says nothing worth a tag
        ]
    if datasets.reason is not None:
        log.info("no OpenLineage datasets for this run: %s", datasets.reason)
    facet = tags_run.TagsRunFacet(
        tags=[tags_run.TagsRunFacetFields(key=k, value=v, source=s) for k, v, s in tags]
    )
    return OperatorLineage(
        inputs=[dataset(found) for found in datasets.inputs],
        outputs=[dataset(found) for found in datasets.outputs],
        run_facets={"tags": facet},
    )


def _dbt_tags(digest: LineageDigest) -> dict[str, str | None]:
    """What links the Airflow task's run to dbt's: the invocation id is in every dbt artifact."""
    return {
        "dbt.invocation_id": digest["invocation_id"],
        "dbt.version": digest["dbt_version"],
        "dbt.project": digest["project"],
        "dbt.adapter": digest["adapter_type"],
    }


def emit_asset_events(
    context: Context,
    uris: Iterable[str],
    alias_name: str,
    *,
    extra: Mapping[str, str] | None = None,
) -> int:
    """Add an event for each Asset URI to the AssetAlias `alias_name`; returns how many.

    Airflow 3's way to report assets that are not known when the DAG is parsed: the operator
    declares `AssetAlias(alias_name)` among its outlets, and when the task succeeds Airflow
    records an event for each Asset added here (creating the asset if it is new), which DAGs
    scheduled on that Asset (or on the alias) see. `extra` is stored with every event.
    """
    events = context["outlet_events"][AssetAlias(alias_name)]
    count = 0
    for uri in uris:
        payload: dict[str, JsonValue] = dict(extra or {})
        events.add(Asset(uri), extra=payload)
        count += 1
    return count


def emit_run_assets(
    context: Context, digest: LineageDigest | None, warehouse_uri: str | None, alias_name: str
) -> str:
    """Asset events for the relations a run built (warehouse.asset_uris); returns what to log.

    Each event's extra names the dbt invocation, which is in every artifact dbt wrote.
    """
    if digest is None:
        return "no asset events: the run uploaded no lineage digest"
    found = warehouse.asset_uris(digest, warehouse_uri)
    if found.reason is not None:
        return f"no asset events: {found.reason}"
    invocation = digest["invocation_id"]
    extra = {"dbt_invocation_id": invocation} if invocation else {}
    count = emit_asset_events(context, found.uris, alias_name, extra=extra)
    return f"{count} asset events on alias {alias_name!r}"
