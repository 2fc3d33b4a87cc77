"""Golden manifests and the invariants every rendered Job must keep."""

from __future__ import annotations

import json

import pytest
import yaml

from kubedbt import DbtRunSpec, RunIdentity, render_job, render_results_configmap
from kubedbt.core import naming
from kubedbt.core.podtemplate import merge_pod_template
from kubedbt.core.render import owned_by_job
from tests.unit.golden_cases import CASES, GOLDEN_DIR, IDENTITY


def _rendered(name: str) -> str:
    spec, identity = CASES[name]
    documents = [render_job(spec, identity), render_results_configmap(spec, identity)]
    return yaml.safe_dump_all(documents, sort_keys=False, width=100)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_manifest(name: str, request: pytest.FixtureRequest) -> None:
    path = GOLDEN_DIR / f"{name}.yaml"
    rendered = _rendered(name)
    if request.config.getoption("--update-golden"):
        path.write_text(rendered)
    assert path.exists(), f"no golden file {path}; run pytest --update-golden"
    assert rendered == path.read_text(), f"{path.name} differs; review, then pytest --update-golden"


def _pod(name: str) -> dict:
    spec, identity = CASES[name]
    return render_job(spec, identity)["spec"]["template"]["spec"]


def _containers(pod: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod["containers"] + pod["initContainers"]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dbt_runs_without_a_shell_and_writes_to_the_emptydir(name: str) -> None:
    pod = _pod(name)
    dbt = _containers(pod)["dbt"]
    # dbt runs under the launcher, which install-launcher copied into its read-only volume.
    assert dbt["command"] == ["/kubedbt-launcher/kubedbt-launch"]
    assert dbt["args"][:3] == ["run", "--marker", "/kubedbt/kubedbt-stop.json"]
    args = dbt["args"][dbt["args"].index("--") + 1 :]
    assert args[0] == "dbt"
    assert pod["initContainers"][0]["name"] == "install-launcher"
    assert pod["initContainers"][0]["command"] == ["/usr/local/bin/kubedbt-launch"]
    assert pod["initContainers"][0]["args"] == ["install", "/kubedbt-launcher/kubedbt-launch"]
    assert _mounted_by(pod, "kubedbt-launcher") == {"install-launcher", "dbt"}
    launcher_mount = next(m for m in dbt["volumeMounts"] if m["name"] == "kubedbt-launcher")
    assert launcher_mount["readOnly"] is True
    if CASES[name][0].command == "debug":  # it writes no artifact and refuses --target-path
        assert "--target-path" not in args
    else:
        assert args[args.index("--target-path") + 1] == "/kubedbt/target"
    assert args[args.index("--log-path") + 1] == "/kubedbt/logs"
    assert args[args.index("--log-format-file") + 1] == "json"
    assert {"name": "kubedbt-artifacts", "mountPath": "/kubedbt"} in dbt["volumeMounts"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_the_sidecar_sees_a_token(name: str) -> None:
    pod = _pod(name)
    assert pod["automountServiceAccountToken"] is False
    containers = _containers(pod)
    token_mounts = {
        c_name
        for c_name, c in containers.items()
        for m in c.get("volumeMounts", [])
        if m["name"] == "kubedbt-sa-token"
    }
    assert token_mounts == {"results-uploader"}
    assert containers["results-uploader"]["restartPolicy"] == "Always"


@pytest.mark.parametrize("name", sorted(CASES))
def test_safe_defaults(name: str) -> None:
    pod = _pod(name)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in _containers(pod).values():
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_job_defaults_leave_retries_to_airflow() -> None:
    job = render_job(*CASES["minimal"])
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert "activeDeadlineSeconds" not in job["spec"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    # dbt's verdicts come first: an interrupted dbt (130) fails the Job, evicted or not, and
    # Airflow's next try resumes from its results; a disrupted pod that never ran dbt is replaced.
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "dbt", "operator": "In", "values": [1, 2, 130]},
    }
    assert rules[1] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }


def test_user_env_overrides_dbt_defaults_and_keeps_order() -> None:
    env = _containers(_pod("full"))["dbt"]["env"]
    assert [e["name"] for e in env] == [
        "DBT_SEND_ANONYMOUS_USAGE_STATS",
        "DBT_ENV",
        "DBT_USE_COLORS",
    ]
    assert {"name": "DBT_USE_COLORS", "value": "true"} in env


def test_labels_cannot_be_overridden_by_user_labels() -> None:
    spec, identity = CASES["full"]
    job = render_job(spec, identity)
    assert job["metadata"]["labels"]["team"] == "analytics"
    assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == job["metadata"]["name"]
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_annotations_carry_the_original_identity_and_command() -> None:
    spec, identity = CASES["full"]
    annotations = render_job(spec, identity)["metadata"]["annotations"]
    assert annotations["kubedbt.io/run-id"] == identity.run_id
    assert annotations["kubedbt.io/dag-id"] == identity.dag_id
    assert annotations["kubedbt.io/dbt-command"].startswith("dbt build --select tag:daily marts")
    assert annotations["kubedbt.io/results-configmap"] == naming.results_configmap_name(identity)


def test_sidecar_is_told_where_to_write() -> None:
    sidecar = _containers(_pod("minimal"))["results-uploader"]
    args = sidecar["args"]
    assert args[args.index("--configmap") + 1] == naming.results_configmap_name(IDENTITY)
    assert args[args.index("--log-file") + 1] == "/kubedbt/logs/dbt.log"


def test_pod_template_fills_in_but_never_overrides() -> None:
    pod = _pod("pod_template")
    dbt = _containers(pod)["dbt"]
    assert dbt["image"] == "kubedbt/dbt:dev"
    assert dbt["resources"] == {"limits": {"memory": "3Gi"}}
    assert [e["name"] for e in dbt["env"]] == [
        "FROM_TEMPLATE",
        "DBT_USE_COLORS",
        "DBT_SEND_ANONYMOUS_USAGE_STATS",
        "DBT_ENV",
    ]
    assert pod["tolerations"] == [
        {"key": "spot", "operator": "Exists"},
        {"key": "batch", "operator": "Exists"},
    ]
    assert pod["dnsPolicy"] == "ClusterFirst"
    spec, identity = CASES["pod_template"]
    metadata = render_job(spec, identity)["spec"]["template"]["metadata"]
    assert metadata["labels"]["cost-center"] == "42"
    assert "name" not in metadata


# A template that uses every opening kubedbt leaves: dbt fields kubedbt does not set, containers,
# init containers and volumes of its own, a token for another audience than the API server.
ALLOWED_TEMPLATE = {
    "metadata": {},
    "spec": {
        "shareProcessNamespace": False,
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {
                "name": "vault-token",
                "projected": {
                    "sources": [{"serviceAccountToken": {"path": "t", "audience": "vault"}}]
                },
            },
        ],
        "containers": [
            {
                "name": "dbt",
                "livenessProbe": {"exec": {"command": ["true"]}},
                "ports": [{"containerPort": 8080}],
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                "volumeMounts": [{"name": "vault-token", "mountPath": "/var/run/vault"}],
            },
            {
                "name": "proxy",
                "image": "proxy:1",
                "volumeMounts": [{"name": "vault-token", "mountPath": "/var/run/vault"}],
            },
        ],
        "initContainers": [
            {
                "name": "warm-cache",
                "image": "busybox",
                "volumeMounts": [{"name": "cache", "mountPath": "/c"}],
            }
        ],
    },
}


def _mounted_by(pod: dict, volume: str) -> set[str]:
    return {
        name
        for name, container in _containers(pod).items()
        for mount in container.get("volumeMounts", [])
        if mount["name"] == volume
    }


def test_an_allowed_template_leaves_kubedbt_its_token_and_previous_results() -> None:
    spec = DbtRunSpec(command="retry", image="i", state="/s", pod_template=ALLOWED_TEMPLATE)
    plain = DbtRunSpec(command="retry", image="i", state="/s")
    job = render_job(spec, IDENTITY, state_from="previous-results")
    pod = job["spec"]["template"]["spec"]
    containers = _containers(pod)
    assert set(containers) == {
        "dbt",
        "proxy",
        "warm-cache",
        "install-launcher",
        "results-uploader",
        "restore-state",
    }
    assert _mounted_by(pod, "kubedbt-sa-token") == {"results-uploader"}
    assert _mounted_by(pod, "kubedbt-previous-results") == {"restore-state"}
    assert pod["shareProcessNamespace"] is False
    # kubedbt's own containers are exactly what kubedbt renders without any template.
    plain_pod = render_job(plain, IDENTITY, state_from="previous-results")["spec"]["template"][
        "spec"
    ]
    for name in ("install-launcher", "results-uploader", "restore-state"):
        assert containers[name] == _containers(plain_pod)[name]
    assert containers["dbt"]["livenessProbe"] == {"exec": {"command": ["true"]}}
    assert containers["dbt"]["ports"] == [{"containerPort": 8080}]
    token_volume = next(v for v in pod["volumes"] if v["name"] == "kubedbt-sa-token")
    assert token_volume == next(v for v in plain_pod["volumes"] if v["name"] == "kubedbt-sa-token")


def test_no_template_can_share_the_process_namespace() -> None:
    # Defence in depth: even a template the spec did not check loses to kubedbt's explicit false.
    rendered = render_job(*CASES["minimal"])["spec"]["template"]
    merged = merge_pod_template({"spec": {"shareProcessNamespace": True}}, dict(rendered))
    assert merged["spec"]["shareProcessNamespace"] is False


def test_rendering_shares_no_objects_with_the_spec() -> None:
    spec = DbtRunSpec(command="run", image="i", volumes=[{"name": "v", "emptyDir": {}}])
    job = render_job(spec, IDENTITY)
    job["spec"]["template"]["spec"]["volumes"][3]["emptyDir"]["medium"] = "Memory"
    assert spec.volumes[0] == {"name": "v", "emptyDir": {}}
    again = render_job(spec, IDENTITY)
    pod = again["spec"]["template"]["spec"]
    dbt, sidecar = pod["containers"][0], pod["initContainers"][0]
    assert dbt["securityContext"]["capabilities"] is not sidecar["securityContext"]["capabilities"]
    assert "&id" not in yaml.safe_dump(again), "a shared object would show as a YAML anchor"


def test_results_configmap_starts_pending_and_is_owned_by_the_job() -> None:
    spec, identity = CASES["minimal"]
    configmap = render_results_configmap(spec, identity)
    assert configmap["metadata"]["name"] == naming.job_name(identity) + "-results"
    assert configmap["metadata"]["annotations"]["kubedbt.io/upload-status"] == "pending"
    assert configmap["data"] == {}
    owned = owned_by_job(configmap, "job-a", "uid-1")
    assert owned["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert "ownerReferences" not in configmap["metadata"]


def test_namespace_applies_to_both_objects() -> None:
    spec = DbtRunSpec(command="run", image="i", namespace="analytics")
    identity = RunIdentity("d", "t", "r")
    assert render_job(spec, identity)["metadata"]["namespace"] == "analytics"
    assert render_results_configmap(spec, identity)["metadata"]["namespace"] == "analytics"


def test_cmds_wraps_dbt_and_its_listing_without_a_shell() -> None:
    """A wrapper entrypoint (a secrets agent, say) runs dbt and the listing of an interrupted run
    alike, under the launcher, each word one argument."""
    wrapper = ["/usr/bin/with-secrets", "--", "dbt"]
    spec = DbtRunSpec(command="run", select=["tag:a b"], image="i", cmds=wrapper)
    dbt = _containers(render_job(spec, IDENTITY)["spec"]["template"]["spec"])["dbt"]
    args = dbt["args"]
    assert args[args.index("--") + 1 :][:5] == [*wrapper, "run", "--select"]
    listing = json.loads(args[args.index("--after-interrupt") + 1])
    assert listing[:5] == [*wrapper, "ls", "--select"]
    assert listing[listing.index("--select") + 1] == "tag:a b"
    assert listing[listing.index("--resource-type") + 1] == "model"
    # Half the grace period is the listing's; the rest is the uploader's.
    assert args[args.index("--after-interrupt-timeout") + 1] == "30"


@pytest.mark.parametrize("command", ["run-operation", "source freshness", "ls", "retry"])
def test_commands_dbt_retry_cannot_resume_list_nothing(command: str) -> None:
    extra = {"macro": "m"} if command == "run-operation" else {}
    spec = DbtRunSpec(command=command, image="i", **extra)
    args = _containers(render_job(spec, IDENTITY)["spec"]["template"]["spec"])["dbt"]["args"]
    assert "--after-interrupt" not in args
    assert args[:3] == ["run", "--marker", "/kubedbt/kubedbt-stop.json"]


def test_the_after_interrupt_listing_selects_as_the_command_does() -> None:
    flags = ["--exclude-resource-type", "unit_test", "--indirect-selection=cautious", "--debug"]
    spec = DbtRunSpec(command="build", image="i", dbt_flags=flags)
    args = _containers(render_job(spec, IDENTITY)["spec"]["template"]["spec"])["dbt"]["args"]
    listing = json.loads(args[args.index("--after-interrupt") + 1])
    assert listing[listing.index("--exclude-resource-type") + 1] == "unit_test"
    assert listing[listing.index("--indirect-selection") + 1] == "cautious"
    assert "--debug" not in listing
    # Plain JSON lines on stdout whatever the project's log settings.
    assert listing[listing.index("--log-format") + 1] == "text"
    assert "--print" in listing
    own = DbtRunSpec(command="build", image="i", dbt_flags=["--resource-type", "model", "seed"])
    args = _containers(render_job(own, IDENTITY)["spec"]["template"]["spec"])["dbt"]["args"]
    listing = json.loads(args[args.index("--after-interrupt") + 1])
    assert [listing[i + 1] for i, a in enumerate(listing) if a == "--resource-type"] == [
        "model",
        "seed",
    ]
