"""Namespace defaults: run parameters set once per namespace, in the `kubedbt-defaults` ConfigMap.

The helm chart renders that ConfigMap (data key `defaults.yaml`, a YAML mapping of DbtRunSpec
parameter names). The operator reads it from the run's namespace and uses a value only where the
DAG did not set the parameter itself: the DAG always wins.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

import yaml

from kubedbt.core.errors import InvalidSpecError

CONFIGMAP_NAME: Final = "kubedbt-defaults"
DATA_KEY: Final = "defaults.yaml"
# What a namespace may default: where and how runs execute, never what dbt does.
ALLOWED: Final = (
    "image",
    "sidecar_image",
    "image_pull_policy",
    "image_pull_secrets",
    "service_account_name",
    "container_resources",
    "sidecar_resources",
    "node_selector",
    "tolerations",
    "artifacts_url",
    "artifacts_secret",
)


def parse_defaults(configmap: Mapping[str, Any] | None) -> dict[str, Any]:
    """The defaults a ConfigMap (API JSON) holds; {} when there is none."""
    if configmap is None:
        return {}
    text = (configmap.get("data") or {}).get(DATA_KEY)
    if not text:
        return {}
    where = f"ConfigMap {CONFIGMAP_NAME} key {DATA_KEY}"
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidSpecError(where, f"not valid YAML: {e}") from e
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InvalidSpecError(where, "must be a mapping of parameter names to values")
    unknown = sorted(set(values) - set(ALLOWED))
    if unknown:
        raise InvalidSpecError(where, f"unknown keys {unknown}; allowed: {', '.join(ALLOWED)}")
    return values


def apply_defaults(
    values: Mapping[str, Any], defaults: Mapping[str, Any], explicit: Collection[str]
) -> dict[str, Any]:
    """`values` with each default filled in where the parameter is not in `explicit`."""
    result = dict(values)
    for name, value in defaults.items():
        if name not in explicit:
            result[name] = value
    return result
