"""Every class of bad input is refused with an error naming the parameter."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from kubedbt import DbtRunSpec, InvalidSpecError
from kubedbt.core.command import command_line, dbt_args

BASE: dict[str, Any] = {"command": "build", "image": "kubedbt/dbt:dev"}
TOKEN_IS_KUBEDBTS = (
    "'kubedbt-sa-token' is kubedbt's own volume: it holds the results uploader's token"
)
API_SERVER_TOKEN = "without an audience is an API-server token"


def _template(**spec: Any) -> dict[str, Any]:
    return {"pod_template": {"metadata": {}, "spec": spec}}


def _mounting(volume: str) -> list[dict[str, Any]]:
    return [{"name": volume, "mountPath": "/x"}]


def _token_volume(name: str, **token: Any) -> dict[str, Any]:
    return {
        "name": name,
        "projected": {"sources": [{"serviceAccountToken": {"path": "t", **token}}]},
    }


BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    # (parameters laid over BASE, parameter named in the error, words in the message)
    ({"cmds": []}, "cmds", "needs at least the program to run"),
    ({"cmds": ["dbt", ""]}, "cmds[1]", "empty"),
    ({"command": "deps"}, "command", "not one of"),
    ({"command": "build --full-refresh"}, "command", "not one of"),
    ({"command": 7}, "command", "expected a string"),
    ({"image": ""}, "image", "must not be empty"),
    ({"image": "kubedbt/dbt dev"}, "image", "not an image reference"),
    ({"select": [""]}, "select[0]", "must not be empty"),
    ({"select": {"a": 1}}, "select", "expected a list of strings"),
    ({"selector": "nightly", "select": "a"}, "selector", "cannot be combined"),
    ({"vars": ["a"]}, "vars", "expected a mapping"),
    ({"vars": {"day": datetime.date(2026, 1, 1)}}, "vars.day", "cannot be passed to dbt"),
    ({"vars": {"ratio": float("nan")}}, "vars.ratio", "finite"),
    ({"vars": {1: "a"}}, "vars", "keys must be strings"),
    ({"vars": {"s": {1, 2}}}, "vars.s", "cannot be passed to dbt"),
    ({"full_refresh": "yes"}, "full_refresh", "expected true or false"),
    ({"command": "test", "full_refresh": True}, "full_refresh", "dbt test does not accept it"),
    ({"command": "ls", "threads": 4}, "threads", "dbt ls does not accept it"),
    ({"command": "retry", "select": "a"}, "select", "dbt retry does not accept it"),
    ({"threads": 0}, "threads", "at least 1"),
    ({"threads": True}, "threads", "whole number"),
    ({"threads": "4"}, "threads", "whole number"),
    ({"project_dir": "dbt/project"}, "project_dir", "absolute path"),
    ({"command": "run-operation"}, "macro", "needs the name of the macro"),
    ({"macro": "grant"}, "macro", "dbt build does not accept it"),
    ({"dbt_flags": ["--target-path", "/tmp"]}, "dbt_flags", "--target-path is not allowed"),
    ({"dbt_flags": ["--select=a"]}, "dbt_flags", "use the 'select' parameter"),
    # Flags and env values that would take away run_results.json or the JSON log file.
    ({"dbt_flags": ["--no-write-json"]}, "dbt_flags", "--no-write-json is not allowed"),
    ({"dbt_flags": ["--log-level-file", "none"]}, "dbt_flags", "--log-level-file none"),
    ({"dbt_flags": ["--log-level-file=NONE"]}, "dbt_flags", "--log-level-file NONE"),
    ({"env_vars": {"DBT_WRITE_JSON": "false"}}, "env_vars[0]", "DBT_WRITE_JSON=false"),
    ({"env_vars": {"A": "1", "DBT_WRITE_JSON": "0"}}, "env_vars[1]", "run_results.json"),
    ({"env_vars": {"DBT_LOG_LEVEL_FILE": "none"}}, "env_vars[0]", "log file"),
    ({"image_pull_policy": "Sometimes"}, "image_pull_policy", "not one of"),
    ({"image_pull_secrets": ["Reg_Cred"]}, "image_pull_secrets[0]", "not a valid object name"),
    ({"namespace": "Analytics"}, "namespace", "not a valid name"),
    ({"namespace": "a" * 64}, "namespace", "not a valid name"),
    # Python's `$` matches before a trailing newline: whole values are checked with fullmatch.
    ({"namespace": "kubedbt-demo\n"}, "namespace", "not a valid name"),
    ({"env_vars": {"PORT\n": "1"}}, "env_vars", "not a valid environment variable name"),
    ({"service_account_name": "dbt runner"}, "service_account_name", "not a valid object name"),
    (
        {"container_resources": {"limits": {"memory": "2GB"}}},
        "container_resources.limits.memory",
        "not a resource quantity",
    ),
    (
        {"container_resources": {"limits": {"cpu": "-1"}}},
        "container_resources.limits.cpu",
        "not a resource quantity",
    ),
    (
        {"container_resources": {"limit": {"cpu": "1"}}},
        "container_resources",
        "unknown key 'limit'",
    ),
    (
        {"container_resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        "container_resources.requests.memory",
        "above the limit",
    ),
    ({"env_vars": {"1 BAD": "x"}}, "env_vars", "not a valid environment variable name"),
    ({"env_vars": {"PORT": 5432}}, "env_vars['PORT']", "must be strings"),
    ({"env_vars": [{"name": "A"}]}, "env_vars[0]", "exactly one of value, valueFrom"),
    (
        {"env_vars": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "env_vars",
        "set twice",
    ),
    ({"env_vars": [{"name": "A", "value_from": {}}]}, "env_vars[0]", "unknown key 'value_from'"),
    ({"env_from": [{"secret_ref": {"name": "s"}}]}, "env_from[0]", "unknown key"),
    (
        {"env_from": [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]},
        "env_from[0]",
        "exactly one",
    ),
    ({"env_from": [{"secretRef": {}}]}, "env_from[0].secretRef.name", "expected a string"),
    ({"volumes": [{"name": "v"}]}, "volumes[0]", "has no source"),
    (
        {"volumes": [{"name": "kubedbt-artifacts", "emptyDir": {}}]},
        "volumes[0].name",
        "'kubedbt-artifacts' is kubedbt's own volume: it holds dbt's artifacts",
    ),
    ({"volumes": [{"name": "v", "emptyDir": {}}] * 2}, "volumes", "defined twice"),
    (
        {"volume_mounts": [{"name": "missing", "mountPath": "/x"}]},
        "volume_mounts[0].name",
        "no volume named",
    ),
    (
        {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volume_mounts": [{"name": "v", "mountPath": "/kubedbt/x"}],
        },
        "volume_mounts[0].mountPath",
        "kubedbt's own",
    ),
    (
        {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volume_mounts": [{"name": "v", "mount_path": "/x"}],
        },
        "volume_mounts[0]",
        "unknown key 'mount_path'",
    ),
    ({"node_selector": {"zone": "eu west"}}, "node_selector['zone']", "not a valid label value"),
    ({"node_selector": {"bad key!": "a"}}, "node_selector", "key 'bad key!' is invalid"),
    ({"tolerations": [{"key": "a", "operator": "Exist"}]}, "tolerations[0].operator", "not one of"),
    (
        {"tolerations": [{"key": "a", "effect": "NoScheduled"}]},
        "tolerations[0].effect",
        "not one of",
    ),
    ({"tolerations": {"key": "a"}}, "tolerations", "expected a list of mappings"),
    ({"affinity": {"node_affinity": {}}}, "affinity", "unknown key 'node_affinity'"),
    ({"priority_class_name": "High"}, "priority_class_name", "not a valid object name"),
    ({"labels": {"kubedbt.io/dag-id": "x"}}, "labels", "reserved for kubedbt"),
    ({"labels": {"app.kubernetes.io/name": "x"}}, "labels", "reserved for kubedbt"),
    ({"annotations": {"kubedbt.io/run-id": "x"}}, "annotations", "reserved for kubedbt"),
    ({"labels": {"team": "a" * 64}}, "labels['team']", "not a valid label value"),
    ({"security_context": {"run_as_user": 1000}}, "security_context", "unknown key 'run_as_user'"),
    (
        {"container_security_context": {"privileged ": True}},
        "container_security_context",
        "unknown key",
    ),
    (
        {"pod_template": {"kind": "Job", "metadata": {}, "spec": {}}},
        "pod_template",
        "expected a Pod manifest",
    ),
    ({"pod_template": "/nonexistent/pod.yaml"}, "pod_template", "cannot read"),
    ({"pod_template": {"spec": []}}, "pod_template.spec", "expected a mapping"),
    ({"sidecar_image": " "}, "sidecar_image", "must not be empty"),
    # No parameter reaches kubedbt's own containers, volumes or the uploader's token.
    ({"volume_mounts": _mounting("kubedbt-sa-token")}, "volume_mounts[0].name", TOKEN_IS_KUBEDBTS),
    (
        {"volume_mounts": _mounting("kubedbt-previous-results")},
        "volume_mounts[0].name",
        "'kubedbt-previous-results' is kubedbt's own volume",
    ),
    (
        {
            # The template volume would be replaced by kubedbt's real token volume at the merge.
            **_template(volumes=[{"name": "kubedbt-sa-token", "emptyDir": {}}]),
            "volume_mounts": _mounting("kubedbt-sa-token"),
        },
        "pod_template.spec.volumes[0].name",
        TOKEN_IS_KUBEDBTS,
    ),
    (
        _template(volumes=[{"name": "kubedbt-artifacts", "emptyDir": {}}]),
        "pod_template.spec.volumes[0].name",
        "'kubedbt-artifacts' is kubedbt's own volume",
    ),
    (
        _template(containers=[{"name": "dbt", "volumeMounts": _mounting("kubedbt-sa-token")}]),
        "pod_template.spec.containers[0].volumeMounts[0].name",
        TOKEN_IS_KUBEDBTS,
    ),
    (
        _template(
            containers=[
                {"name": "dbt"},
                {"name": "shipper", "volumeMounts": _mounting("kubedbt-artifacts")},
            ]
        ),
        "pod_template.spec.containers[1].volumeMounts[0].name",
        "'kubedbt-artifacts' is kubedbt's own volume",
    ),
    (
        _template(
            volumes=[{"name": "cache", "emptyDir": {}}],
            initContainers=[
                {"name": "warm-cache", "volumeMounts": _mounting("cache")},
                {
                    "name": "fetch",
                    "volumeMounts": [*_mounting("cache"), *_mounting("kubedbt-sa-token")],
                },
            ],
        ),
        "pod_template.spec.initContainers[1].volumeMounts[1].name",
        TOKEN_IS_KUBEDBTS,
    ),
    (
        _template(
            initContainers=[{"name": "peek", "volumeMounts": _mounting("kubedbt-previous-results")}]
        ),
        "pod_template.spec.initContainers[0].volumeMounts[0].name",
        "'kubedbt-previous-results' is kubedbt's own volume",
    ),
    (
        _template(
            containers=[
                {"name": "dbt", "volumeMounts": [{"name": "v", "mountPath": "/kubedbt/target"}]}
            ]
        ),
        "pod_template.spec.containers[0].volumeMounts[0].mountPath",
        "/kubedbt is kubedbt's own",
    ),
    (
        _template(
            containers=[
                {"name": "dbt"},
                {"name": "proxy"},
                {"name": "results-uploader", "env": [{"name": "A", "value": "1"}]},
            ]
        ),
        "pod_template.spec.containers[2].name",
        "'results-uploader' is kubedbt's own container",
    ),
    (
        _template(initContainers=[{"name": "results-uploader", "lifecycle": {}}]),
        "pod_template.spec.initContainers[0].name",
        "would be merged into it",
    ),
    (
        _template(initContainers=[{"name": "restore-state", "command": ["sh"]}]),
        "pod_template.spec.initContainers[0].name",
        "'restore-state' is kubedbt's own container",
    ),
    (
        _template(initContainers=[{"name": "dbt"}]),
        "pod_template.spec.initContainers[0].name",
        "no init container",
    ),
    (
        _template(containers=[{"image": "proxy:1"}]),
        "pod_template.spec.containers[0].name",
        "expected a string",
    ),
    (
        _template(shareProcessNamespace=True),
        "pod_template.spec.shareProcessNamespace",
        "read the results uploader's token through /proc",
    ),
    (
        _template(shareProcessNamespace="true"),
        "pod_template.spec.shareProcessNamespace",
        "expected true or false",
    ),
    (_template(hostPID=True), "pod_template.spec.hostPID", "through /proc"),
    (
        _template(ephemeralContainers=[{"name": "debug", "targetContainerName": "dbt"}]),
        "pod_template.spec.ephemeralContainers",
        "cannot have ephemeral containers",
    ),
    (
        {"volumes": [{"name": "v", "emptyDir": {}}, _token_volume("api")]},
        "volumes[1].projected.sources[0].serviceAccountToken.audience",
        API_SERVER_TOKEN,
    ),
    (
        {"volumes": [_token_volume("api", audience=" ")]},
        "volumes[0].projected.sources[0].serviceAccountToken.audience",
        API_SERVER_TOKEN,
    ),
    (
        _template(volumes=[_token_volume("api", expirationSeconds=600)]),
        "pod_template.spec.volumes[0].projected.sources[0].serviceAccountToken.audience",
        API_SERVER_TOKEN,
    ),
    *(
        (
            {"volumes": [_token_volume("api", audience=audience)]},
            "volumes[0].projected.sources[0].serviceAccountToken.audience",
            "is an audience of the Kubernetes API server",
        )
        for audience in ("https://kubernetes.default.svc.cluster.local", "api", "kubernetes")
    ),
    ({"active_deadline_seconds": 0}, "active_deadline_seconds", "at least 1"),
    ({"backoff_limit": -1}, "backoff_limit", "at least 0"),
    ({"ttl_seconds_after_finished": -5}, "ttl_seconds_after_finished", "at least 0"),
    ({"termination_grace_period": 0}, "termination_grace_period", "at least 1"),
]


@pytest.mark.parametrize(
    "values",
    [
        {"dbt_flags": ["--log-level-file", "warn", "--write-json"]},
        {"env_vars": {"DBT_WRITE_JSON": "true", "DBT_LOG_LEVEL_FILE": "debug"}},
    ],
)
def test_flags_that_keep_the_evidence_are_accepted(values: dict[str, Any]) -> None:
    DbtRunSpec(**BASE, **values)


@pytest.mark.parametrize(("overrides", "parameter", "words"), BAD_INPUTS)
def test_bad_input_names_the_parameter(
    overrides: dict[str, Any], parameter: str, words: str
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        DbtRunSpec(**{**BASE, **overrides})
    assert caught.value.parameter == parameter
    assert words in str(caught.value)
    assert parameter in str(caught.value)


def test_a_single_flag_string_is_one_argument() -> None:
    # Never split on spaces: that would be building a command line from user input.
    assert DbtRunSpec(**BASE, dbt_flags="--warn-error --debug").dbt_flags == (
        "--warn-error --debug",
    )


def test_env_values_never_reach_the_message() -> None:
    secret = "hunter2-very-secret"
    for env in (
        {"PASSWORD": 12345, "TOKEN ": secret},
        [{"name": "A", "value": secret, "valueFrom": {}}],
    ):
        with pytest.raises(InvalidSpecError) as caught:
            DbtRunSpec(**BASE, env_vars=env)
        assert secret not in str(caught.value)
        assert "12345" not in str(caught.value)


def test_unknown_parameter_suggests_the_closest() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        DbtRunSpec.from_mapping({**BASE, "selct": "a"})
    assert caught.value.parameter == "selct"
    assert "did you mean 'select'?" in str(caught.value)


def test_spec_is_frozen_and_normalised() -> None:
    spec = DbtRunSpec(
        **BASE,
        select="tag:daily",
        env_vars={"A": "1"},
        image_pull_secrets="one, two",
        container_resources={"limits": {"cpu": 2}},
    )
    assert spec.select == ("tag:daily",)
    assert spec.env_vars == ({"name": "A", "value": "1"},)
    assert spec.image_pull_secrets == ("one", "two")
    assert spec.container_resources == {"limits": {"cpu": "2"}}
    with pytest.raises(AttributeError):
        spec.image = "other"  # type: ignore[misc]


def test_pod_template_is_read_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata: {}\nspec:\n  dnsPolicy: Default\n")
    spec = DbtRunSpec(**BASE, pod_template=str(path))
    assert spec.pod_template is not None
    assert spec.pod_template["spec"] == {"dnsPolicy": "Default"}


def test_pod_template_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "pod.yaml"
    path.write_text("spec: [unclosed\n")
    with pytest.raises(InvalidSpecError, match="not valid YAML"):
        DbtRunSpec(**BASE, pod_template=path)


def test_volume_mount_may_name_a_template_volume() -> None:
    template = {"metadata": {}, "spec": {"volumes": [{"name": "shared", "emptyDir": {}}]}}
    spec = DbtRunSpec(
        **BASE, pod_template=template, volume_mounts=[{"name": "shared", "mountPath": "/s"}]
    )
    assert spec.volume_mounts[0]["name"] == "shared"


def test_pod_template_may_add_its_own_and_fill_in_dbt() -> None:
    # The documented uses of a template stay open: dbt fields kubedbt leaves unset, containers,
    # init containers and volumes of other names, tokens for another audience than the API server.
    spec = DbtRunSpec(
        **BASE,
        volumes=[_token_volume("vault-token", audience="vault")],
        volume_mounts=[{"name": "vault-token", "mountPath": "/var/run/vault"}],
        pod_template={
            "metadata": {},
            "spec": {
                "shareProcessNamespace": False,
                "hostPID": False,
                "volumes": [_token_volume("sts-token", audience="sts.amazonaws.com")],
                "containers": [
                    {
                        "name": "dbt",
                        "readinessProbe": {"exec": {"command": ["true"]}},
                        "ports": [{"containerPort": 8080}],
                        "volumeMounts": [{"name": "sts-token", "mountPath": "/var/run/sts"}],
                    },
                    {"name": "proxy", "image": "proxy:1"},
                ],
                "initContainers": [{"name": "warm-cache", "image": "busybox"}],
            },
        },
    )
    assert spec.pod_template is not None
    assert spec.pod_template["spec"]["containers"][1]["name"] == "proxy"


def test_a_mount_of_kubedbts_volume_names_it_and_says_why() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        DbtRunSpec(**BASE, volume_mounts=_mounting("kubedbt-sa-token"))
    assert str(caught.value) == (
        "invalid parameter 'volume_mounts[0].name': 'kubedbt-sa-token' is kubedbt's own volume: "
        "it holds the results uploader's token; only kubedbt's containers mount it"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, ["build"]),
        ({"command": "source freshness"}, ["source", "freshness"]),
        ({"select": ["a", "b"], "exclude": "c"}, ["build", "--select", "a", "b", "--exclude", "c"]),
        ({"selector": "nightly"}, ["build", "--selector", "nightly"]),
        ({"vars": {"b": 1, "a": "x y"}}, ["build", "--vars", "{a: x y, b: 1}"]),
        ({"command": "retry", "state": "/prev"}, ["retry", "--state", "/prev"]),
        (
            {"command": "run-operation", "macro": "grant", "macro_args": {"role": "r"}},
            ["run-operation", "grant", "--args", "{role: r}"],
        ),
    ],
)
def test_dbt_arguments(overrides: dict[str, Any], expected: list[str]) -> None:
    args = dbt_args(DbtRunSpec(**{**BASE, **overrides}))
    assert args[: len(expected)] == expected
    assert args[len(expected) :] == [
        "--target-path",
        "/kubedbt/target",
        "--log-path",
        "/kubedbt/logs",
        "--log-format-file",
        "json",
    ]


def test_command_line_quotes_for_a_shell_reader() -> None:
    spec = DbtRunSpec(**BASE, select="tag:x; rm -rf /")
    assert command_line(spec).startswith("dbt build --select 'tag:x; rm -rf /' ")
