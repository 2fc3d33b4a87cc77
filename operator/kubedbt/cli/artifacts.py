"""`kubectl dbt artifacts RUN [--download DIR]`: what the run copied to object storage.

The run's folder is read from its summary (where the sidecar says it uploaded) or, before the
upload or when it failed, from the Job's own sidecar arguments. Objects are listed and fetched
with this machine's credentials for the store (AWS_*, GOOGLE_*, AZURE_* environment variables or
the cloud's metadata service), as obstore resolves them: kubedbt never holds any.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubedbt.cli.cluster import Cluster
from kubedbt.cli.errors import NOT_FOUND, CliError
from kubedbt.cli.run_info import RunInfo
from kubedbt.cli.table import field
from kubedbt.core.artifacts import ArtifactsRecord
from kubedbt.core.naming import SIDECAR_CONTAINER
from kubedbt.core.results import decode
from kubedbt.io.artifacts import download_run, list_run, redact

ARTIFACTS_FLAG = "--artifacts-url"


def folder_from_job(job: Mapping[str, Any]) -> str | None:
    """The run's folder as the Job tells its sidecar, or None when artifacts_url was not set."""
    pod_spec = (((job.get("spec") or {}).get("template") or {}).get("spec")) or {}
    for container in pod_spec.get("initContainers") or []:
        if container.get("name") != SIDECAR_CONTAINER:
            continue
        args = [str(a) for a in container.get("args") or []]
        if ARTIFACTS_FLAG in args[:-1]:
            return args[args.index(ARTIFACTS_FLAG) + 1]
    return None


def record_lines(record: ArtifactsRecord | None) -> list[str]:
    """What the sidecar said of its upload."""
    if record is None:
        return [field("Upload", "not reported yet (dbt running, or the results not uploaded)")]
    stored = f"{len(record['objects'])} objects in {record['seconds']:.1f}s"
    lines = [field("Upload", stored)]
    if record["error"]:
        lines.append(field("Upload error", record["error"]))
    return lines


async def show_artifacts(cluster: Cluster, wanted: str, *, download: Path | None) -> int:
    """List the run's artifacts, or download them into a directory dbt can use as --state."""
    job = await cluster.find_run(wanted)
    run = RunInfo.from_job(job)
    configmap = await cluster.configmap(run.results_configmap)
    summary = decode(configmap, artifacts=False).summary if configmap else None
    record = summary.get("artifacts") if summary else None
    url = record["url"] if record else folder_from_job(job)
    if url is None:
        raise CliError(
            f"run {run.name} stored no artifacts: it ran without artifacts_url "
            "(see the README, Artifacts)"
        )
    print(field("Run", f"{run.namespace}/{run.name} ({run.status})"))
    print(field("Artifacts", url))
    for line in record_lines(record):
        print(line)
    try:
        if download is not None:
            written = await download_run(url, download)
            print(f"downloaded {len(written)} files into {download}")
            return 0 if written else NOT_FOUND
        objects = await list_run(url)
    except Exception as e:  # obstore's errors: say which store refused, without credentials
        raise CliError(f"could not read {url}: {redact(str(e)).splitlines()[0]}") from e
    for item in objects:
        print(f"  {item['bytes']:>12,}  {item['name']}")
    if not objects:
        print("  (empty: nothing uploaded yet, or the upload failed before its first object)")
    return 0 if objects else NOT_FOUND
