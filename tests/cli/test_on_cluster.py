"""`kubectl dbt` runs, logs, results and describe against real runs on the local cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli.conftest import DAG_ID, PARSE_TASK_ID, TASK_ID, FinishedRuns, Invoke

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("on_cluster")]

FAILING_TEST = "test.jaffle_shop.assert_order_amount_matches_payments"


def _rows(out: str) -> list[list[str]]:
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "DAG", "TASK", "RUN", "TRY", "STATUS", "PROGRESS", "AGE"]
    return [row.split() for row in rows]


# --- runs ---


def test_runs_lists_every_run_newest_first(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    result = kubectl_dbt("runs", "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    rows = _rows(result.out)
    # The run id is the original, with the ":" and "+" that labels cannot hold.
    run_id = finished_runs.run_id
    assert [row[:6] for row in rows] == [
        [finished_runs.parse_error, DAG_ID, PARSE_TASK_ID, run_id, "1", "Failed"],
        [finished_runs.succeeded, DAG_ID, TASK_ID, run_id, "2", "Succeeded"],
        [finished_runs.failed, DAG_ID, TASK_ID, run_id, "1", "Failed"],
    ]
    assert all(row[6] == "-" for row in rows), rows  # finished runs: no live progress
    assert all(row[7].endswith(("s", "m")) for row in rows), rows


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--status", "failed"], ["parse_error", "failed"]),
        (["--status", "Succeeded"], ["succeeded"]),
        (["--dag", DAG_ID, "--task", TASK_ID], ["succeeded", "failed"]),
        (["-l", "kubedbt.io/try-number=2"], ["succeeded"]),
        (["--run", "RUN_ID", "--task", PARSE_TASK_ID], ["parse_error"]),
    ],
)
def test_runs_filters(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns, flags: list[str], expected: list[str]
) -> None:
    flags = [finished_runs.run_id if flag == "RUN_ID" else flag for flag in flags]
    result = kubectl_dbt("runs", "-n", finished_runs.namespace, *flags)
    assert result.code == 0, result.err
    assert [row[0] for row in _rows(result.out)] == [getattr(finished_runs, e) for e in expected]


@pytest.mark.parametrize("flags", [["--dag", "other"], ["--run", "manual__other"]])
def test_runs_without_a_match_exit_1(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns, flags: list[str]
) -> None:
    result = kubectl_dbt("runs", "-n", finished_runs.namespace, *flags)
    assert (result.code, result.out) == (1, "")
    assert f'No kubedbt runs found in namespace "{finished_runs.namespace}"' in result.err


def test_runs_in_an_empty_namespace_say_where_runs_are(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    # The run id is this session's own, so only the fixture's namespace has matching runs.
    result = kubectl_dbt("runs", "-n", "default", "--run", finished_runs.run_id)
    assert (result.code, result.out) == (1, "")
    assert 'No kubedbt runs found in namespace "default".' in result.err
    hint = f"Runs exist in: {finished_runs.namespace} (3). Use -n NAMESPACE, or -A"
    assert hint in result.err, result.err


def test_runs_in_all_namespaces_has_a_namespace_column(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    result = kubectl_dbt("runs", "-A", "--run", finished_runs.run_id)
    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"]
    assert [row.split()[:2] for row in rows] == [
        [finished_runs.namespace, finished_runs.parse_error],
        [finished_runs.namespace, finished_runs.succeeded],
        [finished_runs.namespace, finished_runs.failed],
    ]


def test_the_namespace_comes_from_the_context(
    kubectl_dbt: Invoke,
    finished_runs: FinishedRuns,
    kubeconfig: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = finished_runs.namespace
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{path}")
    result = kubectl_dbt("runs", "--status", "Succeeded")
    assert result.code == 0, result.err
    assert [row[0] for row in _rows(result.out)] == [finished_runs.succeeded]


# --- logs ---


def test_logs_of_the_succeeded_run(kubectl_dbt: Invoke, finished_runs: FinishedRuns) -> None:
    result = kubectl_dbt("logs", finished_runs.succeeded, "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    assert "Completed successfully" in result.out
    assert "Done. PASS=28" in result.out


def test_logs_tail_of_the_failed_run_by_prefix(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    prefix = finished_runs.failed[:-3]  # without "-t1": still names only this run
    result = kubectl_dbt("-n", finished_runs.namespace, "logs", prefix, "--tail", "8")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 8, lines
    assert "Failure in test assert_order_amount_matches_payments" in result.out
    assert "ERROR=1" in lines[-1]


def test_logs_follow_of_a_finished_run_ends(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    result = kubectl_dbt("logs", "-f", finished_runs.succeeded, "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1].endswith("TOTAL=28")


# --- results ---


def test_results_of_the_failed_run(kubectl_dbt: Invoke, finished_runs: FinishedRuns) -> None:
    result = kubectl_dbt("results", finished_runs.failed, "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    assert "upload status uploaded" in result.out
    assert "28 nodes (1 fail, 19 pass, 8 success)" in result.out
    assert f"fail   {FAILING_TEST}" in result.out


def test_results_as_json(kubectl_dbt: Invoke, finished_runs: FinishedRuns) -> None:
    namespace = finished_runs.namespace
    result = kubectl_dbt("results", finished_runs.succeeded, "-n", namespace, "-o", "json")
    assert result.code == 0, result.err
    run_results = json.loads(result.out)
    assert len(run_results["results"]) == 28
    assert {r["status"] for r in run_results["results"]} == {"success", "pass"}


def test_results_of_a_run_without_run_results(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    result = kubectl_dbt("results", finished_runs.parse_error, "-n", finished_runs.namespace)
    assert result.code == 1
    assert "upload status no-results" in result.out
    assert "No run results: dbt wrote none.\ndbt's errors:\n  MainEncounteredError: " in result.out
    assert "    kubedbt fault injection: fail_parse is set\n" in result.out


def test_results_as_json_without_run_results(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    namespace = finished_runs.namespace
    result = kubectl_dbt("results", finished_runs.parse_error, "-n", namespace, "-o", "json")
    assert (result.code, result.out) == (1, "")
    name = finished_runs.parse_error
    assert result.err == (
        f"error: run {name} has no run_results.json: upload status is no-results (dbt wrote "
        f"none); `kubectl dbt results {name} -n {namespace}` shows dbt's errors\n"
    )


# --- describe ---


def test_describe_the_failed_run(kubectl_dbt: Invoke, finished_runs: FinishedRuns) -> None:
    result = kubectl_dbt("describe", finished_runs.failed, "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    out = result.out
    assert "Kind:       tests_failed" in out
    assert "Retryable:  no" in out
    assert "Exit code:  1" in out
    assert f"{FAILING_TEST}: fail: Got " in out  # the evidence line
    assert f"Run:          {finished_runs.run_id}" in out
    assert "Command:      dbt build --vars '{fail_test: true}' --target-path" in out
    assert "terminated: Error, exit code 1" in out  # the dbt container
    assert "init results-uploader" in out


def test_describe_the_succeeded_run(kubectl_dbt: Invoke, finished_runs: FinishedRuns) -> None:
    result = kubectl_dbt("describe", finished_runs.succeeded, "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    assert "Kind:       success" in result.out
    assert "Status:       Succeeded" in result.out
    assert "terminated: Completed, exit code 0" in result.out


def test_describe_a_parse_error(kubectl_dbt: Invoke, finished_runs: FinishedRuns) -> None:
    result = kubectl_dbt("describe", finished_runs.parse_error, "-n", finished_runs.namespace)
    assert result.code == 0, result.err
    assert "Kind:       dbt_error" in result.out
    assert "Exit code:  2" in result.out
    assert "Results:      ConfigMap" in result.out
    assert "upload status no-results" in result.out


# --- errors ---


@pytest.mark.parametrize("command", ["logs", "results", "describe"])
def test_an_unknown_run_exits_1(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns, command: str
) -> None:
    result = kubectl_dbt(command, "dbt-no-such-run", "-n", finished_runs.namespace)
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f'error: no kubedbt run "dbt-no-such-run" in namespace "{finished_runs.namespace}"; '
        f"list the runs with: kubectl dbt runs -n {finished_runs.namespace}\n"
    )


def test_an_ambiguous_prefix_is_a_usage_error(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    result = kubectl_dbt("describe", "dbt-cli-test", "-n", finished_runs.namespace)
    assert (result.code, result.out) == (2, "")
    assert '"dbt-cli-test" matches 3 runs' in result.err
    assert finished_runs.failed in result.err
    assert finished_runs.succeeded in result.err


def test_an_api_error_names_status_and_reason(
    kubectl_dbt: Invoke, finished_runs: FinishedRuns
) -> None:
    result = kubectl_dbt("runs", "-n", finished_runs.namespace, "-l", "not a selector")
    assert result.code == 1
    assert result.err.startswith(
        f'error: listing Jobs in namespace "{finished_runs.namespace}" failed: 400 Bad Request: '
    )
    assert len(result.err.splitlines()) == 1


def test_an_unreachable_cluster(
    kubectl_dbt: Invoke, kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    result = kubectl_dbt("runs", "--kubeconfig", str(path))
    assert result.code == 1
    assert result.err.startswith("error: cannot reach the cluster at https://127.0.0.1:1: ")
    assert len(result.err.splitlines()) == 1
