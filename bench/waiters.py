"""The measured process: N waiting runs of one system in one asyncio loop, as in one triggerer.

    python -m bench.waiters SYSTEMS KUBECONFIG NAMESPACE JOBS_FILE OUT_FILE

SYSTEMS is `kubedbt` (DbtJobTrigger) or `cncf-10` / `cncf-2` (the cncf provider's
KubernetesJobTrigger polling every 10 s / 2 s), or several of them, comma-separated, to wait on
the same runs with each system's trigger in this one loop. JOBS_FILE lists the runs (job and
ConfigMap names, selector labels). The process starts every trigger, samples the event loop's lag
(how late a 50 ms sleep wakes), its RSS and its open sockets while the runs wait, and writes, for
each system and run, when its trigger yielded and what it said. bench/run.py starts it and reads
OUT_FILE.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

TICK = 0.05


def rss_bytes() -> int:
    """Resident memory of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def sockets() -> int:
    """Open sockets of this process."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def prepare(system: str) -> None:
    """Import what the system's triggers need, so the baseline RSS holds it already."""
    if system == "kubedbt":
        import kubedbt.airflow.trigger  # noqa: F401
    else:
        import airflow.providers.cncf.kubernetes.triggers.job  # noqa: F401


def trigger_for(system: str, kubeconfig: str, namespace: str, run: dict[str, Any]) -> Any:
    """The trigger of SYSTEM for one run."""
    if system == "kubedbt":
        from kubedbt.airflow.trigger import ConnectionArgs, DbtJobTrigger, TriggerArgs
        from kubedbt.io.watch import RunRef, WatchLimits

        args = TriggerArgs(
            run=RunRef(run["job"], namespace, run["configmap"], run["selector"]),
            limits=WatchLimits(startup_timeout=3600, results_timeout=60),
            connection=ConnectionArgs(kubernetes_conn_id=None, config_file=kubeconfig),
        )
        return DbtJobTrigger(**args.to_kwargs())
    from airflow.providers.cncf.kubernetes.triggers.job import KubernetesJobTrigger

    return KubernetesJobTrigger(
        job_name=run["job"],
        job_namespace=namespace,
        pod_names=[],
        pod_namespace=namespace,
        base_container_name="dbt",
        poll_interval=float(system.split("-")[1]),
        config_file=kubeconfig,
        get_logs=False,
        do_xcom_push=False,
    )


async def wait_one(trigger: Any) -> tuple[float, str]:
    """When the trigger yielded, and its status.

    A trigger that raised is recorded with its error: the cncf one raises on a 429 when the
    API server throttles its polls.
    """
    try:
        async for event in trigger.run():
            return time.time(), str(event.payload.get("status"))
    except Exception as e:
        return time.time(), f"raised {type(e).__name__}: {str(e).splitlines()[0]}"
    return time.time(), "none"


async def main(
    systems: list[str], kubeconfig: str, namespace: str, runs: list[dict[str, Any]]
) -> Any:
    """Wait on every run with one trigger of each system, sampling lag, RSS and sockets."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(TICK)
            lags.append(loop.time() - before - TICK)

    for system in systems:
        prepare(system)
    baseline = {"rss": rss_bytes(), "sockets": sockets()}
    tick = asyncio.ensure_future(ticker())
    started = time.time()
    pairs = [(system, run) for system in systems for run in runs]
    waiting = [
        asyncio.ensure_future(wait_one(trigger_for(system, kubeconfig, namespace, run)))
        for system, run in pairs
    ]
    samples = []
    while not all(w.done() for w in waiting):  # bounded by bench/run.py's timeout on this process
        await asyncio.sleep(5)
        if not any(w.done() for w in waiting):
            samples.append({"t": time.time(), "rss": rss_bytes(), "sockets": sockets()})
    stop.set()
    await tick
    events = [w.result() for w in waiting]
    return {
        "systems": systems,
        "runs": len(runs),
        "started": started,
        "baseline": baseline,
        "samples": samples,
        "lags": lags,
        "events": [
            {"system": system, "job": run["job"], "at": at, "status": status}
            for (system, run), (at, status) in zip(pairs, events, strict=True)
        ],
    }


if __name__ == "__main__":
    systems, kubeconfig, namespace, jobs_file, out_file = sys.argv[1:6]
    runs = json.loads(Path(jobs_file).read_text())
    result = asyncio.run(main(systems.split(","), kubeconfig, namespace, runs))
    Path(out_file).write_text(json.dumps(result))
