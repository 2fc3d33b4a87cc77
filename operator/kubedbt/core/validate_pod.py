"""Checks for the pod-level parameters of a run spec (resources, env, volumes, scheduling).

Objects are checked for the mistakes people make in DAG files: snake_case keys where the API wants
camelCase, a mount without its volume, requests above limits, a toleration with a typo'd operator.
Error messages name the parameter and never repeat environment values, which may be secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from kubedbt.core import validate
from kubedbt.core.errors import InvalidSpecError

# Names kubedbt gives its own volumes and the mount path of its artifacts emptyDir.
RESERVED_VOLUMES: Final = ("kubedbt-artifacts", "kubedbt-sa-token", "kubedbt-previous-results")
RESERVED_MOUNT: Final = "/kubedbt"

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
    """Volume dicts with unique names, none of them kubedbt's own."""
    result = validate.list_of_mappings(parameter, value)
    seen: set[str] = set()
    for i, volume in enumerate(result):
        name = validate.dns_label(f"{parameter}[{i}].name", volume.get("name"))
        if name in RESERVED_VOLUMES:
            raise InvalidSpecError(f"{parameter}[{i}].name", f"{name!r} is reserved for kubedbt")
        if name in seen:
            raise InvalidSpecError(parameter, f"volume {name!r} is defined twice")
        seen.add(name)
        if len(volume) < 2:
            raise InvalidSpecError(f"{parameter}[{i}]", f"volume {name!r} has no source")
    return result


def volume_mounts(
    parameter: str, value: object, available: tuple[dict[str, Any], ...]
) -> tuple[dict[str, Any], ...]:
    """VolumeMount dicts that name a volume of the pod and stay clear of kubedbt's mount."""
    result = validate.list_of_mappings(parameter, value)
    names = {v.get("name") for v in available}
    for i, mount in enumerate(result):
        where = f"{parameter}[{i}]"
        known_keys(where, mount, _MOUNT_KEYS)
        name = validate.string(f"{where}.name", mount.get("name"))
        if name not in names:
            raise InvalidSpecError(f"{where}.name", f"no volume named {name!r} in volumes")
        path = validate.absolute_path(f"{where}.mountPath", mount.get("mountPath"))
        if path.rstrip("/") == RESERVED_MOUNT or path.startswith(RESERVED_MOUNT + "/"):
            raise InvalidSpecError(f"{where}.mountPath", f"{RESERVED_MOUNT} is kubedbt's own")
    return result


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
