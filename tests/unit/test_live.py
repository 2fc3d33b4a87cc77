"""The live tally of dbt's JSON log (kubedbt.core.live) and the sidecar's follower of that log.

The logs are real: the session's dbt runs of the example project (tests/unit/dbt_runs.py).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from kubedbt.core.live import (
    MAX_ENCODED,
    MAX_RUNNING,
    MAX_STATUSES,
    LineGate,
    LiveTally,
    RunningNode,
    Snapshot,
    parse_snapshot,
    progress_line,
    short_progress,
)
from kubedbt.io import live_progress
from kubedbt.io.live_progress import LogFollower
from tests.unit.dbt_runs import DbtRun


def tally_of(lines: list[str]) -> LiveTally:
    tally = LiveTally()
    for line in lines:
        tally.feed(line)
    return tally


def statuses_in_run_results(run: DbtRun) -> dict[str, int]:
    written = json.loads((run.target_path / "run_results.json").read_text())
    counts: dict[str, int] = {}
    for result in written["results"]:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return counts


@pytest.mark.parametrize("name", ["success", "fail_model", "fail_test"])
def test_the_tally_of_a_whole_log_matches_run_results(
    dbt_runs: dict[str, DbtRun], name: str
) -> None:
    run = dbt_runs[name]
    snapshot = tally_of(run.log_file.read_text().splitlines()).snapshot()
    assert snapshot.done == statuses_in_run_results(run)
    assert snapshot.total == snapshot.done_count == 28
    assert snapshot.running == ()
    assert snapshot.running_count == 0


def test_a_parse_error_has_no_nodes(dbt_runs: dict[str, DbtRun]) -> None:
    lines = dbt_runs["fail_parse"].log_file.read_text().splitlines()
    assert tally_of(lines).snapshot() == Snapshot()


def test_every_moment_of_a_build_is_consistent(dbt_runs: dict[str, DbtRun]) -> None:
    lines = dbt_runs["fail_model"].log_file.read_text().splitlines()
    tally, done, named = LiveTally(), 0, set()
    for line in lines:
        tally.feed(line)
        snapshot = tally.snapshot()
        assert snapshot.done_count >= done  # done only grows
        done = snapshot.done_count
        assert done + snapshot.running_count <= (snapshot.total or 28)
        assert len(snapshot.running) == min(snapshot.running_count, MAX_RUNNING)
        for node in snapshot.running:
            assert node.started_at is not None
            assert node.started_at > 1.7e9
            named.add(node.unique_id)
    assert "model.jaffle_shop.orders" in named  # the one that fails was seen running
    assert done == 28


def test_lines_that_are_not_dbt_events_change_nothing(dbt_runs: dict[str, DbtRun]) -> None:
    real = dbt_runs["success"].log_file.read_text().splitlines()
    start = next(line for line in real if '"NodeStart"' in line)
    tally = LiveTally()
    hostile = [
        "",
        "not json NodeStart",
        start[: len(start) // 2],  # a line cut where dbt was writing it
        '["NodeStart"]',
        '{"info": "NodeStart", "data": {}}',
        '{"info": {"name": "NodeStart"}, "data": {"node_info": {"unique_id": 7}}}',
        '{"info": {"name": "NodeStart"}, "data": {"node_info": null}}',
        '{"info": {"name": "LogStartLine"}, "data": {"total": "28"}}',
        '{"info": {"name": "LogStartLine"}, "data": {"total": -1}}',
        '{"info": {"name": "Other"}, "data": {"node_info": {"unique_id": "x"}}}',
    ]
    assert [tally.feed(line) for line in hostile] == [False] * len(hostile)
    assert tally.snapshot() == Snapshot()
    assert tally.feed(start)
    assert tally.snapshot().running_count == 1


def test_the_encoding_round_trips(dbt_runs: dict[str, DbtRun]) -> None:
    lines = dbt_runs["success"].log_file.read_text().splitlines()
    tally = LiveTally()
    for line in lines:
        tally.feed(line)
        snapshot = tally.snapshot()
        assert parse_snapshot(snapshot.encode()) == snapshot


def test_the_encoding_is_bounded_however_large_the_project() -> None:
    tally = LiveTally()
    for i in range(2000):
        node = {"unique_id": f"model.{'p' * 900}.m{i}", "node_status": f"status{i % 40}"}
        event = {"info": {"name": "NodeStart", "ts": "2026-11-24T00:00:00Z"}, "data": {}}
        event["data"]["node_info"] = node
        tally.feed(json.dumps(event))
        if i % 2:
            event["info"]["name"] = "NodeFinished"
            tally.feed(json.dumps(event))
    snapshot = tally.snapshot()
    assert snapshot.running_count == 1000
    assert snapshot.done_count == 1000
    assert len(snapshot.done) == MAX_STATUSES
    encoded = snapshot.encode()
    assert len(encoded) <= MAX_ENCODED
    parsed = parse_snapshot(encoded)
    assert parsed is not None
    assert parsed.running_count == 1000
    assert parsed.done_count == 1000
    assert len(parsed.running) == MAX_RUNNING


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        7,
        "{",
        "[]",
        "x" * (MAX_ENCODED + 1),
        '{"done": []}',
        '{"done": {"success": -1}}',
        '{"done": {"success": true}}',
        '{"done": {"success": 1.5}}',
        '{"done": {}, "total": "28"}',
        '{"done": {}, "running": [["model.a"]]}',
        '{"done": {}, "running": [[1, 2]]}',
        '{"done": {}, "running": [["model.a", NaN]]}',
        '{"done": {}, "running": [["model.a", Infinity]]}',
        '{"done": {}, "running": [["model.a", "soon"]]}',
        '{"done": {}, "running": "model.a"}',
        '{"done": {}, "running_count": -3}',
        json.dumps({"done": {f"s{i}": 1 for i in range(50)}}),
    ],
)
def test_an_unreadable_annotation_is_no_snapshot(text: object) -> None:
    assert parse_snapshot(text) is None


def test_the_task_log_line_reads_as_a_sentence() -> None:
    snapshot = Snapshot(
        done={"success": 11, "error": 1},
        total=28,
        running=(RunningNode("model.jaffle_shop.customers", 1000.0),),
        running_count=1,
    )
    assert progress_line(snapshot, 1192.5, command="dbt build") == (
        "dbt build: 12 of 28 nodes done (11 success, 1 error), "
        "running model.jaffle_shop.customers for 3m12s"
    )
    two = Snapshot(total=3, running=(RunningNode("seed.a.b", None),), running_count=2)
    assert progress_line(two, 0) == "dbt: 0 of 3 nodes done, running seed.a.b and 1 more"
    assert progress_line(Snapshot(done={"pass": 2}), 0, command="") == "2 nodes done (2 pass)"
    long = Snapshot(running=(RunningNode("model.a.b", 0.0),), running_count=1)
    assert progress_line(long, 2 * 3600 + 5 * 60 + 9).endswith("for 2h05m")
    assert short_progress(snapshot) == "12/28 running customers"
    assert short_progress(two) == "0/3 running b +1"
    assert short_progress(Snapshot(done={"success": 28}, total=28)) == "28/28"


def test_lines_are_written_at_a_bounded_rate() -> None:
    gate = LineGate(interval=30, heartbeat=300)
    first = Snapshot(total=2, running=(RunningNode("model.a.b", 0.0),), running_count=1)
    second = Snapshot(done={"success": 1}, total=2)
    assert gate.due(first, 0)
    assert not gate.due(first, 10)  # unchanged
    assert not gate.due(second, 20)  # changed, but within the interval
    assert gate.due(second, 31)  # the change held back is written at the next look
    assert not gate.due(second, 1000)  # unchanged and nothing running: nothing new to say
    gate = LineGate(interval=30, heartbeat=300)
    assert gate.due(first, 0)
    assert not gate.due(first, 299)
    assert gate.due(first, 300)  # a node still running: a heartbeat with its time
    assert not gate.due(None, 1000)


# --- the sidecar's follower of the log ---


def test_a_log_written_in_pieces_gives_the_same_tally(
    dbt_runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    written = dbt_runs["fail_model"].log_file.read_bytes()
    log = tmp_path / "dbt.log"
    follower = LogFollower(log, LiveTally())
    assert not follower.read_available()  # dbt has not started: no file yet
    pieces = random.Random(7)
    at, done = 0, 0
    with log.open("wb") as out:
        while at < len(written):
            step = pieces.randint(1, 3000)  # cuts lines, and UTF-8 characters, anywhere
            out.write(written[at : at + step])
            out.flush()
            at += step
            follower.read_available()
            assert follower.tally.snapshot().done_count >= done
            done = follower.tally.snapshot().done_count
    follower.read_available()
    whole = tally_of(written.decode().splitlines()).snapshot()
    assert follower.tally.snapshot() == whole
    assert whole.done_count == 28
    follower.close()


def test_a_rotated_log_is_read_to_its_end_before_the_new_one(
    dbt_runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    lines = dbt_runs["success"].log_file.read_text().splitlines(keepends=True)
    half = len(lines) // 2
    log = tmp_path / "dbt.log"
    log.write_text("".join(lines[:100]))
    follower = LogFollower(log, LiveTally())
    follower.read_available()
    with log.open("a") as out:  # written after the last read, before the rotation
        out.writelines(lines[100:half])
    os.rename(log, tmp_path / "dbt.log.1")  # what dbt's RotatingFileHandler does at 10 MB
    log.write_text("".join(lines[half:]))
    follower.read_available()
    follower.close()
    assert follower.tally.snapshot() == tally_of(lines).snapshot()


def test_a_truncated_log_is_read_again_from_its_start(
    dbt_runs: dict[str, DbtRun], tmp_path: Path
) -> None:
    lines = dbt_runs["success"].log_file.read_text().splitlines(keepends=True)
    log = tmp_path / "dbt.log"
    log.write_text("".join(lines))
    follower = LogFollower(log, LiveTally())
    follower.read_available()
    with log.open("r+") as out:
        out.truncate(0)
    more = [line for line in lines if '"NodeStart"' in line][:1]
    log.write_text("".join(more))
    assert follower.read_available()
    follower.close()
    assert follower.tally.snapshot().running_count == 1


def test_a_line_longer_than_the_bound_is_skipped_not_held(
    dbt_runs: dict[str, DbtRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_progress, "MAX_LINE", 4096)
    lines = dbt_runs["success"].log_file.read_text().splitlines(keepends=True)
    start = next(line for line in lines if '"NodeStart"' in line)
    log = tmp_path / "dbt.log"
    uid = json.loads(start)["data"]["node_info"]["unique_id"]
    long_start = start.replace(uid, "model.jaffle_shop.long").replace(
        '"meta": {}', '"meta": {"x": "' + "y" * 100_000 + '"}'
    )
    log.write_text(long_start + start)
    follower = LogFollower(log, LiveTally())
    follower.read_available()
    follower.close()
    # The long one skipped (never held whole), the next one read.
    assert [n.unique_id for n in follower.tally.snapshot().running] == [uid]
