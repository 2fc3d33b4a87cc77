"""The metrics of a run, its timings from recorded statuses, and the on_warning policy."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk._shared.observability.metrics import stats
from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
from airflow.sdk._shared.observability.metrics.statsd_logger import SafeStatsdLogger
from airflow.sdk.observability.metrics import stats_utils

from kubedbt.airflow.events import RunEvent, apply_warning_policy, error_event, run_event
from kubedbt.airflow.metrics import record_launch, record_run
from kubedbt.core import metrics
from kubedbt.core.classify import RETRYABLE, Evidence, classify
from kubedbt.core.metrics import Metric, MetricTags, RunFacts
from kubedbt.core.report import summary_lines, warnings_reason
from kubedbt.core.results import Summary, decode
from kubedbt.io.watch import WatchResult

FIXTURES = Path(__file__).parent / "fixtures" / "status"
TAGS = MetricTags(dag_id="shop", task_id="build", namespace="dbt-prod", command="build")
COMMON = {"dag_id": "shop", "task_id": "build", "namespace": "dbt-prod", "command": "build"}


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def event_of(name: str) -> RunEvent:
    """The event the watch would have produced for a recorded run."""
    data = recorded(name)
    found = decode(data["configmap"]) if data.get("configmap") else None
    evidence = Evidence(job=data["job"], pods=data["pods"], results=found)
    outcome = classify(evidence)
    result = WatchResult(evidence=evidence, outcome=outcome, log_tail=None, pod_name=None)
    return run_event(data["job"]["metadata"]["name"], "dbt-prod", result)


def by_name(found: list[Metric]) -> dict[str, list[Metric]]:
    grouped: dict[str, list[Metric]] = {}
    for metric in found:
        grouped.setdefault(metric.name, []).append(metric)
    return grouped


# Expected from the fixtures' timestamps: Job created, dbt started, dbt finished.
@pytest.mark.parametrize(
    ("name", "queue_to_start", "duration"),
    [
        ("success", 1.0, 6.0),  # 13:02:38, 13:02:39, 13:02:45
        ("oom_killed", 1.0, 4.0),  # 13:03:19, 13:03:20, 13:03:24 (OOMKilled)
        ("sources_warn", 1.0, 3.0),  # 13:05:31, 13:05:32, 13:05:35
        ("deadline_exceeded", 1.0, 74.0),  # 13:07:36, 13:07:37, 13:08:51
        # Evicted at 13:07:24 and replaced; the new pod's dbt still runs: no end yet.
        ("evicted", 1.0, None),
        ("unschedulable", None, None),  # dbt never started
    ],
)
def test_timings_come_from_the_recorded_timestamps(
    name: str, queue_to_start: float | None, duration: float | None
) -> None:
    data = recorded(name)
    assert metrics.run_timings(data["job"], data["pods"]) == {
        "queue_to_start": queue_to_start,
        "duration": duration,
    }


def test_the_job_s_end_stands_in_when_dbt_s_end_is_unknown() -> None:
    data = recorded("success")
    for pod in data["pods"]:
        for status in pod["status"]["containerStatuses"]:
            if status["name"] == "dbt":
                del status["state"]["terminated"]["finishedAt"]
    # The Job's Complete condition: 13:02:49.
    assert metrics.run_timings(data["job"], data["pods"])["duration"] == 10.0


def test_no_job_and_no_pods_have_no_timings() -> None:
    assert metrics.run_timings(None, []) == {"queue_to_start": None, "duration": None}


def test_a_successful_run_s_metrics() -> None:
    run = event_of("success")
    summary = run["summary"]
    assert summary is not None
    facts = RunFacts(
        status=run["status"],
        kind=run["kind"],
        retryable=run["retryable"],
        counts=summary["counts"],
        timings=run["timings"],
        results_bytes=12345,
    )
    found = by_name(metrics.run_metrics(facts, TAGS))
    assert found[metrics.RUN_DURATION] == [Metric(metrics.RUN_DURATION, "timing", 6000, COMMON)]
    assert found[metrics.QUEUE_TO_START] == [Metric(metrics.QUEUE_TO_START, "timing", 1000, COMMON)]
    nodes = {m.tags["status"]: m.value for m in found[metrics.NODES]}
    assert nodes == summary["counts"]
    assert sum(nodes.values()) == summary["nodes"] == 28
    assert found[metrics.OUTCOME] == [
        Metric(
            metrics.OUTCOME,
            "count",
            1,
            {**COMMON, "status": "success", "kind": "success", "retryable": "false"},
        )
    ]
    assert found[metrics.RESULTS_BYTES] == [Metric(metrics.RESULTS_BYTES, "gauge", 12345, COMMON)]
    assert metrics.as_timedelta(found[metrics.RUN_DURATION][0]) == timedelta(seconds=6)


def test_a_run_that_never_started_reports_its_outcome_only() -> None:
    run = event_of("unschedulable")
    facts = RunFacts("failed", run["kind"], True, {}, run["timings"], None)
    (outcome,) = metrics.run_metrics(facts, TAGS)
    assert outcome.name == metrics.OUTCOME
    assert outcome.tags["kind"] == run["kind"]
    assert outcome.tags["retryable"] == "true"


def test_a_watch_that_could_not_finish_is_an_outcome_of_its_own() -> None:
    run = error_event("job", "dbt-prod", "the API stayed unreachable")
    facts = RunFacts(run["status"], run["kind"], run["retryable"], {}, run["timings"], None)
    (outcome,) = metrics.run_metrics(facts, TAGS)
    assert outcome.tags["kind"] == "watch_error"
    assert outcome.tags["status"] == "error"


def test_tag_values_survive_statsd_names() -> None:
    tags = MetricTags(
        dag_id="shop daily", task_id="group.build", namespace="dbt", command="source freshness"
    )
    assert tags.as_dict() == {
        "dag_id": "shop_daily",
        "task_id": "group.build",
        "namespace": "dbt",
        "command": "source_freshness",
    }
    assert len(metrics.tag_value("x" * 300)) == metrics.MAX_TAG_CHARS
    assert metrics.tag_value("") == "_"
    without = MetricTags(dag_id="d", task_id="t", namespace="n", command=None)
    assert "command" not in without.as_dict()


@pytest.mark.parametrize(
    ("try_number", "resumed", "adopted", "mode"),
    [
        (1, False, False, None),  # the first try is no retry
        (2, True, False, "resume"),  # dbt retry on try 1's results
        (3, False, False, "rerun"),  # the whole command again
        (2, False, True, None),  # adopted a Job: started nothing
    ],
)
def test_retries_count_tries_that_started_dbt_again(
    try_number: int, resumed: bool, adopted: bool, mode: str | None
) -> None:
    found = metrics.retry_metrics(TAGS, try_number=try_number, resumed=resumed, adopted=adopted)
    if mode is None:
        assert found == []
    else:
        assert found == [Metric(metrics.RETRIES, "count", 1, {**COMMON, "mode": mode})]


def _warned_summary() -> Summary:
    summary = event_of("success")["summary"]
    assert summary is not None
    return {
        **summary,
        "counts": {**summary["counts"], "warn": 2},
        "warnings": [
            {"unique_id": "test.shop.a", "message": "Got 6 results, configured to warn if != 0"},
            {"unique_id": "test.shop.b", "message": "Got 1 result,\nconfigured to warn if != 0"},
        ],
        "warnings_omitted": 0,
    }


def test_on_warning_fail_turns_a_warned_success_into_a_terminal_failure() -> None:
    run: RunEvent = {**event_of("success"), "summary": _warned_summary()}
    failed = apply_warning_policy(run, "fail")
    assert failed["status"] == "failed"
    assert failed["kind"] == "warnings"
    assert failed["retryable"] is RETRYABLE["warnings"] is False
    assert failed["reason"] == "2 nodes warned: test.shop.a, test.shop.b, and on_warning is 'fail'"
    assert failed["summary"] == run["summary"]
    for policy in ("log", "ignore"):
        assert apply_warning_policy(run, policy) == run


def test_on_warning_fail_leaves_clean_and_failed_runs_alone() -> None:
    clean = event_of("success")
    assert apply_warning_policy(clean, "fail") == clean
    failed = event_of("test_failure")
    assert apply_warning_policy(failed, "fail") == failed


def test_a_recorded_freshness_warning_without_a_warnings_key_still_fails() -> None:
    # Recorded from a sidecar older than `warnings`: the warned source still counts.
    run = event_of("sources_warn")
    assert run["status"] == "success"
    assert run["summary"] is not None
    assert run["summary"]["warnings"] == []
    failed = apply_warning_policy(run, "fail")
    assert failed["kind"] == "warnings"
    assert "source.jaffle_shop.loader.schemata" in failed["reason"]


def test_the_reason_names_a_few_nodes_and_counts_the_rest() -> None:
    summary = _warned_summary()
    many: Summary = {
        **summary,
        "counts": {"warn": 8},
        "warnings": [{"unique_id": f"test.shop.t{i}", "message": "m"} for i in range(7)],
        "warnings_omitted": 1,
    }
    assert warnings_reason(many) == (
        "8 nodes warned: test.shop.t0, test.shop.t1, test.shop.t2, test.shop.t3, test.shop.t4"
        " and 3 more"
    )
    assert warnings_reason(event_of("success")["summary"]) is None  # type: ignore[arg-type]


def test_the_task_log_lists_warned_nodes_unless_ignored() -> None:
    summary = _warned_summary()
    lines = summary_lines(summary)
    start = lines.index("Warned nodes:")
    assert lines[start + 1 : start + 3] == [
        "  warn   test.shop.a: Got 6 results, configured to warn if != 0",
        "  warn   test.shop.b: Got 1 result, configured to warn if != 0",
    ]
    assert "Warned nodes:" not in summary_lines(summary, warnings=False)
    omitted = summary_lines({**summary, "warnings_omitted": 3})
    assert "  ... and 3 more warned" in omitted


def test_a_warned_source_is_listed_once() -> None:
    summary = event_of("sources_warn")["summary"]
    assert summary is not None
    source = summary["freshness"][0]
    both: Summary = {
        **summary,
        "warnings": [{"unique_id": source["unique_id"], "message": "past warn_after"}],
    }
    lines = summary_lines(both)
    assert "Sources past warn_after:" in lines
    assert "Warned nodes:" not in lines
    assert sum(line.startswith(f"  warn   {source['unique_id']}") for line in lines) == 1
    assert not any("warn_after" in line for line in summary_lines(both, warnings=False))


@pytest.fixture
def statsd_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A UDP socket Airflow's Stats sends to, configured as a task process configures it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    for key, value in {
        "STATSD_ON": "True",
        "STATSD_HOST": "127.0.0.1",
        "STATSD_PORT": str(listener.getsockname()[1]),
        "STATSD_PREFIX": "airflow",
        "STATSD_INFLUXDB_ENABLED": "True",
    }.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    # What the task runner does at its start (airflow.sdk.execution_time.task_runner.main).
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=True)
    try:
        yield listener
    finally:
        backend = stats._get_backend()
        if isinstance(backend, SafeStatsdLogger):
            backend.statsd.close()  # type: ignore[attr-defined]
        stats.initialize(factory=NoStatsLogger, export_legacy_names=True)
        listener.close()


def _received(listener: socket.socket, count: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < count:
        lines += listener.recv(65535).decode().splitlines()
    return lines


def test_metrics_reach_statsd_through_airflow_s_stats(statsd_listener: socket.socket) -> None:
    run = event_of("success")
    log = logging.getLogger("test")
    tags = MetricTags(dag_id="shop", task_id="build", namespace="dbt-prod", command="build")
    record_run(run, tags, retryable=False, results_bytes=2048, log=log)
    record_launch(tags, try_number=2, resumed=True, adopted=False, log=log)
    assert run["summary"] is not None
    counts = run["summary"]["counts"]
    lines = _received(statsd_listener, 5 + len(counts))
    common = "dag_id=shop,task_id=build,namespace=dbt-prod,command=build"
    assert lines == [
        f"airflow.kubedbt.run.duration,{common}:6000.000000|ms",
        f"airflow.kubedbt.run.queue_to_start,{common}:1000.000000|ms",
        *[f"airflow.kubedbt.nodes,{common},status={s}:{n}|c" for s, n in sorted(counts.items())],
        f"airflow.kubedbt.outcome,{common},status=success,kind=success,retryable=false:1|c",
        f"airflow.kubedbt.results.bytes,{common}:2048|g",
        f"airflow.kubedbt.retries,{common},mode=resume:1|c",
    ]


def test_a_failing_backend_never_fails_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    # A custom client that is no StatsClient: Airflow raises on every metric sent.
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_CUSTOM_CLIENT_PATH", "builtins.dict")
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=True)
    warned: list[str] = []

    class Log:
        def info(self, event: Any, *args: Any, **kw: Any) -> None:
            pass

        def warning(self, event: Any, *args: Any, **kw: Any) -> None:
            warned.append(event % args)

    try:
        record_run(event_of("success"), TAGS, retryable=False, results_bytes=1, log=Log())
        record_launch(TAGS, try_number=2, resumed=False, adopted=False, log=Log())
    finally:
        stats.initialize(factory=NoStatsLogger, export_legacy_names=True)
    assert warned[0].startswith(
        "could not send metric kubedbt.run.duration: AirflowConfigException: "
        "Your custom StatsD client must extend"
    )
    # Two timings, two statuses, the outcome, the size, the retry: each tried, none raised.
    assert len(warned) == 7
