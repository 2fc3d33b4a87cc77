"""`kubectl dbt runs`: the table of kubedbt runs, newest first.

The PROGRESS column is the results sidecar's live tally (kubedbt.core.live) of a running run,
read from its results ConfigMap: one read per running run, none for the others, which show "-".
"""

from __future__ import annotations

import asyncio
import datetime
import sys
from collections.abc import Mapping, Sequence

from kubedbt.cli.cluster import Cluster
from kubedbt.cli.errors import NOT_FOUND, CliError
from kubedbt.cli.run_info import RunFilter, RunInfo, live_progress, newest_first
from kubedbt.cli.table import age, format_table
from kubedbt.core.live import short_progress

HEADER = ("NAME", "DAG", "TASK", "RUN", "TRY", "STATUS", "PROGRESS", "AGE")
# Key of a run in the progress mapping.
RunKey = tuple[str, str]


def run_table(
    runs: Sequence[RunInfo],
    *,
    now: datetime.datetime,
    with_namespace: bool,
    progress: Mapping[RunKey, str] | None = None,
) -> list[str]:
    """The table `kubectl dbt runs` prints; a NAMESPACE column first with --all-namespaces.

    progress: the PROGRESS cell of each running run, by (namespace, name); others show "-".
    """
    rows = []
    for run in newest_first(runs):
        row = [run.name, run.dag_id, run.task, run.run_id, run.try_number, run.status]
        row.append((progress or {}).get((run.namespace, run.name), "-"))
        row.append(age(run.created, now))
        rows.append([run.namespace, *row] if with_namespace else row)
    return format_table(("NAMESPACE", *HEADER) if with_namespace else HEADER, rows)


async def running_progress(cluster: Cluster, runs: Sequence[RunInfo]) -> dict[RunKey, str]:
    """The PROGRESS cells of the running runs, from their results ConfigMaps.

    A ConfigMap that cannot be read (gone, or no RBAC to read it) costs only its cell.
    """
    running = [run for run in runs if run.status == "Running"]

    async def cell(run: RunInfo) -> str:
        try:
            configmap = await Cluster(cluster.client, run.namespace).configmap(
                run.results_configmap
            )
        except CliError:
            return "?"
        snapshot = live_progress(configmap)
        return short_progress(snapshot) if snapshot is not None else "-"

    cells = await asyncio.gather(*(cell(run) for run in running))
    return {(run.namespace, run.name): text for run, text in zip(running, cells, strict=True)}


def elsewhere_hint(counts: Mapping[str, int]) -> str | None:
    """Where the runs are when the current namespace has none (a new user's first `runs`)."""
    if not counts:
        return None
    where = ", ".join(f"{namespace} ({n})" for namespace, n in sorted(counts.items())[:5])
    more = f" and {len(counts) - 5} more" if len(counts) > 5 else ""
    return f"Runs exist in: {where}{more}. Use -n NAMESPACE, or -A for all namespaces."


async def _namespaces_with_runs(
    cluster: Cluster, wanted: RunFilter, selector: str | None
) -> dict[str, int]:
    """How many matching runs each namespace has; nothing when listing all is not allowed."""
    try:
        jobs = await cluster.list_runs(all_namespaces=True, selector=selector)
    except CliError:  # a namespaced identity may not list cluster-wide: no hint then
        return {}
    counts: dict[str, int] = {}
    for run in map(RunInfo.from_job, jobs):
        if wanted.matches(run):
            counts[run.namespace] = counts.get(run.namespace, 0) + 1
    return counts


async def show_runs(
    cluster: Cluster,
    wanted: RunFilter,
    *,
    all_namespaces: bool,
    selector: str | None,
    now: datetime.datetime,
) -> int:
    """Print the runs that match; exit code 1 (and a note on stderr) when none does."""
    jobs = await cluster.list_runs(all_namespaces=all_namespaces, selector=selector)
    runs = [run for run in map(RunInfo.from_job, jobs) if wanted.matches(run)]
    if not runs:
        where = "any namespace" if all_namespaces else f'namespace "{cluster.namespace}"'
        print(f"No kubedbt runs found in {where}.", file=sys.stderr)
        if not all_namespaces:
            hint = elsewhere_hint(await _namespaces_with_runs(cluster, wanted, selector))
            if hint:
                print(hint, file=sys.stderr)
        return NOT_FOUND
    progress = await running_progress(cluster, runs)
    for line in run_table(runs, now=now, with_namespace=all_namespaces, progress=progress):
        print(line)
    return 0
