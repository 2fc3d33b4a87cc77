"""The uploader and the decoder on what dbt really wrote for each outcome."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from kubedbt.core import results
from kubedbt.core.json_stream import json_members
from tests.unit.dbt_runs import DbtRun, copy_example, invoke, load_with_dbt
from tests.unit.packed import pack_every_level, round_trip


def _round_trip(run: DbtRun) -> results.RunResults:
    return round_trip(run.target_path, run.log_file)


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


def _read_all(stream: TextIO, read_chars: int) -> dict[str, Any]:
    """Every member, the results iterator drawn into a list, as the packer draws it."""
    return {
        key: list(value) if isinstance(value, Iterator) else value
        for key, value in json_members(stream, read_chars=read_chars)
    }


@pytest.mark.parametrize("read_chars", [1, 7, 4096])
def test_streamed_reading_equals_json_load(dbt_runs: dict[str, DbtRun], read_chars: int) -> None:
    path = dbt_runs["fail_model"].target_path / "run_results.json"
    with path.open() as stream:
        assert _read_all(stream, read_chars) == json.loads(path.read_text())


@pytest.mark.parametrize(
    "broken",
    ['{"results": [{"a": 1}, ', '{"results": [1 2]}', "[]", '{"elapsed_time": 1.5'],
)
def test_streamed_reading_refuses_what_is_not_one_json_object(broken: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)expect"):
        _read_all(io.StringIO(broken), 3)


def test_stdout_stays_text_while_the_log_file_is_json(dbt_runs: dict[str, DbtRun]) -> None:
    run = dbt_runs["success"]
    assert not run.stdout.lstrip().startswith("{")
    lines = run.log_file.read_text().splitlines()
    assert lines
    assert all(json.loads(line)["info"]["name"] for line in lines)


# --- source freshness ----------------------------------------------------------------------------

# Hours since each test source was last loaded, against warn_after 12 and error_after 24 hours.
SOURCE_AGES = {"fresh": 1, "late": 18, "stale": 48}
FRESHNESS_CASES = {
    "pass": ["fresh"],
    "warn": ["fresh", "late"],
    "error": ["fresh", "late", "stale"],
}


def _sources_yml(project: Path) -> str:
    """Sources over the orders seed, its dates moved so that the latest order is as old as the
    source's age: freshness then depends on the thresholds, not on the day the test runs."""
    with (project / "seeds" / "raw_orders.csv").open() as rows:
        latest = max(row["order_date"] for row in csv.DictReader(rows))
    tables = "".join(
        f"""      - name: {name}
        identifier: raw_orders
        loaded_at_field: >-
          current_timestamp - interval {hours} hour
          - (timestamp '{latest}' - cast(order_date as timestamp))
"""
        for name, hours in SOURCE_AGES.items()
    )
    return f"""version: 2
sources:
  - name: kubedbt_test
    schema: main
    freshness:
      warn_after: {{count: 12, period: hour}}
      error_after: {{count: 24, period: hour}}
    tables:
{tables}"""


@pytest.fixture(scope="module")
def freshness_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DbtRun]:
    """`dbt source freshness` after `dbt seed`, once per case, each on a copy of one warehouse."""
    work = tmp_path_factory.mktemp("freshness")
    seeded = work / "seeded"
    project = copy_example(seeded)
    (project / "models" / "staging" / "_kubedbt_test.yml").write_text(_sources_yml(project))
    seed = invoke(project, seeded, "seed")
    assert seed.exit_code == 0, seed.stdout[-2000:]
    runs = {}
    for case, names in FRESHNESS_CASES.items():
        base = work / case
        base.mkdir()
        shutil.copy(seeded / "warehouse.duckdb", base / "warehouse.duckdb")
        selected = [f"source:kubedbt_test.{name}" for name in names]
        run = invoke(project, base, "source", "freshness", "--select", *selected)
        runs[case] = dataclasses.replace(run, name=case)
    return runs


def _sources(run: DbtRun) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((run.target_path / "sources.json").read_text())
    return document


def test_freshness_exit_codes_follow_dbt(freshness_runs: dict[str, DbtRun]) -> None:
    codes = {name: run.exit_code for name, run in freshness_runs.items()}
    assert codes == {"pass": 0, "warn": 0, "error": 1}, {
        name: run.stdout[-2000:] for name, run in freshness_runs.items()
    }


@pytest.mark.parametrize(
    ("case", "counts"),
    [
        ("pass", {"pass": 1}),
        ("warn", {"pass": 1, "warn": 1}),
        ("error", {"error": 1, "pass": 1, "warn": 1}),
    ],
)
def test_freshness_uploads_sources_and_summarizes_them(
    freshness_runs: dict[str, DbtRun], case: str, counts: dict[str, int]
) -> None:
    run = freshness_runs[case]
    assert not (run.target_path / "run_results.json").exists()
    written = _sources(run)
    decoded = _round_trip(run)
    assert decoded.status == "uploaded"
    assert decoded.sources == written
    assert decoded.run_results is None
    summary = decoded.summary
    assert summary is not None
    assert summary["command"] == "source freshness"
    assert summary["counts"] == counts
    assert summary["nodes"] == len(written["results"])
    assert summary["invocation_id"] == written["metadata"]["invocation_id"]
    fields = results.SourceFreshness.__annotations__
    assert summary["freshness"] == [
        {key: r[key] for key in fields} for r in written["results"] if r["status"] != "pass"
    ]
    assert summary["freshness_omitted"] == 0
    assert [f["unique_id"] for f in summary["failures"]] == [
        r["unique_id"] for r in written["results"] if r["status"] == "error"
    ]
    assert summary["dropped"] == []


def test_a_stale_source_is_a_failure_saying_how_old(freshness_runs: dict[str, DbtRun]) -> None:
    written = _sources(freshness_runs["error"])
    (stale,) = [r for r in written["results"] if r["status"] == "error"]
    summary = _round_trip(freshness_runs["error"]).summary
    assert summary is not None
    (failure,) = summary["failures"]
    assert failure == {
        "unique_id": "source.jaffle_shop.kubedbt_test.stale",
        "status": "error",
        "message": f"max_loaded_at {stale['max_loaded_at']} is 2 days old, error_after 24 hours",
        "failures": None,
    }
    (late,) = [f for f in summary["freshness"] if f["status"] == "warn"]
    assert late["criteria"] == {
        "warn_after": {"count": 12, "period": "hour"},
        "error_after": {"count": 24, "period": "hour"},
        "filter": None,
    }


def test_sources_load_in_dbt_at_every_level(
    freshness_runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    written = _sources(freshness_runs["error"])
    levels = pack_every_level(freshness_runs["error"].target_path)
    steps = ["sources:timing", "sources:successful_results"]
    assert [level.dropped for level in levels] == [[], steps[:1], steps, [*steps, "sources"]]
    files = []
    for n, level in enumerate(levels[:-1]):
        assert level.decoded.sources is not None
        files.append(tmp_path / f"sources_{n}.json")
        files[-1].write_text(json.dumps(level.decoded.sources))
    assert levels[-1].decoded.sources is None
    assert load_with_dbt(*files) == [len(written["results"])] * 2 + [1]


@pytest.fixture(scope="module")
def warn_run(tmp_path_factory: pytest.TempPathFactory) -> DbtRun:
    """`dbt build` with the example's test of severity warn switched on."""
    base = tmp_path_factory.mktemp("warn") / "warn"
    return invoke(copy_example(base), base, "build", "--vars", "{warn_test: true}")


def test_a_warned_test_is_listed_with_dbt_s_message(warn_run: DbtRun) -> None:
    assert warn_run.exit_code == 0, warn_run.stdout[-2000:]
    written = json.loads((warn_run.target_path / "run_results.json").read_text())
    (warned,) = [r for r in written["results"] if r["status"] == "warn"]
    summary = _round_trip(warn_run).summary
    assert summary is not None
    assert summary["counts"]["warn"] == 1
    assert summary["failures"] == []
    unique_id = "test.jaffle_shop.assert_every_customer_has_ordered"
    assert summary["warnings"] == [{"unique_id": unique_id, "message": warned["message"]}]
    assert warned["message"] == "Got 6 results, configured to warn if != 0"
    assert summary["warnings_omitted"] == 0


def test_a_run_without_warnings_lists_none(dbt_runs: dict[str, DbtRun]) -> None:
    for name in ("success", "fail_model", "fail_test"):
        summary = _round_trip(dbt_runs[name]).summary
        assert summary is not None
        assert (summary["warnings"], summary["warnings_omitted"]) == ([], 0), name


def test_sources_past_warn_after_are_warnings(freshness_runs: dict[str, DbtRun]) -> None:
    written = _sources(freshness_runs["warn"])
    (late,) = [r for r in written["results"] if r["status"] == "warn"]
    summary = _round_trip(freshness_runs["warn"]).summary
    assert summary is not None
    assert summary["warnings"] == [
        {"unique_id": late["unique_id"], "message": results.freshness_message(late)}
    ]
    assert "warn_after" in summary["warnings"][0]["message"]
