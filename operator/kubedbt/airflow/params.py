"""The operator's parameters that are not the run spec's: checks and conversions.

Each check raises InvalidSpecError naming the parameter, when the DAG is parsed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from airflow.sdk.log import mask_secret

from kubedbt.airflow import profiles
from kubedbt.core.classify import RETRYABLE, OutcomeKind
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.profiles import Profile, check_profile_parameters, refuse_chosen
from kubedbt.core.spec import DbtRunSpec

SENSITIVE_NAME_PARTS: Final = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PASS")


def default(name: str) -> Any:
    """The spec's default for a parameter (None for a required one)."""
    for item in dataclasses.fields(DbtRunSpec):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            return None
    return None


def templated(value: Any) -> bool:
    """Whether a value (or one inside it) is a Jinja template still to render."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(templated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(templated(v) for v in value)
    return False


def plain(value: Any) -> Any:
    """Kubernetes client models (V1Toleration, V1ResourceRequirements, ...) as API dicts."""
    if hasattr(value, "openapi_types") and hasattr(value, "to_dict"):
        from kubernetes.client import ApiClient

        return ApiClient().sanitize_for_serialization(value)
    if isinstance(value, list) and any(hasattr(v, "openapi_types") for v in value):
        return [plain(v) for v in value]
    return value


def env_value(value: Any) -> Any:
    """Native template rendering turns "5432" into 5432; env values are strings again here."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def mask_sensitive_env(spec: DbtRunSpec) -> None:
    """Tell Airflow's secret masker about env values whose names look like credentials."""
    for entry in spec.env_vars:
        name = entry["name"].upper()
        if "value" in entry and any(part in name for part in SENSITIVE_NAME_PARTS):
            mask_secret(entry["value"], entry["name"])


def positive(parameter: str, value: float) -> float:
    """A positive number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidSpecError(parameter, f"must be a positive number of seconds, got {value!r}")
    return float(value)


def choice(parameter: str, value: str, allowed: Sequence[str]) -> Any:
    """One of `allowed`."""
    if value not in allowed:
        raise InvalidSpecError(parameter, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def retryable_overrides(value: Mapping[str, bool] | None) -> dict[OutcomeKind, bool]:
    """retryable_failures, checked against the known failure kinds."""
    overrides: dict[OutcomeKind, bool] = {}
    for kind, retryable in (value or {}).items():
        if kind not in RETRYABLE or kind == "success":
            known = ", ".join(k for k in RETRYABLE if k != "success")
            raise InvalidSpecError(
                "retryable_failures", f"unknown failure kind {kind!r}; known: {known}"
            )
        if not isinstance(retryable, bool):
            raise InvalidSpecError(f"retryable_failures[{kind!r}]", "expected true or false")
        overrides[kind] = retryable
    return overrides


class _ProfileParameters(Protocol):
    profile_conn_id: str | None
    profile_target: str | None
    profile_args: dict[str, Any] | None


def check_profile(operator: _ProfileParameters, spec: DbtRunSpec) -> None:
    """At parse time: the profile parameters that are not templates, and what they exclude."""
    conn_id, target = operator.profile_conn_id, operator.profile_target
    check_profile_parameters(
        "placeholder" if templated(conn_id) else conn_id,
        None if templated(target) else target,
        operator.profile_args,
    )
    refuse_chosen(spec)


def read_profile(operator: _ProfileParameters) -> Profile | None:
    """The profiles.yml rendered from profile_conn_id (rendered), its secrets masked; or None."""
    if operator.profile_conn_id is None:
        return None
    check_profile_parameters(
        operator.profile_conn_id, operator.profile_target, operator.profile_args
    )
    return profiles.read_profile(
        operator.profile_conn_id, target=operator.profile_target, args=operator.profile_args
    )
