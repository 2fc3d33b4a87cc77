"""Checks for the pod-level parameters of a run spec (resources, env, volumes, scheduling).

Objects are checked for the mistakes people make in DAG files: snake_case keys where the API wants
camelCase, a mount without its volume, requests above limits, a toleration with a typo'd operator.
Error messages name the parameter and never repeat environment values, which may be secrets.

They also keep every parameter away from kubedbt's own containers and volumes. The pod template
merges by name under the pod kubedbt renders, kubedbt's entry winning, so a template entry that
borrows one of kubedbt's names is merged into kubedbt's rather than refused by the API server: a
mount of `kubedbt-sa-token` would receive the uploader's real token, a `results-uploader` container
would add its env or lifecycle to kubedbt's. Such names are refused here, before anything exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from kubedbt.core import validate
from kubedbt.core.command import ARTIFACTS_DIR, LAUNCHER_DIR, PROFILE_DIR
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.naming import (
    DBT_CONTAINER,
    LAUNCHER_CONTAINER,
    RESTORE_CONTAINER,
    SIDECAR_CONTAINER,
)

# kubedbt's own volumes, each with why no other volume may take its name and no other container may
# mount it. render.py names its volumes from here, so the checks and the Job cannot drift apart.
ARTIFACTS_VOLUME: Final = "kubedbt-artifacts"
TOKEN_VOLUME: Final = "kubedbt-sa-token"
PREVIOUS_VOLUME: Final = "kubedbt-previous-results"
LAUNCHER_VOLUME: Final = "kubedbt-launcher"
PROFILE_VOLUME: Final = "kubedbt-profile"
RESERVED_VOLUMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        ARTIFACTS_VOLUME: "it holds dbt's artifacts, which the results uploader reports from",
        TOKEN_VOLUME: "it holds the results uploader's token",
        PREVIOUS_VOLUME: "it holds the previous try's results, which restore-state unpacks",
        LAUNCHER_VOLUME: "it holds the launcher that passes the pod's stop signal on to dbt",
        PROFILE_VOLUME: "it holds the profiles.yml kubedbt renders from profile_conn_id",
    }
)
# kubedbt's own containers besides dbt, whose fields only kubedbt sets.
RESERVED_CONTAINERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        SIDECAR_CONTAINER: "it uploads the results with the pod's service account token",
        RESTORE_CONTAINER: "it restores the previous try's results before dbt starts",
        LAUNCHER_CONTAINER: "it installs the launcher dbt runs under",
    }
)
# The mount paths of kubedbt's volumes in the dbt container: the artifacts, the launcher and the
# rendered profile.
RESERVED_MOUNTS: Final = (ARTIFACTS_DIR, LAUNCHER_DIR, PROFILE_DIR)
# Pod settings that let the dbt container read other containers' files through /proc.
_PROCESS_SHARING: Final = ("shareProcessNamespace", "hostPID")
_CONTAINER_LISTS: Final = ("containers", "initContainers")

AFFINITY_KEYS: Final = ("nodeAffinity", "podAffinity", "podAntiAffinity")
POD_SECURITY_KEYS: Final = (
    "appArmorProfile",
    "fsGroup",
    "fsGroupChangePolicy",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "seLinuxChangePolicy",
    "seLinuxOptions",
    "seccompProfile",
    "supplementalGroups",
    "supplementalGroupsPolicy",
    "sysctls",
    "windowsOptions",
)
CONTAINER_SECURITY_KEYS: Final = (
    "allowPrivilegeEscalation",
    "appArmorProfile",
    "capabilities",
    "privileged",
    "procMount",
    "readOnlyRootFilesystem",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "seLinuxOptions",
    "seccompProfile",
    "windowsOptions",
)
_TOLERATION_KEYS: Final = ("key", "operator", "value", "effect", "tolerationSeconds")
_MOUNT_KEYS: Final = (
    "name",
    "mountPath",
    "subPath",
    "subPathExpr",
    "readOnly",
    "recursiveReadOnly",
    "mountPropagation",
)
_ENV_KEYS: Final = ("name", "value", "valueFrom")
_ENV_FROM_KEYS: Final = ("secretRef", "configMapRef", "prefix")
_IMAGE = re.compile(r"^[^\s]+$")
_SUFFIXES: Final = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip


def known_keys(parameter: str, value: object, allowed: Sequence[str]) -> dict[str, Any]:
    """A mapping whose keys are API field names; snake_case and typos are named in the error."""
    result = validate.mapping(parameter, value)
    for key in result:
        if key not in allowed:
            raise InvalidSpecError(
                parameter, f"unknown key {key!r}; the API accepts {', '.join(allowed)}"
            )
    return result


def image(parameter: str, value: object) -> str:
    """An image reference: non-empty, without white space."""
    text = validate.string(parameter, value)
    if not _IMAGE.match(text):
        raise InvalidSpecError(parameter, f"{text!r} is not an image reference")
    return text


def secret_names(parameter: str, value: object) -> tuple[str, ...]:
    """Secret names as a list, or KubernetesPodOperator's comma-separated string."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    names = validate.string_list(parameter, value)
    return tuple(validate.dns_subdomain(f"{parameter}[{i}]", n) for i, n in enumerate(names))


def to_decimal(text: str) -> Decimal:
    """The value of a resource quantity already checked by validate.quantity."""
    match = re.match(r"^([+-]?[\d.]+)([eE][+-]?\d+|[A-Za-z]*)$", text)
    if match is None:  # pragma: no cover - validate.quantity guarantees the shape
        raise ValueError(text)
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E"):
        return Decimal(number + suffix)
    return Decimal(number) * _SUFFIXES[suffix]


def resources(parameter: str, value: object) -> dict[str, Any]:
    """ResourceRequirements: requests and limits with valid quantities, requests within limits."""
    result = known_keys(parameter, value, ("requests", "limits"))
    checked: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        if kind not in result:
            continue
        amounts = validate.mapping(f"{parameter}.{kind}", result[kind])
        checked[kind] = {
            name: validate.quantity(f"{parameter}.{kind}.{name}", amount)
            for name, amount in amounts.items()
        }
    for name, request in checked.get("requests", {}).items():
        limit = checked.get("limits", {}).get(name)
        if limit is not None and to_decimal(request) > to_decimal(limit):
            raise InvalidSpecError(
                f"{parameter}.requests.{name}", f"request {request} is above the limit {limit}"
            )
    return dict(checked)


def env_vars(parameter: str, value: object) -> tuple[dict[str, Any], ...]:
    """Env as {name: value} or a list of EnvVar dicts; values are never shown in errors."""
    if isinstance(value, Mapping):
        entries: list[dict[str, Any]] = []
        for name, item in value.items():
            validate.env_name(parameter, name)
            if not isinstance(item, str):
                raise InvalidSpecError(
                    f"{parameter}[{name!r}]", f"values must be strings, got {type(item).__name__}"
                )
            entries.append({"name": name, "value": item})
        return tuple(entries)
    result = validate.list_of_mappings(parameter, value)
    seen: set[str] = set()
    for i, entry in enumerate(result):
        known_keys(f"{parameter}[{i}]", entry, _ENV_KEYS)
        name = validate.env_name(f"{parameter}[{i}].name", entry.get("name"))
        if name in seen:
            raise InvalidSpecError(parameter, f"{name!r} is set twice")
        seen.add(name)
        if ("value" in entry) == ("valueFrom" in entry):
            raise InvalidSpecError(
                f"{parameter}[{i}]", f"{name!r} needs exactly one of value, valueFrom"
            )
        if "value" in entry and not isinstance(entry["value"], str):
            raise InvalidSpecError(f"{parameter}[{i}]", f"the value of {name!r} must be a string")
    return result


def env_from(parameter: str, value: object) -> tuple[dict[str, Any], ...]:
    """EnvFromSource dicts, each naming one Secret or one ConfigMap."""
    result = validate.list_of_mappings(parameter, value)
    for i, entry in enumerate(result):
        where = f"{parameter}[{i}]"
        known_keys(where, entry, _ENV_FROM_KEYS)
        refs = [key for key in ("secretRef", "configMapRef") if key in entry]
        if len(refs) != 1:
            raise InvalidSpecError(where, "needs exactly one of secretRef, configMapRef")
        ref = validate.mapping(f"{where}.{refs[0]}", entry[refs[0]])
        validate.dns_subdomain(f"{where}.{refs[0]}.name", ref.get("name"))
    return result


def volumes(parameter: str, value: object) -> tuple[dict[str, Any], ...]:
    """Volume dicts with unique names, none of them kubedbt's own and none an API-server token."""
    result = validate.list_of_mappings(parameter, value)
    seen: set[str] = set()
    for i, volume in enumerate(result):
        name = validate.dns_label(f"{parameter}[{i}].name", volume.get("name"))
        _not_reserved_volume(f"{parameter}[{i}].name", name, "give yours another name")
        if name in seen:
            raise InvalidSpecError(parameter, f"volume {name!r} is defined twice")
        seen.add(name)
        if len(volume) < 2:
            raise InvalidSpecError(f"{parameter}[{i}]", f"volume {name!r} has no source")
        _no_api_server_token(f"{parameter}[{i}]", volume)
    return result


def volume_mounts(
    parameter: str, value: object, available: tuple[dict[str, Any], ...]
) -> tuple[dict[str, Any], ...]:
    """VolumeMount dicts that name a volume of the pod and stay clear of kubedbt's volumes."""
    result = validate.list_of_mappings(parameter, value)
    names = {v.get("name") for v in available}
    for i, mount in enumerate(result):
        where = f"{parameter}[{i}]"
        known_keys(where, mount, _MOUNT_KEYS)
        name = validate.string(f"{where}.name", mount.get("name"))
        _not_reserved_volume(f"{where}.name", name, "only kubedbt's containers mount it")
        if name not in names:
            raise InvalidSpecError(f"{where}.name", f"no volume named {name!r} in volumes")
        _clear_of_artifacts(where, mount)
    return result


def template_spec(parameter: str, value: object) -> dict[str, Any]:
    """A pod template's spec that can reach none of kubedbt's containers, volumes or token.

    What the template may do stays open: set fields of the `dbt` container that kubedbt leaves
    unset (probes, ports, lifecycle), add containers, init containers and volumes of other names.
    """
    spec = validate.mapping(parameter, value)
    for key in _PROCESS_SHARING:
        if key in spec and validate.boolean(f"{parameter}.{key}", spec[key]):
            raise InvalidSpecError(
                f"{parameter}.{key}",
                "the dbt container could then read the results uploader's token through /proc; "
                "kubedbt's containers each keep their own process namespace",
            )
    if spec.get("ephemeralContainers"):
        raise InvalidSpecError(
            f"{parameter}.ephemeralContainers",
            "a pod template cannot have ephemeral containers (the API server refuses them)",
        )
    volumes(f"{parameter}.volumes", spec.get("volumes"))
    for key in _CONTAINER_LISTS:
        containers = validate.list_of_mappings(f"{parameter}.{key}", spec.get(key))
        for i, container in enumerate(containers):
            _template_container(f"{parameter}.{key}[{i}]", container, init=key != "containers")
    return spec


def _template_container(where: str, container: dict[str, Any], *, init: bool) -> None:
    """A template container that mounts none of kubedbt's volumes nor merges into its containers.

    Only `dbt` may share a name with one of kubedbt's containers: the fields kubedbt sets win, the
    rest is the documented way to add probes, ports or a lifecycle to dbt.
    """
    name = validate.dns_label(f"{where}.name", container.get("name"))
    why = RESERVED_CONTAINERS.get(name)
    if why is not None:
        raise InvalidSpecError(
            f"{where}.name",
            f"{name!r} is kubedbt's own container: {why}, and a template container of that name "
            "would be merged into it; give yours another name",
        )
    if init and name == DBT_CONTAINER:
        raise InvalidSpecError(
            f"{where}.name",
            f"{name!r} is kubedbt's dbt container, which is no init container: set its fields "
            "under containers",
        )
    mounts = validate.list_of_mappings(f"{where}.volumeMounts", container.get("volumeMounts"))
    for j, mount in enumerate(mounts):
        mount_name = validate.string(f"{where}.volumeMounts[{j}].name", mount.get("name"))
        _not_reserved_volume(
            f"{where}.volumeMounts[{j}].name", mount_name, "only kubedbt's containers mount it"
        )
        if name == DBT_CONTAINER:
            _clear_of_artifacts(f"{where}.volumeMounts[{j}]", mount)


def _not_reserved_volume(parameter: str, name: str, advice: str) -> None:
    why = RESERVED_VOLUMES.get(name)
    if why is not None:
        raise InvalidSpecError(parameter, f"{name!r} is kubedbt's own volume: {why}; {advice}")


def _clear_of_artifacts(where: str, mount: dict[str, Any]) -> None:
    """Whether a dbt mount hides kubedbt's: the artifacts (/kubedbt) or the launcher."""
    path = validate.absolute_path(f"{where}.mountPath", mount.get("mountPath"))
    for reserved in RESERVED_MOUNTS:
        if path.rstrip("/") == reserved or path.startswith(reserved + "/"):
            raise InvalidSpecError(f"{where}.mountPath", f"{reserved} is kubedbt's own")


# The audiences API servers accept by default: their issuer (https://kubernetes.default.svc and
# its cluster-domain forms, kind's and kubeadm's default), "api" and the bare service names. A
# cluster with other --api-audiences is beyond what a DAG check can know.
_API_SERVER_AUDIENCE: Final = re.compile(
    r"^(api|(https?://)?kubernetes(\.default(\.svc(\.[a-z0-9.-]+)?)?)?(:\d+)?/?)$", re.IGNORECASE
)


def _no_api_server_token(where: str, volume: dict[str, Any]) -> None:
    """Refuse a projected service account token for the API server.

    Such a token acts as the pod's service account, which kubedbt gives to the results uploader
    alone (dbt could rewrite its results with it). A token with an explicit audience is for
    another service (Vault, AWS STS) and stays allowed.
    """
    if "projected" not in volume:
        return
    projected = validate.mapping(f"{where}.projected", volume["projected"])
    sources = validate.list_of_mappings(f"{where}.projected.sources", projected.get("sources"))
    for j, source in enumerate(sources):
        if "serviceAccountToken" not in source:
            continue
        token_at = f"{where}.projected.sources[{j}].serviceAccountToken"
        token = validate.mapping(token_at, source["serviceAccountToken"])
        audience = token.get("audience")
        if not isinstance(audience, str) or not audience.strip():
            raise InvalidSpecError(
                f"{token_at}.audience",
                "a service account token without an audience is an API-server token for the "
                "pod's service account, which kubedbt gives to the results uploader alone; set "
                "audience to the service that reads it (for example vault or sts.amazonaws.com)",
            )
        if _API_SERVER_AUDIENCE.search(audience.strip()):
            raise InvalidSpecError(
                f"{token_at}.audience",
                f"{audience!r} is an audience of the Kubernetes API server, so the token would act "
                "as the pod's service account, which kubedbt gives to the results uploader alone",
            )


def tolerations(parameter: str, value: object) -> tuple[dict[str, Any], ...]:
    """Toleration dicts with valid operators and effects."""
    result = validate.list_of_mappings(parameter, value)
    for i, toleration in enumerate(result):
        where = f"{parameter}[{i}]"
        known_keys(where, toleration, _TOLERATION_KEYS)
        if "operator" in toleration:
            validate.one_of(f"{where}.operator", toleration["operator"], ("Exists", "Equal"))
        if "effect" in toleration and toleration["effect"] != "":
            validate.one_of(
                f"{where}.effect",
                toleration["effect"],
                ("NoSchedule", "PreferNoSchedule", "NoExecute"),
            )
        if toleration.get("operator") == "Exists" and toleration.get("value"):
            raise InvalidSpecError(where, "operator Exists takes no value")
    return result
