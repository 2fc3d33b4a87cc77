"""kubectl-style ages and columns."""

from __future__ import annotations

import datetime

import pytest

from kubedbt.cli.run_info import RunInfo, RunStatus, live_progress
from kubedbt.cli.runs import elsewhere_hint, run_table
from kubedbt.cli.table import age, format_table, human_duration
from kubedbt.core.live import PROGRESS_ANNOTATION, RunningNode, Snapshot, short_progress

MINUTE, HOUR, DAY, YEAR = 60, 3600, 86400, 365 * 86400


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (2 * MINUTE, "2m"),
        (5 * MINUTE + 10, "5m10s"),
        (10 * MINUTE + 59, "10m"),
        (179 * MINUTE, "179m"),
        (3 * HOUR, "3h"),
        (2 * HOUR + 30 * MINUTE + 180 * MINUTE, "5h30m"),
        (8 * HOUR + 59 * MINUTE, "8h"),
        (47 * HOUR, "47h"),
        (2 * DAY, "2d"),
        (3 * DAY + 4 * HOUR, "3d4h"),
        (8 * DAY + 5 * HOUR, "8d"),
        (729 * DAY, "729d"),
        (2 * YEAR + 100 * DAY, "2y100d"),
        (3 * YEAR, "3y"),
        (9 * YEAR, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: int, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_age_without_a_timestamp() -> None:
    now = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    assert age(None, now) == "<unknown>"
    assert age(now - datetime.timedelta(minutes=5), now) == "5m"


def test_format_table_aligns_columns_with_three_spaces() -> None:
    lines = format_table(
        ("NAME", "STATUS", "AGE"), [["a-long-name", "Failed", "5m"], ["b", "", "2h"]]
    )
    assert lines == [
        "NAME          STATUS   AGE",
        "a-long-name   Failed   5m",
        "b                      2h",
    ]


def _run(name: str, status: RunStatus, minute: int) -> RunInfo:
    created = datetime.datetime(2026, 1, 1, 0, minute, tzinfo=datetime.timezone.utc)
    return RunInfo(
        name, "ns", "dag", "build", "r1", -1, "1", status, created, "dbt build", name + "-results"
    )


def test_the_runs_table_has_a_progress_column() -> None:
    now = datetime.datetime(2026, 1, 1, 1, 0, tzinfo=datetime.timezone.utc)
    runs = [_run("done", "Succeeded", 0), _run("going", "Running", 30)]
    snapshot = Snapshot(
        done={"success": 11, "error": 1},
        total=28,
        running=(RunningNode("model.jaffle_shop.customers", 0.0),),
        running_count=1,
    )
    progress = {("ns", "going"): short_progress(snapshot)}
    header, *rows = run_table(runs, now=now, with_namespace=False, progress=progress)
    assert header.split() == ["NAME", "DAG", "TASK", "RUN", "TRY", "STATUS", "PROGRESS", "AGE"]
    assert [row.split() for row in rows] == [
        ["going", "dag", "build", "r1", "1", "Running", "12/28", "running", "customers", "30m"],
        ["done", "dag", "build", "r1", "1", "Succeeded", "-", "60m"],
    ]


def test_the_progress_of_a_configmap_is_read_only_when_readable() -> None:
    good = Snapshot(done={"pass": 2}, total=3)
    configmap = {"metadata": {"annotations": {PROGRESS_ANNOTATION: good.encode()}}}
    assert live_progress(configmap) == good
    assert live_progress({"metadata": {"annotations": {PROGRESS_ANNOTATION: "{"}}}) is None
    assert live_progress({"metadata": {}}) is None
    assert live_progress(None) is None


def test_elsewhere_hint_names_namespaces_in_order_and_cuts_at_five() -> None:
    assert elsewhere_hint({}) is None
    assert elsewhere_hint({"b": 1, "a": 2}) == (
        "Runs exist in: a (2), b (1). Use -n NAMESPACE, or -A for all namespaces."
    )
    many = elsewhere_hint({f"ns{i}": 1 for i in range(7)})
    assert many is not None
    assert many.startswith("Runs exist in: ns0 (1), ns1 (1), ns2 (1), ns3 (1), ns4 (1) and 2 more.")
