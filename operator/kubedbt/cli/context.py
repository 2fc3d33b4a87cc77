"""Which cluster, context and namespace to use, chosen the way kubectl chooses them.

The kubeconfig is --kubeconfig, else the first existing file in KUBECONFIG, else ~/.kube/config.
(kubectl merges every file in KUBECONFIG; the plugin reads the first one that exists, which is the
same for the usual single file.) The context is --context or the file's current-context, and the
namespace is --namespace or that context's namespace, else "default". Nothing here talks to the
cluster: the file is read once, and the API client is built from it in kubedbt.cli.cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubedbt.cli.errors import CliError

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class KubeTarget:
    """The kubeconfig file, the context in it and the namespace commands apply to."""

    kubeconfig: Path
    context: str
    namespace: str
    server: str | None = None


def kubeconfig_path(flag: str | None, environ: Mapping[str, str]) -> Path:
    """The kubeconfig file kubectl would read; CliError when there is none."""
    if flag:
        path = Path(flag).expanduser()
        if not path.is_file():
            raise CliError(f"no kubeconfig: {path} (--kubeconfig) does not exist")
        return path
    listed = environ.get("KUBECONFIG", "")
    if listed:
        paths = [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
        found = next((p for p in paths if p.is_file()), None)
        if found is None:
            raise CliError(f"no kubeconfig: KUBECONFIG={listed} names no existing file")
        return found
    default = Path(environ.get("HOME") or Path.home()) / ".kube" / "config"
    if not default.is_file():
        raise CliError(
            f"no kubeconfig: {default} does not exist; set KUBECONFIG or pass --kubeconfig"
        )
    return default


def resolve(
    *,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    environ: Mapping[str, str],
) -> KubeTarget:
    """The target of a command from its flags and the environment."""
    path = kubeconfig_path(kubeconfig, environ)
    config = _load(path)
    name = context or config.get("current-context")
    if not name:
        raise CliError(f"kubeconfig {path} has no current-context; pass --context")
    contexts = _named(config, "contexts", "context")
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise CliError(f"context {name!r} is not in kubeconfig {path} (it has: {known})")
    chosen = contexts[name]
    cluster = _named(config, "clusters", "cluster").get(str(chosen.get("cluster")), {})
    return KubeTarget(
        kubeconfig=path,
        context=str(name),
        namespace=namespace or str(chosen.get("namespace") or DEFAULT_NAMESPACE),
        server=cluster.get("server"),
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as e:
        raise CliError(f"cannot read kubeconfig {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise CliError(f"kubeconfig {path} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(config, dict):
        raise CliError(f"kubeconfig {path} is not a kubeconfig (expected a mapping)")
    return config


def _named(config: Mapping[str, Any], section: str, key: str) -> dict[str, dict[str, Any]]:
    """A kubeconfig list section ({name, <key>: {...}} entries) as {name: entry[key]}."""
    entries = config.get(section) or []
    return {
        str(entry["name"]): entry.get(key) or {}
        for entry in entries
        if isinstance(entry, dict) and "name" in entry
    }
