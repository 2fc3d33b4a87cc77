"""A user's dbt project built into its own image: what to check first, and the DAG that runs it.

`make project-image` (images/project/build.py) copies a project into an image on top of
kubedbt/dbt. In the pod that project is root-owned and read-only, dbt runs as uid 1000, and the
one place it may write is /kubedbt, the run's emptyDir (kubedbt sends dbt's target and logs
there). A profile that puts its DuckDB file next to the project therefore fails only once the
pod runs, with "Permission denied". These checks read the project's files (as text, passed in)
and say so before anything is built, with the fix; the build script does the reading and the
building. Everything here is pure, so it is table-tested without dbt, docker or a cluster.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from kubedbt.core import validate
from kubedbt.core.command import ARTIFACTS_DIR
from kubedbt.core.errors import InvalidSpecError, TerminalError

# Where the image puts the project: /usr/app/<name>, beside the example project of kubedbt/dbt.
APP_DIR: Final = "/usr/app"
PACKAGE_FILES: Final = ("packages.yml", "dependencies.yml")
# dbt's own rule for project names, which also makes them safe as a directory name.
_PROJECT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `{{ env_var('NAME') }}` or `{{ env_var('NAME', 'default') }}`, nothing else inside the braces.
_ENV_VAR = re.compile(
    r"""\{\{\s*env_var\(\s*(['"])(?P<name>[^'"]+)\1\s*"""
    r"""(?:,\s*(['"])(?P<default>[^'"]*)\3\s*)?\)\s*\}\}"""
)
# A model materialised as a file by dbt-duckdb: materialized='external', +materialized: external.
_EXTERNAL = re.compile(r"""materialized['"]?\s*[:=]\s*['"]?external\b""")
# DuckDB databases that are not a file the pod writes: in memory, MotherDuck, or a URL.
_NOT_A_FILE = re.compile(r"^(:memory:.*|md:.*|motherduck:.*|[a-z][a-z0-9+.-]*://.*)$")
# A docker image reference with a tag: [registry[:port]/]path[:tag] (digests are not built here).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?)/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
# Profile keys whose value is a credential (dbt adapters' names), and key endings that say so.
_SECRET_KEYS: Final = frozenset(
    {"password", "pass", "token", "private_key", "private_key_passphrase", "keyfile_json",
     "client_secret", "refresh_token", "secret", "api_key"}
)  # fmt: skip
_SECRET_ENDINGS: Final = ("_password", "_token", "_secret", "_private_key")
# The words a make variable may say yes or no with.
_YES: Final = frozenset({"1", "true", "yes", "on"})
_NO: Final = frozenset({"", "0", "false", "no", "off"})


class ProjectError(TerminalError, ValueError):
    """The directory cannot be built into an image as it is; `where` names the file or option."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Finding:
    """Something in the project that would fail or misbehave in the pod, and how to fix it."""

    where: str
    problem: str
    fix: str


@dataclass
class Check:
    """What the checks found (each fails the build unless told to go on) and what to know."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said loudly, never stop the build

    def extend(self, other: Check) -> None:
        """Add another check's findings, notes and warnings to this one."""
        self.findings += other.findings
        self.notes += [note for note in other.notes if note not in self.notes]
        self.warnings += [w for w in other.warnings if w not in self.warnings]


@dataclass(frozen=True)
class Project:
    """The parts of dbt_project.yml the image build needs."""

    name: str
    profile: str | None
    packages_install_path: str

    @property
    def image_dir(self) -> str:
        """Where the image holds the project."""
        return f"{APP_DIR}/{self.name}"


def _load(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProjectError(where, f"is not valid YAML: {' '.join(str(e).split())}") from e


def read_project(text: str) -> Project:
    """The name, profile and packages directory of a dbt_project.yml."""
    document = _load(text, "dbt_project.yml")
    if not isinstance(document, dict):
        raise ProjectError("dbt_project.yml", "is not a mapping of dbt project settings")
    name = document.get("name")
    if not isinstance(name, str) or not _PROJECT_NAME.fullmatch(name):
        raise ProjectError(
            "dbt_project.yml",
            f"name {name!r} is not a dbt project name (letters, digits and '_', "
            "not starting with a digit)",
        )
    profile = document.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise ProjectError("dbt_project.yml", f"profile {profile!r} is not a string")
    install = document.get("packages-install-path", "dbt_packages")
    if not isinstance(install, str) or not _inside(install):
        raise ProjectError(
            "dbt_project.yml",
            f"packages-install-path {install!r} is not a directory inside the project, so the "
            "packages dbt deps installs at build time would not be in the image: leave it unset "
            "(dbt_packages) or make it a relative path",
        )
    return Project(name=name, profile=profile, packages_install_path=posixpath.normpath(install))


def project_notes(text: str) -> list[str]:
    """Settings of dbt_project.yml that kubedbt overrides in the pod, so none surprises."""
    document = _load(text, "dbt_project.yml")
    if not isinstance(document, dict):
        return []
    overridden = {"target-path": "--target-path", "log-path": "--log-path"}
    return [
        f"dbt_project.yml sets {key}; kubedbt runs dbt with {flag} under {ARTIFACTS_DIR}, "
        "which takes precedence in the pod"
        for key, flag in overridden.items()
        if key in document
    ]


def _inside(path: str) -> bool:
    """Whether `path`, relative to the project, stays inside it."""
    normal = posixpath.normpath(path)
    return not posixpath.isabs(path) and normal != ".." and not normal.startswith("../")


def local_packages(text: str, file: str) -> list[str]:
    """The `local:` packages of packages.yml or dependencies.yml, each inside the project.

    The image build sees the project directory only, so a package outside it is an error.
    """
    document = _load(text, file) or {}
    packages = document.get("packages") if isinstance(document, dict) else None
    if packages is None:
        return []
    if not isinstance(packages, list):
        raise ProjectError(file, "packages is not a list")
    paths = [p["local"] for p in packages if isinstance(p, dict) and "local" in p]
    for path in paths:
        if not isinstance(path, str) or not _inside(path):
            raise ProjectError(
                file,
                f"local package {path!r} is outside the project directory, and the image build "
                "sees only the project: move the package into the project (for example "
                "packages/<name>) and point `local:` there",
            )
    return [posixpath.normpath(p) for p in paths]


def uses_external_materialization(texts: Iterable[str]) -> bool:
    """Whether any model or config text materialises a model as an external file (dbt-duckdb).

    Such models write under the profile's external_root, which must then be writable.
    """
    return any(_EXTERNAL.search(text) for text in texts)


@dataclass(frozen=True)
class Resolved:
    """A profile value with its `env_var()` defaults filled in, as the checks read it."""

    value: str | None  # None: an env var without a default decides it
    env_vars: tuple[str, ...]
    templated: bool  # Jinja beyond env_var() is left in: the value cannot be checked


def resolve(value: str) -> Resolved:
    """Fill in `{{ env_var('X', 'default') }}` with its default; say what is left."""
    names: list[str] = []
    unset = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal unset
        names.append(match["name"])
        if match["default"] is None:
            unset = True
            return ""
        return match["default"]

    text = _ENV_VAR.sub(substitute, value)
    templated = "{{" in text or "{%" in text
    return Resolved(None if unset or templated else text, tuple(names), templated)


def check_profiles(
    text: str | None, project: Project, *, uses_external: bool = False, where: str = "profiles.yml"
) -> Check:
    """Whether the project's profile in `text` finds its output and writes only under /kubedbt.

    `text` is None when the project has no profiles.yml: fine with profile_conn_id, and said so.
    """
    check = Check()
    if text is None:
        check.notes.append(
            "no profiles.yml in the project: the DAG must name an Airflow connection with "
            "profile_conn_id (or add a profiles.yml with profile "
            f"{project.profile or project.name!r})"
        )
        return check
    loaded = _load(text, where)
    document: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    profile_name = project.profile or project.name
    profile = document.get(profile_name)
    if not isinstance(profile, dict) or not isinstance(profile.get("outputs"), dict):
        found = sorted(str(k) for k, v in document.items() if isinstance(v, dict))
        check.findings.append(
            Finding(
                where,
                f"has no profile {profile_name!r} with outputs (dbt_project.yml names it; "
                f"profiles found: {', '.join(found) or 'none'})",
                f"add profile {profile_name!r}, or use profile_conn_id in the DAG",
            )
        )
        return check
    outputs: dict[str, Any] = profile["outputs"]
    target = profile.get("target")
    target = resolve(target).value if isinstance(target, str) else None
    if target is not None and target not in outputs:
        problem = f"names output {target!r}, which the profile does not have"
        fix = f"set target to one of {', '.join(map(str, outputs))}, or pass target= in the DAG"
        check.findings.append(Finding(f"{where}: {profile_name}.target", problem, fix))
    for output_name, output in outputs.items():
        if isinstance(output, dict):
            prefix = f"{where}: {profile_name}.outputs.{output_name}"
            check.extend(_check_output(prefix, output, project, uses_external=uses_external))
    return check


def literal_secrets(text: str | None, where: str = "profiles.yml") -> list[str]:
    """Warnings for credentials written into profiles.yml as they are, not read with env_var().

    The whole file goes into the image, whichever profile the DAG uses, so every profile is read.
    The warnings name the key, never its value.
    """
    loaded = _load(text, where) if text else None
    warnings: list[str] = []
    for profile_name, profile in loaded.items() if isinstance(loaded, dict) else []:
        outputs = profile.get("outputs") if isinstance(profile, dict) else None
        for output_name, output in outputs.items() if isinstance(outputs, dict) else []:
            prefix = f"{profile_name}.outputs.{output_name}"
            warnings += [
                f"{where}: {key} is written in the file as it is, so it is baked into the image "
                "and anyone who can pull the image can read it: write "
                f"{{{{ env_var('DBT_ENV_SECRET_{key.rsplit('.', 1)[-1].upper()}') }}}} instead "
                "(dbt hides DBT_ENV_SECRET_ values in its logs) and set it from a Kubernetes "
                'Secret with env_from=[{"secretRef": {"name": ...}}] in the DAG'
                for key in _literal_keys(prefix, output)
            ]
    return warnings


def _literal_keys(prefix: str, settings: Mapping[object, object]) -> list[str]:
    """The credential keys under `settings` whose value is not read from the environment."""
    found: list[str] = []
    for key, value in settings.items():
        name = str(key)
        secret = name.lower() in _SECRET_KEYS or name.lower().endswith(_SECRET_ENDINGS)
        if isinstance(value, Mapping):  # keyfile_json: the private key is one of its keys
            found += _literal_keys(f"{prefix}.{name}", value)
        elif secret and _is_literal(value):
            found.append(f"{prefix}.{name}")
    return found


def _is_literal(value: object) -> bool:
    if isinstance(value, str):
        resolved = resolve(value)
        return bool(value.strip()) and not resolved.env_vars and not resolved.templated
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_output(
    prefix: str, output: Mapping[str, Any], project: Project, *, uses_external: bool
) -> Check:
    kind = output.get("type")
    if not isinstance(kind, str) or resolve(kind).value != "duckdb":
        return Check()  # warehouses over the network write nothing in the pod
    check = Check()
    database = f"{ARTIFACTS_DIR}/{project.name}.duckdb"
    check.extend(_check_path(f"{prefix}.path", output.get("path"), project, database))
    attachments = output.get("attach") or []
    for i, attached in enumerate(attachments if isinstance(attachments, list) else []):
        if isinstance(attached, dict) and not attached.get("read_only"):
            name = attached.get("alias") or f"attached{i}"
            suggestion = f"{ARTIFACTS_DIR}/{name}.duckdb"
            path = attached.get("path")
            check.extend(_check_path(f"{prefix}.attach[{i}].path", path, project, suggestion))
    settings = output.get("settings")
    if isinstance(settings, dict) and "temp_directory" in settings:
        temp = settings["temp_directory"]
        suggestion = f"{ARTIFACTS_DIR}/duckdb-tmp"
        check.extend(_check_path(f"{prefix}.settings.temp_directory", temp, project, suggestion))
    if "external_root" in output or uses_external:
        # dbt-duckdb's default external_root is ".": the project directory, read-only in the pod.
        external = output.get("external_root", ".")
        suggestion = f"{ARTIFACTS_DIR}/external"
        check.extend(_check_path(f"{prefix}.external_root", external, project, suggestion))
    return check


def _check_path(where: str, value: object, project: Project, suggestion: str) -> Check:
    """One path dbt writes through DuckDB: it must be under /kubedbt (or not be a file)."""
    check = Check()
    if not isinstance(value, str) or _NOT_A_FILE.match(value):
        return check
    resolved = resolve(value)
    via = f" (the default of env_var({resolved.env_vars[0]!r}))" if resolved.env_vars else ""
    if resolved.value is None:
        what = (
            f"depends on env var {', '.join(resolved.env_vars)}"
            if not resolved.templated
            else "is a Jinja template beyond env_var('X', 'default')"
        )
        check.notes.append(
            f"{where} {what}, so it was not checked: make sure it resolves under {ARTIFACTS_DIR} "
            "in the pod"
        )
        return check
    path = resolved.value
    if path == "" or _NOT_A_FILE.match(path):
        return check
    fix = f"{where.rsplit('.', 1)[-1]}: {suggestion}"
    if resolved.env_vars:
        fix += f" (or set {resolved.env_vars[0]} in the pod with env_vars=)"
    if suggestion.endswith(".duckdb"):
        fix += (
            f"; {ARTIFACTS_DIR} is per run, so each run starts with an empty database: a DuckDB "
            "that outlives runs needs a volume (volumes= and volume_mounts=)"
        )
    normal = posixpath.normpath(path)
    if normal == ARTIFACTS_DIR or normal.startswith(f"{ARTIFACTS_DIR}/"):
        check.notes.append(
            f"{ARTIFACTS_DIR} is the run's own emptyDir: what dbt writes there (like "
            f"{normal}) is gone when the run ends; a DuckDB that outlives runs needs a volume "
            "(volumes= and volume_mounts= in the DAG)"
        )
        return check
    check.findings.append(Finding(where, f"{path!r}{via} {_why_not(path, project)}", fix))
    return check


def _why_not(path: str, project: Project) -> str:
    """Why a path outside /kubedbt fails (or may fail) in the pod."""
    normal = posixpath.normpath(path)
    if path.startswith("~"):
        return (
            f"is under the home directory, outside {ARTIFACTS_DIR}, the one directory the pod "
            "may write (the run's emptyDir), and gone with the pod"
        )
    if not posixpath.isabs(path):
        return (
            f"is relative: dbt opens it from the project directory {project.image_dir}, which "
            "is read-only in the pod (Permission denied)"
        )
    if normal == project.image_dir or normal.startswith(f"{project.image_dir}/"):
        return "is inside the project directory, which is read-only in the pod"
    return (
        f"is outside {ARTIFACTS_DIR}, the one directory the pod may write (the run's "
        "emptyDir); it works only if the DAG mounts a writable volume there"
    )


def image_reference(image: str, *, parameter: str = "IMAGE", digest: bool = False) -> str:
    """`image` checked as a tagged docker image reference; returned unchanged.

    `digest` also accepts a pinned `name@sha256:...` (the images built on, not the one built).
    """
    match = _IMAGE.fullmatch(image)
    if not image or not match or (match["digest"] and not digest):
        example = "kubedbt/dbt:dev" if parameter != "IMAGE" else "my-shop:dev"
        raise ProjectError(
            parameter,
            f"{image!r} is not an image name: use [registry/]name:tag in lower case, for example "
            f"{example} or registry.example.com/analytics/{example}",
        )
    if not match["tag"] and not match["digest"]:
        raise ProjectError(parameter, f"{image!r} has no tag: add one, for example {image}:dev")
    return image


def flag(value: str, variable: str) -> bool:
    """A make variable that says yes or no (IGNORE_CHECKS=1, KEEP_DBT_PACKAGES=false)."""
    word = value.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise ProjectError(
        variable, f"{value!r} is neither yes (1, true, yes, on) nor no (0, false, no, off, empty)"
    )


def containerd_name(image: str) -> str:
    """The fully qualified name containerd gives an image docker knows as `image`."""
    match = _IMAGE.fullmatch(image_reference(image))
    assert match  # image_reference checked it
    registry = match["registry"]
    if registry and ("." in registry or ":" in registry or registry == "localhost"):
        return image
    if registry:  # "kubedbt/dbt": the first component is a Docker Hub namespace, not a host
        return f"docker.io/{image}"
    return f"docker.io/library/{image}"


@dataclass(frozen=True, kw_only=True)
class DagOptions:
    """What the printed DAG says: the image just built and where it runs."""

    project: Project
    image: str
    namespace: str
    sidecar_image: str
    base_image: str
    profile_conn_id: str | None = None
    needs_connection: bool = False  # no profiles.yml: a placeholder profile_conn_id is printed

    def __post_init__(self) -> None:
        """Refuse what the printed DAG cannot carry, naming the make variable."""
        image_reference(self.image)
        image_reference(self.base_image, parameter="BASE", digest=True)
        image_reference(self.sidecar_image, parameter="SIDECAR_IMAGE", digest=True)
        try:
            validate.dns_label("NAMESPACE", self.namespace)
        except InvalidSpecError as e:
            raise ProjectError("NAMESPACE", e.problem) from e


def _literal(value: str) -> str:
    """`value` as a Python string literal, in double quotes when it has none (like the rest)."""
    text = repr(value)
    return f'"{text[1:-1]}"' if text.startswith("'") and '"' not in value else text


def render_dag(options: DagOptions) -> str:
    """A DAG module running `dbt build` of the project in its image, ready to save or paste from.

    Every value goes into the code through repr(); the one in a comment, the base image, was
    checked as an image reference when the options were made.
    """
    s = _literal
    project = options.project
    profile_line = ""
    if options.profile_conn_id:
        profile_line = (
            f"        profile_conn_id={s(options.profile_conn_id)},"
            "  # the Airflow connection dbt connects with\n"
        )
    elif options.needs_connection:
        profile_line = (
            '        profile_conn_id="CHANGE_ME",'
            "  # the project has no profiles.yml: name an Airflow connection\n"
        )
    return f'''"""dbt build of the {project.name} project, in its own image (make project-image)."""

import datetime

from airflow.sdk import DAG

from kubedbt.airflow import DbtJobOperator

with DAG(
    {s(project.name)},
    schedule=None,  # or "@daily", ...
    start_date=datetime.datetime(2026, 1, 1),
    catchup=False,
) as dag:
    DbtJobOperator(
        task_id="dbt_build",
        command="build",
        image={s(options.image)},  # {options.base_image} with the project at {project.image_dir}
        sidecar_image={s(options.sidecar_image)},
        image_pull_policy="IfNotPresent",
        namespace={s(options.namespace)},  # where the helm chart is installed
        service_account_name="dbt",  # the chart's: may patch its results ConfigMap, nothing else
{profile_line}        kubernetes_conn_id="kubernetes_default",
        deferrable=True,
        on_finish_action="keep_job",  # keep the Job for kubectl dbt
        retries=2,
    )
'''
