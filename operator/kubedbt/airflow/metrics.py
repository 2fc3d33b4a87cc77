"""Sending a run's metrics (kubedbt.core.metrics) through Airflow's Stats.

Stats is whatever Airflow's [metrics] section configures in the task's process: StatsD (tags
appended to the name when statsd_influxdb_enabled), DogStatsD (tags as tags), OpenTelemetry
(tags as attributes), or nothing. A metric is never worth a task: whatever sending raises is
logged and the run's verdict stands.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk.observability.stats import Stats

from kubedbt.airflow.events import RunEvent
from kubedbt.core.metrics import (
    Metric,
    MetricTags,
    RunFacts,
    as_timedelta,
    retry_metrics,
    run_metrics,
)
from kubedbt.io.launch import TaskLog


def send(metrics: Sequence[Metric], *, log: TaskLog) -> None:
    """Send each metric through Stats; never raises."""
    for metric in metrics:
        tags = dict(metric.tags)
        try:
            if metric.type == "timing":
                Stats.timing(metric.name, as_timedelta(metric), tags=tags)
            elif metric.type == "gauge":
                Stats.gauge(metric.name, metric.value, tags=tags)
            else:
                Stats.incr(metric.name, int(metric.value), tags=tags)
        except Exception as e:  # a backend's failure must not fail the run
            log.warning("could not send metric %s: %s: %s", metric.name, type(e).__name__, e)


def record_launch(
    tags: MetricTags, *, try_number: int, resumed: bool, adopted: bool, log: TaskLog
) -> None:
    """kubedbt.retries when this try started dbt again."""
    try:
        found = retry_metrics(tags, try_number=try_number, resumed=resumed, adopted=adopted)
    except Exception as e:  # no metric is worth the task
        log.warning("no metrics for this try: %s: %s", type(e).__name__, e)
        return
    send(found, log=log)


def record_run(
    run: RunEvent,
    tags: MetricTags,
    *,
    retryable: bool,
    results_bytes: int | None,
    log: TaskLog,
) -> None:
    """A finished run's timings, nodes by status, outcome and results size."""
    summary = run["summary"]
    try:
        facts = RunFacts(
            status=run["status"],
            kind=run["kind"],
            retryable=retryable,
            counts=summary["counts"] if summary is not None else {},
            # Absent from the events of a triggerer still running an older kubedbt.
            timings=run.get("timings"),
            results_bytes=results_bytes,
        )
        found = run_metrics(facts, tags)
    except Exception as e:  # the event came through the triggerer: no metric is worth the task
        log.warning("no metrics for this run: %s: %s", type(e).__name__, e)
        return
    send(found, log=log)
