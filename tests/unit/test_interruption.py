"""Completing an interrupted dbt's run_results, on a real interrupted run.

The fixture (tests/unit/fixtures/interrupted) was recorded from dbt 1.11 against PostgreSQL: a
build of five nodes, one thread, `sleepy` holding the warehouse with pg_sleep; SIGINT came while
it ran. dbt exited 2 and wrote run_results.json with the three nodes that had finished; its JSON
log (the SQL debug lines left out) has `sleepy`'s NodeStart; `selected.jsonl` is what `dbt ls`
printed for the same selection. `after` (downstream of sleepy) never started.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pytest

from kubedbt.core import results
from kubedbt.core.interruption import describe, listed_nodes, parse_marker, started_nodes
from kubedbt.core.tries import why_not_resume
from kubedbt.io.uploader import UploadTarget, grace_left, read_and_pack
from tests.unit.dbt_runs import load_with_dbt

RECORDED = Path(__file__).parent / "fixtures" / "interrupted"
MARKER = {
    "signal": "SIGTERM",
    "received_at": "2026-11-23T18:10:24.312Z",
    "exit_code": 2,
    "stopped_after_seconds": 0.74,
}


def _uploaded(tmp_path: Path, *, selected: bool = True, state: Path | None = None) -> dict:
    """What the uploader writes to the ConfigMap for the recorded run, as the API returns it."""
    target = tmp_path / "target"
    target.mkdir()
    shutil.copy(RECORDED / "run_results.json", target)
    marker = tmp_path / "kubedbt-stop.json"
    marker.write_text(json.dumps(MARKER))
    data, binary, status = read_and_pack(
        UploadTarget(
            namespace="n",
            configmap="c",
            target_path=target,
            log_file=RECORDED / "dbt.log",
            stop_marker=marker,
            selected_file=RECORDED / "selected.jsonl" if selected else tmp_path / "none",
            state_run_results=state,
        )
    )
    return {
        "metadata": {"annotations": {results.UPLOAD_STATUS: status}},
        "data": data,
        "binaryData": binary,
    }


def _statuses(decoded: results.RunResults) -> dict[str, str]:
    assert decoded.run_results is not None
    return {r["unique_id"]: r["status"] for r in decoded.run_results["results"]}


def test_the_interrupted_node_is_cancelled_and_the_unreached_one_skipped(tmp_path: Path) -> None:
    decoded = results.decode(_uploaded(tmp_path))
    assert _statuses(decoded) == {
        "model.sig.first": "success",
        "model.sig.other": "success",
        "test.sig.not_null_first_a.c190f6302b": "pass",
        "model.sig.sleepy": "error",
        "model.sig.after": "skipped",
    }
    assert decoded.run_results is not None
    messages = {r["unique_id"]: r["message"] for r in decoded.run_results["results"]}
    assert messages["model.sig.sleepy"].startswith("cancelled by kubedbt while it ran")
    assert "SIGTERM at 2026-11-23T18:10:24.312Z" in messages["model.sig.after"]
    summary = decoded.summary
    assert summary is not None
    assert summary["counts"] == {"error": 1, "pass": 1, "skipped": 1, "success": 2}
    assert summary["interruption"] == {
        **MARKER,
        "cancelled": ["model.sig.sleepy"],
        "cancelled_count": 1,
        "not_started": 1,
        "selection_known": True,
    }
    assert describe(summary["interruption"]) == (
        "dbt stopped 0.7s after SIGTERM; 1 node(s) cancelled while running (model.sig.sleepy); "
        "1 not started"
    )
    # dbt retry can resume it: the file loads in dbt and records what to rerun.
    assert why_not_resume(decoded.run_results, summary) is None


def test_the_completed_file_is_one_dbt_reads(tmp_path: Path) -> None:
    decoded = results.decode(_uploaded(tmp_path))
    path = tmp_path / "completed.json"
    path.write_text(json.dumps(decoded.run_results))
    assert load_with_dbt(RECORDED / "run_results.json", path) == [3, 5]


def test_an_unknown_selection_is_not_resumed(tmp_path: Path) -> None:
    """Without dbt ls's list, the unreached nodes are unknown: dbt retry would leave them out."""
    decoded = results.decode(_uploaded(tmp_path, selected=False))
    assert "model.sig.after" not in _statuses(decoded)
    assert _statuses(decoded)["model.sig.sleepy"] == "error"
    assert decoded.summary is not None
    assert decoded.summary["interruption"]["selection_known"] is False  # type: ignore[index]
    assert why_not_resume(decoded.run_results, decoded.summary) == (
        "it was interrupted and the nodes it never reached are unknown"
    )


def test_a_dbt_retry_try_takes_its_selection_from_the_state_it_restored(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    earlier = json.loads((RECORDED / "run_results.json").read_text())
    for result in earlier["results"]:
        result["status"] = "error" if result["unique_id"] == "model.sig.other" else "success"
    earlier["results"].append({**earlier["results"][0], "unique_id": "model.sig.after"})
    earlier["results"][-1]["status"] = "skipped"
    state.write_text(json.dumps(earlier))
    decoded = results.decode(_uploaded(tmp_path, selected=False, state=state))
    # The retry's selection: other (error) and after (skipped); other finished in this run.
    assert _statuses(decoded)["model.sig.after"] == "skipped"
    assert decoded.summary is not None
    assert decoded.summary["interruption"]["selection_known"] is True  # type: ignore[index]


def test_without_the_launchers_marker_results_stay_as_dbt_wrote_them(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    shutil.copy(RECORDED / "run_results.json", target)
    data, binary, _ = read_and_pack(
        UploadTarget("n", "c", target, RECORDED / "dbt.log", stop_marker=tmp_path / "absent")
    )
    decoded = results.decode({"metadata": {}, "data": data, "binaryData": binary})
    assert len(_statuses(decoded)) == 3
    assert decoded.summary is not None
    assert decoded.summary["interruption"] is None


def test_the_log_and_listing_readers() -> None:
    with (RECORDED / "dbt.log").open() as lines:
        assert started_nodes(lines) == [
            "model.sig.first",
            "model.sig.other",
            "test.sig.not_null_first_a.c190f6302b",
            "model.sig.sleepy",
        ]
    assert listed_nodes(["", "not json", '{"unique_id": "a"}', '{"unique_id": "a"}', "[1]"]) == [
        "a"
    ]


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '{"signal": 15}', '{"received_at": "x"}', '"SIGTERM"'],
)
def test_a_marker_that_is_not_the_launchers_is_ignored(text: str) -> None:
    assert parse_marker(text) is None


def test_a_marker_with_odd_values_keeps_what_it_can() -> None:
    marker = parse_marker('{"signal": "SIGINT", "exit_code": true, "stopped_after_seconds": "1"}')
    assert marker is not None
    assert (marker.signal, marker.exit_code, marker.stopped_after_seconds) == ("SIGINT", None, None)


def test_the_uploader_has_what_is_left_of_the_grace_period(tmp_path: Path) -> None:
    marker = tmp_path / "kubedbt-stop.json"
    target = UploadTarget("n", "c", tmp_path, tmp_path / "dbt.log", stop_marker=marker)
    assert grace_left(target, 60, now=0) == 60  # no stop: the sidecar's SIGTERM starts it
    marker.write_text(json.dumps(MARKER))
    received = datetime.datetime.fromisoformat("2026-11-23T18:10:24.312+00:00").timestamp()
    assert grace_left(target, 60, now=received + 25) == pytest.approx(35)
    assert grace_left(target, 60, now=received + 90) == 1.0
    marker.write_text(json.dumps({**MARKER, "received_at": "soon"}))
    assert grace_left(target, 60, now=received + 25) == 60
