"""The chart without a cluster: helm lint, and helm template's output parsed and checked.

``helm template`` renders for Kubernetes 1.34.4, the local cluster's version: helm's built-in
default (1.20) is older than the chart's kubeVersion and would be refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.helm.conftest import CHART, Helm

KUBE_VERSION = "1.34.4"
RELEASE = "kubedbt"
NAMESPACE = "analytics"

Objects = dict[tuple[str, str], dict[str, Any]]

STANDARD_LABELS = {
    "app.kubernetes.io/name": "kubedbt",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/version": "0.1.0",
    "app.kubernetes.io/managed-by": "Helm",
    "helm.sh/chart": "kubedbt-0.1.0",
}

UPLOADER_RULES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}]
# Every DbtRunSpec parameter the defaults ConfigMap may carry, each set.
ALL_DEFAULTS = {
    "image": "registry.example.com/analytics/dbt:1.2.3",
    "sidecar_image": "registry.example.com/kubedbt/sidecar:0.1.0",
    "image_pull_policy": "Always",
    "image_pull_secrets": ["registry-login", "mirror-login"],
    "service_account_name": "dbt-runner",
    "container_resources": {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": 2, "memory": "1Gi"},
    },
    "node_selector": {"workload": "batch", "kubernetes.io/arch": "amd64"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "dbt", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 600},
    ],
}

EVERYTHING = {
    "serviceAccount": {"name": "dbt", "annotations": {"iam.gke.io/gcp-service-account": "x@y"}},
    "launcher": {
        "createServiceAccount": True,
        "subjects": [
            {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"},
            {"kind": "User", "name": "alice@example.com"},
            {"kind": "Group", "name": "data-engineers"},
        ],
    },
    "defaults": {"enabled": True, **ALL_DEFAULTS},
    "quota": {"enabled": True, "hard": {"count/jobs.batch": "100", "requests.cpu": "8"}},
    "limitRange": {"enabled": True},
}


def template(helm: Helm, values: dict[str, Any], *, check: bool = True) -> Any:
    return helm.run(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "--values",
        "-",
        stdin=json.dumps(values),
        check=check,
    )


def render(helm: Helm, values: dict[str, Any] | None = None) -> Objects:
    """The rendered objects (test hooks included) by kind and name."""
    documents = [d for d in yaml.safe_load_all(template(helm, values or {}).stdout) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    assert len(objects) == len(documents), "two objects share a kind and a name"
    return objects


def render_error(helm: Helm, values: dict[str, Any]) -> str:
    result = template(helm, values, check=False)
    assert result.returncode != 0, f"helm template accepted {values}"
    assert not result.stdout
    return str(result.stderr)


def kinds(objects: Objects, kind: str) -> list[dict[str, Any]]:
    return [o for (k, _), o in objects.items() if k == kind]


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["defaults", "everything"])
def test_lint_passes(helm: Helm, values: dict[str, Any], strict: bool) -> None:
    flags = ["--strict"] if strict else []
    result = helm.run("lint", str(CHART), *flags, "--values", "-", stdin=json.dumps(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout
    assert "[ERROR]" not in result.stdout


def test_default_install_creates_the_identities_and_their_roles(helm: Helm) -> None:
    assert set(render(helm)) == {
        ("ServiceAccount", "dbt"),
        ("Role", "kubedbt-results-uploader"),
        ("RoleBinding", "kubedbt-results-uploader"),
        ("ServiceAccount", "kubedbt-launcher"),
        ("Role", "kubedbt-launcher"),
        ("RoleBinding", "kubedbt-launcher"),
        # Cluster-scoped, hence named after the namespace too.
        ("ValidatingAdmissionPolicy", f"kubedbt-{NAMESPACE}-results-scope"),
        ("ValidatingAdmissionPolicyBinding", f"kubedbt-{NAMESPACE}-results-scope"),
        ("ConfigMap", "kubedbt-rbac-results"),  # helm test hooks
        ("ConfigMap", "kubedbt-other-results"),
        ("Pod", "kubedbt-rbac-probe"),
    }


CLUSTER_SCOPED = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def test_every_object_is_labelled_and_in_the_release_namespace(helm: Helm) -> None:
    for (kind, name), obj in render(helm, EVERYTHING).items():
        metadata = obj["metadata"]
        assert metadata.get("namespace") == (None if kind in CLUSTER_SCOPED else NAMESPACE), name
        assert metadata["labels"].items() >= STANDARD_LABELS.items(), (kind, name)
        assert metadata["labels"]["app.kubernetes.io/component"], (kind, name)


def test_dbt_service_account_mounts_no_token(helm: Helm) -> None:
    values = {"serviceAccount": {"name": "dbt-runner", "annotations": {"a.example/role": "r"}}}
    account = render(helm, values)["ServiceAccount", "dbt-runner"]
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["annotations"] == {"a.example/role": "r"}


@pytest.mark.parametrize("account", ["dbt", "dbt-runner"])
def test_results_uploader_may_patch_configmaps_only(helm: Helm, account: str) -> None:
    objects = render(helm, {"serviceAccount": {"name": account}})
    assert objects["Role", "kubedbt-results-uploader"]["rules"] == UPLOADER_RULES
    binding = objects["RoleBinding", "kubedbt-results-uploader"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kubedbt-results-uploader",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]


AIRFLOW_SA = {"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"}
OWN_SA = {"kind": "ServiceAccount", "name": "kubedbt-launcher", "namespace": NAMESPACE}
USER = {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice@example.com"}
GROUP = {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "data-engineers"}


@pytest.mark.parametrize(
    ("launcher", "subjects"),
    [
        ({"createServiceAccount": True}, [OWN_SA]),
        ({"createServiceAccount": False, "subjects": [AIRFLOW_SA]}, [AIRFLOW_SA]),
        (
            {
                "createServiceAccount": False,
                "subjects": [
                    AIRFLOW_SA,
                    {"kind": "User", "name": "alice@example.com"},
                    {"kind": "Group", "name": "data-engineers"},
                ],
            },
            [AIRFLOW_SA, USER, GROUP],
        ),
        ({"createServiceAccount": True, "subjects": [AIRFLOW_SA]}, [OWN_SA, AIRFLOW_SA]),
    ],
    ids=["own-account", "airflow-account", "account-user-group", "both"],
)
def test_launcher_subjects(
    helm: Helm, launcher: dict[str, Any], subjects: list[dict[str, str]]
) -> None:
    objects = render(helm, {"launcher": launcher})
    binding = objects["RoleBinding", "kubedbt-launcher"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kubedbt-launcher",
    }
    assert binding["subjects"] == subjects
    assert (("ServiceAccount", "kubedbt-launcher") in objects) is launcher["createServiceAccount"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"launcher": {"createServiceAccount": False}},
            "launcher: nothing to bind the launcher Role to; list launcher.subjects",
        ),
        (
            {
                "launcher": {
                    "subjects": [AIRFLOW_SA, {"kind": "ServiceAccount", "name": "airflow"}],
                }
            },
            'launcher.subjects[1]: ServiceAccount "airflow" needs a namespace',
        ),
        (
            {"quota": {"enabled": True}},
            "quota.enabled is true but quota.hard is empty",
        ),
        (
            {"limitRange": {"enabled": True, "limits": []}},
            "limitRange.enabled is true but limitRange.limits is empty",
        ),
    ],
    ids=["no-launcher", "account-without-namespace", "empty-quota", "empty-limit-range"],
)
def test_bad_combinations_fail_with_a_message(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    assert message in render_error(helm, values)


def test_defaults_configmap_round_trips_every_parameter(helm: Helm) -> None:
    configmap = render(helm, {"defaults": {"enabled": True, **ALL_DEFAULTS}})[
        "ConfigMap", "kubedbt-defaults"
    ]
    assert configmap["metadata"]["labels"]["app.kubernetes.io/component"] == "defaults"
    assert set(configmap["data"]) == {"defaults.yaml"}
    assert yaml.safe_load(configmap["data"]["defaults.yaml"]) == ALL_DEFAULTS


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"defaults": {"enabled": True}}, {"service_account_name": "dbt"}),
        (
            {"defaults": {"enabled": True}, "serviceAccount": {"name": "runner"}},
            {"service_account_name": "runner"},
        ),
        (
            {"defaults": {"enabled": True, "image": "dbt:1", "node_selector": {}}},
            {"service_account_name": "dbt", "image": "dbt:1"},
        ),
    ],
    ids=["nothing-set", "own-account-name", "empty-values-left-out"],
)
def test_defaults_configmap_holds_only_what_is_set(
    helm: Helm, values: dict[str, Any], expected: dict[str, Any]
) -> None:
    configmap = render(helm, values)["ConfigMap", "kubedbt-defaults"]
    assert yaml.safe_load(configmap["data"]["defaults.yaml"]) == expected


def test_no_defaults_configmap_unless_enabled(helm: Helm) -> None:
    assert ("ConfigMap", "kubedbt-defaults") not in render(helm, {"defaults": ALL_DEFAULTS})


def test_quota_and_limit_range_only_when_enabled(helm: Helm) -> None:
    values = {
        "quota": {"hard": {"pods": 10}},
        "limitRange": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "1"}}]},
    }
    objects = render(helm, values)
    assert not kinds(objects, "ResourceQuota")
    assert not kinds(objects, "LimitRange")


def test_quota_hard_limits_are_quantity_strings(helm: Helm) -> None:
    hard = {"count/jobs.batch": 100, "requests.cpu": "8", "requests.memory": "16Gi"}
    (quota,) = kinds(render(helm, {"quota": {"enabled": True, "hard": hard}}), "ResourceQuota")
    assert quota["spec"] == {
        "hard": {"count/jobs.batch": "100", "requests.cpu": "8", "requests.memory": "16Gi"}
    }


def test_limit_range_defaults_to_the_values_file(helm: Helm) -> None:
    shipped = yaml.safe_load((CHART / "values.yaml").read_text())["limitRange"]["limits"]
    (limits,) = kinds(render(helm, {"limitRange": {"enabled": True}}), "LimitRange")
    assert limits["spec"] == {"limits": shipped}
    assert shipped[0]["type"] == "Container"
    assert shipped[0]["default"]
    assert shipped[0]["defaultRequest"]

    own = [{"type": "Container", "max": {"memory": "4Gi"}, "min": {"cpu": "10m"}}]
    (limits,) = kinds(render(helm, {"limitRange": {"enabled": True, "limits": own}}), "LimitRange")
    assert limits["spec"] == {"limits": own}


@pytest.mark.parametrize(
    ("values", "pointer", "key"),
    [
        ({"serviceAcount": {}}, "", "serviceAcount"),
        ({"serviceAccount": {"create": True}}, "/serviceAccount", "create"),
        ({"launcher": {"createServiceAcount": True}}, "/launcher", "createServiceAcount"),
        (
            {"launcher": {"subjects": [{"kind": "User", "name": "a", "apiGroup": "x"}]}},
            "/launcher/subjects/0",
            "apiGroup",
        ),
        ({"defaults": {"sidecarImage": "s:1"}}, "/defaults", "sidecarImage"),
        (
            {"defaults": {"container_resources": {"request": {}}}},
            "/defaults/container_resources",
            "request",
        ),
        ({"defaults": {"tolerations": [{"keys": "a"}]}}, "/defaults/tolerations/0", "keys"),
        ({"quota": {"scopes": []}}, "/quota", "scopes"),
        (
            {"limitRange": {"limits": [{"type": "Pod", "defaults": {}}]}},
            "/limitRange/limits/0",
            "defaults",
        ),
        ({"helmTest": {"pullPolicy": "Always"}}, "/helmTest", "pullPolicy"),
        ({"helmTest": {"resources": {"limit": {}}}}, "/helmTest/resources", "limit"),
    ],
)
def test_schema_rejects_an_unknown_key(
    helm: Helm, values: dict[str, Any], pointer: str, key: str
) -> None:
    assert f"at '{pointer}': additional properties '{key}' not allowed" in render_error(
        helm, values
    )


@pytest.mark.parametrize(
    ("values", "pointer"),
    [
        ({"nameOverride": 1}, "/nameOverride"),
        ({"serviceAccount": {"name": "Not_A_Name"}}, "/serviceAccount/name"),
        ({"serviceAccount": {"annotations": {"a": 1}}}, "/serviceAccount/annotations/a"),
        ({"launcher": {"createServiceAccount": "yes"}}, "/launcher/createServiceAccount"),
        ({"launcher": {"subjects": {"kind": "User"}}}, "/launcher/subjects"),
        ({"launcher": {"subjects": [{"kind": "Robot", "name": "r"}]}}, "/launcher/subjects/0/kind"),
        ({"launcher": {"subjects": [{"kind": "User"}]}}, "/launcher/subjects/0"),
        ({"defaults": {"enabled": "true"}}, "/defaults/enabled"),
        ({"defaults": {"image": ["dbt:1"]}}, "/defaults/image"),
        ({"defaults": {"image_pull_policy": "Sometimes"}}, "/defaults/image_pull_policy"),
        ({"defaults": {"image_pull_secrets": "a,b"}}, "/defaults/image_pull_secrets"),
        ({"defaults": {"node_selector": {"zone": 1}}}, "/defaults/node_selector/zone"),
        (
            {"defaults": {"container_resources": {"limits": {"memory": True}}}},
            "/defaults/container_resources/limits/memory",
        ),
        (
            {"defaults": {"tolerations": [{"tolerationSeconds": "60"}]}},
            "/defaults/tolerations/0/tolerationSeconds",
        ),
        ({"quota": {"hard": {"pods": [1]}}}, "/quota/hard/pods"),
        ({"limitRange": {"limits": {"type": "Container"}}}, "/limitRange/limits"),
        ({"helmTest": {"imagePullPolicy": "Maybe"}}, "/helmTest/imagePullPolicy"),
    ],
)
def test_schema_rejects_a_wrong_type(helm: Helm, values: dict[str, Any], pointer: str) -> None:
    error = render_error(helm, values)
    assert "values don't meet the specifications of the schema" in error
    assert f"at '{pointer}'" in error


def test_schema_closes_every_object_it_defines() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def open_objects(node: Any, path: str) -> list[str]:
        if isinstance(node, list):
            return [p for i, n in enumerate(node) for p in open_objects(n, f"{path}/{i}")]
        if not isinstance(node, dict):
            return []
        found = []
        if "properties" in node and node.get("additionalProperties") is not False:
            found.append(path)
        for key, child in node.items():
            found += open_objects(child, f"{path}/{key}")
        return found

    assert open_objects(schema, "") == []


def test_every_key_in_values_yaml_has_a_comment() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def property_names(node: Any) -> set[str]:
        if isinstance(node, list):
            return {name for n in node for name in property_names(n)}
        if not isinstance(node, dict):
            return set()
        names = set(node.get("properties", {}))
        return names.union(*(property_names(child) for child in node.values()))

    # Keys the schema defines; entries of maps (resource quantities, labels) are data.
    defined = property_names(schema)
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^\s*(?:- )?([\w./-]+):")
    uncommented = []
    for number, line in enumerate(lines):
        match = key.match(line)
        if not match or match[1] not in defined:
            continue
        previous = next(p for p in reversed(lines[:number]) if p.strip())
        if not previous.lstrip().startswith("#"):
            uncommented.append(f"{number + 1}: {line.strip()}")
    assert len(defined) > 20
    assert uncommented == []


def test_helm_test_probes_as_the_dbt_account_with_a_restricted_pod(helm: Helm) -> None:
    objects = render(helm)
    own, other = (
        objects["ConfigMap", "kubedbt-rbac-results"],
        objects["ConfigMap", "kubedbt-other-results"],
    )
    pod = objects["Pod", "kubedbt-rbac-probe"]
    hooks = [own["metadata"]["annotations"], other["metadata"]["annotations"]]
    hooks.append(pod["metadata"]["annotations"])
    for hook in hooks:
        assert hook["helm.sh/hook"] == "test"
        assert "before-hook-creation" in hook["helm.sh/hook-delete-policy"].split(",")
    # The ConfigMaps the probe patches must exist before the pod starts.
    assert int(hooks[0]["helm.sh/hook-weight"]) < int(hooks[2]["helm.sh/hook-weight"])
    # Named like a run's pod ("<run>-" and five characters) whose run's results are `own`.
    assert pod["metadata"]["name"][:-6] + "-results" == own["metadata"]["name"]

    spec = pod["spec"]
    assert spec["serviceAccountName"] == "dbt"
    assert spec["automountServiceAccountToken"] is True
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["image"] == "kubedbt/base:bookworm"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PROBE_OWN"]["value"] == own["metadata"]["name"]
    assert env["PROBE_OTHER"]["value"] == other["metadata"]["name"]
    assert env["PROBE_SCOPED"]["value"] == "true"
    assert env["PROBE_DEFAULTS_EXISTS"]["value"] == "false"

    script = (CHART / "files" / "rbac-probe.py").read_text()
    assert container["command"] == ["python3", "-c"]
    assert container["args"] == [script]
    compile(script, "rbac-probe.py", "exec")  # what the cluster test runs, at least parses


def test_helm_test_image_is_configurable(helm: Helm) -> None:
    values = {"helmTest": {"image": "python:3.12-slim", "imagePullPolicy": "Always"}}
    (container,) = render(helm, values)["Pod", "kubedbt-rbac-probe"]["spec"]["containers"]
    assert (container["image"], container["imagePullPolicy"]) == ("python:3.12-slim", "Always")


def test_results_scope_policy_binds_the_dbt_account_in_this_namespace(helm: Helm) -> None:
    objects = render(helm, {"serviceAccount": {"name": "dbt-runner"}})
    name = f"{RELEASE}-{NAMESPACE}-results-scope"
    policy = objects["ValidatingAdmissionPolicy", name]["spec"]
    binding = objects["ValidatingAdmissionPolicyBinding", name]["spec"]
    assert policy["failurePolicy"] == "Fail"
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == (
        ["configmaps"],
        ["CREATE", "UPDATE", "DELETE"],
    )
    (condition,) = policy["matchConditions"]
    assert f'"system:serviceaccount:{NAMESPACE}:dbt-runner"' in condition["expression"]
    assert binding == {
        "policyName": name,
        "validationActions": ["Deny"],
        "matchResources": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
        },
    }


def test_results_scope_can_be_left_out_and_the_probe_knows(helm: Helm) -> None:
    objects = render(helm, {"resultsScope": {"enabled": False}})
    assert not kinds(objects, "ValidatingAdmissionPolicy")
    assert not kinds(objects, "ValidatingAdmissionPolicyBinding")
    (container,) = objects["Pod", "kubedbt-rbac-probe"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROBE_SCOPED"] == "false"


def test_results_scope_on_a_cluster_without_admission_policies_fails_with_the_choice(
    helm: Helm,
) -> None:
    result = helm.run(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.29.4",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "needs Kubernetes 1.30 or later" in result.stderr
    assert "resultsScope.enabled=false" in result.stderr
