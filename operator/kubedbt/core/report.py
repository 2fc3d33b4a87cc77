"""A run's summary as text a person reads in the task log or a terminal."""

from __future__ import annotations

import json
from typing import Any, Final

from kubedbt.core.command_output import CatalogSummary, DebugChecks, Preview
from kubedbt.core.interruption import describe
from kubedbt.core.results import WARN_STATUS, Summary, freshness_message

# Warned nodes a failure's reason names; the task log lists them all (up to MAX_WARNINGS).
REASON_NODES: Final = 5
# Characters of one cell of a previewed row in the task log.
CELL_CHARS: Final = 40


def warnings_reason(summary: Summary) -> str | None:
    """Which nodes warned, in a sentence (None if none did)."""
    count = summary["counts"].get(WARN_STATUS, 0)
    if count == 0:
        return None
    warned = [w["unique_id"] for w in summary.get("warnings") or []]
    if not warned:  # a summary older than its warnings: the sources past warn_after, at least
        warned = [f["unique_id"] for f in summary.get("freshness") or [] if f["status"] == "warn"]
    named = warned[:REASON_NODES]
    more = count - len(named)
    listed = ", ".join(named) + (f" and {more} more" if named and more else "")
    nodes = "1 node" if count == 1 else f"{count} nodes"
    return f"{nodes} warned: {listed}" if listed else f"{nodes} warned"


def summary_lines(summary: Summary, *, warnings: bool = True) -> list[str]:
    """Counts by status, what an interruption left unfinished, failed nodes, the slowest nodes.

    warnings=False (on_warning="ignore") leaves out the nodes that warned.
    """
    counts = ", ".join(f"{count} {status}" for status, count in summary["counts"].items())
    elapsed = summary["elapsed_time"]
    took = f" in {elapsed:.1f}s" if elapsed is not None else ""
    command = f"dbt {summary['command']}" if summary["command"] else "dbt"
    interruption = summary.get("interruption")
    ended = "was interrupted" if interruption else "finished"
    debug = summary.get("debug")
    if debug is not None:
        return [f"{command} {ended}{took}: {_checks(debug)}", *_debug_lines(debug)]
    lines = [f"{command} {ended}{took}: {summary['nodes']} nodes ({counts or 'none'})"]
    if interruption:
        lines.append(f"Interrupted: {describe(interruption)}")
        lines += [
            f"  cancelled while running: {unique_id}" for unique_id in interruption["cancelled"]
        ]
    if summary["failures"]:
        lines.append("Failed nodes:")
        for failure in summary["failures"]:
            message = " ".join(failure["message"].split())
            rows = f" ({failure['failures']} failing rows)" if failure["failures"] else ""
            lines.append(f"  {failure['status']:<6} {failure['unique_id']}{rows}: {message}")
        if summary["failures_omitted"]:
            lines.append(f"  ... and {summary['failures_omitted']} more")
    if warnings:
        lines += _warning_lines(summary)
    if summary["slowest"]:
        lines.append("Slowest nodes:")
        lines += [f"  {n['execution_time']:8.2f}s  {n['unique_id']}" for n in summary["slowest"]]
    catalog = summary.get("catalog")
    if catalog is not None:
        lines += _catalog_lines(catalog)
    for preview in summary.get("previews") or []:
        lines += preview_lines(preview)
    if summary.get("previews_omitted"):
        lines.append(f"(and {summary.get('previews_omitted')} more previews, not kept)")
    if summary["dropped"]:
        lines.append(f"(left out of the stored results to fit: {', '.join(summary['dropped'])})")
    artifacts = summary.get("artifacts")
    if artifacts:
        stored = f"{len(artifacts['objects'])} objects in {artifacts['seconds']:.1f}s"
        lines.append(f"Artifacts: {artifacts['url']} ({stored})")
        if artifacts["error"]:
            lines.append(f"  the upload stopped short: {artifacts['error']}")
    return lines


def _warning_lines(summary: Summary) -> list[str]:
    sources = [f for f in summary.get("freshness") or [] if f["status"] == WARN_STATUS]
    lines = []
    if sources:
        lines.append("Sources past warn_after:")
        lines += [f"  warn   {f['unique_id']}: {freshness_message(f)}" for f in sources]
    # Sources listed above are not listed again; older summaries have no warnings at all.
    listed = {f["unique_id"] for f in sources}
    nodes = [w for w in summary.get("warnings") or [] if w["unique_id"] not in listed]
    if nodes:
        lines.append("Warned nodes:")
        for warning in nodes:
            message = " ".join(warning["message"].split())
            lines.append(f"  warn   {warning['unique_id']}: {message}")
    omitted = summary.get("warnings_omitted") or 0
    if omitted:
        lines.append(f"  ... and {omitted} more warned")
    return lines


def _checks(debug: DebugChecks) -> str:
    if debug["passed"]:
        return "all checks passed"
    failed = len(debug["failed"])
    return f"{failed} check{'s' if failed != 1 else ''} failed" if failed else "checks failed"


def _debug_lines(debug: DebugChecks) -> list[str]:
    """Each failed check in dbt's words, its lines indented under it."""
    lines = ["Failed checks:"] if debug["failed"] else []
    for message in debug["failed"]:
        first, *rest = [line.rstrip() for line in message.splitlines() if line.strip()] or [""]
        lines.append(f"  {first}")
        lines += [f"    {line.strip()}" for line in rest]
    return lines


def _catalog_lines(catalog: CatalogSummary) -> list[str]:
    sources = "1 source" if catalog["sources"] == 1 else f"{catalog['sources']} sources"
    lines = [f"Catalog: {catalog['nodes']} nodes, {sources}, {catalog['columns']} columns"]
    if catalog["errors"]:
        lines.append("Catalog errors:")
        lines += [f"  {' '.join(error.split())}" for error in catalog["errors"]]
    if catalog["errors_omitted"]:
        lines.append(f"  ... and {catalog['errors_omitted']} more")
    return lines


def preview_lines(preview: Preview) -> list[str]:
    """The rows `dbt show` previewed, as a text table (cells cut to CELL_CHARS)."""
    kept = len(preview["rows"])
    rows = f"{kept} row{'s' if kept != 1 else ''}"
    lines = [f"Preview of {preview['unique_id']} ({rows}):"]
    columns = preview["columns"]
    if columns:
        rows_cells = ([_cell(row.get(c)) for c in columns] for row in preview["rows"])
        table = [[_cell(c) for c in columns], *rows_cells]
        widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
        lines += [_table_line(table[0], widths), _table_line(["-" * w for w in widths], widths)]
        lines += [_table_line(row, widths) for row in table[1:]]
    if preview["rows_omitted"]:
        lines.append(f"  ... and {preview['rows_omitted']} more rows, not kept")
    if preview["columns_omitted"]:
        lines.append(f"  ... and {preview['columns_omitted']} more columns, not kept")
    return lines


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 3] + "..."


def _table_line(cells: list[str], widths: list[int]) -> str:
    return (
        "  | "
        + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        + " |"
    )
