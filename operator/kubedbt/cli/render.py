"""`kubectl dbt render`: the Job and ConfigMap of a run, without a cluster (like helm template).

The parameters file is a YAML mapping of DbtRunSpec parameters, validated exactly as the operator
validates them, so a mistake is reported with the parameter's name before anything reaches a
cluster. The output is a YAML stream `kubectl apply -f -` takes: the Job, then its results
ConfigMap. As the operator renders a first try, or a later one with retry_strategy="full"; the
namespace's kubedbt-defaults ConfigMap is not read (no cluster), so set what it would provide.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kubedbt.cli.errors import USAGE, CliError
from kubedbt.core.errors import InvalidSpecError
from kubedbt.core.naming import RunIdentity
from kubedbt.core.render import render_job, render_results_configmap
from kubedbt.core.spec import DbtRunSpec

DEFAULT_IDENTITY = RunIdentity(dag_id="dag", task_id="task", run_id="manual__render")


def load_parameters(path: str) -> dict[str, Any]:
    """The parameters mapping from a YAML file, or from stdin for "-"."""
    where = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise CliError(f"cannot read {where}: {e.strerror}", USAGE) from e
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CliError(f"{where} is not valid YAML: {' '.join(str(e).split())}", USAGE) from e
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise CliError(
            f"{where} must be a mapping of DbtRunSpec parameters, not a {type(values).__name__}",
            USAGE,
        )
    return values


def build_spec(values: Mapping[str, Any], *, namespace: str | None) -> DbtRunSpec:
    """The validated spec; `namespace` (the -n flag) fills in a namespace the file leaves unset."""
    values = dict(values)
    if namespace is not None:
        given = values.setdefault("namespace", namespace)
        if given != namespace:
            raise CliError(
                f"the parameters' namespace {given!r} does not match --namespace {namespace!r}",
                USAGE,
            )
    known = {f.name for f in dataclasses.fields(DbtRunSpec)}
    if set(values) <= known:  # else from_mapping names the unknown key, a likelier mistake
        for f in dataclasses.fields(DbtRunSpec):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in values:
                raise InvalidSpecError(f.name, "required")
    return DbtRunSpec.from_mapping(values)


def render_stream(spec: DbtRunSpec, identity: RunIdentity) -> str:
    """The Job and its ConfigMap as a YAML multi-document stream."""
    documents = [render_job(spec, identity), render_results_configmap(spec, identity)]
    # A JSON round trip leaves only what YAML's safe dumper knows (lists, not tuples).
    plain = json.loads(json.dumps(documents))
    return yaml.safe_dump_all(plain, sort_keys=False, default_flow_style=False, width=2**31)


def render(
    path: str,
    *,
    namespace: str | None,
    dag_id: str | None,
    task_id: str | None,
    run_id: str | None,
    try_number: int | None,
    map_index: int | None,
) -> int:
    """Print the manifests of one run rendered from a parameters file."""
    spec = build_spec(load_parameters(path), namespace=namespace)
    base = DEFAULT_IDENTITY
    identity = RunIdentity(
        dag_id=base.dag_id if dag_id is None else dag_id,
        task_id=base.task_id if task_id is None else task_id,
        run_id=base.run_id if run_id is None else run_id,
        map_index=base.map_index if map_index is None else map_index,
        try_number=base.try_number if try_number is None else try_number,
    )
    sys.stdout.write(render_stream(spec, identity))
    return 0
