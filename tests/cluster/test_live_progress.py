"""Live progress of a real run: the sidecar's tally of dbt's log reaches the watch while dbt runs.

A real dbt build of jaffle_shop whose customers model lasts SLOW_SECONDS runs in the real images
under the chart's RBAC and results-scope admission policy; the test watches it with watch_run
through the real shared informer, as the trigger does, and counts the ConfigMap's updates with a
watch of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubedbt.airflow.trigger import ConnectionArgs
from kubedbt.core import results
from kubedbt.core.live import PROGRESS_ANNOTATION, Snapshot, parse_snapshot
from kubedbt.io.kube import RunClient
from kubedbt.io.live_progress import PROGRESS_INTERVAL
from kubedbt.io.retry import DEFAULT_POLICY
from kubedbt.io.watch import RunRef, WatchLimits, watch_run
from tests.cluster.test_tracking import Run, _informer_of
from tests.conftest import admin_kubeconfig, namespace_with_chart

pytestmark = pytest.mark.cluster

SLOW_SECONDS = 150
SLOW_NODE = "model.jaffle_shop.customers"


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    with namespace_with_chart(
        api_client, "kubedbt-live", "launcher.createServiceAccount=true"
    ) as name:
        yield name


async def _configmap_updates(namespace: str, name: str, seen: list[tuple[float, Any]]) -> None:
    """Every version of the ConfigMap, with when it was seen (a watch of the test's own)."""
    connection = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
    async with connection.async_hook().get_conn() as api_client:
        runs = RunClient(api_client, DEFAULT_POLICY)
        method = runs.core.list_namespaced_config_map
        selector = {"field_selector": f"metadata.name={name}"}
        items, version = await runs.list_objects(method, namespace, **selector)
        seen += [(time.time(), item) for item in items]
        while True:  # bounded by the test: the scenario cancels it
            events = runs.watch(
                method, namespace, resource_version=version, timeout_seconds=60, **selector
            )
            async with contextlib.aclosing(events):
                async for _, configmap in events:
                    seen.append((time.time(), configmap))
                    version = configmap["metadata"]["resourceVersion"]


async def _runs_table(namespace: str) -> str:
    """`kubectl dbt runs -n NAMESPACE`, as a person runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubedbt.cli",
        "runs",
        "-n",
        namespace,
        env={**os.environ, "KUBECONFIG": str(admin_kubeconfig())},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


def _annotations(configmap: Any) -> dict[str, str]:
    return dict((configmap.get("metadata") or {}).get("annotations") or {})


def test_progress_arrives_while_dbt_runs_at_a_bounded_rate(
    namespace: str, kubeconfig: Path, measured: Any
) -> None:
    run = Run(kubeconfig, namespace, slow_seconds=SLOW_SECONDS)
    ref = RunRef(
        job_name=run.job_name,
        namespace=namespace,
        configmap_name=run.job_name + "-results",
        selector=dict(run.trigger().args.run.selector),
    )
    snapshots: list[tuple[float, Snapshot, str]] = []
    tables: list[str] = []

    async def scenario() -> tuple[Any, list[tuple[float, Any]], float]:
        updates: list[tuple[float, Any]] = []
        async with _informer_of(run) as informer:
            await run.create()
            counting = asyncio.ensure_future(
                _configmap_updates(namespace, ref.configmap_name, updates)
            )

            def on_progress(snapshot: Snapshot, command: str) -> None:
                snapshots.append((time.time(), snapshot, command))
                running = [n.unique_id for n in snapshot.running]
                if SLOW_NODE in running and not tables:
                    tables.append("pending")
                    asyncio.ensure_future(_runs_table(namespace)).add_done_callback(
                        lambda done: tables.append(done.result())
                    )

            started = time.time()
            try:
                result = await watch_run(
                    informer,
                    ref,
                    WatchLimits(startup_timeout=120, results_timeout=30),
                    on_progress=on_progress,
                )
            finally:
                counting.cancel()
                await asyncio.gather(counting, return_exceptions=True)
        return result, updates, time.time() - started

    result, updates, duration = asyncio.run(asyncio.wait_for(scenario(), SLOW_SECONDS + 400))

    # The run and its results upload are as they would be without live progress.
    assert result.evidence.results is not None
    assert result.evidence.results.status == "uploaded"
    assert result.evidence.results.summary is not None
    assert result.evidence.results.summary["nodes"] == 28
    assert duration > SLOW_SECONDS

    # Snapshots came while dbt ran, each a step forward, naming the slow model as it ran.
    assert len(snapshots) >= 3, snapshots
    assert {command for _, _, command in snapshots} == {"dbt build"}
    done = [snapshot.done_count for _, snapshot, _ in snapshots]
    assert done == sorted(done), done
    assert all(snapshot.total == 28 for _, snapshot, _ in snapshots[1:]), snapshots
    during = [s for _, s, _ in snapshots if SLOW_NODE in [n.unique_id for n in s.running]]
    assert during, snapshots
    assert all(s.done_count < 28 for s in during)
    assert snapshots[-1][1].done_count == 28  # the final tally comes with the results

    # The sidecar's patches: only the progress annotation changes while the upload is pending,
    # at most once per PROGRESS_INTERVAL (the final upload carries the final tally).
    pending = [
        (at, _annotations(cm)[PROGRESS_ANNOTATION])
        for at, cm in updates
        if _annotations(cm).get(results.UPLOAD_STATUS, "pending") == "pending"
        and PROGRESS_ANNOTATION in _annotations(cm)
    ]
    changes = [pending[0]] + [b for a, b in itertools.pairwise(pending) if a[1] != b[1]]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(changes)]
    assert len(changes) >= 2, changes
    assert all(gap > PROGRESS_INTERVAL - 2 for gap in gaps), gaps  # 2 s for the watch's delay
    assert len(changes) <= duration / PROGRESS_INTERVAL + 1
    final = [cm for _, cm in updates if _annotations(cm).get(results.UPLOAD_STATUS) == "uploaded"]
    assert final, "the final upload was not seen"
    parsed = parse_snapshot(_annotations(final[-1])[PROGRESS_ANNOTATION])
    assert parsed is not None
    assert parsed.done_count == 28
    assert parsed.running == ()
    # No progress patch after the final upload: the last version is the uploaded one.
    assert _annotations(updates[-1][1]).get(results.UPLOAD_STATUS) == "uploaded"

    # `kubectl dbt runs` showed the PROGRESS column while the slow model ran.
    assert len(tables) == 2, tables
    header, *rows = tables[1].splitlines()
    assert header.split()[6] == "PROGRESS"
    (row,) = [line.split() for line in rows if line.startswith(run.job_name)]
    assert row[5] == "Running"
    assert row[6].endswith("/28")
    assert row[7:9] == ["running", "customers"], row
    measured(
        f"{duration:.0f} s run: {len(snapshots)} snapshots reached the watch, "
        f"{len(changes)} progress patches, shortest gap {min(gaps):.1f} s"
    )
