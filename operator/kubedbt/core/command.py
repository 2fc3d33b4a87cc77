"""The dbt command line of a run, built as an argument list (never a shell string).

Which options each dbt command accepts is data here, so a DAG that asks `dbt test` for a full
refresh fails at parse time with a clear message instead of with dbt's exit code 2 in a pod.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Final

import yaml

if TYPE_CHECKING:
    from kubedbt.core.spec import DbtRunSpec

COMMANDS: Final = (
    "build",
    "run",
    "test",
    "seed",
    "snapshot",
    "source freshness",
    "compile",
    "ls",
    "run-operation",
    "retry",
    "docs generate",
    "debug",
    "clone",
    "show",
)

_SELECTING = frozenset(
    {"build", "run", "test", "seed", "snapshot", "source freshness", "compile", "ls"}
    | {"docs generate", "clone", "show"}
)
# Option name -> the commands that accept it (checked against `dbt <command> --help` of dbt 1.11;
# `dbt debug` takes none of them: it loads the profile and the project and tests the connection).
ACCEPTED_BY: Final[dict[str, frozenset[str]]] = {
    "select": _SELECTING,
    "exclude": _SELECTING,
    "selector": _SELECTING,
    "full_refresh": frozenset({"build", "run", "seed", "compile", "clone"}),
    "fail_fast": frozenset({"build", "run", "test", "seed", "snapshot", "retry", "clone"}),
    "threads": frozenset(
        {"build", "run", "test", "seed", "snapshot", "source freshness", "compile", "retry"}
        | {"docs generate", "clone", "show"}
    ),
    "state": _SELECTING | {"retry"},
    "macro": frozenset({"run-operation"}),
    "macro_args": frozenset({"run-operation"}),
    "inline": frozenset({"show", "compile"}),
}
# Flags kubedbt always gives a command, after its own options:
# - `dbt debug --connection` skips the check that git is installed, which fails in images without
#   git (kubedbt/dbt has none, and a pod never runs `dbt deps`); the profile and the project are
#   still loaded, and the connection tested.
# - `dbt show --output json` puts the previewed rows in dbt's log as JSON, which the results
#   uploader reads back into the summary (kubedbt.core.command_output).
COMMAND_FLAGS: Final[dict[str, tuple[str, ...]]] = {
    "debug": ("--connection",),
    "show": ("--output", "json"),
}
# Flags of one command that kubedbt sets itself (COMMAND_FLAGS) and that dbt_flags must not change.
COMMAND_MANAGED_FLAGS: Final[dict[str, dict[str, str]]] = {
    "show": {"--output": "kubedbt reads the preview as JSON and prints it as a table"},
}
# Commands that write no artifacts and refuse --target-path.
_NO_TARGET_PATH: Final = frozenset({"debug"})

# Where the dbt container writes its artifacts: an emptyDir per pod, so concurrent runs of the same
# project never share a target directory.
ARTIFACTS_DIR: Final = "/kubedbt"
TARGET_PATH: Final = f"{ARTIFACTS_DIR}/target"
LOG_PATH: Final = f"{ARTIFACTS_DIR}/logs"
# dbt names its log file dbt.log; with --log-format-file json every line is one JSON event.
JSON_LOG_FILE: Final = f"{LOG_PATH}/dbt.log"
# Where a try that resumes an earlier one finds that try's run_results (`dbt retry --state`).
STATE_DIR: Final = f"{ARTIFACTS_DIR}/state"

# Where the dbt container finds the profiles.yml rendered from profile_conn_id (a Secret volume that
# only the dbt container mounts).
PROFILE_DIR: Final = "/kubedbt-profile"

# kubedbt-launch, the dbt container's PID 1, turns the pod's SIGTERM into the SIGINT dbt stops on
# (images/launcher). An init container copies it from kubedbt's image into its own emptyDir.
LAUNCHER_DIR: Final = "/kubedbt-launcher"
LAUNCHER: Final = f"{LAUNCHER_DIR}/kubedbt-launch"
# What the launcher leaves for the results uploader when the pod was stopped: when and how dbt
# was interrupted, and the nodes the command had selected (`dbt ls`, run once dbt has exited).
STOP_MARKER_FILE: Final = f"{ARTIFACTS_DIR}/kubedbt-stop.json"
SELECTED_FILE: Final = f"{ARTIFACTS_DIR}/kubedbt-selected.jsonl"
LIST_LOG_PATH: Final = f"{LOG_PATH}/after-interrupt"
# The resource types each resumable command runs, so `dbt ls` selects what the command would.
RESOURCE_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "build": ("model", "seed", "snapshot", "test", "unit_test", "function"),
    "run": ("model",),
    "test": ("test", "unit_test"),
    "seed": ("seed",),
    "snapshot": ("snapshot",),
    "compile": ("model", "seed", "snapshot", "test", "unit_test", "analysis"),
}

# Flags kubedbt sets itself or that have a parameter of their own.
MANAGED_FLAGS: Final[dict[str, str]] = {
    "--target-path": "kubedbt writes artifacts to its own emptyDir",
    "--log-path": "kubedbt writes logs to its own emptyDir",
    "--log-format-file": "kubedbt needs the JSON log file",
    "--select": "use the 'select' parameter",
    "-s": "use the 'select' parameter",
    "--models": "use the 'select' parameter",
    "-m": "use the 'select' parameter",
    "--exclude": "use the 'exclude' parameter",
    "--selector": "use the 'selector' parameter",
    "--vars": "use the 'vars' parameter",
    "--full-refresh": "use the 'full_refresh' parameter",
    "--fail-fast": "use the 'fail_fast' parameter",
    "-x": "use the 'fail_fast' parameter",
    "--threads": "use the 'threads' parameter",
    "--target": "use the 'target' parameter",
    "-t": "use the 'target' parameter",
    "--profile": "use the 'profile' parameter",
    "--project-dir": "use the 'project_dir' parameter",
    "--profiles-dir": "use the 'profiles_dir' parameter",
    "--state": "use the 'state' parameter",
    "--args": "use the 'macro_args' parameter",
    "--inline": "use the 'inline' parameter",
}


# Flags and env vars that would take away the evidence kubedbt reports from (run_results.json,
# the JSON log file), with the values that do it (None: the flag alone) and why. dbt's flags win
# over its env vars, so the managed flags above need no env counterpart; no flag of kubedbt's
# overrides these.
_NO_JSON = "kubedbt reports from run_results.json, which this stops dbt from writing"
_NO_LOG_FILE = "kubedbt reads dbt's error events from the log file, which this turns off"
_FALSE = frozenset({"false", "0", "no", "f", "n", "off"})
EVIDENCE_SWITCHES: Final[dict[str, tuple[frozenset[str] | None, str]]] = {
    "--no-write-json": (None, _NO_JSON),
    "--log-level-file": (frozenset({"none"}), _NO_LOG_FILE),
    "DBT_WRITE_JSON": (_FALSE, _NO_JSON),
    "DBT_LOG_LEVEL_FILE": (frozenset({"none"}), _NO_LOG_FILE),
}


def removes_evidence(switch: str, value: str | None) -> str | None:
    """Why setting `switch` (a flag or env var) to `value` takes the evidence away, if it does."""
    if switch not in EVIDENCE_SWITCHES:
        return None
    values, why = EVIDENCE_SWITCHES[switch]
    return why if values is None or (value or "").strip().lower() in values else None


def evidence_flag(flags: tuple[str, ...]) -> tuple[str, str] | None:
    """The first flag of `flags` that would take away kubedbt's evidence, and why."""
    for i, flag in enumerate(flags):
        name, equals, inline = flag.partition("=")
        value = inline if equals else (flags[i + 1] if i + 1 < len(flags) else None)
        why = removes_evidence(name, value)
        if why is not None:
            takes_value = EVIDENCE_SWITCHES[name][0] is not None
            return (f"{name} {value}" if takes_value else name), why
    return None


def render_vars(values: dict[str, object]) -> str:
    """The mapping as one line of YAML (for --vars, --args), keys sorted for stable output."""
    return yaml.safe_dump(values, default_flow_style=True, sort_keys=True, width=2**31).strip()


def dbt_args(spec: DbtRunSpec) -> list[str]:
    """The arguments after `dbt`, in the order a person would type them."""
    args = spec.command.split(" ")
    if spec.macro is not None:
        args.append(spec.macro)
        if spec.macro_args:
            args += ["--args", render_vars(spec.macro_args)]
    if spec.inline is not None:
        args += ["--inline", spec.inline]
    args += COMMAND_FLAGS.get(spec.command, ())
    args += _selection_args(spec)
    if spec.full_refresh:
        args.append("--full-refresh")
    if spec.fail_fast:
        args.append("--fail-fast")
    if spec.threads is not None:
        args += ["--threads", str(spec.threads)]
    args += _project_args(spec)
    args += list(spec.dbt_flags)
    if spec.command not in _NO_TARGET_PATH:
        args += ["--target-path", TARGET_PATH]
    args += ["--log-path", LOG_PATH, "--log-format-file", "json"]
    return args


def list_args(spec: DbtRunSpec) -> list[str] | None:
    """`dbt ls` arguments that print the unique ids the command selects, one JSON line each.

    Run by the launcher after an interrupted dbt has exited, so the results uploader can record the
    nodes dbt never reached as skipped and `dbt retry` reruns them. Same selection, vars and
    profile as the command, restricted to the resource types it runs. None for the commands
    `dbt retry` cannot resume (and for `retry` itself: its selection is the state it restored).
    """
    default_types = RESOURCE_TYPES.get(spec.command)
    if default_types is None:
        return None
    args = ["ls", *_selection_args(spec), *_project_args(spec)]
    # The user's own resource-type choices select as they do for the command.
    types = _flag_values(spec.dbt_flags, ("--resource-type", "--resource-types"))
    for resource_type in types or default_types:
        args += ["--resource-type", resource_type]
    excluded = ("--exclude-resource-type", "--exclude-resource-types")
    for resource_type in _flag_values(spec.dbt_flags, excluded):
        args += ["--exclude-resource-type", resource_type]
    for indirect in _flag_values(spec.dbt_flags, ("--indirect-selection",))[-1:]:
        args += ["--indirect-selection", indirect]
    # Plain lines on stdout whatever the project's or env's log settings: one JSON id a line.
    args += ["--output", "json", "--output-keys", "unique_id", "--log-format", "text", "--print"]
    return [*args, "--quiet", "--target-path", TARGET_PATH, "--log-path", LIST_LOG_PATH]


def _flag_values(flags: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    """The values the flags `names` are given in `flags` (`--name v w`, `--name=v`), in order."""
    values: list[str] = []
    taking = False
    for flag in flags:
        name, equals, inline = flag.partition("=")
        if name in names:
            taking = not equals
            if equals:
                values.append(inline)
        elif flag.startswith("-"):
            taking = False
        elif taking:
            values.append(flag)
    return values


def _selection_args(spec: DbtRunSpec) -> list[str]:
    args: list[str] = []
    if spec.select:
        args += ["--select", *spec.select]
    if spec.exclude:
        args += ["--exclude", *spec.exclude]
    if spec.selector is not None:
        args += ["--selector", spec.selector]
    if spec.vars:
        args += ["--vars", render_vars(spec.vars)]
    return args


def _project_args(spec: DbtRunSpec) -> list[str]:
    args: list[str] = []
    if spec.target is not None:
        args += ["--target", spec.target]
    if spec.profile is not None:
        args += ["--profile", spec.profile]
    if spec.project_dir is not None:
        args += ["--project-dir", spec.project_dir]
    if spec.profiles_dir is not None:
        args += ["--profiles-dir", spec.profiles_dir]
    if spec.state is not None:
        args += ["--state", spec.state]
    return args


def command_line(spec: DbtRunSpec) -> str:
    """The command as a person would paste it into a shell, for annotations and logs."""
    return shlex.join([*spec.cmds, *dbt_args(spec)])
