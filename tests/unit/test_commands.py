"""The dbt commands kubedbt accepts: their argument lists, and the options each is checked for.

Which options a command takes is checked against dbt 1.11's own command line (its click
commands, read in .venv-dbt), so a flag kubedbt renders is never one dbt refuses with exit code 2.
"""

from __future__ import annotations

import functools
import json
import subprocess
from typing import Any

import pytest

from kubedbt import DbtRunSpec, InvalidSpecError
from kubedbt.core.command import (
    ACCEPTED_BY,
    COMMAND_FLAGS,
    COMMANDS,
    dbt_args,
    list_args,
)
from tests.unit.dbt_runs import DBT

IMAGE = "kubedbt/dbt:dev"
LOGS = ["--log-path", "/kubedbt/logs", "--log-format-file", "json"]
TARGET = ["--target-path", "/kubedbt/target"]
# The flag each option of ACCEPTED_BY is rendered as (macro is run-operation's argument).
FLAG_OF = {
    "select": "--select",
    "exclude": "--exclude",
    "selector": "--selector",
    "full_refresh": "--full-refresh",
    "fail_fast": "--fail-fast",
    "threads": "--threads",
    "state": "--state",
    "macro_args": "--args",
    "inline": "--inline",
}
# What every command is given, whatever the spec sets: vars, the profile and the project.
ALWAYS = ["--vars", "--target", "--profile", "--project-dir", "--profiles-dir", *LOGS[::2]]
INLINE = "select * from {{ ref('orders') }} where amount > {{ var('least', 10) }}"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"command": "docs generate"}, ["docs", "generate", *TARGET, *LOGS]),
        (
            {"command": "docs generate", "select": "marts", "threads": 8, "state": "/prod"},
            [
                "docs",
                "generate",
                "--select",
                "marts",
                "--threads",
                "8",
                "--state",
                "/prod",
                *TARGET,
                *LOGS,
            ],
        ),
        # No --target-path: dbt debug writes no artifact and refuses it.
        ({"command": "debug"}, ["debug", "--connection", *LOGS]),
        (
            {"command": "debug", "target": "prod", "vars": {"env": "prod"}},
            ["debug", "--connection", "--vars", "{env: prod}", "--target", "prod", *LOGS],
        ),
        ({"command": "clone", "state": "/prod"}, ["clone", "--state", "/prod", *TARGET, *LOGS]),
        (
            {"command": "clone", "state": "/prod", "select": "marts", "full_refresh": True},
            ["clone", "--select", "marts", "--full-refresh", "--state", "/prod", *TARGET, *LOGS],
        ),
        (
            {"command": "show", "select": "customers", "dbt_flags": ["--limit", "20"]},
            ["show", "--output", "json", "--select", "customers", "--limit", "20", *TARGET, *LOGS],
        ),
        # The query is one argument, its Jinja untouched: dbt renders it in the pod.
        (
            {"command": "show", "inline": INLINE},
            ["show", "--inline", INLINE, "--output", "json", *TARGET, *LOGS],
        ),
    ],
)
def test_each_command_renders_exactly(values: dict[str, Any], expected: list[str]) -> None:
    assert dbt_args(DbtRunSpec(image=IMAGE, **values)) == expected


@pytest.mark.parametrize(
    "values",
    [
        {"command": "docs generate", "select": "a"},
        {"command": "debug"},
        {"command": "clone", "state": "/prod", "select": "a"},
        {"command": "show", "select": "a"},
    ],
)
def test_commands_dbt_retry_does_not_resume_list_nothing(values: dict[str, Any]) -> None:
    # The operator reruns these whole on a retry: there is nothing to complete after a stop.
    assert list_args(DbtRunSpec(image=IMAGE, **values)) is None


@functools.cache
def _dbt_options() -> dict[str, frozenset[str]]:
    """Every dbt command's options, as dbt 1.11's command line defines them."""
    script = """
import json
from dbt.cli.main import cli

options = {}
def walk(group, prefix):
    for name, command in group.commands.items():
        full = f"{prefix} {name}".strip()
        if hasattr(command, "commands"):
            walk(command, full)
        else:
            options[full] = sorted(o for p in command.params for o in [*p.opts, *p.secondary_opts])
walk(cli, "")
print(json.dumps(options))
"""
    python = DBT.parent / "python"
    assert python.exists(), f"no dbt at {DBT}: run `make dbt-venv` (make test-unit does)"
    completed = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {name: frozenset(flags) for name, flags in json.loads(completed.stdout).items()}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_kubedbt_may_render_is_one_dbt_accepts(command: str) -> None:
    accepted = _dbt_options()[command]
    rendered = [
        FLAG_OF[o] for o, commands in ACCEPTED_BY.items() if command in commands and o in FLAG_OF
    ]
    rendered += [*ALWAYS, *(f for f in COMMAND_FLAGS.get(command, ()) if f.startswith("--"))]
    if command != "debug":
        rendered.append("--target-path")
    assert sorted(set(rendered) - accepted) == []


def test_debug_takes_no_target_path_selection_or_threads() -> None:
    # Why kubedbt gives dbt debug none of them: dbt would exit 2 on each.
    accepted = _dbt_options()["debug"]
    assert {"--target-path", "--select", "--exclude", "--threads"}.isdisjoint(accepted)
    assert "--connection" in accepted


BAD_COMBINATIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"command": "clone"}, "state", "dbt clone needs the directory of the manifest.json"),
    ({"command": "show"}, "select", "give select (a model) or inline (a query)"),
    ({"command": "show", "exclude": "a"}, "select", "dbt show needs a node to preview"),
    ({"command": "show", "select": "a", "inline": "select 1"}, "inline", "cannot be combined"),
    ({"command": "show", "selector": "s", "inline": "select 1"}, "inline", "cannot be combined"),
    ({"command": "show", "inline": ""}, "inline", "must not be empty"),
    ({"command": "build", "inline": "select 1"}, "inline", "dbt build does not accept it"),
    ({"command": "show", "select": "a", "dbt_flags": ["--output", "text"]}, "dbt_flags", "JSON"),
    ({"command": "show", "select": "a", "dbt_flags": ["--output=text"]}, "dbt_flags", "--output"),
    ({"command": "show", "dbt_flags": ["--inline", "select 1"]}, "dbt_flags", "'inline' param"),
    ({"command": "debug", "select": "a"}, "select", "dbt debug does not accept it"),
    ({"command": "debug", "threads": 2}, "threads", "dbt debug does not accept it"),
    ({"command": "debug", "state": "/prod"}, "state", "dbt debug does not accept it"),
    ({"command": "docs generate", "full_refresh": True}, "full_refresh", "does not accept it"),
    ({"command": "show", "select": "a", "fail_fast": True}, "fail_fast", "does not accept it"),
]


@pytest.mark.parametrize(("values", "parameter", "words"), BAD_COMBINATIONS)
def test_a_bad_combination_fails_at_parse_time_naming_the_parameter(
    values: dict[str, Any], parameter: str, words: str
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        DbtRunSpec(image=IMAGE, **values)
    assert caught.value.parameter == parameter
    assert words in str(caught.value)


def test_output_is_the_user_s_for_every_command_but_show() -> None:
    flags = ["--output", "json", "--output-keys", "unique_id"]
    assert dbt_args(DbtRunSpec(command="ls", image=IMAGE, dbt_flags=flags))[1:5] == flags
