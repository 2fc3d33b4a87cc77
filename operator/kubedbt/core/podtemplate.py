"""Merging a user's Pod template under the Pod kubedbt renders.

Precedence, from strongest to weakest:
1. what kubedbt renders from the spec (the dbt container's command, image, artifacts volume, the
   sidecar, labels, security defaults and every parameter given explicitly);
2. the pod template (pod_template), which fills in everything kubedbt leaves unset.

Mappings merge key by key. Lists of named objects (containers, initContainers, volumes, env,
volumeMounts, imagePullSecrets) merge by name, kubedbt's entry winning on a clash, so a template
can add a container or set fields of the `dbt` container that kubedbt does not set. Lists of unnamed
objects (tolerations, topologySpreadConstraints) are concatenated; lists of plain values (args,
command) are kubedbt's when it sets them.

Merging by name means a template entry named like one of kubedbt's would reach into it (a mount of
the token volume, env for the uploader) rather than stand beside it. The spec refuses such names
before anything is rendered (validate_pod.template_spec); this module trusts that it did.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_pod_template(template: dict[str, Any], rendered: dict[str, Any]) -> dict[str, Any]:
    """The Job's pod template: `rendered` laid over the template's metadata and spec."""
    base = {
        "metadata": copy.deepcopy(template.get("metadata") or {}),
        "spec": copy.deepcopy(template.get("spec") or {}),
    }
    # A template's name would name every pod of the Job alike; the Job names its pods itself.
    base["metadata"].pop("name", None)
    base["metadata"].pop("namespace", None)
    merged = _merge(base, rendered)
    assert isinstance(merged, dict)
    return merged


def _merge(base: object, over: object) -> object:
    if isinstance(base, dict) and isinstance(over, dict):
        result = dict(base)
        for key, value in over.items():
            result[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return result
    if isinstance(base, list) and isinstance(over, list):
        return _merge_lists(base, over)
    return copy.deepcopy(over)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _merge_lists(base: list[Any], over: list[Any]) -> list[Any]:
    if _named(base) and _named(over):
        by_name = {item["name"]: item for item in over}
        result = [
            _merge(item, by_name.pop(item["name"])) if item["name"] in by_name else item
            for item in base
        ]
        return result + [copy.deepcopy(item) for item in over if item["name"] in by_name]
    if all(isinstance(i, dict) for i in base + over):
        return base + [copy.deepcopy(item) for item in over if item not in base]
    return copy.deepcopy(over)
