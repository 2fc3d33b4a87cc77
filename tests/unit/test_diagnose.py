"""dbt's error on one line, and the fix of a misconfiguration, from what real dbt said.

fixtures/misconfig holds what .venv-dbt wrote for each misconfiguration as the pod would see it
(the project at /usr/app/jaffle_shop, not writable; only /kubedbt writable), recorded with
fixtures/misconfig/record.sh: the JSON log, run_results.json when dbt wrote one, the exit code and
the last lines of the output. Each is packed by the results uploader's own code and classified as
the watch does, in the pod of a run recorded on the real cluster (its dbt container's exit code
and termination message replaced by the scenario's).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from kubedbt.core import results
from kubedbt.core.classify import Evidence, Outcome, OutcomeKind, classify
from kubedbt.core.diagnose import (
    HIDDEN,
    diagnose,
    exception_text,
    hide_values,
    misconfiguration,
    one_line,
    output_statement,
    statement,
)
from kubedbt.core.naming import DBT_CONTAINER
from tests.unit.packed import round_trip

MISCONFIG = Path(__file__).parent / "fixtures" / "misconfig"
STATUS = Path(__file__).parent / "fixtures" / "status"


@cache
def _run(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MISCONFIG / name / "run.json").read_text())
    return data


def _log(name: str) -> list[str]:
    path = MISCONFIG / name / "dbt.log"
    return path.read_text().splitlines() if path.exists() else []


def uploaded(name: str, tmp_path: Path) -> results.RunResults:
    """What the results uploader makes of the scenario's files, read back."""
    target = tmp_path / "target"
    target.mkdir(parents=True)
    written = MISCONFIG / name / "run_results.json"
    if written.exists():
        shutil.copy(written, target)
    log = MISCONFIG / name / "dbt.log"
    return round_trip(target, log if log.exists() else None)


def pod_that_ended(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recorded Job and pod of a failed run, its dbt container ended as the scenario's dbt."""
    recorded = json.loads((STATUS / "parse_error.json").read_text())
    pod = copy.deepcopy(recorded["pods"][-1])
    (dbt,) = (s for s in pod["status"]["containerStatuses"] if s["name"] == DBT_CONTAINER)
    terminated = dbt["state"]["terminated"]
    terminated["exitCode"] = _run(name)["exit_code"]
    terminated["message"] = _run(name)["termination_message"]
    return recorded["job"], pod


def outcome_of(name: str, tmp_path: Path, *, with_results: bool = True) -> Outcome:
    job, pod = pod_that_ended(name)
    uploaded_results = uploaded(name, tmp_path) if with_results else None
    return classify(Evidence(job=job, pods=[pod], results=uploaded_results))


@dataclass(frozen=True)
class Case:
    """A recorded misconfiguration: how it is classified, what its reason and fix say."""

    kind: OutcomeKind
    reason: tuple[str, ...]
    fix: tuple[str, ...]


WRITE = ("/kubedbt", "uid 1000", "read-only")
DUCKDB = ("DuckDB `path` in profiles.yml", "env_vars", *WRITE)
PROFILE = ("`profile` parameter", "profiles_dir", "profile_conn_id")
VENDOR = ("RUN dbt deps", "Dockerfile", "dbt_packages/")
CASES: dict[str, Case] = {
    "duckdb_denied": Case(
        "dbt_error",
        ('IO Error: Cannot open file "/usr/app/jaffle_shop/jaffle_shop.duckdb": Permission ',),
        ("dbt cannot write /usr/app/jaffle_shop/jaffle_shop.duckdb (Permission denied)", *DUCKDB),
    ),
    "duckdb_read_only": Case(
        "dbt_error",
        ('jaffle_shop.duckdb": Read-only file system',),
        ("(Read-only file system)", *DUCKDB),
    ),
    "duckdb_relative": Case("dbt_error", ("Permission denied",), DUCKDB),
    "target_denied": Case(
        "dbt_error",
        ("[Errno 13] Permission denied: '/usr/app/jaffle_shop/target'",),
        ("--target-path /kubedbt/target", *WRITE),
    ),
    "target_read_only": Case(
        "dbt_error", ("[Errno 30] Read-only file system",), ("--target-path", *WRITE)
    ),
    "external_denied": Case(
        "nodes_errored",
        (
            "first model.jaffle_shop.exported: Runtime Error in model exported",
            '"/usr/app/jaffle_shop/exported.parquet": Permission denied',
        ),
        ("a model's location", "volume_mounts", *WRITE),
    ),
    "profile_missing": Case(
        "dbt_error", ("Runtime Error: Could not find profile named 'nosuch'",), PROFILE
    ),
    "profiles_yml_missing": Case(
        "dbt_error", ("Could not find profile named 'jaffle_shop'",), ("DBT_PROFILES_DIR", *PROFILE)
    ),
    "target_missing": Case(
        "dbt_error",
        ("does not have a target named 'nosuch'",),
        ("`target` parameter to one of its targets (duckdb, postgres)", "profiles.yml"),
    ),
    "profiles_dir_missing": Case(
        "dbt_error",
        ("Invalid value for '--profiles-dir': Path '/usr/app/nothing' does not exist",),
        ("`profiles_dir`", "DBT_PROFILES_DIR", "profile_conn_id"),
    ),
    "project_dir_missing": Case(
        "dbt_error",
        ("Invalid value for '--project-dir': Path '/usr/app/nothing' does not exist",),
        ("`project_dir`", "DBT_PROJECT_DIR"),
    ),
    "dbt_project_missing": Case(
        "dbt_error",
        ("No dbt_project.yml found at expected path /usr/app/empty",),
        ("`project_dir`",),
    ),
    "env_var_missing": Case(
        "dbt_error",
        ("Parsing Error: Env var required but not provided: 'POSTGRES_HOST'",),
        ("POSTGRES_HOST", "env_vars", "secretRef", "env_var()"),
    ),
    "env_var_missing_in_model": Case(
        "dbt_error", ("'SHOP_REGION'",), ("SHOP_REGION with env_vars", "secretRef")
    ),
    "packages_not_installed": Case(
        "dbt_error",
        ("dbt found 1 package(s) specified in packages.yml", 'Run "dbt deps"'),
        ("packages.yml", *VENDOR),
    ),
    "dependencies_not_installed": Case(
        "dbt_error", ("specified in dependencies.yml",), ("dependencies.yml", *VENDOR)
    ),
    # dbt debug exits 1 and writes no artifact: its failed check is the error.
    "debug_duckdb_denied": Case(
        "dbt_error",
        (
            "dbt debug failed: dbt was unable to connect to the specified database: IO Error: "
            'Cannot open file "/usr/app/jaffle_shop/jaffle_shop.duckdb": Permission denied',
        ),
        DUCKDB,
    ),
    "debug_profile_missing": Case(
        "dbt_error",
        ("dbt debug failed: Profile loading failed", "Could not find profile named 'nosuch'"),
        PROFILE,
    ),
    "debug_unreachable": Case(
        "warehouse_unreachable",
        (
            "dbt could not reach the warehouse: dbt was unable to connect to the specified "
            'database: Database Error: connection to server at "127.0.0.1", port 1 failed',
        ),
        (),
    ),
    # A password YAML reads as a number: dbt's validation error quotes it; kubedbt hides it.
    "password_not_a_string": Case(
        "dbt_error",
        (
            'Credentials in profile "jaffle_shop", target "numeric_password" invalid: '
            f"{HIDDEN} is not of type 'string'",
        ),
        (),
    ),
    "debug_password_not_a_string": Case(
        "dbt_error",
        ("dbt debug failed: Profile loading failed", f"invalid: {HIDDEN} is not of type"),
        (),
    ),
    # Not a misconfiguration, though dbt's message mentions `dbt deps`.
    "macro_missing": Case(
        "dbt_error", ("could not find a macro with the name 'no_such_macro'",), ()
    ),
}


def test_every_recording_has_a_case() -> None:
    recorded = sorted(p.name for p in MISCONFIG.iterdir() if p.is_dir())
    assert recorded == sorted([*CASES, "debug_ok"])


@pytest.mark.parametrize("name", list(CASES))
def test_the_reason_states_dbts_error_and_the_fix_names_what_to_change(
    name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    outcome = outcome_of(name, tmp_path)
    assert outcome.kind == case.kind, outcome.reason
    assert outcome.exit_code == _run(name)["exit_code"]
    assert "\n" not in outcome.reason
    assert "Traceback" not in outcome.reason
    for words in case.reason:
        assert words in outcome.reason
    if not case.fix:
        assert outcome.fix is None, outcome.fix
        return
    assert outcome.fix is not None, outcome.reason
    for words in case.fix:
        assert words in outcome.fix


@pytest.mark.parametrize(
    "name",
    [n for n, c in CASES.items() if c.fix and "debug" not in n and _run(n)["exit_code"] == 2],
)
def test_without_a_log_the_output_says_the_same(name: str, tmp_path: Path) -> None:
    """No results at all (the uploader failed): the termination message's last lines suffice."""
    with_log = outcome_of(name, tmp_path)
    without = outcome_of(name, tmp_path, with_results=False)
    assert without.kind == "dbt_error"
    assert "Traceback" not in without.reason
    assert without.fix == with_log.fix


def test_a_traceback_in_the_digest_is_the_exception_it_ends_with() -> None:
    events = results.digest_log(_log("duckdb_denied"))
    (trace,) = (e for e in events if e["name"] == "MainStackTrace")
    # dbt's traceback is some 15,000 characters; the end, what went wrong, is what is kept.
    assert trace["message"] == (
        '_duckdb.IOException: IO Error: Cannot open file "/usr/app/jaffle_shop/jaffle_shop.duckdb"'
        ": Permission denied"
    )
    raw = next(line for line in _log("duckdb_denied") if '"MainStackTrace"' in line)
    assert len(json.loads(raw)["info"]["msg"]) > results.MESSAGE_CHARS


def test_the_stack_trace_alone_still_states_the_error() -> None:
    """An event list that kept only the traceback (MAX_EVENTS cut the rest)."""
    events = [e for e in results.digest_log(_log("target_denied")) if e["name"] == "MainStackTrace"]
    said = diagnose(events)
    assert said is not None
    assert (
        str(said) == "PermissionError: [Errno 13] Permission denied: '/usr/app/jaffle_shop/target'"
    )
    assert said.fix is not None
    assert "--target-path" in said.fix


def test_a_chained_traceback_ends_with_the_last_exception() -> None:
    raw = next(line for line in _log("duckdb_denied") if '"MainStackTrace"' in line)
    trace = json.loads(raw)["info"]["msg"]
    assert "During handling of the above exception" in trace  # dbt re-raises the DuckDB error
    assert exception_text(trace).startswith("_duckdb.IOException: IO Error: Cannot open file")
    assert exception_text("no traceback here\n  indented") == "no traceback here\n  indented"


def test_a_traceback_cut_from_its_head_still_gives_its_exception() -> None:
    output = _run("duckdb_denied")["termination_message"]
    assert "Traceback (most recent call last)" not in output  # the last 2048 bytes only
    assert output_statement(output) == (
        '_duckdb.IOException: IO Error: Cannot open file "/usr/app/jaffle_shop/jaffle_shop.duckdb"'
        ": Permission denied"
    )


def test_a_node_error_names_its_node() -> None:
    said = diagnose(results.digest_log(_log("external_denied")))
    assert said is not None
    assert said.node == "model.jaffle_shop.exported"
    assert str(said).startswith("model.jaffle_shop.exported: Runtime Error in model exported")


def test_dbts_multiline_messages_read_as_one_line() -> None:
    (event,) = results.digest_log(_log("target_missing"))
    assert statement(event["message"]) == (
        "Runtime Error: The profile 'jaffle_shop' does not have a target named 'nosuch'. The "
        "valid target names for this profile are: duckdb, postgres"
    )
    assert one_line("") == ""
    assert len(one_line("x " * 1000)) < 500


def test_a_successful_debug_says_nothing() -> None:
    assert results.digest_log(_log("debug_ok")) == []
    assert diagnose([], _run("debug_ok")["termination_message"]) is None


def test_writes_under_kubedbt_are_not_a_misconfiguration() -> None:
    (event, _) = results.digest_log(_log("duckdb_denied"))
    message = event["message"]
    assert misconfiguration([message]) is not None
    # The same error on the pod's writable emptyDir is something else (a full disk, a bug).
    assert misconfiguration([message.replace("/usr/app/jaffle_shop/", "/kubedbt/")]) is None
    # A directory whose name merely starts like it is not under it.
    assert misconfiguration([message.replace("/usr/app/jaffle_shop/", "/kubedbt-profile/")])


def test_failures_recorded_on_the_cluster_are_not_misconfigurations() -> None:
    for name in ("model_error", "parse_error", "test_failure", "warehouse_unreachable"):
        configmap = json.loads((STATUS / f"{name}.json").read_text())["configmap"]
        events = results.decode(configmap).log_events
        said = diagnose(events)
        assert said is not None, name
        assert said.fix is None, (name, said.fix)


PASSWORD = "987654321"  # the password of the profile in the *password_not_a_string recordings


@pytest.mark.parametrize("name", ["password_not_a_string", "debug_password_not_a_string"])
def test_a_profile_value_dbt_quotes_is_stored_nowhere(name: str, tmp_path: Path) -> None:
    assert any(PASSWORD in line for line in _log(name))  # dbt does print it
    assert PASSWORD in _run(name)["termination_message"]
    assert PASSWORD not in json.dumps(results.digest_log(_log(name)))
    for with_results in (True, False):
        outcome = outcome_of(name, tmp_path / str(with_results), with_results=with_results)
        # Exit code 1 without results says only that; exit code 2 states the output's error.
        assert HIDDEN in outcome.reason or outcome.kind == "results_missing"
        stated = [outcome.reason, outcome.fix or "", *outcome.evidence]
        assert not [text for text in stated if PASSWORD in text], stated
    # What the ConfigMap holds: the digest with debug's failed checks, the summary.
    packed = uploaded(name, tmp_path / "packed")
    assert PASSWORD not in json.dumps([packed.log_events, packed.summary])


@pytest.mark.parametrize(
    ("message", "hidden"),
    [
        (
            'Credentials in profile "p", target "t" invalid: 987654321 is not of type \'string\'',
            'Credentials in profile "p", target "t" invalid: <value hidden> is not of type '
            "'string'",
        ),
        (
            "at path ['password']: {'a': 'x: y'} is not valid under any of the given schemas",
            "at path ['password']: <value hidden> is not valid under any of the given schemas",
        ),
        (
            "Runtime Error\n  s3cr3t is not one of ['require', 'disable']\nnext line",
            "Runtime Error\n<value hidden> is not one of ['require', 'disable']\nnext line",
        ),
        (
            "Error: 'x' is not of type 'integer'; y: 'z' is not of type 'integer'",
            f"Error: {HIDDEN} is not of type 'integer'; y: {HIDDEN} is not of type 'integer'",
        ),
        ("no value here: Permission denied", "no value here: Permission denied"),
    ],
)
def test_values_that_validation_errors_quote_are_hidden(message: str, hidden: str) -> None:
    assert hide_values(message) == hidden


def test_a_huge_message_is_read_in_linear_time() -> None:
    """200,000 blank lines before a traceback (Jinja output echoed in an error)."""
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    f()\n'
    message = "Encountered an error:\n" + "\n" * 200_000 + trace + "ValueError: boom"
    headless = " \n" * 200_000 + trace.partition("\n")[2] + "ValueError: boom"
    started = time.monotonic()
    assert exception_text(message) == "Encountered an error:\nValueError: boom"
    assert exception_text(headless) == "ValueError: boom"
    assert output_statement(headless) == "ValueError: boom"
    (event,) = results.digest_log(
        [json.dumps({"info": {"level": "error", "msg": message, "name": "MainStackTrace"}})]
    )
    assert event["message"] == "Encountered an error:\nValueError: boom"
    assert hide_values(": " * 200_000 + "1 is not of type 'x'" * 1000).count(HIDDEN) == 1000
    assert time.monotonic() - started < 1  # quadratic, it took minutes


def test_a_file_dbt_only_opens_is_not_said_to_be_written() -> None:
    read = misconfiguration(['IO Error: Cannot open file "/data/x.csv": Permission denied'])
    assert read is not None
    assert read.startswith("dbt cannot open /data/x.csv (Permission denied)")
    assert "if dbt reads it, make it readable by uid 1000" in read
    # A read-only file system refuses only writes; a database file is written.
    assert str(misconfiguration(['"/data/x.csv": Read-only file system'])).startswith(
        "dbt cannot write /data/x.csv"
    )
    assert str(misconfiguration(['"/data/db.duckdb.wal": Permission denied'])).startswith(
        "dbt cannot write /data/db.duckdb.wal"
    )
    # An object store's URL is no file of the pod's.
    for url in ("s3://b/x.parquet", "gs://b/x", "https://h/x.csv"):
        assert misconfiguration([f'IO Error: Cannot open file "{url}": Permission denied']) is None
