"""A run's summary as text a person reads in the task log or a terminal."""

from __future__ import annotations

from typing import Final

from kubedbt.core.interruption import describe
from kubedbt.core.results import WARN_STATUS, Summary, freshness_message

# Warned nodes a failure's reason names; the task log lists them all (up to MAX_WARNINGS).
REASON_NODES: Final = 5


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
    if summary["dropped"]:
        lines.append(f"(the stored run_results left out: {', '.join(summary['dropped'])})")
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
