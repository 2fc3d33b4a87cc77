"""The uploader and the decoder on what dbt really wrote for each outcome."""

from __future__ import annotations

import json

import pytest

from kubedbt.core import results
from kubedbt.io.uploader import UploadTarget, collect
from tests.unit.dbt_runs import DbtRun


def _target(run: DbtRun) -> UploadTarget:
    return UploadTarget("ns", "cm", run.target_path, run.log_file)


def _round_trip(run: DbtRun) -> results.RunResults:
    run_results, events = collect(_target(run))
    data, binary, status = results.pack(run_results, events)
    annotations = {results.UPLOAD_STATUS: status}
    return results.decode(
        {"metadata": {"annotations": annotations}, "data": data, "binaryData": binary}
    )


def test_exit_codes_follow_dbt(dbt_runs: dict[str, DbtRun]) -> None:
    codes = {name: run.exit_code for name, run in dbt_runs.items()}
    assert codes == {"success": 0, "fail_model": 1, "fail_test": 1, "fail_parse": 2}, {
        name: run.stdout[-2000:] for name, run in dbt_runs.items()
    }


@pytest.mark.parametrize("name", ["success", "fail_model", "fail_test"])
def test_round_trip_returns_what_dbt_wrote(dbt_runs: dict[str, DbtRun], name: str) -> None:
    run = dbt_runs[name]
    written = json.loads((run.target_path / "run_results.json").read_text())
    decoded = _round_trip(run)
    assert decoded.status == "uploaded"
    assert decoded.run_results == written
    assert decoded.summary is not None
    assert decoded.summary["nodes"] == len(written["results"])
    assert decoded.summary["invocation_id"] == written["metadata"]["invocation_id"]
    assert decoded.summary["dropped"] == []


def test_success_summary(dbt_runs: dict[str, DbtRun]) -> None:
    summary = _round_trip(dbt_runs["success"]).summary
    assert summary is not None
    assert set(summary["counts"]) <= {"success", "pass"}
    assert summary["failures"] == []
    assert summary["command"] == "build"
    assert len(summary["slowest"]) == results.MAX_SLOWEST


def test_model_error_names_the_node_and_skips_its_tests(dbt_runs: dict[str, DbtRun]) -> None:
    decoded = _round_trip(dbt_runs["fail_model"])
    assert decoded.summary is not None
    assert decoded.summary["counts"]["error"] == 1
    assert decoded.summary["counts"]["skipped"] >= 1
    (failure,) = decoded.summary["failures"]
    assert failure["unique_id"] == "model.jaffle_shop.orders"
    assert "fail_model" in failure["message"]
    assert any(e["node"] == "model.jaffle_shop.orders" for e in decoded.log_events)


def test_test_failure_counts_failing_rows(dbt_runs: dict[str, DbtRun]) -> None:
    decoded = _round_trip(dbt_runs["fail_test"])
    assert decoded.summary is not None
    (failure,) = decoded.summary["failures"]
    assert failure["status"] == "fail"
    assert failure["failures"]
    assert failure["failures"] > 0


def test_parse_error_leaves_no_results_but_a_digest(dbt_runs: dict[str, DbtRun]) -> None:
    run = dbt_runs["fail_parse"]
    assert not (run.target_path / "run_results.json").exists()
    decoded = _round_trip(run)
    assert decoded.status == "no-results"
    assert decoded.run_results is None
    codes = {e["name"] for e in decoded.log_events}
    assert "MainEncounteredError" in codes
    assert any("fail_parse is set" in e["message"] for e in decoded.log_events)


def test_stdout_stays_text_while_the_log_file_is_json(dbt_runs: dict[str, DbtRun]) -> None:
    run = dbt_runs["success"]
    assert not run.stdout.lstrip().startswith("{")
    lines = run.log_file.read_text().splitlines()
    assert lines
    assert all(json.loads(line)["info"]["name"] for line in lines)
