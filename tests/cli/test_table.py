"""kubectl-style ages and columns."""

from __future__ import annotations

import datetime

import pytest

from kubedbt.cli.table import age, format_table, human_duration

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
