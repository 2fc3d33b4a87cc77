"""What `kubectl dbt describe` prints, for runs recorded on the real cluster."""

from __future__ import annotations

import copy
import datetime
import json
import re

import pytest

from kubedbt.cli.describe import describe_lines
from kubedbt.core import results
from kubedbt.core.live import PROGRESS_ANNOTATION, RunningNode, Snapshot
from tests.cli.test_run_info import recorded
from tests.unit.test_diagnose import MISCONFIG, pod_that_ended


def describe(scenario: str, after: float = 0.0) -> str:
    """describe's output `after` seconds past the moment the scenario was recorded."""
    data = recorded(scenario)
    now = datetime.datetime.fromtimestamp(data["recorded_at"] + after, datetime.timezone.utc)
    lines = describe_lines(data["job"], data["pods"], data["configmap"], data["events"], now=now)
    return "\n".join(lines)


def test_a_failed_data_test() -> None:
    out = describe("test_failure", after=46 * 60)
    assert "Age:          46m" in out
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
        ("image_not_found", "Kind:       image_invalid"),
        ("invalid_image", "Kind:       image_invalid"),
        ("missing_secret", "Kind:       container_config_error"),
    ],
)
def test_a_run_that_cannot_start_has_the_outcome_the_watch_gives_it(
    scenario: str, shown: str
) -> None:
    out = describe(scenario)
    assert "Outcome (the watch ends the run here; its Job has not):" in out
    assert shown in out


def test_a_pull_error_is_waited_for_then_judged_at_startup_timeout() -> None:
    assert "Outcome:      none yet (the run is running)" in describe("image_pull")
    out = describe("image_pull", after=600)  # past the default startup_timeout of 300 s
    assert "Kind:       image_pull_failed" in out
    assert "Events (warnings, oldest first):" in out
    assert "Failed to pull image" in out


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


def test_a_running_run_shows_its_live_progress() -> None:
    data = recorded("success")
    configmap = copy.deepcopy(data["configmap"])
    snapshot = Snapshot(
        done={"success": 5}, total=28, running=(RunningNode("model.a.b", 1000.0),), running_count=1
    )
    configmap["metadata"].setdefault("annotations", {})[PROGRESS_ANNOTATION] = snapshot.encode()
    now = datetime.datetime.fromtimestamp(1072.0, datetime.timezone.utc)
    lines = describe_lines(data["job"], data["pods"], configmap, data["events"], now=now)
    assert "Progress:     5 of 28 nodes done (5 success), running model.a.b for 1m12s" in lines
    plain = describe_lines(data["job"], data["pods"], data["configmap"], data["events"], now=now)
    assert not any(line.startswith("Progress:") for line in plain)


def test_a_misconfiguration_shows_dbts_error_and_the_fix() -> None:
    # The recorded run of a parse error, with its dbt container's end and log digest replaced by
    # what real dbt said of a DuckDB database under the read-only project (tests/unit/fixtures/
    # misconfig; tests/cluster/test_misconfig.py runs it for real).
    data = copy.deepcopy(recorded("parse_error"))
    job, pod = pod_that_ended("duckdb_denied")
    with (MISCONFIG / "duckdb_denied" / "dbt.log").open() as log:
        digest = results.digest_log(log)
    data["configmap"]["data"][results.LOG_DIGEST_KEY] = json.dumps(digest)
    now = datetime.datetime.fromtimestamp(data["recorded_at"], datetime.timezone.utc)
    lines = describe_lines(job, [pod], data["configmap"], data["events"], now=now)
    reason = next(line for line in lines if line.startswith("  Reason:"))
    assert reason == (
        '  Reason:     dbt could not run: IO Error: Cannot open file "/usr/app/jaffle_shop/'
        'jaffle_shop.duckdb": Permission denied'
    )
    (fix,) = (line for line in lines if line.startswith("  Fix:"))
    assert fix.startswith("  Fix:        dbt cannot write /usr/app/jaffle_shop/jaffle_shop.duckdb")
    assert "DuckDB `path` in profiles.yml" in fix
    assert lines.index(reason) + 1 == lines.index(fix)


def test_no_fix_line_without_a_recognised_misconfiguration() -> None:
    assert "Fix:" not in describe("parse_error")
