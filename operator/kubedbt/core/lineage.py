"""What a dbt run read and wrote: the lineage digest the sidecar uploads in the results ConfigMap.

The sidecar streams dbt's manifest.json (hundreds of MB in a large project) once, keeping a small
record per relation, and reduces it with the run's statuses to a digest: the relations dbt built
in this invocation (models, seeds, snapshots; ephemeral models are no relation and are resolved
through to their own parents) and the relations those nodes and the executed tests read. Tests
are not nodes of the digest: they write nothing, and what they read is all lineage needs of them.
The digest is plain JSON, so it travels gzipped next to run_results; kubedbt.core.warehouse names
its relations for OpenLineage and Airflow assets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypedDict

from kubedbt.core.unpacking import UnreadableError, type_error

DIGEST_VERSION: Final = 1
# Resource types that are relations in the warehouse; dbt builds all but sources.
BUILT_TYPES: Final = frozenset({"model", "seed", "snapshot"})
RELATION_TYPES: Final = BUILT_TYPES | {"source"}
# Statuses after which a built relation holds this run's data ("partial success": a microbatch
# model some of whose batches were written).
WRITTEN_STATUSES: Final = frozenset({"success", "partial success"})
# Statuses of nodes that did not run, and so read nothing.
NOT_RUN_STATUSES: Final = frozenset({"skipped", "no-op"})
# Top-level objects of manifest.json to stream entry by entry (json_members' `objects`): the two
# extract reads, and the large ones it skips, so no member is ever held whole.
STREAMED: Final = frozenset(
    {"nodes", "sources", "macros", "docs", "exposures", "metrics", "disabled", "parent_map"}
    | {"child_map", "group_map", "semantic_models", "saved_queries", "unit_tests", "functions"}
)
# dbt commands (run_results' args.which) whose statuses say what was built or read; compile, ls,
# show and run-operation report "success" for nodes they built nothing of.
LINEAGE_COMMANDS: Final = frozenset(
    {"build", "run", "seed", "snapshot", "test", "clone", "retry", "freshness", "source"}
)

# A JSON document as its top-level (key, value) pairs, large members possibly as iterators
# (kubedbt.core.json_stream.json_members).
Members = Iterable[tuple[str, Any]]


class LineageNode(TypedDict):
    """One relation of the digest."""

    type: str
    """model, seed, snapshot or source (a str, not a Literal: the reader checks the value)."""
    database: str | None
    schema: str
    name: str
    """The relation's identifier: a model's alias, a source's identifier."""
    status: str | None
    """dbt's status when this invocation executed it; null for a relation it only read."""
    parents: list[str]
    """unique_ids of the digest's relations this one is built from, through ephemeral models."""


class LineageDigest(TypedDict):
    """What a run read and wrote, as the sidecar uploads it (see the module docstring)."""

    version: int
    adapter_type: str
    project: str | None
    dbt_version: str | None
    invocation_id: str | None
    nodes: dict[str, LineageNode]


@dataclass(frozen=True)
class _Relation:
    type: str
    database: str | None
    schema: str
    name: str
    parents: tuple[str, ...]


def run_statuses(members: Members) -> dict[str, str]:
    """{unique_id: status} of the nodes a run_results.json (or sources.json) says dbt executed.

    Empty for a command that builds and reads nothing (LINEAGE_COMMANDS); sources.json has no
    args and counts. `members` is streamed: "args" follows "results" in the file, so the
    statuses are kept until it is known whether they count.
    """
    statuses: dict[str, str] = {}
    command: Any = None
    for key, value in members:
        if key == "args" and isinstance(value, Mapping):
            command = value.get("which")
        elif key == "results" and value is not None:
            for result in value:
                if isinstance(result, Mapping) and isinstance(result.get("unique_id"), str):
                    statuses[result["unique_id"]] = str(result.get("status"))
    return statuses if command is None or command in LINEAGE_COMMANDS else {}


def extract(members: Members, statuses: Mapping[str, str]) -> LineageDigest:
    """The digest of a run, from manifest.json's members (streamed) and its nodes' statuses.

    `statuses` maps the unique_id of each node dbt executed to its status, from run_results.json
    (or sources.json for `dbt source freshness`), as run_statuses reads them.
    """
    metadata: Mapping[str, Any] = {}
    relations: dict[str, _Relation] = {}
    ephemeral: dict[str, tuple[str, ...]] = {}
    readers: dict[str, tuple[str, ...]] = {}
    for key, value in members:
        if key == "metadata" and isinstance(value, Mapping):
            metadata = value
        elif key in ("nodes", "sources") and value is not None:
            # One record per relation of the project, so parents may come after their children.
            for unique_id, node in _entries(value, key):
                parents = _parents(node)
                kind = node.get("resource_type")
                if kind == "model" and _config(node).get("materialized") == "ephemeral":
                    ephemeral[unique_id] = parents
                elif kind in RELATION_TYPES:
                    relations[unique_id] = _relation(unique_id, node, parents)
                elif unique_id in statuses:
                    readers[unique_id] = parents
    return _digest(metadata, relations, ephemeral, readers, statuses)


def _digest(
    metadata: Mapping[str, Any],
    relations: Mapping[str, _Relation],
    ephemeral: Mapping[str, tuple[str, ...]],
    readers: Mapping[str, tuple[str, ...]],
    statuses: Mapping[str, str],
) -> LineageDigest:
    def resolve(parents: Iterable[str]) -> list[str]:
        """The relations among `parents`, an ephemeral parent replaced by its own parents."""
        found: list[str] = []
        pending, seen = deque(parents), set()
        while pending:  # bounded: each id is expanded once
            parent = pending.popleft()
            if parent in seen:
                continue
            seen.add(parent)
            if parent in ephemeral:
                pending.extend(ephemeral[parent])
            elif parent in relations:
                found.append(parent)
        return found

    status_of: dict[str, str | None] = {}
    read: list[str] = []
    for unique_id, status in statuses.items():
        relation = relations.get(unique_id)
        if relation is not None:
            status_of[unique_id] = status
        if status in NOT_RUN_STATUSES:
            continue  # a node that did not run read nothing
        read.extend(resolve(relation.parents if relation else readers.get(unique_id, ())))
    for unique_id in read:
        status_of.setdefault(unique_id, None)
    nodes: dict[str, LineageNode] = {
        unique_id: {
            "type": relations[unique_id].type,
            "database": relations[unique_id].database,
            "schema": relations[unique_id].schema,
            "name": relations[unique_id].name,
            "status": node_status,
            "parents": [p for p in resolve(relations[unique_id].parents) if p in status_of],
        }
        for unique_id, node_status in status_of.items()
    }
    return {
        "version": DIGEST_VERSION,
        "adapter_type": str(metadata.get("adapter_type") or ""),
        "project": _optional_str(metadata.get("project_name")),
        "dbt_version": _optional_str(metadata.get("dbt_version")),
        "invocation_id": _optional_str(metadata.get("invocation_id")),
        "nodes": nodes,
    }


def _entries(value: Any, key: str) -> Iterable[tuple[str, dict[str, Any]]]:
    pairs = value.items() if isinstance(value, Mapping) else value
    for unique_id, node in pairs:
        if not isinstance(node, dict):
            raise ValueError(
                f"manifest {key}.{unique_id} is a {type(node).__name__}, not an object"
            )
        yield unique_id, node


def _config(node: Mapping[str, Any]) -> Mapping[str, Any]:
    config = node.get("config")
    return config if isinstance(config, Mapping) else {}


def _parents(node: Mapping[str, Any]) -> tuple[str, ...]:
    depends_on = node.get("depends_on")
    parents = depends_on.get("nodes") if isinstance(depends_on, Mapping) else None
    return tuple(p for p in parents if isinstance(p, str)) if isinstance(parents, list) else ()


def _relation(unique_id: str, node: Mapping[str, Any], parents: tuple[str, ...]) -> _Relation:
    kind = str(node["resource_type"])
    # The relation's own name: dbt's alias (models, seeds, snapshots) or identifier (sources),
    # which default to the node's name.
    name = node.get("identifier" if kind == "source" else "alias") or node.get("name")
    schema = node.get("schema")
    if not isinstance(name, str) or not isinstance(schema, str):
        raise ValueError(f"manifest node {unique_id} has no schema or name")
    return _Relation(kind, _optional_str(node.get("database")), schema, name, parents)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_digest(value: Any) -> LineageDigest:
    """A digest read back from a ConfigMap, checked against LineageDigest; UnreadableError if not.

    The pod writes the ConfigMap, so nothing in it is trusted; a sidecar of another kubedbt
    version may also write another digest version, which is refused rather than misread.
    """
    problem = type_error(value, LineageDigest, where="lineage")
    if problem is None and value["version"] != DIGEST_VERSION:
        problem = f"lineage digest version {value['version']} is not {DIGEST_VERSION}"
    for unique_id, node in (value["nodes"] if problem is None else {}).items():
        if node["type"] not in RELATION_TYPES:
            problem = f"lineage.nodes.{unique_id}.type is not one of {sorted(RELATION_TYPES)}"
    if problem is not None:
        raise UnreadableError(problem)
    digest: LineageDigest = value
    return digest


def written(digest: LineageDigest) -> list[str]:
    """unique_ids of the relations this run built with success: its outputs."""
    return [
        unique_id
        for unique_id, node in digest["nodes"].items()
        if node["type"] in BUILT_TYPES and node["status"] in WRITTEN_STATUSES
    ]
