"""Benchmark: kubedbt's trigger against the cncf provider's KubernetesJobTrigger, side by side.

    python -m bench.run --runs 1000 [--systems kubedbt,cncf-10,cncf-2] [--wait-seconds 90]
    python -m bench.run --runs 100 --one-loop

On the local cluster (`make cluster-up`), with kwok (built by tests/cluster/build-binaries.sh)
standing in for a node: for each system in turn, N Jobs are created in the namespace
kubedbt-bench with kubedbt's own renderer, bound to the kwok node, whose stages
(bench/kwok-stages.yaml) run each pod for a while and then end it Succeeded. Shortly before, the
results ConfigMaps are filled the way kubedbt's sidecar fills them. Meanwhile a separate process
(bench/waiters.py) waits on all N with one trigger each in one event loop, as a triggerer would.
With --one-loop, one set of N Jobs is waited on by every system's triggers in one loop, as one
triggerer running both would: the detection latencies then compare under the same load (the
loop's lag, RSS and sockets are shared, and requests are counted per ServiceAccount: kubedbt's,
and one for both cncf intervals).

Measured: detection latency (the trigger's event after this process's own watch saw the Job
complete), API requests per run per minute while the runs wait (counted at the API server, from
its audit log of the bench's ServiceAccounts), event-loop lag, RSS and sockets per run.
Results go to bench/results/N.json and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.config import new_client_from_config
from tests.conftest import admin_kubeconfig, write_kubeconfig

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.airflow.trigger import ConnectionArgs
from kubedbt.core import naming, packing
from kubedbt.core.progress import job_finished
from kubedbt.io.kube import RunClient
from kubedbt.io.uploader import patch_body

ROOT = Path(__file__).parents[1]
STATE = Path(os.environ.get("KUBEDBT_STATE", "/var/lib/kubedbt-cluster"))
KWOK = STATE / "bin" / "kwok"
AUDIT_LOG = STATE / "logs" / "audit.log"
NAMESPACE = "kubedbt-bench"
NODE = "kwok-bench-0"
SYSTEMS = ("kubedbt", "cncf-10", "cncf-2")
RUN_FOR = "bench.kubedbt.io/run-for"


def start_kwok(api: client.ApiClient, log: Path) -> subprocess.Popen[bytes]:
    """Kwok as a host process managing one fake node, which it creates Ready."""
    process = subprocess.Popen(
        [
            str(KWOK),
            "--kubeconfig",
            str(admin_kubeconfig()),
            "--config",
            str(ROOT / "bench" / "kwok-stages.yaml"),
            "--manage-nodes-with-label-selector",
            "type=kwok",
            "--node-lease-duration-seconds",
            "40",
            "--cidr",
            "10.250.0.0/16",
            "--node-ip",
            "10.250.255.1",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    node = {
        "metadata": {
            "name": NODE,
            "labels": {"type": "kwok", "kubernetes.io/hostname": NODE},
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {
            "taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]
        },
        "status": {
            "allocatable": {"cpu": "100k", "memory": "100Ti", "pods": "20000"},
            "capacity": {"cpu": "100k", "memory": "100Ti", "pods": "20000"},
        },
    }
    core = client.CoreV1Api(api)
    if not core.list_node(field_selector=f"metadata.name={NODE}").items:
        core.create_node(node)
    return process


def prepare_namespace(api: client.ApiClient, workdir: Path) -> dict[str, Path]:
    """A fresh namespace, one ServiceAccount per system (so the audit log tells them apart)."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    remove_namespace(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    read = ["get", "list", "watch"]
    rules = [
        {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": read},
        {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": read},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        # kubedbt lists a run's Events at its end, as evidence; the chart's launcher Role allows it.
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    ]
    rbac.create_namespaced_role(NAMESPACE, {"metadata": {"name": "bench"}, "rules": rules})
    kubeconfigs = {}
    for system in SYSTEMS:
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": system}})
        subject = {"kind": "ServiceAccount", "name": system, "namespace": NAMESPACE}
        binding = {
            "metadata": {"name": system},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bench"},
            "subjects": [subject],
        }
        rbac.create_namespaced_role_binding(NAMESPACE, binding)
        token = core.create_namespaced_service_account_token(
            system, NAMESPACE, {"spec": {"expirationSeconds": 86400}}
        ).status.token
        kubeconfigs[system] = workdir / f"{system}.kubeconfig"
        write_kubeconfig(kubeconfigs[system], api, NAMESPACE, token)
    return kubeconfigs


def remove_namespace(api: client.ApiClient) -> None:
    """Delete the namespace and wait for it; pods kwok leaves behind lose their finalizers."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 600
    while core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {NAMESPACE} is still there after 600 s")
        core.delete_namespace(NAMESPACE)
        time.sleep(5)
        for pod in core.list_namespaced_pod(NAMESPACE).items:
            if pod.metadata.finalizers:
                patch = {"metadata": {"finalizers": None}}
                core.patch_namespaced_pod(pod.metadata.name, NAMESPACE, patch)


def _spec(run_ms: int) -> DbtRunSpec:
    return DbtRunSpec(
        command="build",
        image="kubedbt/dbt:dev",
        sidecar_image="kubedbt/sidecar:dev",
        image_pull_policy="IfNotPresent",
        namespace=NAMESPACE,
        service_account_name="default",
        node_selector={"type": "kwok"},
        tolerations=({"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},),
        annotations={RUN_FOR: f"{run_ms}ms"},  # a Go duration, for kwok
    )


def _run_results(job: str) -> dict[str, Any]:
    """A small run_results.json of 28 successful nodes, as jaffle_shop's build writes."""
    node = {"status": "success", "timing": [], "thread_id": "Thread-1", "execution_time": 0.1}
    nodes = [{**node, "unique_id": f"model.jaffle_shop.m{i}", "message": "OK"} for i in range(28)]
    metadata = {"dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json"}
    metadata["invocation_id"] = job
    return {"metadata": metadata, "results": nodes, "elapsed_time": 12.3, "args": {}}


async def create_runs(n: int, end_at: float, system: str) -> list[dict[str, Any]]:
    """N Jobs and ConfigMaps whose pods all end near `end_at`; the runs' names and selectors."""
    connection = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
    gate = asyncio.Semaphore(20)
    runs: list[dict[str, Any]] = []

    async def one(runs_client: RunClient, i: int) -> None:
        identity = RunIdentity(dag_id="bench", task_id=system, run_id=f"r{i}")
        spec = _spec(max(1000, int((end_at - time.time()) * 1000)))
        async with gate:
            await runs_client.create_run(
                render_job(spec, identity), render_results_configmap(spec, identity)
            )
        runs.append(
            {
                "job": naming.job_name(identity),
                "configmap": naming.results_configmap_name(identity),
                "selector": naming.selector_labels(identity),
            }
        )

    async with connection.async_hook().get_conn() as api_client:
        runs_client = RunClient(api_client)
        await asyncio.gather(*(one(runs_client, i) for i in range(n)))
    return runs


async def upload_results(runs: list[dict[str, Any]], at: float) -> None:
    """At `at`, fill every results ConfigMap as the sidecar does when dbt ends."""
    await asyncio.sleep(max(0.0, at - time.time()))
    connection = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
    gate = asyncio.Semaphore(20)
    async with connection.async_hook().get_conn() as api_client:
        runs_client = RunClient(api_client)

        async def one(run: dict[str, Any]) -> None:
            data, binary, status = packing.pack(_run_results(run["job"]), [])
            async with gate:
                await runs_client.patch_configmap(
                    run["configmap"], NAMESPACE, patch_body(data, binary, status, None), (10, 30)
                )

        await asyncio.gather(*(one(r) for r in runs))


async def completions(expected: set[str], timeout: float) -> dict[str, float]:
    """When this process's own watch saw each Job complete."""
    seen: dict[str, float] = {}
    connection = ConnectionArgs(kubernetes_conn_id=None, config_file=str(admin_kubeconfig()))
    deadline = time.time() + timeout
    async with connection.async_hook().get_conn() as api_client:
        runs_client = RunClient(api_client)
        method = runs_client.batch.list_namespaced_job
        items, version = await runs_client.list_objects(method, NAMESPACE)
        seen.update({j["metadata"]["name"]: time.time() for j in items if job_finished(j)})
        while not expected <= seen.keys() and time.time() < deadline:
            events = runs_client.watch(
                method, NAMESPACE, resource_version=version, timeout_seconds=60
            )
            async with contextlib.aclosing(events):  # the break must release the stream
                async for event_type, job in events:
                    version = job["metadata"]["resourceVersion"]
                    if event_type == "BOOKMARK":
                        continue
                    name = job["metadata"]["name"]
                    if name in expected and name not in seen and job_finished(job):
                        seen[name] = time.time()
                    if expected <= seen.keys():
                        break
    return seen


async def measure(
    systems: list[str], n: int, wait: float, kubeconfigs: dict[str, Path], workdir: Path
) -> list[dict[str, Any]]:
    """Create N runs, wait on them with every system's triggers in one process, summarise.

    The process is bench/waiters.py; one row per system.
    """
    name = systems[0] if len(systems) == 1 else "oneloop"
    start = time.time()
    end_at = start + n / 15 + wait  # creation runs at about 15-30 Jobs a second here
    runs = await create_runs(n, end_at, name)
    created = time.time()
    jobs_file, out_file = workdir / f"{name}.jobs.json", workdir / f"{name}.out.json"
    jobs_file.write_text(json.dumps(runs))
    # KUBECONFIG too: the provider's async hook ignores its trigger's config_file, so the cncf
    # triggers run as the first cncf system's ServiceAccount.
    cncf = next((s for s in systems if s != "kubedbt"), systems[0])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KUBECONFIG": str(kubeconfigs[cncf])}
    waiters = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.waiters",
        ",".join(systems),
        str(kubeconfigs[systems[0]]),
        NAMESPACE,
        str(jobs_file),
        str(out_file),
        env=env,
    )
    seen, _ = await asyncio.gather(
        completions({r["job"] for r in runs}, timeout=end_at - time.time() + 600),
        upload_results(runs, end_at - 5),
    )
    await asyncio.wait_for(waiters.wait(), timeout=600)
    out = json.loads(out_file.read_text())
    users = {s: s if s == "kubedbt" else cncf for s in systems}
    return [summarise(s, users[s], n, out, seen, start, created) for s in systems]


def audit_requests(username: str, since: float, until: float) -> int:
    """Requests of `username` the API server received in [since, until], from its audit log."""
    count = 0
    ids: set[str] = set()
    for line in AUDIT_LOG.read_text(errors="replace").splitlines():
        if username not in line:
            continue
        entry = json.loads(line)
        if entry.get("user", {}).get("username") != username or entry["auditID"] in ids:
            continue
        received = entry["requestReceivedTimestamp"]
        at = time.mktime(time.strptime(received[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if since <= at <= until:
            ids.add(entry["auditID"])
            count += 1
    return count


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarise(
    system: str,
    user: str,
    n: int,
    out: dict[str, Any],
    seen: dict[str, float],
    start: float,
    created: float,
) -> dict[str, Any]:
    """The figures of one system, from what the waiters and this process saw.

    `user` is the ServiceAccount whose requests are counted.
    """
    events = [e for e in out["events"] if e["system"] == system]
    latencies = [e["at"] - seen[e["job"]] for e in events if e["job"] in seen]
    first_end = min(seen.values()) if seen else time.time()
    window = (out["started"] + 15, first_end - 5)  # every run listed and waiting, none ended
    requests = audit_requests(f"system:serviceaccount:{NAMESPACE}:{user}", *window)
    minutes = max(window[1] - window[0], 1) / 60
    peak = max(out["samples"], key=lambda s: s["rss"]) if out["samples"] else out["baseline"]
    lags = out["lags"]
    return {
        "system": system,
        "in_one_loop_with": [s for s in out["systems"] if s != system],
        "runs": n,
        "succeeded": sum(e["status"] == "success" for e in events),
        "detection_p50_ms": _percentile(latencies, 0.5) * 1000,
        "detection_p99_ms": _percentile(latencies, 0.99) * 1000,
        "requests_per_run_min": requests / n / minutes,
        "loop_lag_p99_ms": _percentile(lags, 0.99) * 1000,
        "loop_lag_max_ms": max(lags) * 1000 if lags else float("nan"),
        "rss_per_run_kb": (peak["rss"] - out["baseline"]["rss"]) / n / 1024,
        "sockets": peak["sockets"] - out["baseline"]["sockets"],
        "waiting_window_s": window[1] - window[0],
        "create_seconds": created - start,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table, with ratios against cncf polling every 10 s."""
    base = next((r for r in rows if r["system"] == "cncf-10"), None)
    columns = [
        ("detection p50 ms", "detection_p50_ms"),
        ("detection p99 ms", "detection_p99_ms"),
        ("requests/run/min", "requests_per_run_min"),
        ("loop lag p99 ms", "loop_lag_p99_ms"),
        ("loop lag max ms", "loop_lag_max_ms"),
        ("RSS/run KB", "rss_per_run_kb"),
        ("sockets", "sockets"),
    ]
    lines = ["| system | runs | " + " | ".join(c for c, _ in columns) + " |"]
    lines.append("|---" * (len(columns) + 2) + "|")
    for row in rows:
        cells = []
        for _, key in columns:
            value = row[key]
            ratio = ""
            if base is not None and row is not base and base[key]:
                ratio = f" ({value / base[key]:.2g}x)"
            cells.append(f"{value:.3g}{ratio}")
        lines.append(f"| {row['system']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark for each system in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--wait-seconds", type=float, default=90)
    parser.add_argument(
        "--one-loop", action="store_true", help="every system's triggers on the same runs, one loop"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless every system saw every run succeed"
    )
    options = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="kubedbt-bench-airflow-"))
    api = new_client_from_config(str(admin_kubeconfig()))
    with tempfile.TemporaryDirectory(prefix="kubedbt-bench-") as tmp:
        workdir = Path(tmp)
        kwok = start_kwok(api, workdir / "kwok.log")
        try:
            systems = options.systems.split(",")
            rounds = [systems] if options.one_loop else [[system] for system in systems]
            rows = []
            for together in rounds:
                kubeconfigs = prepare_namespace(api, workdir)
                measured = asyncio.run(
                    measure(together, options.runs, options.wait_seconds, kubeconfigs, workdir)
                )
                for row in measured:
                    print(json.dumps(row), flush=True)
                rows.extend(measured)
        finally:
            remove_namespace(api)
            client.CoreV1Api(api).delete_node(NODE)
            kwok.terminate()
            kwok.wait(timeout=30)
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    name = f"{options.runs}-one-loop" if options.one_loop else str(options.runs)
    (results_dir / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    failed = [r["system"] for r in rows if r["succeeded"] != r["runs"]]
    if options.check and failed:
        sys.exit(f"not every run was seen to succeed by: {', '.join(failed)}")


if __name__ == "__main__":
    main()
