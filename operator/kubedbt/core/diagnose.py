"""What dbt said went wrong, on one line, and how to fix a misconfiguration kubedbt recognises.

The evidence is dbt's own words: the error events of its JSON log (the digest the results
uploader keeps, kubedbt.core.results.digest_log) and, when there is no log, the last lines of
its output that the pod's termination message holds. dbt states its error in a few places, some
better than others: a MainEncounteredError (exit code 2) holds the exception's message, a
MainStackTrace the whole traceback (whose useful part is its LAST line), a failed `dbt debug`
check its explanation. `diagnose` picks the statement of the error and puts it on one line.

`misconfiguration` recognises what a new user of kubedbt runs into, each from a message dbt
really prints (the recordings are tests/unit/fixtures/misconfig): a write outside /kubedbt,
the pod's only writable directory (the image's files are root's, dbt runs as uid 1000, the root
filesystem may be read-only); a missing profile, target or project; an env var read with
env_var() that the pod does not set; packages that were never vendored into the image. It
returns the explanation and the fix, naming the operator parameter or profiles.yml key to change.
Fix texts name env vars, never their values.

dbt's messages can hold a profile's value: a password YAML reads as a number makes dbt echo it in
its validation error (`987654321 is not of type 'string'`). `hide_values` takes such values out;
every statement this module makes, and the digest the uploader stores, goes through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubedbt.core.errors import shorten

# The pod's writable emptyDir (kubedbt.core.command.ARTIFACTS_DIR; not imported, to keep this
# module free of the command layer).
WRITABLE_DIR: Final = "/kubedbt"
STATEMENT_CHARS: Final = 400
# How much of a message's end the traceback logic reads: the exception is at the end, and a
# message can be megabytes (Jinja output echoed in an error).
SCAN_CHARS: Final = 64 * 1024
HIDDEN: Final = "<value hidden>"
TRACEBACK: Final = "Traceback (most recent call last):"
ENCOUNTERED: Final = "Encountered an error:"
# Events whose message says an error happened but not which (the node's line in the run's
# progress, "Failure in model x"); the traceback is the last resort.
_VAGUE: Final = frozenset({"LogModelResult", "LogTestResult", "RunResultFailure"})
_STACK_TRACE: Final = "MainStackTrace"
# What each kind of event states, best first; any other error event comes after these.
_PREFERRED: Final = ("MainEncounteredError", "DebugCmdResult", "RunResultError")

# [ \t]+, not \s+: \s runs across newlines, which makes a search over blank lines quadratic.
_FRAME = re.compile(r'^[ \t]+File "[^"\n]+", line \d+', re.MULTILINE)
# dbt colours some messages when use_colors is on, in the JSON log file too.
ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")
# jsonschema's messages (dbt's validation of a profile and of its project) start with the value
# they refused, repr'd; the value ends at one of these.
_REFUSED = re.compile(
    r" (?:is not of type |is not valid under any of the given schemas|is not one of "
    r"|does not match |is too long|is too short)"
)
# Where the refused value starts on its line, best first: after dbt's "at path [...]: ", after
# "invalid: " (`Credentials in profile "p", target "t" invalid: VALUE ...`), after a ": ".
_VALUE_STARTS: Final = (
    re.compile(r"at path \[[^\]\n]*\]: "),
    re.compile(r"invalid: "),
    re.compile(r": "),
)
_TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d\s+", re.MULTILINE)
_CHECKS_FAILED = re.compile(r"^\d+ checks? failed:\s*$", re.MULTILINE)
_CLICK_ERROR = re.compile(r"^Error: .*", re.MULTILINE | re.DOTALL)
# dbt debug's COULD_NOT_CONNECT_MESSAGE (dbt/task/debug.py), around the database's error.
_COULD_NOT_CONNECT = re.compile(
    r"(?P<tried>[^\n]*?)\.?\nThe database returned the following error:\s*>(?P<error>.*?)"
    r"\n\s*\nCheck your database credentials",
    re.DOTALL,
)


@dataclass(frozen=True)
class Diagnosis:
    """The error dbt stated, on one line.

    node: the unique_id of the node it is about, when dbt named one. fix: the explanation and fix
    of the misconfiguration behind it, when kubedbt recognises one.
    """

    error: str
    node: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        return f"{self.node}: {self.error}" if self.node else self.error


def hide_values(message: str) -> str:
    """`message` with the values jsonschema's messages quote replaced by HIDDEN.

    `Credentials in profile "p", target "t" invalid: 987654321 is not of type 'string'` becomes
    `... invalid: <value hidden> is not of type 'string'`: the value may be a password. Linear in
    the message's length.
    """
    parts: list[str] = []
    end = 0
    for refused in _REFUSED.finditer(message):
        start = max(end, message.rfind("\n", end, refused.start()) + 1)
        line = message[start : refused.start()]
        found = (pattern.search(line) for pattern in _VALUE_STARTS)
        begins = next((match.end() for match in found if match), 0)
        parts.append(message[end : start + begins] + HIDDEN)
        end = refused.start()
    parts.append(message[end:])
    return "".join(parts)


def exception_text(text: str) -> str:
    """A traceback cut to the exception it ends with (what comes before it is kept).

    Python prints the frames first and the exception last, so a traceback cut from its end, as
    every message is when it is too long, loses exactly what says what went wrong. With chained
    exceptions, the last is the one raised. Only the last SCAN_CHARS of the traceback are read.
    """
    head, found, trace = text.partition(TRACEBACK)
    if not found:
        # The end of a traceback whose head was cut off (the last lines of the output): frames.
        if not _FRAME.search(text, max(0, len(text) - SCAN_CHARS)):
            return text
        head, trace = "", text
    lines = trace[-SCAN_CHARS:].splitlines()
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    first = frames[-1] + 1 if frames else 0
    # The frame's source line and the carets under it are indented; the exception is not.
    while first < len(lines) and (lines[first].startswith("    ") or not lines[first].strip()):
        first += 1
    rest = "\n".join(lines[first:]).strip()
    return "\n".join(part for part in (head.strip(), rest) if part)


def one_line(text: str) -> str:
    """A multi-line message of dbt's on one line.

    "Runtime Error" then "  Could not ..." is "Runtime Error: Could not ...", a list of "- item"
    lines becomes "item, item", and the "> in macro x" lines of a compilation error follow on.
    """
    lines = [line.strip() for line in ANSI.sub("", text).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    out = lines[0]
    listing = False
    for line in lines[1:]:
        item = line.startswith("- ")
        if item:
            out += (", " if listing else " ") + line[2:].strip()
        elif out.endswith((":", ".", "?", "!")) or listing or line.startswith(">"):
            out += " " + line
        else:
            out += ": " + line
        listing = item
    return shorten(" ".join(out.split()), STATEMENT_CHARS)


def statement(message: str) -> str:
    """The error one dbt message (an event's, a node's, a failed check's) states, on one line."""
    text = hide_values(exception_text(ANSI.sub("", message)))
    if ENCOUNTERED in text:
        text = text.rpartition(ENCOUNTERED)[2]
    connect = _COULD_NOT_CONNECT.search(text)
    if connect:
        # `dbt debug`'s connection check: what it tried, then the database's own words.
        return one_line(f"{connect.group('tried').strip()}:\n{connect.group('error')}")
    return one_line(text)


def output_statement(output: str) -> str:
    """The error the last lines of dbt's text output state (the termination message), or ""."""
    text = hide_values(_TIMESTAMP.sub("", ANSI.sub("", output[-SCAN_CHARS:])))
    if TRACEBACK in text or _FRAME.search(text):
        return one_line(exception_text(text.rpartition(TRACEBACK)[2] or text))
    checks = list(_CHECKS_FAILED.finditer(text))
    if checks:
        return statement(text[checks[-1].end() :])
    if ENCOUNTERED in text:
        return statement(text)
    click = _CLICK_ERROR.search(text)
    if click:  # a usage error: dbt stopped before it had a log
        return one_line(click.group(0))
    return ""


def diagnose(events: Sequence[Mapping[str, Any]], output: str = "") -> Diagnosis | None:
    """The error dbt stated, from its log digest's events, else from its output; None if none.

    events: kubedbt.core.results.LogEvent dicts (name, message, node), oldest first; a failed
    `dbt debug` check counts as a DebugCmdResult event.
    """
    ranked = sorted(
        (e for e in events if str(e.get("message") or "").strip()),
        key=lambda e: _rank(str(e.get("name") or "")),
    )
    if ranked:
        best = ranked[0]
        node = best.get("node")
        fix = misconfiguration(str(e["message"]) for e in ranked)
        return Diagnosis(statement(str(best["message"])), str(node) if node else None, fix)
    from_output = output_statement(output)
    if not from_output:
        return None
    return Diagnosis(from_output, fix=misconfiguration([output]))


def _rank(name: str) -> int:
    if name in _PREFERRED:
        return _PREFERRED.index(name)
    if name == _STACK_TRACE:
        return len(_PREFERRED) + 2
    return len(_PREFERRED) + (1 if name in _VAGUE else 0)


# --- recognised misconfigurations ----------------------------------------------------------------

# A file or directory dbt could not open: DuckDB's `"PATH": Permission denied` and Python's
# `[Errno 13] Permission denied: 'PATH'`. Case-sensitive on purpose: a warehouse's "permission
# denied for table x" is about privileges, not files. A URL (s3://...) is no file of the pod's.
_NOT_WRITABLE = re.compile(
    r"""(?:["'](?P<path1>[^"'\n]+)["']:\s*(?P<why1>Permission denied|Read-only file system))"""
    r"""|(?:(?P<why2>Permission denied|Read-only file system):\s*["'](?P<path2>[^"'\n]+)["'])"""
)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DATABASE_FILE: Final = (".duckdb", ".db", ".ddb", ".wal")
_PROFILE = re.compile(r"Could not find profile named '(?P<profile>[^']+)'")
_TARGET = re.compile(
    r"The profile '(?P<profile>[^']+)' does not have a target named '(?P<target>[^']+)'"
    r"(?:\. The valid target names for this profile are:(?P<valid>(?:\s*- \S+)+))?"
)
_ENV_VAR = re.compile(r"Env var required but not provided: '(?P<name>[^']+)'")
_PACKAGES = re.compile(
    r"dbt found \d+ package\(s\) specified in (?P<file>\S+), but only \d+ package\(s\) "
    r"installed in (?P<dir>[^\s.]+)"
)
_PROJECT_DIR = re.compile(
    r"Invalid value for '--project-dir': Path '(?P<path>[^']+)' does not exist"
    r"|No dbt_project\.yml found at expected path (?P<file>\S+)"
)
_PROFILES_DIR = re.compile(r"Invalid value for '--profiles-dir': Path '(?P<path>[^']+)' does")

_READ_ONLY_POD = (
    f"the dbt container can write only under {WRITABLE_DIR}, the run's emptyDir: the image's "
    "files (the project directory among them) are owned by root, dbt runs as uid 1000, and the "
    "root filesystem may be read-only"
)
_VENDOR = (
    "the pod cannot run `dbt deps` (the project directory is read-only and the cluster may be "
    "offline): vendor the packages when building the image, with `RUN dbt deps` in the "
    "Dockerfile (or by copying in a dbt_packages/ made by it), so {dir}/ is in the project "
    "directory"
)


def _outside_writable(path: str) -> bool:
    return not (path == WRITABLE_DIR or path.startswith(WRITABLE_DIR + "/"))


def _write_fix(match: re.Match[str]) -> str | None:
    path = match.group("path1") or match.group("path2")
    why = match.group("why1") or match.group("why2")
    if _URL.match(path) or not _outside_writable(path):
        return None
    name = path.rstrip("/").rsplit("/", 1)[-1]
    fix = _write_target_fix(path, name)
    # DuckDB says "Cannot open file" for a read as for a write: a file that is not one dbt
    # writes may be one it reads, unless the file system refused a write.
    written = fix is not None or why == "Read-only file system"
    if fix is None:
        fix = (
            "if dbt writes it, point what names it (a model's location, a profile setting, an env "
            f"var) under {WRITABLE_DIR}, or mount a writable volume there (volumes, "
            "volume_mounts); if dbt reads it, make it readable by uid 1000 in the image"
        )
    verb = "write" if written else "open"
    return f"dbt cannot {verb} {path} ({why}): {_READ_ONLY_POD}. {fix[0].upper()}{fix[1:]}."


def _write_target_fix(path: str, name: str) -> str | None:
    """The fix for a write to a path dbt is known to write, None for any other path."""
    if "/dbt_packages" in path or name == "dbt_packages":
        return _VENDOR.format(dir="dbt_packages")
    if name.endswith(_DATABASE_FILE):
        return (
            f"point the DuckDB `path` in profiles.yml at a file under {WRITABLE_DIR} (path: "
            f"{WRITABLE_DIR}/warehouse.duckdb), or, when profiles.yml reads the path with "
            "env_var(), set that env var to such a file with env_vars; the file goes with the "
            "pod, so a database that must outlive the run needs a volume (volumes, "
            "volume_mounts) or a database server"
        )
    if name in ("target", "logs", "partial_parse.msgpack", "dbt.log") or any(
        f"/{part}/" in path for part in ("target", "logs")
    ):
        return (
            f"kubedbt passes --target-path {WRITABLE_DIR}/target and --log-path "
            f"{WRITABLE_DIR}/logs: remove what points dbt's target or logs elsewhere"
        )
    return None


def _profile_fix(match: re.Match[str]) -> str:
    return (
        f"no profiles.yml that dbt read has a profile named '{match.group('profile')}' (dbt "
        "reads profiles.yml in profiles_dir, by default the image's DBT_PROFILES_DIR). Set "
        "the `profile` parameter to a profile that profiles.yml defines (unset, dbt uses "
        "`profile:` in dbt_project.yml), point `profiles_dir` at the directory that holds the "
        "project's profiles.yml, or render one from an Airflow connection with profile_conn_id."
    )


def _target_fix(match: re.Match[str]) -> str:
    valid = ", ".join(v.strip()[2:] for v in (match.group("valid") or "").splitlines() if v.strip())
    among = f" ({valid})" if valid else ""
    return (
        f"the profile '{match.group('profile')}' has no target (output) named "
        f"'{match.group('target')}'. Set the `target` parameter to one of its "
        f"targets{among}, or add the output '{match.group('target')}' under the profile's "
        "`outputs:` in profiles.yml."
    )


def _env_var_fix(match: re.Match[str]) -> str:
    name = match.group("name")
    return (
        f"profiles.yml or the project reads the env var {name} with env_var() and the dbt "
        f"container does not set it. Set {name} with env_vars, or, for a credential, from a "
        'Secret with env_from=[{"secretRef": {"name": ...}}] (or give env_var() a default).'
    )


def _packages_fix(match: re.Match[str]) -> str:
    return (
        f"the project declares packages in {match.group('file')} but the image has no "
        f"{match.group('dir')}/ with them installed: "
        + _VENDOR.format(dir=match.group("dir"))
        + "."
    )


def _project_dir_fix(match: re.Match[str]) -> str | None:
    where = match.group("path") or match.group("file")
    if "/dbt_packages/" in where:
        return None  # a vendored package without dbt_project.yml, not the project
    return (
        f"there is no dbt project at {where}. Set `project_dir` to the directory in the "
        "image that holds dbt_project.yml (unset, the image's DBT_PROJECT_DIR)."
    )


def _profiles_dir_fix(match: re.Match[str]) -> str:
    return (
        f"the profiles directory {match.group('path')} does not exist in the image. Set "
        "`profiles_dir` to the directory that holds profiles.yml (unset, the image's "
        "DBT_PROFILES_DIR), or render one with profile_conn_id."
    )


_RECOGNISERS: Final[tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]], ...]] = (
    (_PACKAGES, _packages_fix),
    (_ENV_VAR, _env_var_fix),
    (_TARGET, _target_fix),
    (_PROFILE, _profile_fix),
    (_PROFILES_DIR, _profiles_dir_fix),
    (_PROJECT_DIR, _project_dir_fix),
    (_NOT_WRITABLE, _write_fix),
)


def misconfiguration(messages: Iterable[str]) -> str | None:
    """The explanation and fix of the first known misconfiguration dbt's messages show, if any.

    Give the message that states the error first: the first message that matches wins.
    """
    for message in messages:
        text = ANSI.sub("", message)
        for pattern, fix in _RECOGNISERS:
            for match in pattern.finditer(text):
                found = fix(match)
                if found is not None:
                    return found
    return None
