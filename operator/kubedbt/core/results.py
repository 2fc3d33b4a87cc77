"""What a run's results ConfigMap holds, how it is packed under the size limit, and how it is read.

The sidecar packs three things into the ConfigMap the operator created:
- `run_results.json.gz` (binaryData): dbt's run_results.json, gzip-compressed;
- `summary.json` (data): counts by status, failed nodes with messages, the slowest nodes, ids;
- `log_digest.json` (data): the error-level events of dbt's JSON log (code, name, message, node),
  which is the classifier's evidence even when dbt wrote no run_results (exit code 2).
and marks it with the annotation `kubedbt.io/upload-status`: `pending` (created, nothing uploaded
yet), `uploaded` (results present), `no-results` (dbt wrote none; the digest says why) or `failed`
(the sidecar could not read what dbt wrote; `kubedbt.io/upload-error` says why).

A ConfigMap holds at most 1 MiB. When the compressed run_results do not fit, the packer gives up
detail in a fixed order and records each step in the summary's `dropped` list: first
`compiled_code`, then long messages are shortened, then timings and adapter responses go, and
last the results of successful nodes (their counts stay in the summary; errored, failed and skipped
nodes stay, so `dbt retry` on the next try still knows what to rerun).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypedDict

from kubedbt.core.errors import shorten

CONFIGMAP_LIMIT: Final = 1024 * 1024
# Room kept for metadata (labels, annotations, managed fields) inside the object size limit.
METADATA_RESERVE: Final = 64 * 1024
RUN_RESULTS_KEY: Final = "run_results.json.gz"
SUMMARY_KEY: Final = "summary.json"
LOG_DIGEST_KEY: Final = "log_digest.json"
UPLOAD_STATUS: Final = "kubedbt.io/upload-status"
UPLOAD_ERROR: Final = "kubedbt.io/upload-error"

UploadStatus = Literal["pending", "uploaded", "no-results", "failed"]
UPLOAD_STATUSES: Final[tuple[UploadStatus, ...]] = ("pending", "uploaded", "no-results", "failed")
FAILED_STATUSES: Final = frozenset({"error", "fail", "runtime error"})
SUCCESSFUL_STATUSES: Final = frozenset({"success", "pass", "warn"})

MAX_FAILURES: Final = 50
MAX_SLOWEST: Final = 5
MAX_EVENTS: Final = 50
MESSAGE_CHARS: Final = 1000
SHORT_MESSAGE_CHARS: Final = 200


class NodeFailure(TypedDict):
    """A node that errored or failed, as a person needs to see it."""

    unique_id: str
    status: str
    message: str
    failures: int | None


class NodeTiming(TypedDict):
    """A node and how long it ran."""

    unique_id: str
    execution_time: float


class Summary(TypedDict):
    """The small, always-present account of a run."""

    invocation_id: str | None
    dbt_version: str | None
    generated_at: str | None
    elapsed_time: float | None
    command: str | None
    nodes: int
    counts: dict[str, int]
    failures: list[NodeFailure]
    failures_omitted: int
    slowest: list[NodeTiming]
    dropped: list[str]


class LogEvent(TypedDict):
    """One error-level event of dbt's JSON log."""

    code: str
    name: str
    message: str
    node: str | None


@dataclass(frozen=True)
class RunResults:
    """A results ConfigMap, decoded."""

    status: UploadStatus
    summary: Summary | None = None
    run_results: dict[str, Any] | None = None
    log_events: list[LogEvent] = field(default_factory=list)
    upload_error: str | None = None


def summarize(run_results: Mapping[str, Any]) -> Summary:
    """The summary of a run_results.json document."""
    results: list[Mapping[str, Any]] = list(run_results.get("results") or [])
    metadata = run_results.get("metadata") or {}
    args = run_results.get("args") or {}
    failed = [r for r in results if r.get("status") in FAILED_STATUSES]
    timed = sorted(results, key=lambda r: r.get("execution_time") or 0.0, reverse=True)
    return {
        "invocation_id": metadata.get("invocation_id"),
        "dbt_version": metadata.get("dbt_version"),
        "generated_at": metadata.get("generated_at"),
        "elapsed_time": run_results.get("elapsed_time"),
        "command": args.get("which"),
        "nodes": len(results),
        "counts": dict(sorted(Counter(str(r.get("status")) for r in results).items())),
        "failures": [
            {
                "unique_id": str(r.get("unique_id")),
                "status": str(r.get("status")),
                "message": shorten(str(r.get("message") or ""), MESSAGE_CHARS),
                "failures": r.get("failures"),
            }
            for r in failed[:MAX_FAILURES]
        ],
        "failures_omitted": max(0, len(failed) - MAX_FAILURES),
        "slowest": [
            {
                "unique_id": str(r.get("unique_id")),
                "execution_time": float(r.get("execution_time") or 0),
            }
            for r in timed[:MAX_SLOWEST]
        ],
        "dropped": [],
    }


def digest_log(lines: Iterable[str]) -> list[LogEvent]:
    """The error-level events of dbt's JSON log; lines that are not JSON events are skipped."""
    events: list[LogEvent] = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        info = event.get("info") if isinstance(event, dict) else None
        if not isinstance(info, dict) or info.get("level") != "error":
            continue
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        node_info = data.get("node_info")
        node = node_info.get("unique_id") if isinstance(node_info, dict) else None
        message = str(info.get("msg", ""))
        # MainEncounteredError (exit code 2) carries the underlying exception in data.exc.
        exc = data.get("exc")
        if isinstance(exc, str) and exc and exc not in message:
            message = f"{message}\n{exc}" if message else exc
        events.append(
            {
                "code": str(info.get("code", "")),
                "name": str(info.get("name", "")),
                "message": shorten(message, MESSAGE_CHARS),
                "node": node,
            }
        )
    # The last events carry the final error; keep those when there are too many.
    return events[-MAX_EVENTS:]


def _compressed(document: Mapping[str, Any]) -> bytes:
    raw = json.dumps(document, separators=(",", ":")).encode()
    return gzip.compress(raw, compresslevel=9, mtime=0)


def _drop_key(document: dict[str, Any], key: str) -> None:
    for result in document.get("results") or []:
        result.pop(key, None)


def _shorten_messages(document: dict[str, Any], limit: int) -> None:
    for result in document.get("results") or []:
        if isinstance(result.get("message"), str):
            result["message"] = shorten(result["message"], limit)


def _drop_timings(document: dict[str, Any]) -> None:
    _drop_key(document, "timing")
    _drop_key(document, "adapter_response")


def _keep_unsuccessful(document: dict[str, Any]) -> None:
    # Skipped nodes stay: `dbt retry` reruns them along with the errored and failed ones.
    document["results"] = [
        r for r in document.get("results") or [] if r.get("status") not in SUCCESSFUL_STATUSES
    ]


# Detail given up, in order, until the compressed document fits: (name recorded, step).
_REDUCTIONS: Final = (
    ("compiled_code", lambda d: _drop_key(d, "compiled_code")),
    ("long_messages", lambda d: _shorten_messages(d, SHORT_MESSAGE_CHARS)),
    ("timing", _drop_timings),
    ("successful_results", _keep_unsuccessful),
)


def pack(
    run_results: Mapping[str, Any] | None,
    log_events: list[LogEvent],
    *,
    limit: int = CONFIGMAP_LIMIT,
) -> tuple[dict[str, str], dict[str, str], UploadStatus]:
    """The ConfigMap's (data, binaryData, upload status), within `limit` bytes of payload."""
    budget = limit - METADATA_RESERVE
    digest_json = json.dumps(log_events)
    if run_results is None:
        return {LOG_DIGEST_KEY: digest_json}, {}, "no-results"
    summary = summarize(run_results)
    document = copy.deepcopy(dict(run_results))
    compressed: bytes | None = _compressed(document)
    reductions = iter(_REDUCTIONS)
    while compressed is not None:
        used = len(compressed) + len(json.dumps(summary)) + len(digest_json)
        if used <= budget:
            break
        step = next(reductions, None)
        if step is None:
            # Even the failed nodes alone do not fit; the summary and the digest always do.
            summary["dropped"].append("run_results")
            compressed = None
            break
        name, reduce = step
        reduce(document)
        summary["dropped"].append(name)
        compressed = _compressed(document)
    data = {SUMMARY_KEY: json.dumps(summary), LOG_DIGEST_KEY: digest_json}
    binary = {} if compressed is None else {RUN_RESULTS_KEY: base64.b64encode(compressed).decode()}
    return data, binary, "uploaded"


def payload_size(data: Mapping[str, str], binary_data: Mapping[str, str]) -> int:
    """Bytes a ConfigMap's payload counts against the limit (binaryData counts decoded)."""
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    return size + sum(len(k) + len(base64.b64decode(v)) for k, v in binary_data.items())


def decode(configmap: Mapping[str, Any]) -> RunResults:
    """A results ConfigMap (as the API returns it, in dict form) turned back into RunResults."""
    metadata = configmap.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = annotations.get(UPLOAD_STATUS, "pending")
    if status not in UPLOAD_STATUSES:
        status = "failed"
    data = configmap.get("data") or {}
    binary = configmap.get("binaryData") or {}
    run_results = None
    if RUN_RESULTS_KEY in binary:
        run_results = json.loads(gzip.decompress(base64.b64decode(binary[RUN_RESULTS_KEY])))
    summary = json.loads(data[SUMMARY_KEY]) if SUMMARY_KEY in data else None
    events = json.loads(data[LOG_DIGEST_KEY]) if LOG_DIGEST_KEY in data else []
    return RunResults(
        status=status,
        summary=summary,
        run_results=run_results,
        log_events=events,
        upload_error=annotations.get(UPLOAD_ERROR),
    )
