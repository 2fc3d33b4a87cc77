"""`kubectl dbt logs RUN`: what dbt printed, from the run's newest pod."""

from __future__ import annotations

import sys

from kubedbt.cli.cluster import Cluster
from kubedbt.cli.errors import CliError
from kubedbt.cli.run_info import RunInfo
from kubedbt.core.classify import latest_pod


async def newest_pod(cluster: Cluster, run: RunInfo) -> str:
    """The name of the run's most recent pod (a Job replaces pods lost to disruptions)."""
    pod = latest_pod(await cluster.pods(run.name))
    if pod is None:
        raise CliError(
            f"run {run.name} has no pods: not started yet, or removed "
            f"(kubectl dbt describe {run.name} -n {run.namespace} says more)"
        )
    return str(pod["metadata"]["name"])


async def show_logs(cluster: Cluster, wanted: str, *, follow: bool, tail: int | None) -> int:
    """Print the dbt container's log; with `follow`, keep printing until the container ends."""
    run = RunInfo.from_job(await cluster.find_run(wanted))
    pod = await newest_pod(cluster, run)
    if follow:
        async for line in cluster.follow_log(pod, tail=tail):
            print(line, flush=True)
        return 0
    text = await cluster.log(pod, tail=tail)
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
    return 0
