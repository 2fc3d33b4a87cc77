"""A run's summary as text a person reads in the task log or a terminal."""

from __future__ import annotations

from kubedbt.core.interruption import describe
from kubedbt.core.results import Summary, freshness_message


def summary_lines(summary: Summary) -> list[str]:
    """Counts by status, what an interruption left unfinished, failed nodes, the slowest nodes."""
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
    warned = [f for f in summary.get("freshness") or [] if f["status"] == "warn"]
    if warned:
        lines.append("Sources past warn_after:")
        lines += [f"  warn   {f['unique_id']}: {freshness_message(f)}" for f in warned]
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
