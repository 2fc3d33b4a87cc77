"""`kubectl dbt results RUN`: the run's results as the sidecar uploaded them to its ConfigMap."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, Literal

from kubedbt.cli.cluster import Cluster
from kubedbt.cli.errors import NOT_FOUND, CliError
from kubedbt.cli.run_info import RunInfo
from kubedbt.cli.table import field
from kubedbt.core.report import summary_lines
from kubedbt.core.results import RunResults, decode

OutputFormat = Literal["text", "json"]

_WHY_NONE = {
    "pending": "dbt is still running, or the sidecar has not uploaded yet",
    "no-results": "dbt wrote none",
    "failed": "the sidecar could not upload them, or they could not be read",
    "uploaded": "too large for the ConfigMap, they were left out",
}


def decode_results(configmap: Mapping[str, Any]) -> RunResults:
    """The decoded ConfigMap; what of it is damaged is left out and named in upload_error."""
    return decode(configmap)


def result_lines(run: RunInfo, results: RunResults) -> list[str]:
    """What `kubectl dbt results` prints: the upload status, then the summary or why none."""
    lines = [
        field("Run", f"{run.namespace}/{run.name} ({run.status})"),
        field("Results", f"ConfigMap {run.results_configmap}, upload status {results.status}"),
    ]
    if results.upload_error:
        lines.append(field("Upload error", results.upload_error))
    summary = results.summary
    if summary is None:
        lines.append(f"No run results: {_WHY_NONE[results.status]}.")
        if results.log_events:
            lines.append("dbt's errors:")
        for event in results.log_events:
            first, *rest = event["message"].splitlines() or [""]
            lines.append(f"  {event['name'] or event['code']}: {first}")
            lines += [f"    {line.strip()}" for line in rest if line.strip()]
        return lines
    if summary["invocation_id"]:
        lines.append(
            field("Invocation", f"{summary['invocation_id']} (dbt {summary['dbt_version']})")
        )
    return [*lines, *summary_lines(summary)]


def no_run_results(run: RunInfo, results: RunResults) -> str:
    """Why `-o json` has nothing to print."""
    text = (
        f"run {run.name} has no run_results.json: upload status is {results.status} "
        f"({_WHY_NONE[results.status]})"
    )
    if results.upload_error:
        text += f": {results.upload_error}"
    if results.log_events:
        text += f"; `kubectl dbt results {run.name} -n {run.namespace}` shows dbt's errors"
    return text


async def show_results(cluster: Cluster, wanted: str, *, output: OutputFormat) -> int:
    """Print the summary (text) or the whole run_results.json (json)."""
    run = RunInfo.from_job(await cluster.find_run(wanted))
    configmap = await cluster.configmap(run.results_configmap)
    if configmap is None:
        raise CliError(f"run {run.name} has no results ConfigMap {run.results_configmap}")
    results = decode_results(configmap)
    if output == "json":
        if results.run_results is None:
            raise CliError(no_run_results(run, results))
        print(json.dumps(results.run_results, indent=2))
        dropped = results.summary["dropped"] if results.summary else []
        if dropped:
            print(f"note: left out to fit the ConfigMap: {', '.join(dropped)}", file=sys.stderr)
        return 0
    for line in result_lines(run, results):
        print(line)
    return 0 if results.summary is not None else NOT_FOUND
