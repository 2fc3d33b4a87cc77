"""What a run's results ConfigMap holds, how it is packed under the size limit, and how it is read.

The sidecar packs these into the ConfigMap the operator created:
- `run_results.json.gz` (binaryData): dbt's run_results.json, gzip-compressed;
- `sources.json.gz` (binaryData): what `dbt source freshness` writes instead of run_results;
- `catalog.json.gz` (binaryData): what `dbt docs generate` writes beside its run_results, left out
  past CATALOG_LIMIT (the summary counts it either way);
- `summary.json` (data): counts by status, failed nodes with messages, the nodes that warned
  (tests of severity warn, sources past warn_after), the slowest nodes, the sources that are not
  fresh, what was given up to fit; and what the commands that report more than run_results said
  (kubedbt.core.command_output): the catalog's counts, the checks of `dbt debug` (which writes no
  artifact: its summary comes from the log alone), the rows `dbt show` previewed;
- `log_digest.json` (data): the error-level events of dbt's JSON log and the failed checks of
  `dbt debug` (info-level events; code, name, message, node), which are the classifier's evidence
  even when dbt wrote no run_results (exit code 2); values that dbt's validation errors quote
  are hidden (kubedbt.core.diagnose.hide_values);
- `lineage.json.gz` (binaryData): what the run read and wrote, extracted from dbt's manifest
  (kubedbt.core.lineage), for OpenLineage and Airflow asset events; left out past LINEAGE_LIMIT.
The summary's `artifacts` says where the run's whole target/ went when `artifacts_url` is set.
and marks it with the annotation `kubedbt.io/upload-status`: `pending` (created, nothing uploaded
yet), `uploaded` (results present), `no-results` (dbt wrote none; the digest says why) or `failed`
(the sidecar could not read what dbt wrote; `kubedbt.io/upload-error` says why).

A ConfigMap holds at most 1 MiB: kubedbt.core.packing packs the artifact within it, streaming.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypedDict, TypeVar

from kubedbt.core.artifacts import ArtifactsRecord
from kubedbt.core.command_output import (
    CatalogSummary,
    DebugChecks,
    LogReader,
    LogReport,
    Preview,
)
from kubedbt.core.diagnose import exception_text, hide_values
from kubedbt.core.errors import shorten
from kubedbt.core.interruption import Interruption
from kubedbt.core.lineage import LineageDigest, parse_digest
from kubedbt.core.unpacking import (
    UnreadableError,
    check_packed_size,
    describe_size,
    gunzip_json,
    parse_json,
    type_error,
)

CONFIGMAP_LIMIT: Final = 1024 * 1024
# Room kept for metadata (labels, annotations, managed fields) inside the object size limit.
METADATA_RESERVE: Final = 64 * 1024
RUN_RESULTS_KEY: Final = "run_results.json.gz"
SOURCES_KEY: Final = "sources.json.gz"
SUMMARY_KEY: Final = "summary.json"
LOG_DIGEST_KEY: Final = "log_digest.json"
LINEAGE_KEY: Final = "lineage.json.gz"
CATALOG_KEY: Final = "catalog.json.gz"
# Compressed catalog kept in the ConfigMap at most; past it, only artifact storage has it.
CATALOG_LIMIT: Final = 384 * 1024
# Compressed lineage kept in the ConfigMap at most; past it, only artifact storage has it.
LINEAGE_LIMIT: Final = 256 * 1024
UPLOAD_STATUS: Final = "kubedbt.io/upload-status"
UPLOAD_ERROR: Final = "kubedbt.io/upload-error"
FRESHNESS_COMMAND: Final = "source freshness"
# run_results' args.which, where it is not the command as typed.
_COMMAND_OF_WHICH: Final = {"generate": "docs generate"}

UploadStatus = Literal["pending", "uploaded", "no-results", "failed"]
ArtifactKind = Literal["run_results", "sources"]
UPLOAD_STATUSES: Final[tuple[UploadStatus, ...]] = ("pending", "uploaded", "no-results", "failed")
FAILED_STATUSES: Final = frozenset({"error", "fail", "runtime error"})
SUCCESSFUL_STATUSES: Final = frozenset({"success", "pass", "warn"})

MAX_FAILURES: Final = 50
MAX_WARNINGS: Final = 50
WARN_STATUS: Final = "warn"
MAX_FRESHNESS: Final = 50
MAX_SLOWEST: Final = 5
MAX_EVENTS: Final = 50
MESSAGE_CHARS: Final = 1000
SHORT_MESSAGE_CHARS: Final = 200

T = TypeVar("T")

# A dbt artifact as its top-level (key, value) pairs in file order; the value of "results" may be
# an iterator, consumed before the next pair is read, so a large file is never held whole.
Members = Iterable[tuple[str, Any]]


class NodeFailure(TypedDict):
    """A node that errored or failed, as a person needs to see it."""

    unique_id: str
    status: str
    message: str
    failures: int | None


class NodeWarning(TypedDict):
    """A node that warned: a test of severity warn that found rows, a source past warn_after."""

    unique_id: str
    message: str


class NodeTiming(TypedDict):
    """A node and how long it ran."""

    unique_id: str
    execution_time: float


class SourceFreshness(TypedDict):
    """A source `dbt source freshness` did not find fresh (warn, error or runtime error)."""

    unique_id: str
    status: str
    max_loaded_at: str | None
    snapshotted_at: str | None
    max_loaded_at_time_ago_in_s: float | None
    # warn_after / error_after (and filter), as dbt wrote them.
    criteria: dict[str, Any] | None


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
    # Older sidecars wrote neither: readers take [] and 0.
    warnings: list[NodeWarning]
    warnings_omitted: int
    slowest: list[NodeTiming]
    freshness: list[SourceFreshness]
    freshness_omitted: int
    dropped: list[str]
    # Set when the pod was stopped and the launcher interrupted dbt (kubedbt.core.interruption).
    interruption: Interruption | None
    # Set when artifacts_url is: where the sidecar copied target/ and dbt.log, or why it could not.
    artifacts: ArtifactsRecord | None
    # Set by the commands that report them (kubedbt.core.command_output); older sidecars wrote
    # none of these: readers take None, [] and 0.
    catalog: CatalogSummary | None
    debug: DebugChecks | None
    previews: list[Preview]
    previews_omitted: int


class LogEvent(TypedDict):
    """One event of dbt's JSON log that the digest keeps: an error, or a failed `dbt debug` check.

    A failed check is an info-level DebugCmdResult event. The message is cut to MESSAGE_CHARS,
    and the values a validation error quotes are hidden.
    """

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
    sources: dict[str, Any] | None = None
    lineage: LineageDigest | None = None
    catalog: dict[str, Any] | None = None


def compact_json(value: Any) -> str:
    """JSON without spaces, as the packer writes it."""
    return json.dumps(value, separators=(",", ":"))


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _age(seconds: float) -> str:
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            return _count(int(seconds // length), unit)
    return _count(int(seconds), "second")


def freshness_message(result: Mapping[str, Any]) -> str:
    """Why a source is stale, in words: its last load, how long ago, the threshold it broke."""
    if "error" in result and "max_loaded_at" not in result:  # a runtime error: no load time
        return shorten(str(result.get("error") or ""), MESSAGE_CHARS)
    age = result.get("max_loaded_at_time_ago_in_s")
    text = f"max_loaded_at {result.get('max_loaded_at')}"
    if isinstance(age, (int, float)):
        text += f" is {_age(age)} old"
    # criteria come from a ConfigMap the pod wrote: whatever their shape, this must not raise.
    criteria = result.get("criteria")
    threshold = (
        criteria.get(f"{result.get('status')}_after") if isinstance(criteria, dict) else None
    )
    if isinstance(threshold, dict) and isinstance(threshold.get("count"), int):
        period = threshold.get("period")
        text += f", {result.get('status')}_after {_count(threshold['count'], str(period))}"
    return text


def _freshness(result: Mapping[str, Any]) -> SourceFreshness:
    return {
        "unique_id": str(result.get("unique_id")),
        "status": str(result.get("status")),
        "max_loaded_at": result.get("max_loaded_at"),
        "snapshotted_at": result.get("snapshotted_at"),
        "max_loaded_at_time_ago_in_s": result.get("max_loaded_at_time_ago_in_s"),
        "criteria": result.get("criteria"),
    }


class Tally:
    """The summary of one artifact, built one result at a time (a file is never held whole)."""

    def __init__(self, *, of_sources: bool) -> None:
        # sources.json has no args: only `dbt source freshness` writes it.
        self.command: str | None = FRESHNESS_COMMAND if of_sources else None
        self.of_sources = of_sources
        self.metadata: Mapping[str, Any] = {}
        self.elapsed_time: float | None = None
        self.counts: Counter[str] = Counter()
        self.failures: list[NodeFailure] = []
        self.warnings: list[NodeWarning] = []
        self.freshness: list[SourceFreshness] = []
        self.stale = 0
        self.slowest: list[NodeTiming] = []
        self.interruption: Interruption | None = None

    def member(self, key: str, value: Any) -> None:
        """A top-level member of the artifact other than its results."""
        if key == "metadata" and isinstance(value, Mapping):
            self.metadata = value
        elif key == "elapsed_time" and isinstance(value, (int, float)):
            self.elapsed_time = value
        elif key == "args" and isinstance(value, Mapping) and value.get("which"):
            which = str(value["which"])
            self.command = _COMMAND_OF_WHICH.get(which, which)

    def result(self, result: Mapping[str, Any]) -> None:
        """One node's (or source's) result."""
        status = str(result.get("status"))
        unique_id = str(result.get("unique_id"))
        self.counts[status] += 1
        if status in FAILED_STATUSES and len(self.failures) < MAX_FAILURES:
            message = freshness_message(result) if self.of_sources else result.get("message")
            self.failures.append(
                {
                    "unique_id": unique_id,
                    "status": status,
                    "message": shorten(str(message or ""), MESSAGE_CHARS),
                    "failures": result.get("failures"),
                }
            )
        if status == WARN_STATUS and len(self.warnings) < MAX_WARNINGS:
            message = freshness_message(result) if self.of_sources else result.get("message")
            self.warnings.append(
                {"unique_id": unique_id, "message": shorten(str(message or ""), MESSAGE_CHARS)}
            )
        if self.of_sources and status != "pass":
            self.stale += 1
            if len(self.freshness) < MAX_FRESHNESS:
                self.freshness.append(_freshness(result))
        timing: NodeTiming = {
            "unique_id": unique_id,
            "execution_time": float(result.get("execution_time") or 0),
        }
        # Sorting is stable: among equal times the earlier node stays first.
        self.slowest = sorted(
            [*self.slowest, timing], key=lambda t: t["execution_time"], reverse=True
        )[:MAX_SLOWEST]

    def summary(self, dropped: list[str]) -> Summary:
        """The summary so far, recording what the packer gave up."""
        failed = sum(n for status, n in self.counts.items() if status in FAILED_STATUSES)
        return {
            "invocation_id": self.metadata.get("invocation_id"),
            "dbt_version": self.metadata.get("dbt_version"),
            "generated_at": self.metadata.get("generated_at"),
            "elapsed_time": self.elapsed_time,
            "command": self.command,
            "nodes": sum(self.counts.values()),
            "counts": dict(sorted(self.counts.items())),
            "failures": self.failures,
            "failures_omitted": failed - len(self.failures),
            "warnings": self.warnings,
            "warnings_omitted": self.counts[WARN_STATUS] - len(self.warnings),
            "slowest": self.slowest,
            "freshness": self.freshness,
            "freshness_omitted": self.stale - len(self.freshness),
            "dropped": dropped,
            "interruption": self.interruption,
            "artifacts": None,
            "catalog": None,
            "debug": None,
            "previews": [],
            "previews_omitted": 0,
        }


def log_summary(report: LogReport) -> Summary | None:
    """The summary of a command that wrote no artifact but said what it did in its log (debug).

    None when the log says nothing of the kind: a command that should have written run_results
    and did not has no summary, so it is classified as such.
    """
    if report.debug is None:
        return None
    summary = Tally(of_sources=False).summary([])
    summary.update(
        {
            "invocation_id": report.invocation_id,
            "dbt_version": report.dbt_version,
            "generated_at": report.completed_at,
            "elapsed_time": report.elapsed,
            "command": report.command,
            "debug": report.debug,
        }
    )
    return summary


def read_dbt_log(lines: Iterable[str]) -> tuple[list[LogEvent], LogReport]:
    """The digest of dbt's JSON log (digest_log, with debug's failed checks) and its LogReport.

    One pass over the lines, so the uploader reads the file once.
    """
    reader = LogReader()
    passing = reader.passing(lines)
    events = digest_log(passing)
    deque(passing, maxlen=0)  # should the digest ever stop early, the report still reads all
    return [*events, *reader.report.failed_check_events()], reader.report


def artifact_kind(document: Mapping[str, Any]) -> ArtifactKind:
    """Which artifact a document is, by its schema version (sources.json or run_results.json)."""
    schema = str((document.get("metadata") or {}).get("dbt_schema_version"))
    return "sources" if "/sources/" in schema else "run_results"


def results_of(value: Any) -> Iterator[dict[str, Any]]:
    """The results of an artifact's "results" member (a list, or an iterator when streamed)."""
    if value is None:
        return
    if not isinstance(value, (list, Iterator)):
        raise ValueError(f"results is a {type(value).__name__}, not a list")
    for result in value:
        if not isinstance(result, dict):
            raise ValueError(f"a result is a {type(result).__name__}, not an object")
        yield result


def summarize(document: Mapping[str, Any]) -> Summary:
    """The summary of a run_results.json or a sources.json document."""
    tally = Tally(of_sources=artifact_kind(document) == "sources")
    for key, value in document.items():
        tally.member(key, value)
        if key == "results":
            for result in results_of(value):
                tally.result(result)
    return tally.summary([])


def digest_log(lines: Iterable[str]) -> list[LogEvent]:
    """The error-level events of dbt's JSON log; lines that are not JSON events are skipped.

    A traceback (MainStackTrace's message, an exception in data.exc) is kept as the exception it
    ends with: its head, the frames, says nothing of the error, and would be all that is left
    once the message is shortened. Values quoted by a validation error (a profile's password
    of the wrong type) are hidden (kubedbt.core.diagnose.hide_values) before anything is kept.
    """
    # The last events carry the final error; keep those when there are too many.
    events: deque[LogEvent] = deque(maxlen=MAX_EVENTS)
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
        message = hide_values(exception_text(message))
        events.append(
            {
                "code": str(info.get("code", "")),
                "name": str(info.get("name", "")),
                "message": shorten(message, MESSAGE_CHARS),
                "node": node,
            }
        )
    return list(events)


def payload_size(data: Mapping[str, str], binary_data: Mapping[str, str]) -> int:
    """Bytes a ConfigMap's payload counts against the limit (binaryData counts decoded)."""
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    return size + sum(len(k) + len(base64.b64decode(v)) for k, v in binary_data.items())


def stored_size(configmap: Mapping[str, Any]) -> int:
    """The payload size of a results ConfigMap as read from the API; never raises.

    Like payload_size, but the map was written from inside the pod: a value that is not base64
    counts as its text.
    """
    size = 0
    for key, value in (configmap.get("data") or {}).items():
        size += len(str(key)) + len(str(value).encode("utf-8", "surrogatepass"))
    for key, value in (configmap.get("binaryData") or {}).items():
        try:
            size += len(str(key)) + len(base64.b64decode(str(value), validate=True))
        except ValueError:
            size += len(str(key)) + len(str(value))
    return size


def _binary_json(text: Any, key: str) -> Any:
    """The gzip-compressed JSON of a binaryData value, read within every bound."""
    if not isinstance(text, str):
        raise UnreadableError(f"{key} is not base64 text")
    # What the text decodes to at least (padding takes off at most 2 bytes): a blob that cannot
    # fit is refused before it is decoded.
    check_packed_size(len(text) // 4 * 3 - 2, name=key, limit=CONFIGMAP_LIMIT)
    try:
        packed = base64.b64decode(text, validate=True)
    except ValueError as e:  # binascii.Error: a character outside the alphabet, bad padding
        raise UnreadableError(f"{key} is not valid base64 ({e})") from e
    return gunzip_json(packed, name=key, limit=CONFIGMAP_LIMIT)


def _artifact(text: Any, key: str) -> dict[str, Any]:
    """A run_results or sources document from binaryData, read within every bound."""
    document = _binary_json(text, key)
    if not isinstance(document, dict):
        raise UnreadableError(
            f"{key} is not a dbt artifact: {type_error(document, dict[str, Any])}"
        )
    try:
        for _ in results_of(document.get("results")):
            pass
    except ValueError as e:
        raise UnreadableError(f"{key} is not a dbt artifact: {e}") from e
    return document


def _catalog(text: Any, key: str) -> dict[str, Any]:
    """A catalog.json from binaryData, read within the same bounds as an artifact."""
    document = _binary_json(text, key)
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), dict):
        raise UnreadableError(f"{key} is not a dbt catalog: it has no nodes")
    return document


def _lineage(text: Any, key: str) -> LineageDigest:
    """The lineage digest from binaryData, read within the same bounds as an artifact."""
    return parse_digest(_binary_json(text, key))


def _data_json(text: Any, key: str) -> Any:
    if not isinstance(text, str):
        raise UnreadableError(f"{key} is not text")
    if len(text) > CONFIGMAP_LIMIT:
        raise UnreadableError(
            f"{key} is more than {describe_size(CONFIGMAP_LIMIT)}, more than a ConfigMap holds; "
            "refusing to read it"
        )
    # surrogatepass: a lone surrogate reaches the parser, which says it is not valid JSON.
    return parse_json(text.encode("utf-8", "surrogatepass"), name=key)


def _summary(text: Any, key: str) -> Summary:
    value = _data_json(text, key)
    if isinstance(value, dict):
        # Older sidecars wrote none of these keys; readers take the defaults.
        value = {
            "freshness": [],
            "freshness_omitted": 0,
            "warnings": [],
            "warnings_omitted": 0,
            "interruption": None,
            "artifacts": None,
            "catalog": None,
            "debug": None,
            "previews": [],
            "previews_omitted": 0,
            **value,
        }
    problem = type_error(value, Summary)
    if problem is not None:
        raise UnreadableError(f"{key} is not a run summary: {problem}")
    summary: Summary = value
    return summary


def _log_events(text: Any, key: str) -> list[LogEvent]:
    value = _data_json(text, key)
    problem = type_error(value, list[LogEvent])
    if problem is not None:
        raise UnreadableError(f"{key} is not a list of log events: {problem}")
    events: list[LogEvent] = value
    return events


def _read(
    reader: Callable[[Any, str], T], source: Mapping[str, Any], key: str
) -> tuple[T | None, str | None]:
    """What `reader` makes of source[key] (None when absent), or why it could not read it."""
    if key not in source:
        return None, None
    try:
        return reader(source[key], key), None
    except UnreadableError as e:
        return None, str(e)


def decode(configmap: Mapping[str, Any], *, artifacts: bool = True) -> RunResults:
    """A results ConfigMap (as the API returns it, in dict form) turned back into RunResults.

    Never raises: the map is written from inside the run's pod, so it may be damaged or forged, and
    its readers (the triggerer above all) must outlive it. What cannot be read is left out and the
    rest kept; the status becomes "failed" and upload_error says what, so a missing summary is
    classified results_missing with that reason and missing run_results are not resumed from.
    artifacts=False leaves run_results, sources and the catalog unread (None): the outcome is
    classified from the summary and the log digest alone, so the watch need not unpack what it
    would not use.
    """
    metadata = configmap.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = annotations.get(UPLOAD_STATUS, "pending")
    unknown = None if status in UPLOAD_STATUSES else f"unknown upload status {status!r}"
    data = configmap.get("data") or {}
    everything = configmap.get("binaryData") or {}
    binary = everything if artifacts else {}
    summary, summary_error = _read(_summary, data, SUMMARY_KEY)
    events, events_error = _read(_log_events, data, LOG_DIGEST_KEY)
    run_results, run_results_error = _read(_artifact, binary, RUN_RESULTS_KEY)
    sources, sources_error = _read(_artifact, binary, SOURCES_KEY)
    catalog, catalog_error = _read(_catalog, binary, CATALOG_KEY)
    # Small (LINEAGE_LIMIT), so read even when the artifacts are not.
    lineage, lineage_error = _read(_lineage, everything, LINEAGE_KEY)
    problems = [unknown, summary_error, events_error, run_results_error, sources_error]
    # A damaged lineage digest or catalog costs only itself: the run's outcome does not depend on
    # it (the summary counts the catalog).
    extras = [error for error in (lineage_error, catalog_error) if error]
    errors = [annotations.get(UPLOAD_ERROR), *problems, *extras]
    return RunResults(
        status="failed" if any(problems) else status,
        summary=summary,
        run_results=run_results,
        log_events=events or [],
        upload_error="; ".join(e for e in errors if e) or None,
        sources=sources,
        lineage=lineage,
        catalog=catalog,
    )
