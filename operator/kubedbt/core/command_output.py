"""What docs generate, debug and show report besides run_results, as the results uploader reads it.

- `dbt docs generate` writes catalog.json, what the warehouse says of each relation (columns,
  types, statistics). The uploader packs it beside run_results (kubedbt.core.packing) and counts
  it here as it streams by: CatalogSummary.
- `dbt debug` writes no artifact at all. Its verdict is in info-level events of the JSON log
  (DebugCmdResult): "All checks passed!", or "N checks failed:" followed by one event per failed
  check, whose message says what failed ("dbt was unable to connect to the specified database...").
- `dbt show` never puts the rows it previewed in run_results: they are in the ShowNode event of the
  JSON log, as JSON because kubedbt passes `--output json` (kubedbt.core.command.COMMAND_FLAGS).

Everything kept is bounded (rows, columns, characters), because the summary travels in the
ConfigMap, the trigger's event and XCom; what is cut is counted, never silently dropped. A ShowNode
line past SHOW_LINE_CHARS is not even parsed (its rows as Python objects would not fit in the
sidecar's memory): its preview is counted as omitted, and the summary's `dropped` says why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TypedDict

from kubedbt.core.diagnose import ANSI, hide_values
from kubedbt.core.errors import shorten

if TYPE_CHECKING:  # results imports this module; a LogEvent is what its digest holds
    from kubedbt.core.results import LogEvent

MAX_PREVIEWS: Final = 5
MAX_PREVIEW_ROWS: Final = 50
MAX_PREVIEW_COLUMNS: Final = 50
# Characters of JSON the kept rows of one preview take at most, and of one value.
PREVIEW_CHARS: Final = 16 * 1024
VALUE_CHARS: Final = 200
MAX_CHECKS: Final = 10
MAX_CATALOG_ERRORS: Final = 10
MESSAGE_CHARS: Final = 1000
# The events read, by name; a line naming none of them is not even parsed.
_DEBUG_RESULT: Final = "DebugCmdResult"
_EVENTS: Final = ("MainReportVersion", "CommandCompleted", _DEBUG_RESULT, "DebugCmdOut")
_SHOW_EVENT: Final = "ShowNode"
# Characters (bytes, in the file) of a ShowNode line of the log past which it is not read: its
# preview is omitted. log_lines gives such a line as UNREAD_SHOW.
SHOW_LINE_CHARS: Final = 1024 * 1024
UNREAD_SHOW: Final = '{"kubedbt": "a ShowNode line too long to read"}\n'
_SHOW_NAME: Final = b'"name": "ShowNode"'
_CHUNK_CHARS: Final = 64 * 1024
_FAILED_CHECKS = re.compile(r"^\d+ checks? failed:$")
_PASSED_CHECKS: Final = "All checks passed!"


class CatalogSummary(TypedDict):
    """What `dbt docs generate` found in the warehouse (its catalog.json), counted."""

    nodes: int
    """Models, seeds and snapshots the warehouse has a relation of."""
    sources: int
    columns: int
    errors: list[str]
    """The catalog's own errors (a schema dbt could not read), shortened."""
    errors_omitted: int


class Preview(TypedDict):
    """The rows `dbt show` previewed of one node or inline query."""

    unique_id: str
    columns: list[str]
    """The first row's names, shortened to VALUE_CHARS like values: the rows' keys."""
    rows: list[dict[str, Any]]
    """Values as dbt wrote them in JSON; long strings shortened to VALUE_CHARS."""
    rows_omitted: int
    columns_omitted: int


class DebugChecks(TypedDict):
    """The verdict of `dbt debug`."""

    passed: bool
    failed: list[str]
    """What each failed check said, shortened (dbt's words, several lines each)."""


class CatalogTally:
    """The CatalogSummary of a catalog.json, built one relation at a time."""

    def __init__(self) -> None:
        self.nodes = 0
        self.sources = 0
        self.columns = 0
        self.errors: list[str] = []
        self.error_count = 0

    def relation(self, member: str, table: Any) -> None:
        """One entry of the catalog's "nodes" or "sources"."""
        if member == "nodes":
            self.nodes += 1
        else:
            self.sources += 1
        columns = table.get("columns") if isinstance(table, Mapping) else None
        self.columns += len(columns) if isinstance(columns, Mapping) else 0

    def catalog_errors(self, value: Any) -> None:
        """The catalog's "errors": null, or a list of messages."""
        for error in value if isinstance(value, list) else []:
            self.error_count += 1
            if len(self.errors) < MAX_CATALOG_ERRORS:
                self.errors.append(shorten(str(error), MESSAGE_CHARS))

    def summary(self) -> CatalogSummary:
        """The counts so far."""
        return {
            "nodes": self.nodes,
            "sources": self.sources,
            "columns": self.columns,
            "errors": self.errors,
            "errors_omitted": self.error_count - len(self.errors),
        }


@dataclass
class LogReport:
    """What dbt's JSON log says of a command beyond its error events."""

    command: str | None = None
    invocation_id: str | None = None
    dbt_version: str | None = None
    completed_at: str | None = None
    elapsed: float | None = None
    debug: DebugChecks | None = None
    previews: list[Preview] = field(default_factory=list)
    previews_omitted: int = 0
    # ShowNode events left unread, their line being longer than SHOW_LINE_CHARS.
    previews_too_large: int = 0
    # The code dbt gave its DebugCmdResult events.
    check_code: str = ""

    def failed_check_events(self) -> list[LogEvent]:
        """The failed checks of `dbt debug` as digest events: they are its errors.

        dbt logs them at info level, so the digest of error-level events leaves them out.
        """
        return [
            {"code": self.check_code, "name": _DEBUG_RESULT, "message": message, "node": None}
            for message in (self.debug or {"failed": []})["failed"]
        ]

    def dropped(self) -> list[str]:
        """What was left out of the log unread, for the summary's `dropped`."""
        if not self.previews_too_large:
            return []
        return [f"show previews over {SHOW_LINE_CHARS // 1024 // 1024} MiB"]


class LogReader:
    """Builds the LogReport of dbt's JSON log one line at a time."""

    def __init__(self) -> None:
        self.report = LogReport()
        self._failing = False

    def passing(self, lines: Iterable[str]) -> Iterator[str]:
        """The lines, each read as it passes (to read the log in another reader's pass)."""
        for line in lines:
            self.read(line)
            yield line

    def read(self, line: str) -> None:
        """One line of the log; a line that is not a JSON event is skipped."""
        showing = _SHOW_EVENT in line
        if not showing and not any(name in line for name in _EVENTS):
            return
        report = self.report
        if showing and (line == UNREAD_SHOW or len(line) > SHOW_LINE_CHARS):  # never parsed
            report.previews_too_large += 1
            report.previews_omitted += 1
            return
        event = _event(line)
        if event is None:
            return
        info, data = event
        name = info.get("name")
        if report.invocation_id is None and isinstance(info.get("invocation_id"), str):
            report.invocation_id = info["invocation_id"]
        if name == "MainReportVersion" and isinstance(data.get("version"), str):
            report.dbt_version = data["version"].lstrip("=")
        elif name == "CommandCompleted":
            _completed(report, data)
        elif name in ("DebugCmdOut", _DEBUG_RESULT):
            report.command = report.command or "debug"
            report.debug = report.debug or {"passed": False, "failed": []}
            if name == _DEBUG_RESULT:
                report.check_code = str(info.get("code") or "")
                self._failing = _debug_result(
                    report.debug, _plain(info.get("msg")), failing=self._failing
                )
        elif name == _SHOW_EVENT and showing:
            shown = preview(data) if len(report.previews) < MAX_PREVIEWS else None
            if shown is not None:
                report.previews.append(shown)
            else:  # past MAX_PREVIEWS, or not the JSON kubedbt asks dbt for
                report.previews_omitted += 1


def read_log(lines: Iterable[str]) -> LogReport:
    """The LogReport of dbt's JSON log file; lines that are not JSON events are skipped."""
    reader = LogReader()
    for line in lines:
        reader.read(line)
    return reader.report


def log_lines(stream: BinaryIO) -> Iterator[str]:
    """The lines of dbt's JSON log (a file opened in binary mode), decoded (UTF-8, errors replaced).

    A ShowNode line longer than SHOW_LINE_CHARS bytes (`dbt show --limit 100000`: tens of MB)
    is skipped without ever being held in memory, which is small in the sidecar, and comes as
    UNREAD_SHOW. dbt writes an event's name after its data, so a long line's end is read first
    to see whether it is one; any other line comes whole.
    """
    while chunk := stream.readline(SHOW_LINE_CHARS + 1):
        if len(chunk) <= SHOW_LINE_CHARS or chunk.endswith(b"\n"):
            yield chunk.decode("utf-8", "replace")
            continue
        start = stream.tell() - len(chunk)
        end = b""
        while rest := stream.readline(_CHUNK_CHARS):
            end = (end + rest)[-_CHUNK_CHARS:]
            if rest.endswith(b"\n"):
                break
        if _SHOW_NAME in end:
            yield UNREAD_SHOW
        else:
            stream.seek(start)
            yield stream.readline().decode("utf-8", "replace")


def _event(line: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    info = event.get("info") if isinstance(event, dict) else None
    if not isinstance(info, dict):
        return None
    data = event.get("data")
    return info, data if isinstance(data, dict) else {}


def _plain(message: Any) -> str:
    return ANSI.sub("", str(message or "")).strip()


def _completed(report: LogReport, data: Mapping[str, Any]) -> None:
    command = data.get("command")
    if isinstance(command, str) and command.startswith("dbt "):
        report.command = command.removeprefix("dbt ")
    if isinstance(data.get("completed_at"), str):
        report.completed_at = data["completed_at"]
    elapsed = data.get("elapsed")
    if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool):
        report.elapsed = float(elapsed)


def _debug_result(checks: DebugChecks, message: str, *, failing: bool) -> bool:
    """Record one DebugCmdResult; whether the failed checks are being listed after it."""
    if message == _PASSED_CHECKS:
        checks["passed"] = True
        return False
    if _FAILED_CHECKS.match(message):
        checks["passed"] = False
        return True
    if failing and message and len(checks["failed"]) < MAX_CHECKS:
        # Hidden before it is cut: a check may quote a profile value (a password) dbt refused.
        checks["failed"].append(shorten(hide_values(message), MESSAGE_CHARS))
    return failing


def preview(data: Mapping[str, Any]) -> Preview | None:
    """A ShowNode event's preview, cut to MAX_PREVIEW_ROWS, MAX_PREVIEW_COLUMNS, PREVIEW_CHARS.

    None when it is not the JSON list of rows `--output json` makes dbt write.
    """
    if data.get("output_format") != "json":
        return None
    try:
        rows = json.loads(str(data.get("preview")))
    except ValueError:
        return None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return None
    unique_id = str(data.get("unique_id") or data.get("node_name") or "")
    columns = list(rows[0]) if rows else []
    kept_columns = columns[:MAX_PREVIEW_COLUMNS]
    names = [shorten(str(column), VALUE_CHARS) for column in kept_columns]
    kept: list[dict[str, Any]] = []
    size = 0
    for row in rows[:MAX_PREVIEW_ROWS]:
        cut = {
            name: _value(row.get(column)) for name, column in zip(names, kept_columns, strict=True)
        }
        size += len(json.dumps(cut))
        if size > PREVIEW_CHARS:
            break
        kept.append(cut)
    return {
        "unique_id": unique_id,
        "columns": names,
        "rows": kept,
        "rows_omitted": len(rows) - len(kept),
        "columns_omitted": len(columns) - len(kept_columns),
    }


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    return shorten(text, VALUE_CHARS)
