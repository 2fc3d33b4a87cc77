"""The results uploader that runs as the pod's native sidecar.

It starts before dbt and does nothing until the kubelet sends it SIGTERM, which for a native sidecar
happens once the dbt container has exited (or when the pod is deleted). Then, inside the pod's
termination grace period, it reads run_results.json (or the sources.json of `dbt source
freshness`; with the catalog.json of `dbt docs generate`) and dbt's JSON log from the shared
emptyDir, packs them under the ConfigMap size limit and patches the ConfigMap the operator created.
`dbt debug` writes no artifact: its summary comes from the log (kubedbt.core.command_output), as do
the rows `dbt show` previewed. It streams the files, result by result, because
its memory limit is small and a large project's run_results is tens of MB.

With `artifacts_url` set it first copies target/ and dbt.log to object storage
(kubedbt.io.artifacts), within a share of the same grace period, and records where in the summary.
It also extracts from dbt's manifest the lineage digest (kubedbt.core.lineage) that OpenLineage and
Airflow asset events are built from.

While it waits for SIGTERM it follows dbt's JSON log as dbt writes it and patches a tally of it
into the ConfigMap's progress annotation (kubedbt.io.live_progress), at most once every
`progress_interval` seconds and only when it changed. Those patches are best effort
and touch nothing else: the upload status stays `pending` until the final upload, which is made
only after the follower has stopped and carries the final tally itself.

It never changes the pod's outcome: whatever fails, it logs what and exits 0. When the ConfigMap
cannot be patched with results, it still tries to mark it `failed` with the reason, so a reader can
tell "not uploaded yet" from "could not upload".
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import signal
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubedbt.core import lineage, packing, results
from kubedbt.core.artifacts import ArtifactsRecord
from kubedbt.core.command_output import LogReport, log_lines
from kubedbt.core.errors import shorten
from kubedbt.core.interruption import (
    Completion,
    listed_nodes,
    parse_marker,
    rerun_by_retry,
    started_nodes,
)
from kubedbt.core.json_stream import json_members
from kubedbt.core.live import PROGRESS_ANNOTATION, Snapshot
from kubedbt.io.api_errors import describe
from kubedbt.io.artifacts import upload_run
from kubedbt.io.kube import RunClient
from kubedbt.io.retry import DEFAULT_POLICY

log = logging.getLogger("kubedbt.sidecar")

# Seconds kept back from the grace period for the process to exit before SIGKILL.
EXIT_MARGIN = 3.0
REQUEST_TIMEOUT = (5.0, 15.0)
# Seconds of the budget always left for the ConfigMap, which the run's outcome depends on.
CONFIGMAP_RESERVE = 8.0


@dataclass(frozen=True)
class UploadTarget:
    """Where results come from and where they go."""

    namespace: str
    configmap: str
    target_path: Path
    log_file: Path
    # Left by the launcher when the pod was stopped (kubedbt.core.interruption).
    stop_marker: Path | None = None
    selected_file: Path | None = None
    state_run_results: Path | None = None
    # The run's folder in object storage (kubedbt.core.artifacts.run_url), when there is one.
    artifacts_url: str | None = None


def read_and_pack(
    target: UploadTarget, *, limit: int = results.CONFIGMAP_LIMIT
) -> tuple[dict[str, str], dict[str, str], results.UploadStatus]:
    """Pack what dbt wrote: run_results.json, or sources.json for `dbt source freshness`.

    Both are streamed from disk, never read whole: a large project's run_results can be larger
    than the sidecar's memory limit. A catalog.json (`dbt docs generate`) goes beside, within a
    share of the limit; what the log says of debug's checks and show's rows goes in the summary.
    """
    events: list[results.LogEvent] = []
    report = LogReport()
    if target.log_file.exists():
        with target.log_file.open("rb") as stream:
            events, report = results.read_dbt_log(log_lines(stream))
    catalog, reported = _catalog(target, limit)
    reported = dataclasses.replace(
        reported,
        previews=tuple(report.previews),
        previews_omitted=report.previews_omitted,
        log_dropped=tuple(report.dropped()),
    )
    kinds: tuple[results.ArtifactKind, ...] = ("run_results", "sources")
    for kind in kinds:
        path = target.target_path / f"{kind}.json"
        if not path.exists():
            continue
        packed = _pack_artifact(target, kind, events, limit, reported, catalog)
        if packed is None:  # not even the summary fits beside the catalog (a limit far too low)
            reported = dataclasses.replace(reported, catalog_dropped=packing.CATALOG_LEVELS)
            packed = _pack_artifact(target, kind, events, limit, reported, None)
        assert packed is not None  # without a catalog, the summary and the digest always fit
        return packed
    summary = results.log_summary(report)
    if summary is not None:
        return packing.pack_summary(summary, events)
    return packing.pack_members(None, events, limit=limit)


def _pack_artifact(
    target: UploadTarget,
    kind: results.ArtifactKind,
    events: list[results.LogEvent],
    limit: int,
    reported: packing.Reported,
    catalog: bytes | None,
) -> tuple[dict[str, str], dict[str, str], results.UploadStatus] | None:
    """run_results (or sources) packed with the catalog beside; None if the summary does not fit."""
    room = limit - (len(results.CATALOG_KEY) + len(catalog) if catalog else 0)
    completion = _completion(target)  # read afresh each time: it records what it completed
    with (target.target_path / f"{kind}.json").open(encoding="utf-8") as stream:
        members = json_members(stream)
        data, binary, status = packing.pack_members(
            members, events, kind=kind, limit=room, completion=completion, reported=reported
        )
    if catalog is None:
        return data, binary, status
    if results.payload_size(data, binary) > room - results.METADATA_RESERVE:
        return None
    binary[results.CATALOG_KEY] = base64.b64encode(catalog).decode()
    return data, binary, status


def _catalog(target: UploadTarget, limit: int) -> tuple[bytes | None, packing.Reported]:
    """The packed catalog.json, if dbt wrote one, and its summary; at most half the budget."""
    path = target.target_path / "catalog.json"
    if not path.exists():
        return None, packing.Reported()
    ceiling = max(0, min(results.CATALOG_LIMIT, (limit - results.METADATA_RESERVE) // 2))
    with path.open(encoding="utf-8") as stream:
        members = json_members(stream, objects=packing.CATALOG_OBJECTS)
        return packing.pack_catalog(members, ceiling)


def _completion(target: UploadTarget) -> Completion | None:
    """How to complete an interrupted dbt's run_results, when the launcher says it interrupted it.

    The selection comes from `dbt ls` (listed after dbt exited) or, for a `dbt retry`, from the
    state it restored; each file is streamed, one line or one result at a time.
    """
    if target.stop_marker is None or not target.stop_marker.exists():
        return None
    with target.stop_marker.open(encoding="utf-8", errors="replace") as file:
        marker = parse_marker(file.read(4096))
    if marker is None:
        log.warning("%s is not the launcher's marker: results kept as written", target.stop_marker)
        return None
    started: list[str] = []
    if target.log_file.exists():
        with target.log_file.open(encoding="utf-8", errors="replace") as lines:
            started = started_nodes(lines)
    selected: list[str] | None = None
    if target.selected_file is not None and target.selected_file.exists():
        with target.selected_file.open(encoding="utf-8", errors="replace") as lines:
            # An empty list is no evidence that nothing was selected: dbt ran nodes.
            selected = listed_nodes(lines) or None
    elif target.state_run_results is not None and target.state_run_results.exists():
        with target.state_run_results.open(encoding="utf-8") as stream:
            for key, value in json_members(stream):
                if key == "results":
                    selected = rerun_by_retry(results.results_of(value))
    log.info(
        "dbt was interrupted (%s): completing its run_results (%d started, %s selected)",
        marker.signal,
        len(started),
        "unknown" if selected is None else len(selected),
    )
    return Completion(marker, started, selected)


def patch_body(
    data: dict[str, str],
    binary: dict[str, str],
    status: results.UploadStatus,
    error: str | None,
    progress: Snapshot | None = None,
) -> dict[str, Any]:
    """A merge patch that fills the ConfigMap, sets its upload status and the final tally."""
    annotations = {results.UPLOAD_STATUS: status, results.UPLOAD_ERROR: error}
    if progress is not None:
        annotations[PROGRESS_ANNOTATION] = progress.encode()
    return {
        "metadata": {"annotations": annotations},
        "data": data or None,
        "binaryData": binary or None,
    }


def node_statuses(target: UploadTarget) -> dict[str, str]:
    """{unique_id: status} of what dbt ran, streamed from run_results.json (or sources.json)."""
    for name in ("run_results.json", "sources.json"):
        path = target.target_path / name
        if path.exists():
            with path.open(encoding="utf-8") as stream:
                return lineage.run_statuses(json_members(stream))
    return {}


def lineage_digest(target: UploadTarget) -> bytes | None:
    """The gzip of the run's lineage digest, or None without a manifest (or when unreadable)."""
    manifest = target.target_path / "manifest.json"
    if not manifest.exists():
        return None
    try:
        statuses = node_statuses(target)
        with manifest.open(encoding="utf-8") as stream:
            digest = lineage.extract(json_members(stream, objects=lineage.STREAMED), statuses)
    except Exception as e:  # lineage is best effort: a strange manifest must not cost the results
        log.warning("no lineage: could not read the manifest: %s", describe(e))
        return None
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(json.dumps(digest, separators=(",", ":")).encode()) + packer.flush()


def _with_extras(
    data: dict[str, str],
    binary: dict[str, str],
    digest: bytes | None,
    record: ArtifactsRecord | None,
) -> None:
    """Add the lineage digest (when it fits its share) and the artifacts record to the payload."""
    if results.SUMMARY_KEY not in data:
        return
    summary = json.loads(data[results.SUMMARY_KEY])
    summary["artifacts"] = record
    if digest is not None and len(digest) <= results.LINEAGE_LIMIT:
        binary[results.LINEAGE_KEY] = base64.b64encode(digest).decode()
    elif digest is not None:
        summary["dropped"] = [*summary["dropped"], "lineage"]
    data[results.SUMMARY_KEY] = json.dumps(summary)


async def collect(
    target: UploadTarget, *, artifacts_budget: float
) -> tuple[dict[str, str], dict[str, str], results.UploadStatus, str | None]:
    """What the ConfigMap gets, after copying the artifacts to storage (when asked).

    Never raises for what dbt wrote: unreadable files give a `failed` status and the reason.
    """
    record = None
    try:
        digest = lineage_digest(target)
        if target.artifacts_url is not None:
            record = await upload_run(
                target.artifacts_url,
                target_path=target.target_path,
                log_file=target.log_file,
                lineage=digest,
                budget=artifacts_budget,
            )
        # The digest's room comes off the run_results' budget only when it will be kept.
        kept = len(digest) if digest is not None and len(digest) <= results.LINEAGE_LIMIT else 0
        limit = results.CONFIGMAP_LIMIT - kept
        data, binary, status = read_and_pack(target, limit=limit)
        _with_extras(data, binary, digest, record)
        error = None
    except (OSError, ValueError) as e:
        log.exception("could not read dbt's artifacts")
        data, binary, status, error = {}, {}, "failed", describe(e)
    return data, binary, status, error


async def patch(
    client: RunClient,
    target: UploadTarget,
    data: dict[str, str],
    binary: dict[str, str],
    status: results.UploadStatus,
    error: str | None,
    progress: Snapshot | None = None,
) -> results.UploadStatus:
    """Patch the ConfigMap with what `collect` gathered; raises when the API keeps refusing."""
    size = results.payload_size(data, binary)
    log.info("uploading %s (%d bytes) to configmap %s", status, size, target.configmap)
    body = patch_body(data, binary, status, error, progress)
    await client.patch_configmap(target.configmap, target.namespace, body, REQUEST_TIMEOUT)
    return status


async def mark_failed(client: RunClient, target: UploadTarget, reason: str) -> None:
    """Best effort: record on the ConfigMap that the upload failed, and why."""
    body = patch_body({}, {}, "failed", shorten(reason, 500))
    await client.patch_configmap(target.configmap, target.namespace, body, REQUEST_TIMEOUT)


def stop_requested() -> asyncio.Future[signal.Signals]:
    """A future set by the first SIGTERM or SIGINT: the kubelet's word that dbt has exited.

    Called first thing in the event loop, so a stop that comes early is not missed. The pod's
    lifetime bounds the wait: the kubelet always stops its sidecars at the end.
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def stopped(received_signal: signal.Signals) -> None:
        if not received.done():
            received.set_result(received_signal)

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, stopped, stop_signal)
    return received


async def upload_within(
    api_client: Any,
    target: UploadTarget,
    *,
    grace_seconds: float,
    progress: Snapshot | None = None,
) -> None:
    """Upload within the grace period; on failure mark the ConfigMap failed. Never raises.

    progress: the final tally of dbt's log, recorded with the results.
    """
    started = time.monotonic()
    budget = max(1.0, grace_seconds - EXIT_MARGIN)
    try:
        # The ConfigMap decides the run's outcome: artifact storage gets what it can spare, and
        # the patch's retries get what is left of one deadline (reading the manifest included).
        artifacts_budget = max(1.0, min(budget * 0.7, budget - CONFIGMAP_RESERVE))
        data, binary, status, error = await collect(target, artifacts_budget=artifacts_budget)
        left = max(1.0, budget - (time.monotonic() - started))
        client = RunClient(api_client, DEFAULT_POLICY.within(left * 0.8))
        status = await patch(client, target, data, binary, status, error, progress)
        log.info("upload finished: %s in %.1fs", status, time.monotonic() - started)
    except Exception as e:  # the pod's outcome must never depend on the upload
        log.exception("upload failed")
        remaining = budget - (time.monotonic() - started)
        if remaining > 1:
            try:
                client = RunClient(api_client, DEFAULT_POLICY.within(remaining))
                await mark_failed(client, target, describe(e))
            except Exception:
                log.exception("could not mark the configmap as failed either")


def grace_left(target: UploadTarget, grace_seconds: float, now: float) -> float:
    """What is left of the grace period: it began at the launcher's stop signal, if there was one.

    The kubelet stops this sidecar only once dbt has exited, which an interrupted dbt may take
    a while to do; the pod is SIGKILLed grace_seconds after the stop, not after this SIGTERM.
    """
    if target.stop_marker is None or not target.stop_marker.exists():
        return grace_seconds
    with target.stop_marker.open(encoding="utf-8", errors="replace") as file:
        marker = parse_marker(file.read(4096))
    received = marker.received_epoch() if marker is not None else None
    if received is None:
        return grace_seconds
    return max(1.0, grace_seconds - max(0.0, now - received))


def namespace_from_environment() -> str:
    """The pod's namespace: POD_NAMESPACE (downward API) or the service account's namespace file."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
