"""`kubectl dbt runs`: the table of kubedbt runs, newest first."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence

from kubedbt.cli.cluster import Cluster
from kubedbt.cli.errors import NOT_FOUND
from kubedbt.cli.run_info import RunFilter, RunInfo, newest_first
from kubedbt.cli.table import age, format_table

HEADER = ("NAME", "DAG", "TASK", "RUN", "TRY", "STATUS", "AGE")


def run_table(
    runs: Sequence[RunInfo], *, now: datetime.datetime, with_namespace: bool
) -> list[str]:
    """The table `kubectl dbt runs` prints; a NAMESPACE column first with --all-namespaces."""
    rows = []
    for run in newest_first(runs):
        row = [run.name, run.dag_id, run.task, run.run_id, run.try_number, run.status]
        row.append(age(run.created, now))
        rows.append([run.namespace, *row] if with_namespace else row)
    return format_table(("NAMESPACE", *HEADER) if with_namespace else HEADER, rows)


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
        return NOT_FOUND
    for line in run_table(runs, now=now, with_namespace=all_namespaces):
        print(line)
    return 0
