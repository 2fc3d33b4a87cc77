"""Rendering the Job and the results ConfigMap of one dbt run, as plain dicts.

The pod has two containers that share an emptyDir mounted at /kubedbt:
- `dbt` runs the user's image with `dbt <command> ...` as an argument list, under kubedbt-launch
  (installed into its own emptyDir by the `install-launcher` init container from kubedbt's image).
  The launcher is PID 1: when the pod is asked to stop (deletion, eviction, activeDeadlineSeconds,
  kubedbt's own stop) it passes the kubelet's SIGTERM on as the SIGINT dbt stops on, so dbt
  cancels its warehouse queries and writes run_results within the grace period. dbt's target and
  log directories are on the shared emptyDir, so concurrent runs of one project never share
  artifacts, and its log file is JSON (the evidence the classifier reads).
- `results-uploader`, a native sidecar (an init container with restartPolicy Always), waits for
  the kubelet to stop it once dbt has exited, then writes run_results.json and a digest of the JSON
  log into the ConfigMap. Only the sidecar gets a service account token. With artifacts_url it
  also copies target/ and the log to object storage; only it gets artifacts_secret's keys.

The podFailurePolicy follows dbt's exit codes (https://docs.getdbt.com/reference/exit-codes):
- 0: success.
- 1: the run finished but nodes errored or tests failed; run_results.json is written. Running the
  same pod again changes nothing, so the Job fails at once (FailJob); Airflow decides on retries.
- 2: dbt could not run at all (parse, profile, target or project error), no run_results.json.
  Deterministic as well: FailJob.
- 130: the launcher interrupted dbt because the pod was stopped (deleted, evicted, preempted,
  drained). FailJob: the results of what ran are uploaded, and Airflow's next try resumes from
  them (`dbt retry`) rather than a new pod starting the whole command over.
- any other code (137 for OOMKilled) counts against backoffLimit, which is 0 by default: Airflow
  owns retries and its classifier tells which are worth one.
A pod lost to a disruption (the DisruptionTarget condition) before dbt ran, or whose dbt did not
stop within the grace period, is ignored by the count and replaced: nothing about the run failed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from kubedbt.core import naming
from kubedbt.core.artifacts import run_url
from kubedbt.core.command import (
    ARTIFACTS_DIR,
    JSON_LOG_FILE,
    LAUNCHER,
    LAUNCHER_DIR,
    SELECTED_FILE,
    STATE_DIR,
    STOP_MARKER_FILE,
    TARGET_PATH,
    command_line,
    dbt_args,
    list_args,
)
from kubedbt.core.manifests import (
    ConfigMapManifest,
    JobManifest,
    OwnerReference,
    SecretManifest,
)
from kubedbt.core.naming import (
    DBT_CONTAINER,
    LAUNCHER_CONTAINER,
    RESTORE_CONTAINER,
    SIDECAR_CONTAINER,
    RunIdentity,
)
from kubedbt.core.podtemplate import merge_pod_template
from kubedbt.core.profiles import profile_mount, profile_volume
from kubedbt.core.results import RUN_RESULTS_KEY
from kubedbt.core.spec import DbtRunSpec
from kubedbt.core.validate_pod import (
    ARTIFACTS_VOLUME,
    LAUNCHER_VOLUME,
    PREVIOUS_VOLUME,
    TOKEN_VOLUME,
)

PREVIOUS_DIR: Final = "/kubedbt-previous"
# Where kubedbt's image carries the launcher that install-launcher copies for the dbt container.
LAUNCHER_IN_IMAGE: Final = "/usr/local/bin/kubedbt-launch"
TOKEN_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_UID: Final = 1000
Owned = TypeVar("Owned", ConfigMapManifest, SecretManifest)

ANNOTATION_COMMAND: Final = naming.LABEL_PREFIX + "dbt-command"
ANNOTATION_RESULTS: Final = naming.LABEL_PREFIX + "results-configmap"
ANNOTATION_UPLOAD_STATUS: Final = naming.LABEL_PREFIX + "upload-status"

# The launcher's exit code when it interrupted dbt because the pod was stopped (128 + SIGINT).
INTERRUPTED_EXIT_CODE: Final = 130
# Exit codes of the dbt container that no in-cluster retry can fix (see the module docstring).
TERMINAL_DBT_EXIT_CODES: Final = (1, 2, INTERRUPTED_EXIT_CODE)
# Seconds the launcher gives `dbt ls` (listing what an interrupted dbt never reached) out of the
# grace period; the rest is the uploader's.
LIST_SHARE: Final = 0.5

# Environment defaults for dbt; the DAG's env_vars override them. Colours would litter kubectl logs
# and usage tracking would reach for the internet from inside the cluster.
DBT_ENV_DEFAULTS: Final = {"DBT_USE_COLORS": "false", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}

_POD_SECURITY: Final = {
    "runAsNonRoot": True,
    "runAsUser": DEFAULT_UID,
    "runAsGroup": DEFAULT_UID,
    "fsGroup": DEFAULT_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY: Final = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
# kubedbt's own containers when sidecar_resources is unset. The uploader streams the results, so
# its memory does not grow with their size (tests/cluster/test_sidecar.py: 50 MB within 128Mi).
DEFAULT_SIDECAR_RESOURCES: Final = {
    "requests": {"cpu": "10m", "memory": "64Mi"},
    "limits": {"memory": "128Mi"},
}


def render_job(
    spec: DbtRunSpec,
    identity: RunIdentity,
    *,
    state_from: str | None = None,
    annotations: Mapping[str, str] | None = None,
    profile_secret: str | None = None,
) -> JobManifest:
    """The batch/v1 Job that runs one try of the dbt command in `spec`.

    `state_from` names a previous try's results ConfigMap: its run_results.json is unpacked into
    STATE_DIR before dbt starts, for `dbt retry --state` (see retry_spec). `annotations` are
    kubedbt's own (kubedbt.io/...), on the Job only. `profile_secret` names the try's Secret
    holding the profiles.yml rendered from profile_conn_id (see kubedbt.core.profiles): only the
    dbt container mounts it, and the spec must point dbt at it (profiles.profile_spec).
    """
    name = naming.job_name(identity)
    labels = {**spec.labels, **naming.run_labels(identity)}
    run_annotations = {
        **spec.annotations,
        **naming.run_annotations(identity),
        ANNOTATION_COMMAND: command_line(spec),
        ANNOTATION_RESULTS: naming.results_configmap_name(identity),
    }
    template: dict[str, Any] = {
        "metadata": {"labels": dict(labels), "annotations": dict(run_annotations)},
        "spec": _pod_spec(spec, identity, state_from, profile_secret),
    }
    if spec.pod_template is not None:
        template = merge_pod_template(spec.pod_template, template)
    job: JobManifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {**run_annotations, **(annotations or {})},
        },
        "spec": {
            "backoffLimit": spec.backoff_limit,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "podFailurePolicy": _pod_failure_policy(),
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }
    if spec.active_deadline_seconds is not None:
        job["spec"]["activeDeadlineSeconds"] = spec.active_deadline_seconds
    # The manifest owns all its parts: no dict is shared with the spec, the constants or itself.
    return copy.deepcopy(job)


def render_results_configmap(spec: DbtRunSpec, identity: RunIdentity) -> ConfigMapManifest:
    """The empty ConfigMap the sidecar fills; created with the Job and owned by it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": naming.results_configmap_name(identity),
            "namespace": spec.namespace,
            "labels": {**spec.labels, **naming.run_labels(identity)},
            "annotations": {
                **naming.run_annotations(identity),
                ANNOTATION_UPLOAD_STATUS: "pending",
            },
        },
        "data": {},
    }


def owned_by_job(configmap: Owned, job_name: str, job_uid: str) -> Owned:
    """A copy of the ConfigMap or Secret owned by the Job: the garbage collector takes both."""
    owner: OwnerReference = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job_name,
        "uid": job_uid,
        "controller": False,
        "blockOwnerDeletion": False,
    }
    result = copy.deepcopy(configmap)
    result["metadata"]["ownerReferences"] = [owner]
    return result


def _pod_failure_policy() -> dict[str, Any]:
    # dbt's own verdicts first: an evicted pod whose dbt was interrupted (130) fails the Job too.
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": DBT_CONTAINER,
                    "operator": "In",
                    "values": list(TERMINAL_DBT_EXIT_CODES),
                },
            },
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }


def _pod_spec(
    spec: DbtRunSpec, identity: RunIdentity, state_from: str | None, profile_secret: str | None
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        # Only the sidecar needs API access: it alone mounts the projected token volume below.
        "automountServiceAccountToken": False,
        # Explicit, so no pod template can turn it on: dbt would read the sidecar's token in /proc.
        "shareProcessNamespace": False,
        "terminationGracePeriodSeconds": spec.termination_grace_period,
        "securityContext": {**copy.deepcopy(_POD_SECURITY), **spec.security_context},
        "initContainers": [_launcher_container(spec), _sidecar_container(spec, identity)],
        "containers": [_dbt_container(spec)],
        "volumes": [
            {"name": ARTIFACTS_VOLUME, "emptyDir": {}},
            {"name": LAUNCHER_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
            _token_volume(),
            *spec.volumes,
        ],
    }
    optional = {
        "serviceAccountName": spec.service_account_name,
        "imagePullSecrets": [{"name": n} for n in spec.image_pull_secrets],
        "nodeSelector": spec.node_selector,
        "tolerations": list(spec.tolerations),
        "affinity": spec.affinity,
        "priorityClassName": spec.priority_class_name,
    }
    pod.update({key: value for key, value in optional.items() if value})
    if profile_secret is not None:
        pod["volumes"].append(profile_volume(profile_secret))
        pod["containers"][0]["volumeMounts"].append(profile_mount())
    if state_from is not None:
        pod["initContainers"].insert(1, _restore_state_container(spec))
        pod["volumes"].append(
            {
                "name": PREVIOUS_VOLUME,
                "configMap": {
                    "name": state_from,
                    "items": [{"key": RUN_RESULTS_KEY, "path": RUN_RESULTS_KEY}],
                },
            }
        )
    return pod


def retry_spec(spec: DbtRunSpec) -> DbtRunSpec:
    """The spec of a try that reruns only what the previous try did not finish (`dbt retry`).

    dbt retry repeats the previous invocation's own arguments (selection, vars, full refresh) for
    the nodes that errored, failed or were skipped, reading them from the run_results.json in
    --state; render_job(..., state_from=...) puts that file there.
    """
    return dataclasses.replace(
        spec,
        command="retry",
        select=(),
        exclude=(),
        selector=None,
        full_refresh=False,
        macro=None,
        macro_args={},
        state=STATE_DIR,
    )


def _restore_state_container(spec: DbtRunSpec) -> dict[str, Any]:
    container = _kubedbt_container(
        spec,
        RESTORE_CONTAINER,
        ["restore-state", "--archive", f"{PREVIOUS_DIR}/{RUN_RESULTS_KEY}", "--into", STATE_DIR],
        [
            {"name": ARTIFACTS_VOLUME, "mountPath": ARTIFACTS_DIR},
            {"name": PREVIOUS_VOLUME, "mountPath": PREVIOUS_DIR, "readOnly": True},
        ],
    )
    # Its one-line refusal (an archive too large or damaged) becomes the init_failed reason.
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _kubedbt_container(
    spec: DbtRunSpec, name: str, args: list[str], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """A container of kubedbt's own image (`kubedbt-sidecar ARGS`), small and locked down."""
    container: dict[str, Any] = {
        "name": name,
        "image": spec.sidecar_image,
        "command": ["kubedbt-sidecar"],
        "args": args,
        "volumeMounts": mounts,
        "resources": copy.deepcopy(spec.sidecar_resources or DEFAULT_SIDECAR_RESOURCES),
        "securityContext": {**copy.deepcopy(_CONTAINER_SECURITY), "readOnlyRootFilesystem": True},
    }
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy
    return container


def _launcher_container(spec: DbtRunSpec) -> dict[str, Any]:
    """Copies kubedbt-launch from kubedbt's image into the volume the dbt container runs it from."""
    container = _kubedbt_container(
        spec,
        LAUNCHER_CONTAINER,
        ["install", LAUNCHER],
        [{"name": LAUNCHER_VOLUME, "mountPath": LAUNCHER_DIR}],
    )
    container["command"] = [LAUNCHER_IN_IMAGE]
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def launcher_args(spec: DbtRunSpec) -> list[str]:
    """The dbt container's arguments: kubedbt-launch's options, then `cmds` and dbt's arguments.

    When the pod is stopped, the launcher interrupts dbt, records when in STOP_MARKER_FILE and,
    once dbt has exited, lists what the command selected into SELECTED_FILE (for the commands
    `dbt retry` can resume), within half the grace period.
    """
    args = ["run", "--marker", STOP_MARKER_FILE]
    listing = list_args(spec)
    if listing is not None:
        timeout = max(1, int(spec.termination_grace_period * LIST_SHARE))
        args += [
            "--after-interrupt",
            json.dumps([*spec.cmds, *listing]),
            "--after-interrupt-output",
            SELECTED_FILE,
            "--after-interrupt-timeout",
            str(timeout),
        ]
    return [*args, "--", *spec.cmds, *dbt_args(spec)]


def _dbt_container(spec: DbtRunSpec) -> dict[str, Any]:
    user_env = {entry["name"] for entry in spec.env_vars}
    env = [{"name": k, "value": v} for k, v in DBT_ENV_DEFAULTS.items() if k not in user_env]
    container: dict[str, Any] = {
        "name": DBT_CONTAINER,
        "image": spec.image,
        "command": [LAUNCHER],
        "args": launcher_args(spec),
        "env": env + list(spec.env_vars),
        "volumeMounts": [
            {"name": ARTIFACTS_VOLUME, "mountPath": ARTIFACTS_DIR},
            {"name": LAUNCHER_VOLUME, "mountPath": LAUNCHER_DIR, "readOnly": True},
            *spec.volume_mounts,
        ],
        "securityContext": {
            **copy.deepcopy(_CONTAINER_SECURITY),
            **spec.container_security_context,
        },
        # On failure the last log lines land in the container status, where kubectl describe and
        # the classifier see them without fetching logs.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    optional = {
        "imagePullPolicy": spec.image_pull_policy,
        "envFrom": list(spec.env_from),
        "resources": spec.container_resources,
    }
    container.update({key: value for key, value in optional.items() if value})
    return container


def _sidecar_container(spec: DbtRunSpec, identity: RunIdentity) -> dict[str, Any]:
    args = [
        "--configmap",
        naming.results_configmap_name(identity),
        "--target-path",
        TARGET_PATH,
        "--log-file",
        JSON_LOG_FILE,
    ]
    if spec.artifacts_url is not None:
        args += ["--artifacts-url", run_url(spec.artifacts_url, identity)]
    container = _kubedbt_container(
        spec,
        SIDECAR_CONTAINER,
        args,
        [
            {"name": ARTIFACTS_VOLUME, "mountPath": ARTIFACTS_DIR, "readOnly": True},
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
        ],
    )
    # A native sidecar: started before dbt, stopped by the kubelet after dbt exits.
    container["restartPolicy"] = "Always"
    container["env"] = [
        {
            "name": "POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}},
        },
        {"name": "KUBEDBT_GRACE_SECONDS", "value": str(spec.termination_grace_period)},
    ]
    if spec.artifacts_secret is not None:
        # Storage credentials reach this container only, never dbt's.
        container["envFrom"] = [{"secretRef": {"name": spec.artifacts_secret}}]
    return container


def _token_volume() -> dict[str, Any]:
    """The service account token, CA and namespace, as automounting would provide them."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }
