"""What `kubectl dbt describe` prints, for runs recorded on the real cluster."""

from __future__ import annotations

import datetime
import re

import pytest

from kubedbt.cli.describe import describe_lines
from kubedbt.core.results import decode
from tests.cli.test_run_info import recorded

NOW = datetime.datetime(2026, 11, 22, 9, 0, tzinfo=datetime.timezone.utc)


def describe(scenario: str) -> str:
    data = recorded(scenario)
    configmap = data["configmap"]
    return "\n".join(describe_lines(data["job"], data["pods"], decode(configmap), now=NOW))


def test_a_failed_data_test() -> None:
    out = describe("test_failure")
    assert "Age:          46m" in out  # created 08:13:31
    assert "Status:       Failed" in out
    assert "Kind:       tests_failed" in out
    assert "Retryable:  no" in out
    assert "Exit code:  1" in out
    assert "test.jaffle_shop.assert_order_amount_matches_payments: fail: Got " in out
    assert "Summary:      dbt build finished in" in out
    assert re.search(r"^    dbt +terminated: Error, exit code 1$", out, re.MULTILINE)
    assert re.search(r"^    init results-uploader +terminated: Completed, exit code 0$", out, re.M)


def test_an_oom_kill_names_the_limit() -> None:
    out = describe("oom_killed")
    assert "Kind:       oom_killed" in out
    assert "raise container_resources.limits.memory (now 300Mi)" in out


@pytest.mark.parametrize(
    ("scenario", "shown"),
    [
        ("image_pull", "Kind:       image_pull_failed"),
        ("invalid_image", "Kind:       image_invalid"),
        ("missing_secret", "Kind:       container_config_error"),
    ],
)
def test_a_run_that_cannot_start_has_an_outcome_so_far(scenario: str, shown: str) -> None:
    out = describe(scenario)
    assert "Outcome so far (the run has not finished):" in out
    assert shown in out


def test_an_unschedulable_run_has_no_outcome_yet_but_says_why() -> None:
    out = describe("unschedulable")
    assert "Outcome:      none yet (the run is running)" in out
    assert "PodScheduled=False: Unschedulable: 0/1 nodes are available" in out
    assert re.search(r"^    dbt +no state reported yet$", out, re.MULTILINE)


def test_an_evicted_run_shows_both_pods_newest_first() -> None:
    data = recorded("evicted")
    out = describe("evicted")
    names = sorted(
        (p["metadata"]["creationTimestamp"], p["metadata"]["name"]) for p in data["pods"]
    )
    assert out.index(names[-1][1]) < out.index(names[0][1])
    assert "DisruptionTarget=True: EvictionByEvictionAPI" in out
