"""DbtRunSpec: the validated, frozen description of one dbt run on Kubernetes.

Parameter names follow KubernetesPodOperator's wherever the concept is the same (image,
namespace, env_vars, container_resources, node_selector, ...), so a DAG moving from KPO changes
little. Kubernetes objects inside a spec (volumes, tolerations, affinity, env entries) are plain
dicts in the API's own camelCase shape, exactly what `kubectl explain` documents.

Every check runs at construction and raises InvalidSpecError naming the parameter: nothing invalid
ever reaches a cluster.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import yaml

from kubedbt.core import artifacts, validate
from kubedbt.core import validate_pod as pod
from kubedbt.core.command import (
    ACCEPTED_BY,
    COMMAND_MANAGED_FLAGS,
    COMMANDS,
    MANAGED_FLAGS,
    evidence_flag,
    removes_evidence,
)
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.naming import check_not_reserved

DEFAULT_SIDECAR_IMAGE: Final = "kubedbt/sidecar:0.1.0"
IMAGE_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True, kw_only=True)
class DbtRunSpec:
    """Everything needed to render the Job of one dbt run. Build it with keywords only."""

    # --- dbt ---
    command: str
    """The dbt command: build, run, test, seed, snapshot, source freshness, compile, ls,
    run-operation, retry, docs generate, debug, clone or show."""
    select: tuple[str, ...] = ()
    """Node selection (`--select`); a string or a list of strings."""
    exclude: tuple[str, ...] = ()
    """Nodes to leave out (`--exclude`); a string or a list of strings."""
    selector: str | None = None
    """A selector defined in selectors.yml (`--selector`); excludes select and exclude."""
    vars: dict[str, Any] = field(default_factory=dict)
    """dbt vars (`--vars`), rendered to YAML. Visible in the pod spec: never put secrets here."""
    full_refresh: bool = False
    """Rebuild incremental models and seeds from scratch (`--full-refresh`)."""
    fail_fast: bool = False
    """Stop at the first failure (`--fail-fast`)."""
    threads: int | None = None
    """dbt threads (`--threads`); the profile's value when unset."""
    target: str | None = None
    """Profile target (`--target`); the profile's default when unset."""
    profile: str | None = None
    """Profile name (`--profile`); the project's when unset."""
    project_dir: str | None = None
    """Absolute path of the dbt project in the image; the image's working directory when unset."""
    profiles_dir: str | None = None
    """Absolute path of the directory holding profiles.yml inside the image."""
    state: str | None = None
    """Absolute path of a previous run's artifacts (`--state`), for state: selectors; required by
    clone (the directory of the manifest.json whose relations it clones)."""
    macro: str | None = None
    """The macro that run-operation calls; required for run-operation, rejected otherwise."""
    macro_args: dict[str, Any] = field(default_factory=dict)
    """Arguments of the run-operation macro (`--args`), rendered to YAML."""
    inline: str | None = None
    """A query that show previews (or compile compiles) instead of a selected node (`--inline`),
    e.g. "select * from {{ ref('orders') }}". Airflow does not render it: its Jinja is dbt's."""
    dbt_flags: tuple[str, ...] = ()
    """Further dbt flags, one list item each (for example ["--warn-error", "--debug"])."""

    # --- pod ---
    image: str
    """The dbt image: dbt, its adapters and the project."""
    cmds: tuple[str, ...] = ("dbt",)
    """The command the dbt arguments are given to: ["dbt"], or a wrapper that ends by running dbt
    (["secrets-agent", "exec", "--", "dbt"]). It runs under kubedbt's launcher, which sends the
    SIGINT dbt stops on to the whole process group when the pod is stopped: a wrapper should exec
    dbt, or at least not pass SIGINT on (a second one cuts dbt's cleanup short)."""
    image_pull_policy: str | None = None
    """Always, IfNotPresent or Never; Kubernetes' default when unset."""
    image_pull_secrets: tuple[str, ...] = ()
    """Names of Secrets used to pull the images; a list or a comma-separated string."""
    namespace: str = "default"
    """Namespace of the Job and its results ConfigMap."""
    service_account_name: str | None = None
    """ServiceAccount of the pod; the sidecar uploads results with its identity."""
    container_resources: dict[str, Any] = field(default_factory=dict)
    """Requests and limits of the dbt container: {"requests": {...}, "limits": {...}}."""
    env_vars: tuple[dict[str, Any], ...] = ()
    """Environment of the dbt container: a {name: value} mapping or a list of EnvVar dicts."""
    env_from: tuple[dict[str, Any], ...] = ()
    """EnvFromSource dicts: {"secretRef": {"name": ...}} or {"configMapRef": {"name": ...}}."""
    volumes: tuple[dict[str, Any], ...] = ()
    """Extra pod volumes (Volume dicts)."""
    volume_mounts: tuple[dict[str, Any], ...] = ()
    """Mounts of the dbt container (VolumeMount dicts)."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the pod must run on."""
    tolerations: tuple[dict[str, Any], ...] = ()
    """Toleration dicts."""
    affinity: dict[str, Any] = field(default_factory=dict)
    """An Affinity dict (nodeAffinity, podAffinity, podAntiAffinity)."""
    priority_class_name: str | None = None
    """PriorityClass of the pod."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels on the Job, its pods and its ConfigMap."""
    annotations: dict[str, str] = field(default_factory=dict)
    """Extra annotations on the Job and its pods."""
    security_context: dict[str, Any] = field(default_factory=dict)
    """Pod securityContext keys, laid over kubedbt's non-root defaults."""
    container_security_context: dict[str, Any] = field(default_factory=dict)
    """dbt container securityContext keys, laid over kubedbt's restricted defaults."""
    pod_template: dict[str, Any] | None = None
    """A Pod manifest (dict, or path of a YAML file) that kubedbt's rendering is merged over."""
    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    """Image of the results uploader sidecar."""
    sidecar_resources: dict[str, Any] = field(default_factory=dict)
    """Requests and limits of kubedbt's own containers (the uploader, restore-state); unset:
    requests 10m CPU and 64Mi, limit 128Mi (enough to upload a 50 MB run_results)."""
    artifacts_url: str | None = None
    """Object storage (s3://bucket/prefix, gs://..., az://...) the sidecar copies each try's
    target/ and dbt.log to, under <dag_id>/<task_id>/<run_id>/try-<n>/, before the pod ends.
    Credentials come from the pod's identity or artifacts_secret, never from the DAG."""
    artifacts_secret: str | None = None
    """A Secret whose keys become the uploader's environment (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...); the dbt container never sees it."""

    # --- job ---
    active_deadline_seconds: int | None = None
    """Seconds the Job may run before Kubernetes stops it; unbounded when unset."""
    backoff_limit: int = 0
    """In-cluster pod retries. 0: Airflow owns retries."""
    ttl_seconds_after_finished: int = 86400
    """Seconds a finished Job (and its results ConfigMap) is kept; long enough for the next try."""
    termination_grace_period: int = 60
    """Seconds the pod gets to stop. When it is stopped (task killed, execution_timeout, deadline,
    eviction) dbt gets SIGINT at once and has this long to cancel its queries and write its
    results, which the sidecar uploads within it; past it everything is SIGKILLed."""

    def __post_init__(self) -> None:
        for name, value in _checked(self).items():
            object.__setattr__(self, name, value)
        _check_combinations(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DbtRunSpec:
        """Build a spec from a mapping, naming any unknown key and the closest known one."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidSpecError(str(key), f"unknown parameter{hint}")
        return cls(**values)


def field_names() -> list[str]:
    """The spec's parameters in declaration order (the README's reference table follows it)."""
    return [f.name for f in fields(DbtRunSpec)]


def _checked(spec: DbtRunSpec) -> dict[str, Any]:
    """Validated, normalised values of every field."""
    v = validate
    volumes = pod.volumes("volumes", spec.volumes)
    template = pod_template("pod_template", spec.pod_template)
    return {
        "command": v.one_of("command", spec.command, COMMANDS),
        "select": v.string_list("select", spec.select),
        "exclude": v.string_list("exclude", spec.exclude),
        "selector": None if spec.selector is None else v.string("selector", spec.selector),
        "vars": yaml_mapping("vars", spec.vars),
        "full_refresh": v.boolean("full_refresh", spec.full_refresh),
        "fail_fast": v.boolean("fail_fast", spec.fail_fast),
        "threads": v.optional_integer("threads", spec.threads, minimum=1),
        "target": None if spec.target is None else v.string("target", spec.target),
        "profile": None if spec.profile is None else v.string("profile", spec.profile),
        "project_dir": _optional_path("project_dir", spec.project_dir),
        "profiles_dir": _optional_path("profiles_dir", spec.profiles_dir),
        "state": _optional_path("state", spec.state),
        "macro": None if spec.macro is None else v.string("macro", spec.macro),
        "macro_args": yaml_mapping("macro_args", spec.macro_args),
        "inline": None if spec.inline is None else v.string("inline", spec.inline),
        "dbt_flags": dbt_flags("dbt_flags", spec.dbt_flags),
        "image": pod.image("image", spec.image),
        "cmds": _cmds("cmds", spec.cmds),
        "image_pull_policy": None
        if spec.image_pull_policy is None
        else v.one_of("image_pull_policy", spec.image_pull_policy, IMAGE_PULL_POLICIES),
        "image_pull_secrets": pod.secret_names("image_pull_secrets", spec.image_pull_secrets),
        "namespace": v.dns_label("namespace", spec.namespace),
        "service_account_name": None
        if spec.service_account_name is None
        else v.dns_subdomain("service_account_name", spec.service_account_name),
        "container_resources": pod.resources("container_resources", spec.container_resources),
        "env_vars": pod.env_vars("env_vars", spec.env_vars),
        "env_from": pod.env_from("env_from", spec.env_from),
        "volumes": volumes,
        "volume_mounts": pod.volume_mounts(
            "volume_mounts", spec.volume_mounts, volumes + _template_volumes(template)
        ),
        "node_selector": v.labels("node_selector", spec.node_selector),
        "tolerations": pod.tolerations("tolerations", spec.tolerations),
        "affinity": pod.known_keys("affinity", spec.affinity, pod.AFFINITY_KEYS),
        "priority_class_name": None
        if spec.priority_class_name is None
        else v.dns_subdomain("priority_class_name", spec.priority_class_name),
        "labels": v.labels("labels", spec.labels),
        "annotations": v.annotation_map("annotations", spec.annotations),
        "security_context": pod.known_keys(
            "security_context", spec.security_context, pod.POD_SECURITY_KEYS
        ),
        "container_security_context": pod.known_keys(
            "container_security_context",
            spec.container_security_context,
            pod.CONTAINER_SECURITY_KEYS,
        ),
        "pod_template": template,
        "sidecar_image": pod.image("sidecar_image", spec.sidecar_image),
        "sidecar_resources": pod.resources("sidecar_resources", spec.sidecar_resources),
        "artifacts_url": None
        if spec.artifacts_url is None
        else artifacts.artifacts_url("artifacts_url", spec.artifacts_url),
        "artifacts_secret": None
        if spec.artifacts_secret is None
        else v.dns_subdomain("artifacts_secret", spec.artifacts_secret),
        "active_deadline_seconds": v.optional_integer(
            "active_deadline_seconds", spec.active_deadline_seconds, minimum=1
        ),
        "backoff_limit": v.integer("backoff_limit", spec.backoff_limit, minimum=0),
        "ttl_seconds_after_finished": v.integer(
            "ttl_seconds_after_finished", spec.ttl_seconds_after_finished, minimum=0
        ),
        "termination_grace_period": v.integer(
            "termination_grace_period", spec.termination_grace_period, minimum=1
        ),
    }


def _check_combinations(spec: DbtRunSpec) -> None:
    set_options = {
        "select": bool(spec.select),
        "exclude": bool(spec.exclude),
        "selector": spec.selector is not None,
        "full_refresh": spec.full_refresh,
        "fail_fast": spec.fail_fast,
        "threads": spec.threads is not None,
        "state": spec.state is not None,
        "macro": spec.macro is not None,
        "macro_args": bool(spec.macro_args),
        "inline": spec.inline is not None,
    }
    for option, is_set in set_options.items():
        if is_set and spec.command not in ACCEPTED_BY[option]:
            raise InvalidSpecError(option, f"dbt {spec.command} does not accept it")
    if spec.selector is not None and (spec.select or spec.exclude):
        raise InvalidSpecError("selector", "cannot be combined with select or exclude")
    if spec.inline is not None and (spec.select or spec.exclude or spec.selector is not None):
        raise InvalidSpecError(
            "inline",
            "cannot be combined with select, exclude or selector: dbt runs the query alone",
        )
    _check_needs(spec)
    _check_command_flags(spec)
    check_not_reserved("labels", list(spec.labels))
    check_not_reserved("annotations", list(spec.annotations))
    _check_evidence_env(spec.env_vars)


def _check_needs(spec: DbtRunSpec) -> None:
    """The parameters a command cannot run without."""
    if spec.command == "run-operation" and spec.macro is None:
        raise InvalidSpecError("macro", "dbt run-operation needs the name of the macro to run")
    if spec.command == "clone" and spec.state is None:
        raise InvalidSpecError(
            "state",
            "dbt clone needs the directory of the manifest.json whose relations it clones "
            "(a previous run's artifacts, in the image or on a volume)",
        )
    if spec.command == "show" and not (spec.select or spec.selector or spec.inline):
        raise InvalidSpecError(
            "select", "dbt show needs a node to preview: give select (a model) or inline (a query)"
        )


def _check_command_flags(spec: DbtRunSpec) -> None:
    """Refuse dbt_flags that would change what kubedbt sets for this command."""
    managed = COMMAND_MANAGED_FLAGS.get(spec.command, {})
    for flag in spec.dbt_flags:
        name = flag.split("=", 1)[0]
        if name in managed:
            raise InvalidSpecError(
                "dbt_flags", f"{name} is not allowed for dbt {spec.command}: {managed[name]}"
            )


def _check_evidence_env(env: tuple[dict[str, Any], ...]) -> None:
    """Refuse env values that would stop dbt from leaving the evidence kubedbt reports from."""
    for i, entry in enumerate(env):
        value = entry.get("value")
        why = removes_evidence(entry["name"], value) if isinstance(value, str) else None
        if why is not None:
            # The value of one of these two switches is no secret; it is named to be fixed.
            raise InvalidSpecError(
                f"env_vars[{i}]", f"{entry['name']}={value} is not allowed: {why}"
            )


def _optional_path(parameter: str, value: object) -> str | None:
    return None if value is None else validate.absolute_path(parameter, value)


def yaml_mapping(parameter: str, value: object) -> dict[str, Any]:
    """A mapping of plain data (str, numbers, bools, None, lists, mappings) that YAML can carry."""
    result = validate.mapping(parameter, value)
    _plain_data(parameter, result)
    return result


def _plain_data(parameter: str, value: object) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidSpecError(parameter, "numbers must be finite")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _plain_data(f"{parameter}[{i}]", item)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidSpecError(parameter, f"keys must be strings, got {type(key).__name__}")
            _plain_data(f"{parameter}.{key}", item)
        return
    raise InvalidSpecError(
        parameter,
        f"a {type(value).__name__} cannot be passed to dbt; use strings, numbers, booleans, lists "
        "and mappings (format dates yourself, for example with a template)",
    )


def _cmds(parameter: str, value: object) -> tuple[str, ...]:
    cmds = validate.string_list(parameter, value)
    if not cmds:
        raise InvalidSpecError(parameter, "needs at least the program to run, e.g. ['dbt']")
    return cmds


def dbt_flags(parameter: str, value: object) -> tuple[str, ...]:
    """Extra dbt flags, refusing the ones kubedbt manages or that have their own parameter."""
    flags = validate.string_list(parameter, value)
    for flag in flags:
        name = flag.split("=", 1)[0]
        if name in MANAGED_FLAGS:
            raise InvalidSpecError(parameter, f"{name} is not allowed here: {MANAGED_FLAGS[name]}")
    removes_evidence = evidence_flag(flags)
    if removes_evidence is not None:
        flag, why = removes_evidence
        raise InvalidSpecError(parameter, f"{flag} is not allowed: {why}")
    return flags


def pod_template(parameter: str, value: object) -> dict[str, Any] | None:
    """A Pod manifest given as a dict or as the path of a YAML file (read once, here)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        path = Path(value)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as e:
            raise InvalidSpecError(parameter, f"cannot read {str(path)!r}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise InvalidSpecError(parameter, f"{str(path)!r} is not valid YAML: {e}") from e
        value = loaded
    template = validate.mapping(parameter, value)
    kind = template.get("kind", "Pod")
    if kind != "Pod":
        raise InvalidSpecError(parameter, f"expected a Pod manifest, got kind {kind!r}")
    validate.mapping(f"{parameter}.metadata", template.get("metadata"))
    # The template merges by name under kubedbt's pod: names of kubedbt's own are refused here.
    pod.template_spec(f"{parameter}.spec", template.get("spec"))
    return template


def _template_volumes(template: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
    if template is None:
        return ()
    return validate.list_of_mappings(
        "pod_template.spec.volumes", template.get("spec", {}).get("volumes")
    )
