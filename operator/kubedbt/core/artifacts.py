"""Artifact storage: where a run's dbt artifacts go in object storage, and how they are laid out.

The pod's emptyDir goes with the pod, and the results ConfigMap holds only what fits in 1 MiB. With
`artifacts_url` set, the sidecar also copies what dbt wrote (manifest.json, run_results.json,
catalog.json, sources.json, compiled and run SQL, dbt.log) to object storage before it exits, under
one folder per try:

    <artifacts_url>/<dag_id>/<task_id>/<run_id>/[map-<i>/]try-<n>/
        manifest.json.gz  run_results.json.gz  ...  dbt.log.gz  target.tar.gz  lineage.json.gz
        kubedbt-artifacts.json      (written last: what was uploaded; its absence means partial)

Each file is gzip-compressed on its way up; the SQL files dbt writes under target/ travel as one
tar.gz, so a project of thousands of models costs a handful of requests, not thousands. Which keys
are used is decided here, purely; the upload itself is kubedbt.io.artifacts.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final, TypedDict
from urllib.parse import quote, urlsplit

from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.naming import RunIdentity

# The schemes obstore reads credentials for from the pod's identity or its environment.
SCHEMES: Final = ("s3", "gs", "az")
INDEX_OBJECT: Final = "kubedbt-artifacts.json"
TARGET_ARCHIVE: Final = "target.tar.gz"
LOG_OBJECT: Final = "dbt.log.gz"
LINEAGE_OBJECT: Final = "lineage.json.gz"
# dbt's JSON artifacts, uploaded one object each (gzip) when dbt wrote them.
JSON_ARTIFACTS: Final = (
    "manifest.json",
    "run_results.json",
    "sources.json",
    "catalog.json",
    "semantic_manifest.json",
    "graph_summary.json",
)
# What stays out of target.tar.gz: dbt's parse caches, large and useful to no reader.
NOT_ARCHIVED: Final = frozenset({"partial_parse.msgpack", "graph.gpickle", *JSON_ARTIFACTS})
# Characters kept as they are in a key segment; anything else would need escaping in URLs and
# consoles, so it is replaced and the segment made unique again with a hash of the original.
_KEY_SAFE = re.compile(r"[^A-Za-z0-9._:+-]")


class StoredObject(TypedDict):
    """One object of a run's artifacts folder."""

    name: str
    bytes: int


class ArtifactsRecord(TypedDict):
    """What the sidecar uploaded, in the run's summary (and so in the task's return value)."""

    url: str
    """The run's folder: <artifacts_url>/<dag_id>/<task_id>/<run_id>/[map-<i>/]try-<n>/."""
    objects: list[StoredObject]
    error: str | None
    """Why the upload stopped short (the run's outcome does not depend on it), or None."""
    seconds: float


def artifacts_url(parameter: str, value: object) -> str:
    """A validated object storage URL, without a trailing slash: s3://bucket[/prefix]."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidSpecError(parameter, "expected an object storage URL like s3://bucket/prefix")
    parts = urlsplit(value.strip())
    if parts.scheme not in SCHEMES:
        raise InvalidSpecError(
            parameter,
            f"unsupported scheme {parts.scheme + '://' if parts.scheme else 'none'}; "
            f"use one of {', '.join(s + '://' for s in SCHEMES)}",
        )
    if "@" in value:
        # Never echo it: what precedes the @ may be a key (whose "/" urlsplit takes for a path).
        raise InvalidSpecError(
            parameter,
            "must not carry credentials; give them to the pod's identity or artifacts_secret",
        )
    if not parts.netloc:
        raise InvalidSpecError(parameter, f"names no bucket: {value!r}")
    if parts.query or parts.fragment:
        raise InvalidSpecError(parameter, "must not have a query or fragment")
    path = "/".join(segment for segment in parts.path.split("/") if segment)
    if any(segment in (".", "..") for segment in path.split("/")):
        raise InvalidSpecError(parameter, "must not contain . or .. segments")
    return f"{parts.scheme}://{parts.netloc}" + (f"/{path}" if path else "")


def key_segment(text: str) -> str:
    """One folder name of a run's key, readable and unique per distinct `text`."""
    safe = _KEY_SAFE.sub("_", text)
    if safe == text and safe not in (".", ".."):
        return safe
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def run_folder(identity: RunIdentity) -> str:
    """The run's folder under artifacts_url: dag, task, run, map index and try."""
    parts = [identity.dag_id, identity.task_id, identity.run_id]
    if identity.map_index >= 0:
        parts.append(f"map-{identity.map_index}")
    parts.append(f"try-{identity.try_number}")
    return "/".join(key_segment(part) for part in parts)


def run_url(base: str, identity: RunIdentity) -> str:
    """The full URL of the run's folder, with a trailing slash."""
    return f"{base.rstrip('/')}/{run_folder(identity)}/"


def object_name(file_name: str) -> str:
    """The object a file of dbt's is stored as (compressed)."""
    return f"{file_name}.gz"


def console_url(url: str) -> str | None:
    """A web page that lists the folder, for the task's link; None when there is no standard one."""
    parts = urlsplit(url)
    prefix = parts.path.lstrip("/")
    if parts.scheme == "s3":
        return (
            f"https://s3.console.aws.amazon.com/s3/buckets/{quote(parts.netloc)}"
            f"?prefix={quote(prefix, safe='')}"
        )
    if parts.scheme == "gs":
        return f"https://console.cloud.google.com/storage/browser/{parts.netloc}/{quote(prefix)}"
    return None
