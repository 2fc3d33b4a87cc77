"""Record, from the real local cluster, the statuses that the classifier's unit tests replay.

    python -m tests.cluster.record_fixtures [--out DIR] [--only NAME ...]

Each scenario runs one Job rendered by kubedbt's own renderer (dbt and sidecar images, the `dbt`
ServiceAccount with the sidecar's Role, the results ConfigMap owned by the Job), waits until the
run reaches the state the scenario is about, and writes `DIR/<scenario>.json`:
{"job": ..., "pods": [...], "configmap": ...}, each object as the Python client serialises what
the API returned (ApiClient.sanitize_for_serialization, the same as kubedbt.io.kube.to_json), with
only metadata.managedFields removed.

Pods are followed with a watch, not read once at the end: pods that the Job controller or an
eviction deletes vanish from the API moments after they stop, and their last state (as the
watcher in kubedbt.io.watch keeps it) is the evidence. Every wait has a deadline; the namespace
is deleted in all cases.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.core.naming import DBT_CONTAINER
from kubedbt.core.render import owned_by_job, retry_spec
from kubedbt.core.results import RUN_RESULTS_KEY

JSON = dict[str, Any]

DEFAULT_KUBECONFIG = "/var/lib/kubedbt-cluster/admin.kubeconfig"
DEFAULT_OUT = Path(__file__).parents[1] / "unit" / "fixtures" / "status"
SERVICE_ACCOUNT = "dbt"
# Seconds a slow run runs before it is evicted or its pod deleted: dbt is then inside the model.
ACT_AFTER_RUNNING = 10.0
WATCH_SLICE = 2
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass
class Run:
    """What the recorder has seen of one scenario's Job and pods."""

    job_name: str
    job: JSON | None = None
    pods: dict[str, JSON] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    acted_on: str | None = None
    running_since: float | None = None

    def newest_pod(self) -> JSON | None:
        if not self.pods:
            return None
        return max(self.pods.values(), key=lambda p: p["metadata"]["creationTimestamp"])

    def pods_settled(self) -> bool:
        """Every pod is terminal or gone, so its recorded state is its last one."""
        return all(
            name in self.deleted or pod.get("status", {}).get("phase") in TERMINAL_PHASES
            for name, pod in self.pods.items()
        )


def dbt_state(pod: Mapping[str, Any] | None) -> JSON:
    for status in (pod or {}).get("status", {}).get("containerStatuses") or []:
        if status.get("name") == DBT_CONTAINER:
            return dict(status.get("state") or {})
    return {}


def condition(obj: Mapping[str, Any] | None, kind: str) -> JSON | None:
    for cond in (obj or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def pod_condition(pod: Mapping[str, Any] | None, kind: str) -> JSON | None:
    for cond in (pod or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


# --- the states of interest ---

Done = Callable[[Run], bool]


def job_finished(kind: str, reason: str | None = None) -> Done:
    def done(run: Run) -> bool:
        cond = condition(run.job, kind)
        matches = cond is not None and (reason is None or cond.get("reason") == reason)
        return matches and run.pods_settled()

    return done


def dbt_waiting(*reasons: str) -> Done:
    def done(run: Run) -> bool:
        waiting = dbt_state(run.newest_pod()).get("waiting") or {}
        return waiting.get("reason") in reasons

    return done


def unschedulable(run: Run) -> bool:
    scheduled = pod_condition(run.newest_pod(), "PodScheduled") or {}
    return scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"


def gone_and_job_decided(run: Run) -> bool:
    """The acted-on pod is gone, and the Job finished or replaced it."""
    if run.acted_on is None or run.acted_on not in run.deleted:
        return False
    finished = condition(run.job, "Complete") or condition(run.job, "Failed")
    return bool(finished) or len(run.pods) > 1


# --- what is done to a running pod ---

Action = Callable[[client.CoreV1Api, str, str], None]


def evict(core: client.CoreV1Api, namespace: str, pod: str) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    core.create_namespaced_pod_eviction(pod, namespace, body)


def delete_pod(core: client.CoreV1Api, namespace: str, pod: str) -> None:
    # What `kubectl delete pod` sends: a plain delete with the pod's own grace period.
    core.delete_namespaced_pod(pod, namespace)


def waiting(container: str, *reasons: str) -> Done:
    def done(run: Run) -> bool:
        for status in (run.newest_pod() or {}).get("status", {}).get("initContainerStatuses") or []:
            if status.get("name") == container:
                return (status.get("state") or {}).get("waiting", {}).get("reason") in reasons
        return False

    return done


@dataclass(frozen=True)
class Scenario:
    """One way a run ends, and how to bring it about.

    corrupt_state: the try resumes (`dbt retry`) from a results ConfigMap whose archive is not gzip.
    """

    name: str
    options: Mapping[str, Any]
    done: Done
    timeout: float
    action: Action | None = None
    corrupt_state: bool = False


SLOW = {"vars": {"slow_seconds": 120}}
# The cluster's empty registry (tests/cluster/lib.sh): every tag is missing there.
REGISTRY = os.environ.get("KUBEDBT_TEST_REGISTRY", "127.0.0.1:5901")
# Nothing listens here: a registry that is down.
DOWN_REGISTRY = "127.0.0.1:5999"
PULLING = ("ErrImagePull", "ImagePullBackOff")
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("success", {}, job_finished("Complete"), 300),
    Scenario("test_failure", {"vars": {"fail_test": True}}, job_finished("Failed"), 300),
    Scenario("model_error", {"vars": {"fail_model": True}}, job_finished("Failed"), 300),
    Scenario(
        "parse_error",
        {"vars": {"fail_parse": True}},
        job_finished("Failed", "PodFailurePolicy"),
        300,
    ),
    Scenario(
        "oom_killed",
        {
            "select": ["+customers"],
            "vars": {"memory_hog": True, "memory_hog_mb": 1024},
            "dbt_flags": ["--indirect-selection", "cautious"],
            "container_resources": {"limits": {"memory": "300Mi"}},
        },
        job_finished("Failed"),
        300,
    ),
    Scenario(
        "image_pull", {"image": f"{DOWN_REGISTRY}/kubedbt/dbt:dev"}, dbt_waiting(*PULLING), 120
    ),
    Scenario(
        "image_not_found",
        {"image": f"{REGISTRY}/kubedbt/dbt:no-such-tag"},
        dbt_waiting("ErrImagePull"),
        120,
    ),
    Scenario(
        "sidecar_image_not_found",
        {"sidecar_image": f"{REGISTRY}/kubedbt/sidecar:no-such-tag"},
        waiting("results-uploader", "ErrImagePull"),
        120,
    ),
    Scenario(
        "no_dbt_in_image",
        {"image": "kubedbt/sidecar:dev"},
        job_finished("Failed"),
        120,
    ),
    Scenario("restore_failed", {}, job_finished("Failed"), 120, corrupt_state=True),
    Scenario(
        "warehouse_unreachable",
        {
            "target": "postgres",
            "env_vars": {
                "POSTGRES_HOST": "127.0.0.1",
                "POSTGRES_PORT": "1",  # nothing listens: connection refused
                "POSTGRES_USER": "dbt",
                "POSTGRES_PASSWORD": "unused",
                "POSTGRES_DB": "warehouse",
            },
        },
        job_finished("Failed"),
        120,
    ),
    Scenario(
        "results_missing",
        # The default ServiceAccount may not patch the ConfigMap: nothing is uploaded.
        {"vars": {"fail_test": True}, "service_account_name": "default"},
        job_finished("Failed"),
        300,
    ),
    Scenario(
        "sidecar_oom",
        {"sidecar_resources": {"limits": {"memory": "24Mi"}}, "vars": {"fail_test": True}},
        job_finished("Failed"),
        300,
    ),
    Scenario(
        "sources_stale",
        {"command": "source freshness", "vars": {"source_age_hours": 48}},
        job_finished("Failed"),
        300,
    ),
    Scenario(
        "sources_warn",
        {"command": "source freshness", "vars": {"source_age_hours": 18}},
        job_finished("Complete"),
        300,
    ),
    Scenario(
        "invalid_image", {"image": "Kubedbt/Invalid:Name"}, dbt_waiting("InvalidImageName"), 120
    ),
    Scenario(
        "unschedulable", {"node_selector": {"kubedbt.io/no-such-node": "true"}}, unschedulable, 120
    ),
    Scenario(
        "missing_secret",
        {"env_from": [{"secretRef": {"name": "does-not-exist"}}]},
        dbt_waiting("CreateContainerConfigError"),
        120,
    ),
    Scenario("evicted", SLOW, gone_and_job_decided, 300, action=evict),
    Scenario(
        "deadline_exceeded",
        {**SLOW, "active_deadline_seconds": 15},
        job_finished("Failed", "DeadlineExceeded"),
        300,
    ),
    Scenario("deleted", SLOW, gone_and_job_decided, 300, action=delete_pod),
)


class Recorder:
    """Runs scenarios in one namespace and writes what they left behind."""

    def __init__(self, api: client.ApiClient, namespace: str, out: Path) -> None:
        self.api = api
        self.namespace = namespace
        self.out = out
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)

    def to_json(self, model: Any) -> JSON:
        data: JSON = self.api.sanitize_for_serialization(model)
        data.get("metadata", {}).pop("managedFields", None)
        return data

    def record(self, scenario: Scenario) -> Path:
        base: dict[str, Any] = {
            "command": "build",
            "image": "kubedbt/dbt:dev",
            "sidecar_image": "kubedbt/sidecar:dev",
            "image_pull_policy": "IfNotPresent",
            "namespace": self.namespace,
            "service_account_name": SERVICE_ACCOUNT,
        }
        spec = DbtRunSpec(**{**base, **scenario.options})
        identity = RunIdentity("record_fixtures", scenario.name, "recorded")
        state_from = self.corrupt_state(scenario.name) if scenario.corrupt_state else None
        rendered = render_job(
            retry_spec(spec) if state_from else spec, identity, state_from=state_from
        )
        job = self.batch.create_namespaced_job(self.namespace, rendered)
        configmap = owned_by_job(
            render_results_configmap(spec, identity), job.metadata.name, job.metadata.uid
        )
        self.core.create_namespaced_config_map(self.namespace, configmap)
        run = Run(job_name=job.metadata.name)
        try:
            self.follow(run, scenario)
            recorded_at = time.time()
            stored = self.core.read_namespaced_config_map(
                configmap["metadata"]["name"], self.namespace
            )
            events = self.events(run)
        finally:
            self.batch.delete_namespaced_job(
                run.job_name, self.namespace, propagation_policy="Background"
            )
        pods = sorted(
            run.pods.values(),
            key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]),
        )
        fixture = {
            "job": run.job,
            "pods": pods,
            "configmap": self.to_json(stored),
            "events": events,
            "recorded_at": round(recorded_at, 3),
        }
        path = self.out / f"{scenario.name}.json"
        path.write_text(json.dumps(fixture, indent=2, sort_keys=True) + "\n")
        return path

    def corrupt_state(self, name: str) -> str:
        """A results ConfigMap whose archive is not gzip: restore-state fails on it."""
        configmap = {
            "metadata": {"name": f"corrupt-state-{name}".replace("_", "-")},
            "binaryData": {RUN_RESULTS_KEY: base64.b64encode(b"not gzip").decode()},
        }
        self.core.create_namespaced_config_map(self.namespace, configmap)
        return str(configmap["metadata"]["name"])

    def events(self, run: Run) -> list[JSON]:
        """The Events of the run's Job and pods, as the watch reads them at the end."""
        found = []
        for kind, name in [("Job", run.job_name), *(("Pod", pod) for pod in sorted(run.pods))]:
            listing = self.core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
            )
            found += [self.to_json(event) for event in listing.items]
        return sorted(
            found, key=lambda e: (e["metadata"]["creationTimestamp"], e["metadata"]["name"])
        )

    def follow(self, run: Run, scenario: Scenario) -> None:
        """Watch the run's pods (reading the Job between events) until the scenario is done."""
        start = time.monotonic()
        deadline = start + scenario.timeout
        selector = f"batch.kubernetes.io/job-name={run.job_name}"
        listing = self.core.list_namespaced_pod(self.namespace, label_selector=selector)
        for pod in listing.items:
            run.pods[pod.metadata.name] = self.to_json(pod)
        version = listing.metadata.resource_version
        last_report = ""
        while time.monotonic() < deadline:
            try:
                for event in watch.Watch().stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=selector,
                    resource_version=version,
                    timeout_seconds=WATCH_SLICE,
                ):
                    pod = self.to_json(event["object"])
                    version = pod["metadata"]["resourceVersion"]
                    run.pods[pod["metadata"]["name"]] = pod
                    if event["type"] == "DELETED":
                        run.deleted.add(pod["metadata"]["name"])
                    break  # judge every event before taking the next one
            except ApiException as e:
                if e.status != 410:
                    raise
                version = self.core.list_namespaced_pod(
                    self.namespace, label_selector=selector
                ).metadata.resource_version
            run.job = self.to_json(self.batch.read_namespaced_job(run.job_name, self.namespace))
            report = describe(run)
            if report != last_report:
                print(f"  [{time.monotonic() - start:5.1f}s] {report}", flush=True)
                last_report = report
            self.act(run, scenario)
            if scenario.done(run):
                return
        raise TimeoutError(
            f"{scenario.name}: not done after {scenario.timeout:.0f}s; last seen: {last_report}"
        )

    def act(self, run: Run, scenario: Scenario) -> None:
        if scenario.action is None or run.acted_on is not None:
            return
        pod = run.newest_pod()
        if pod is None or "running" not in dbt_state(pod):
            return
        if run.running_since is None:
            run.running_since = time.monotonic()
        if time.monotonic() - run.running_since >= ACT_AFTER_RUNNING:
            name = pod["metadata"]["name"]
            print(f"  {scenario.action.__name__} {name}", flush=True)
            scenario.action(self.core, self.namespace, name)
            run.acted_on = name


def describe(run: Run) -> str:
    """One line: the Job's conditions and each pod's phase and dbt state."""
    conditions = [
        f"{c['type']}={c['status']}({c.get('reason', '')})"
        for c in (run.job or {}).get("status", {}).get("conditions") or []
    ]
    parts = [f"job[{' '.join(conditions)}]"]
    for name, pod in sorted(run.pods.items()):
        state = dbt_state(pod)
        detail = ""
        for key, value in state.items():
            detail = f"{key}:{value.get('reason', '')}"
            if "exitCode" in value:
                detail += f":{value['exitCode']}"
        gone = " deleted" if name in run.deleted else ""
        parts.append(f"{name[-5:]}[{pod.get('status', {}).get('phase')} dbt={detail}{gone}]")
    return " ".join(parts)


def prepare_namespace(api: client.ApiClient) -> str:
    """A fresh namespace with the dbt ServiceAccount and the sidecar's Role."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    metadata = {
        "generateName": "kubedbt-fixtures-",
        "labels": {"app.kubernetes.io/part-of": "kubedbt"},
    }
    namespace: str = core.create_namespace({"metadata": metadata}).metadata.name
    core.create_namespaced_service_account(namespace, {"metadata": {"name": SERVICE_ACCOUNT}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": "kubedbt-sidecar"}, "rules": [rule]}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "kubedbt-sidecar"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "kubedbt-sidecar",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
    )
    # The sidecar's projected token volume reads this ConfigMap, which a controller publishes.
    deadline = time.monotonic() + 60
    while not core.list_namespaced_config_map(
        namespace, field_selector="metadata.name=kube-root-ca.crt"
    ).items:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no kube-root-ca.crt in {namespace} after 60s")
        time.sleep(1)
    return namespace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture directory")
    names = [s.name for s in SCENARIOS]
    parser.add_argument(
        "--only", action="append", choices=names, help="record this scenario (repeatable)"
    )
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    kubeconfig = os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG)
    api = new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    namespace = prepare_namespace(api)
    print(f"namespace {namespace}", flush=True)
    failed = []
    try:
        recorder = Recorder(api, namespace, args.out)
        for scenario in chosen:
            print(f"{scenario.name}:", flush=True)
            try:
                path = recorder.record(scenario)
            except TimeoutError as e:
                print(f"  FAILED: {e}", flush=True)
                failed.append(scenario.name)
                continue
            print(f"  wrote {path} ({path.stat().st_size} bytes)", flush=True)
    finally:
        try:
            core.delete_namespace(namespace)
            print(f"deleted namespace {namespace}", flush=True)
        except ApiException as e:
            if e.status != 404:
                raise
        api.close()
    if failed:
        print(f"not recorded: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
