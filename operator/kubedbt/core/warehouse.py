"""How a warehouse's relations are named: the warehouse_uri, OpenLineage datasets, Airflow assets.

Both names come purely from a run's lineage digest (kubedbt.core.lineage) and the `warehouse_uri`
the DAG author gives, since the pod's profile, which holds the warehouse's address, is not
readable by kubedbt: OpenLineage datasets follow the OpenLineage naming spec
(https://openlineage.io/docs/spec/naming), Airflow Asset URIs the URI formats of Airflow's
providers (each provider's `assets/<scheme>.py` sanitize_uri). A name is only given when it is
right: without an address, or with one for another adapter, there is none, with a reason to log,
rather than a guessed namespace that would join unrelated tables of different warehouses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.lineage import LineageDigest, LineageNode, written


@dataclass(frozen=True)
class _Adapter:
    """How one dbt adapter's warehouse is addressed in a warehouse_uri and named downstream."""

    adapter_type: str  # dbt's, as the manifest's metadata says it
    address: str  # server (host and port), host (no port), path (a file) or none (BigQuery)
    example: str
    default_port: int | None = None
    asset_scheme: str | None = None  # the Airflow provider's; None without a convention


# Keyed by warehouse_uri scheme: the OpenLineage naming spec's namespace scheme, or for DuckDB (not
# in the spec) the one OpenLineage's dbt integration uses (`duckdb://{path}`). Default ports are
# those the Airflow providers' sanitize_uri fill in.
ADAPTERS: Final[Mapping[str, _Adapter]] = {
    "postgres": _Adapter("postgres", "server", "postgres://host:5432", 5432, "postgres"),
    "redshift": _Adapter("redshift", "server", "redshift://cluster.region:5439", 5439, "redshift"),
    "snowflake": _Adapter("snowflake", "host", "snowflake://org-account", None, "snowflake"),
    "bigquery": _Adapter("bigquery", "none", "bigquery", None, "bigquery"),
    "trino": _Adapter("trino", "server", "trino://host:8080", 8080, "trino"),
    "mssql": _Adapter("sqlserver", "server", "mssql://host:1433", 1433, "mssql"),
    "duckdb": _Adapter("duckdb", "path", "duckdb:///path/to/file.duckdb", None, "duckdb"),
    "awsathena": _Adapter("athena", "host", "awsathena://athena.us-east-1.amazonaws.com"),
}
_SCHEME_ALIASES: Final = {"postgresql": "postgres"}
_ATHENA_HOST = re.compile(r"^athena\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_HOST = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$|^\[[0-9a-f:.]+\]$")


@dataclass(frozen=True)
class Warehouse:
    """A valid warehouse_uri: the adapter it is for and how its relations are named."""

    namespace: str
    """The OpenLineage namespace of its relations, which is also the warehouse_uri normalised:
    lower-case scheme and host, the default port filled in."""
    adapter: _Adapter
    asset_base: str | None
    """What an Airflow Asset URI holds before `database/schema/table`; None without a convention."""


def warehouse(value: object, *, parameter: str = "warehouse_uri") -> Warehouse:
    """Parse a warehouse_uri, raising InvalidSpecError naming `parameter` when it is not valid.

    Messages never echo the value: a URI with credentials in it is the mistake refused first.
    """
    if not isinstance(value, str) or not value:
        raise InvalidSpecError(parameter, "expected a string such as postgres://host:5432")
    if value.lower() in ("bigquery", "bigquery://"):
        return Warehouse("bigquery", ADAPTERS["bigquery"], "bigquery://")
    if any(c.isspace() or not c.isprintable() for c in value) or "://" not in value:
        raise InvalidSpecError(parameter, "must be a URI such as postgres://host:5432, no spaces")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        # urllib's message quotes the part it could not read, which may be a password.
        raise InvalidSpecError(parameter, "is not a valid URI (host or port)") from None
    scheme = _SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    adapter = ADAPTERS.get(scheme)
    if adapter is None:
        supported = ", ".join(a.example for a in ADAPTERS.values())
        raise InvalidSpecError(parameter, f"scheme {parts.scheme!r} is not supported: {supported}")
    if adapter.address == "none":
        raise InvalidSpecError(parameter, "BigQuery's is always 'bigquery' (or leave it unset)")
    if "@" in value:
        raise InvalidSpecError(
            parameter,
            "must not hold credentials (user or password): give only the warehouse's address, "
            f"for example {adapter.example}; dbt's profile keeps the credentials",
        )
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise InvalidSpecError(parameter, f"must have no query or fragment: {adapter.example}")
    if adapter.address == "path":
        path = parts.path.rstrip("/")
        if parts.netloc or not path.startswith("/"):
            raise InvalidSpecError(
                parameter, f"must be the file's absolute path: {adapter.example}"
            )
        return Warehouse(f"{scheme}://{path}", adapter, f"{scheme}://{path}/")
    authority = _authority(parameter, scheme, adapter, parts.hostname, port, parts.path)
    base = f"{adapter.asset_scheme}://{authority}/" if adapter.asset_scheme else None
    return Warehouse(f"{scheme}://{authority}", adapter, base)


def _authority(
    parameter: str, scheme: str, adapter: _Adapter, host: str | None, port: int | None, path: str
) -> str:
    """A server's `host:port` (the default port filled in), or a host that takes no port."""
    host = f"[{host}]" if host and ":" in host else host  # urlsplit drops an IPv6's brackets
    if not host or not _HOST.match(host) or path not in ("", "/"):
        raise InvalidSpecError(
            parameter,
            f"must be the warehouse's address only, such as {adapter.example}: the database, "
            "schema and table of each relation come from dbt",
        )
    if adapter.address == "server":
        if port == 0:
            raise InvalidSpecError(parameter, "port 0 is no port a warehouse listens on")
        parts = host.split(".")
        if scheme == "redshift" and host.endswith(".amazonaws.com") and len(parts) == 6:
            # The spec's {cluster_identifier}.{region_name} from a cluster's endpoint, as the
            # Amazon provider's RedshiftSQLHook names it (cluster.id.region.redshift.amazonaws.com).
            host = f"{parts[0]}.{parts[2]}"
        return f"{host}:{port or adapter.default_port}"
    if port is not None:
        raise InvalidSpecError(parameter, f"takes no port: {adapter.example}")
    if scheme == "awsathena" and not _ATHENA_HOST.match(host):
        raise InvalidSpecError(parameter, f"must be Athena's regional endpoint: {adapter.example}")
    return host


def check_warehouse_uri(parameter: str, value: object) -> str | None:
    """The spec's check: None stays None, anything else must be a valid warehouse_uri."""
    return None if value is None else warehouse(value, parameter=parameter).namespace


@dataclass(frozen=True, order=True)
class DatasetId:
    """An OpenLineage dataset's identity."""

    namespace: str
    name: str


@dataclass(frozen=True)
class DatasetLineage:
    """A run's OpenLineage inputs and outputs; `reason` says why there are none when it is set."""

    inputs: tuple[DatasetId, ...] = ()
    outputs: tuple[DatasetId, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class AssetUris:
    """The Airflow Asset URIs of the relations a run wrote; `reason` says why there are none."""

    uris: tuple[str, ...] = ()
    reason: str | None = None


def _warehouse_for(digest: LineageDigest, uri: str | None) -> tuple[Warehouse | None, str | None]:
    adapter_type = digest["adapter_type"]
    if uri is None:
        if adapter_type == "bigquery":  # BigQuery's namespace is a constant: no address needed
            return warehouse("bigquery"), None
        return None, f"warehouse_uri is not set, so the {adapter_type} relations have no name"
    found = warehouse(uri)
    if found.adapter.adapter_type != adapter_type:
        return None, (
            f"warehouse_uri is a {found.adapter.adapter_type} address but dbt ran the "
            f"{adapter_type} adapter"
        )
    return found, None


def openlineage_datasets(digest: LineageDigest, warehouse_uri: str | None) -> DatasetLineage:
    """Inputs and outputs of a run, named by the OpenLineage naming spec.

    Outputs are the relations built with success (on a failed run, the ones that were); inputs
    are the other relations read, sources and relations built elsewhere. A relation is named
    `{database}.{schema}.{table}` in the warehouse's namespace: the spec's name for Postgres,
    Redshift, Snowflake, BigQuery (project.dataset.table), Trino (catalog.schema.table), MSSQL,
    Athena (catalog.database.table) and, from OpenLineage's dbt integration, DuckDB.
    """
    found, reason = _warehouse_for(digest, warehouse_uri)
    if found is None:
        return DatasetLineage(reason=reason)
    nodes = digest["nodes"]
    outputs = {_dataset(found, nodes[unique_id]) for unique_id in written(digest)}
    # A source may be declared over a table this run builds: that table is an output only.
    inputs = {
        _dataset(found, node)
        for node in nodes.values()
        if node["status"] is None or node["type"] == "source"
    } - outputs
    return DatasetLineage(tuple(sorted(inputs)), tuple(sorted(outputs)))


def _dataset(found: Warehouse, node: LineageNode) -> DatasetId:
    parts = (node["database"], node["schema"], node["name"])
    return DatasetId(found.namespace, ".".join(part for part in parts if part))


def asset_uris(digest: LineageDigest, warehouse_uri: str | None) -> AssetUris:
    """Airflow Asset URIs of the relations a run built with success.

    `{scheme}://{authority}/{database}/{schema}/{table}`, each part percent-encoded: the form
    the Postgres, Redshift, Snowflake, Trino and MSSQL providers' sanitize_uri accept, and
    BigQuery's `bigquery://{project}/{dataset}/{table}`. DuckDB has no provider; its URIs follow
    the same shape after the file's path (`duckdb:///data/w.duckdb/w/main/orders`), as the SQLite
    provider's `sqlite:///{path}/{table}` does (Airflow stores both with the empty authority
    dropped, `duckdb:/data/...`; an Asset declared with the same text matches). Athena has no
    convention: no URIs.
    """
    found, reason = _warehouse_for(digest, warehouse_uri)
    if found is None:
        return AssetUris(reason=reason)
    if found.asset_base is None:
        adapter_type = found.adapter.adapter_type
        return AssetUris(reason=f"Airflow has no Asset URI convention for {adapter_type}")
    uris = []
    for unique_id in written(digest):
        node = digest["nodes"][unique_id]
        parts = (node["database"], node["schema"], node["name"])
        # Every provider's URI needs all three parts; a relation without a database gets none.
        if all(parts):
            uris.append(found.asset_base + "/".join(quote(str(part), safe="") for part in parts))
    return AssetUris(tuple(sorted(set(uris))))
